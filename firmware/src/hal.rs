//! The hardware the firmware needs: a 32-bit register file (PF BAR0 as the device sees it) and
//! a millisecond clock. Waits use `embedded_hal::delay::DelayNs`.

/// The device's register file. Offsets are byte offsets from `shared_abi::regs::pf`; an
/// offset outside the file or not 4-byte aligned reads as all ones and drops writes, as a bus
/// would.
pub trait Regs {
    /// Reads the register at `off`.
    fn read32(&self, off: usize) -> u32;
    /// Writes the register at `off`.
    fn write32(&self, off: usize, val: u32);

    /// Writes a handoff word (`shared_abi::ordering`): everything written before it is
    /// visible to a reader that observes it.
    fn publish32(&self, off: usize, val: u32) {
        shared_abi::ordering::publish();
        self.write32(off, val);
    }

    /// Reads a handoff word (`shared_abi::ordering`): nothing after it is read before it.
    fn observe32(&self, off: usize) -> u32 {
        let v = self.read32(off);
        shared_abi::ordering::observe();
        v
    }

    /// Swaps `new` in if the register holds `old`; whether it did. Register files that other
    /// agents write concurrently (the host's lock word) must make this atomic; the default
    /// suits files only the firmware writes.
    fn cas32(&self, off: usize, old: u32, new: u32) -> bool {
        if self.read32(off) != old {
            return false;
        }
        self.write32(off, new);
        true
    }

    /// Copies `buf.len()` bytes starting at `off` (4-byte aligned) out of the register file.
    fn read_bytes(&self, off: usize, buf: &mut [u8]) {
        for (i, chunk) in buf.chunks_mut(4).enumerate() {
            let w = self.read32(off + i * 4).to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }

    /// Copies `data` into the register file at `off` (4-byte aligned). A short tail is padded
    /// with zeros.
    fn write_bytes(&self, off: usize, data: &[u8]) {
        for (i, chunk) in data.chunks(4).enumerate() {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            self.write32(off + i * 4, u32::from_le_bytes(w));
        }
    }
}

impl<T: Regs + ?Sized> Regs for &T {
    fn read32(&self, off: usize) -> u32 {
        (**self).read32(off)
    }
    fn write32(&self, off: usize, val: u32) {
        (**self).write32(off, val)
    }
    fn publish32(&self, off: usize, val: u32) {
        (**self).publish32(off, val)
    }
    fn observe32(&self, off: usize) -> u32 {
        (**self).observe32(off)
    }
    fn cas32(&self, off: usize, old: u32, new: u32) -> bool {
        (**self).cas32(off, old, new)
    }
    fn read_bytes(&self, off: usize, buf: &mut [u8]) {
        (**self).read_bytes(off, buf)
    }
    fn write_bytes(&self, off: usize, data: &[u8]) {
        (**self).write_bytes(off, data)
    }
}

/// Milliseconds since firmware start.
pub trait Clock {
    /// Current time.
    fn now_ms(&self) -> u64;
}

/// Milliseconds from the first reading of a monotonic millisecond counter (`now`, which
/// `start` remembers) to this one: full 64-bit, so an uptime never wraps (a 32-bit one
/// would after 49.7 days, and a mailbox lease spanning the wrap would never expire).
pub fn uptime_ms(start: &core::sync::atomic::AtomicU64, now: u64) -> u64 {
    use core::sync::atomic::Ordering;
    const UNSET: u64 = u64::MAX;
    match start.compare_exchange(UNSET, now, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => 0,
        Err(first) => now.saturating_sub(first),
    }
}

/// The value a fresh `start` for [`uptime_ms`] holds.
pub const UPTIME_UNSET: u64 = u64::MAX;

/// A clock that never advances (tests, boards without a timer).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoClock;

impl Clock for NoClock {
    fn now_ms(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn uptime_goes_past_32_bits_of_milliseconds() {
        let start = core::sync::atomic::AtomicU64::new(super::UPTIME_UNSET);
        assert_eq!(super::uptime_ms(&start, 5), 0);
        assert_eq!(super::uptime_ms(&start, 1_005), 1_000);
        // 49.7 days and more: a 32-bit counter would have wrapped to 10.
        assert_eq!(super::uptime_ms(&start, 5 + (1 << 32) + 10), (1 << 32) + 10);
    }
}
