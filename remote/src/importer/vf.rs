//! The imported VF as its VMM sees it: a PCI function of its own (configuration space,
//! MSI-X, queue registers, DMA space), served over vfio-user by the same protocol handling as
//! the local device ([`sim::vfio_user::Model`]). What is queue traffic stays here (the pump
//! runs the rings); the VF's own registers and its device memory window are the real VF's,
//! reached over the link.
use super::pump::Req;
use shared_abi::regs::{self, queue, vf, VfStatus};
use shared_abi::resources::VfFault;
use sim::config_space::{cmd, off, ConfigSpace, CONFIG_SIZE};
use sim::device::{region, AccessError, Func};
use sim::dma::Space;
use sim::msix::{Msix, Signals};
use sim::pci::{layout, msix, msix_ctl, msix_may_send, pcie};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// One queue's registers, as the VF's driver programs them.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct QueueRegs {
    pub sq_base: u64,
    pub sq_size: u32,
    pub sq_tail: u32,
    pub sq_head: u32,
    pub cq_base: u64,
    pub cq_size: u32,
    pub cq_head: u32,
    pub cq_tail: u32,
    pub vector: u32,
    pub control: u32,
    pub status: u32,
    /// Bumped on every CONTROL write and reset: the pump drops what it knew of the queue.
    pub epoch: u32,
}

/// What the function's registers hold here.
#[derive(Debug)]
pub(super) struct Regs {
    pub cfg: ConfigSpace,
    pub msix: Msix,
    pub queues: Vec<QueueRegs>,
    /// Faults recorded here (the link), on top of the real VF's: (count, last code).
    pub faults: (u32, u32),
    /// The VF register block as last read from the real VF, answered while the link is down.
    pub cache: Vec<u32>,
}

/// Link counters, for `accel-remote stats` and `accelctl`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Jobs completed through the link.
    pub jobs: AtomicU64,
    /// Host bytes sent with jobs.
    pub bytes_out: AtomicU64,
    /// Host bytes that came back with completions.
    pub bytes_in: AtomicU64,
    /// Links made after the first.
    pub reconnects: AtomicU64,
    /// Jobs submitted again after a reconnect.
    pub resubmitted: AtomicU64,
    /// Jobs completed LINK_DOWN (the link stayed down past its limit).
    pub failed: AtomicU64,
    /// Register accesses forwarded.
    pub reg_accesses: AtomicU64,
    /// Jobs in flight now.
    pub inflight: AtomicU64,
    /// Last PING round trip, µs.
    pub rtt_us: AtomicU64,
}

/// The imported VF.
#[derive(Debug)]
pub struct RemoteVf {
    pub(super) regs: Mutex<Regs>,
    dma: Mutex<Option<Arc<Space>>>,
    owner: Mutex<Option<u64>>,
    to_pump: SyncSender<Req>,
    /// Whether the link is up now (register reads go over it only then).
    pub(super) up: AtomicBool,
    /// Whether the link has been down past its limit (jobs fail at once).
    pub(super) failed: AtomicBool,
    /// The session with the exporter.
    pub(super) session: AtomicU64,
    pub(super) queue_count: u32,
    pub(super) vectors: u32,
    /// How long a register read waits for the real VF's answer.
    read_wait: Duration,
    /// Counters.
    pub stats: Stats,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Requests the pump takes at most at once from the VMM's threads (writes are posted; past
/// this many unsent, more are dropped and counted as faults).
pub(super) const REQUESTS: usize = 4096;

impl RemoteVf {
    /// A VF with `queues` queues and `vectors` MSI-X vectors (as the real VF has), whose
    /// forwarded accesses go to the pump through a channel; the pump's end is returned.
    pub(super) fn new(
        queues: u32,
        vectors: u32,
        cache: Vec<u32>,
        read_wait: Duration,
    ) -> (Arc<Self>, Receiver<Req>) {
        let (tx, rx) = std::sync::mpsc::sync_channel(REQUESTS);
        let vectors = vectors.clamp(1, shared_abi::pci::VF_MAX_MSIX_VECTORS as u32);
        let queues = queues.min(vf::QUEUES.len / regs::QUEUE_REGS_SIZE as u32);
        let raw = sim::pci::vf_config(vectors as u16);
        let vf = RemoteVf {
            regs: Mutex::new(Regs {
                cfg: sim::pci::vf_presented(&raw),
                msix: Msix::new(vectors as u16),
                queues: vec![QueueRegs::default(); queues as usize],
                faults: (0, 0),
                cache,
            }),
            dma: Mutex::new(None),
            owner: Mutex::new(None),
            to_pump: tx,
            up: AtomicBool::new(true),
            failed: AtomicBool::new(false),
            session: AtomicU64::new(0),
            queue_count: queues,
            vectors,
            read_wait,
            stats: Stats::default(),
        };
        (Arc::new(vf), rx)
    }

