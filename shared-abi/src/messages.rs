//! Request and response payloads of each opcode, and the typed [`Request`] that the firmware
//! parses once at its edge.
//!
//! Which payload each opcode carries is declared with the opcode
//! ([`crate::mailbox::Opcode::payloads`]) and tabled in docs/abi.md; the parser below is the
//! code form of that table, and an unknown or missing opcode cannot compile past its `match`.

use crate::mailbox::{DecodeError, EncodeError, Opcode};
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

/// Which VFs a command applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// One VF.
    One(u16),
    /// Every VF.
    All,
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

/// A request, parsed and length-checked. Field values are checked by the firmware, which
/// knows the board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// GET_DEVICE_INFO.
    GetDeviceInfo,
    /// GET_RESOURCES.
    GetResources,
    /// HEARTBEAT.
    Heartbeat {
        /// Echoed nonce.
        nonce: u32,
    },
    /// CREATE_VFS.
    CreateVfs {
        /// VFs to create.
        count: u16,
        /// Their sizes.
        sizing: Sizing<'a>,
    },
    /// DESTROY_VF.
    DestroyVf(Target),
    /// QUERY_VF: one VF, or every VF that holds resources.
    QueryVf(Target),
    /// CONFIGURE_VF.
    ConfigureVf {
        /// VF index.
        vf: u16,
        /// New resources.
        spec: &'a VfSpec,
    },
    /// RESET_VF.
    ResetVf(u16),
    /// SET_QOS.
    SetQos {
        /// VF index.
        vf: u16,
        /// New weight.
        weight: u16,
    },
    /// GET_STATS.
    GetStats(Target),
    /// FW_DOWNLOAD_BEGIN.
    FwDownloadBegin(&'a FwBeginReq),
    /// FW_DOWNLOAD_CHUNK.
    FwDownloadChunk {
        /// Offset in the image.
        offset: u32,
        /// Data.
        data: &'a [u8],
    },
    /// FW_DOWNLOAD_COMMIT.
    FwDownloadCommit,
    /// FW_ACTIVATE.
    FwActivate {
        /// Slot.
        slot: u8,
    },
    /// FW_QUERY_SLOTS.
    FwQuerySlots,
    /// GET_LOG.
    GetLog {
        /// Log ring byte index to read from.
        from: u32,
    },
    /// ACK_EVENTS.
    AckEvents {
        /// Event ring index consumed up to.
        upto: u32,
    },
}

fn exact<T: FromBytes + KnownLayout + Immutable>(p: &[u8]) -> Result<&T, DecodeError> {
    T::ref_from_bytes(p).map_err(|_| DecodeError::BadPayload)
}

fn empty(p: &[u8]) -> Result<(), DecodeError> {
    if p.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::BadPayload)
    }
}

fn target(r: &VfRef) -> Result<Target, DecodeError> {
    match r.flags.get() {
        0 => Ok(Target::One(r.vf.get())),
        VfRef::ALL => Ok(Target::All),
        _ => Err(DecodeError::Reserved),
    }
}

fn one(r: &VfRef) -> Result<u16, DecodeError> {
    match target(r)? {
        Target::One(v) => Ok(v),
        Target::All => Err(DecodeError::Reserved),
    }
}

impl<'a> Request<'a> {
    /// Opcode of this request.
    pub const fn opcode(&self) -> Opcode {
        match self {
            Request::GetDeviceInfo => Opcode::GetDeviceInfo,
            Request::GetResources => Opcode::GetResources,
            Request::Heartbeat { .. } => Opcode::Heartbeat,
            Request::CreateVfs { .. } => Opcode::CreateVfs,
            Request::DestroyVf(_) => Opcode::DestroyVf,
            Request::QueryVf(_) => Opcode::QueryVf,
            Request::ConfigureVf { .. } => Opcode::ConfigureVf,
            Request::ResetVf(_) => Opcode::ResetVf,
            Request::SetQos { .. } => Opcode::SetQos,
            Request::GetStats(_) => Opcode::GetStats,
            Request::FwDownloadBegin(_) => Opcode::FwDownloadBegin,
            Request::FwDownloadChunk { .. } => Opcode::FwDownloadChunk,
            Request::FwDownloadCommit => Opcode::FwDownloadCommit,
            Request::FwActivate { .. } => Opcode::FwActivate,
            Request::FwQuerySlots => Opcode::FwQuerySlots,
            Request::GetLog { .. } => Opcode::GetLog,
            Request::AckEvents { .. } => Opcode::AckEvents,
        }
    }

