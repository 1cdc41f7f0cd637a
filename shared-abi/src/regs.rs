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

/// One register of a block, as declared once in this module: its name, offset and access
/// rule. The `MAP` of each block lists them in offset order; docs/abi.md's tables are checked
/// against the maps by a test, and the device model's write checks are derived from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegSpec<A: 'static> {
    /// The constant's name, as the docs table spells it.
    pub name: &'static str,
    /// Where it is.
    pub reg: Reg,
    /// Who may write it.
    pub access: A,
}

/// An access rule as the docs table's access column spells it.
pub trait AccessDoc: Copy {
    /// The column text.
    fn doc(self) -> &'static str;
}

/// Declares a block's registers: one `pub const` per register and the block's `MAP`, checked
/// at compile time to be in strictly ascending, non-overlapping offset order.
macro_rules! registers {
    ($access:ident; $($(#[$m:meta])* $name:ident = $off:literal, $acc:ident;)*) => {
        $($(#[$m])* pub const $name: Reg = Reg($off);)*
        /// Every register of this block in offset order, with its access rule.
        pub const MAP: &[super::RegSpec<super::$access>] = &[$(super::RegSpec {
            name: stringify!($name),
            reg: Reg($off),
            access: super::$access::$acc,
        },)*];
        const _: () = assert!(super::ascending(MAP));
    };
}

const fn ascending<A>(m: &[RegSpec<A>]) -> bool {
    let mut i = 1;
    while i < m.len() {
        if m[i].reg.0 < m[i - 1].reg.0 + 4 {
            return false;
        }
        i += 1;
    }
    true
}

/// The access rule of the register at `off` in `m`, if there is one.
const fn access_at<A: Copy>(m: &[RegSpec<A>], off: u64) -> Option<A> {
    let mut i = 0;
    while i < m.len() {
        if m[i].reg.0 as u64 == off {
            return Some(m[i].access);
        }
        i += 1;
    }
    None
}

/// Access rules of PF BAR0 registers (the host's view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PfAccess {
    /// Read-only to the host.
    Ro,
    /// The host reads and writes it.
    Rw,
    /// The hardware semaphore: host writes acquire or release, reads show the owner.
    Semaphore,
    /// Read-only; hardware keeps it.
    Hardware,
    /// Written by the firmware only.
    Firmware,
    /// Written by the firmware; hardware sets status bits in it.
    FirmwareHardware,
    /// Written by the firmware; writing triggers hardware, reads mean nothing.
    FirmwareWo,
}

impl PfAccess {
    /// Whether the host may write it.
    pub const fn host_writes(self) -> bool {
        matches!(self, PfAccess::Rw | PfAccess::Semaphore)
    }
}

impl AccessDoc for PfAccess {
    fn doc(self) -> &'static str {
        match self {
            PfAccess::Ro => "RO",
            PfAccess::Rw => "RW",
            PfAccess::Semaphore => "RW special",
            PfAccess::Hardware => "RO (hardware)",
            PfAccess::Firmware => "firmware",
            PfAccess::FirmwareHardware => "firmware / hardware",
            PfAccess::FirmwareWo => "firmware, WO",
        }
    }
}

/// Who writes a VF bank register (all are read-only to the host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BankWriter {
    /// The firmware, when it configures, resets or destroys the VF.
    Firmware,
    /// The VF, through its own BAR0 (the hardware stores what it writes here).
    Vf,
    /// The virtualization unit, when it refuses an access.
    Hardware,
    /// The data path's accounting.
    DataPath,
}

impl AccessDoc for BankWriter {
    fn doc(self) -> &'static str {
        match self {
            BankWriter::Firmware => "firmware",
            BankWriter::Vf => "VF",
            BankWriter::Hardware => "hardware",
            BankWriter::DataPath => "data path",
        }
    }
}

/// A VF's access to a register of its own queue block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueAccess {
    /// The VF's driver reads and writes it.
    Rw,
    /// The device writes it; the VF reads it.
    Ro,
    /// Device-internal: the VF reads 0 and cannot write it.
    DeviceOnly,
}

