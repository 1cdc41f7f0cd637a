//! The one access discipline for memory the host and the device share: the mailbox pages of
//! PF BAR0 today, queues in host memory with the data path.
//!
//! - Every access is a single, naturally aligned 32-bit access (bytes only inside the request
//!   and response buffers); no access is torn or merged.
//! - Data moves from one side to the other through a **handoff word**. The writer fills the
//!   data, then [`publish`]es the handoff word: a release barrier, then the store. The reader
//!   [`observe`]s the handoff word: the load, then an acquire barrier, and only then reads the
//!   data. Nothing else needs ordering.
//! - The handoff words of the mailbox, in the order they are published:
//!   [`HOST_PUBLISHES`] (the request: bytes and `MBOX_REQ_LEN` first) and
//!   [`DEVICE_PUBLISHES`] (the response: bytes and `MBOX_RESP_LEN` first).
//!
//! The barriers are `core::sync::atomic::fence`s: on x86 they only stop the compiler from
//! reordering (the hardware keeps stores in order); on weaker machines they emit the barrier
//! instructions. Each side's register accessor provides `publish32`/`observe32` built on
//! these two functions.

use crate::regs::{pf, Reg};
use core::sync::atomic::{fence, Ordering};

/// The writer's barrier: every write before it is visible to a reader that observes the
/// handoff word stored after it.
#[inline(always)]
pub fn publish() {
    fence(Ordering::Release);
}

/// The reader's barrier: nothing read after it is read before the handoff word loaded
/// before it.
#[inline(always)]
pub fn observe() {
    fence(Ordering::Acquire);
}

/// Handoff words the host publishes, in order: the doorbell hands over the request.
pub const HOST_PUBLISHES: &[Reg] = &[pf::MBOX_DOORBELL];

/// Handoff words the device publishes, in order: the doorbell it answered, then the state.
/// A reader observes `MBOX_DONE_DOORBELL` until it shows its own doorbell: `MBOX_STATE` may
/// still show the previous command's DONE when the new doorbell has not been seen yet.
pub const DEVICE_PUBLISHES: &[Reg] = &[pf::MBOX_DONE_DOORBELL, pf::MBOX_STATE];
