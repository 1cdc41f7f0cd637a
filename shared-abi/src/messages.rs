//! The opcodes, their request and response payloads, and the typed [`Request`] that the
//! firmware parses once at its edge.
//!
//! Each opcode is declared once in `opcodes!` with its arguments type; the wire enum, the
//! request enum and its parse/write dispatch are generated from that list, and docs/abi.md's
//! opcode table is checked against it.

use crate::mailbox::{DecodeError, EncodeError};
pub use crate::resources::{DeviceInfo, DeviceStats, FreeResources, VfInfo, VfSpec, VfStats};
use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Names one VF, or all of them with [`VfRef::ALL`]. 4 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct VfRef {
    /// VF index (ignored with `ALL`).
    pub vf: U16,
    /// Bit 0: all VFs (DESTROY_VF, GET_STATS only).
    pub flags: U16,
}

impl VfRef {
    /// `flags` bit: the command applies to all VFs.
    pub const ALL: u16 = 1;
}

wire_enum! {
    /// How CREATE_VFS sizes its VFs.
    Profile: u8 {
        /// Split the free resources equally; no specs follow.
        Equal = 0,
        /// One spec follows and applies to every VF.
        Uniform = 1,
        /// `count` specs follow, one per VF.
        Explicit = 2,
    }
}

/// CREATE_VFS request head. 8 bytes; specs follow.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct CreateVfsReq {
    /// VFs to create (1..=TotalVFs).
    pub count: U16,
    /// [`Profile`].
    pub profile: u8,
    /// Reserved, zero.
    pub flags: u8,
    /// Reserved, zero.
    pub reserved: U32,
}

/// A count in a response (created or destroyed VFs). 4 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct CountResp {
    /// How many.
    pub count: U16,
    /// Reserved.
    pub reserved: U16,
}

/// CONFIGURE_VF request. 20 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct ConfigureVfReq {
    /// VF index.
    pub vf: U16,
    /// Reserved, zero.
    pub reserved: U16,
    /// New resources (weight 0 keeps the current weight).
    pub spec: VfSpec,
}

/// SET_QOS request. 4 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct SetQosReq {
    /// VF index.
    pub vf: U16,
    /// New weight (1..=1000).
    pub weight: U16,
}

/// HEARTBEAT request. 4 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct HeartbeatReq {
    /// Echoed back.
    pub nonce: U32,
}

/// HEARTBEAT response. 16 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct HeartbeatResp {
    /// The request's nonce.
    pub nonce: U32,
    /// `pf::HEARTBEAT` at the time of the answer.
    pub heartbeat: U32,
    /// Milliseconds since firmware start.
    pub uptime_ms: zerocopy::little_endian::U64,
}

/// FW_DOWNLOAD_BEGIN request. 12 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct FwBeginReq {
    /// Total image bytes.
    pub total_len: U32,
    /// CRC32 of the whole image.
    pub image_crc: U32,
    /// Target slot (0 = A, 1 = B, 0xFF = the inactive one).
    pub slot: u8,
    /// Bit 0: allow downgrade.
    pub flags: u8,
    /// Reserved, zero.
    pub reserved: U16,
}

/// FW_DOWNLOAD_BEGIN response. 8 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct FwBeginResp {
    /// The slot being written.
    pub slot: u8,
    /// Reserved, zero.
    pub reserved: [u8; 3],
    /// Bytes already written: 0 for a new download; for the download in progress of the
    /// same image (same length and CRC), where its next chunk starts (resuming after a lost
    /// connection).
    pub resume_from: U32,
}

/// FW_DOWNLOAD_CHUNK request head. 8 bytes; `len` data bytes follow.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct FwChunkReq {
    /// Byte offset of this chunk in the image.
    pub offset: U32,
    /// Data bytes following.
    pub len: U32,
}

/// FW_ACTIVATE request. 4 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct FwActivateReq {
    /// Slot to boot at the next reset.
    pub slot: u8,
    /// Reserved, zero.
    pub reserved: [u8; 3],
}

/// One flash slot in FW_QUERY_SLOTS. 16 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct FwSlotInfo {
    /// Slot index.
    pub slot: u8,
    /// Bit 0 valid, bit 1 running, bit 2 pending (boots next), bit 3 bad.
    pub flags: u8,
    /// Reserved.
    pub reserved: U16,
    /// Version word.
    pub version: U32,
    /// Build id.
    pub build_id: U32,
    /// Image bytes.
    pub size: U32,
}

