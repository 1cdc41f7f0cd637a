//! The queue engine: hardware that polls every enabled VF's submission rings in host memory
//! (the polling patent: a doorbell is never needed), fetches each job by DMA through that VF's
//! map table, runs it, writes its completion and raises the queue's vector when asked.
//!
//! It reads only what the firmware programmed (banks, queue ownership) and what the VF wrote
//! into its own queue blocks; it reaches host memory only through the VF's own DMA table, so a
//! job can name nothing but its VF's memory. Everything that lands in a queue's registers, the
//! VF's counters or its completion ring is written under the virtualization unit's lock after
//! checking that the queue is still the VF's and was not re-armed or reset meanwhile.

use super::jobs::{JobCtx, Outcome, Tlb, CHUNK};
use super::*;
use crate::dma::DmaTable;
use shared_abi::jobs::{self, queue_status, Cqe, Sqe, SqeHead};
use shared_abi::regs::QueueCtrl;
use std::sync::atomic::{fence, AtomicU32};
use std::sync::RwLock;
use zerocopy::{FromBytes, IntoBytes};

/// Jobs taken from one queue before the engine moves on to the next (round robin).
const BATCH: usize = 8;
/// An engine's turn on the thread: its owners run (in DRR rounds) until they have used this
/// much, or have nothing left to run.
const TURN_NS: i64 = 200_000;
const MAX_VFS: usize = shared_abi::pci::MAX_VFS;

/// What the engine knows of one physical queue between polls.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    epoch: u32,
    vf: u16,
    armed: bool,
    failed: bool,
    sq: u64,
    sq_size: u32,
    cq: u64,
    cq_size: u32,
    head: u32,
    phase: u8,
    tail: u32,
    cq_phase: u8,
}

/// The engine's own state: per-queue progress and its DMA buffers.
#[derive(Debug)]
pub struct Engine {
    runs: Vec<Run>,
    /// Engine time not yet whole microseconds, per VF.
    ns: Vec<u64>,
    /// Time each VF may still spend on each engine this pass (deficit round robin, in ns),
    /// at `engine * MAX_VFS + vf`.
    deficit: Vec<i64>,
    /// Per VF: the queue its next turn starts at, so every queue gets turns.
    cursor: Vec<usize>,
    /// Per engine: which owner its next turn's rounds start with.
    rotation: Vec<usize>,
    /// Each VF's IOTLB.
    tlbs: Vec<Tlb>,
    buf: Vec<u8>,
}