    /// The link's state: `up`, `down` (reconnecting; jobs wait) or `failed` (down past its
    /// limit; jobs fail).
    pub fn link_state(&self) -> &'static str {
        if self.up.load(Ordering::Acquire) {
            "up"
        } else if self.failed.load(Ordering::Acquire) {
            "failed"
        } else {
            "down"
        }
    }

    /// The session with the exporter (0: none).
    pub fn session(&self) -> u64 {
        self.session.load(Ordering::Relaxed)
    }

    /// The DMA space the VMM mapped, if any.
    pub(super) fn space(&self) -> Option<Arc<Space>> {
        lock(&self.dma).clone()
    }

    /// Records a fault of the imported VF itself (not the real VF's).
    pub(super) fn fault(&self, code: VfFault) {
        let mut g = lock(&self.regs);
        g.faults = (g.faults.0.saturating_add(1), code as u32);
    }

    /// Raises vector `v` as the device does (held pending while the function may not send).
    pub(super) fn fire(&self, v: u32) {
        let mut out = Signals::default();
        {
            let mut g = lock(&self.regs);
            let (en, fm) = msix_ctl(&g.cfg);
            g.msix.fire(v as usize, en, fm, &mut out);
        }
        out.send();
    }

    /// A register of the VF block: from the real VF over the link (the cache while the link
    /// is down), with this side's faults added to the real VF's.
    fn vf_reg_read(&self, w: u64) -> u32 {
        let idx = (w / 4) as usize;
        let remote = self.remote_read(crate::wire::space::BAR0, w);
        if let Some(v) = remote {
            if let Some(c) = lock(&self.regs).cache.get_mut(idx) {
                *c = v;
            }
        }
        let g = lock(&self.regs);
        let v = remote.unwrap_or_else(|| g.cache.get(idx).copied().unwrap_or(u32::MAX));
        let (count, code) = g.faults;
        match w {
            _ if w == vf::STATUS.offset() as u64 && count > 0 => v | VfStatus::FAULTED.bits(),
            _ if w == vf::FAULT_COUNT.offset() as u64 => v.saturating_add(count),
            _ if w == vf::FAULT_CODE.offset() as u64
                && count > 0
                && !self.up.load(Ordering::Acquire) =>
            {
                code
            }
            _ if w == vf::QUEUE_COUNT.offset() as u64 => self.queue_count,
            _ => v,
        }
    }

    /// A posted write to the real VF (registers or device memory): it goes out in order
    /// with everything else the VMM does, and nobody waits for it.
    fn post(&self, space: u32, offset: u64, value: u32) {
        self.stats.reg_accesses.fetch_add(1, Ordering::Relaxed);
        match self.to_pump.try_send(Req::Write {
            space,
            offset,
            value,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.fault(VfFault::LinkDown)
            }
        }
    }

    fn queue_read(&self, g: &Regs, q: usize, r: u64) -> u32 {
        let Some(x) = g.queues.get(q) else {
            return u32::MAX;
        };
        match r {
            _ if r == queue::SQ_BASE_LO.offset() as u64 => x.sq_base as u32,
            _ if r == queue::SQ_BASE_HI.offset() as u64 => (x.sq_base >> 32) as u32,
            _ if r == queue::SQ_SIZE.offset() as u64 => x.sq_size,
            _ if r == queue::SQ_TAIL.offset() as u64 => x.sq_tail,
            _ if r == queue::SQ_HEAD.offset() as u64 => x.sq_head,
            _ if r == queue::CQ_BASE_LO.offset() as u64 => x.cq_base as u32,
            _ if r == queue::CQ_BASE_HI.offset() as u64 => (x.cq_base >> 32) as u32,
            _ if r == queue::CQ_SIZE.offset() as u64 => x.cq_size,
            _ if r == queue::CQ_HEAD.offset() as u64 => x.cq_head,
            _ if r == queue::CQ_TAIL.offset() as u64 => x.cq_tail,
            _ if r == queue::MSIX_VECTOR.offset() as u64 => x.vector,
            _ if r == queue::CONTROL.offset() as u64 => x.control,
            _ if r == queue::STATUS.offset() as u64 => x.status,
            _ => 0,
        }
    }

