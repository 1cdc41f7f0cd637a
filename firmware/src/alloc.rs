//! The physical resource allocator: engines (time-shared: each VF gets the least-loaded ones,
//! so more VFs than engines share them under the QoS scheduler), device memory granules,
//! queues and MSI-X vectors (each an exclusive contiguous run). Fixed-size bitmaps sized for the largest board the
//! ABI describes; bits past the board's capacity are permanently taken. Every loop is bounded
//! by the bitmap size.

use shared_abi::board::Board;
use shared_abi::mailbox::Status;
use shared_abi::regs::{TT_POOL_ENTRIES, VF_MAX_QUEUES};

/// A fixed bitmap of `W * 64` units; a set bit is a used unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bitmap<const W: usize> {
    words: [u64; W],
}

impl<const W: usize> Bitmap<W> {
    /// Units this bitmap can describe.
    pub const CAPACITY: usize = W * 64;

    /// All of `usable` units free; the rest taken.
    pub fn new(usable: usize) -> Self {
        let mut b = Bitmap {
            words: [u64::MAX; W],
        };
        b.clear_range(0, usable.min(Self::CAPACITY));
        b
    }

    /// Whether `unit` is used (out of range counts as used).
    pub fn is_used(&self, unit: usize) -> bool {
        match self.words.get(unit / 64) {
            Some(w) => w & (1 << (unit % 64)) != 0,
            None => true,
        }
    }

    fn set(&mut self, unit: usize, used: bool) {
        if let Some(w) = self.words.get_mut(unit / 64) {
            if used {
                *w |= 1 << (unit % 64);
            } else {
                *w &= !(1 << (unit % 64));
            }
        }
    }

    /// Marks `[start, start+len)` used.
    pub fn set_range(&mut self, start: usize, len: usize) {
        for u in start..start.saturating_add(len).min(Self::CAPACITY) {
            self.set(u, true);
        }
    }

    /// Marks `[start, start+len)` free.
    pub fn clear_range(&mut self, start: usize, len: usize) {
        for u in start..start.saturating_add(len).min(Self::CAPACITY) {
            self.set(u, false);
        }
    }

    /// Whether every unit of `[start, start+len)` is free.
    pub fn range_free(&self, start: usize, len: usize) -> bool {
        match start.checked_add(len) {
            Some(end) if end <= Self::CAPACITY => (start..end).all(|u| !self.is_used(u)),
            _ => false,
        }
    }

    /// Free units.
    pub fn free(&self) -> usize {
        self.words.iter().map(|w| w.count_zeros() as usize).sum()
    }

    /// Free runs in ascending order, as (start, length); whole words are skipped or taken
    /// at once, so a mostly-full or mostly-free map costs a word per 64 units, not a test per
    /// unit (creating 64 VFs scanned the granule map bit by bit 64 times).
    fn free_runs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let mut u = 0usize;
        core::iter::from_fn(move || {
            // Skip used units.
            while u < Self::CAPACITY {
                let w = self.words[u / 64] >> (u % 64);
                if w == u64::MAX >> (u % 64) {
                    u = (u / 64 + 1) * 64;
                } else {
                    u += w.trailing_ones() as usize;
                    break;
                }
            }
            if u >= Self::CAPACITY {
                return None;
            }
            let start = u;
            // Take free units.
            while u < Self::CAPACITY {
                let w = self.words[u / 64] >> (u % 64);
                let free = (w.trailing_zeros() as usize).min(64 - u % 64);
                u += free;
                if free == 0 || !u.is_multiple_of(64) {
                    break;
                }
            }
            Some((start, u - start))
        })
    }

    /// First-fit search for `len` free contiguous units.
    pub fn find_run(&self, len: usize) -> Option<usize> {
        if len == 0 {
            return None;
        }
        self.free_runs()
            .find(|&(_, n)| n >= len)
            .map(|(start, _)| start)
    }

    /// Longest run of free units.
    pub fn largest_run(&self) -> usize {
        self.free_runs().map(|(_, n)| n).max().unwrap_or(0)
    }
}

/// Granule bitmap (8192 granules).
pub type GranuleMap = Bitmap<{ TT_POOL_ENTRIES / 64 }>;
/// Queue bitmap (256 queues).
pub type QueueMap = Bitmap<{ VF_MAX_QUEUES / 64 }>;
/// Vector bitmap (2048 vectors).
pub type VectorMap = Bitmap<{ shared_abi::pci::VF_MAX_MSIX_VECTORS as usize / 64 }>;

