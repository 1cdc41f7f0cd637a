//! Volatile access to the real register file. The only module with `unsafe`.
#![allow(unsafe_code)]

use crate::hal::Regs;
use volatile_register::RW;

/// PF BAR0 as the device's own cores see it: a block of 32-bit registers at a fixed address.
#[derive(Debug)]
pub struct Mmio {
    base: *mut u32,
    len: usize,
}

impl Mmio {
    /// # Safety
    /// `base` must point to `len` bytes of device registers (or memory standing in for them),
    /// 4-byte aligned, valid for volatile reads and writes for the life of the program and not
    /// accessed through Rust references elsewhere.
    pub const unsafe fn new(base: *mut u32, len: usize) -> Self {
        Mmio { base, len }
    }

    fn reg(&self, off: usize) -> Option<&RW<u32>> {
        if !off.is_multiple_of(4) || off.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: the offset is aligned and inside the block `new`'s contract guarantees;
        // `RW<u32>` is a transparent wrapper performing volatile accesses only.
        Some(unsafe { &*(self.base.add(off / 4) as *const RW<u32>) })
    }
}

impl Regs for Mmio {
    fn read32(&self, off: usize) -> u32 {
        self.reg(off).map_or(u32::MAX, |r| r.read())
    }
    fn write32(&self, off: usize, val: u32) {
        if let Some(r) = self.reg(off) {
            // SAFETY: writing a device register has no memory-safety effect on Rust objects.
            unsafe { r.write(val) }
        }
    }
    fn cas32(&self, off: usize, old: u32, new: u32) -> bool {
        if !off.is_multiple_of(4) || off.checked_add(4).is_none_or(|e| e > self.len) {
            return false;
        }
        // SAFETY: aligned and inside the block `new`'s contract guarantees; the lock word is
        // memory the host also swaps atomically (the mailbox page), and AtomicU32 has u32's
        // layout.
        let a = unsafe { &*(self.base.add(off / 4) as *const core::sync::atomic::AtomicU32) };
        a.compare_exchange(
            old,
            new,
            core::sync::atomic::Ordering::AcqRel,
            core::sync::atomic::Ordering::Acquire,
        )
        .is_ok()
    }
}
