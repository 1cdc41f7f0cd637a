//! Register maps: PF BAR0, the per-VF banks of the virtualization unit, the physical queue
//! registers, and VF BAR0 as a guest sees it.
//!
//! Offsets are declared once here as typed constants; nothing else in the project writes a raw
//! offset. All registers are 32 bits wide, little-endian, naturally aligned. Buffers and rings
//! are [`Window`]s. The access rules (who may write what) are data too: the device model
//! enforces them and the firmware relies on them.

use bitflags::bitflags;

/// A 32-bit register at a fixed byte offset from the start of its block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reg(pub u32);

impl Reg {
    /// Byte offset as `usize`.
    pub const fn offset(self) -> usize {
        self.0 as usize
    }
    /// The register at the same offset within a block starting at `base`.
    pub const fn at(self, base: usize) -> usize {
        base + self.0 as usize
    }
}

/// A byte range of a BAR: a buffer, ring or array of banks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First byte.
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

impl Window {
    /// Whether `[off, off+len)` lies inside the window.
    pub const fn contains(&self, off: u64, len: u64) -> bool {
        off >= self.offset as u64 && off.saturating_add(len) <= self.offset as u64 + self.len as u64
    }
    /// One past the last byte.
    pub const fn end(&self) -> u32 {
        self.offset + self.len
    }
    /// Start as `usize`.
    pub const fn start(&self) -> usize {
        self.offset as usize
    }
}

/// Magic value of PF BAR0 `MAGIC` ("ACVT" in little-endian bytes).
pub const PF_MAGIC: u32 = u32::from_le_bytes(*b"ACVT");
/// Magic value of VF BAR0 `MAGIC` ("ACVF").
pub const VF_MAGIC: u32 = u32::from_le_bytes(*b"ACVF");

/// Most queues one VF BAR0 can expose.
pub const VF_MAX_QUEUES: usize = 256;
/// Entries in the device-wide translation pool (one per device memory granule).
pub const TT_POOL_ENTRIES: usize = 8192;
/// Bytes of one VF bank.
pub const VF_BANK_SIZE: usize = 0x80;
/// Bytes of one queue register block.
pub const QUEUE_REGS_SIZE: usize = 0x40;
/// Bytes of one event ring entry.
pub const EVENT_SIZE: usize = 16;
/// Entries in the event ring.
pub const EVENT_RING_ENTRIES: usize = 128;

/// PF BAR0: the device's register file as the host driver and the firmware see it.
pub mod pf {
    use super::{Reg, Window};