/// A contiguous run of units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Run {
    /// First unit.
    pub base: u32,
    /// Units.
    pub len: u32,
}

impl Run {
    /// One past the last unit.
    pub const fn end(&self) -> u32 {
        self.base + self.len
    }
}

/// What one VF holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allocation {
    /// Engines (bit n = engine n).
    pub engines: u32,
    /// Device memory granules.
    pub mem: Run,
    /// Physical queues.
    pub queues: Run,
    /// Device MSI-X vectors.
    pub vectors: Run,
}

/// A request in units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Want {
    /// Engines.
    pub engines: u32,
    /// Granules.
    pub granules: u32,
    /// Queues.
    pub queues: u32,
    /// Vectors.
    pub vectors: u32,
}

/// Free resources of the whole device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool {
    /// VFs placed on each engine.
    load: [u8; 32],
    engine_count: u8,
    mem: GranuleMap,
    queues: QueueMap,
    vectors: VectorMap,
}

impl Pool {
    /// Everything on `board` free. The board must be valid.
    pub fn new(board: &Board) -> Self {
        Pool {
            load: [0; 32],
            engine_count: board.engines.min(32),
            mem: GranuleMap::new(board.mem_granules as usize),
            queues: QueueMap::new(board.queues as usize),
            vectors: VectorMap::new(board.vectors as usize),
        }
    }

    /// Engines no VF runs on.
    pub fn free_engines(&self) -> u32 {
        (0..self.engine_count as usize)
            .filter(|&e| self.load[e] == 0)
            .fold(0, |m, e| m | 1 << e)
    }

    /// VFs placed on engine `e`.
    pub fn engine_load(&self, e: usize) -> u8 {
        self.load.get(e).copied().unwrap_or(0)
    }

    fn all_engines(&self) -> u32 {
        if self.engine_count >= 32 {
            u32::MAX
        } else {
            (1u32 << self.engine_count) - 1
        }
    }

    /// The `n` least-loaded engines outside `exclude` (lowest index first on ties).
    fn least_loaded(&self, n: u32, exclude: u32) -> u32 {
        let mut out = 0u32;
        for _ in 0..n.min(32) {
            let pick = (0..self.engine_count as usize)
                .filter(|&e| (exclude | out) & (1 << e) == 0)
                .min_by_key(|&e| (self.load[e], e));
            match pick {
                Some(e) => out |= 1 << e,
                None => break,
            }
        }
        out
    }

    fn load_engines(&mut self, mask: u32, up: bool) {
        for e in 0..32 {
            if mask & (1 << e) != 0 {
                self.load[e] = if up {
                    self.load[e].saturating_add(1)
                } else {
                    self.load[e].saturating_sub(1)
                };
            }
        }
    }
    /// Granule map.
    pub fn mem(&self) -> &GranuleMap {
        &self.mem
    }
    /// Queue map.
    pub fn queues(&self) -> &QueueMap {
        &self.queues
    }
    /// Vector map.
    pub fn vectors(&self) -> &VectorMap {
        &self.vectors
    }

    /// Allocates `want`, or fails and changes nothing. Runs are first-fit; engines are the
    /// lowest free ones.
    pub fn allocate(&mut self, want: Want) -> Result<Allocation, Status> {
        if want.engines == 0 || want.granules == 0 || want.queues == 0 || want.vectors == 0 {
            return Err(Status::InvalidArgument);
        }
        if want.engines > self.engine_count as u32 {
            return Err(Status::OutOfResources);
        }
        let mem = run(&self.mem, want.granules)?;
        let queues = run(&self.queues, want.queues)?;
        let vectors = run(&self.vectors, want.vectors)?;
        let engines = self.least_loaded(want.engines, 0);
        self.load_engines(engines, true);
        self.mem.set_range(mem.base as usize, mem.len as usize);
        self.queues
            .set_range(queues.base as usize, queues.len as usize);
        self.vectors
            .set_range(vectors.base as usize, vectors.len as usize);
        Ok(Allocation {
            engines,
            mem,
            queues,
            vectors,
        })
    }