impl AccessDoc for QueueAccess {
    fn doc(self) -> &'static str {
        match self {
            QueueAccess::Rw => "RW",
            QueueAccess::Ro => "RO",
            QueueAccess::DeviceOnly => "reads 0; device view only",
        }
    }
}

/// A VF's access to a register of its BAR0 (outside the queue blocks and MSI-X).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VfAccess {
    /// Read-only.
    Ro,
    /// The VF reads and writes it.
    Rw,
    /// Write-only: writing triggers something, reads return 0.
    Wo,
}

impl AccessDoc for VfAccess {
    fn doc(self) -> &'static str {
        match self {
            VfAccess::Ro => "RO",
            VfAccess::Rw => "RW",
            VfAccess::Wo => "WO",
        }
    }
}

/// A command to the flash controller ([`pf::FLASH_CMD`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum FlashCmd {
    /// Start writing slot `ARG0`: its old content stops counting at once (the slot reads as
    /// empty until a commit verifies the new image). The running slot is refused.
    Erase = 1,
    /// Program `ARG2` bytes from [`pf::FLASH_BUF`] into slot `ARG0` at offset `ARG1`.
    Write = 2,
    /// Verify slot `ARG0`'s image (structure, CRC, board, signature; the rollback floor of
    /// the running image unless `ARG1` bit 0) and, if it passes, make it the slot the next
    /// reset boots.
    Commit = 3,
    /// Make valid slot `ARG0` the one the next reset boots.
    Activate = 4,
}

impl FlashCmd {
    /// The command for a register value.
    pub const fn from_wire(v: u32) -> Option<Self> {
        Some(match v {
            1 => FlashCmd::Erase,
            2 => FlashCmd::Write,
            3 => FlashCmd::Commit,
            4 => FlashCmd::Activate,
            _ => return None,
        })
    }
}

/// [`pf::FLASH_RUNNING`]: the running image was booted from flash.
pub const FLASH_BOOTED: u32 = 1 << 8;

/// [`pf::FLASH_STATUS`] values: 0 done; image refusals are `IMAGE | reason` (the reason as
/// `fw_image::ImageError::code` numbers it).
pub mod flash_result {
    /// Done.
    pub const OK: u32 = 0;
    /// This device has no flash controller (or no flash).
    pub const NO_FLASH: u32 = 1;
    /// Not a slot, or the slot the running image came from.
    pub const BAD_SLOT: u32 = 2;
    /// Past the end of the slot, or past the buffer.
    pub const BAD_RANGE: u32 = 3;
    /// The flash could not be written or read.
    pub const IO: u32 = 4;
    /// The slot holds no verified image (Activate).
    pub const NOT_VALID: u32 = 5;
    /// Unknown command.
    pub const BAD_COMMAND: u32 = 6;
    /// The image was refused; the low byte says why.
    pub const IMAGE: u32 = 0x100;
}

/// Flags of a [`crate::messages::FwSlotInfo`] (and of [`pf::FLASH_SLOTS`]).
pub mod slot_flags {
    /// The slot holds an image that verified.
    pub const VALID: u8 = 1 << 0;
    /// The running image came from this slot.
    pub const RUNNING: u8 = 1 << 1;
    /// The next reset boots this slot.
    pub const PENDING: u8 = 1 << 2;
    /// The slot failed verification or never became ready; it is not booted again.
    pub const BAD: u8 = 1 << 3;
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

