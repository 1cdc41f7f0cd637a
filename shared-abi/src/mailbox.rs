//! Mailbox protocol v1: the framing of management commands from host to firmware.
//!
//! A message is a 32-byte [`Header`] followed by `payload_len` bytes of payload. The CRC32
//! (IEEE 802.3, as in zlib) covers the header with its `crc` field zeroed, then the payload.
//! Requests and responses share the framing; a response carries [`HeaderFlags::RESPONSE`], the
//! request's opcode and sequence number, and a [`Status`].
//!
//! Transport: the host writes a message into `pf::MBOX_REQ`, its length into `MBOX_REQ_LEN`, then
//! increments `MBOX_DOORBELL`. The firmware polls the doorbell, answers into `pf::MBOX_RESP` and
//! sets `MBOX_STATE = Done` with `MBOX_DONE_DOORBELL` = the doorbell value it answered. A
//! request whose sequence number equals the last executed one is answered from the cached
//! response, never executed twice.

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Header magic ("AVMB").
pub const MAGIC: u32 = u32::from_le_bytes(*b"AVMB");
/// Protocol version spoken by this ABI.
pub const VERSION: u16 = 1;
/// Bytes of the header.
pub const HEADER_LEN: usize = 32;
/// Largest whole message (header + payload): the size of the request and response buffers.
pub const MAX_MESSAGE: usize = 4096;
/// Largest payload.
pub const MAX_PAYLOAD: usize = MAX_MESSAGE - HEADER_LEN;

// Slice-by-16: four CRCs per command (seal and check on each side) were a third of the
// mapped round trip with the byte-wise table. Costs 16 KiB of tables in the image.
const CRC: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISO_HDLC);

/// The fixed message header.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: U32,
    /// [`VERSION`].
    pub version: U16,
    /// [`Opcode`] as u16.
    pub opcode: U16,
    /// [`HeaderFlags`].
    pub flags: U16,
    /// [`Status`] in responses; 0 in requests.
    pub status: U16,
    /// Sequence number chosen by the host; echoed in the response.
    pub seq: U32,
    /// Payload bytes following the header.
    pub payload_len: U32,
    /// In requests, the token holding `MBOX_LOCK`; 0 in responses.
    pub lock: U32,
    /// Reserved, zero.
    pub reserved: U32,
    /// CRC32 over the header (this field zero) and the payload.
    pub crc: U32,
}

bitflags::bitflags! {
    /// Header `flags`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct HeaderFlags: u16 {
        /// The message is a response.
        const RESPONSE = 1 << 0;
        /// A response served from the replay cache (the command was not executed again).
        const REPLAYED = 1 << 1;
    }
}

pub use crate::messages::Opcode;

wire_enum! {
    /// Response status codes: every failure has its own.
    Status: u16 {
        /// Success.
        Ok = 0,
        /// Header version is not one the firmware speaks.
        UnsupportedVersion = 1,
        /// Header magic is wrong.
        BadMagic = 2,
        /// CRC32 mismatch.
        BadCrc = 3,
        /// Opcode is not known.
        UnknownOpcode = 4,
        /// Message or payload length is wrong for the buffer or the opcode.
        BadLength = 5,
        /// A field has an invalid value (reserved bits, zero counts, ...).
        InvalidArgument = 6,
        /// Not enough free engines, memory, queues or vectors.
        OutOfResources = 7,
        /// Enough memory in total, but no contiguous window large enough.
        Fragmented = 8,
        /// The VF index is out of range or the VF does not exist.
        InvalidVf = 9,
        /// The VF or device is in a state where the command cannot run.
        InvalidState = 10,
        /// The firmware is busy with another operation; retry.
        Busy = 11,
        /// The requester may not issue this command.
        Denied = 12,
        /// The command is known but not supported by this firmware or board.
        NotSupported = 13,
        /// More VFs than TotalVFs.
        TooManyVfs = 14,
        /// Firmware image rejected (format, CRC, signature, board, version).
        ImageRejected = 15,
        /// Flash could not be written.
        FlashError = 16,
        /// Internal firmware error; the device may need a reset.
        Internal = 17,
        /// The request's token does not hold the mailbox lock (its lease expired, or it never
        /// took it); nothing was executed.
        LockNotHeld = 18,
    }
}