    /// RO: [`super::PF_MAGIC`].
    pub const MAGIC: Reg = Reg(0x000);
    /// RO: ABI major (31..16) and minor (15..0) the firmware speaks.
    pub const ABI_VERSION: Reg = Reg(0x004);
    /// RO: running firmware version, major (31..24), minor (23..16), patch (15..0).
    pub const FW_VERSION: Reg = Reg(0x008);
    /// RO: [`super::DevCaps`].
    pub const CAPS: Reg = Reg(0x00C);
    /// RO: [`super::DevStatus`].
    pub const DEV_STATUS: Reg = Reg(0x010);
    /// RO: last fault code ([`crate::mailbox::FaultCode`]), 0 when healthy.
    pub const FAULT_CODE: Reg = Reg(0x014);
    /// RO: incremented by the firmware main loop; a stalled value means a hung firmware.
    pub const HEARTBEAT: Reg = Reg(0x018);
    /// RW: scratch register for the host's liveness checks.
    pub const SCRATCH: Reg = Reg(0x01C);
    /// RO: board compute engines.
    pub const BOARD_ENGINES: Reg = Reg(0x020);
    /// RO: board device memory granules.
    pub const BOARD_MEM_GRANULES: Reg = Reg(0x024);
    /// RO: log2 of the granule size.
    pub const BOARD_GRANULE_SHIFT: Reg = Reg(0x028);
    /// RO: board queue pairs.
    pub const BOARD_QUEUES: Reg = Reg(0x02C);
    /// RO: board MSI-X vectors for VFs.
    pub const BOARD_VECTORS: Reg = Reg(0x030);
    /// RO: board TotalVFs.
    pub const BOARD_TOTAL_VFS: Reg = Reg(0x034);
    /// RO: firmware build id (low 32 bits of the image hash).
    pub const FW_BUILD_ID: Reg = Reg(0x038);
    /// Hardware semaphore guarding the mailbox. Write a nonzero token: acquired if free. Read:
    /// current owner token (0 = free). The owner writes 0 to release. Hardware (the device
    /// model) releases it when the owning connection goes away.
    pub const MBOX_LOCK: Reg = Reg(0x040);
    /// RO (hardware): SR-IOV state mirrored from config space; [`super::SriovCtrl`].
    pub const SRIOV_CTRL: Reg = Reg(0x044);
    /// RW by firmware: first granule the memory scrubber zeroes.
    pub const SCRUB_BASE: Reg = Reg(0x050);
    /// RW by firmware: number of granules to zero.
    pub const SCRUB_COUNT: Reg = Reg(0x054);
    /// Firmware writes [`super::ScrubCtrl::GO`]; hardware sets `DONE` when finished.
    pub const SCRUB_CTRL: Reg = Reg(0x058);
    /// WO by firmware: writing a PF MSI-X vector number raises that vector.
    pub const IRQ_RAISE: Reg = Reg(0x05C);
    /// WO by firmware: writing `vf << 16 | vector` raises that VF-local vector of a VF.
    pub const VF_IRQ_RAISE: Reg = Reg(0x060);

    /// RW: host writes an incrementing value after filling the request buffer.
    pub const MBOX_DOORBELL: Reg = Reg(0x1000);
    /// RW: length in bytes of the request in the request buffer.
    pub const MBOX_REQ_LEN: Reg = Reg(0x1004);
    /// RO: [`super::MboxState`] in bits 7..0.
    pub const MBOX_STATE: Reg = Reg(0x1008);
    /// RO: length in bytes of the response in the response buffer.
    pub const MBOX_RESP_LEN: Reg = Reg(0x100C);
    /// RO: the doorbell value the current response answers.
    pub const MBOX_DONE_DOORBELL: Reg = Reg(0x1010);
    /// RO: event ring producer index (free-running, firmware writes).
    pub const EVQ_PROD: Reg = Reg(0x1040);
    /// RW: event ring consumer index (free-running, host writes).
    pub const EVQ_CONS: Reg = Reg(0x1044);
    /// RO: log ring producer byte index (free-running).
    pub const LOG_PROD: Reg = Reg(0x1080);
    /// RW: log ring consumer byte index (free-running).
    pub const LOG_CONS: Reg = Reg(0x1084);

    /// Identification, status and control page: trapped, never mapped into the host.
    pub const ID_PAGE: Window = Window {
        offset: 0x0000,
        len: 0x1000,
    };
    /// Mailbox/ring control page: may be mapped into the host.
    pub const MBOX_CTRL_PAGE: Window = Window {
        offset: 0x1000,
        len: 0x1000,
    };
    /// RW: mailbox request buffer (host writes a whole message here).
    pub const MBOX_REQ: Window = Window {
        offset: 0x2000,
        len: 0x1000,
    };
    /// RO: mailbox response buffer.
    pub const MBOX_RESP: Window = Window {
        offset: 0x3000,
        len: 0x1000,
    };
    /// RO: event ring, [`super::EVENT_RING_ENTRIES`] entries of [`crate::events::Event`].
    pub const EVENT_RING: Window = Window {
        offset: 0x4000,
        len: 0x800,
    };
    /// RO: firmware log ring (defmt frames, rzCOBS encoded, zero-delimited).
    pub const LOG_RING: Window = Window {
        offset: 0x5000,
        len: 0x2000,
    };
    /// RO to the host: VF banks, [`super::VF_BANK_SIZE`] bytes each, VF n at `offset + n*0x80`.
    pub const VF_BANKS: Window = Window {
        offset: 0x8000,
        len: 0x2000,
    };
    /// RW by hardware: one [`super::VfHwStatus`] word per VF.
    pub const VF_HW_STATUS: Window = Window {
        offset: 0xA000,
        len: 0x100,
    };
    /// RO to the host: translation pool, one [`super::TtEntry`] per device granule.
    pub const TT_POOL: Window = Window {
        offset: 0x1_0000,
        len: 0x8000,
    };
    /// RO to the host: physical queue registers, [`super::QUEUE_REGS_SIZE`] bytes each.
    pub const QUEUES: Window = Window {
        offset: 0x2_0000,
        len: 0x4000,
    };
    /// PF MSI-X table (trapped).
    pub const MSIX_TABLE: Window = Window {
        offset: 0x3_0000,
        len: 0x1000,
    };
    /// PF MSI-X pending bit array (trapped).
    pub const MSIX_PBA: Window = Window {
        offset: 0x3_8000,
        len: 0x1000,
    };

