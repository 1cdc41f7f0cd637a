//! The firmware image: what `cargo xtask image` writes, `accelctl flash` streams, the device
//! keeps in a flash slot and its boot stage verifies before it runs one.
//!
//! ```text
//! 0    header      64 bytes  (Header, little endian)
//! 64   signature   64 bytes  ed25519 over header || SHA-256(payload)
//! 128  payload     payload_size bytes (the firmware's ELF)
//! ```
//!
//! Everything here runs in `no_std` without allocation: the boot stage and the firmware
//! check images with it, and so do the host tools before they send one.
#![no_std]
#![forbid(unsafe_code)]

pub use shared_abi::image::*;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, IntoBytes};

/// Why an image is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Fewer bytes than the header says there are.
    Truncated {
        /// Bytes there are.
        have: usize,
        /// Bytes the image needs.
        need: usize,
    },
    /// More bytes than the header accounts for.
    TrailingBytes,
    /// Not an image (magic).
    BadMagic,
    /// A header format this code does not read.
    UnsupportedFormat(u16),
    /// Header size or reserved fields wrong.
    BadHeader,
    /// Payload larger than a slot holds.
    TooLarge(usize),
    /// The payload's CRC does not match the header.
    BadCrc {
        /// CRC in the header.
        want: u32,
        /// CRC of the payload.
        got: u32,
    },
    /// The signature does not verify with the device's key.
    BadSignature,
    /// Built for another board.
    WrongBoard {
        /// The image's board.
        image: u32,
        /// The device's board.
        device: u32,
    },
    /// The version is below the device's rollback floor (one-time-programmable: it only
    /// rises, and nothing the host asks for goes below it).
    BelowRollbackFloor {
        /// The image's version.
        version: u32,
        /// The floor.
        floor: u32,
    },
    /// The version is older than the running firmware's, and no downgrade was asked for.
    Downgrade {
        /// The image's version.
        version: u32,
        /// The running firmware's.
        running: u32,
    },
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            ImageError::Truncated { have, need } => {
                write!(f, "truncated image: {have} bytes, the header says {need}")
            }
            ImageError::TrailingBytes => write!(f, "bytes after the image's payload"),
            ImageError::BadMagic => write!(f, "not a firmware image (bad magic)"),
            ImageError::UnsupportedFormat(v) => write!(f, "image format {v} is not supported"),
            ImageError::BadHeader => write!(f, "malformed image header"),
            ImageError::TooLarge(n) => {
                write!(
                    f,
                    "payload of {n} bytes does not fit a {SLOT_SIZE}-byte slot"
                )
            }
            ImageError::BadCrc { want, got } => {
                write!(
                    f,
                    "payload CRC {got:08x} does not match the header's {want:08x}"
                )
            }
            ImageError::BadSignature => {
                write!(f, "signature does not verify with the device's key")
            }
            ImageError::WrongBoard { image, device } => {
                let b = |v: u32| {
                    v.to_le_bytes()
                        .map(|c| if c.is_ascii_graphic() { c } else { b'?' })
                };
                let (i, d) = (b(image), b(device));
                write!(
                    f,
                    "image is for board {} but this device is {}",
                    core::str::from_utf8(&i).unwrap_or("?"),
                    core::str::from_utf8(&d).unwrap_or("?")
                )
            }
            ImageError::BelowRollbackFloor { version, floor } => write!(
                f,
                "version {} is below the device's rollback floor {}, which nothing lowers",
                Version(version),
                Version(floor)
            ),
            ImageError::Downgrade { version, running } => write!(
                f,
                "version {} is older than the running {}: a downgrade (--allow-downgrade installs it)",
                Version(version),
                Version(running)
            ),
        }
    }
}

impl ImageError {
    /// The reason as one byte, for a device's refusal on the wire (`pf::FLASH_STATUS`).
    pub const fn code(&self) -> u8 {
        match self {
            ImageError::Truncated { .. } => reason::TRUNCATED,
            ImageError::TrailingBytes => reason::TRAILING,
            ImageError::BadMagic => reason::BAD_MAGIC,
            ImageError::UnsupportedFormat(_) => reason::FORMAT,
            ImageError::BadHeader => reason::BAD_HEADER,
            ImageError::TooLarge(_) => reason::TOO_LARGE,
            ImageError::BadCrc { .. } => reason::BAD_CRC,
            ImageError::BadSignature => reason::BAD_SIGNATURE,
            ImageError::WrongBoard { .. } => reason::WRONG_BOARD,
            ImageError::BelowRollbackFloor { .. } => reason::BELOW_FLOOR,
            ImageError::Downgrade { .. } => reason::DOWNGRADE,
        }
    }

