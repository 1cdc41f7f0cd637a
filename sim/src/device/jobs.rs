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

/// Bytes moved per step of a job.
pub(super) const CHUNK: usize = 1 << 20;
/// Translations one VF's IOTLB holds before it starts over.
const TLB_ENTRIES: usize = 4096;
const PAGE: u64 = 1 << xlat::PAGE_SHIFT;

/// How a job went: status, the completion's result, and bytes processed.
pub(super) type Outcome = (JobStatus, u64, u64);

/// One VF's translation cache.
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
#[derive(Clone, Copy)]
enum Place {
    Host(u64),
    Device(u64),
}

impl Place {
    fn at(self, off: usize) -> Place {
        match self {
            Place::Host(a) => Place::Host(a.wrapping_add(off as u64)),
            Place::Device(a) => Place::Device(a.wrapping_add(off as u64)),
        }
    }
}

fn host(e: DmaError) -> JobStatus {
    let _ = e;
    JobStatus::HostDma
}

/// A job's view of the machine.
pub(super) struct JobCtx<'a> {
    pub dev: &'a Device,
    pub v: u16,
    pub dma: &'a DmaTable,
    pub tlb: &'a mut Tlb,
}

impl JobCtx<'_> {
    /// Runs one job.
    pub fn run(&mut self, s: &Sqe, head: SqeHead, buf: &mut [u8]) -> Outcome {
        let bad = (JobStatus::BadDescriptor, 0, 0);
        if head.version != jobs::VERSION
            || head.flags & !flags::ALL != 0
            || s.reserved.iter().any(|r| r.get() != 0)
            || head.phase & !1 != 0
        {
            return bad;
        }
        let Some(op) = JobOp::from_wire(head.op) else {
            return (JobStatus::BadOpcode, 0, 0);
        };
        let len = s.len.get() as usize;
        if len == 0 || len > jobs::MAX_JOB_LEN as usize {
            return bad;
        }
        let place = |bit: u8, a: u64| {
            if head.flags & bit != 0 {
                Place::Device(a)
            } else {
                Place::Host(a)
            }
        };
        // A range that runs past the top of the address space is malformed, not wrapped.
        if s.src.get().checked_add(len as u64).is_none()
            || s.dst.get().checked_add(len as u64).is_none()
        {
            return bad;
        }
        let src = place(flags::SRC_DEVICE, s.src.get());
        let dst = place(flags::DST_DEVICE, s.dst.get());
        let value = s.value.get();
        if head.flags & flags::ALL != 0 {
            self.refresh_tlb();
        }
        let r = match op {
            JobOp::Copy if value != 0 => return bad,
            JobOp::Copy => self.copy(src, dst, len, buf).map(|_| len as u64),
            JobOp::Fill if value > 0xFF => return bad,
            JobOp::Fill => {
                buf.fill(value as u8);
                (0..len)
                    .step_by(CHUNK)
                    .try_for_each(|o| self.write(dst.at(o), &buf[..CHUNK.min(len - o)]))
                    .map(|_| len as u64)
            }
            JobOp::Crc32c => (0..len)
                .step_by(CHUNK)
                .try_fold(value, |crc, o| {
                    let n = CHUNK.min(len - o);
                    self.read(src.at(o), &mut buf[..n])?;
                    Ok(jobs::crc32c(crc, &buf[..n]))
                })
                .map(u64::from),
            JobOp::Sha256 if value != 0 => return bad,
            JobOp::Sha256 => {
                use sha2::Digest;
                let mut h = sha2::Sha256::new();
                (0..len)
                    .step_by(CHUNK)
                    .try_for_each(|o| {
                        let n = CHUNK.min(len - o);
                        self.read(src.at(o), &mut buf[..n])?;
                        h.update(&buf[..n]);
                        Ok(())
                    })
                    .and_then(|_| self.write(dst, &h.finalize()))
                    .map(|_| 0)
            }
        };
        match r {
            Ok(result) => (JobStatus::Ok, result, len as u64),
            Err(st) => (st, 0, 0),
        }
    }

    /// Copies with `memmove` semantics: overlapping ranges copy as if through a temporary.
    fn copy(
        &mut self,
        src: Place,
        dst: Place,
        len: usize,
        buf: &mut [u8],
    ) -> Result<(), JobStatus> {
        let offsets: Vec<usize> = (0..len).step_by(CHUNK).collect();
        let backwards = match (src, dst) {
            (Place::Host(s), Place::Host(d)) | (Place::Device(s), Place::Device(d)) => {
                d > s && d < s.saturating_add(len as u64)
            }
            _ => false,
        };
        let mut step = |o: usize| {
            let n = CHUNK.min(len - o);
            self.read(src.at(o), &mut buf[..n])?;
            self.write(dst.at(o), &buf[..n])
        };
        if backwards {
            offsets.iter().rev().try_for_each(|&o| step(o))
        } else {
            offsets.iter().try_for_each(|&o| step(o))
        }
    }

    fn read(&mut self, p: Place, out: &mut [u8]) -> Result<(), JobStatus> {
        match p {
            Place::Host(a) => self.dma.read(a, out).map_err(host),
            Place::Device(va) => self.device(va, out.len(), false, |mem, g, off, r| {
                mem.read(g, off, &mut out[r]);
            }),
        }
    }

    fn write(&mut self, p: Place, data: &[u8]) -> Result<(), JobStatus> {
        match p {
            Place::Host(a) => self.dma.write(a, data).map_err(host),
            Place::Device(va) => self.device(va, data.len(), true, |mem, g, off, r| {
                mem.write(g, off, &data[r]);
            }),
        }
    }

    /// Walks `len` bytes of device memory from VF virtual address `va` a page at a time,
    /// translating each page before any byte moves (a fault leaves memory untouched).
    fn device(
        &mut self,
        va: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(&mut DevMem, u32, usize, std::ops::Range<usize>),
    ) -> Result<(), JobStatus> {
        let mut pages = Vec::with_capacity(len / PAGE as usize + 2);
        let mut done = 0usize;
        while done < len {
            let a = va.checked_add(done as u64).ok_or(JobStatus::Stage1Fault)?;
            let within = (a & (PAGE - 1)) as usize;
            let n = (PAGE as usize - within).min(len - done);
            let dev = self.translate(a, write)?;
            pages.push((dev, done..done + n));
            done += n;
        }
        let shift = self.dev.board.granule_shift;
        let mut mem = lock(&self.dev.devmem);
        for (dev, r) in pages {
            let g = (dev >> shift) as u32;
            let off = (dev & ((1u64 << shift) - 1)) as usize;
            f(&mut mem, g, off, r);
        }
        Ok(())
    }

    /// Starts the IOTLB over if what its translations were made under has changed.
    fn refresh_tlb(&mut self) {
        let d = self.dev;
        let key = (
            d.bank(self.v, vf_bank::GENERATION),
            ring_addr(
                d.bank(self.v, vf_bank::XLAT_ROOT_LO),
                d.bank(self.v, vf_bank::XLAT_ROOT_HI),
            ),
            d.bank(self.v, vf_bank::XLAT_PAGES),
            d.xlat_epoch(self.v),
        );
        if self.tlb.key != key {
            self.tlb.key = key;
            self.tlb.map.clear();
        }
    }

    /// VF virtual address → device address, through the IOTLB or both stages.
    fn translate(&mut self, va: u64, write: bool) -> Result<u64, JobStatus> {
        let page = va >> xlat::PAGE_SHIFT;
        let within = va & (PAGE - 1);
        if let Some(&(dev, writable)) = self.tlb.map.get(&page) {
            self.tlb.hits = self.tlb.hits.saturating_add(1);
            return if write && !writable {
                Err(JobStatus::Stage1Fault)
            } else {
                Ok(dev | within)
            };
        }
        self.tlb.misses = self.tlb.misses.saturating_add(1);
        let (_, root, pages, _) = self.tlb.key;
        if page >= pages as u64 {
            return Err(JobStatus::Stage1Fault);
        }
        // The table lives in the VF's own memory: reading it goes through stage 2 too.
        let at = self.stage2(root + page * xlat::ENTRY_SIZE as u64)?;
        let mut e = [0u8; xlat::ENTRY_SIZE];
        {
            let shift = self.dev.board.granule_shift;
            let mem = lock(&self.dev.devmem);
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
        let dev = self.stage2(e & xlat::ADDR_MASK)?;
        if self.tlb.map.len() >= TLB_ENTRIES {
            self.tlb.map.clear();
        }
        self.tlb.map.insert(page, (dev, writable));
        if write && !writable {
            return Err(JobStatus::Stage1Fault);
        }
        Ok(dev | within)
    }

    /// VF-physical (VF-local device memory) address → device address, as the firmware's
    /// translation table says; a refusal is a fault on this VF.
    fn stage2(&mut self, pa: u64) -> Result<u64, JobStatus> {
        let d = self.dev;
        let shift = d.board.granule_shift;
        let local = pa >> shift;
        let granules = d.bank(self.v, vf_bank::MEM_GRANULES) as u64;
        let tt_len = d.bank(self.v, vf_bank::TT_LEN) as u64;
        let fault = if local >= granules || local >= tt_len {
            VfFault::MemOutOfWindow
        } else {
            let base = d.bank(self.v, vf_bank::TT_BASE) as usize;
            let e = TtEntry(d.bar0.read32(pf::tt_entry(base + local as usize)));
            match e.granule() {
                Some(g) => return Ok((g as u64) << shift | (pa & ((1u64 << shift) - 1))),
                None => VfFault::TranslationMiss,
            }
        };
        d.fault(self.v, fault);
        Err(JobStatus::Stage2Fault)
    }
}

fn ring_addr(lo: u32, hi: u32) -> u64 {
    (hi as u64) << 32 | lo as u64
}
