//! The remote-VF wire protocol, version 1: what an importer (the host whose VM uses the VF)
//! and an exporter (the host with the accelerator) send each other inside one mutual-TLS
//! stream per imported VF.
//!
//! # Framing
//!
//! Every frame is a 16-byte header followed by `len` bytes of payload, all little endian:
//!
//! | offset | size | field | rule |
//! |---|---|---|---|
//! | 0 | 4 | magic | `AVRF` (0x4652_5641) |
//! | 4 | 2 | version | [`VERSION`]; any other is refused |
//! | 6 | 2 | kind | one of [`Kind`] |
//! | 8 | 4 | len | payload bytes, at most [`MAX_PAYLOAD`] |
//! | 12 | 4 | reserved | 0 |
//!
//! A receiver reads the header, checks it, and only then reads `len` bytes: a peer can make
//! it hold at most [`MAX_PAYLOAD`] bytes per frame. A frame whose header or payload breaks a
//! rule ends the connection ([`FrameError`]); nothing of it takes effect.
//!
//! # Messages
//!
//! Payload layouts are fixed-size heads (the structs here), some followed by bytes whose
//! count the head gives; a payload must be exactly that long.
//!
//! | kind | from | payload |
//! |---|---|---|
//! | HELLO | importer | [`Hello`]: the VF asked for, and the session to resume (0: new) |
//! | WELCOME | exporter | [`Welcome`]: the session, the jobs the importer may have in flight |
//! | REFUSE | either | [`Refuse`] head, then a UTF-8 reason of `text_len` bytes (≤ 256) |
//! | REG_READ | importer | [`RegRead`]: a dword of the VF ([`space`]) |
//! | REG_WRITE | importer | [`RegWrite`] |
//! | REG_VALUE | exporter | [`RegValue`]: the answer to a REG_READ or REG_WRITE of that `id` |
//! | SUBMIT | importer | [`Submit`] head, then `in_len` bytes of the job's input data |
//! | COMPLETE | exporter | [`Complete`] head, then `out_len` bytes of output data |
//! | CREDIT | exporter | [`Credit`]: more jobs the importer may send |
//! | PING, PONG | either | [`Ping`] |
//! | ACK | importer | [`Ack`]: every job below `below` is complete and delivered |
//! | DATA | either | [`Data`] head, then `len` bytes: a job's host data past one frame |
//!
//! Sequence numbers (`Submit::seq`) count jobs of a session from 1, so that a job resubmitted
//! after a reconnect is recognised and answered from the exporter's completion cache, never
//! run twice. The importer may submit only jobs in the window `[below, below + credits)`
//! (`below` as its last ACK said, 1 at first), so the exporter keeps at most `credits`
//! completions for it ([`crate::session`]).
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `AVRF`, little endian.
pub const MAGIC: u32 = u32::from_le_bytes(*b"AVRF");
/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;
/// Bytes of a frame header.
pub const HEADER_SIZE: usize = 16;
/// Most payload bytes one frame carries: a 1 MiB job's data and its head.
pub const MAX_PAYLOAD: usize = (1 << 20) + 256;
/// Most bytes of a REFUSE reason.
pub const MAX_REASON: usize = 256;

/// A frame header as it travels.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: U32,
    /// [`VERSION`].
    pub version: U16,
    /// [`Kind`] as a number.
    pub kind: U16,
    /// Payload bytes.
    pub len: U32,
    /// 0.
    pub reserved: U32,
}

shared_abi::wire_enum! {
    /// What a frame carries.
    Kind: u16 {
        /// Importer → exporter: the first frame.
        Hello = 1,
        /// Exporter → importer: the VF is this importer's.
        Welcome = 2,
        /// Either: refused, with the reason; the connection ends.
        Refuse = 3,
        /// A register read.
        RegRead = 4,
        /// A register write.
        RegWrite = 5,
        /// A register access's answer.
        RegValue = 6,
        /// A job.
        Submit = 7,
        /// A job's completion.
        Complete = 8,
        /// More credits.
        Credit = 9,
        /// Liveness probe.
        Ping = 10,
        /// Its answer.
        Pong = 11,
        /// Completions delivered.
        Ack = 12,
        /// More of a job's host data.
        Data = 13,
    }
}

/// HELLO.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Hello {
    /// The VF asked for, as the exporter numbers what it exports.
    pub vf: U32,
    /// 0.
    pub reserved: U32,
    /// The session to resume after a dropped link; 0 for a new one.
    pub session: U64,
}