    registers! {
        PfAccess;
        /// RO: [`super::PF_MAGIC`].
        MAGIC = 0x000, Ro;
        /// RO: ABI major (31..16) and minor (15..0) the firmware speaks.
        ABI_VERSION = 0x004, Ro;
        /// RO: running firmware version, major (31..24), minor (23..16), patch (15..0).
        FW_VERSION = 0x008, Ro;
        /// RO: [`super::DevCaps`].
        CAPS = 0x00C, Ro;
        /// RO: [`super::DevStatus`].
        DEV_STATUS = 0x010, Ro;
        /// RO: last fault code ([`crate::mailbox::FaultCode`]), 0 when healthy.
        FAULT_CODE = 0x014, Ro;
        /// RO: incremented by the firmware main loop; a stalled value means a hung firmware.
        HEARTBEAT = 0x018, Ro;
        /// RW: scratch register for the host's liveness checks.
        SCRATCH = 0x01C, Rw;
        /// RO: board compute engines.
        BOARD_ENGINES = 0x020, Ro;
        /// RO: board device memory granules.
        BOARD_MEM_GRANULES = 0x024, Ro;
        /// RO: log2 of the granule size.
        BOARD_GRANULE_SHIFT = 0x028, Ro;
        /// RO: board queue pairs.
        BOARD_QUEUES = 0x02C, Ro;
        /// RO: board MSI-X vectors for VFs.
        BOARD_VECTORS = 0x030, Ro;
        /// RO: board TotalVFs.
        BOARD_TOTAL_VFS = 0x034, Ro;
        /// RO: firmware build id (low 32 bits of the image hash).
        FW_BUILD_ID = 0x038, Ro;
        /// The token this connection takes the mailbox lock with (written once per
        /// connection). The device releases [`MBOX_LOCK`] at once when a connection that
        /// registered the token holding it goes away; on other transports the lease does.
        MBOX_OWNER = 0x040, Rw;
        /// RO (hardware): SR-IOV state mirrored from config space; [`super::SriovCtrl`].
        SRIOV_CTRL = 0x044, Hardware;
        /// RW by firmware: first granule the memory scrubber zeroes.
        SCRUB_BASE = 0x050, Firmware;
        /// RW by firmware: number of granules to zero.
        SCRUB_COUNT = 0x054, Firmware;
        /// Firmware writes [`super::ScrubCtrl::GO`]; hardware sets `DONE` when finished.
        SCRUB_CTRL = 0x058, FirmwareHardware;
        /// WO by firmware: writing a PF MSI-X vector number raises that vector.
        IRQ_RAISE = 0x05C, FirmwareWo;
        /// WO by firmware: writing `vf << 16 | vector` raises that VF-local vector of a VF.
        VF_IRQ_RAISE = 0x060, FirmwareWo;
        /// RO (hardware): incremented (wrapping) by hardware each time it sets FLR_PENDING in
        /// a VF's [`VF_HW_STATUS`] word, after setting it: the firmware scans those words
        /// only when this moves, not on every poll.
        FLR_SEQ = 0x064, Hardware;
        /// RO (hardware): incremented (wrapping) by hardware each time it counts a refused
        /// access in a VF bank's `FAULT_COUNT`, after counting it: the firmware compares the
        /// counts with those it last reported (and posts VF_FAULT events) only when this
        /// moves.
        FAULT_SEQ = 0x068, Hardware;
        /// WO by firmware: a [`super::FlashCmd`] for the flash controller, with its arguments
        /// in `FLASH_ARG0..2` (and data in [`FLASH_BUF`]); the controller answers in
        /// [`FLASH_STATUS`].
        FLASH_CMD = 0x070, FirmwareWo;
        /// RW by firmware: first argument of the next [`FLASH_CMD`] (a slot).
        FLASH_ARG0 = 0x074, Firmware;
        /// RW by firmware: second argument (an offset, or flags).
        FLASH_ARG1 = 0x078, Firmware;
        /// RW by firmware: third argument (a length).
        FLASH_ARG2 = 0x07C, Firmware;
        /// RO (hardware): the last flash command's result, a [`super::FlashResult`].
        FLASH_STATUS = 0x080, Hardware;
        /// RO (hardware): [`super::FLASH_BOOTED`] and, in bits 7..0, the slot the running
        /// image was booted from (0 A, 1 B); 0 when the image did not come from flash (or
        /// there is no flash controller).
        FLASH_RUNNING = 0x084, Hardware;
        /// RW: host writes an incrementing value after filling the request buffer.
        MBOX_DOORBELL = 0x1000, Rw;
        /// RW: length in bytes of the request in the request buffer.
        MBOX_REQ_LEN = 0x1004, Rw;
        /// RO: [`super::MboxState`] in bits 7..0.
        MBOX_STATE = 0x1008, Ro;
        /// RO: length in bytes of the response in the response buffer.
        MBOX_RESP_LEN = 0x100C, Ro;
        /// RO: the doorbell value the current response answers.
        MBOX_DONE_DOORBELL = 0x1010, Ro;
        /// The mailbox lock, in the mapped page: a compare-and-swap word. Acquire by swapping
        /// 0 for your nonzero token, release by swapping it back (a trapped write of a token
        /// is applied as that swap). Every request carries the token; the firmware executes
        /// only requests whose token holds the lock, and takes the lock back from a holder
        /// that sends nothing for [`MBOX_LEASE_MS`].
        MBOX_LOCK = 0x1020, Semaphore;
        /// RO: the lease in milliseconds: how long a holder may keep the lock without a
        /// command before the firmware frees it (a holder that died).
        MBOX_LEASE_MS = 0x1024, Ro;
        /// RO: leases the firmware has expired since boot.
        MBOX_LEASES_EXPIRED = 0x1028, Ro;
        /// RO: event ring producer index (free-running, firmware writes).
        EVQ_PROD = 0x1040, Ro;
        /// RW: event ring consumer index (free-running, host writes).
        EVQ_CONS = 0x1044, Rw;
        /// RO: log ring producer byte index (free-running).
        LOG_PROD = 0x1080, Ro;
        /// RW: log ring consumer byte index (free-running).
        LOG_CONS = 0x1084, Rw;
    }

