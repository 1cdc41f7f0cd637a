//! What one job does, and the two address spaces it may name: host memory by IOVA through the
//! VF's DMA table, and the VF's device memory by VF virtual address through two translation
//! stages (the virtualized-cache patent):
//!
//! 1. stage 1, the VF's own table in its own device memory (`jobs::xlat`, located by the
//!    XLAT_ROOT/XLAT_PAGES registers it writes), maps a VF virtual page to a VF-physical page;
//! 2. stage 2, the table the firmware programmed (TT_BASE/TT_LEN in the VF's bank), maps the
//!    VF-physical granule to a device granule.
//!
//! Translations are cached per VF in an IOTLB, flushed when the VF invalidates, when it
//! rewrites its XLAT registers, and when the firmware changes its bank (resize, reset,
//! destroy: the bank's GENERATION moves). A stage-1 miss fails the job; a stage-2 refusal also
//! counts a fault on the VF. Nothing outside the VF's window is reachable either way.

use super::*;
use crate::dma::{DmaError, DmaTable};
use shared_abi::jobs::{self, flags, xlat, JobOp, JobStatus, Sqe, SqeHead};
use std::collections::HashMap;

/// Bytes of a job moved in one step. A step is the unit of preemption: an engine can switch
/// to another VF's job between steps, and the grant is checked before each.
pub(super) const STEP: usize = 256 << 10;
/// Translations one IOTLB holds before it starts over.
const TLB_ENTRIES: usize = 4096;
const PAGE: u64 = 1 << xlat::PAGE_SHIFT;

/// How a job went: status, the completion's result, and bytes processed.
pub(super) type Outcome = (JobStatus, u64, u64);

/// A translation cache (one per queue: a queue's jobs run on one engine at a time).
#[derive(Debug, Default)]
pub(super) struct Tlb {
    /// What the cached translations were made under: bank generation, XLAT_ROOT, XLAT_PAGES
    /// and the VF's invalidation count.
    key: (u32, u64, u32, u32),
    /// VF virtual page → (device address of the page, writable).
    map: HashMap<u64, (u64, bool)>,
    /// Hits and misses not yet added to the bank's counters.
    pub hits: u32,
    pub misses: u32,
}

/// Where a job reads or writes.
#[derive(Clone, Copy, Debug)]
enum Place {
    Host(u64),
    Device(u64),
}

impl Place {
    /// `off` bytes in; a job's ranges were checked not to pass 2^64 when it was taken.
    fn at(self, off: usize) -> Place {
        match self {
            Place::Host(a) => Place::Host(a + off as u64),
            Place::Device(a) => Place::Device(a + off as u64),
        }
    }
}

/// What a job may touch, fixed when it is taken: it holds while the VF's bank generation
/// (moved by every resize, reset and destroy), its state, its translation epoch and the DMA
/// space the job's queue was armed with stay as they were. Checked before every step, and for
/// device memory again under the device memory's lock, so no byte moves once the VF's memory
/// has changed hands.
#[derive(Clone, Copy, Debug)]
pub(super) struct Grant {
    generation: u32,
    xlat: u32,
    /// The physical queue the job came from and its epoch then: a job of a queue that was
    /// disabled, reset or re-armed since stops too.
    queue: Option<(usize, u32)>,
}

impl Device {
    fn grant(&self, v: u16) -> Grant {
        Grant {
            generation: self.bank(v, vf_bank::GENERATION),
            xlat: self.xlat_epoch(v),
            queue: None,
        }
    }

    /// Whether `g` still holds for VF `v` and `space`.
    pub(super) fn grant_holds(&self, v: u16, g: &Grant, space: &crate::dma::Space) -> bool {
        !space.revoked()
            && g.queue.is_none_or(|(pq, epoch)| self.epoch(pq) == epoch)
            && self.vf_state(v) == Some(VfState::Enabled)
            && self.bank(v, vf_bank::GENERATION) == g.generation
            && self.xlat_epoch(v) == g.xlat
    }
}

/// Running state a job carries from step to step.
#[derive(Debug)]
enum Acc {
    None,
    Crc(u32),
    Sha(Box<sha2::Sha256>),
}

/// One job, taken from its ring and run a step at a time.
#[derive(Debug)]
pub(super) struct Task {
    pub sqe: Sqe,
    op: JobOp,
    len: usize,
    src: Place,
    dst: Place,
    value: u32,
    /// Bytes done.
    pos: usize,
    /// An overlapping copy to a higher address runs from the end (memmove).
    backwards: bool,
    acc: Acc,
    grant: Grant,
}

/// What a step came to.
#[derive(Debug)]
pub(super) enum Step {
    /// The job is over.
    Done(Outcome),
    /// More steps to go.
    More,
    /// The next step waits on the client (memory reached through messages): it belongs on
    /// the client's own thread, not an engine. Nothing of the step was done.
    Park,
}

