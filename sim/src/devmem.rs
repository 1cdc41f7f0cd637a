//! Device memory: the board's granules, allocated lazily so a 16 GiB board costs only what is
//! touched. Scrubbing drops granules (they read back as zero).

use std::collections::HashMap;

/// Sparse device memory.
#[derive(Debug)]
pub struct DevMem {
    granule_shift: u8,
    granules: u32,
    pages: HashMap<u32, Box<[u8]>>,
}

impl DevMem {
    /// `granules` granules of `1 << shift` bytes.
    pub fn new(granules: u32, shift: u8) -> Self {
        DevMem {
            granule_shift: shift,
            granules,
            pages: HashMap::new(),
        }
    }

    fn size(&self) -> usize {
        1usize << self.granule_shift
    }

    /// Reads within one granule. False if the granule does not exist.
    pub fn read(&self, granule: u32, off: usize, buf: &mut [u8]) -> bool {
        if granule >= self.granules || off + buf.len() > self.size() {
            return false;
        }
        match self.pages.get(&granule) {
            Some(p) => buf.copy_from_slice(&p[off..off + buf.len()]),
            None => buf.fill(0),
        }
        true
    }

    /// Writes within one granule.
    pub fn write(&mut self, granule: u32, off: usize, data: &[u8]) -> bool {
        if granule >= self.granules || off + data.len() > self.size() {
            return false;
        }
        let size = self.size();
        let p = self
            .pages
            .entry(granule)
            .or_insert_with(|| vec![0u8; size].into_boxed_slice());
        p[off..off + data.len()].copy_from_slice(data);
        true
    }

    /// Zeroes `[base, base + count)`. False if out of range (nothing changes).
    pub fn scrub(&mut self, base: u32, count: u32) -> bool {
        let Some(end) = base.checked_add(count) else {
            return false;
        };
        if end > self.granules {
            return false;
        }
        self.pages.retain(|g, _| *g < base || *g >= end);
        true
    }

    /// Granules holding data.
    pub fn resident(&self) -> usize {
        self.pages.len()
    }
}