wire_enum! {
    /// Fault codes reported in `pf::FAULT_CODE` and firmware events.
    FaultCode: u32 {
        /// No fault.
        None = 0,
        /// The firmware panicked and halted.
        Panic = 1,
        /// The board description is invalid.
        BadBoard = 2,
        /// The register banks disagree with the firmware's books.
        Inconsistent = 3,
        /// The watchdog expired.
        Watchdog = 4,
        /// The memory scrubber did not complete.
        ScrubTimeout = 5,
    }
}

impl Status {
    /// Short human-readable description.
    pub const fn describe(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::UnsupportedVersion => "unsupported mailbox protocol version",
            Status::BadMagic => "bad message magic",
            Status::BadCrc => "message CRC mismatch",
            Status::UnknownOpcode => "unknown opcode",
            Status::BadLength => "bad message length",
            Status::InvalidArgument => "invalid argument",
            Status::OutOfResources => "not enough free resources",
            Status::Fragmented => "device memory too fragmented for a contiguous window",
            Status::InvalidVf => "no such VF",
            Status::InvalidState => "invalid state for this command",
            Status::Busy => "firmware busy",
            Status::Denied => "denied",
            Status::NotSupported => "not supported by this firmware",
            Status::TooManyVfs => "more VFs than TotalVFs",
            Status::ImageRejected => "firmware image rejected",
            Status::FlashError => "flash write failed",
            Status::Internal => "internal firmware error",
            Status::LockNotHeld => "the mailbox lock is not held by this request's token",
        }
    }
}

/// Why a buffer is not a valid message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than a header.
    Truncated,
    /// Larger than [`MAX_MESSAGE`].
    TooLong,
    /// Magic is wrong.
    BadMagic,
    /// Version is not [`VERSION`].
    UnsupportedVersion(u16),
    /// `payload_len` disagrees with the buffer length.
    BadLength,
    /// CRC mismatch.
    BadCrc,
    /// Reserved fields or flags are nonzero.
    Reserved,
    /// Unknown opcode (the value is kept for the response).
    UnknownOpcode(u16),
    /// Unknown status in a response.
    UnknownStatus(u16),
    /// The payload's size or contents are wrong for its opcode.
    BadPayload,
}

impl DecodeError {
    /// The status a firmware answers with for this error.
    pub const fn status(self) -> Status {
        match self {
            DecodeError::Truncated | DecodeError::TooLong | DecodeError::BadLength => {
                Status::BadLength
            }
            DecodeError::BadMagic => Status::BadMagic,
            DecodeError::UnsupportedVersion(_) => Status::UnsupportedVersion,
            DecodeError::BadCrc => Status::BadCrc,
            DecodeError::Reserved | DecodeError::UnknownStatus(_) => Status::InvalidArgument,
            DecodeError::UnknownOpcode(_) => Status::UnknownOpcode,
            DecodeError::BadPayload => Status::BadLength,
        }
    }
}

/// Why a message could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small, or the payload exceeds [`MAX_PAYLOAD`].
    TooLong,
}

/// A decoded, CRC-checked message viewed in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// Opcode as sent. Requests are only decoded with a known opcode; responses echo whatever
    /// the request carried, so they may hold any value.
    pub opcode: u16,
    /// Flags.
    pub flags: HeaderFlags,
    /// Status (always `Ok` in requests).
    pub status: Status,
    /// Sequence number.
    pub seq: u32,
    /// The lock token (requests).
    pub lock: u32,
    /// Payload bytes.
    pub payload: &'a [u8],
}

/// Computes the CRC of a header (with `crc` treated as zero) and payload.
pub fn checksum(header: &Header, payload: &[u8]) -> u32 {
    let mut h = *header;
    h.crc = U32::new(0);
    let mut d = CRC.digest();
    d.update(h.as_bytes());
    d.update(payload);
    d.finalize()
}

