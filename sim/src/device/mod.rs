//! The accelerator: PF and VF functions, the PF register file shared with the firmware, device
//! memory, and the virtualization unit that enforces what the firmware programmed into each
//! VF's bank. A VF's access outside its queues, memory window or vectors is refused (reads
//! return all ones, writes are dropped) and recorded as a fault on that VF alone.
//!
//! It never reaches into firmware state: everything it enforces it reads from the banks.
//!
//! - [`config`]: configuration spaces, SR-IOV enable and disable, FLR and PF reset.
//! - [`bar`]: BAR accesses and the virtualization unit's checks.
//! - [`interrupts`]: MSI-X state and delivery.
//! - [`fwbus`]: what the firmware's own register writes set off.
//! - [`dataplane`]: the queue engine that polls VF submission rings and runs their jobs.
//! - [`jobs`]: what a job does, and the two-stage translation of device addresses.

mod bar;
mod config;
mod dataplane;
mod fwbus;
mod interrupts;
mod jobs;

use crate::config_space::{cmd, off, ConfigSpace, CONFIG_SIZE};
use crate::devmem::DevMem;
use crate::msix::Msix;
use crate::pci::{self, layout, pcie, sriov};
use crate::sys::SharedMem;
use shared_abi::board::Board;
use shared_abi::regs::{
    self, pf, queue, vf, vf_bank, ScrubCtrl, SriovCtrl, TtEntry, VfHwStatus, VfStatus,
};
use shared_abi::resources::{VfFault, VfState};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A PCI function of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Func {
    /// The physical function.
    Pf,
    /// Virtual function n (0-based).
    Vf(u16),
}

/// Why an access could not be carried out at all (protocol-level errors; refused VF
/// accesses are not errors, they complete and are recorded as faults).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccessError {
    /// The function does not exist (VF not enabled).
    #[error("no such function")]
    NoFunction,
    /// Region index not implemented.
    #[error("no such region")]
    NoRegion,
    /// Offset/length outside the region.
    #[error("access outside the region")]
    OutOfRange,
    /// Width or alignment the register block does not support.
    #[error("unsupported access size or alignment")]
    BadSize,
}

pub use vfio_user_wire::proto::region;

struct VfFn {
    raw: ConfigSpace,
    presented: ConfigSpace,
    msix: Msix,
}

struct Inner {
    pf_cfg: ConfigSpace,
    pf_msix: Msix,
    vfs: Vec<VfFn>,
    lock_owner: u64,
    /// Lock tokens registered per connection (MBOX_OWNER), released when it goes.
    lock_tokens: std::collections::HashMap<u64, u32>,
}

/// An SR-IOV change for the server: the new NumVFs, and where to say the VF endpoints match.
pub type SriovChange = (u16, Sender<()>);

/// Where the device announces SR-IOV changes: a callback that hands one to the server and
/// wakes it. Returns false if nobody will answer.
pub type SriovNotify = Box<dyn Fn(SriovChange) -> bool + Send + Sync>;