    /// What a reason byte from a device means, in words.
    pub const fn describe(code: u8) -> &'static str {
        match code {
            reason::TRUNCATED => "truncated image",
            reason::TRAILING => "bytes after the image's payload",
            reason::BAD_MAGIC => "not a firmware image (bad magic)",
            reason::FORMAT => "unsupported image format",
            reason::BAD_HEADER => "malformed image header",
            reason::TOO_LARGE => "image larger than a flash slot",
            reason::BAD_CRC => "image CRC mismatch",
            reason::BAD_SIGNATURE => "signature does not verify with the device's key",
            reason::WRONG_BOARD => "image built for another board",
            reason::BELOW_FLOOR => {
                "version below the device's rollback floor (kept in its one-time-programmable \
                 memory: nothing lowers it, --allow-downgrade included)"
            }
            reason::DOWNGRADE => {
                "version older than the running firmware's: a downgrade (--allow-downgrade \
                 installs it, down to the device's rollback floor)"
            }
            _ => "image refused",
        }
    }
}

/// An image whose structure is sound (not yet verified): header, signature, payload.
#[derive(Clone, Copy, Debug)]
pub struct Parsed<'a> {
    /// The header.
    pub header: Header,
    /// The signature bytes.
    pub signature: &'a [u8; SIGNATURE_SIZE],
    /// The header's bytes as signed.
    pub header_bytes: &'a [u8],
    /// The payload.
    pub payload: &'a [u8],
}

/// CRC-32 (ISO-HDLC) as the header records it.
pub fn crc32(data: &[u8]) -> u32 {
    CRC32.checksum(data)
}

/// Reads the header of `bytes` (the first [`HEADER_SIZE`] bytes or more) and checks it alone.
pub fn header(bytes: &[u8]) -> Result<Header, ImageError> {
    let (h, _) = Header::read_from_prefix(bytes).map_err(|_| ImageError::Truncated {
        have: bytes.len(),
        need: HEADER_SIZE,
    })?;
    if h.magic != MAGIC {
        return Err(ImageError::BadMagic);
    }
    if h.format.get() != FORMAT {
        return Err(ImageError::UnsupportedFormat(h.format.get()));
    }
    if h.header_size.get() as usize != HEADER_SIZE || h.flags.get() != 0 || h.reserved != [0; 24] {
        return Err(ImageError::BadHeader);
    }
    let n = h.payload_size.get() as usize;
    if n > MAX_PAYLOAD {
        return Err(ImageError::TooLarge(n));
    }
    Ok(h)
}

/// Splits a whole image, checking its structure and sizes (not its CRC or signature).
pub fn parse(bytes: &[u8]) -> Result<Parsed<'_>, ImageError> {
    let h = header(bytes)?;
    let need = PAYLOAD_OFFSET + h.payload_size.get() as usize;
    if bytes.len() < need {
        return Err(ImageError::Truncated {
            have: bytes.len(),
            need,
        });
    }
    if bytes.len() > need {
        return Err(ImageError::TrailingBytes);
    }
    let signature = bytes[HEADER_SIZE..PAYLOAD_OFFSET]
        .try_into()
        .map_err(|_| ImageError::BadHeader)?;
    Ok(Parsed {
        header: h,
        signature,
        header_bytes: &bytes[..HEADER_SIZE],
        payload: &bytes[PAYLOAD_OFFSET..],
    })
}

/// The whole check a device makes before it keeps or runs an image: structure, CRC, board,
/// then the ed25519 signature with `key` (the device's public key).
pub fn verify<'a>(bytes: &'a [u8], key: &[u8; 32], board: u32) -> Result<Parsed<'a>, ImageError> {
    let p = parse(bytes)?;
    let got = crc32(p.payload);
    if got != p.header.payload_crc.get() {
        return Err(ImageError::BadCrc {
            want: p.header.payload_crc.get(),
            got,
        });
    }
    if p.header.board.get() != board {
        return Err(ImageError::WrongBoard {
            image: p.header.board.get(),
            device: board,
        });
    }
    let key = ed25519_dalek::VerifyingKey::from_bytes(key).map_err(|_| ImageError::BadSignature)?;
    let sig = ed25519_dalek::Signature::from_bytes(p.signature);
    key.verify_strict(&signed_message(p.header_bytes, p.payload), &sig)
        .map_err(|_| ImageError::BadSignature)?;
    Ok(p)
}