    /// Identification, status and control page: trapped, never mapped into the host.
    pub const ID_PAGE: Window = Window {
        offset: 0x0000,
        len: 0x1000,
    };
    /// RO (hardware): the flash slots as the controller sees them, one
    /// [`crate::messages::FwSlotInfo`] (16 bytes) per slot, A then B.
    pub const FLASH_SLOTS: Window = Window {
        offset: 0x0A0,
        len: 0x20,
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
    /// Firmware only: data for a [`super::FlashCmd::Write`] (never mapped, never the host's).
    pub const FLASH_BUF: Window = Window {
        offset: 0x7000,
        len: 0x1000,
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

    /// Whether a firmware write at `off` is a transaction the hardware acts on, not a plain
    /// store: a register with a side effect, or state the virtualization unit enforces (VF
    /// banks, translation entries, queue blocks). A firmware core that reaches the register
    /// file over shared memory sends these over its bus, in order; reads of them, and any
    /// handoff write, wait until the hardware has taken the earlier ones (as a PCIe read
    /// flushes posted writes).
    pub const fn hardware_acts_on(off: usize) -> bool {
        let o = off as u64;
        off == SCRUB_CTRL.offset()
            || off == IRQ_RAISE.offset()
            || off == VF_IRQ_RAISE.offset()
            || off == FLASH_CMD.offset()
            || VF_BANKS.contains(o, 4)
            || TT_POOL.contains(o, 4)
            || QUEUES.contains(o, 4)
    }

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
        matches!(super::access_at(MAP, off), Some(a) if a.host_writes())
            || MBOX_REQ.contains(off, 4)
            || MSIX_TABLE.contains(off, 4)
    }
}

/// One VF's bank in the virtualization unit: what the firmware programs and the hardware
/// enforces. Offsets are relative to [`pf::vf_bank`].
pub mod vf_bank {
    use super::Reg;

