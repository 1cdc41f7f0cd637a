//! The firmware image's byte layout (the checks, with the signature, are in `fw-image`).
//!
//! ```text
//! 0    header      64 bytes  (Header, little endian)
//! 64   signature   64 bytes  ed25519 over header || SHA-256(payload)
//! 128  payload     payload_size bytes (the firmware's ELF)
//! ```

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// First bytes of every image.
pub const MAGIC: [u8; 8] = *b"ACVTFWIM";
/// The header layout this crate reads and writes.
pub const FORMAT: u16 = 1;
/// Bytes of [`Header`].
pub const HEADER_SIZE: usize = 64;
/// Bytes of the ed25519 signature after the header.
pub const SIGNATURE_SIZE: usize = 64;
/// Where the payload starts.
pub const PAYLOAD_OFFSET: usize = HEADER_SIZE + SIGNATURE_SIZE;
/// Bytes of one flash slot: the largest image a device takes.
pub const SLOT_SIZE: usize = 4 << 20;
/// The largest payload that fits a slot.
pub const MAX_PAYLOAD: usize = SLOT_SIZE - PAYLOAD_OFFSET;
/// Board id of the simulated board (`accel-sim`).
pub const BOARD_SIM: u32 = u32::from_le_bytes(*b"SIM1");

/// The image header. 64 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`FORMAT`].
    pub format: U16,
    /// [`HEADER_SIZE`].
    pub header_size: U16,
    /// Reserved, zero.
    pub flags: U32,
    /// Firmware version: major << 24 | minor << 16 | patch (as `pf::FW_VERSION`).
    pub fw_version: U32,
    /// Build id (as `pf::FW_BUILD_ID`): a hash of the firmware's sources.
    pub build_id: U32,
    /// Payload bytes.
    pub payload_size: U32,
    /// CRC-32 (ISO-HDLC, as zlib's) of the payload.
    pub payload_crc: U32,
    /// The board the image is built for ([`BOARD_SIM`]).
    pub board: U32,
    /// The lowest firmware version this image lets be installed after it (anti-rollback).
    pub min_rollback: U32,
    /// Reserved, zero.
    pub reserved: [u8; 24],
}

/// The CRC-32 images use (ISO-HDLC, as zlib's): the payload's in the header, and the whole
/// image's as a download announces it.
pub static CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// A firmware version word: major << 24 | minor << 16 | patch, as the image header and
/// `pf::FW_VERSION` carry it.
pub const fn version_word(major: u8, minor: u8, patch: u16) -> u32 {
    (major as u32) << 24 | (minor as u32) << 16 | patch as u32
}

/// `X.Y.Z` as a version word (`None` if it is not one). A `const fn`, so a build can take
/// its version from the environment.
pub const fn parse_version(s: &[u8]) -> Option<u32> {
    let mut parts = [0u32; 3];
    let (mut i, mut n, mut digits) = (0, 0, 0);
    while i < s.len() {
        let c = s[i];
        if c == b'.' {
            if digits == 0 || n == 2 {
                return None;
            }
            n += 1;
            digits = 0;
        } else if c.is_ascii_digit() && digits < 5 {
            parts[n] = parts[n] * 10 + (c - b'0') as u32;
            digits += 1;
        } else {
            return None;
        }
        i += 1;
    }
    if n != 2 || digits == 0 || parts[0] > 255 || parts[1] > 255 || parts[2] > 65535 {
        return None;
    }
    Some(version_word(
        parts[0] as u8,
        parts[1] as u8,
        parts[2] as u16,
    ))
}

/// A version word shown as `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32);

impl core::fmt::Display for Version {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let v = self.0;
        write!(f, "{}.{}.{}", v >> 24, (v >> 16) & 0xFF, v & 0xFFFF)
    }
}

/// A flash slot's name: 0 is A, 1 is B.
pub const fn slot_name(slot: u8) -> &'static str {
    match slot {
        0 => "A",
        1 => "B",
        _ => "?",
    }
}

/// Why a device refused an image: the low byte of `FLASH_STATUS` after `IMAGE`, and the
/// `reason u32` of an IMAGE_REJECTED response.
pub mod reason {
    /// Fewer bytes than the header says.
    pub const TRUNCATED: u8 = 1;
    /// More bytes than the header accounts for.
    pub const TRAILING: u8 = 2;
    /// Not an image.
    pub const BAD_MAGIC: u8 = 3;
    /// A header format the device does not read.
    pub const FORMAT: u8 = 4;
    /// Header size or reserved fields wrong.
    pub const BAD_HEADER: u8 = 5;
    /// Larger than a slot.
    pub const TOO_LARGE: u8 = 6;
    /// A CRC (of the payload, or of the whole image as the download announced it) differs.
    pub const BAD_CRC: u8 = 7;
    /// The signature does not verify with the device's key.
    pub const BAD_SIGNATURE: u8 = 8;
    /// Built for another board.
    pub const WRONG_BOARD: u8 = 9;
    /// Below the device's rollback floor: kept in its one-time-programmable memory, raised
    /// to the floor an image demands once that image has run, never lowered, and not
    /// skipped by any host request.
    pub const BELOW_FLOOR: u8 = 10;
    /// Older than the running firmware: a downgrade, which the host must ask for (and which
    /// still may not go below the rollback floor).
    pub const DOWNGRADE: u8 = 11;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_words() {
        assert_eq!(parse_version(b"1.2.3"), Some(0x0102_0003));
        assert_eq!(parse_version(b"255.255.65535"), Some(u32::MAX));
        for bad in [
            &b"1.2"[..],
            b"1.2.3.4",
            b"256.0.0",
            b"0.0.65536",
            b"1..3",
            b".1.2",
            b"1.2.",
            b"a.b.c",
            b"",
            b"1.2.99999999999",
        ] {
            assert_eq!(parse_version(bad), None, "{:?}", core::str::from_utf8(bad));
        }
        extern crate std;
        assert_eq!(std::format!("{}", Version(0x0102_0003)), "1.2.3");
        assert_eq!((slot_name(0), slot_name(1)), ("A", "B"));
    }

    #[test]
    fn header_is_64_bytes() {
        assert_eq!(core::mem::size_of::<Header>(), HEADER_SIZE);
        assert_eq!(PAYLOAD_OFFSET, 128);
    }
}