    /// Offset of VF `vf`'s bank.
    pub const fn vf_bank(vf: usize) -> usize {
        VF_BANKS.start() + vf * super::VF_BANK_SIZE
    }
    /// Offset of VF `vf`'s hardware status word.
    pub const fn vf_hw_status(vf: usize) -> usize {
        VF_HW_STATUS.start() + vf * 4
    }
    /// Offset of physical queue `q`'s register block.
    pub const fn queue(q: usize) -> usize {
        QUEUES.start() + q * super::QUEUE_REGS_SIZE
    }
    /// Offset of translation entry `i`.
    pub const fn tt_entry(i: usize) -> usize {
        TT_POOL.start() + i * 4
    }

    /// Whether the host may write the 32-bit register at `off`. Everything else in BAR0 is
    /// read-only to the host: writes are dropped and counted by the device.
    pub const fn host_writable(off: u64) -> bool {
        off == SCRATCH.0 as u64
            || off == MBOX_LOCK.0 as u64
            || off == MBOX_DOORBELL.0 as u64
            || off == MBOX_REQ_LEN.0 as u64
            || off == EVQ_CONS.0 as u64
            || off == LOG_CONS.0 as u64
            || MBOX_REQ.contains(off, 4)
            || MSIX_TABLE.contains(off, 4)
    }
}

/// One VF's bank in the virtualization unit: what the firmware programs and the hardware
/// enforces. Offsets are relative to [`pf::vf_bank`].
pub mod vf_bank {
    use super::Reg;

    /// [`crate::resources::VfState`] as u32. Written by firmware.
    pub const STATE: Reg = Reg(0x00);
    /// Engines the VF may run on (bit n = engine n).
    pub const ENGINE_MASK: Reg = Reg(0x04);
    /// First device-physical granule of the VF's memory window.
    pub const MEM_BASE: Reg = Reg(0x08);
    /// Granules in the window; VF-local addresses at or past `MEM_GRANULES << shift` fault.
    pub const MEM_GRANULES: Reg = Reg(0x0C);
    /// First translation pool entry of this VF's table.
    pub const TT_BASE: Reg = Reg(0x10);
    /// Entries in this VF's translation table (VF-local granule i → entry TT_BASE + i).
    pub const TT_LEN: Reg = Reg(0x14);
    /// First physical queue.
    pub const QUEUE_BASE: Reg = Reg(0x18);
    /// Queues owned; VF-local queue q maps to physical queue `QUEUE_BASE + q`.
    pub const QUEUE_COUNT: Reg = Reg(0x1C);
    /// First device MSI-X vector.
    pub const VECTOR_BASE: Reg = Reg(0x20);
    /// Vectors owned; also the Table Size of the VF's MSI-X capability.
    pub const VECTOR_COUNT: Reg = Reg(0x24);
    /// Scheduler weight (1..=1000); 0 while the VF is free.
    pub const QOS_WEIGHT: Reg = Reg(0x28);
    /// Bumped by firmware on every change of this bank.
    pub const GENERATION: Reg = Reg(0x2C);
    /// Written by hardware: [`crate::resources::VfFault`] code of the most recent refused access.
    pub const FAULT_CODE: Reg = Reg(0x30);
    /// Written by hardware: refused accesses since the VF was configured.
    pub const FAULT_COUNT: Reg = Reg(0x34);
    /// Written by hardware: function level resets since configured.
    pub const FLR_COUNT: Reg = Reg(0x38);
    /// Data path counters (issue 5): jobs completed, low word.
    pub const JOBS_LO: Reg = Reg(0x40);
    /// Jobs completed, high word.
    pub const JOBS_HI: Reg = Reg(0x44);
    /// Bytes processed, low word.
    pub const BYTES_LO: Reg = Reg(0x48);
    /// Bytes processed, high word.
    pub const BYTES_HI: Reg = Reg(0x4C);
    /// Engine busy time in microseconds, low word.
    pub const ENGINE_US_LO: Reg = Reg(0x50);
    /// Engine busy time, high word.
    pub const ENGINE_US_HI: Reg = Reg(0x54);
    /// Every register the firmware programs when it configures a VF (in order).
    pub const PROGRAMMED: [Reg; 12] = [
        STATE,
        ENGINE_MASK,
        MEM_BASE,
        MEM_GRANULES,
        TT_BASE,
        TT_LEN,
        QUEUE_BASE,
        QUEUE_COUNT,
        VECTOR_BASE,
        VECTOR_COUNT,
        QOS_WEIGHT,
        GENERATION,
    ];
}