    /// Takes exactly the units of `a`, or fails and changes nothing if any is not free.
    pub fn take(&mut self, a: &Allocation) -> Result<(), Status> {
        let free = a.engines & !self.all_engines() == 0
            && self.mem.range_free(a.mem.base as usize, a.mem.len as usize)
            && self
                .queues
                .range_free(a.queues.base as usize, a.queues.len as usize)
            && self
                .vectors
                .range_free(a.vectors.base as usize, a.vectors.len as usize);
        if !free {
            return Err(Status::InvalidState);
        }
        self.load_engines(a.engines, true);
        self.mem.set_range(a.mem.base as usize, a.mem.len as usize);
        self.queues
            .set_range(a.queues.base as usize, a.queues.len as usize);
        self.vectors
            .set_range(a.vectors.base as usize, a.vectors.len as usize);
        Ok(())
    }

    /// Returns an allocation to the pool.
    pub fn release(&mut self, a: &Allocation) {
        self.load_engines(a.engines, false);
        self.mem
            .clear_range(a.mem.base as usize, a.mem.len as usize);
        self.queues
            .clear_range(a.queues.base as usize, a.queues.len as usize);
        self.vectors
            .clear_range(a.vectors.base as usize, a.vectors.len as usize);
    }

    /// Resizes `a` in place: runs keep their base and grow or shrink at the end; engines keep
    /// the lowest of their current ones and add the lowest free ones. Fails and changes
    /// nothing when a run cannot grow in place.
    pub fn resize(&mut self, a: &Allocation, want: Want) -> Result<Allocation, Status> {
        if want.engines == 0 || want.granules == 0 || want.queues == 0 || want.vectors == 0 {
            return Err(Status::InvalidArgument);
        }
        let mut trial = *self;
        trial.release(a);
        if want.engines > trial.engine_count as u32 {
            return Err(Status::OutOfResources);
        }
        let mem = grow_in_place(&trial.mem, a.mem, want.granules, Status::Fragmented)?;
        let queues = grow_in_place(&trial.queues, a.queues, want.queues, Status::OutOfResources)?;
        let vectors = grow_in_place(
            &trial.vectors,
            a.vectors,
            want.vectors,
            Status::OutOfResources,
        )?;
        // Keep current engines first so work in flight stays where it is.
        let kept = lowest_bits(a.engines, want.engines.min(a.engines.count_ones()));
        let extra = trial.least_loaded(want.engines - kept.count_ones(), kept);
        let engines = kept | extra;
        trial.load_engines(engines, true);
        trial.mem.set_range(mem.base as usize, mem.len as usize);
        trial
            .queues
            .set_range(queues.base as usize, queues.len as usize);
        trial
            .vectors
            .set_range(vectors.base as usize, vectors.len as usize);
        *self = trial;
        Ok(Allocation {
            engines,
            mem,
            queues,
            vectors,
        })
    }
}

fn run<const W: usize>(map: &Bitmap<W>, len: u32) -> Result<Run, Status> {
    match map.find_run(len as usize) {
        Some(base) => Ok(Run {
            base: base as u32,
            len,
        }),
        None if map.free() >= len as usize => Err(Status::Fragmented),
        None => Err(Status::OutOfResources),
    }
}

fn grow_in_place<const W: usize>(
    free_map: &Bitmap<W>,
    cur: Run,
    len: u32,
    on_conflict: Status,
) -> Result<Run, Status> {
    if free_map.range_free(cur.base as usize, len as usize) {
        Ok(Run {
            base: cur.base,
            len,
        })
    } else if free_map.free() < len as usize {
        Err(Status::OutOfResources)
    } else {
        Err(on_conflict)
    }
}