    fn queue_write(g: &mut Regs, q: usize, r: u64, v: u32) -> bool {
        let Some(x) = g.queues.get_mut(q) else {
            return false;
        };
        let lo = |b: u64| (b & !0xFFFF_FFFF) | v as u64;
        let hi = |b: u64| (b & 0xFFFF_FFFF) | (v as u64) << 32;
        match r {
            _ if r == queue::SQ_BASE_LO.offset() as u64 => x.sq_base = lo(x.sq_base),
            _ if r == queue::SQ_BASE_HI.offset() as u64 => x.sq_base = hi(x.sq_base),
            _ if r == queue::SQ_SIZE.offset() as u64 => x.sq_size = v,
            _ if r == queue::SQ_TAIL.offset() as u64 => x.sq_tail = v,
            _ if r == queue::CQ_BASE_LO.offset() as u64 => x.cq_base = lo(x.cq_base),
            _ if r == queue::CQ_BASE_HI.offset() as u64 => x.cq_base = hi(x.cq_base),
            _ if r == queue::CQ_SIZE.offset() as u64 => x.cq_size = v,
            _ if r == queue::CQ_HEAD.offset() as u64 => x.cq_head = v,
            _ if r == queue::MSIX_VECTOR.offset() as u64 => x.vector = v,
            _ if r == queue::CONTROL.offset() as u64 => {
                x.control = v;
                x.epoch = x.epoch.wrapping_add(1);
            }
            _ => return false,
        }
        true
    }