/// A job's view of the machine for one step.
pub(super) struct JobCtx<'a> {
    pub dev: &'a Device,
    pub v: u16,
    pub space: &'a crate::dma::Space,
    pub dma: &'a DmaTable,
    pub tlb: &'a mut Tlb,
    pub scratch: &'a mut [u8],
    /// Whether this step may wait on the client (message DMA).
    pub block: bool,
}

fn host(e: DmaError) -> Step {
    match e {
        DmaError::WouldBlock(_) => Step::Park,
        _ => Step::Done((JobStatus::HostDma, 0, 0)),
    }
}

enum Fail {
    Status(JobStatus),
    Dma(DmaError),
}

impl From<JobStatus> for Fail {
    fn from(s: JobStatus) -> Self {
        Fail::Status(s)
    }
}
impl From<DmaError> for Fail {
    fn from(e: DmaError) -> Self {
        Fail::Dma(e)
    }
}

impl Task {
    /// Takes a job from its submission entry, or says at once why it cannot run.
    pub fn new(dev: &Device, v: u16, s: &Sqe, head: SqeHead) -> Result<Task, Outcome> {
        let bad = (JobStatus::BadDescriptor, 0, 0);
        if head.version != jobs::VERSION
            || head.flags & !flags::ALL != 0
            || s.reserved.iter().any(|r| r.get() != 0)
            || head.phase & !1 != 0
        {
            return Err(bad);
        }
        let op = JobOp::from_wire(head.op).ok_or((JobStatus::BadOpcode, 0, 0))?;
        let len = s.len.get() as usize;
        if len == 0 || len > jobs::MAX_JOB_LEN as usize {
            return Err(bad);
        }
        // A range that runs past the top of the address space is malformed, not wrapped.
        if s.src.get().checked_add(len as u64).is_none()
            || s.dst.get().checked_add(len as u64).is_none()
        {
            return Err(bad);
        }
        let place = |bit: u8, a: u64| {
            if head.flags & bit != 0 {
                Place::Device(a)
            } else {
                Place::Host(a)
            }
        };
        let (src, dst) = (
            place(flags::SRC_DEVICE, s.src.get()),
            place(flags::DST_DEVICE, s.dst.get()),
        );
        let value = s.value.get();
        let acc = match op {
            JobOp::Copy | JobOp::Sha256 if value != 0 => return Err(bad),
            JobOp::Fill if value > 0xFF => return Err(bad),
            JobOp::Crc32c => Acc::Crc(value),
            JobOp::Sha256 => Acc::Sha(Box::default()),
            JobOp::Copy | JobOp::Fill => Acc::None,
        };
        let backwards = op == JobOp::Copy
            && match (src, dst) {
                (Place::Host(s), Place::Host(d)) | (Place::Device(s), Place::Device(d)) => {
                    d > s && d < s + len as u64
                }
                _ => false,
            };
        Ok(Task {
            sqe: *s,
            op,
            len,
            src,
            dst,
            value,
            pos: 0,
            backwards,
            acc,
            grant: dev.grant(v),
        })
    }

    /// Ties the job to the queue it was taken from, as that queue is now.
    pub fn bind_queue(&mut self, pq: usize, epoch: u32) {
        self.grant.queue = Some((pq, epoch));
    }

    /// Whether the job names device memory (its IOTLB must be current before it starts).
    pub fn device_side(&self) -> bool {
        matches!(self.src, Place::Device(_)) || matches!(self.dst, Place::Device(_))
    }