/// Whether an image of `version` may replace the running firmware (version `running`) on a
/// device whose rollback floor is `floor`: never below the floor; below the running version
/// (a downgrade) only when the host asks for one.
pub fn check_rollback(
    version: u32,
    running: u32,
    floor: u32,
    allow_downgrade: bool,
) -> Result<(), ImageError> {
    if version < floor {
        return Err(ImageError::BelowRollbackFloor { version, floor });
    }
    if version < running && !allow_downgrade {
        return Err(ImageError::Downgrade { version, running });
    }
    Ok(())
}

/// What the signature covers: the header, then the payload's SHA-256 (so the message is a
/// fixed 96 bytes on the stack, whatever the payload's size).
fn signed_message(header: &[u8], payload: &[u8]) -> [u8; HEADER_SIZE + 32] {
    use sha2::Digest;
    let mut m = [0u8; HEADER_SIZE + 32];
    m[..HEADER_SIZE].copy_from_slice(&header[..HEADER_SIZE]);
    m[HEADER_SIZE..].copy_from_slice(&sha2::Sha256::digest(payload));
    m
}

/// The signature of `header || SHA-256(payload)` with the key whose secret seed is `seed`.
pub fn sign(header: &Header, payload: &[u8], seed: &[u8; 32]) -> [u8; SIGNATURE_SIZE] {
    use ed25519_dalek::Signer;
    let key = ed25519_dalek::SigningKey::from_bytes(seed);
    key.sign(&signed_message(header.as_bytes(), payload))
        .to_bytes()
}

/// The public key of the secret seed `seed`.
pub fn public_key(seed: &[u8; 32]) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(seed)
        .verifying_key()
        .to_bytes()
}