/// The `n` lowest set bits of `mask` (fewer if it has fewer).
pub fn lowest_bits(mask: u32, n: u32) -> u32 {
    let mut out = 0;
    let mut m = mask;
    for _ in 0..n.min(32) {
        if m == 0 {
            break;
        }
        let bit = m & m.wrapping_neg();
        out |= bit;
        m &= !bit;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-at-a-time run search against a unit-at-a-time reference.
    #[test]
    fn runs_match_a_unit_by_unit_scan() {
        let naive = |b: &GranuleMap, len: usize| {
            let mut run = 0;
            for u in 0..GranuleMap::CAPACITY {
                if b.is_used(u) {
                    run = 0;
                } else {
                    run += 1;
                    if run == len {
                        return Some(u + 1 - len);
                    }
                }
            }
            None
        };
        let largest = |b: &GranuleMap| {
            let (mut best, mut run) = (0, 0);
            for u in 0..GranuleMap::CAPACITY {
                run = if b.is_used(u) { 0 } else { run + 1 };
                best = best.max(run);
            }
            best
        };
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for case in 0..300 {
            let mut b = GranuleMap::new(8192 - (case % 7) * 64 - case % 5);
            for _ in 0..(case % 40) {
                let start = (next() % 8192) as usize;
                let len = (next() % [3, 70, 700][case % 3]) as usize;
                if next() % 2 == 0 {
                    b.set_range(start, len);
                } else {
                    b.clear_range(start, len);
                }
            }
            assert_eq!(b.largest_run(), largest(&b), "case {case}");
            for len in [1, 2, 63, 64, 65, 128, 500, 4096, 8192, 9000] {
                assert_eq!(b.find_run(len), naive(&b, len), "case {case} len {len}");
            }
        }
    }

    #[test]
    fn default_board_equal_quarter() {
        let mut p = Pool::new(&Board::DEFAULT);
        let w = Want {
            engines: 4,
            granules: 2048,
            queues: 64,
            vectors: 512,
        };
        let a = p.allocate(w).unwrap();
        assert_eq!(a.engines, 0xF);
        assert_eq!(a.mem, Run { base: 0, len: 2048 });
        let b = p.allocate(w).unwrap();
        assert_eq!(b.engines, 0xF0);
        assert_eq!(b.mem.base, 2048);
        assert_eq!(p.mem.free(), 4096);
    }

    #[test]
    fn fragmentation_is_reported() {
        let mut p = Pool::new(&Board::DEFAULT);
        let w = Want {
            engines: 1,
            granules: 2048,
            queues: 1,
            vectors: 1,
        };
        let a = p.allocate(w).unwrap();
        let _b = p.allocate(w).unwrap();
        let c = p.allocate(w).unwrap();
        let _d = p.allocate(w).unwrap();
        p.release(&a);
        p.release(&c);
        let before = p;
        let big = Want {
            engines: 1,
            granules: 4096,
            queues: 1,
            vectors: 1,
        };
        assert_eq!(p.allocate(big), Err(Status::Fragmented));
        assert_eq!(p, before, "a failed allocation changes nothing");
        let huge = Want {
            engines: 1,
            granules: 8192,
            queues: 1,
            vectors: 1,
        };
        assert_eq!(p.allocate(huge), Err(Status::OutOfResources));
    }

    #[test]
    fn resize_in_place() {
        let mut p = Pool::new(&Board::DEFAULT);
        let a = p
            .allocate(Want {
                engines: 2,
                granules: 10,
                queues: 4,
                vectors: 4,
            })
            .unwrap();
        let b = p
            .resize(
                &a,
                Want {
                    engines: 3,
                    granules: 20,
                    queues: 8,
                    vectors: 2,
                },
            )
            .unwrap();
        assert_eq!(b.mem, Run { base: 0, len: 20 });
        assert_eq!(b.engines, 0b111);
        assert_eq!(b.vectors.len, 2);
        let _c = p
            .allocate(Want {
                engines: 1,
                granules: 1,
                queues: 1,
                vectors: 1,
            })
            .unwrap();
        let before = p;
        assert_eq!(
            p.resize(
                &b,
                Want {
                    engines: 3,
                    granules: 21,
                    queues: 8,
                    vectors: 2
                }
            ),
            Err(Status::Fragmented)
        );
        assert_eq!(p, before);
    }

    #[test]
    fn engines_are_shared_least_loaded_first() {
        let mut p = Pool::new(&Board::DEFAULT);
        let one = Want {
            engines: 1,
            granules: 1,
            queues: 1,
            vectors: 1,
        };
        let mut masks = [0u32; 20];
        for m in masks.iter_mut() {
            *m = p.allocate(one).unwrap().engines;
        }
        assert_eq!(
            masks[..16].iter().fold(0, |a, m| a | m),
            0xFFFF,
            "idle engines first"
        );
        assert_eq!(masks[16], 1, "then the least loaded, lowest index");
        assert_eq!(p.engine_load(0), 2);
        assert_eq!(p.engine_load(15), 1);
        assert_eq!(p.free_engines(), 0);
    }

    #[test]
    fn lowest_bits_works() {
        assert_eq!(lowest_bits(0b1011_0100, 2), 0b0001_0100);
        assert_eq!(lowest_bits(0b1, 5), 0b1);
        assert_eq!(lowest_bits(u32::MAX, 32), u32::MAX);
    }
}