    /// Runs one step: at most [`STEP`] bytes (and never more than `cx.scratch` holds).
    pub fn step(&mut self, cx: &mut JobCtx<'_>) -> Step {
        if let Some(d) = cx.dev.step_delay() {
            std::thread::sleep(d);
        }
        if !cx.dev.grant_holds(cx.v, &self.grant, cx.space) {
            return Step::Done((JobStatus::Aborted, 0, 0));
        }
        if self.pos == 0 && self.device_side() {
            cx.refresh_tlb(&self.grant);
        }
        let n = (self.len - self.pos).min(STEP).min(cx.scratch.len());
        let o = if self.backwards {
            self.len - self.pos - n
        } else {
            self.pos
        };
        let r = match (self.op, &mut self.acc) {
            (JobOp::Copy, _) => match (self.src, self.dst) {
                (Place::Host(s), Place::Host(d)) => cx
                    .dma
                    .copy(s + o as u64, d + o as u64, n, cx.scratch, cx.block)
                    .map_err(Fail::from),
                (s, d) => cx
                    .read(s.at(o), n, &self.grant)
                    .and_then(|_| cx.write_scratch(d.at(o), n, &self.grant)),
            },
            (JobOp::Fill, _) => match self.dst {
                Place::Host(d) => cx
                    .dma
                    .fill(d + o as u64, n, self.value as u8, cx.scratch, cx.block)
                    .map_err(Fail::from),
                d => {
                    cx.scratch[..n].fill(self.value as u8);
                    cx.write_scratch(d.at(o), n, &self.grant)
                }
            },
            (JobOp::Crc32c, Acc::Crc(crc)) => match self.src {
                Place::Host(a) => cx
                    .dma
                    .crc32c(a + o as u64, n, *crc, cx.scratch, cx.block)
                    .map(|c| *crc = c)
                    .map_err(Fail::from),
                p => {
                    let mut c = *crc;
                    let r = cx.visit(p.at(o), n, &self.grant, |b| c = crc32c::crc32c_append(c, b));
                    r.map(|_| *crc = c)
                }
            },
            (JobOp::Sha256, Acc::Sha(h)) => {
                use sha2::Digest;
                // A step that fails part way must leave the running hash as it was.
                let mut next = h.clone();
                let r = cx.visit(self.src.at(o), n, &self.grant, |b| next.update(b));
                r.map(|_| *h = next)
            }
            _ => Err(Fail::Status(JobStatus::BadDescriptor)),
        };
        match r {
            Ok(()) => {}
            Err(Fail::Dma(e)) => return host(e),
            Err(Fail::Status(st)) => return Step::Done((st, 0, 0)),
        }
        self.pos += n;
        if self.pos < self.len {
            return Step::More;
        }
        let len = self.len as u64;
        let result = match &self.acc {
            Acc::Crc(c) => *c as u64,
            Acc::Sha(h) => {
                use sha2::Digest;
                let digest = (**h).clone().finalize();
                cx.scratch[..32].copy_from_slice(&digest);
                // A digest that waits on the client parks the job whole: the next step
                // (with no bytes left) comes back here.
                match cx.write_scratch(self.dst, 32, &self.grant) {
                    Ok(()) => 0,
                    Err(Fail::Dma(e)) => return host(e),
                    Err(Fail::Status(st)) => return Step::Done((st, 0, 0)),
                }
            }
            Acc::None => len,
        };
        Step::Done((JobStatus::Ok, result, len))
    }
}

impl JobCtx<'_> {
    /// Reads `n` bytes at `p` into the scratch buffer.
    fn read(&mut self, p: Place, n: usize, g: &Grant) -> Result<(), Fail> {
        match p {
            Place::Host(a) => Ok(self.dma.read(a, &mut self.scratch[..n], self.block)?),
            Place::Device(va) => {
                let out = &mut *self.scratch;
                let (dev, v, tlb) = (self.dev, self.v, &mut *self.tlb);
                device(
                    dev,
                    v,
                    tlb,
                    self.space,
                    g,
                    va,
                    n,
                    false,
                    |mem, gr, off, r| {
                        mem.read(gr, off, &mut out[r]);
                    },
                )
            }
        }
    }

    /// Writes the scratch buffer's first `n` bytes at `p`.
    fn write_scratch(&mut self, p: Place, n: usize, g: &Grant) -> Result<(), Fail> {
        match p {
            Place::Host(a) => Ok(self.dma.write(a, &self.scratch[..n], self.block)?),
            Place::Device(va) => {
                let data = &*self.scratch;
                let (dev, v, tlb) = (self.dev, self.v, &mut *self.tlb);
                device(
                    dev,
                    v,
                    tlb,
                    self.space,
                    g,
                    va,
                    n,
                    true,
                    |mem, gr, off, r| {
                        mem.write(gr, off, &data[r]);
                    },
                )
            }
        }
    }

    /// Runs `f` over `n` bytes at `p` (in place where the client's memory is mapped here).
    fn visit(
        &mut self,
        p: Place,
        n: usize,
        g: &Grant,
        mut f: impl FnMut(&[u8]),
    ) -> Result<(), Fail> {
        match p {
            Place::Host(a) => Ok(self.dma.visit(a, n, self.scratch, self.block, f)?),
            Place::Device(_) => {
                self.read(p, n, g)?;
                f(&self.scratch[..n]);
                Ok(())
            }
        }
    }

    /// Starts the IOTLB over if what its translations were made under has changed.
    fn refresh_tlb(&mut self, g: &Grant) {
        let d = self.dev;
        let key = (
            g.generation,
            ring_addr(
                d.bank(self.v, vf_bank::XLAT_ROOT_LO),
                d.bank(self.v, vf_bank::XLAT_ROOT_HI),
            ),
            d.bank(self.v, vf_bank::XLAT_PAGES),
            g.xlat,
        );
        if self.tlb.key != key {
            self.tlb.key = key;
            self.tlb.map.clear();
        }
    }
}