impl Engine {
    /// An engine for `dev`.
    pub fn new(dev: &Device) -> Self {
        Engine {
            runs: vec![Run::default(); dev.board.queues as usize],
            ns: vec![0; shared_abi::pci::MAX_VFS],
            deficit: vec![0; dev.board.engines as usize * MAX_VFS],
            cursor: vec![0; MAX_VFS],
            rotation: vec![0; dev.board.engines as usize],
            tlbs: (0..shared_abi::pci::MAX_VFS)
                .map(|_| Tlb::default())
                .collect(),
            buf: vec![0; CHUNK],
        }
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

impl Device {
    /// Starts the queue engine thread; it runs until `stop`.
    pub fn spawn_dataplane(
        self: &Arc<Self>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let dev = self.clone();
        std::thread::Builder::new()
            .name("queue-engine".into())
            .spawn(move || {
                let mut e = Engine::new(&dev);
                let mut idle = crate::fwhost::Idle::default();
                while !stop.load(Ordering::Acquire) {
                    if dev.dataplane_poll(&mut e) > 0 {
                        idle.busy();
                    } else {
                        idle.idle();
                    }
                }
            })
    }

    /// Bumps a queue's epoch: its CONTROL register was written.
    pub(super) fn queue_control_written(&self, pq: usize) {
        if let Some(e) = self.queue_epochs.get(pq) {
            e.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn epoch(&self, pq: usize) -> u32 {
        self.queue_epochs
            .get(pq)
            .map_or(0, |e: &AtomicU32| e.load(Ordering::Acquire))
    }

    /// One pass over the engines. Returns the jobs completed.
    ///
    /// accel-sim runs every engine on this one thread, one engine's turn after another; a
    /// turn lasts until the engine's owners have used TURN of engine time or have nothing to
    /// run. Within a turn the owners share it by deficit round robin: each round, each gains
    /// TURN / 4 × its weight / the heaviest owner's weight, and runs jobs (from any of its
    /// queues) while it has some left.
    /// A VF with nothing to run keeps no credit (it cannot save up while idle); one that
    /// overran carries the debt into the next round. So a VF owning more engines gets more of
    /// the machine, a sole owner gets its engine whatever its weight, and VFs sharing an
    /// engine split it by weight.
    pub fn dataplane_poll(&self, e: &mut Engine) -> usize {
        let mut vfs = Vec::new();
        for v in 0..self.num_vfs() {
            let enabled = self.vf_state(v) == Some(VfState::Enabled);
            match self.vf_dma(v) {
                Some(dma) if enabled => {
                    let weight = self.bank(v, vf_bank::QOS_WEIGHT).clamp(1, 1000) as i64;
                    vfs.push((v, self.bank(v, vf_bank::ENGINE_MASK), weight, dma));
                }
                _ => {
                    for eng in 0..self.board.engines as usize {
                        e.deficit[eng * MAX_VFS + v as usize] = 0;
                    }
                }
            }
        }
        let mut done = 0;
        // VFs found with nothing to run: their other engines' turns this pass skip them
        // (each look at a ring is a read of the tenant's memory).
        let mut idle = 0u64;
        for eng in 0..self.board.engines as usize {
            let owners: Vec<_> = vfs
                .iter()
                .filter(|o| o.1 & (1 << eng) != 0 && idle & (1 << o.0) == 0)
                .collect();
            let Some(heaviest) = owners.iter().map(|o| o.2).max() else {
                continue;
            };
            // Quanta scaled so the heaviest owner's is a quarter of the turn: every owner gets
            // rounds in every turn, in proportion to its weight. The round starts one owner
            // later each pass, so no owner is always the one a turn runs out on.
            let start = e.rotation[eng];
            e.rotation[eng] = e.rotation[eng].wrapping_add(1);
            let mut used = 0i64;
            'turn: loop {
                // Whether anyone ran, and whether anyone sat this round out paying a debt
                // (it gets another round: its credit grows each round).
                let (mut any, mut owing) = (false, false);
                for i in 0..owners.len() {
                    if used >= TURN_NS {
                        break 'turn;
                    }
                    let (v, _, weight, dma) = owners[(start + i) % owners.len()];
                    let slot = eng * MAX_VFS + *v as usize;
                    let credit = e.deficit[slot].saturating_add(TURN_NS / 4 * weight / heaviest);
                    if credit <= 0 {
                        e.deficit[slot] = credit;
                        owing = true;
                        continue;
                    }
                    let allowed = credit.min(TURN_NS - used);
                    e.deficit[slot] = allowed;
                    let ran = self.serve_vf(e, *v, dma, slot);
                    let spent = allowed - e.deficit[slot];
                    used += spent;
                    e.deficit[slot] = if ran == 0 {
                        idle |= 1 << v;
                        credit.min(0)
                    } else {
                        credit - spent
                    };
                    any |= ran > 0;
                    done += ran;
                }
                if !any && !owing {
                    break;
                }
            }
        }
        done
    }

    /// Runs VF `v`'s jobs, queue after queue from where its last turn stopped, while its
    /// credit at `slot` lasts.
    fn serve_vf(&self, e: &mut Engine, v: u16, dma: &RwLock<DmaTable>, slot: usize) -> usize {
        let qbase = self.bank(v, vf_bank::QUEUE_BASE) as usize;
        let qcount = self.bank(v, vf_bank::QUEUE_COUNT) as usize;
        let start = e.cursor[v as usize];
        let mut ran = 0;
        for i in 0..qcount {
            if e.deficit[slot] <= 0 {
                break;
            }
            let q = (start + i) % qcount;
            if self.owns_queue(v, qbase + q) {
                let n = self.serve_queue(e, v, qbase + q, dma, slot);
                if n > 0 {
                    e.cursor[v as usize] = q + 1;
                }
                ran += n;
            }
        }
        ran
    }

    fn serve_queue(
        &self,
        e: &mut Engine,
        v: u16,
        pq: usize,
        dma: &RwLock<DmaTable>,
        credit: usize,
    ) -> usize {
        let epoch = self.epoch(pq);
        let Engine {
            runs,
            ns,
            deficit,
            tlbs,
            buf,
            ..
        } = e;
        let Some(run) = runs.get_mut(pq) else {
            return 0;
        };
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
        if !run.armed && !self.arm(run, v, pq, ctrl, dma) {
            return 0;
        }
        let mut done = 0;
        for _ in 0..BATCH {
            if deficit[credit] <= 0 {
                break;
            }
            let slot = run.sq + run.head as u64 * jobs::SQE_SIZE as u64;
            let t = dma.read().unwrap_or_else(|e| e.into_inner());
            let mut w = [0u8; 4];
            if t.read(slot, &mut w).is_err() {
                drop(t);
                self.stop_queue(run, v, pq, queue_status::DMA_ERROR);
                break;
            }
            let head = SqeHead::from_word(u32::from_le_bytes(w));
            if head.phase & 1 != run.phase {
                break; // nothing new
            }
            // The head dword hands the entry over (shared_abi::jobs, ordering).
            fence(Ordering::Acquire);
            let mut raw = [0u8; jobs::SQE_SIZE];
            if t.read(slot, &mut raw).is_err() {
                drop(t);
                self.stop_queue(run, v, pq, queue_status::DMA_ERROR);
                break;
            }
            let Ok(sqe) = Sqe::read_from_bytes(&raw) else {
                break;
            };
            let start = Instant::now();
            let tlb = &mut tlbs[v as usize];
            let (status, result, bytes) = JobCtx {
                dev: self,
                v,
                dma: &t,
                tlb,
            }
            .run(&sqe, head, buf);
            let spent = start.elapsed().as_nanos() as u64;
            deficit[credit] = deficit[credit].saturating_sub(spent as i64);
            drop(t);
            let outcome = (status, result, bytes);
            let tlb = &mut tlbs[v as usize];
            let counts = (
                std::mem::take(&mut tlb.hits),
                std::mem::take(&mut tlb.misses),
            );
            if !self.complete(
                run,
                &mut ns[v as usize],
                pq,
                v,
                &sqe,
                outcome,
                spent,
                counts,
                dma,
            ) {
                break;
            }
            done += 1;
            if ctrl.contains(QueueCtrl::IRQ_ENABLE) {
                let vector = self.bar0.read32(queue_reg(pq, queue::MSIX_VECTOR));
                if vector < self.bank(v, vf_bank::VECTOR_COUNT) {
                    let _ = self.fire_msix(Func::Vf(v), vector, 1);
                }
            }
        }
        done
    }

    /// Checks a newly enabled queue's rings; says why in STATUS if they are unusable.
    fn arm(
        &self,
        run: &mut Run,
        v: u16,
        pq: usize,
        ctrl: QueueCtrl,
        dma: &RwLock<DmaTable>,
    ) -> bool {
        let r = |reg| self.bar0.read32(queue_reg(pq, reg));
        let sq = ring_base(r(queue::SQ_BASE_LO), r(queue::SQ_BASE_HI));
        let cq = ring_base(r(queue::CQ_BASE_LO), r(queue::CQ_BASE_HI));
        let (sq_size, cq_size) = (r(queue::SQ_SIZE), r(queue::CQ_SIZE));
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
        } else if !{
            // Rings are written under the engine's locks: they must be in memory the device
            // reaches directly, not through messages to the client.
            let t = dma.read().unwrap_or_else(|e| e.into_inner());
            t.file_backed(sq, sq_size as u64 * jobs::SQE_SIZE as u64)
                && t.file_backed(cq, cq_size as u64 * jobs::CQE_SIZE as u64)
        } {
            queue_status::DMA_ERROR
        } else {
            queue_status::OK
        };
        let _vu = lock(&self.vu);
        if self.epoch(pq) != run.epoch || !self.owns_queue(v, pq) {
            return false;
        }
        self.bar0.write32(queue_reg(pq, queue::STATUS), status);
        self.bar0.write32(queue_reg(pq, queue::SQ_HEAD), 0);
        self.bar0.write32(queue_reg(pq, queue::CQ_TAIL), 0);
        if status != queue_status::OK {
            run.failed = true;
            return false;
        }
        *run = Run {
            armed: true,
            sq,
            sq_size,
            cq,
            cq_size,
            phase: 1,
            cq_phase: 1,
            ..*run
        };
        true
    }

    fn stop_queue(&self, run: &mut Run, v: u16, pq: usize, status: u32) {
        run.failed = true;
        let _vu = lock(&self.vu);
        if self.epoch(pq) == run.epoch && self.owns_queue(v, pq) {
            self.bar0.write32(queue_reg(pq, queue::STATUS), status);
        }
    }

    /// Writes a job's completion and counts it, unless the queue was re-armed, reset or taken
    /// from the VF while the job ran (then nothing is written and the queue's run restarts
    /// from the registers). Returns whether the queue goes on.
    #[allow(clippy::too_many_arguments)]
    fn complete(
        &self,
        run: &mut Run,
        ns: &mut u64,
        pq: usize,
        v: u16,
        sqe: &Sqe,
        (status, result, bytes): Outcome,
        spent_ns: u64,
        (hits, misses): (u32, u32),
        dma: &RwLock<DmaTable>,
    ) -> bool {
        let _vu = lock(&self.vu);
        if self.epoch(pq) != run.epoch || !self.owns_queue(v, pq) {
            run.armed = false;
            return false;
        }
        let cqe = Cqe {
            result: result.into(),
            tag: sqe.tag,
            status: Cqe::status_word(status, run.cq_phase).into(),
        };
        let at = run.cq + run.tail as u64 * jobs::CQE_SIZE as u64;
        let b = cqe.as_bytes();
        let t = dma.read().unwrap_or_else(|e| e.into_inner());
        // Result and tag first; the status dword hands the entry over.
        let wrote = t.write(at, &b[..Cqe::STATUS_OFFSET]).is_ok() && {
            fence(Ordering::Release);
            t.write(at + Cqe::STATUS_OFFSET as u64, &b[Cqe::STATUS_OFFSET..])
                .is_ok()
        };
        drop(t);
        if !wrote {
            run.failed = true;
            self.bar0
                .write32(queue_reg(pq, queue::STATUS), queue_status::DMA_ERROR);
            return false;
        }
        run.head += 1;
        if run.head == run.sq_size {
            run.head = 0;
            run.phase ^= 1;
        }
        run.tail += 1;
        if run.tail == run.cq_size {
            run.tail = 0;
            run.cq_phase ^= 1;
        }
        self.bar0.write32(queue_reg(pq, queue::SQ_HEAD), run.head);
        self.bar0.write32(queue_reg(pq, queue::CQ_TAIL), run.tail);
        *ns += spent_ns;
        let us = *ns / 1000;
        *ns %= 1000;
        let base = pf::vf_bank(v as usize);
        self.add64(base, vf_bank::JOBS_LO, vf_bank::JOBS_HI, 1);
        self.add64(base, vf_bank::BYTES_LO, vf_bank::BYTES_HI, bytes);
        self.add64(base, vf_bank::ENGINE_US_LO, vf_bank::ENGINE_US_HI, us);
        for (r, n) in [(vf_bank::IOTLB_HITS, hits), (vf_bank::IOTLB_MISSES, misses)] {
            let cur = self.bar0.read32(r.at(base));
            self.bar0.write32(r.at(base), cur.saturating_add(n));
        }
        true
    }

    /// Adds to a 64-bit counter kept as two registers. Bit 31 of the high word is set while
    /// the pair changes (docs/abi.md §3), so a reader retries instead of seeing half of it.
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