/// GET_LOG / ACK_EVENTS request. 4 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct IndexReq {
    /// A ring index.
    pub index: U32,
}

/// Declares the opcodes once: each with its wire value, docs name, whether it changes device
/// state, the type of its arguments and the payloads docs/abi.md's table gives it. Generates
/// the [`Opcode`] wire enum, the typed [`Request`], and the dispatch that parses and writes a
/// request's payload through its arguments' [`Args`] impl.
macro_rules! opcodes {
    ($(#[$m:meta])* Opcode {
        $($(#[$vm:meta])* $v:ident = $n:expr, $name:literal, $kind:ident $args:ty,
            $req:literal, $resp:literal;)*
    }) => {
        wire_enum! {
            $(#[$m])*
            Opcode: u16 { $($(#[$vm])* $v = $n,)* }
        }
        impl Opcode {
            /// Its name in docs/abi.md and in error messages (`CREATE_VFS`).
            pub const fn name(self) -> &'static str {
                match self { $(Opcode::$v => $name,)* }
            }
            /// Its request and response payloads, as docs/abi.md's opcode table states them.
            pub const fn payloads(self) -> (&'static str, &'static str) {
                match self { $(Opcode::$v => ($req, $resp),)* }
            }
            /// Whether it only reads: a query never changes the books, banks or rings.
            pub const fn is_query(self) -> bool {
                match self { $(Opcode::$v => opcodes!(@query $kind),)* }
            }
        }

        /// A request with its arguments, parsed and length-checked. Field values are checked
        /// by the firmware, which knows the board.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Request<'a> {
            $($(#[$vm])* $v($args),)*
        }

        impl<'a> Request<'a> {
            /// Opcode of this request.
            pub const fn opcode(&self) -> Opcode {
                match self { $(Request::$v(_) => Opcode::$v,)* }
            }
            /// Parses a payload for `opcode`. Sizes, reserved fields and enum values are
            /// checked; nothing else.
            pub fn parse(opcode: Opcode, p: &'a [u8]) -> Result<Self, DecodeError> {
                Ok(match opcode { $(Opcode::$v => Request::$v(<$args as Args<'a>>::decode(p)?),)* })
            }
            /// Writes this request's payload into `out`; returns its length.
            pub fn write_payload(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
                let mut w = Writer::new(out);
                match self { $(Request::$v(a) => a.encode(&mut w)?,)* }
                Ok(w.len())
            }
        }
    };
    (@query query) => { true };
    (@query command) => { false };
}

opcodes! {
    /// Management command opcodes. Values are stable; gaps are never reused. Each is declared
    /// once here with the name and payloads docs/abi.md's opcode table gives it (a test checks
    /// the table against these declarations).
    Opcode {
        /// Identity, versions, board and capabilities.
        GetDeviceInfo = 0x0001, "GET_DEVICE_INFO", query (), "—", "DeviceInfo";
        /// Free resources.
        GetResources = 0x0002, "GET_RESOURCES", query (), "—", "FreeResources";
        /// Liveness check.
        Heartbeat = 0x0003, "HEARTBEAT", query Heartbeat, "`nonce u32`", "`nonce u32, heartbeat u32, uptime_ms u64`";
        /// Create VFs from a profile or explicit specs (all or nothing).
        CreateVfs = 0x0010, "CREATE_VFS", command CreateVfs<'a>, "`count u16, profile u8 (0 EQUAL, 1 UNIFORM, 2 EXPLICIT), flags u8 = 0, reserved u32` + VfSpec (UNIFORM) or VfSpec × count (EXPLICIT)", "`count u16, reserved u16` + VfInfo × count";
        /// Destroy one VF or all.
        DestroyVf = 0x0011, "DESTROY_VF", command Target, "VfRef (flag ALL)", "`count u16, reserved u16`";
        /// Report one VF's resources and state, or every VF that holds resources.
        QueryVf = 0x0012, "QUERY_VF", query Target, "VfRef (flag ALL)", "VfInfo, or CountResp + VfInfo × n";
        /// Resize a live VF.
        ConfigureVf = 0x0013, "CONFIGURE_VF", command ConfigureVf<'a>, "`vf u16, reserved u16, VfSpec` (weight 0 keeps)", "VfInfo";
        /// Function level reset of one VF.
        ResetVf = 0x0014, "RESET_VF", command VfIndex, "VfRef", "VfInfo";
        /// Change a VF's scheduler weight.
        SetQos = 0x0015, "SET_QOS", command SetQos, "`vf u16, weight u16`", "VfInfo";
        /// Counters of one VF or of the device.
        GetStats = 0x0016, "GET_STATS", query Target, "VfRef (flag ALL)", "VfStats, or DeviceStats + VfStats × n";
        /// Start a firmware download into a flash slot.
        FwDownloadBegin = 0x0020, "FW_DOWNLOAD_BEGIN", command &'a FwBeginReq, "`total_len u32, image_crc u32, slot u8, flags u8 (bit 0 allow downgrade), reserved u16`", "`slot u8, reserved u8[3], resume_from u32`";
        /// One chunk of a firmware image.
        FwDownloadChunk = 0x0021, "FW_DOWNLOAD_CHUNK", command FwChunk<'a>, "`offset u32, len u32` + data", "—";
        /// Verify and commit the downloaded image.
        FwDownloadCommit = 0x0022, "FW_DOWNLOAD_COMMIT", command (), "—", "—";
        /// Boot a committed slot at the next reset.
        FwActivate = 0x0023, "FW_ACTIVATE", command FwActivate, "`slot u8, reserved u8[3]`", "—";
        /// Flash slot states and versions.
        FwQuerySlots = 0x0024, "FW_QUERY_SLOTS", query (), "—", "FwSlotInfo × 2 (`slot u8, flags u8, reserved u16, version u32, build_id u32, size u32`)";
        /// Fetch firmware log frames from a log ring byte index (reserved).
        GetLog = 0x0030, "GET_LOG", query RingIndex, "`index u32`", "reserved";
        /// Acknowledge events up to an event ring index (reserved).
        AckEvents = 0x0031, "ACK_EVENTS", command RingIndex, "`index u32`", "reserved";
    }
}

/// A request's arguments: how they are read from and written to the payload. Each opcode's
/// arguments type is named in its declaration, so parsing and writing follow from it.
pub trait Args<'a>: Sized {
    /// Parses and length-checks a payload; reserved fields must be zero.
    fn decode(p: &'a [u8]) -> Result<Self, DecodeError>;
    /// Appends the payload.
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError>;
}

/// No arguments: the payload is empty.
impl Args<'_> for () {
    fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        if p.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::BadPayload)
        }
    }
    fn encode(&self, _: &mut Writer<'_>) -> Result<(), EncodeError> {
        Ok(())
    }
}

/// Which VFs a command applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// One VF.
    One(u16),
    /// Every VF.
    All,
}

impl Args<'_> for Target {
    fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let r = exact::<VfRef>(p)?;
        match r.flags.get() {
            0 => Ok(Target::One(r.vf.get())),
            VfRef::ALL => Ok(Target::All),
            _ => Err(DecodeError::Reserved),
        }
    }
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let (vf, flags) = match *self {
            Target::One(v) => (v, 0),
            Target::All => (0, VfRef::ALL),
        };
        w.put(&VfRef {
            vf: U16::new(vf),
            flags: U16::new(flags),
        })
    }
}

/// Exactly one VF (a [`VfRef`] without the ALL flag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VfIndex(pub u16);

impl Args<'_> for VfIndex {
    fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        match Target::decode(p)? {
            Target::One(v) => Ok(VfIndex(v)),
            Target::All => Err(DecodeError::Reserved),
        }
    }
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        Target::One(self.0).encode(w)
    }
}