/// Writes a message into `out`; returns its total length.
pub fn encode(
    out: &mut [u8],
    opcode: u16,
    flags: HeaderFlags,
    status: Status,
    seq: u32,
    lock: u32,
    payload: &[u8],
) -> Result<usize, EncodeError> {
    let total = HEADER_LEN + payload.len();
    if payload.len() > MAX_PAYLOAD || out.len() < total {
        return Err(EncodeError::TooLong);
    }
    out[HEADER_LEN..total].copy_from_slice(payload);
    seal(out, opcode, flags, status, seq, lock, payload.len())
}

/// Writes the header in front of a payload already at `buf[HEADER_LEN..]`; returns the total
/// length. Lets a responder build its payload in place.
pub fn seal(
    buf: &mut [u8],
    opcode: u16,
    flags: HeaderFlags,
    status: Status,
    seq: u32,
    lock: u32,
    payload_len: usize,
) -> Result<usize, EncodeError> {
    let total = HEADER_LEN + payload_len;
    if payload_len > MAX_PAYLOAD || buf.len() < total {
        return Err(EncodeError::TooLong);
    }
    let mut h = Header {
        magic: U32::new(MAGIC),
        version: U16::new(VERSION),
        opcode: U16::new(opcode),
        flags: U16::new(flags.bits()),
        status: U16::new(status.wire()),
        seq: U32::new(seq),
        payload_len: U32::new(payload_len as u32),
        lock: U32::new(lock),
        reserved: U32::new(0),
        crc: U32::new(0),
    };
    h.crc = U32::new(checksum(&h, &buf[HEADER_LEN..total]));
    buf[..HEADER_LEN].copy_from_slice(h.as_bytes());
    Ok(total)
}

/// Encodes a request sent under the lock token `lock`.
pub fn encode_request(
    out: &mut [u8],
    opcode: Opcode,
    seq: u32,
    lock: u32,
    payload: &[u8],
) -> Result<usize, EncodeError> {
    encode(
        out,
        opcode.wire(),
        HeaderFlags::empty(),
        Status::Ok,
        seq,
        lock,
        payload,
    )
}

/// Reads the header fields that identify a request even when the rest is bad, so that an
/// error response can echo opcode and sequence number. `None` if shorter than a header.
pub fn peek_header(buf: &[u8]) -> Option<Header> {
    Header::read_from_prefix(buf).ok().map(|(h, _)| h)
}

/// Validates framing, version and CRC, then decodes the header. Checks run in a fixed order
/// (length, magic, version, reserved, payload length, CRC, opcode) so each malformed buffer
/// gets one specific error.
pub fn decode(buf: &[u8]) -> Result<Message<'_>, DecodeError> {
    if buf.len() > MAX_MESSAGE {
        return Err(DecodeError::TooLong);
    }
    let (h, rest) = Header::ref_from_prefix(buf).map_err(|_| DecodeError::Truncated)?;
    if h.magic.get() != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if h.version.get() != VERSION {
        return Err(DecodeError::UnsupportedVersion(h.version.get()));
    }
    let flags = HeaderFlags::from_bits(h.flags.get()).ok_or(DecodeError::Reserved)?;
    if h.reserved.get() != 0 {
        return Err(DecodeError::Reserved);
    }
    if h.payload_len.get() as usize != rest.len() {
        return Err(DecodeError::BadLength);
    }
    if checksum(h, rest) != h.crc.get() {
        return Err(DecodeError::BadCrc);
    }
    let opcode = h.opcode.get();
    let status =
        Status::from_wire(h.status.get()).ok_or(DecodeError::UnknownStatus(h.status.get()))?;
    if !flags.contains(HeaderFlags::RESPONSE) {
        if status != Status::Ok {
            return Err(DecodeError::Reserved);
        }
        Opcode::from_wire(opcode).ok_or(DecodeError::UnknownOpcode(opcode))?;
    }
    Ok(Message {
        opcode,
        flags,
        status,
        seq: h.seq.get(),
        lock: h.lock.get(),
        payload: rest,
    })
}