/// WELCOME.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Welcome {
    /// The session (resumed or new).
    pub session: U64,
    /// Jobs the importer may have in flight.
    pub credits: U32,
    /// 0.
    pub reserved: U32,
}

/// REFUSE head; the reason follows.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Refuse {
    /// Why, as a number ([`refuse`]).
    pub code: U32,
    /// Bytes of UTF-8 text that follow.
    pub text_len: U32,
}

/// Reasons for REFUSE.
pub mod refuse {
    /// The frame broke the protocol.
    pub const PROTOCOL: u32 = 1;
    /// The certificate's identity may not have this VF.
    pub const NOT_ALLOWED: u32 = 2;
    /// Another importer has the VF.
    pub const BUSY: u32 = 3;
    /// No such VF is exported.
    pub const NO_SUCH_VF: u32 = 4;
    /// The session to resume is unknown (the importer starts a new one).
    pub const NO_SUCH_SESSION: u32 = 5;
}

/// Which register space an access goes to. The exporter forwards only what is the VF's
/// own and not queue traffic (its queues and MSI-X are the importer's to emulate, and the
/// real VF's are the exporter's).
pub mod space {
    /// BAR 0 of the VF: the VF register block below the queue window
    /// (`shared_abi::regs::vf`); writes to it except IRQ_TRIGGER.
    pub const BAR0: u32 = 0;
    /// The VF's configuration space: reads only.
    pub const CONFIG: u32 = 1;
    /// BAR 2 of the VF: its device memory window (stage 2 only), any dword of it.
    pub const BAR2: u32 = 2;
    /// A write of 1 resets the VF (a function level reset); no reads.
    pub const RESET: u32 = 3;
}

/// REG_READ.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct RegRead {
    /// Matches the answer.
    pub id: U32,
    /// [`space`].
    pub space: U32,
    /// Byte offset, dword aligned.
    pub offset: U64,
}

/// REG_WRITE.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct RegWrite {
    /// Matches the answer.
    pub id: U32,
    /// [`space`].
    pub space: U32,
    /// Byte offset, dword aligned.
    pub offset: U64,
    /// The dword.
    pub value: U32,
    /// 0.
    pub reserved: U32,
}

/// REG_VALUE.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct RegValue {
    /// The access answered.
    pub id: U32,
    /// 0, or an errno the access got on the real VF.
    pub errno: U32,
    /// The dword read (0 for a write).
    pub value: U32,
    /// 0.
    pub reserved: U32,
}

/// SUBMIT head; `in_len` bytes of input data follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Submit {
    /// The job's sequence number in its session (from 1).
    pub seq: U64,
    /// The VF's queue it was taken from.
    pub queue: U32,
    /// Input bytes that follow.
    pub in_len: U32,
    /// The submission entry as the guest wrote it (`shared_abi::jobs`).
    pub sqe: [u8; shared_abi::jobs::SQE_SIZE],
}

/// COMPLETE head; `out_len` bytes of output data follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Complete {
    /// The job's sequence number.
    pub seq: U64,
    /// The queue it came from.
    pub queue: U32,
    /// Output bytes that follow.
    pub out_len: U32,
    /// The completion entry the real VF wrote.
    pub cqe: [u8; shared_abi::jobs::CQE_SIZE],
}

/// CREDIT.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Credit {
    /// More jobs the importer may have in flight.
    pub credits: U32,
    /// 0.
    pub reserved: U32,
}

/// PING and PONG.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Ping {
    /// Echoed.
    pub nonce: U64,
}

/// ACK.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Ack {
    /// Every job with a lower sequence number is complete and its completion delivered.
    pub below: U64,
}

/// DATA head; `len` bytes of a job's host data follow: input past what its SUBMIT carried
/// (importer to exporter), or output before its COMPLETE (exporter to importer). A job's
/// DATA frames come in order of `offset`, each right after the last.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Data {
    /// The job's sequence number.
    pub seq: U64,
    /// Where in the job's input or output these bytes go.
    pub offset: U32,
    /// Bytes that follow.
    pub len: U32,
}

/// One decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// HELLO.
    Hello(Hello),
    /// WELCOME.
    Welcome(Welcome),
    /// REFUSE and its reason.
    Refuse(u32, String),
    /// REG_READ.
    RegRead(RegRead),
    /// REG_WRITE.
    RegWrite(RegWrite),
    /// REG_VALUE.
    RegValue(RegValue),
    /// SUBMIT and its input data.
    Submit(Submit, Vec<u8>),
    /// COMPLETE and its output data.
    Complete(Complete, Vec<u8>),
    /// CREDIT.
    Credit(Credit),
    /// PING.
    Ping(Ping),
    /// PONG.
    Pong(Ping),
    /// ACK.
    Ack(Ack),
    /// DATA and its bytes.
    Data(Data, Vec<u8>),
}