/// HEARTBEAT arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// Echoed back.
    pub nonce: u32,
}

impl Args<'_> for Heartbeat {
    fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        Ok(Heartbeat {
            nonce: exact::<HeartbeatReq>(p)?.nonce.get(),
        })
    }
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.put(&HeartbeatReq {
            nonce: U32::new(self.nonce),
        })
    }
}

/// The resources requested by CREATE_VFS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sizing<'a> {
    /// Equal split of what is free.
    Equal,
    /// The same spec for every VF.
    Uniform(&'a VfSpec),
    /// One spec per VF (`len == count`).
    Explicit(&'a [VfSpec]),
}

/// CREATE_VFS arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreateVfs<'a> {
    /// VFs to create.
    pub count: u16,
    /// Their sizes.
    pub sizing: Sizing<'a>,
}

impl<'a> Args<'a> for CreateVfs<'a> {
    fn decode(p: &'a [u8]) -> Result<Self, DecodeError> {
        let (head, rest) = CreateVfsReq::ref_from_prefix(p).map_err(|_| DecodeError::BadPayload)?;
        if head.flags != 0 || head.reserved.get() != 0 {
            return Err(DecodeError::Reserved);
        }
        let count = head.count.get();
        let sizing = match Profile::from_wire(head.profile) {
            Some(Profile::Equal) => <()>::decode(rest).map(|_| Sizing::Equal)?,
            Some(Profile::Uniform) => Sizing::Uniform(exact::<VfSpec>(rest)?),
            Some(Profile::Explicit) => {
                let specs =
                    <[VfSpec]>::ref_from_bytes(rest).map_err(|_| DecodeError::BadPayload)?;
                if specs.len() != count as usize {
                    return Err(DecodeError::BadPayload);
                }
                Sizing::Explicit(specs)
            }
            None => return Err(DecodeError::Reserved),
        };
        let specs: &[VfSpec] = match sizing {
            Sizing::Equal => &[],
            Sizing::Uniform(s) => core::slice::from_ref(s),
            Sizing::Explicit(s) => s,
        };
        if specs.iter().any(|s| s.reserved.get() != 0) {
            return Err(DecodeError::Reserved);
        }
        Ok(CreateVfs { count, sizing })
    }
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let profile = match self.sizing {
            Sizing::Equal => Profile::Equal,
            Sizing::Uniform(_) => Profile::Uniform,
            Sizing::Explicit(_) => Profile::Explicit,
        };
        w.put(&CreateVfsReq {
            count: U16::new(self.count),
            profile: profile as u8,
            flags: 0,
            reserved: U32::new(0),
        })?;
        match self.sizing {
            Sizing::Equal => Ok(()),
            Sizing::Uniform(s) => w.put(s),
            Sizing::Explicit(s) => w.put(s),
        }
    }
}