    /// Parses a payload for `opcode`. Sizes, reserved fields and enum values are checked;
    /// nothing else.
    pub fn parse(opcode: Opcode, p: &'a [u8]) -> Result<Self, DecodeError> {
        Ok(match opcode {
            Opcode::GetDeviceInfo => empty(p).map(|_| Request::GetDeviceInfo)?,
            Opcode::GetResources => empty(p).map(|_| Request::GetResources)?,
            Opcode::Heartbeat => Request::Heartbeat {
                nonce: exact::<HeartbeatReq>(p)?.nonce.get(),
            },
            Opcode::CreateVfs => {
                let (head, rest) =
                    CreateVfsReq::ref_from_prefix(p).map_err(|_| DecodeError::BadPayload)?;
                if head.flags != 0 || head.reserved.get() != 0 {
                    return Err(DecodeError::Reserved);
                }
                let count = head.count.get();
                let sizing = match Profile::from_wire(head.profile) {
                    Some(Profile::Equal) => empty(rest).map(|_| Sizing::Equal)?,
                    Some(Profile::Uniform) => Sizing::Uniform(exact::<VfSpec>(rest)?),
                    Some(Profile::Explicit) => {
                        let specs = <[VfSpec]>::ref_from_bytes(rest)
                            .map_err(|_| DecodeError::BadPayload)?;
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
                Request::CreateVfs { count, sizing }
            }
            Opcode::DestroyVf => Request::DestroyVf(target(exact::<VfRef>(p)?)?),
            Opcode::QueryVf => Request::QueryVf(target(exact::<VfRef>(p)?)?),
            Opcode::ConfigureVf => {
                let r = exact::<ConfigureVfReq>(p)?;
                if r.reserved.get() != 0 || r.spec.reserved.get() != 0 {
                    return Err(DecodeError::Reserved);
                }
                Request::ConfigureVf {
                    vf: r.vf.get(),
                    spec: &r.spec,
                }
            }
            Opcode::ResetVf => Request::ResetVf(one(exact::<VfRef>(p)?)?),
            Opcode::SetQos => {
                let r = exact::<SetQosReq>(p)?;
                Request::SetQos {
                    vf: r.vf.get(),
                    weight: r.weight.get(),
                }
            }
            Opcode::GetStats => Request::GetStats(target(exact::<VfRef>(p)?)?),
            Opcode::FwDownloadBegin => {
                let r = exact::<FwBeginReq>(p)?;
                if r.reserved.get() != 0 || r.flags & !1 != 0 {
                    return Err(DecodeError::Reserved);
                }
                Request::FwDownloadBegin(r)
            }
            Opcode::FwDownloadChunk => {
                let (head, data) =
                    FwChunkReq::ref_from_prefix(p).map_err(|_| DecodeError::BadPayload)?;
                if head.len.get() as usize != data.len() {
                    return Err(DecodeError::BadPayload);
                }
                Request::FwDownloadChunk {
                    offset: head.offset.get(),
                    data,
                }
            }
            Opcode::FwDownloadCommit => empty(p).map(|_| Request::FwDownloadCommit)?,
            Opcode::FwActivate => {
                let r = exact::<FwActivateReq>(p)?;
                if r.reserved != [0; 3] {
                    return Err(DecodeError::Reserved);
                }
                Request::FwActivate { slot: r.slot }
            }
            Opcode::FwQuerySlots => empty(p).map(|_| Request::FwQuerySlots)?,
            Opcode::GetLog => Request::GetLog {
                from: exact::<IndexReq>(p)?.index.get(),
            },
            Opcode::AckEvents => Request::AckEvents {
                upto: exact::<IndexReq>(p)?.index.get(),
            },
        })
    }

    /// Writes this request's payload into `out`; returns its length.
    pub fn write_payload(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer { out, len: 0 };
        let vfref = |vf: u16, flags: u16| VfRef {
            vf: U16::new(vf),
            flags: U16::new(flags),
        };
        let tgt = |t: Target| match t {
            Target::One(v) => vfref(v, 0),
            Target::All => vfref(0, VfRef::ALL),
        };
        match *self {
            Request::GetDeviceInfo
            | Request::GetResources
            | Request::FwDownloadCommit
            | Request::FwQuerySlots => {}
            Request::Heartbeat { nonce } => w.put(&HeartbeatReq {
                nonce: U32::new(nonce),
            })?,
            Request::CreateVfs { count, sizing } => {
                let profile = match sizing {
                    Sizing::Equal => Profile::Equal,
                    Sizing::Uniform(_) => Profile::Uniform,
                    Sizing::Explicit(_) => Profile::Explicit,
                };
                w.put(&CreateVfsReq {
                    count: U16::new(count),
                    profile: profile as u8,
                    flags: 0,
                    reserved: U32::new(0),
                })?;
                match sizing {
                    Sizing::Equal => {}
                    Sizing::Uniform(s) => w.put(s)?,
                    Sizing::Explicit(s) => w.put(s)?,
                }
            }
            Request::DestroyVf(t) | Request::GetStats(t) | Request::QueryVf(t) => w.put(&tgt(t))?,
            Request::ResetVf(vf) => w.put(&vfref(vf, 0))?,
            Request::ConfigureVf { vf, spec } => w.put(&ConfigureVfReq {
                vf: U16::new(vf),
                reserved: U16::new(0),
                spec: *spec,
            })?,
            Request::SetQos { vf, weight } => w.put(&SetQosReq {
                vf: U16::new(vf),
                weight: U16::new(weight),
            })?,
            Request::FwDownloadBegin(r) => w.put(r)?,
            Request::FwDownloadChunk { offset, data } => {
                w.put(&FwChunkReq {
                    offset: U32::new(offset),
                    len: U32::new(data.len() as u32),
                })?;
                w.put(data)?;
            }
            Request::FwActivate { slot } => w.put(&FwActivateReq {
                slot,
                reserved: [0; 3],
            })?,
            Request::GetLog { from } => w.put(&IndexReq {
                index: U32::new(from),
            })?,
            Request::AckEvents { upto } => w.put(&IndexReq {
                index: U32::new(upto),
            })?,
        }
        Ok(w.len)
    }
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
        let n = Request::CreateVfs {
            count: 3,
            sizing: Sizing::Explicit(&specs),
        }
        .write_payload(&mut buf)
        .unwrap();
        assert_eq!(
            Request::parse(Opcode::CreateVfs, &buf[..n]),
            Err(DecodeError::BadPayload)
        );
    }
}