impl Message {
    /// The frame kind that carries it.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello(_) => Kind::Hello,
            Message::Welcome(_) => Kind::Welcome,
            Message::Refuse(..) => Kind::Refuse,
            Message::RegRead(_) => Kind::RegRead,
            Message::RegWrite(_) => Kind::RegWrite,
            Message::RegValue(_) => Kind::RegValue,
            Message::Submit(..) => Kind::Submit,
            Message::Complete(..) => Kind::Complete,
            Message::Credit(_) => Kind::Credit,
            Message::Ping(_) => Kind::Ping,
            Message::Pong(_) => Kind::Pong,
            Message::Ack(_) => Kind::Ack,
            Message::Data(..) => Kind::Data,
        }
    }
}

/// Why a frame was refused. The connection that sent it ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not this protocol.
    #[error("not an accelvirt remote-VF frame (magic {0:#010x})")]
    Magic(u32),
    /// Another version.
    #[error("protocol version {0}, this side speaks {VERSION}")]
    Version(u16),
    /// An unknown kind.
    #[error("unknown frame kind {0}")]
    Kind(u16),
    /// Reserved bits set.
    #[error("reserved header bits set")]
    Reserved,
    /// Larger than any frame may be.
    #[error("frame of {0} bytes, more than {MAX_PAYLOAD}")]
    TooLarge(u32),
    /// The payload does not have the length its kind and head say.
    #[error("{0} payload of {1} bytes does not match its layout")]
    Length(&'static str, usize),
    /// A REFUSE reason that is not UTF-8 or too long.
    #[error("bad REFUSE reason")]
    Reason,
}

/// Checks a header; returns its kind and payload length.
pub fn check_header(h: &Header) -> Result<(Kind, usize), FrameError> {
    if h.magic.get() != MAGIC {
        return Err(FrameError::Magic(h.magic.get()));
    }
    if h.version.get() != VERSION {
        return Err(FrameError::Version(h.version.get()));
    }
    let kind = Kind::from_wire(h.kind.get()).ok_or(FrameError::Kind(h.kind.get()))?;
    if h.reserved.get() != 0 {
        return Err(FrameError::Reserved);
    }
    let len = h.len.get();
    if len as usize > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    Ok((kind, len as usize))
}

/// A fixed-size payload, exactly.
fn exact<T: FromBytes + KnownLayout + Immutable>(
    what: &'static str,
    p: &[u8],
) -> Result<T, FrameError> {
    T::read_from_bytes(p).map_err(|_| FrameError::Length(what, p.len()))
}

/// A head and the `n` bytes it says follow, exactly.
fn head_and<T: FromBytes + KnownLayout + Immutable>(
    what: &'static str,
    p: &[u8],
    n: impl Fn(&T) -> usize,
) -> Result<(T, Vec<u8>), FrameError> {
    let (h, rest) = T::read_from_prefix(p).map_err(|_| FrameError::Length(what, p.len()))?;
    if rest.len() != n(&h) {
        return Err(FrameError::Length(what, p.len()));
    }
    Ok((h, rest.to_vec()))
}

/// Decodes a payload of `kind`.
pub fn decode(kind: Kind, p: &[u8]) -> Result<Message, FrameError> {
    Ok(match kind {
        Kind::Hello => Message::Hello(exact("HELLO", p)?),
        Kind::Welcome => Message::Welcome(exact("WELCOME", p)?),
        Kind::Refuse => {
            let (h, text) = head_and::<Refuse>("REFUSE", p, |h| h.text_len.get() as usize)?;
            if text.len() > MAX_REASON {
                return Err(FrameError::Reason);
            }
            let text = String::from_utf8(text).map_err(|_| FrameError::Reason)?;
            Message::Refuse(h.code.get(), text)
        }
        Kind::RegRead => Message::RegRead(exact("REG_READ", p)?),
        Kind::RegWrite => Message::RegWrite(exact("REG_WRITE", p)?),
        Kind::RegValue => Message::RegValue(exact("REG_VALUE", p)?),
        Kind::Submit => {
            let (h, d) = head_and::<Submit>("SUBMIT", p, |h| h.in_len.get() as usize)?;
            Message::Submit(h, d)
        }
        Kind::Complete => {
            let (h, d) = head_and::<Complete>("COMPLETE", p, |h| h.out_len.get() as usize)?;
            Message::Complete(h, d)
        }
        Kind::Credit => Message::Credit(exact("CREDIT", p)?),
        Kind::Ping => Message::Ping(exact("PING", p)?),
        Kind::Pong => Message::Pong(exact("PONG", p)?),
        Kind::Ack => Message::Ack(exact("ACK", p)?),
        Kind::Data => {
            let (h, d) = head_and::<Data>("DATA", p, |h| h.len.get() as usize)?;
            Message::Data(h, d)
        }
    })
}