impl Message<'_> {
    /// The opcode, if known (always, for a decoded request).
    pub fn op(&self) -> Option<Opcode> {
        Opcode::from_wire(self.opcode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn header_layout_matches_docs() {
        assert_eq!(size_of::<Header>(), HEADER_LEN);
        assert_eq!(core::mem::offset_of!(Header, magic), 0);
        assert_eq!(core::mem::offset_of!(Header, version), 4);
        assert_eq!(core::mem::offset_of!(Header, opcode), 6);
        assert_eq!(core::mem::offset_of!(Header, flags), 8);
        assert_eq!(core::mem::offset_of!(Header, status), 10);
        assert_eq!(core::mem::offset_of!(Header, seq), 12);
        assert_eq!(core::mem::offset_of!(Header, payload_len), 16);
        assert_eq!(core::mem::offset_of!(Header, lock), 20);
        assert_eq!(core::mem::offset_of!(Header, reserved), 24);
        assert_eq!(core::mem::offset_of!(Header, crc), 28);
        assert_eq!(MAX_MESSAGE, crate::regs::pf::MBOX_REQ.len as usize);
        assert_eq!(MAX_MESSAGE, crate::regs::pf::MBOX_RESP.len as usize);
    }

    #[test]
    fn known_vector() {
        // A HEARTBEAT request with seq 7 and a 4-byte payload, byte for byte (docs/abi.md).
        let mut buf = [0u8; 64];
        let n = encode_request(&mut buf, Opcode::Heartbeat, 7, 0, &[1, 2, 3, 4]).unwrap();
        assert_eq!(n, 36);
        assert_eq!(&buf[0..4], b"AVMB");
        assert_eq!(&buf[4..8], &[1, 0, 3, 0]);
        assert_eq!(&buf[12..16], &[7, 0, 0, 0]);
        assert_eq!(&buf[16..20], &[4, 0, 0, 0]);
        // CRC-32/ISO-HDLC check value of "123456789" pins the polynomial.
        assert_eq!(CRC.checksum(b"123456789"), 0xCBF4_3926);
        let m = decode(&buf[..n]).unwrap();
        assert_eq!(m.op(), Some(Opcode::Heartbeat));
        assert_eq!(m.seq, 7);
        assert_eq!(m.payload, &[1, 2, 3, 4]);
    }

    #[test]
    fn each_malformation_has_its_error() {
        let mut buf = [0u8; 64];
        let n = encode_request(&mut buf, Opcode::GetDeviceInfo, 1, 0, &[]).unwrap();
        assert_eq!(decode(&buf[..n - 1]), Err(DecodeError::Truncated));
        let mut b = buf;
        b[0] ^= 1;
        assert_eq!(decode(&b[..n]), Err(DecodeError::BadMagic));
        let mut b = buf;
        b[4] = 2;
        assert_eq!(decode(&b[..n]), Err(DecodeError::UnsupportedVersion(2)));
        let mut b = buf;
        b[24] = 1;
        assert_eq!(decode(&b[..n]), Err(DecodeError::Reserved));
        let mut b = buf;
        b[16] = 1;
        assert_eq!(decode(&b[..n]), Err(DecodeError::BadLength));
        assert_eq!(decode(&buf[..n + 4]), Err(DecodeError::BadLength));
        let mut b = buf;
        b[13] ^= 0x80;
        assert_eq!(decode(&b[..n]), Err(DecodeError::BadCrc));
        let n2 = encode(&mut b, 0x7777, HeaderFlags::empty(), Status::Ok, 1, 0, &[]).unwrap();
        assert_eq!(decode(&b[..n2]), Err(DecodeError::UnknownOpcode(0x7777)));
        let big = [0u8; MAX_MESSAGE + 1];
        assert_eq!(decode(&big), Err(DecodeError::TooLong));
        assert_eq!(
            encode_request(&mut [0u8; 8], Opcode::Heartbeat, 0, 0, &[]),
            Err(EncodeError::TooLong)
        );
    }

    #[test]
    fn wire_enums_round_trip() {
        for op in Opcode::ALL {
            assert_eq!(Opcode::from_wire(op.wire()), Some(*op));
        }
        for st in Status::ALL {
            assert_eq!(Status::from_wire(st.wire()), Some(*st));
            assert!(!st.describe().is_empty());
        }
        assert_eq!(Opcode::from_wire(0), None);
    }
}
