//! The queue engine: hardware that polls every enabled VF's submission rings in host memory
//! (the polling patent: a doorbell is never needed), fetches each job through that VF's DMA
//! space, runs it, writes its completion and raises the queue's vector when asked.
//!
//! The board's engines are served by a pool of worker threads (`accel-sim --engine-threads`):
//! a worker takes any engine no other worker holds, runs that engine's turn, and moves on, so
//! engines run in parallel up to the host's cores. Within a turn the engine's owners share it
//! by deficit round robin on their QoS weights. A job runs in steps of at most `jobs::STEP`
//! bytes and an engine can switch to another VF's job between them, so a long job shares its
//! engine at a fine grain.
//!
//! The engine never waits on a tenant: a queue's rings are pinned, when it is armed, to the
//! memory they were in (mapped here or a memory file, never messages), so fetching a job and
//! writing its completion are memory accesses; a job step that would wait on the client
//! (memory reached through DMA_READ/DMA_WRITE) is parked on the client's own thread
//! (`dma::Space::park`) while its queue waits and every other queue goes on; the DMA table is
//! taken with `try_read`, never waited for.
//!
//! It reads only what the firmware programmed (banks, queue ownership) and what the VF wrote
//! into its own queue blocks. A job holds a grant (`jobs::Grant`) checked before every step:
//! once the VF is reset, resized or destroyed, or its translation registers or DMA client
//! change, the job stops with ABORTED and no byte of it moves after that.

use super::jobs::{JobCtx, Outcome, Step, Task, Tlb, STEP};
use super::*;
use crate::dma::{Direct, Space};
use shared_abi::jobs::{self, queue_status, Cqe, JobStatus, Sqe, SqeHead};
use shared_abi::regs::QueueCtrl;
use std::sync::atomic::AtomicU32;
use zerocopy::{FromBytes, IntoBytes};

/// Jobs one queue completes before the engine looks at the next (its completions, counters
/// and interrupt are published once per visit).
const BATCH: usize = 32;
/// An engine's turn: its owners run until they have used this much, or have nothing left to
/// run.
const TURN_NS: i64 = 200_000;
/// What the owner chosen next runs for before the choice is made again.
const QUANTUM: i64 = 20_000;
/// The least a job step or a completion is charged, in ns.
const MIN_CHARGE: u64 = 100;
/// How often each worker lets go of what stopped queues held.
const SWEEP: Duration = Duration::from_millis(100);
const MAX_VFS: usize = shared_abi::pci::MAX_VFS;

/// A job on its client's thread: the job and how it went, once it is over.
type ParkedSlot = Arc<Mutex<Option<(Task, Outcome)>>>;

/// What the engine knows of one physical queue.
#[derive(Debug, Default)]
struct Run {
    epoch: u32,
    vf: u16,
    armed: bool,
    failed: bool,
    /// The DMA space the queue was armed with, and its unmap count then.
    space: Option<Arc<Space>>,
    version: u64,
    sq: Option<(u64, Direct)>,
    sq_size: u32,
    cq: Option<(u64, Direct)>,
    cq_size: u32,
    head: u32,
    phase: u8,
    tail: u32,
    cq_phase: u8,
    /// The job taken from the ring and not yet complete.
    task: Option<Task>,
    /// Set while that job runs on its client's thread.
    parked: Option<ParkedSlot>,
    tlb: Tlb,
    /// Engine time not yet whole microseconds.
    ns: u64,
}

/// One engine's scheduling state.
#[derive(Debug)]
struct Sched {
    /// Per VF: engine time it got here, in ns scaled by 1000 / its weight (virtual time).
    vtime: Vec<u64>,
    /// The VFs that owned the engine at its last turn.
    members: u64,
    /// No owner's virtual time is let fall below this (it follows the running owners).
    floor: u64,
    /// Per VF: the queue its next turn starts at, so every queue gets turns.
    cursor: Vec<usize>,
}

