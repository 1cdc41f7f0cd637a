//! Resource descriptors carried by the mailbox: what a VF asks for ([`VfSpec`]), what it has
//! ([`VfInfo`]), what the device has free ([`FreeResources`]) and who it is ([`DeviceInfo`]).

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

wire_enum! {
    /// Lifecycle state of a VF slot, as stored in the bank's `STATE` register.
    VfState: u32 {
        /// No resources; the slot is unused.
        Free = 0,
        /// Resources assigned; SR-IOV has not (yet) enabled this VF.
        Configured = 1,
        /// Resources assigned and the VF is visible (VF Enable set, index < NumVFs).
        Enabled = 2,
        /// A function level reset is in progress.
        Resetting = 3,
    }
}

impl VfState {
    /// Lower-case name, for tables and JSON.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Configured => "configured",
            Self::Enabled => "enabled",
            Self::Resetting => "resetting",
        }
    }
}

wire_enum! {
    /// Why the virtualization unit refused a VF's access (bank `FAULT_CODE`).
    VfFault: u32 {
        /// No fault.
        None = 0,
        /// Access to a queue the VF does not own.
        QueueNotOwned = 1,
        /// Device memory address outside the VF's window.
        MemOutOfWindow = 2,
        /// Translation table entry invalid.
        TranslationMiss = 3,
        /// MSI-X vector the VF does not own.
        VectorNotOwned = 4,
        /// Write to a read-only register.
        ReadOnly = 5,
        /// Access while the VF is not enabled.
        NotEnabled = 6,
        /// Unaligned or wrongly sized register access.
        BadAccess = 7,
        /// DMA outside the VF's mapped IOVA ranges.
        DmaFault = 8,
        /// A remote VF's link to the host with its engine stayed down past its limit.
        LinkDown = 9,
    }
}

impl VfFault {
    /// Lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::QueueNotOwned => "queue-not-owned",
            Self::MemOutOfWindow => "memory-out-of-window",
            Self::TranslationMiss => "translation-miss",
            Self::VectorNotOwned => "vector-not-owned",
            Self::ReadOnly => "read-only",
            Self::NotEnabled => "not-enabled",
            Self::BadAccess => "bad-access",
            Self::DmaFault => "dma-fault",
            Self::LinkDown => "link-down",
        }
    }
}

/// Default scheduler weight of a new VF.
pub const DEFAULT_WEIGHT: u16 = 100;
/// Largest scheduler weight.
pub const MAX_WEIGHT: u16 = 1000;

/// What one VF asks for. 16 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct VfSpec {
    /// Compute engines (≥ 1).
    pub engines: U16,
    /// Queue pairs (≥ 1).
    pub queues: U16,
    /// MSI-X vectors (≥ 1).
    pub vectors: U16,
    /// Scheduler weight (1..=[`MAX_WEIGHT`]); 0 means [`DEFAULT_WEIGHT`].
    pub weight: U16,
    /// Device memory granules (≥ 1).
    pub mem_granules: U32,
    /// Reserved, zero.
    pub reserved: U32,
}

impl VfSpec {
    /// A spec from plain numbers.
    pub fn new(engines: u16, mem_granules: u32, queues: u16, vectors: u16, weight: u16) -> Self {
        VfSpec {
            engines: U16::new(engines),
            queues: U16::new(queues),
            vectors: U16::new(vectors),
            weight: U16::new(weight),
            mem_granules: U32::new(mem_granules),
            reserved: U32::new(0),
        }
    }
}

/// What a VF has: its bank as the firmware programmed it. 48 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct VfInfo {
    /// VF index.
    pub vf: U16,
    /// [`VfState`].
    pub state: u8,
    /// Reserved, zero.
    pub flags: u8,
    /// Engines (bit n = engine n).
    pub engine_mask: U32,
    /// First device-physical granule.
    pub mem_base: U32,
    /// Granules.
    pub mem_granules: U32,
    /// First physical queue.
    pub queue_base: U16,
    /// Queues.
    pub queue_count: U16,
    /// First device vector.
    pub vector_base: U16,
    /// Vectors.
    pub vector_count: U16,
    /// Scheduler weight.
    pub weight: U16,
    /// Reserved, zero.
    pub reserved: U16,
    /// Most recent [`VfFault`].
    pub fault_code: U32,
    /// Refused accesses.
    pub fault_count: U32,
    /// Function level resets.
    pub flr_count: U32,
    /// Bank generation.
    pub generation: U32,
    /// Reserved, zero.
    pub reserved2: U32,
}