    registers! {
        BankWriter;
        /// [`crate::resources::VfState`] as u32. Written by firmware.
        STATE = 0x00, Firmware;
        /// Engines the VF may run on (bit n = engine n).
        ENGINE_MASK = 0x04, Firmware;
        /// First device-physical granule of the VF's memory window.
        MEM_BASE = 0x08, Firmware;
        /// Granules in the window; VF-local addresses at or past `MEM_GRANULES << shift` fault.
        MEM_GRANULES = 0x0C, Firmware;
        /// First translation pool entry of this VF's table.
        TT_BASE = 0x10, Firmware;
        /// Entries in this VF's translation table (VF-local granule i → entry TT_BASE + i).
        TT_LEN = 0x14, Firmware;
        /// First physical queue.
        QUEUE_BASE = 0x18, Firmware;
        /// Queues owned; VF-local queue q maps to physical queue `QUEUE_BASE + q`.
        QUEUE_COUNT = 0x1C, Firmware;
        /// First device MSI-X vector.
        VECTOR_BASE = 0x20, Firmware;
        /// Vectors owned; also the Table Size of the VF's MSI-X capability.
        VECTOR_COUNT = 0x24, Firmware;
        /// Scheduler weight (1..=1000); 0 while the VF is free.
        QOS_WEIGHT = 0x28, Firmware;
        /// Bumped by firmware on every change of this bank.
        GENERATION = 0x2C, Firmware;
        /// Written by hardware: [`crate::resources::VfFault`] code of the most recent refused access.
        FAULT_CODE = 0x30, Hardware;
        /// Written by hardware: refused accesses since the VF was configured.
        FAULT_COUNT = 0x34, Hardware;
        /// Function level resets since configured; the firmware counts each one it completes.
        FLR_COUNT = 0x38, Firmware;
        /// Data path counters (issue 5): jobs completed, low word.
        JOBS_LO = 0x40, DataPath;
        /// Jobs completed, high word.
        JOBS_HI = 0x44, DataPath;
        /// Bytes processed, low word.
        BYTES_LO = 0x48, DataPath;
        /// Bytes processed, high word.
        BYTES_HI = 0x4C, DataPath;
        /// Engine busy time in microseconds, low word.
        ENGINE_US_LO = 0x50, DataPath;
        /// Engine busy time, high word.
        ENGINE_US_HI = 0x54, DataPath;
        /// The VF's stage-1 translation table: VF-local device memory address, low word
        /// (`vf::XLAT_ROOT_LO`).
        XLAT_ROOT_LO = 0x58, Vf;
        /// Stage-1 table address, high word.
        XLAT_ROOT_HI = 0x5C, Vf;
        /// Stage-1 table entries (VF virtual pages covered).
        XLAT_PAGES = 0x60, Vf;
        /// IOTLB hits (saturating).
        IOTLB_HITS = 0x64, DataPath;
        /// IOTLB misses, each a stage-1 table walk (saturating).
        IOTLB_MISSES = 0x68, DataPath;
    }
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

    registers! {
        QueueAccess;
        /// Submission ring IOVA, low word.
        SQ_BASE_LO = 0x00, Rw;
        /// Submission ring IOVA, high word.
        SQ_BASE_HI = 0x04, Rw;
        /// Submission ring entries (power of two).
        SQ_SIZE = 0x08, Rw;
        /// Submission tail doorbell (written by the VF driver; a hint, the device also polls).
        SQ_TAIL = 0x0C, Rw;
        /// Submission head (device-written).
        SQ_HEAD = 0x10, Ro;
        /// Completion ring IOVA, low word.
        CQ_BASE_LO = 0x14, Rw;
        /// Completion ring IOVA, high word.
        CQ_BASE_HI = 0x18, Rw;
        /// Completion ring entries.
        CQ_SIZE = 0x1C, Rw;
        /// Completion head doorbell (driver-written).
        CQ_HEAD = 0x20, Rw;
        /// Completion tail (device-written).
        CQ_TAIL = 0x24, Ro;
        /// VF-local MSI-X vector raised on completion.
        MSIX_VECTOR = 0x28, Rw;
        /// [`super::QueueCtrl`].
        CONTROL = 0x2C, Rw;
        /// Queue status/error code (device-written).
        STATUS = 0x30, Ro;
        /// Owning VF + 1 (0 = unowned). Device view only; written by firmware.
        OWNER = 0x3C, DeviceOnly;
    }
    /// Whether a VF may write the register at `off` of its own queue block.
    pub const fn vf_writable(off: u64) -> bool {
        matches!(super::access_at(MAP, off), Some(super::QueueAccess::Rw))
    }
}

/// VF BAR0 as the guest driver sees it.
pub mod vf {
    use super::{Reg, Window};