/// One physical queue pair's registers. Offsets relative to [`pf::queue`] (device view) and to
/// [`vf::queue`] (the same block as the owning VF sees it).
pub mod queue {
    use super::Reg;

    /// Submission ring IOVA, low word.
    pub const SQ_BASE_LO: Reg = Reg(0x00);
    /// Submission ring IOVA, high word.
    pub const SQ_BASE_HI: Reg = Reg(0x04);
    /// Submission ring entries (power of two).
    pub const SQ_SIZE: Reg = Reg(0x08);
    /// Submission tail doorbell (written by the VF driver; a hint, the device also polls).
    pub const SQ_TAIL: Reg = Reg(0x0C);
    /// Submission head (device-written).
    pub const SQ_HEAD: Reg = Reg(0x10);
    /// Completion ring IOVA, low word.
    pub const CQ_BASE_LO: Reg = Reg(0x14);
    /// Completion ring IOVA, high word.
    pub const CQ_BASE_HI: Reg = Reg(0x18);
    /// Completion ring entries.
    pub const CQ_SIZE: Reg = Reg(0x1C);
    /// Completion head doorbell (driver-written).
    pub const CQ_HEAD: Reg = Reg(0x20);
    /// Completion tail (device-written).
    pub const CQ_TAIL: Reg = Reg(0x24);
    /// VF-local MSI-X vector raised on completion.
    pub const MSIX_VECTOR: Reg = Reg(0x28);
    /// [`super::QueueCtrl`].
    pub const CONTROL: Reg = Reg(0x2C);
    /// Queue status/error code (device-written).
    pub const STATUS: Reg = Reg(0x30);
    /// Owning VF + 1 (0 = unowned). Device view only; written by firmware.
    pub const OWNER: Reg = Reg(0x3C);
    /// Registers a VF may write in its own queue block.
    pub const VF_WRITABLE: [Reg; 10] = [
        SQ_BASE_LO,
        SQ_BASE_HI,
        SQ_SIZE,
        SQ_TAIL,
        CQ_BASE_LO,
        CQ_BASE_HI,
        CQ_SIZE,
        CQ_HEAD,
        MSIX_VECTOR,
        CONTROL,
    ];
}

/// VF BAR0 as the guest driver sees it.
pub mod vf {
    use super::{Reg, Window};