    fn bar0_read(&self, o: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        words(o, buf.len())?;
        for (i, chunk) in buf.chunks_mut(4).enumerate() {
            let w = o + 4 * i as u64;
            let v = if w < vf::QUEUES.offset as u64 {
                self.vf_reg_read(w)
            } else {
                let g = lock(&self.regs);
                if vf::QUEUES.contains(w, 4) {
                    let rel = w - vf::QUEUES.offset as u64;
                    let q = (rel / regs::QUEUE_REGS_SIZE as u64) as usize;
                    self.queue_read(&g, q, rel % regs::QUEUE_REGS_SIZE as u64)
                } else if vf::MSIX_TABLE.contains(w, 4) {
                    g.msix
                        .table_read((w - vf::MSIX_TABLE.offset as u64) as usize)
                        .unwrap_or(u32::MAX)
                } else if vf::MSIX_PBA.contains(w, 4) {
                    g.msix.pba_read((w - vf::MSIX_PBA.offset as u64) as usize)
                } else {
                    u32::MAX
                }
            };
            chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }

    fn bar0_write(&self, o: u64, data: &[u8]) -> Result<(), AccessError> {
        words(o, data.len())?;
        if !o.is_multiple_of(4) || !data.len().is_multiple_of(4) {
            self.fault(VfFault::BadAccess);
            return Ok(());
        }
        for (i, chunk) in data.chunks(4).enumerate() {
            let w = o + 4 * i as u64;
            let v = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            if w == vf::IRQ_TRIGGER.offset() as u64 {
                if v < self.vectors {
                    self.fire(v);
                } else {
                    self.fault(VfFault::VectorNotOwned);
                }
            } else if w < vf::QUEUES.offset as u64 {
                self.post(crate::wire::space::BAR0, w, v);
            } else {
                let mut out = Signals::default();
                let mut g = lock(&self.regs);
                let ok = if vf::QUEUES.contains(w, 4) {
                    let rel = w - vf::QUEUES.offset as u64;
                    let q = (rel / regs::QUEUE_REGS_SIZE as u64) as usize;
                    Self::queue_write(&mut g, q, rel % regs::QUEUE_REGS_SIZE as u64, v)
                } else if vf::MSIX_TABLE.contains(w, 4) {
                    let (en, fm) = msix_ctl(&g.cfg);
                    g.msix.table_write(
                        (w - vf::MSIX_TABLE.offset as u64) as usize,
                        v,
                        en,
                        fm,
                        &mut out,
                    )
                } else {
                    false
                };
                drop(g);
                out.send();
                if !ok {
                    self.fault(VfFault::ReadOnly);
                }
            }
        }
        Ok(())
    }

    /// Function level reset: this side's queues, interrupts and faults, then the real VF's.
    fn flr(&self) -> bool {
        {
            let mut g = lock(&self.regs);
            for q in &mut g.queues {
                *q = QueueRegs {
                    epoch: q.epoch.wrapping_add(1),
                    ..QueueRegs::default()
                };
            }
            g.msix.reset();
            g.faults = (0, 0);
            let c = g.cfg.r16(off::COMMAND);
            g.cfg
                .set16(off::COMMAND, c & !(cmd::BUS_MASTER | cmd::MEMORY));
            let m = g.cfg.r16(layout::MSIX + msix::CTRL);
            g.cfg.set16(
                layout::MSIX + msix::CTRL,
                m & !(msix::CTRL_ENABLE | msix::CTRL_FUNCTION_MASK),
            );
        }
        if !self.up.load(Ordering::Acquire) {
            return false;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if self.to_pump.try_send(Req::Reset { reply: tx }).is_err() {
            return false;
        }
        // A reset waits for the firmware on the far side: give it the link's time and more.
        rx.recv_timeout(self.read_wait + Duration::from_secs(5))
            .unwrap_or(false)
    }
}

/// Accesses are whole dwords inside the BAR (narrower reads are served from the dword).
fn words(o: u64, len: usize) -> Result<(), AccessError> {
    if len == 0
        || o.checked_add(len as u64)
            .is_none_or(|e| e > shared_abi::pci::VF_BAR0_SIZE)
    {
        return Err(AccessError::OutOfRange);
    }
    Ok(())
}

impl sim::vfio_user::Model for RemoteVf {
    fn config_read(&self, _f: Func, offset: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|e| e > CONFIG_SIZE as u64)
            || buf.is_empty()
        {
            return Err(AccessError::OutOfRange);
        }
        lock(&self.regs).cfg.read(offset as usize, buf);
        Ok(())
    }

    fn config_write(&self, _f: Func, offset: u64, data: &[u8]) -> Result<(), AccessError> {
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|e| e > CONFIG_SIZE as u64)
            || data.is_empty()
        {
            return Err(AccessError::OutOfRange);
        }
        let o = offset as usize;
        let devctl = layout::PCIE + pcie::DEVCTL;
        let flr = o <= devctl + 1
            && o + data.len() > devctl + 1
            && data[devctl + 1 - o] & (pcie::DEVCTL_FLR >> 8) as u8 != 0;
        let mut out = Signals::default();
        {
            let mut g = lock(&self.regs);
            let before = msix_ctl(&g.cfg);
            g.cfg.write(o, data);
            // Initiate FLR reads back as 0.
            let d = g.cfg.r16(devctl);
            g.cfg.set16(devctl, d & !pcie::DEVCTL_FLR);
            let now = msix_ctl(&g.cfg);
            if msix_may_send(now) && !msix_may_send(before) {
                g.msix.flush_pending(now.0, now.1, &mut out);
            }
        }
        out.send();
        if flr {
            self.flr();
        }
        Ok(())
    }

    fn bar_read(&self, _f: Func, idx: u32, offset: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        match idx {
            region::BAR0 => self.bar0_read(offset, buf),
            region::BAR2 => {
                if !offset.is_multiple_of(4) || !buf.len().is_multiple_of(4) {
                    buf.fill(0xFF);
                    self.fault(VfFault::BadAccess);
                    return Ok(());
                }
                for (i, chunk) in buf.chunks_mut(4).enumerate() {
                    let v = self.remote_read(crate::wire::space::BAR2, offset + 4 * i as u64);
                    chunk.copy_from_slice(&v.unwrap_or(u32::MAX).to_le_bytes());
                }
                Ok(())
            }
            _ => Err(AccessError::NoRegion),
        }
    }