    registers! {
        VfAccess;
        /// RO: [`super::VF_MAGIC`].
        MAGIC = 0x000, Ro;
        /// RO: ABI version word.
        ABI_VERSION = 0x004, Ro;
        /// RO: this VF's index (0-based).
        VF_INDEX = 0x008, Ro;
        /// RO: [`super::VfStatus`].
        STATUS = 0x00C, Ro;
        /// RO: engine mask.
        ENGINE_MASK = 0x010, Ro;
        /// RO: device memory window size in bytes, low word.
        MEM_SIZE_LO = 0x014, Ro;
        /// RO: device memory window size, high word.
        MEM_SIZE_HI = 0x018, Ro;
        /// RO: queues owned.
        QUEUE_COUNT = 0x01C, Ro;
        /// RO: MSI-X vectors owned.
        VECTOR_COUNT = 0x020, Ro;
        /// RO: scheduler weight.
        QOS_WEIGHT = 0x024, Ro;
        /// RO: most recent fault code of this VF.
        FAULT_CODE = 0x028, Ro;
        /// RO: fault count of this VF.
        FAULT_COUNT = 0x02C, Ro;
        /// WO: write a VF-local vector number to raise it (interrupt self-test).
        IRQ_TRIGGER = 0x030, Wo;
        /// RW: the VF's stage-1 translation table (`jobs::xlat`), a VF-local device memory
        /// address, low word. Page aligned.
        XLAT_ROOT_LO = 0x034, Rw;
        /// RW: stage-1 table address, high word.
        XLAT_ROOT_HI = 0x038, Rw;
        /// RW: stage-1 table entries; VF virtual pages at or past it miss. 0 disables
        /// device addresses in jobs.
        XLAT_PAGES = 0x03C, Rw;
        /// WO: any write flushes the VF's IOTLB (after changing table entries).
        XLAT_INVALIDATE = 0x040, Wo;
        /// RO: IOTLB hits.
        IOTLB_HITS = 0x044, Ro;
        /// RO: IOTLB misses (stage-1 table walks).
        IOTLB_MISSES = 0x048, Ro;
    }
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

wire_enum! {
    /// Mailbox state machine as reported in `MBOX_STATE`.
    MboxState: u32 {
        /// Nothing pending.
        Idle = 0,
        /// Firmware is working on the request.
        Busy = 1,
        /// A response is in the response buffer for `MBOX_DONE_DOORBELL`.
        Done = 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pf_registers_fit_their_pages_and_windows_do_not_overlap() {
        // Register offsets and access rules are checked against docs/abi.md by
        // tests/docs.rs; here, where they live.
        for s in pf::MAP {
            assert!(
                pf::ID_PAGE.contains(s.reg.0 as u64, 4)
                    || pf::MBOX_CTRL_PAGE.contains(s.reg.0 as u64, 4),
                "{s:?}"
            );
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
    fn banks_and_queue_blocks_hold_their_registers() {
        for s in vf_bank::MAP {
            assert!((s.reg.0 as usize) < VF_BANK_SIZE, "{s:?}");
        }
        for s in queue::MAP {
            assert!((s.reg.0 as usize) < QUEUE_REGS_SIZE, "{s:?}");
        }
        for s in vf::MAP {
            assert!(s.reg.0 < vf::QUEUES.offset, "{s:?}");
        }
    }

    #[test]
    fn vf_windows_match_docs() {
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
        assert_eq!(MboxState::from_wire(2), Some(MboxState::Done));
        assert_eq!(MboxState::from_wire(7), None);
    }
}