    /// RO: [`super::VF_MAGIC`].
    pub const MAGIC: Reg = Reg(0x000);
    /// RO: ABI version word.
    pub const ABI_VERSION: Reg = Reg(0x004);
    /// RO: this VF's index (0-based).
    pub const VF_INDEX: Reg = Reg(0x008);
    /// RO: [`super::VfStatus`].
    pub const STATUS: Reg = Reg(0x00C);
    /// RO: engine mask.
    pub const ENGINE_MASK: Reg = Reg(0x010);
    /// RO: device memory window size in bytes, low word.
    pub const MEM_SIZE_LO: Reg = Reg(0x014);
    /// RO: device memory window size, high word.
    pub const MEM_SIZE_HI: Reg = Reg(0x018);
    /// RO: queues owned.
    pub const QUEUE_COUNT: Reg = Reg(0x01C);
    /// RO: MSI-X vectors owned.
    pub const VECTOR_COUNT: Reg = Reg(0x020);
    /// RO: scheduler weight.
    pub const QOS_WEIGHT: Reg = Reg(0x024);
    /// RO: most recent fault code of this VF.
    pub const FAULT_CODE: Reg = Reg(0x028);
    /// RO: fault count of this VF.
    pub const FAULT_COUNT: Reg = Reg(0x02C);
    /// WO: write a VF-local vector number to raise it (interrupt self-test).
    pub const IRQ_TRIGGER: Reg = Reg(0x030);
    /// Queue register blocks: VF-local queue q at `QUEUES.offset + q * 0x40`.
    pub const QUEUES: Window = Window {
        offset: 0x1000,
        len: 0x4000,
    };
    /// MSI-X table (up to 2048 entries).
    pub const MSIX_TABLE: Window = Window {
        offset: 0x8000,
        len: 0x8000,
    };
    /// MSI-X pending bit array.
    pub const MSIX_PBA: Window = Window {
        offset: 0x1_0000,
        len: 0x1000,
    };

    /// Offset of VF-local queue `q`'s block.
    pub const fn queue(q: usize) -> usize {
        QUEUES.start() + q * super::QUEUE_REGS_SIZE
    }
}

bitflags! {
    /// `DEV_STATUS` bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct DevStatus: u32 {
        /// Firmware booted and serves the mailbox.
        const READY = 1 << 0;
        /// Firmware is executing a mailbox command.
        const BUSY = 1 << 1;
        /// Firmware stopped on a fault; `FAULT_CODE` says which.
        const FAULT = 1 << 2;
        /// Firmware halted (after a panic); only a device reset recovers.
        const HALTED = 1 << 3;
    }
}

bitflags! {
    /// `CAPS` bits: what this firmware supports.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct DevCaps: u32 {
        /// SR-IOV VFs can be created.
        const SRIOV = 1 << 0;
        /// CONFIGURE_VF can resize a live VF.
        const LIVE_RESIZE = 1 << 1;
        /// Weighted QoS.
        const QOS = 1 << 2;
        /// Firmware download and A/B flash slots.
        const FW_UPDATE = 1 << 3;
        /// The event ring is in use.
        const EVENTS = 1 << 4;
        /// Per-VF two-stage address translation.
        const TRANSLATION = 1 << 5;
        /// VF job queues (data path).
        const DATA_PATH = 1 << 6;
    }
}

bitflags! {
    /// `SRIOV_CTRL` (mirrored by hardware from the SR-IOV capability).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SriovCtrl: u32 {
        /// VF Enable is set.
        const VF_ENABLE = 1 << 0;
        /// VF MSE is set.
        const VF_MSE = 1 << 1;
        /// NumVFs occupies bits 31..16.
        const NUM_VFS = 0xFFFF << 16;
    }
}

impl SriovCtrl {
    /// NumVFs field.
    pub const fn num_vfs(self) -> u16 {
        (self.bits() >> 16) as u16
    }
    /// Builds the word.
    pub const fn new(enabled: bool, mse: bool, num_vfs: u16) -> Self {
        let mut b = (num_vfs as u32) << 16;
        if enabled {
            b |= 1;
        }
        if mse {
            b |= 2;
        }
        SriovCtrl::from_bits_retain(b)
    }
}