/// The queue engine's state, shared by its workers.
#[derive(Debug)]
pub struct Engines {
    queues: Vec<Mutex<Run>>,
    sched: Vec<Mutex<Sched>>,
    /// Per VF: its 64-bit counters are read, added to and written back.
    counters: Vec<Mutex<()>>,
}

impl Engines {
    /// The engine state for `dev`.
    pub fn new(dev: &Device) -> Self {
        Engines {
            queues: (0..dev.board.queues).map(|_| Mutex::default()).collect(),
            sched: (0..dev.board.engines)
                .map(|_| {
                    Mutex::new(Sched {
                        vtime: vec![0; MAX_VFS],
                        members: 0,
                        floor: 0,
                        cursor: vec![0; MAX_VFS],
                    })
                })
                .collect(),
            counters: (0..MAX_VFS).map(|_| Mutex::default()).collect(),
        }
    }
}

/// One worker's own buffers.
#[derive(Debug)]
pub struct Worker {
    scratch: Vec<u8>,
    /// The engine this worker looks at first next pass.
    next: usize,
    /// The enabled VFs this pass, and one engine's owners (reused: a pass allocates nothing).
    vfs: Vec<Owner>,
    owners: Vec<Owner>,
    /// When this worker last let go of what stopped queues held.
    swept: Instant,
}

impl Worker {
    /// Worker `i` of `n`: workers start their passes at different engines.
    pub fn new(engines: &Engines, i: usize, n: usize) -> Self {
        Worker {
            scratch: vec![0; STEP],
            next: i * engines.sched.len() / n.max(1),
            vfs: Vec::with_capacity(MAX_VFS),
            owners: Vec::with_capacity(MAX_VFS),
            swept: Instant::now(),
        }
    }
}

/// A lock no other worker holds now (one a panicking worker left is taken as it is: the
/// state is plain numbers, and an engine must not stop for ever).
fn try_lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

fn queue_reg(pq: usize, r: regs::Reg) -> usize {
    r.at(pf::queue(pq))
}

fn ring_base(lo: u32, hi: u32) -> u64 {
    (hi as u64) << 32 | lo as u64
}

fn valid_ring(size: u32) -> bool {
    size.is_power_of_two() && (jobs::MIN_RING..=jobs::MAX_RING).contains(&size)
}

/// An enabled VF as one pass sees it: id, engine mask, weight.
type Owner = (u16, u32, i64);