/// CONFIGURE_VF arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigureVf<'a> {
    /// VF index.
    pub vf: u16,
    /// New resources.
    pub spec: &'a VfSpec,
}

impl<'a> Args<'a> for ConfigureVf<'a> {
    fn decode(p: &'a [u8]) -> Result<Self, DecodeError> {
        let r = exact::<ConfigureVfReq>(p)?;
        if r.reserved.get() != 0 || r.spec.reserved.get() != 0 {
            return Err(DecodeError::Reserved);
        }
        Ok(ConfigureVf {
            vf: r.vf.get(),
            spec: &r.spec,
        })
    }
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.put(&ConfigureVfReq {
            vf: U16::new(self.vf),
            reserved: U16::new(0),
            spec: *self.spec,
        })
    }
}

/// SET_QOS arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetQos {
    /// VF index.
    pub vf: u16,
    /// New weight.
    pub weight: u16,
}

impl Args<'_> for SetQos {
    fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let r = exact::<SetQosReq>(p)?;
        Ok(SetQos {
            vf: r.vf.get(),
            weight: r.weight.get(),
        })
    }
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.put(&SetQosReq {
            vf: U16::new(self.vf),
            weight: U16::new(self.weight),
        })
    }
}

impl<'a> Args<'a> for &'a FwBeginReq {
    fn decode(p: &'a [u8]) -> Result<Self, DecodeError> {
        let r = exact::<FwBeginReq>(p)?;
        if r.reserved.get() != 0 || r.flags & !1 != 0 {
            return Err(DecodeError::Reserved);
        }
        Ok(r)
    }
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.put(*self)
    }
}

/// FW_DOWNLOAD_CHUNK arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FwChunk<'a> {
    /// Offset in the image.
    pub offset: u32,
    /// Data.
    pub data: &'a [u8],
}

impl<'a> Args<'a> for FwChunk<'a> {
    fn decode(p: &'a [u8]) -> Result<Self, DecodeError> {
        let (head, data) = FwChunkReq::ref_from_prefix(p).map_err(|_| DecodeError::BadPayload)?;
        if head.len.get() as usize != data.len() {
            return Err(DecodeError::BadPayload);
        }
        Ok(FwChunk {
            offset: head.offset.get(),
            data,
        })
    }
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let len = u32::try_from(self.data.len()).map_err(|_| EncodeError::TooLong)?;
        w.put(&FwChunkReq {
            offset: U32::new(self.offset),
            len: U32::new(len),
        })?;
        w.put(self.data)
    }
}

/// FW_ACTIVATE arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FwActivate {
    /// Slot.
    pub slot: u8,
}