bitflags! {
    /// `SCRUB_CTRL` bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct ScrubCtrl: u32 {
        /// Firmware: start zeroing `SCRUB_COUNT` granules from `SCRUB_BASE`.
        const GO = 1 << 0;
        /// Hardware: the last request finished.
        const DONE = 1 << 1;
        /// Hardware: the last request was out of range and did nothing.
        const ERROR = 1 << 2;
    }
}

bitflags! {
    /// Per-VF hardware status word in [`pf::VF_HW_STATUS`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct VfHwStatus: u32 {
        /// The VF's config space requested a function level reset; firmware clears the VF's
        /// queues and memory and then clears this bit.
        const FLR_PENDING = 1 << 0;
        /// Bus Master Enable of the VF's command register.
        const BUS_MASTER = 1 << 1;
    }
}

bitflags! {
    /// VF BAR0 `STATUS` bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct VfStatus: u32 {
        /// Resources are assigned and the VF is enabled.
        const ENABLED = 1 << 0;
        /// A function level reset is in progress.
        const RESETTING = 1 << 1;
        /// At least one access of this VF was refused.
        const FAULTED = 1 << 2;
    }
}

bitflags! {
    /// Queue `CONTROL` bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct QueueCtrl: u32 {
        /// The device polls this queue.
        const ENABLE = 1 << 0;
        /// Raise the queue's vector on completion.
        const IRQ_ENABLE = 1 << 1;
    }
}

/// A translation pool entry: bit 31 valid, bits 23..0 device-physical granule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtEntry(pub u32);

impl TtEntry {
    /// Valid bit.
    pub const VALID: u32 = 1 << 31;
    /// An invalid entry.
    pub const INVALID: TtEntry = TtEntry(0);
    /// A valid entry mapping to `granule`.
    pub const fn map(granule: u32) -> Self {
        TtEntry(Self::VALID | (granule & 0x00FF_FFFF))
    }
    /// The device granule, if valid.
    pub const fn granule(self) -> Option<u32> {
        if self.0 & Self::VALID != 0 {
            Some(self.0 & 0x00FF_FFFF)
        } else {
            None
        }
    }
}

/// Mailbox state machine as reported in `MBOX_STATE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum MboxState {
    /// Nothing pending.
    Idle = 0,
    /// Firmware is working on the request.
    Busy = 1,
    /// A response is in the response buffer for `MBOX_DONE_DOORBELL`.
    Done = 2,
}