/// Decodes one whole frame (header and payload), which must be all of `frame`.
pub fn decode_frame(frame: &[u8]) -> Result<Message, FrameError> {
    let (h, p) =
        Header::read_from_prefix(frame).map_err(|_| FrameError::Length("header", frame.len()))?;
    let (kind, len) = check_header(&h)?;
    if p.len() != len {
        return Err(FrameError::Length("frame", frame.len()));
    }
    decode(kind, p)
}

/// A message that carries bytes, the bytes borrowed: encoded straight from where they are
/// (a job buffer, the device's completion memory) into the link's output, with no copy
/// into a [`Message`] first.
#[derive(Clone, Copy, Debug)]
pub enum WithData<'a> {
    /// SUBMIT and its input data.
    Submit(Submit, &'a [u8]),
    /// COMPLETE and its output data.
    Complete(Complete, &'a [u8]),
    /// DATA and its bytes.
    Data(Data, &'a [u8]),
}

/// Encodes `m` as one frame. A message too large for one frame (data past
/// [`MAX_PAYLOAD`], a reason past [`MAX_REASON`]) is refused, not cut.
pub fn encode(m: &Message) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode_into(m, &mut out)?;
    Ok(out)
}

/// Encodes `m` as one frame at the end of `out` (unchanged if `m` is refused).
pub fn encode_into(m: &Message, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let (head, tail): (&[u8], &[u8]) = match m {
        Message::Hello(x) => (x.as_bytes(), &[]),
        Message::Welcome(x) => (x.as_bytes(), &[]),
        Message::Refuse(code, text) => {
            if text.len() > MAX_REASON {
                return Err(FrameError::Reason);
            }
            let h = Refuse {
                code: (*code).into(),
                text_len: (text.len() as u32).into(),
            };
            return frame_into(Kind::Refuse, h.as_bytes(), text.as_bytes(), out);
        }
        Message::RegRead(x) => (x.as_bytes(), &[]),
        Message::RegWrite(x) => (x.as_bytes(), &[]),
        Message::RegValue(x) => (x.as_bytes(), &[]),
        Message::Submit(x, d) => return encode_data_into(WithData::Submit(*x, d), out),
        Message::Complete(x, d) => return encode_data_into(WithData::Complete(*x, d), out),
        Message::Credit(x) => (x.as_bytes(), &[]),
        Message::Ping(x) | Message::Pong(x) => (x.as_bytes(), &[]),
        Message::Ack(x) => (x.as_bytes(), &[]),
        Message::Data(x, d) => return encode_data_into(WithData::Data(*x, d), out),
    };
    frame_into(m.kind(), head, tail, out)
}

/// Encodes a message that carries bytes at the end of `out`; the length its head says must
/// be the bytes' length.
pub fn encode_data_into(m: WithData<'_>, out: &mut Vec<u8>) -> Result<(), FrameError> {
    let (kind, head, said, tail) = match &m {
        WithData::Submit(x, d) => (Kind::Submit, x.as_bytes(), x.in_len.get(), *d),
        WithData::Complete(x, d) => (Kind::Complete, x.as_bytes(), x.out_len.get(), *d),
        WithData::Data(x, d) => (Kind::Data, x.as_bytes(), x.len.get(), *d),
    };
    if said as usize != tail.len() {
        return Err(FrameError::Length("data", tail.len()));
    }
    frame_into(kind, head, tail, out)
}

fn frame_into(kind: Kind, head: &[u8], tail: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    let len = head.len() + tail.len();
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len as u32));
    }
    let h = Header {
        magic: MAGIC.into(),
        version: VERSION.into(),
        kind: kind.wire().into(),
        len: (len as u32).into(),
        reserved: 0.into(),
    };
    out.reserve(HEADER_SIZE + len);
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(head);
    out.extend_from_slice(tail);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn submit(seq: u64, data: Vec<u8>) -> Message {
        let mut sqe = [0u8; shared_abi::jobs::SQE_SIZE];
        sqe[0] = 0x81;
        Message::Submit(
            Submit {
                seq: seq.into(),
                queue: 2.into(),
                in_len: (data.len() as u32).into(),
                sqe,
            },
            data,
        )
    }

    #[test]
    fn layouts_are_fixed() {
        use std::mem::size_of;
        assert_eq!(size_of::<Header>(), HEADER_SIZE);
        assert_eq!(size_of::<Hello>(), 16);
        assert_eq!(size_of::<Welcome>(), 16);
        assert_eq!(size_of::<RegRead>(), 16);
        assert_eq!(size_of::<RegWrite>(), 24);
        assert_eq!(size_of::<RegValue>(), 16);
        assert_eq!(size_of::<Submit>(), 16 + 64);
        assert_eq!(size_of::<Complete>(), 16 + 16);
        assert_eq!(
            &encode(&Message::Ping(Ping { nonce: 7.into() })).unwrap()[..4],
            b"AVRF"
        );
    }

    #[test]
    fn every_message_round_trips() {
        let all = [
            Message::Hello(Hello {
                vf: 3.into(),
                reserved: 0.into(),
                session: 99.into(),
            }),
            Message::Welcome(Welcome {
                session: 99.into(),
                credits: 32.into(),
                reserved: 0.into(),
            }),
            Message::Refuse(refuse::BUSY, "VF 3 is exported to another importer".into()),
            Message::RegRead(RegRead {
                id: 1.into(),
                space: space::BAR0.into(),
                offset: 0x40.into(),
            }),
            Message::RegValue(RegValue {
                id: 1.into(),
                errno: 0.into(),
                value: 0xABCD.into(),
                reserved: 0.into(),
            }),
            submit(1, vec![5; 4096]),
            Message::Credit(Credit {
                credits: 4.into(),
                reserved: 0.into(),
            }),
            Message::Pong(Ping { nonce: 1.into() }),
            Message::Ack(Ack { below: 17.into() }),
            Message::Data(
                Data {
                    seq: 3.into(),
                    offset: 4096.into(),
                    len: 3.into(),
                },
                vec![1, 2, 3],
            ),
        ];
        for m in all {
            assert_eq!(decode_frame(&encode(&m).unwrap()).unwrap(), m);
        }
    }

    #[test]
    fn malformed_frames_are_refused_with_their_reason() {
        let good = encode(&submit(1, vec![1, 2, 3])).unwrap();
        let with = |at: usize, b: &[u8]| {
            let mut f = good.clone();
            f[at..at + b.len()].copy_from_slice(b);
            decode_frame(&f)
        };
        assert!(matches!(with(0, b"HTTP"), Err(FrameError::Magic(_))));
        assert_eq!(with(4, &2u16.to_le_bytes()), Err(FrameError::Version(2)));
        assert_eq!(with(6, &99u16.to_le_bytes()), Err(FrameError::Kind(99)));
        assert_eq!(with(12, &1u32.to_le_bytes()), Err(FrameError::Reserved));
        assert_eq!(
            with(8, &(MAX_PAYLOAD as u32 + 1).to_le_bytes()),
            Err(FrameError::TooLarge(MAX_PAYLOAD as u32 + 1))
        );
        // The head says 3 bytes follow, the frame has 2 / 4.
        assert!(matches!(
            decode_frame(&good[..good.len() - 1]),
            Err(FrameError::Length(..))
        ));
        let mut long = good.clone();
        long.push(0);
        long[8..12].copy_from_slice(&((good.len() - HEADER_SIZE + 1) as u32).to_le_bytes());
        assert!(matches!(decode_frame(&long), Err(FrameError::Length(..))));
        // A data length the head does not say is refused when encoding too.
        let Message::Submit(mut h, d) = submit(1, vec![0; 8]) else {
            unreachable!()
        };
        h.in_len = 9.into();
        assert!(encode(&Message::Submit(h, d)).is_err());
        assert_eq!(
            encode(&Message::Refuse(1, "x".repeat(MAX_REASON + 1))),
            Err(FrameError::Reason)
        );
        assert!(encode(&submit(1, vec![0; MAX_PAYLOAD])).is_err());
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder; what it accepts encodes back to itself.
        #[test]
        fn arbitrary_frames_decode_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(m) = decode_frame(&bytes) {
                prop_assert_eq!(encode(&m).unwrap(), bytes);
            }
        }

        #[test]
        fn submissions_of_any_size_round_trip(seq in any::<u64>(), n in 0usize..70_000) {
            let m = submit(seq, vec![0xA5; n]);
            prop_assert_eq!(decode_frame(&encode(&m).unwrap()).unwrap(), m);
        }
    }
}