/// The device.
pub struct Device {
    board: Board,
    bar0: SharedMem,
    inner: Mutex<Inner>,
    devmem: Mutex<DevMem>,
    fw_reset: AtomicBool,
    /// The virtualization unit's lock. A VF access holds it from its ownership check to its
    /// last write, and every firmware write to the state that check reads (banks, translation
    /// entries, queue blocks) takes it, so revoking ownership and a VF's access are ordered:
    /// an access that passed its check lands before the firmware clears what it touched.
    /// VF accesses and the queue engine's completions take it shared (they only read what
    /// it guards), firmware writes exclusive.
    /// Order: `vu` before `inner` and before `devmem`.
    vu: std::sync::RwLock<()>,
    sriov_notify: Mutex<Option<SriovNotify>>,
    /// Each function's DMA space: the map table of the one connection that maps into it.
    dma: Mutex<std::collections::HashMap<Func, Arc<crate::dma::Space>>>,
    /// Each function's owning connection: the one client that may use its DMA, interrupts
    /// and reset (see [`Device::claim`]).
    owners: Mutex<std::collections::HashMap<Func, u64>>,
    /// Per physical queue: bumped on every write to its CONTROL register (by its VF or the
    /// firmware), so the queue engine drops what it knew of a queue that was re-armed or reset.
    queue_epochs: Vec<std::sync::atomic::AtomicU32>,
    /// Per physical queue, a bit set by every CONTROL write and cleared by the queue engine
    /// when it finds the queue disabled: the queues it need look at.
    queue_live: Vec<AtomicU64>,
    /// Per VF: bumped when it writes its XLAT registers or XLAT_INVALIDATE, so the queue
    /// engine flushes that VF's IOTLB.
    xlat_epochs: Vec<std::sync::atomic::AtomicU32>,
    /// Host writes to read-only PF registers, dropped.
    pub pf_refused_writes: AtomicU64,
    /// Fault injection: the memory scrubber reports an error instead of scrubbing.
    scrub_fails: AtomicBool,
    /// Fault injection: the firmware's core stops (as a hung firmware would).
    firmware_stalled: AtomicBool,
    /// Fault injection: every job step first waits this many microseconds (a throttled
    /// engine), so tests can act while a job is under way.
    step_delay_us: AtomicU64,
    /// The core's side of the stall: whether it is held now (set by whatever runs the core).
    core_held: AtomicBool,
    /// The thread running the firmware's core, when it runs in this process: host events the
    /// firmware must act on (an FLR, a device reset, a trapped doorbell) cut its idle nap
    /// short, as an interrupt wakes a core from wait-for-interrupt.
    core_thread: Mutex<Option<std::thread::Thread>>,
    /// The flash and its controller, on a device that boots from flash.
    flash: std::sync::OnceLock<Mutex<crate::flash::Flash>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("board", &self.board)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking thread cannot leave these structures half-updated in a way that matters
    // more than stopping the whole model would.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The virtualization unit's lock, shared (VF accesses, completions).
fn vu_shared(l: &std::sync::RwLock<()>) -> std::sync::RwLockReadGuard<'_, ()> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// The virtualization unit's lock, exclusive (firmware writes to what it enforces).
fn vu_exclusive(l: &std::sync::RwLock<()>) -> std::sync::RwLockWriteGuard<'_, ()> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl Device {
    /// A device with `board` resources and `total_vfs` advertised.
    pub fn new(board: Board, total_vfs: u16) -> std::io::Result<Arc<Self>> {
        let total_vfs = total_vfs.clamp(1, board.total_vfs);
        // Clients may map only the mailbox pages; banks, translation and queue blocks stay
        // private to the device and its firmware.
        let window = pf::MBOX_CTRL_PAGE.offset as usize;
        let bar0 = SharedMem::create_with_window(
            "accel-pf-bar0",
            shared_abi::pci::PF_BAR0_SIZE as usize,
            (window, pf::MBOX_RESP.end() as usize - window),
        )?;
        Ok(Arc::new(Device {
            board: Board { total_vfs, ..board },
            bar0,
            inner: Mutex::new(Inner {
                pf_cfg: pci::pf_config(total_vfs),
                pf_msix: Msix::new(shared_abi::pci::PF_MSIX_VECTORS),
                vfs: Vec::new(),
                lock_owner: 0,
                lock_tokens: Default::default(),
            }),
            devmem: Mutex::new(DevMem::new(board.mem_granules, board.granule_shift)),
            fw_reset: AtomicBool::new(false),
            vu: std::sync::RwLock::new(()),
            sriov_notify: Mutex::new(None),
            dma: Mutex::new(Default::default()),
            owners: Mutex::new(Default::default()),
            queue_epochs: (0..board.queues)
                .map(|_| std::sync::atomic::AtomicU32::new(0))
                .collect(),
            queue_live: (0..(board.queues as usize).div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            xlat_epochs: (0..shared_abi::pci::MAX_VFS)
                .map(|_| std::sync::atomic::AtomicU32::new(0))
                .collect(),
            pf_refused_writes: AtomicU64::new(0),
            scrub_fails: AtomicBool::new(false),
            firmware_stalled: AtomicBool::new(false),
            step_delay_us: AtomicU64::new(0),
            core_held: AtomicBool::new(false),
            core_thread: Mutex::new(None),
            flash: std::sync::OnceLock::new(),
        }))
        .inspect(|d| {
            d.bar0
                .write32(pf::FLASH_STATUS.offset(), regs::flash_result::NO_FLASH);
        })
    }

    /// The board as the firmware sees it (TotalVFs as configured).
    pub fn board(&self) -> Board {
        self.board
    }

    /// The PF register file (shared with the firmware and mappable by clients).
    pub fn bar0(&self) -> &SharedMem {
        &self.bar0
    }

    /// Registers a channel told the new NumVFs on every SR-IOV enable/disable. The change
    /// completes (the config write that made it returns) once the receiver acknowledges it:
    /// the VF endpoints exist, or are gone, before the host's write is answered.
    pub fn on_sriov_change(&self, notify: SriovNotify) {
        *lock(&self.sriov_notify) = Some(notify);
    }

    /// Connection `conn` asks to use `f`'s DMA, interrupts or reset: true if it owns them,
    /// now or already. A function has one owner, as a VFIO device has one user (the kernel
    /// lets one process open a group): the first client to ask, until it hangs up
    /// ([`Device::disown`]). Its registers stay open to every client, as the mailbox lock
    /// arbitrates the PF's management interface among them.
    pub fn claim(&self, f: Func, conn: u64) -> bool {
        *lock(&self.owners).entry(f).or_insert(conn) == conn
    }

    /// Connection `conn` went away: if it owned `f`, nobody does now.
    pub fn disown(&self, f: Func, conn: u64) {
        let mut m = lock(&self.owners);
        if m.get(&f) == Some(&conn) {
            m.remove(&f);
        }
    }

    /// The DMA space of `f` for connection `conn`. A function has one DMA space, as a
    /// device has one IOMMU domain: the first connection that maps owns it until it goes;
    /// another gets `None` (EBUSY to the client).
    pub fn dma_space(&self, f: Func, conn: u64) -> Option<Arc<crate::dma::Space>> {
        let mut m = lock(&self.dma);
        let s = m
            .entry(f)
            .or_insert_with(|| Arc::new(crate::dma::Space::new(conn)));
        (s.conn() == conn).then(|| s.clone())
    }

    /// Connection `conn` went away: its DMA space (if it owned one) goes with it, and every
    /// job and queue that used it stops.
    pub fn release_dma(&self, f: Func, conn: u64) {
        let gone = {
            let mut m = lock(&self.dma);
            match m.get(&f) {
                Some(s) if s.conn() == conn => m.remove(&f),
                _ => None,
            }
        };
        if let Some(s) = gone {
            s.revoke();
        }
    }

    /// The DMA space a VF's queues are armed with, if a client has mapped memory for it.
    fn vf_dma(&self, v: u16) -> Option<Arc<crate::dma::Space>> {
        lock(&self.dma).get(&Func::Vf(v)).cloned()
    }

    fn xlat_epoch(&self, v: u16) -> u32 {
        self.xlat_epochs
            .get(v as usize)
            .map_or(0, |e| e.load(Ordering::Acquire))
    }

    fn xlat_changed(&self, v: u16) {
        if let Some(e) = self.xlat_epochs.get(v as usize) {
            e.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Fault injection for tests: while `on`, the memory scrubber fails every request (as a
    /// broken scrub engine would), so the firmware's handling of a hardware failure can be
    /// exercised.
    pub fn inject_scrub_failure(&self, on: bool) {
        self.scrub_fails.store(on, Ordering::Release);
    }

    /// Fault injection for tests: while `on`, the firmware's core runs nothing (a hung
    /// firmware: no mailbox answers, no FLR handling); the hardware around it goes on.
    pub fn inject_firmware_stall(&self, on: bool) {
        self.firmware_stalled.store(on, Ordering::Release);
        // Returns once the core is held (or runs again): a command sent after this call is
        // not picked up by a poll that was already under way.
        let t = std::time::Instant::now();
        while self.core_held.load(Ordering::Acquire) != on
            && t.elapsed() < std::time::Duration::from_secs(2)
        {
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    }

    /// Fault injection for tests: every job step waits `d` first (an engine slowed down), so a
    /// long job is still running while a test resets, resizes or destroys its VF.
    pub fn inject_step_delay(&self, d: Duration) {
        self.step_delay_us
            .store(d.as_micros() as u64, Ordering::Release);
    }

    /// The injected step delay, if any.
    pub(crate) fn step_delay(&self) -> Option<Duration> {
        match self.step_delay_us.load(Ordering::Acquire) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Whatever runs the firmware's core says whether it holds it now.
    pub fn set_core_held(&self, held: bool) {
        self.core_held.store(held, Ordering::Release);
    }

    /// Names the thread that runs the firmware's core (`None`: none in this process), so
    /// host events wake it from its idle nap (`std::thread::park_timeout`).
    pub fn set_core_thread(&self, t: Option<std::thread::Thread>) {
        *lock(&self.core_thread) = t;
    }

    /// Wakes the firmware's core if it naps: the host gave it something to do.
    pub(crate) fn wake_core(&self) {
        if let Some(t) = lock(&self.core_thread).as_ref() {
            t.unpark();
        }
    }

    /// Whether the firmware's core is held stalled (`inject_firmware_stall`).
    pub fn firmware_stalled(&self) -> bool {
        self.firmware_stalled.load(Ordering::Acquire)
    }

    /// Enabled VFs.
    pub fn num_vfs(&self) -> u16 {
        lock(&self.inner).vfs.len() as u16
    }

    /// Whether the firmware asked to be restarted (device reset); clears the request.
    pub fn take_fw_reset(&self) -> bool {
        // Asked on every firmware poll: a plain load first, so polling does not write.
        self.fw_reset.load(Ordering::Relaxed) && self.fw_reset.swap(false, Ordering::AcqRel)
    }

    /// Size of a region of a function.
    pub fn region_size(&self, f: Func, idx: u32) -> Option<u64> {
        match (f, idx) {
            (_, region::CONFIG) => Some(CONFIG_SIZE as u64),
            (Func::Pf, region::BAR0) => Some(shared_abi::pci::PF_BAR0_SIZE),
            (Func::Vf(_), region::BAR0) => Some(shared_abi::pci::VF_BAR0_SIZE),
            (Func::Vf(_), region::BAR2) => Some(shared_abi::pci::VF_BAR2_SIZE),
            _ => None,
        }
    }

    /// MSI-X vectors of a function.
    pub fn msix_count(&self, f: Func) -> Result<u32, AccessError> {
        let mut g = lock(&self.inner);
        match f {
            Func::Pf => Ok(g.pf_msix.len() as u32),
            Func::Vf(v) => {
                self.sync_vf(&mut g, v)?;
                Ok(g.vfs[v as usize].msix.len() as u32)
            }
        }
    }

    fn bank(&self, v: u16, r: regs::Reg) -> u32 {
        self.bar0.read32(r.at(pf::vf_bank(v as usize)))
    }

    fn vf_state(&self, v: u16) -> Option<VfState> {
        VfState::from_wire(self.bank(v, vf_bank::STATE))
    }

    /// Records a refused VF access on that VF's bank (and nowhere else).
    fn fault(&self, v: u16, code: VfFault) {
        let base = pf::vf_bank(v as usize);
        self.bar0.write32(vf_bank::FAULT_CODE.at(base), code as u32);
        // Saturating: a VF cannot count its way back to zero (and so clear FAULTED) however
        // many refused accesses it makes; only a reset or destroy clears the count.
        for _ in 0..64 {
            let cur = self.bar0.read32(vf_bank::FAULT_COUNT.at(base));
            if cur == u32::MAX || self.bar0.cas32(vf_bank::FAULT_COUNT.at(base), cur, cur + 1) {
                break;
            }
        }
        // FAULT_SEQ tells the firmware to look (published after the count). Bounded: a lost
        // increment under a storm only delays the report to the next fault.
        let seq = pf::FAULT_SEQ.offset();
        for _ in 0..64 {
            let old = self.bar0.read32(seq);
            shared_abi::ordering::publish();
            if self.bar0.cas32(seq, old, old.wrapping_add(1)) {
                break;
            }
        }
    }

    /// Records a refused access of VF `v`'s own (a register or memory access, not a job's):
    /// counted on its bank, and for the thread that made it, whose connection slows a flood
    /// of them down ([`access_faults_here`]).
    fn access_fault(&self, v: u16, code: VfFault) {
        self.fault(v, code);
        ACCESS_FAULTS.with(|n| n.set(n.get().wrapping_add(1)));
    }

    /// Keeps a VF's MSI-X table size equal to the vectors the firmware assigned.
    fn sync_vf(&self, g: &mut Inner, v: u16) -> Result<(), AccessError> {
        let f = g.vfs.get_mut(v as usize).ok_or(AccessError::NoFunction)?;
        let want = (self.bank(v, vf_bank::VECTOR_COUNT) as u16)
            .clamp(1, shared_abi::pci::VF_MAX_MSIX_VECTORS);
        if f.msix.len() != want as usize {
            f.msix.resize(want);
            pci::set_msix_size(&mut f.raw, want);
            pci::set_msix_size(&mut f.presented, want);
        }
        Ok(())
    }

    /// Granules of device memory holding data (for tests).
    pub fn resident_granules(&self) -> usize {
        lock(&self.devmem).resident()
    }

    /// The PF's config space bytes.
    pub fn pf_config_bytes(&self) -> Box<[u8; CONFIG_SIZE]> {
        Box::new(*lock(&self.inner).pf_cfg.bytes())
    }
}

thread_local! {
    /// Refused VF accesses made on this thread (each connection has its own).
    static ACCESS_FAULTS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Refused VF accesses this thread has made so far: a connection compares it before and
/// after a message to learn what that message cost.
pub fn access_faults_here() -> u64 {
    ACCESS_FAULTS.with(|n| n.get())
}

fn check_range(offset: u64, len: usize, size: u64) -> Result<(), AccessError> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size && len > 0 => Ok(()),
        _ => Err(AccessError::OutOfRange),
    }
}