    fn bar_write(
        &self,
        _f: Func,
        idx: u32,
        offset: u64,
        data: &[u8],
        _conn: u64,
    ) -> Result<(), AccessError> {
        match idx {
            region::BAR0 => self.bar0_write(offset, data),
            region::BAR2 => {
                if !offset.is_multiple_of(4) || !data.len().is_multiple_of(4) {
                    self.fault(VfFault::BadAccess);
                    return Ok(());
                }
                for (i, c) in data.chunks(4).enumerate() {
                    let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    self.post(crate::wire::space::BAR2, offset + 4 * i as u64, v);
                }
                Ok(())
            }
            _ => Err(AccessError::NoRegion),
        }
    }

    fn region_size(&self, _f: Func, idx: u32) -> Option<u64> {
        match idx {
            region::CONFIG => Some(CONFIG_SIZE as u64),
            region::BAR0 => Some(shared_abi::pci::VF_BAR0_SIZE),
            region::BAR2 => Some(shared_abi::pci::VF_BAR2_SIZE),
            _ => None,
        }
    }

    fn mmap_area(&self, _f: Func, _idx: u32) -> Option<(BorrowedFd<'_>, u64, u64)> {
        None
    }

    fn msix_count(&self, _f: Func) -> Result<u32, AccessError> {
        Ok(self.vectors)
    }

    fn set_msix_eventfds(
        &self,
        _f: Func,
        start: u32,
        count: u32,
        fds: Vec<OwnedFd>,
    ) -> Result<(), AccessError> {
        lock(&self.regs)
            .msix
            .set_eventfds(start as usize, count as usize, fds)
            .map_err(|_| AccessError::OutOfRange)
    }

    fn clear_msix(&self, _f: Func) {
        lock(&self.regs).msix.clear_eventfds();
    }

    fn signal_msix(&self, _f: Func, start: u32, count: u32) -> Result<(), AccessError> {
        let end = start.checked_add(count).ok_or(AccessError::OutOfRange)?;
        if end > self.vectors {
            return Err(AccessError::OutOfRange);
        }
        let mut out = Signals::default();
        {
            let mut g = lock(&self.regs);
            for i in start..end {
                g.msix.signal(i as usize, &mut out);
            }
        }
        out.send();
        Ok(())
    }

    fn mask_msix(&self, _f: Func, start: u32, count: u32, masked: bool) -> Result<(), AccessError> {
        let mut out = Signals::default();
        let r = {
            let mut g = lock(&self.regs);
            let (en, fm) = msix_ctl(&g.cfg);
            g.msix
                .set_client_mask(start as usize, count as usize, masked, en, fm, &mut out)
                .map_err(|_| AccessError::OutOfRange)
        };
        out.send();
        r
    }

    fn reset(&self, _f: Func) -> bool {
        self.flr()
    }

    fn claim(&self, _f: Func, conn: u64) -> bool {
        *lock(&self.owner).get_or_insert(conn) == conn
    }

    fn disown(&self, _f: Func, conn: u64) {
        let mut o = lock(&self.owner);
        if *o == Some(conn) {
            *o = None;
        }
    }

    fn dma_space(&self, _f: Func, conn: u64) -> Option<Arc<Space>> {
        let mut d = lock(&self.dma);
        let s = d.get_or_insert_with(|| Arc::new(Space::new(conn)));
        (s.conn() == conn).then(|| s.clone())
    }

    fn release_dma(&self, _f: Func, conn: u64) {
        let gone = {
            let mut d = lock(&self.dma);
            match &*d {
                Some(s) if s.conn() == conn => d.take(),
                _ => None,
            }
        };
        if let Some(s) = gone {
            s.revoke();
        }
    }

    fn client_gone(&self, _conn: u64) {}
}

impl RemoteVf {
    /// A read of the real VF that waits for its answer (None: the link is down or slow).
    fn remote_read(&self, space: u32, offset: u64) -> Option<u32> {
        if !self.up.load(Ordering::Acquire) {
            return None;
        }
        self.stats.reg_accesses.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.to_pump
            .try_send(Req::Read {
                space,
                offset,
                reply: tx,
            })
            .ok()?;
        rx.recv_timeout(self.read_wait).ok().flatten()
    }
}
