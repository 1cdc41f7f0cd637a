//! A register file in RAM for host-side tests of the firmware alone. It models the two
//! side effects the firmware relies on: the scrubber completes at once, and `IRQ_RAISE`
//! writes are counted. The device model (`sim`) has the real register file.

use crate::hal::Regs;
use core::cell::Cell;
use shared_abi::pci::PF_BAR0_SIZE;
use shared_abi::regs::{pf, ScrubCtrl};

const WORDS: usize = (PF_BAR0_SIZE / 4) as usize;
/// Words per dirty-tracking page (4 KiB); the file has 64 pages, one bit each.
const PAGE_WORDS: usize = 1024;

/// PF BAR0 as plain memory.
#[derive(Debug)]
pub struct RamRegs {
    words: [Cell<u32>; WORDS],
    irqs: Cell<u32>,
    scrubbed: Cell<u64>,
    /// Pages written since the last [`RamRegs::take_dirty`] (bit n: bytes n·4 KiB ..).
    dirty: Cell<u64>,
}

impl Default for RamRegs {
    fn default() -> Self {
        Self::new()
    }
}

impl RamRegs {
    /// All zero.
    pub fn new() -> Self {
        RamRegs {
            words: [const { Cell::new(0) }; WORDS],
            irqs: Cell::new(0),
            scrubbed: Cell::new(0),
            dirty: Cell::new(0),
        }
    }
    /// Zeroes every register and counter (a power cycle).
    pub fn clear(&self) {
        self.words.iter().for_each(|w| w.set(0));
        self.irqs.set(0);
        self.scrubbed.set(0);
        self.dirty.set(0);
    }
    /// Interrupts raised so far.
    pub fn irqs(&self) -> u32 {
        self.irqs.get()
    }
    /// Granules scrubbed so far.
    pub fn scrubbed(&self) -> u64 {
        self.scrubbed.get()
    }
    /// A copy of every word (for "nothing changed" assertions).
    pub fn snapshot(&self, out: &mut [u32]) {
        for (o, w) in out.iter_mut().zip(self.words.iter()) {
            *o = w.get();
        }
    }
    /// Words in the file.
    pub const WORDS: usize = WORDS;

    /// The pages written since the last call (bit n: the 4 KiB page at n·4 KiB), and forgets
    /// them: what a fuzzer must restore between inputs, and all it must compare.
    pub fn take_dirty(&self) -> u64 {
        self.dirty.replace(0)
    }

    /// Marks `pages` written (puts back what [`RamRegs::take_dirty`] took).
    pub fn mark_dirty(&self, pages: u64) {
        self.dirty.set(self.dirty.get() | pages);
    }

    /// Copies the pages in `pages` from `from` (restoring a saved state page by page).
    pub fn copy_pages(&self, from: &RamRegs, pages: u64) {
        for p in (0..64).filter(|p| pages & (1 << p) != 0) {
            let r = p * PAGE_WORDS..(p + 1) * PAGE_WORDS;
            for (w, f) in self.words[r.clone()].iter().zip(&from.words[r]) {
                w.set(f.get());
            }
        }
    }

    /// The word offsets (bytes) in `pages` where this file and `other` differ.
    pub fn differences<'a>(
        &'a self,
        other: &'a RamRegs,
        pages: u64,
    ) -> impl Iterator<Item = usize> + 'a {
        let other: &[Cell<u32>] = &other.words;
        (0..64usize)
            .filter(move |p| pages & (1 << p) != 0)
            .flat_map(move |p| (p * PAGE_WORDS..(p + 1) * PAGE_WORDS).step_by(RUN))
            // Most words are equal (a refused message changes only bookkeeping): a run of
            // words is looked at word by word only if it differs at all.
            .filter(move |&r| differs(&self.words[r..r + RUN], &other[r..r + RUN]))
            .flat_map(|r| r..r + RUN)
            .filter(move |&i| self.words[i].get() != other[i].get())
            .map(|i| i * 4)
    }
}

/// Words compared as one run by [`RamRegs::differences`].
const RUN: usize = 32;

/// Whether two runs of words differ: their differences are OR-ed together, with one
/// comparison at the end (a comparison per word was most of a fuzz input's time, each one
/// traced by the fuzzer's instrumentation).
fn differs(a: &[Cell<u32>], b: &[Cell<u32>]) -> bool {
    a.iter().zip(b).fold(0, |d, (x, y)| d | (x.get() ^ y.get())) != 0
}

impl Regs for RamRegs {
    fn read32(&self, off: usize) -> u32 {
        if !off.is_multiple_of(4) {
            return u32::MAX;
        }
        self.words.get(off / 4).map_or(u32::MAX, Cell::get)
    }
    fn write32(&self, off: usize, val: u32) {
        if !off.is_multiple_of(4) {
            return;
        }
        if off == pf::SCRUB_CTRL.offset() && val & ScrubCtrl::GO.bits() != 0 {
            let n = self.read32(pf::SCRUB_COUNT.offset());
            self.scrubbed.set(self.scrubbed.get() + n as u64);
            self.words[off / 4].set(ScrubCtrl::DONE.bits());
            return;
        }
        if off == pf::IRQ_RAISE.offset() || off == pf::VF_IRQ_RAISE.offset() {
            self.irqs.set(self.irqs.get() + 1);
            return;
        }
        if let Some(w) = self.words.get(off / 4) {
            w.set(val);
            self.dirty
                .set(self.dirty.get() | 1 << (off / 4 / PAGE_WORDS));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    #[test]
    fn differences_name_every_differing_word_of_the_pages_asked_about() {
        let (a, b) = (RamRegs::new(), RamRegs::new());
        assert_eq!(a.differences(&b, u64::MAX).count(), 0);
        // One word in page 1, two in page 3 (its first and its last).
        for (off, v) in [(4096 + 8, 1), (3 * 4096, 7), (4 * 4096 - 4, 1 << 31)] {
            b.write32(off, v);
        }
        let all: Vec<usize> = a.differences(&b, u64::MAX).collect();
        assert_eq!(all, [4096 + 8, 3 * 4096, 4 * 4096 - 4]);
        let page3: Vec<usize> = a.differences(&b, 1 << 3).collect();
        assert_eq!(page3, [3 * 4096, 4 * 4096 - 4]);
        assert_eq!(a.differences(&b, !(1 << 1 | 1 << 3)).count(), 0);
    }
}