impl Args<'_> for FwActivate {
    fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        let r = exact::<FwActivateReq>(p)?;
        if r.reserved != [0; 3] {
            return Err(DecodeError::Reserved);
        }
        Ok(FwActivate { slot: r.slot })
    }
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.put(&FwActivateReq {
            slot: self.slot,
            reserved: [0; 3],
        })
    }
}

/// A ring index (GET_LOG: the log byte index to read from; ACK_EVENTS: the event index
/// consumed up to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingIndex(pub u32);

impl Args<'_> for RingIndex {
    fn decode(p: &[u8]) -> Result<Self, DecodeError> {
        Ok(RingIndex(exact::<IndexReq>(p)?.index.get()))
    }
    fn encode(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.put(&IndexReq {
            index: U32::new(self.0),
        })
    }
}

fn exact<T: FromBytes + KnownLayout + Immutable>(p: &[u8]) -> Result<&T, DecodeError> {
    T::ref_from_bytes(p).map_err(|_| DecodeError::BadPayload)
}

/// Appends byte views to a buffer without panicking.
#[derive(Debug)]
pub struct Writer<'o> {
    out: &'o mut [u8],
    len: usize,
}

impl<'o> Writer<'o> {
    /// A writer over `out`, starting empty.
    pub fn new(out: &'o mut [u8]) -> Self {
        Writer { out, len: 0 }
    }
    /// Appends `v`'s bytes.
    pub fn put<T: IntoBytes + Immutable + ?Sized>(&mut self, v: &T) -> Result<(), EncodeError> {
        let b = v.as_bytes();
        let end = self.len.checked_add(b.len()).ok_or(EncodeError::TooLong)?;
        self.out
            .get_mut(self.len..end)
            .ok_or(EncodeError::TooLong)?
            .copy_from_slice(b);
        self.len = end;
        Ok(())
    }
    /// Bytes written.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Splits a response payload into a fixed head and a slice of entries.
pub fn split_list<H, E>(p: &[u8]) -> Result<(&H, &[E]), DecodeError>
where
    H: FromBytes + KnownLayout + Immutable,
    E: FromBytes + Immutable + Unaligned,
{
    let (h, rest) = H::ref_from_prefix(p).map_err(|_| DecodeError::BadPayload)?;
    let list = <[E]>::ref_from_bytes(rest).map_err(|_| DecodeError::BadPayload)?;
    Ok((h, list))
}

/// Views a whole payload as one struct.
pub fn view<T: FromBytes + KnownLayout + Immutable>(p: &[u8]) -> Result<&T, DecodeError> {
    exact(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn sizes_match_docs() {
        assert_eq!(size_of::<VfRef>(), 4);
        assert_eq!(size_of::<CreateVfsReq>(), 8);
        assert_eq!(size_of::<CountResp>(), 4);
        assert_eq!(size_of::<ConfigureVfReq>(), 20);
        assert_eq!(size_of::<SetQosReq>(), 4);
        assert_eq!(size_of::<HeartbeatReq>(), 4);
        assert_eq!(size_of::<HeartbeatResp>(), 16);
        assert_eq!(size_of::<FwBeginReq>(), 12);
        assert_eq!(size_of::<FwChunkReq>(), 8);
        assert_eq!(size_of::<FwBeginResp>(), 8);
        assert_eq!(size_of::<FwActivateReq>(), 4);
        assert_eq!(size_of::<FwSlotInfo>(), 16);
        assert_eq!(size_of::<IndexReq>(), 4);
        // The largest responses fit the buffer.
        let max_vfs = crate::pci::MAX_VFS;
        assert!(4 + max_vfs * size_of::<VfInfo>() <= crate::mailbox::MAX_PAYLOAD);
        assert!(
            size_of::<DeviceStats>() + max_vfs * size_of::<VfStats>()
                <= crate::mailbox::MAX_PAYLOAD
        );
        assert!(8 + max_vfs * size_of::<VfSpec>() <= crate::mailbox::MAX_PAYLOAD);
    }

    #[test]
    fn create_vfs_explicit_count_must_match() {
        let specs = [VfSpec::new(1, 1, 1, 1, 0); 2];
        let mut buf = [0u8; 128];
        let n = Request::CreateVfs(CreateVfs {
            count: 3,
            sizing: Sizing::Explicit(&specs),
        })
        .write_payload(&mut buf)
        .unwrap();
        assert_eq!(
            Request::parse(Opcode::CreateVfs, &buf[..n]),
            Err(DecodeError::BadPayload)
        );
    }
}