impl MboxState {
    /// Decodes the register; unknown values are `None`.
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v & 0xFF {
            0 => Some(Self::Idle),
            1 => Some(Self::Busy),
            2 => Some(Self::Done),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pf_map_matches_docs_abi_md() {
        // The table in docs/abi.md, section "PF BAR0".
        let table: &[(Reg, u32)] = &[
            (pf::MAGIC, 0x000),
            (pf::ABI_VERSION, 0x004),
            (pf::FW_VERSION, 0x008),
            (pf::CAPS, 0x00C),
            (pf::DEV_STATUS, 0x010),
            (pf::FAULT_CODE, 0x014),
            (pf::HEARTBEAT, 0x018),
            (pf::SCRATCH, 0x01C),
            (pf::BOARD_ENGINES, 0x020),
            (pf::BOARD_MEM_GRANULES, 0x024),
            (pf::BOARD_GRANULE_SHIFT, 0x028),
            (pf::BOARD_QUEUES, 0x02C),
            (pf::BOARD_VECTORS, 0x030),
            (pf::BOARD_TOTAL_VFS, 0x034),
            (pf::FW_BUILD_ID, 0x038),
            (pf::MBOX_LOCK, 0x040),
            (pf::SRIOV_CTRL, 0x044),
            (pf::SCRUB_BASE, 0x050),
            (pf::SCRUB_COUNT, 0x054),
            (pf::SCRUB_CTRL, 0x058),
            (pf::IRQ_RAISE, 0x05C),
            (pf::VF_IRQ_RAISE, 0x060),
            (pf::MBOX_DOORBELL, 0x1000),
            (pf::MBOX_REQ_LEN, 0x1004),
            (pf::MBOX_STATE, 0x1008),
            (pf::MBOX_RESP_LEN, 0x100C),
            (pf::MBOX_DONE_DOORBELL, 0x1010),
            (pf::EVQ_PROD, 0x1040),
            (pf::EVQ_CONS, 0x1044),
            (pf::LOG_PROD, 0x1080),
            (pf::LOG_CONS, 0x1084),
        ];
        for (reg, off) in table {
            assert_eq!(reg.0, *off, "{reg:?}");
            assert_eq!(reg.0 % 4, 0);
            assert!((reg.0 as u64) < crate::pci::PF_BAR0_SIZE);
        }
        let windows = [
            (pf::ID_PAGE, 0x0000, 0x1000),
            (pf::MBOX_CTRL_PAGE, 0x1000, 0x1000),
            (pf::MBOX_REQ, 0x2000, 0x1000),
            (pf::MBOX_RESP, 0x3000, 0x1000),
            (pf::EVENT_RING, 0x4000, 0x800),
            (pf::LOG_RING, 0x5000, 0x2000),
            (pf::VF_BANKS, 0x8000, 0x2000),
            (pf::VF_HW_STATUS, 0xA000, 0x100),
            (pf::TT_POOL, 0x1_0000, 0x8000),
            (pf::QUEUES, 0x2_0000, 0x4000),
            (pf::MSIX_TABLE, 0x3_0000, 0x1000),
            (pf::MSIX_PBA, 0x3_8000, 0x1000),
        ];
        let mut prev_end = 0;
        for (w, off, len) in windows {
            assert_eq!((w.offset, w.len), (off, len));
            assert!(w.offset >= prev_end, "windows overlap at {off:#x}");
            prev_end = w.end();
        }
        assert!(prev_end as u64 <= crate::pci::PF_BAR0_SIZE);
        // Sizes follow from the capacities.
        assert_eq!(
            pf::VF_BANKS.len as usize,
            crate::pci::MAX_VFS * VF_BANK_SIZE
        );
        assert_eq!(pf::VF_HW_STATUS.len as usize, crate::pci::MAX_VFS * 4);
        assert_eq!(pf::TT_POOL.len as usize, TT_POOL_ENTRIES * 4);
        assert_eq!(pf::QUEUES.len as usize, VF_MAX_QUEUES * QUEUE_REGS_SIZE);
        assert_eq!(pf::EVENT_RING.len as usize, EVENT_RING_ENTRIES * EVENT_SIZE);
        assert_eq!(pf::vf_bank(63), 0x8000 + 63 * 0x80);
        assert_eq!(pf::queue(255), 0x2_0000 + 255 * 0x40);
        assert_eq!(pf::tt_entry(8191), 0x1_7FFC);
    }

    #[test]
    fn vf_bank_matches_docs() {
        let table: &[(Reg, u32)] = &[
            (vf_bank::STATE, 0x00),
            (vf_bank::ENGINE_MASK, 0x04),
            (vf_bank::MEM_BASE, 0x08),
            (vf_bank::MEM_GRANULES, 0x0C),
            (vf_bank::TT_BASE, 0x10),
            (vf_bank::TT_LEN, 0x14),
            (vf_bank::QUEUE_BASE, 0x18),
            (vf_bank::QUEUE_COUNT, 0x1C),
            (vf_bank::VECTOR_BASE, 0x20),
            (vf_bank::VECTOR_COUNT, 0x24),
            (vf_bank::QOS_WEIGHT, 0x28),
            (vf_bank::GENERATION, 0x2C),
            (vf_bank::FAULT_CODE, 0x30),
            (vf_bank::FAULT_COUNT, 0x34),
            (vf_bank::FLR_COUNT, 0x38),
            (vf_bank::JOBS_LO, 0x40),
            (vf_bank::JOBS_HI, 0x44),
            (vf_bank::BYTES_LO, 0x48),
            (vf_bank::BYTES_HI, 0x4C),
            (vf_bank::ENGINE_US_LO, 0x50),
            (vf_bank::ENGINE_US_HI, 0x54),
        ];
        for (reg, off) in table {
            assert_eq!(reg.0, *off);
            assert!((reg.0 as usize) < VF_BANK_SIZE);
        }
    }

    #[test]
    fn queue_and_vf_maps_match_docs() {
        let q: &[(Reg, u32)] = &[
            (queue::SQ_BASE_LO, 0x00),
            (queue::SQ_BASE_HI, 0x04),
            (queue::SQ_SIZE, 0x08),
            (queue::SQ_TAIL, 0x0C),
            (queue::SQ_HEAD, 0x10),
            (queue::CQ_BASE_LO, 0x14),
            (queue::CQ_BASE_HI, 0x18),
            (queue::CQ_SIZE, 0x1C),
            (queue::CQ_HEAD, 0x20),
            (queue::CQ_TAIL, 0x24),
            (queue::MSIX_VECTOR, 0x28),
            (queue::CONTROL, 0x2C),
            (queue::STATUS, 0x30),
            (queue::OWNER, 0x3C),
        ];
        for (reg, off) in q {
            assert_eq!(reg.0, *off);
            assert!((reg.0 as usize) < QUEUE_REGS_SIZE);
        }
        let v: &[(Reg, u32)] = &[
            (vf::MAGIC, 0x000),
            (vf::ABI_VERSION, 0x004),
            (vf::VF_INDEX, 0x008),
            (vf::STATUS, 0x00C),
            (vf::ENGINE_MASK, 0x010),
            (vf::MEM_SIZE_LO, 0x014),
            (vf::MEM_SIZE_HI, 0x018),
            (vf::QUEUE_COUNT, 0x01C),
            (vf::VECTOR_COUNT, 0x020),
            (vf::QOS_WEIGHT, 0x024),
            (vf::FAULT_CODE, 0x028),
            (vf::FAULT_COUNT, 0x02C),
            (vf::IRQ_TRIGGER, 0x030),
        ];
        for (reg, off) in v {
            assert_eq!(reg.0, *off);
        }
        assert_eq!((vf::QUEUES.offset, vf::QUEUES.len), (0x1000, 0x4000));
        assert_eq!(
            (vf::MSIX_TABLE.offset, vf::MSIX_TABLE.len),
            (0x8000, 0x8000)
        );
        assert_eq!((vf::MSIX_PBA.offset, vf::MSIX_PBA.len), (0x1_0000, 0x1000));
        assert_eq!(
            vf::MSIX_TABLE.len as usize,
            crate::pci::VF_MAX_MSIX_VECTORS as usize * 16
        );
        assert!(vf::MSIX_PBA.end() as u64 <= crate::pci::VF_BAR0_SIZE);
        assert_eq!(vf::queue(1), 0x1040);
    }

    #[test]
    fn host_write_rules() {
        assert!(pf::host_writable(pf::MBOX_DOORBELL.0 as u64));
        assert!(pf::host_writable(0x2FFC));
        assert!(!pf::host_writable(pf::MAGIC.0 as u64));
        assert!(!pf::host_writable(pf::MBOX_STATE.0 as u64));
        assert!(!pf::host_writable(pf::vf_bank(3) as u64));
        assert!(!pf::host_writable(pf::tt_entry(0) as u64));
        assert!(!pf::host_writable(pf::MBOX_RESP.offset as u64));
    }

    #[test]
    fn tt_entry_and_sriov_ctrl() {
        assert_eq!(TtEntry::map(5).granule(), Some(5));
        assert_eq!(TtEntry::INVALID.granule(), None);
        let c = SriovCtrl::new(true, false, 4);
        assert_eq!(c.num_vfs(), 4);
        assert!(c.contains(SriovCtrl::VF_ENABLE));
        assert_eq!(MboxState::from_u32(2), Some(MboxState::Done));
        assert_eq!(MboxState::from_u32(7), None);
    }
}
