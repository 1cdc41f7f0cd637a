//! The accelerator: PF and VF functions, the PF register file shared with the firmware, device
//! memory, and the virtualization unit that enforces what the firmware programmed into each
//! VF's bank. A VF's access outside its queues, memory window or vectors is refused (reads
//! return all ones, writes are dropped) and recorded as a fault on that VF alone.
//!
//! It never reaches into firmware state: everything it enforces it reads from the banks.

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

/// VFIO PCI region indices.
pub mod region {
    pub const BAR0: u32 = 0;
    pub const BAR2: u32 = 2;
    pub const CONFIG: u32 = 7;
    pub const COUNT: u32 = 9;
}

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
}

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
    /// Order: `vu` before `inner` and before `devmem`.
    vu: Mutex<()>,
    sriov_notify: Mutex<Option<Sender<u16>>>,
    /// Host writes to read-only PF registers, dropped.
    pub pf_refused_writes: AtomicU64,
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
            }),
            devmem: Mutex::new(DevMem::new(board.mem_granules, board.granule_shift)),
            fw_reset: AtomicBool::new(false),
            vu: Mutex::new(()),
            sriov_notify: Mutex::new(None),
            pf_refused_writes: AtomicU64::new(0),
        }))
    }

    /// The board as the firmware sees it (TotalVFs as configured).
    pub fn board(&self) -> Board {
        self.board
    }

    /// The PF register file (shared with the firmware and mappable by clients).
    pub fn bar0(&self) -> &SharedMem {
        &self.bar0
    }

    /// Registers a channel told the new NumVFs on every SR-IOV enable/disable.
    pub fn on_sriov_change(&self, tx: Sender<u16>) {
        *lock(&self.sriov_notify) = Some(tx);
    }

    /// Enabled VFs.
    pub fn num_vfs(&self) -> u16 {
        lock(&self.inner).vfs.len() as u16
    }

    /// Whether the firmware asked to be restarted (device reset); clears the request.
    pub fn take_fw_reset(&self) -> bool {
        self.fw_reset.swap(false, Ordering::AcqRel)
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
        for _ in 0..64 {
            let cur = self.bar0.read32(vf_bank::FAULT_COUNT.at(base));
            if self
                .bar0
                .cas32(vf_bank::FAULT_COUNT.at(base), cur, cur.wrapping_add(1))
            {
                break;
            }
        }
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

    // ---- configuration space -------------------------------------------------------------

    /// Reads configuration space.
    pub fn config_read(&self, f: Func, offset: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        check_range(offset, buf.len(), CONFIG_SIZE as u64)?;
        let mut g = lock(&self.inner);
        match f {
            Func::Pf => g.pf_cfg.read(offset as usize, buf),
            Func::Vf(v) => {
                self.sync_vf(&mut g, v)?;
                g.vfs[v as usize].presented.read(offset as usize, buf)
            }
        }
        Ok(())
    }

    /// The VF's configuration space as the SR-IOV specification defines it (no vfio view).
    pub fn vf_raw_config(&self, v: u16) -> Option<Box<[u8; CONFIG_SIZE]>> {
        let mut g = lock(&self.inner);
        self.sync_vf(&mut g, v).ok()?;
        Some(Box::new(*g.vfs[v as usize].raw.bytes()))
    }

    /// Writes configuration space and carries out its side effects (SR-IOV enable, FLR).
    pub fn config_write(&self, f: Func, offset: u64, data: &[u8]) -> Result<(), AccessError> {
        check_range(offset, data.len(), CONFIG_SIZE as u64)?;
        let o = offset as usize;
        match f {
            Func::Pf => {
                let mut g = lock(&self.inner);
                let s = layout::SRIOV;
                let ctrl_before = g.pf_cfg.r16(s + sriov::CTRL);
                let num_before = g.pf_cfg.r16(s + sriov::NUM_VFS);
                let page_before = g.pf_cfg.r32(s + sriov::SYSTEM_PAGE_SIZE);
                g.pf_cfg.write(o, data);
                // NumVFs and System Page Size may only change while VF Enable is clear.
                if ctrl_before & sriov::CTRL_VF_ENABLE != 0 {
                    g.pf_cfg.set16(s + sriov::NUM_VFS, num_before);
                    g.pf_cfg.init32(s + sriov::SYSTEM_PAGE_SIZE, page_before);
                }
                // System Page Size must be exactly one supported size.
                if g.pf_cfg.r32(s + sriov::SYSTEM_PAGE_SIZE).count_ones() != 1 {
                    g.pf_cfg.init32(s + sriov::SYSTEM_PAGE_SIZE, page_before);
                }
                if wrote_bits(o, data, layout::PCIE + pcie::DEVCTL, pcie::DEVCTL_FLR) {
                    drop(g);
                    self.reset_pf();
                    return Ok(());
                }
                let ctrl = g.pf_cfg.r16(s + sriov::CTRL);
                let changed = self.apply_sriov(&mut g, ctrl_before, ctrl);
                drop(g);
                if let Some(n) = changed {
                    self.notify(n);
                }
            }
            Func::Vf(v) => {
                let mut g = lock(&self.inner);
                self.sync_vf(&mut g, v)?;
                let vf_fn = &mut g.vfs[v as usize];
                vf_fn.presented.write(o, data);
                vf_fn.raw.write(o, data);
                let bm = vf_fn.presented.r16(off::COMMAND) & cmd::BUS_MASTER != 0;
                let flr = wrote_bits(o, data, layout::PCIE + pcie::DEVCTL, pcie::DEVCTL_FLR);
                let hw = pf::vf_hw_status(v as usize);
                let cur = VfHwStatus::from_bits_retain(self.bar0.read32(hw));
                self.bar0.write32(
                    hw,
                    cur.difference(VfHwStatus::BUS_MASTER)
                        .union(if bm {
                            VfHwStatus::BUS_MASTER
                        } else {
                            VfHwStatus::empty()
                        })
                        .bits(),
                );
                drop(g);
                if flr {
                    self.flr_vf(v);
                }
            }
        }
        Ok(())
    }

    /// Applies an SR-IOV control change; returns the new NumVFs if VF Enable toggled.
    fn apply_sriov(&self, g: &mut Inner, before: u16, now: u16) -> Option<u16> {
        let s = layout::SRIOV;
        let was = before & sriov::CTRL_VF_ENABLE != 0;
        let mut is = now & sriov::CTRL_VF_ENABLE != 0;
        let num = g.pf_cfg.r16(s + sriov::NUM_VFS);
        if is && !was && (num == 0 || num > self.board.total_vfs) {
            // Enabling with an invalid NumVFs enables nothing.
            g.pf_cfg
                .set16(s + sriov::CTRL, now & !sriov::CTRL_VF_ENABLE);
            is = false;
        }
        let mse = now & sriov::CTRL_VF_MSE != 0;
        let visible = if is { num } else { 0 };
        self.bar0.write32(
            pf::SRIOV_CTRL.offset(),
            SriovCtrl::new(is, mse, visible).bits(),
        );
        if is == was {
            return None;
        }
        g.vfs.clear();
        if is {
            for v in 0..num {
                let vectors = (self.bank(v, vf_bank::VECTOR_COUNT) as u16).max(1);
                let raw = pci::vf_config(vectors);
                let presented = pci::vf_presented(&raw);
                g.vfs.push(VfFn {
                    raw,
                    presented,
                    msix: Msix::new(vectors),
                });
            }
        }
        Some(visible)
    }

    fn notify(&self, n: u16) {
        if let Some(tx) = lock(&self.sriov_notify).as_ref() {
            let _ = tx.send(n);
        }
    }

    /// Function level reset of a VF: interrupts and config state reset here, then the firmware
    /// clears the VF's queues and memory. Waits (bounded) for the firmware to finish.
    pub fn flr_vf(&self, v: u16) -> bool {
        {
            let mut g = lock(&self.inner);
            let Some(f) = g.vfs.get_mut(v as usize) else {
                return false;
            };
            f.msix.reset();
            f.presented.set16(off::COMMAND, 0);
            f.raw.set16(off::COMMAND, 0);
            let devctl = f.presented.r16(layout::PCIE + pcie::DEVCTL) & !pcie::DEVCTL_FLR;
            f.presented.set16(layout::PCIE + pcie::DEVCTL, devctl);
            f.raw.set16(layout::PCIE + pcie::DEVCTL, devctl);
        }
        let hw = pf::vf_hw_status(v as usize);
        self.bar0.write32(hw, VfHwStatus::FLR_PENDING.bits());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if self.bar0.read32(hw) & VfHwStatus::FLR_PENDING.bits() == 0 {
                return true;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        false
    }

    /// Resets the whole device: SR-IOV off, config space and MSI-X to power-on state, device
    /// memory cleared, and the firmware restarted. Waits (bounded) until it is ready again.
    pub fn reset_pf(&self) {
        let had_vfs = {
            let mut g = lock(&self.inner);
            let had = !g.vfs.is_empty();
            g.vfs.clear();
            g.pf_cfg = pci::pf_config(self.board.total_vfs);
            g.pf_msix.reset();
            g.lock_owner = 0;
            had
        };
        self.bar0.write32(pf::SRIOV_CTRL.offset(), 0);
        self.bar0.write32(pf::MBOX_LOCK.offset(), 0);
        {
            let mut m = lock(&self.devmem);
            let n = self.board.mem_granules;
            m.scrub(0, n);
        }
        self.bar0.write32(pf::DEV_STATUS.offset(), 0);
        self.fw_reset.store(true, Ordering::Release);
        if had_vfs {
            self.notify(0);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && self.fw_reset.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_micros(200));
        }
        while Instant::now() < deadline
            && self.bar0.read32(pf::DEV_STATUS.offset()) & regs::DevStatus::READY.bits() == 0
        {
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    // ---- BARs -----------------------------------------------------------------------------

    /// Reads a BAR region.
    pub fn bar_read(
        &self,
        f: Func,
        idx: u32,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), AccessError> {
        let size = self.region_size(f, idx).ok_or(AccessError::NoRegion)?;
        check_range(offset, buf.len(), size)?;
        if idx == region::BAR0 && !(offset.is_multiple_of(4) && buf.len().is_multiple_of(4)) {
            // Registers are dwords. A narrower or unaligned read returns the addressed byte
            // lanes of the dwords it touches, as on silicon: never an error, which some VMMs
            // cannot pass back to a vCPU. BAR0 sizes are dword multiples, so this stays inside.
            let start = offset & !3;
            let end = (offset + buf.len() as u64 + 3) & !3;
            let mut words = vec![0u8; (end - start) as usize];
            self.bar_read(f, idx, start, &mut words)?;
            let at = (offset - start) as usize;
            buf.copy_from_slice(&words[at..at + buf.len()]);
            return Ok(());
        }
        match (f, idx) {
            (Func::Pf, region::BAR0) => self.pf_bar0_read(offset as usize, buf),
            (Func::Vf(v), region::BAR0) => {
                self.vf_bar0_access(v, offset as usize, Access::Read(buf))
            }
            (Func::Vf(v), region::BAR2) => self.vf_mem_access(v, offset, Access::Read(buf)),
            _ => Err(AccessError::NoRegion),
        }
    }

    /// Writes a BAR region. `conn` identifies the requester (for the mailbox semaphore).
    pub fn bar_write(
        &self,
        f: Func,
        idx: u32,
        offset: u64,
        data: &[u8],
        conn: u64,
    ) -> Result<(), AccessError> {
        let size = self.region_size(f, idx).ok_or(AccessError::NoRegion)?;
        check_range(offset, data.len(), size)?;
        match (f, idx) {
            (Func::Pf, region::BAR0) => self.pf_bar0_write(offset as usize, data, conn),
            (Func::Vf(v), region::BAR0) => {
                let mut copy = data.to_vec();
                self.vf_bar0_access(v, offset as usize, Access::Write(&mut copy))
            }
            (Func::Vf(v), region::BAR2) => {
                let mut copy = data.to_vec();
                self.vf_mem_access(v, offset, Access::Write(&mut copy))
            }
            _ => Err(AccessError::NoRegion),
        }
    }

    fn pf_bar0_read(&self, o: usize, buf: &mut [u8]) -> Result<(), AccessError> {
        if pf::MSIX_TABLE.contains(o as u64, buf.len() as u64)
            || pf::MSIX_PBA.contains(o as u64, buf.len() as u64)
        {
            let g = lock(&self.inner);
            for_words(o, buf.len(), |w, i| {
                let v = if pf::MSIX_TABLE.contains(w as u64, 4) {
                    g.pf_msix
                        .table_read(w - pf::MSIX_TABLE.start())
                        .unwrap_or(0)
                } else {
                    g.pf_msix.pba_read(w - pf::MSIX_PBA.start())
                };
                put(buf, i, v);
            })?;
            return Ok(());
        }
        self.bar0.read(o, buf);
        // A trapped read completes like a PCIe read: later accesses come after it.
        shared_abi::ordering::observe();
        Ok(())
    }

    fn pf_bar0_write(&self, o: usize, data: &[u8], conn: u64) -> Result<(), AccessError> {
        // The request buffer takes any byte writes; registers take whole dwords.
        if pf::MBOX_REQ.contains(o as u64, data.len() as u64) {
            self.bar0.write(o, data);
            return Ok(());
        }
        if !(o.is_multiple_of(4) && data.len().is_multiple_of(4)) {
            // Registers take whole dwords; a narrower write is dropped and counted.
            self.pf_refused_writes.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        for_words(o, data.len(), |w, i| {
            let v = get(data, i);
            if w == pf::MBOX_LOCK.offset() {
                self.mbox_lock_write(v, conn);
            } else if pf::MSIX_TABLE.contains(w as u64, 4) {
                let mut g = lock(&self.inner);
                let (en, fm) = msix_ctl(&g.pf_cfg);
                g.pf_msix.table_write(w - pf::MSIX_TABLE.start(), v, en, fm);
            } else if pf::host_writable(w as u64) {
                // Trapped writes arrive in order, like posted PCIe writes: each one publishes
                // what came before it (the request bytes before the doorbell).
                self.bar0.publish32(w, v);
            } else {
                self.pf_refused_writes.fetch_add(1, Ordering::Relaxed);
            }
        })
    }

    /// The mailbox semaphore: a nonzero write acquires if free; 0 from the owner releases.
    fn mbox_lock_write(&self, token: u32, conn: u64) {
        let mut g = lock(&self.inner);
        let off = pf::MBOX_LOCK.offset();
        if token == 0 {
            if g.lock_owner == conn {
                self.bar0.write32(off, 0);
                g.lock_owner = 0;
            }
        } else if self.bar0.cas32(off, 0, token) {
            g.lock_owner = conn;
        }
    }

    /// A client connection went away: release what it held.
    pub fn client_gone(&self, conn: u64) {
        let mut g = lock(&self.inner);
        if g.lock_owner == conn {
            g.lock_owner = 0;
            self.bar0.write32(pf::MBOX_LOCK.offset(), 0);
        }
    }

    fn vf_bar0_access(&self, v: u16, o: usize, acc: Access<'_>) -> Result<(), AccessError> {
        let _vu = lock(&self.vu);
        let mut g = lock(&self.inner);
        self.sync_vf(&mut g, v)?;
        let state = self.vf_state(v);
        let enabled = state == Some(VfState::Enabled);
        let qcount = self.bank(v, vf_bank::QUEUE_COUNT) as usize;
        let qbase = self.bank(v, vf_bank::QUEUE_BASE) as usize;
        let (en, fm) = msix_ctl(&g.vfs[v as usize].presented);
        let msix = &mut g.vfs[v as usize].msix;
        let mut faults: Vec<VfFault> = Vec::new();
        let mut irqs: Vec<usize> = Vec::new();
        let len = acc.len();
        let result = match acc {
            Access::Read(buf) => for_words(o, len, |w, i| {
                let val = if vf::QUEUES.contains(w as u64, 4) {
                    let q = (w - vf::QUEUES.start()) / regs::QUEUE_REGS_SIZE;
                    let r = (w - vf::QUEUES.start()) % regs::QUEUE_REGS_SIZE;
                    if !enabled {
                        faults.push(VfFault::NotEnabled);
                        u32::MAX
                    } else if q >= qcount || !self.owns_queue(v, qbase + q) {
                        faults.push(VfFault::QueueNotOwned);
                        u32::MAX
                    } else if r == queue::OWNER.offset() {
                        0
                    } else {
                        self.bar0.read32(pf::queue(qbase + q) + r)
                    }
                } else if vf::MSIX_TABLE.contains(w as u64, 4) {
                    msix.table_read(w - vf::MSIX_TABLE.start())
                        .unwrap_or_else(|| {
                            faults.push(VfFault::VectorNotOwned);
                            u32::MAX
                        })
                } else if vf::MSIX_PBA.contains(w as u64, 4) {
                    msix.pba_read(w - vf::MSIX_PBA.start())
                } else {
                    self.vf_id_reg(v, w, state)
                };
                put(buf, i, val);
            }),
            // Registers take whole dwords: a narrower or unaligned write is dropped and
            // counted as a bad access on this VF.
            Access::Write(_) if !(o.is_multiple_of(4) && len.is_multiple_of(4)) => {
                faults.push(VfFault::BadAccess);
                Ok(())
            }
            Access::Write(data) => for_words(o, len, |w, i| {
                let val = get(data, i);
                if vf::QUEUES.contains(w as u64, 4) {
                    let q = (w - vf::QUEUES.start()) / regs::QUEUE_REGS_SIZE;
                    let r = (w - vf::QUEUES.start()) % regs::QUEUE_REGS_SIZE;
                    if !enabled {
                        faults.push(VfFault::NotEnabled);
                    } else if q >= qcount || !self.owns_queue(v, qbase + q) {
                        faults.push(VfFault::QueueNotOwned);
                    } else if !queue::vf_writable(r as u64) {
                        faults.push(VfFault::ReadOnly);
                    } else {
                        self.bar0.write32(pf::queue(qbase + q) + r, val);
                    }
                } else if vf::MSIX_TABLE.contains(w as u64, 4) {
                    if !msix.table_write(w - vf::MSIX_TABLE.start(), val, en, fm) {
                        faults.push(VfFault::VectorNotOwned);
                    }
                } else if w == vf::IRQ_TRIGGER.offset() {
                    if !enabled {
                        faults.push(VfFault::NotEnabled);
                    } else if val as usize >= msix.len()
                        || val >= self.bank(v, vf_bank::VECTOR_COUNT)
                    {
                        faults.push(VfFault::VectorNotOwned);
                    } else {
                        irqs.push(val as usize);
                    }
                } else {
                    faults.push(VfFault::ReadOnly);
                }
            }),
        };
        for i in irqs {
            msix.fire(i, en, fm);
        }
        drop(g);
        for f in faults {
            self.fault(v, f);
        }
        result
    }

    fn vf_id_reg(&self, v: u16, w: usize, state: Option<VfState>) -> u32 {
        let r = regs::Reg(w as u32);
        let mem = (self.bank(v, vf_bank::MEM_GRANULES) as u64) << self.board.granule_shift;
        match r {
            vf::MAGIC => regs::VF_MAGIC,
            vf::ABI_VERSION => shared_abi::abi_version_word(),
            vf::VF_INDEX => v as u32,
            vf::STATUS => {
                let mut s = VfStatus::empty();
                if state == Some(VfState::Enabled) {
                    s |= VfStatus::ENABLED;
                }
                if state == Some(VfState::Resetting) {
                    s |= VfStatus::RESETTING;
                }
                if self.bank(v, vf_bank::FAULT_COUNT) != 0 {
                    s |= VfStatus::FAULTED;
                }
                s.bits()
            }
            vf::ENGINE_MASK => self.bank(v, vf_bank::ENGINE_MASK),
            vf::MEM_SIZE_LO => mem as u32,
            vf::MEM_SIZE_HI => (mem >> 32) as u32,
            vf::QUEUE_COUNT => self.bank(v, vf_bank::QUEUE_COUNT),
            vf::VECTOR_COUNT => self.bank(v, vf_bank::VECTOR_COUNT),
            vf::QOS_WEIGHT => self.bank(v, vf_bank::QOS_WEIGHT),
            vf::FAULT_CODE => self.bank(v, vf_bank::FAULT_CODE),
            vf::FAULT_COUNT => self.bank(v, vf_bank::FAULT_COUNT),
            _ => 0,
        }
    }

    /// VF BAR2: VF-local addresses are translated through the VF's table to device memory.
    fn vf_mem_access(&self, v: u16, offset: u64, mut acc: Access<'_>) -> Result<(), AccessError> {
        let _vu = lock(&self.vu);
        {
            let g = lock(&self.inner);
            if g.vfs.get(v as usize).is_none() {
                return Err(AccessError::NoFunction);
            }
        }
        let shift = self.board.granule_shift;
        let gsize = 1u64 << shift;
        let enabled = self.vf_state(v) == Some(VfState::Enabled);
        let granules = self.bank(v, vf_bank::MEM_GRANULES) as u64;
        let tt_base = self.bank(v, vf_bank::TT_BASE) as usize;
        let tt_len = self.bank(v, vf_bank::TT_LEN) as u64;
        let mut done = 0usize;
        let total = acc.len();
        let mut fault = None;
        let mut mem = lock(&self.devmem);
        while done < total {
            let addr = offset + done as u64;
            let local = addr >> shift;
            let within = (addr & (gsize - 1)) as usize;
            let n = ((gsize as usize) - within).min(total - done);
            let dev_granule = if !enabled {
                fault = Some(VfFault::NotEnabled);
                None
            } else if local >= granules || local >= tt_len {
                fault = Some(VfFault::MemOutOfWindow);
                None
            } else {
                let e = TtEntry(self.bar0.read32(pf::tt_entry(tt_base + local as usize)));
                if e.granule().is_none() {
                    fault = Some(VfFault::TranslationMiss);
                }
                e.granule()
            };
            match (&mut acc, dev_granule) {
                (Access::Read(buf), Some(g)) => {
                    mem.read(g, within, &mut buf[done..done + n]);
                }
                (Access::Read(buf), None) => buf[done..done + n].fill(0xFF),
                (Access::Write(data), Some(g)) => {
                    mem.write(g, within, &data[done..done + n]);
                }
                (Access::Write(_), None) => {}
            }
            done += n;
        }
        drop(mem);
        if let Some(f) = fault {
            self.fault(v, f);
        }
        Ok(())
    }

    // ---- interrupts -------------------------------------------------------------------------

    /// Installs eventfds for MSI-X vectors of a function.
    pub fn set_msix_eventfds(
        &self,
        f: Func,
        start: u32,
        count: u32,
        fds: Vec<OwnedFd>,
    ) -> Result<(), AccessError> {
        let mut g = lock(&self.inner);
        let m = self.msix_of(&mut g, f)?;
        m.set_eventfds(start as usize, count as usize, fds)
            .map_err(|_| AccessError::OutOfRange)
    }

    /// Drops all eventfds of a function.
    pub fn clear_msix(&self, f: Func) {
        let mut g = lock(&self.inner);
        if let Ok(m) = self.msix_of(&mut g, f) {
            m.clear_eventfds();
        }
    }

    /// SET_IRQS MASK/UNMASK.
    pub fn mask_msix(
        &self,
        f: Func,
        start: u32,
        count: u32,
        masked: bool,
    ) -> Result<(), AccessError> {
        let mut g = lock(&self.inner);
        let (en, fm) = self.msix_ctl_of(&mut g, f)?;
        let m = self.msix_of(&mut g, f)?;
        m.set_client_mask(start as usize, count as usize, masked, en, fm)
            .map_err(|_| AccessError::OutOfRange)
    }

    /// Raises vectors (SET_IRQS TRIGGER from the client, or device-internal sources).
    pub fn fire_msix(&self, f: Func, start: u32, count: u32) -> Result<(), AccessError> {
        let mut g = lock(&self.inner);
        let (en, fm) = self.msix_ctl_of(&mut g, f)?;
        let m = self.msix_of(&mut g, f)?;
        if (start as usize)
            .checked_add(count as usize)
            .is_none_or(|e| e > m.len())
        {
            return Err(AccessError::OutOfRange);
        }
        for i in start..start + count {
            m.fire(i as usize, en, fm);
        }
        Ok(())
    }

    /// Interrupts delivered to eventfds of a function so far.
    pub fn irqs_delivered(&self, f: Func) -> u64 {
        let mut g = lock(&self.inner);
        self.msix_of(&mut g, f).map_or(0, |m| m.delivered)
    }

    fn msix_ctl_of(&self, g: &mut Inner, f: Func) -> Result<(bool, bool), AccessError> {
        match f {
            Func::Pf => Ok(msix_ctl(&g.pf_cfg)),
            Func::Vf(v) => {
                self.sync_vf(g, v)?;
                Ok(msix_ctl(&g.vfs[v as usize].presented))
            }
        }
    }

    fn msix_of<'a>(&self, g: &'a mut Inner, f: Func) -> Result<&'a mut Msix, AccessError> {
        match f {
            Func::Pf => Ok(&mut g.pf_msix),
            Func::Vf(v) => {
                self.sync_vf(g, v)?;
                Ok(&mut g.vfs[v as usize].msix)
            }
        }
    }

    // ---- what the firmware's own writes set off -----------------------------------------------

    /// The memory scrubber: zero granules, then report done (or error, out of range).
    pub fn scrub(&self, base: u32, count: u32) -> bool {
        lock(&self.devmem).scrub(base, count)
    }

    /// Handles a firmware write with a hardware side effect. Returns true if consumed.
    pub fn firmware_side_effect(&self, off: usize, val: u32) -> bool {
        if off == pf::SCRUB_CTRL.offset() && val & ScrubCtrl::GO.bits() != 0 {
            let base = self.bar0.read32(pf::SCRUB_BASE.offset());
            let count = self.bar0.read32(pf::SCRUB_COUNT.offset());
            let ok = self.scrub(base, count);
            let st = if ok {
                ScrubCtrl::DONE
            } else {
                ScrubCtrl::DONE | ScrubCtrl::ERROR
            };
            self.bar0.write32(off, st.bits());
            return true;
        }
        if off == pf::IRQ_RAISE.offset() {
            let _ = self.fire_msix(Func::Pf, val, 1);
            return true;
        }
        if off == pf::VF_IRQ_RAISE.offset() {
            let (v, vec) = ((val >> 16) as u16, val & 0xFFFF);
            if vec < self.bank(v, vf_bank::VECTOR_COUNT) {
                let _ = self.fire_msix(Func::Vf(v), vec, 1);
            }
            return true;
        }
        false
    }

    /// Whether physical queue `q` is VF `v`'s: its OWNER register, which the firmware sets
    /// last when it grants a queue and clears first when it takes one back, is the authority.
    fn owns_queue(&self, v: u16, q: usize) -> bool {
        q < self.board.queues as usize
            && self.bar0.read32(queue::OWNER.at(pf::queue(q))) == v as u32 + 1
    }

    /// A firmware write to the register file, as the bus delivers it: hardware side effects
    /// first; writes to what the virtualization unit enforces are ordered with VF accesses.
    pub fn firmware_write32(&self, off: usize, val: u32) {
        if self.firmware_side_effect(off, val) {
            return;
        }
        let enforced = [pf::VF_BANKS, pf::TT_POOL, pf::QUEUES]
            .iter()
            .any(|w| w.contains(off as u64, 4));
        let _vu = enforced.then(|| lock(&self.vu));
        self.bar0.write32(off, val);
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

enum Access<'a> {
    Read(&'a mut [u8]),
    Write(&'a mut [u8]),
}

impl Access<'_> {
    fn len(&self) -> usize {
        match self {
            Access::Read(b) => b.len(),
            Access::Write(b) => b.len(),
        }
    }
}

/// Whether a config write of `data` at `o` sets any of `mask` in the 16-bit register at `reg`.
/// Used for write-only bits (Initiate FLR) that never read back.
fn wrote_bits(o: usize, data: &[u8], reg: usize, mask: u16) -> bool {
    mask.to_le_bytes().iter().enumerate().any(|(i, &m)| {
        let at = reg + i;
        at >= o && at < o + data.len() && data[at - o] & m != 0
    })
}

/// (MSI-X may be sent, function mask). An MSI-X message is a memory write: a function that is
/// not a bus master (Command bit 2) holds its vectors pending, as silicon must.
fn msix_ctl(c: &ConfigSpace) -> (bool, bool) {
    let ctl = c.r16(layout::MSIX + 2);
    let master = c.r16(0x04) & (1 << 2) != 0;
    (ctl & 0x8000 != 0 && master, ctl & 0x4000 != 0)
}

fn check_range(offset: u64, len: usize, size: u64) -> Result<(), AccessError> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size && len > 0 => Ok(()),
        _ => Err(AccessError::OutOfRange),
    }
}

/// Calls `f(word_offset, index)` for each dword of an aligned, dword-multiple access.
fn for_words(o: usize, len: usize, mut f: impl FnMut(usize, usize)) -> Result<(), AccessError> {
    if !o.is_multiple_of(4) || !len.is_multiple_of(4) {
        return Err(AccessError::BadSize);
    }
    for i in 0..len / 4 {
        f(o + i * 4, i);
    }
    Ok(())
}

fn put(buf: &mut [u8], i: usize, v: u32) {
    buf[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
}

fn get(buf: &[u8], i: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&buf[i * 4..i * 4 + 4]);
    u32::from_le_bytes(w)
}