/// A header for `payload` with the CRC and size filled in.
pub fn header_for(
    payload: &[u8],
    fw_version: u32,
    build_id: u32,
    board: u32,
    min_rollback: u32,
) -> Header {
    Header {
        magic: MAGIC,
        format: U16::new(FORMAT),
        header_size: U16::new(HEADER_SIZE as u16),
        flags: U32::new(0),
        fw_version: U32::new(fw_version),
        build_id: U32::new(build_id),
        payload_size: U32::new(payload.len() as u32),
        payload_crc: U32::new(crc32(payload)),
        board: U32::new(board),
        min_rollback: U32::new(min_rollback),
        reserved: [0; 24],
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    const SEED: [u8; 32] = [7; 32];

    fn image(payload: &[u8], version: u32, board: u32) -> Vec<u8> {
        let h = header_for(payload, version, 0xabcd, board, 0x0100_0000);
        let sig = sign(&h, payload, &SEED);
        [h.as_bytes(), &sig, payload].concat()
    }

    #[test]
    fn layout_is_fixed() {
        assert_eq!(core::mem::size_of::<Header>(), HEADER_SIZE);
        let h = header_for(b"x", 1, 2, BOARD_SIM, 3);
        let b = h.as_bytes();
        assert_eq!(&b[0..8], b"ACVTFWIM");
        assert_eq!(&b[16..20], &1u32.to_le_bytes());
        assert_eq!(&b[24..28], &1u32.to_le_bytes());
        assert_eq!(&b[32..36], b"SIM1");
        assert_eq!(&b[36..40], &3u32.to_le_bytes());
    }

    #[test]
    fn a_signed_image_verifies_and_each_defect_is_named() {
        let key = public_key(&SEED);
        let img = image(b"payload bytes", 0x0102_0003, BOARD_SIM);
        let p = verify(&img, &key, BOARD_SIM).unwrap();
        assert_eq!(p.payload, b"payload bytes");
        assert_eq!(p.header.fw_version.get(), 0x0102_0003);

        let short = &img[..img.len() - 1];
        assert!(matches!(
            verify(short, &key, BOARD_SIM),
            Err(ImageError::Truncated { .. })
        ));
        assert!(matches!(
            verify(&img[..10], &key, BOARD_SIM),
            Err(ImageError::Truncated { .. })
        ));
        let mut long = img.clone();
        long.push(0);
        assert_eq!(
            verify(&long, &key, BOARD_SIM).unwrap_err(),
            ImageError::TrailingBytes
        );

        let mut bad = img.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(
            verify(&bad, &key, BOARD_SIM),
            Err(ImageError::BadCrc { .. })
        ));

        // A payload changed with its CRC fixed up still fails: the signature covers it.
        let mut forged = img.clone();
        let n = forged.len();
        forged[n - 1] ^= 1;
        let crc = crc32(&forged[PAYLOAD_OFFSET..]);
        forged[28..32].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            verify(&forged, &key, BOARD_SIM).unwrap_err(),
            ImageError::BadSignature
        );

        // A header field changed (the version, to dodge the rollback floor).
        let mut hdr = img.clone();
        hdr[16] ^= 1;
        assert_eq!(
            verify(&hdr, &key, BOARD_SIM).unwrap_err(),
            ImageError::BadSignature
        );

        // Another key.
        let other = public_key(&[8; 32]);
        assert_eq!(
            verify(&img, &other, BOARD_SIM).unwrap_err(),
            ImageError::BadSignature
        );

        let wrong = image(b"payload bytes", 1, u32::from_le_bytes(*b"ASIC"));
        assert!(matches!(
            verify(&wrong, &key, BOARD_SIM),
            Err(ImageError::WrongBoard { .. })
        ));

        let mut magic = img.clone();
        magic[0] = b'X';
        assert_eq!(
            verify(&magic, &key, BOARD_SIM).unwrap_err(),
            ImageError::BadMagic
        );
        let mut fmt = img.clone();
        fmt[8] = 2;
        assert_eq!(
            verify(&fmt, &key, BOARD_SIM).unwrap_err(),
            ImageError::UnsupportedFormat(2)
        );
        let mut res = img.clone();
        res[50] = 1;
        assert_eq!(
            verify(&res, &key, BOARD_SIM).unwrap_err(),
            ImageError::BadHeader
        );
        let mut big = img.clone();
        big[24..28].copy_from_slice(&(SLOT_SIZE as u32).to_le_bytes());
        assert!(matches!(
            verify(&big, &key, BOARD_SIM),
            Err(ImageError::TooLarge(_))
        ));
    }

    #[test]
    fn an_image_signed_by_another_implementation_verifies() {
        // Made by Python's `cryptography` (Ed25519, seed 0x42 × 32) for the fuzz corpus:
        // the same bytes this crate would produce, and they verify.
        let img = include_bytes!("../../fuzz/corpus/image/valid-small");
        let key = public_key(&[0x42; 32]);
        let p = verify(img, &key, BOARD_SIM).unwrap();
        assert_eq!(&p.payload[..4], b"\x7fELF");
        let again = sign(&p.header, p.payload, &[0x42; 32]);
        assert_eq!(&again[..], &img[HEADER_SIZE..PAYLOAD_OFFSET]);
    }

    #[test]
    fn rollback_floor_and_downgrades() {
        // At or above the running version: no question asked.
        assert!(check_rollback(0x0100_0000, 0x0100_0000, 0, false).is_ok());
        assert!(check_rollback(0x0200_0000, 0x0100_0000, 0, false).is_ok());
        // Older: a downgrade, the host's to ask for.
        assert_eq!(
            check_rollback(0x0009_0000, 0x0100_0000, 0, false).unwrap_err(),
            ImageError::Downgrade {
                version: 0x0009_0000,
                running: 0x0100_0000
            }
        );
        assert!(check_rollback(0x0009_0000, 0x0100_0000, 0, true).is_ok());
        // Below the floor: refused, asked for or not.
        for allow in [false, true] {
            assert_eq!(
                check_rollback(0x0009_0000, 0x0100_0000, 0x0009_0001, allow).unwrap_err(),
                ImageError::BelowRollbackFloor {
                    version: 0x0009_0000,
                    floor: 0x0009_0001
                }
            );
        }
        let e = std::format!(
            "{}",
            check_rollback(0x0009_0000, 0x0100_0000, 0x0100_0000, true).unwrap_err()
        );
        assert_eq!(
            e,
            "version 0.9.0 is below the device's rollback floor 1.0.0, which nothing lowers"
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = verify(&b, &public_key(&SEED), BOARD_SIM);
        }
    }
}