impl Device {
    /// Starts the queue engine's `threads` workers (at least one); they run until `stop`.
    pub fn spawn_dataplane(
        self: &Arc<Self>,
        stop: Arc<AtomicBool>,
        threads: usize,
    ) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
        let engines = Arc::new(Engines::new(self));
        let n = threads.max(1);
        (0..n)
            .map(|i| {
                let (dev, stop, engines) = (self.clone(), stop.clone(), engines.clone());
                std::thread::Builder::new()
                    .name(format!("queue-engine-{i}"))
                    .spawn(move || {
                        let mut w = Worker::new(&engines, i, n);
                        let mut idle = crate::fwhost::Idle::default();
                        while !stop.load(Ordering::Acquire) {
                            if dev.dataplane_poll(&engines, &mut w) > 0 {
                                idle.busy();
                            } else {
                                idle.idle();
                            }
                        }
                    })
            })
            .collect()
    }

    /// Bumps a queue's epoch: its CONTROL register was written (and it may be enabled now).
    pub(super) fn queue_control_written(&self, pq: usize) {
        if let Some(e) = self.queue_epochs.get(pq) {
            e.fetch_add(1, Ordering::AcqRel);
        }
        self.mark_live(pq);
    }

    fn mark_live(&self, pq: usize) {
        if let Some(w) = self.queue_live.get(pq / 64) {
            w.fetch_or(1 << (pq % 64), Ordering::SeqCst);
        }
    }

    /// The VF-relative numbers of the queues in `[qbase, qbase + qcount)` whose CONTROL was
    /// written since the engine last saw them disabled, ascending, into `out`; how many.
    fn live_queues(&self, qbase: usize, qcount: usize, out: &mut [u16; 256]) -> usize {
        let mut n = 0;
        let end = (qbase + qcount).min(self.queue_live.len() * 64);
        let mut pq = qbase;
        while pq < end && n < out.len() {
            let word = self.queue_live[pq / 64].load(Ordering::SeqCst) >> (pq % 64);
            if word == 0 {
                pq = (pq / 64 + 1) * 64;
                continue;
            }
            let skip = word.trailing_zeros() as usize;
            pq += skip;
            if pq < end {
                out[n] = (pq - qbase) as u16;
                n += 1;
            }
            pq += 1;
        }
        n
    }

    /// Whether queue `pq` is enabled. A disabled one leaves the live set; a CONTROL write
    /// racing with that puts it back (the write is seen after the bit is cleared, or the
    /// bit is set again after it).
    fn queue_enabled(&self, pq: usize) -> bool {
        let enabled =
            |d: &Self| d.bar0.read32(queue_reg(pq, queue::CONTROL)) & QueueCtrl::ENABLE.bits() != 0;
        if enabled(self) {
            return true;
        }
        if let Some(w) = self.queue_live.get(pq / 64) {
            w.fetch_and(!(1 << (pq % 64)), Ordering::SeqCst);
        }
        if enabled(self) {
            self.mark_live(pq);
            return true;
        }
        false
    }

    pub(super) fn epoch(&self, pq: usize) -> u32 {
        self.queue_epochs
            .get(pq)
            .map_or(0, |e: &AtomicU32| e.load(Ordering::Acquire))
    }

    /// The enabled VFs, from the registers alone (no lock), into `out`.
    fn owners(&self, out: &mut Vec<Owner>) {
        out.clear();
        let num = SriovCtrl::from_bits_retain(self.bar0.read32(pf::SRIOV_CTRL.offset())).num_vfs();
        for v in 0..num.min(MAX_VFS as u16) {
            if self.vf_state(v) == Some(VfState::Enabled) {
                let weight = self.bank(v, vf_bank::QOS_WEIGHT).clamp(1, 1000) as i64;
                out.push((v, self.bank(v, vf_bank::ENGINE_MASK), weight));
            }
        }
    }

    /// One pass of a worker over the engines no other worker holds. Returns the jobs
    /// completed.
    pub fn dataplane_poll(self: &Arc<Self>, e: &Engines, w: &mut Worker) -> usize {
        let mut vfs = std::mem::take(&mut w.vfs);
        self.owners(&mut vfs);
        let count = e.sched.len();
        let start = w.next;
        w.next = (w.next + 1) % count.max(1);
        let mut done = 0;
        // VFs found with nothing to run: their other engines' turns this pass skip them
        // (each look at a ring is a read of the tenant's memory).
        let mut idle = 0u64;
        for k in 0..count {
            let eng = (start + k) % count;
            let Some(mut s) = try_lock(&e.sched[eng]) else {
                continue;
            };
            done += self.engine_turn(e, w, eng, &mut s, &vfs, &mut idle);
        }
        w.vfs = vfs;
        if w.swept.elapsed() >= SWEEP {
            w.swept = Instant::now();
            self.sweep(e);
        }
        done
    }

    /// Lets go of what the runs of queues that will not run again hold (pinned rings and the
    /// DMA space of a departed client, a queue taken from its VF or re-armed, a VF gone): a
    /// client's memory is not kept mapped for them.
    fn sweep(&self, e: &Engines) {
        for (pq, m) in e.queues.iter().enumerate() {
            let Some(mut run) = try_lock(m) else {
                continue;
            };
            let stale = run.space.as_ref().is_some_and(|s| s.revoked())
                || (run.space.is_some()
                    && (run.epoch != self.epoch(pq) || !self.owns_queue(run.vf, pq)));
            if stale {
                *run = Run::default();
            }
        }
    }

    /// One turn of engine `eng`.
    ///
    /// A turn lasts until the engine's owners have used TURN of engine time or have nothing
    /// to run. Within it the owners share the engine by weighted fair queueing on virtual
    /// time: the owner whose engine time so far, divided by its QoS weight, is least runs job
    /// steps (from any of its queues) for a QUANTUM, and is charged what it really used, an
    /// overrun included. A VF that comes back from idle starts at the engine's floor (the
    /// least virtual time of those that kept running), so it cannot save up while idle. So a
    /// VF owning more engines gets more of the machine, a sole owner gets its engine whatever
    /// its weight, and VFs sharing an engine split it by weight, however short their quanta
    /// are against a step.
    fn engine_turn(
        self: &Arc<Self>,
        e: &Engines,
        w: &mut Worker,
        eng: usize,
        s: &mut Sched,
        vfs: &[Owner],
        idle: &mut u64,
    ) -> usize {
        // Owners that left the engine (or were disabled) start again from the floor.
        let on = vfs
            .iter()
            .filter(|o| o.1 & (1 << eng) != 0)
            .fold(0u64, |m, o| m | 1 << o.0);
        let mut owners = std::mem::take(&mut w.owners);
        owners.clear();
        owners.extend(
            vfs.iter()
                .filter(|o| o.1 & (1 << eng) != 0 && *idle & (1 << o.0) == 0),
        );
        for o in vfs.iter().filter(|o| on & (1 << o.0) != 0) {
            let t = &mut s.vtime[o.0 as usize];
            if s.members & (1 << o.0) == 0 || *t < s.floor {
                *t = s.floor;
            }
        }
        s.members = on;
        let (mut used, mut done) = (0i64, 0);
        // Owners out of this turn: nothing to run, or their queues busy on other engines.
        let mut out = 0u64;
        while used < TURN_NS {
            let Some(&(v, _, weight)) = owners
                .iter()
                .filter(|o| out & (1 << o.0) == 0)
                .min_by_key(|o| s.vtime[o.0 as usize])
            else {
                break;
            };
            let slot = v as usize;
            let mut credit = QUANTUM.min(TURN_NS - used);
            let given = credit;
            let (ran, elsewhere) = self.serve_vf(e, w, v, &mut s.cursor[slot], &mut credit);
            let spent = (given - credit).max(0);
            used += spent;
            s.vtime[slot] = s.vtime[slot].saturating_add(spent as u64 * 1000 / weight as u64);
            done += ran;
            if ran == 0 {
                out |= 1 << v;
                if !elsewhere {
                    *idle |= 1 << v;
                }
            }
        }
        // Virtual times are kept near zero: far below overflow, whatever the uptime.
        if s.floor > 1 << 62 {
            let f = s.floor;
            s.vtime.iter_mut().for_each(|t| *t = t.saturating_sub(f));
            s.floor = 0;
        }
        // The floor follows the least virtual time among owners still running.
        if let Some(least) = owners
            .iter()
            .filter(|o| out & (1 << o.0) == 0)
            .map(|o| s.vtime[o.0 as usize])
            .min()
        {
            s.floor = s.floor.max(least);
        }
        w.owners = owners;
        done
    }

    /// Runs VF `v`'s job steps, queue after queue from where its last turn stopped, while its
    /// credit lasts. A queue another worker is serving is passed over. Returns steps run, and
    /// whether a queue was passed over for that.
    fn serve_vf(
        self: &Arc<Self>,
        e: &Engines,
        w: &mut Worker,
        v: u16,
        cursor: &mut usize,
        credit: &mut i64,
    ) -> (usize, bool) {
        let qbase = self.bank(v, vf_bank::QUEUE_BASE) as usize;
        let qcount = self.bank(v, vf_bank::QUEUE_COUNT) as usize;
        let start = *cursor;
        let (mut ran, mut elsewhere) = (0, false);
        // The VF's queues that may be enabled (a VF may own hundreds; few are in use).
        let mut live = [0u16; 256];
        let n = self.live_queues(qbase, qcount, &mut live);
        let first = live[..n].partition_point(|&q| (q as usize) < start);
        for i in 0..n {
            if *credit <= 0 {
                break;
            }
            let q = live[(first + i) % n] as usize;
            let pq = qbase + q;
            if !self.queue_enabled(pq) || !self.owns_queue(v, pq) {
                continue;
            }
            let Some(mut run) = e.queues.get(pq).and_then(try_lock) else {
                elsewhere = true;
                continue;
            };
            let n = self.serve_queue(e, w, &mut run, v, pq, credit);
            if n > 0 {
                *cursor = q + 1;
            }
            ran += n;
        }
        (ran, elsewhere)
    }

    /// Serves one queue: a parked job's outcome, then job steps while `credit` lasts (at most
    /// [`BATCH`] completions). Returns steps run plus jobs completed.
    fn serve_queue(
        self: &Arc<Self>,
        e: &Engines,
        w: &mut Worker,
        run: &mut Run,
        v: u16,
        pq: usize,
        credit: &mut i64,
    ) -> usize {
        let epoch = self.epoch(pq);
        if run.epoch != epoch || run.vf != v {
            *run = Run {
                epoch,
                vf: v,
                ..Run::default()
            };
        }
        if run.failed {
            return 0;
        }
        let ctrl = QueueCtrl::from_bits_retain(self.bar0.read32(queue_reg(pq, queue::CONTROL)));
        if !ctrl.contains(QueueCtrl::ENABLE) {
            return 0;
        }
        if !run.armed && !self.arm(run, v, pq, ctrl) {
            return 0;
        }
        let Some(space) = run.space.clone() else {
            return 0;
        };
        // The table is held for the whole visit: the rings are read and the completions
        // written under it, so an unmap or the client's departure (which takes it to write)
        // returns only after this visit, and no visit starts on a revoked space.
        let Some(table) = space.try_table() else {
            return 0; // a map or unmap holds it: next turn
        };
        if space.revoked() {
            // The client that armed the queue is gone: its memory is not the next client's.
            drop(table);
            self.stop_queue(run, v, pq, queue_status::DMA_ERROR);
            return 0;
        }
        if space.version() != run.version && !self.rings_still_mapped(run, &table, space.version())
        {
            drop(table);
            self.stop_queue(run, v, pq, queue_status::DMA_ERROR);
            return 0;
        }
        let mut done = Vec::new();
        let mut steps = 0;
        if let Some(slot) = run.parked.clone() {
            let Some((task, outcome)) = lock(&slot).take() else {
                return 0; // still on the client's thread
            };
            run.parked = None;
            self.advance(run);
            done.push((task.sqe, outcome, 0));
        }
        // One clock read per step: a step is charged from the end of the one before, at
        // least MIN_CHARGE (a job refused at once still costs its turn something, or a ring
        // of malformed entries would hold the engine for free).
        let mut last = Instant::now();
        let mut charge = |credit: &mut i64| {
            let now = Instant::now();
            let spent = (now.duration_since(last).as_nanos() as u64).max(MIN_CHARGE);
            last = now;
            *credit = credit.saturating_sub(spent as i64);
            spent
        };
        while done.len() < BATCH && *credit > 0 && !run.failed {
            if run.task.is_none() {
                match self.fetch(run) {
                    Ok(None) => break,
                    Ok(Some((sqe, head))) => match Task::new(self, v, &sqe, head) {
                        Ok(mut t) => {
                            t.bind_queue(pq, run.epoch);
                            run.task = Some(t);
                        }
                        Err(outcome) => {
                            self.advance(run);
                            let spent = charge(credit);
                            done.push((sqe, outcome, spent));
                            continue;
                        }
                    },
                    Err(()) => {
                        self.stop_queue(run, v, pq, queue_status::DMA_ERROR);
                        break;
                    }
                }
            }
            let Some(task) = run.task.as_mut() else {
                break;
            };
            let step = task.step(&mut JobCtx {
                dev: self,
                v,
                space: &space,
                dma: &table,
                tlb: &mut run.tlb,
                scratch: &mut w.scratch,
                block: false,
            });
            let spent = charge(credit);
            steps += 1;
            match step {
                Step::More => {
                    self.charge(e, v, run, spent);
                }
                Step::Done(outcome) => {
                    let task = run.task.take();
                    if let Some(t) = task {
                        self.advance(run);
                        done.push((t.sqe, outcome, spent));
                    }
                }
                Step::Park => {
                    self.charge(e, v, run, spent);
                    if let Some(t) = run.task.take() {
                        if !self.park(run, v, &space, t) {
                            // No thread of the client's to wait on it: the queue stops, and
                            // says so.
                            self.stop_queue(run, v, pq, queue_status::DMA_ERROR);
                        }
                    }
                    break;
                }
            }
        }
        let n = done.len();
        let wrote = n > 0 && self.complete(e, run, pq, v, &done);
        drop(table);
        if wrote && ctrl.contains(QueueCtrl::IRQ_ENABLE) {
            let vector = self.bar0.read32(queue_reg(pq, queue::MSIX_VECTOR));
            if vector < self.bank(v, vf_bank::VECTOR_COUNT) {
                let _ = self.fire_msix(Func::Vf(v), vector, 1);
            }
        }
        steps + n
    }

    /// Reads the next submission entry, if the driver has published one.
    fn fetch(&self, run: &Run) -> Result<Option<(Sqe, SqeHead)>, ()> {
        let Some((_, sq)) = &run.sq else {
            return Err(());
        };
        let at = run.head as u64 * jobs::SQE_SIZE as u64;
        // The head dword hands the entry over (shared_abi::jobs, ordering).
        let head = SqeHead::from_word(sq.observe32(at).map_err(|_| ())?);
        if head.phase & 1 != run.phase {
            return Ok(None); // nothing new
        }
        let mut raw = [0u8; jobs::SQE_SIZE];
        sq.read(at, &mut raw).map_err(|_| ())?;
        let sqe = Sqe::read_from_bytes(&raw).map_err(|_| ())?;
        Ok(Some((sqe, head)))
    }

    /// Moves past the entry at the head: the job is taken.
    fn advance(&self, run: &mut Run) {
        run.head += 1;
        if run.head == run.sq_size {
            run.head = 0;
            run.phase ^= 1;
        }
    }

    /// Adds engine time of an unfinished job to the VF's counter.
    fn charge(&self, e: &Engines, v: u16, run: &mut Run, spent: u64) {
        run.ns += spent;
        let us = run.ns / 1000;
        run.ns %= 1000;
        if us > 0 {
            let _c = lock(&e.counters[v as usize]);
            self.add64(
                pf::vf_bank(v as usize),
                vf_bank::ENGINE_US_LO,
                vf_bank::ENGINE_US_HI,
                us,
            );
        }
    }

    /// Hands a job whose next step waits on the client to the client's own thread; the
    /// queue waits for it, and nothing else does.
    fn park(self: &Arc<Self>, run: &mut Run, v: u16, space: &Arc<Space>, mut task: Task) -> bool {
        let slot: ParkedSlot = Arc::default();
        let (dev, sp, back) = (self.clone(), space.clone(), slot.clone());
        let parked = space.park(Box::new(move || {
            let mut tlb = Tlb::default();
            let mut scratch = vec![0u8; STEP];
            let outcome = loop {
                let table = sp.read();
                let step = task.step(&mut JobCtx {
                    dev: &dev,
                    v,
                    space: &sp,
                    dma: &table,
                    tlb: &mut tlb,
                    scratch: &mut scratch,
                    block: true,
                });
                match step {
                    Step::More => {}
                    Step::Done(o) => break o,
                    Step::Park => break (JobStatus::HostDma, 0, 0),
                }
            };
            *lock(&back) = Some((task, outcome));
        }));
        if parked {
            run.parked = Some(slot);
        }
        parked
    }

    /// Checks a newly enabled queue's rings and pins them to the memory they are in; says
    /// why in STATUS if they are unusable. False: not armed (yet, or ever).
    fn arm(&self, run: &mut Run, v: u16, pq: usize, ctrl: QueueCtrl) -> bool {
        let Some(space) = self.vf_dma(v) else {
            return false; // no client has mapped memory yet
        };
        let r = |reg| self.bar0.read32(queue_reg(pq, reg));
        let sq = ring_base(r(queue::SQ_BASE_LO), r(queue::SQ_BASE_HI));
        let cq = ring_base(r(queue::CQ_BASE_LO), r(queue::CQ_BASE_HI));
        let (sq_size, cq_size) = (r(queue::SQ_SIZE), r(queue::CQ_SIZE));
        let version = space.version();
        let mut rings = None;
        let status = if !valid_ring(sq_size) || !valid_ring(cq_size) || cq_size < sq_size {
            queue_status::BAD_SIZE
        } else if !sq.is_multiple_of(jobs::SQE_SIZE as u64)
            || !cq.is_multiple_of(jobs::CQE_SIZE as u64)
        {
            queue_status::BAD_ALIGNMENT
        } else if ctrl.contains(QueueCtrl::IRQ_ENABLE)
            && r(queue::MSIX_VECTOR) >= self.bank(v, vf_bank::VECTOR_COUNT)
        {
            queue_status::BAD_VECTOR
        } else {
            let Some(t) = space.try_table() else {
                return false;
            };
            // Rings are memory the device reaches directly, pinned now: never messages to
            // the client, whatever it maps at those addresses later.
            let s = t.direct(sq, sq_size as u64 * jobs::SQE_SIZE as u64);
            let c = t.direct(cq, cq_size as u64 * jobs::CQE_SIZE as u64);
            match (s, c) {
                (Some(s), Some(c)) => {
                    rings = Some(((sq, s), (cq, c)));
                    queue_status::OK
                }
                _ => queue_status::DMA_ERROR,
            }
        };
        let _vu = vu_shared(&self.vu);
        if self.epoch(pq) != run.epoch || !self.owns_queue(v, pq) {
            return false;
        }
        self.bar0.write32(queue_reg(pq, queue::STATUS), status);
        self.bar0.write32(queue_reg(pq, queue::SQ_HEAD), 0);
        self.bar0.write32(queue_reg(pq, queue::CQ_TAIL), 0);
        let Some((s, c)) = rings.filter(|_| status == queue_status::OK) else {
            run.failed = true;
            return false;
        };
        *run = Run {
            armed: true,
            space: Some(space),
            version,
            sq: Some(s),
            sq_size,
            cq: Some(c),
            cq_size,
            phase: 1,
            cq_phase: 1,
            ..std::mem::take(run)
        };
        true
    }

    /// After an unmap: whether the queue's rings are still mapped to the memory they were
    /// pinned to (`t` at `version`).
    fn rings_still_mapped(&self, run: &mut Run, t: &crate::dma::DmaTable, version: u64) -> bool {
        let same = |ring: &Option<(u64, Direct)>, size: u64| {
            ring.as_ref()
                .is_some_and(|(iova, d)| t.direct(*iova, size).is_some_and(|now| now.same(d)))
        };
        let ok = same(&run.sq, run.sq_size as u64 * jobs::SQE_SIZE as u64)
            && same(&run.cq, run.cq_size as u64 * jobs::CQE_SIZE as u64);
        if ok {
            run.version = version;
        }
        ok
    }

    /// Stops a queue until it is re-armed: says why in STATUS and lets go of everything the
    /// run held (pinned rings, the DMA space, a job): a client's memory is not kept mapped
    /// for a queue that will not run again.
    fn stop_queue(&self, run: &mut Run, v: u16, pq: usize, status: u32) {
        *run = Run {
            epoch: run.epoch,
            vf: run.vf,
            failed: true,
            ..Run::default()
        };
        let _vu = vu_shared(&self.vu);
        if self.epoch(pq) == run.epoch && self.owns_queue(v, pq) {
            self.bar0.write32(queue_reg(pq, queue::STATUS), status);
        }
    }

    /// Writes the completions of jobs taken from the ring and counts them, unless the queue
    /// was re-armed, reset or taken from the VF meanwhile (then nothing is written and the
    /// queue's run restarts from the registers).
    fn complete(
        &self,
        e: &Engines,
        run: &mut Run,
        pq: usize,
        v: u16,
        done: &[(Sqe, Outcome, u64)],
    ) -> bool {
        let _vu = vu_shared(&self.vu);
        if self.epoch(pq) != run.epoch || !self.owns_queue(v, pq) {
            run.armed = false;
            return false;
        }
        let Some((_, cq)) = run.cq.clone() else {
            return false;
        };
        let (mut jobs_done, mut bytes, mut ns) = (0u64, 0u64, 0u64);
        for (sqe, (status, result, n), spent) in done {
            let cqe = Cqe {
                result: (*result).into(),
                tag: sqe.tag,
                status: Cqe::status_word(*status, run.cq_phase).into(),
            };
            let at = run.tail as u64 * jobs::CQE_SIZE as u64;
            let b = cqe.as_bytes();
            // Result and tag first; the status dword hands the entry over.
            let status_word = u32::from_le_bytes(
                b[Cqe::STATUS_OFFSET..Cqe::STATUS_OFFSET + 4]
                    .try_into()
                    .unwrap_or_default(),
            );
            if cq
                .write(at, &b[..Cqe::STATUS_OFFSET], Some(status_word))
                .is_err()
            {
                run.failed = true;
                self.bar0
                    .write32(queue_reg(pq, queue::STATUS), queue_status::DMA_ERROR);
                break;
            }
            run.tail += 1;
            if run.tail == run.cq_size {
                run.tail = 0;
                run.cq_phase ^= 1;
            }
            jobs_done += 1;
            bytes += n;
            ns += spent;
        }
        self.bar0.write32(queue_reg(pq, queue::SQ_HEAD), run.head);
        self.bar0.write32(queue_reg(pq, queue::CQ_TAIL), run.tail);
        run.ns += ns;
        let us = run.ns / 1000;
        run.ns %= 1000;
        let (hits, misses) = (
            std::mem::take(&mut run.tlb.hits),
            std::mem::take(&mut run.tlb.misses),
        );
        let base = pf::vf_bank(v as usize);
        let _c = lock(&e.counters[v as usize]);
        self.add64(base, vf_bank::JOBS_LO, vf_bank::JOBS_HI, jobs_done);
        self.add64(base, vf_bank::BYTES_LO, vf_bank::BYTES_HI, bytes);
        self.add64(base, vf_bank::ENGINE_US_LO, vf_bank::ENGINE_US_HI, us);
        for (r, n) in [(vf_bank::IOTLB_HITS, hits), (vf_bank::IOTLB_MISSES, misses)] {
            if n > 0 {
                let cur = self.bar0.read32(r.at(base));
                self.bar0.write32(r.at(base), cur.saturating_add(n));
            }
        }
        jobs_done > 0
    }

    /// Adds to a 64-bit counter kept as two registers. Bit 31 of the high word is set while
    /// the pair changes (docs/abi.md §3), so a reader retries instead of seeing half of it.
    /// The caller holds the VF's counter lock.
    fn add64(&self, base: usize, lo: regs::Reg, hi: regs::Reg, n: u64) {
        if n == 0 {
            return;
        }
        let h = self.bar0.read32(hi.at(base)) & !COUNTER_BUSY;
        let cur = (h as u64) << 32 | self.bar0.read32(lo.at(base)) as u64;
        let new = cur.saturating_add(n).min(COUNTER_MAX);
        self.bar0.write32(hi.at(base), h | COUNTER_BUSY);
        self.bar0.write32(lo.at(base), new as u32);
        self.bar0.publish32(hi.at(base), (new >> 32) as u32);
    }
}

/// Set in a 64-bit counter's high word while the hardware updates the pair.
const COUNTER_BUSY: u32 = 1 << 31;
/// Counters saturate here rather than reach the busy bit.
const COUNTER_MAX: u64 = (1 << 63) - 1;