/// Walks `len` bytes of device memory from VF virtual address `va` a page at a time,
/// translating each page before any byte moves (a fault leaves memory untouched), then moves
/// them under the device memory's lock once the grant is seen to hold there: the firmware's
/// scrub of memory it takes back waits for that lock, so no byte lands after it.
#[allow(clippy::too_many_arguments)]
fn device(
    dev: &Device,
    v: u16,
    tlb: &mut Tlb,
    space: &crate::dma::Space,
    g: &Grant,
    va: u64,
    len: usize,
    write: bool,
    mut f: impl FnMut(&mut DevMem, u32, usize, std::ops::Range<usize>),
) -> Result<(), Fail> {
    let mut pages = Vec::with_capacity(len / PAGE as usize + 2);
    let mut done = 0usize;
    while done < len {
        let a = va.checked_add(done as u64).ok_or(JobStatus::Stage1Fault)?;
        let within = (a & (PAGE - 1)) as usize;
        let n = (PAGE as usize - within).min(len - done);
        let d = translate(dev, v, tlb, a, write)?;
        pages.push((d, done..done + n));
        done += n;
    }
    let shift = dev.board.granule_shift;
    let mut mem = lock(&dev.devmem);
    if !dev.grant_holds(v, g, space) {
        return Err(Fail::Status(JobStatus::Aborted));
    }
    for (d, r) in pages {
        let gr = (d >> shift) as u32;
        let off = (d & ((1u64 << shift) - 1)) as usize;
        f(&mut mem, gr, off, r);
    }
    Ok(())
}

/// VF virtual address → device address, through the IOTLB or both stages.
fn translate(dev: &Device, v: u16, tlb: &mut Tlb, va: u64, write: bool) -> Result<u64, JobStatus> {
    let page = va >> xlat::PAGE_SHIFT;
    let within = va & (PAGE - 1);
    if let Some(&(d, writable)) = tlb.map.get(&page) {
        tlb.hits = tlb.hits.saturating_add(1);
        return if write && !writable {
            Err(JobStatus::Stage1Fault)
        } else {
            Ok(d | within)
        };
    }
    tlb.misses = tlb.misses.saturating_add(1);
    let (_, root, pages, _) = tlb.key;
    if page >= pages as u64 {
        return Err(JobStatus::Stage1Fault);
    }
    // The table lives in the VF's own memory: reading it goes through stage 2 too. A root
    // whose entry would lie past 2^64 is a stage-1 fault, not an address that wraps.
    let entry = page
        .checked_mul(xlat::ENTRY_SIZE as u64)
        .and_then(|o| root.checked_add(o))
        .ok_or(JobStatus::Stage1Fault)?;
    let at = stage2(dev, v, entry)?;
    let mut e = [0u8; xlat::ENTRY_SIZE];
    {
        let shift = dev.board.granule_shift;
        let mem = lock(&dev.devmem);
        mem.read(
            (at >> shift) as u32,
            (at & ((1u64 << shift) - 1)) as usize,
            &mut e,
        );
    }
    let e = u64::from_le_bytes(e);
    if e & xlat::VALID == 0 {
        return Err(JobStatus::Stage1Fault);
    }
    let writable = e & xlat::WRITABLE != 0;
    let d = stage2(dev, v, e & xlat::ADDR_MASK)?;
    if tlb.map.len() >= TLB_ENTRIES {
        tlb.map.clear();
    }
    tlb.map.insert(page, (d, writable));
    if write && !writable {
        return Err(JobStatus::Stage1Fault);
    }
    Ok(d | within)
}

/// VF-physical (VF-local device memory) address → device address, as the firmware's
/// translation table says; a refusal is a fault on this VF.
fn stage2(dev: &Device, v: u16, pa: u64) -> Result<u64, JobStatus> {
    let shift = dev.board.granule_shift;
    let local = pa >> shift;
    let granules = dev.bank(v, vf_bank::MEM_GRANULES) as u64;
    let tt_len = dev.bank(v, vf_bank::TT_LEN) as u64;
    let fault = if local >= granules || local >= tt_len {
        VfFault::MemOutOfWindow
    } else {
        let base = dev.bank(v, vf_bank::TT_BASE) as usize;
        let e = TtEntry(dev.bar0.read32(pf::tt_entry(base + local as usize)));
        match e.granule() {
            Some(g) => return Ok((g as u64) << shift | (pa & ((1u64 << shift) - 1))),
            None => VfFault::TranslationMiss,
        }
    };
    dev.fault(v, fault);
    Err(JobStatus::Stage2Fault)
}

fn ring_addr(lo: u32, hi: u32) -> u64 {
    (hi as u64) << 32 | lo as u64
}
