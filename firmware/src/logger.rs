//! The rule the image's `defmt` global logger keeps: one frame at a time. defmt's contract
//! for `Logger::acquire` is to panic when the logger is already taken (a log statement inside
//! a log statement, or in an interrupt of one); returning instead would let `write` and
//! `release` run on a frame that is not theirs, with a second `&mut` to the one encoder.

use core::sync::atomic::{AtomicBool, Ordering};

/// Whether a log frame is open.
#[derive(Debug)]
pub struct FrameLock(AtomicBool);

impl FrameLock {
    /// Free.
    pub const fn new() -> Self {
        FrameLock(AtomicBool::new(false))
    }

    /// Opens a frame. Panics if one is open: the encoder must never be aliased.
    pub fn take(&self) {
        if self.0.swap(true, Ordering::Acquire) {
            panic!("defmt logger taken reentrantly");
        }
    }

    /// Closes the frame [`FrameLock::take`] opened.
    pub fn give(&self) {
        self.0.store(false, Ordering::Release);
    }

    /// Whether a frame is open (the panic handler logs only when none is).
    pub fn held(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl Default for FrameLock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_follow_one_another() {
        let l = FrameLock::new();
        l.take();
        assert!(l.held());
        l.give();
        assert!(!l.held());
        l.take();
        l.give();
    }

    #[test]
    #[should_panic(expected = "reentrantly")]
    fn a_frame_inside_a_frame_panics() {
        let l = FrameLock::new();
        l.take();
        l.take();
    }
}