/// Identity and capabilities. 40 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct DeviceInfo {
    /// ABI major.
    pub abi_major: U16,
    /// ABI minor.
    pub abi_minor: U16,
    /// Firmware version word (as `pf::FW_VERSION`).
    pub fw_version: U32,
    /// Firmware build id.
    pub build_id: U32,
    /// [`crate::regs::DevCaps`].
    pub caps: U32,
    /// Board engines.
    pub engines: u8,
    /// log2 granule size.
    pub granule_shift: u8,
    /// TotalVFs.
    pub total_vfs: U16,
    /// Board queue pairs.
    pub queues: U16,
    /// Board vectors.
    pub vectors: U16,
    /// Board granules.
    pub mem_granules: U32,
    /// VF slots in use.
    pub vfs_in_use: U16,
    /// NumVFs as last seen in the SR-IOV capability (0 when VF Enable is clear).
    pub num_vfs_enabled: U16,
    /// Milliseconds since firmware start.
    pub uptime_ms: U64,
}

/// Free resources. 24 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct FreeResources {
    /// Idle engines, no VF placed on them (bit n = engine n). Engines are time-shared, so a
    /// busy engine can still be given to another VF.
    pub engine_mask: U32,
    /// Free granules.
    pub mem_granules: U32,
    /// Largest contiguous run of free granules.
    pub largest_mem_run: U32,
    /// Free queues.
    pub queues: U16,
    /// Free vectors.
    pub vectors: U16,
    /// Largest contiguous run of free queues.
    pub largest_queue_run: U16,
    /// Largest contiguous run of free vectors.
    pub largest_vector_run: U16,
    /// Free VF slots (below TotalVFs).
    pub free_vf_slots: U16,
    /// Reserved, zero.
    pub reserved: U16,
}

/// Counters of one VF. 40 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct VfStats {
    /// VF index.
    pub vf: U16,
    /// [`VfState`].
    pub state: u8,
    /// Reserved.
    pub reserved: u8,
    /// Refused accesses.
    pub faults: U32,
    /// Jobs completed.
    pub jobs: U64,
    /// Bytes processed.
    pub bytes: U64,
    /// Engine busy time in microseconds.
    pub engine_us: U64,
    /// Function level resets.
    pub flr_count: U32,
    /// Reserved.
    pub reserved2: U32,
}

/// Device-wide counters. 48 bytes.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct DeviceStats {
    /// Mailbox commands executed.
    pub mbox_commands: U64,
    /// Mailbox commands answered with an error status.
    pub mbox_errors: U64,
    /// Retried commands answered from the replay cache.
    pub mbox_replays: U64,
    /// VFs created since start.
    pub vfs_created: U32,
    /// VFs destroyed since start.
    pub vfs_destroyed: U32,
    /// Function level resets handled.
    pub flrs: U32,
    /// VF stats entries following this struct.
    pub vf_count: U16,
    /// Reserved.
    pub reserved: U16,
    /// Milliseconds since firmware start.
    pub uptime_ms: U64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn sizes_match_docs() {
        assert_eq!(size_of::<VfSpec>(), 16);
        assert_eq!(size_of::<VfInfo>(), 48);
        assert_eq!(size_of::<DeviceInfo>(), 40);
        assert_eq!(size_of::<FreeResources>(), 24);
        assert_eq!(size_of::<VfStats>(), 40);
        assert_eq!(size_of::<DeviceStats>(), 48);
        assert_eq!(core::mem::offset_of!(VfInfo, fault_code), 28);
        assert_eq!(core::mem::offset_of!(VfSpec, mem_granules), 8);
        assert_eq!(core::mem::offset_of!(DeviceInfo, mem_granules), 24);
        assert_eq!(core::mem::offset_of!(DeviceStats, uptime_ms), 40);
    }

    #[test]
    fn state_and_fault_codes_round_trip() {
        for s in [
            VfState::Free,
            VfState::Configured,
            VfState::Enabled,
            VfState::Resetting,
        ] {
            assert_eq!(VfState::from_wire(s as u32), Some(s));
        }
        assert_eq!(VfState::from_wire(4), None);
        for v in 0..10 {
            assert_eq!(VfFault::from_wire(v).map(|f| f as u32), Some(v));
        }
        assert_eq!(VfFault::from_wire(10), None);
    }
}
