//! MSI-X of one function: the table and PBA a driver programs, plus the eventfds a vfio-user
//! client registered with SET_IRQS. A vector fires its eventfd unless masked (by the table's
//! per-vector mask, the capability's Function Mask, or a SET_IRQS MASK); a masked vector
//! becomes pending and fires when unmasked. Deciding happens under the device's lock; the
//! eventfd writes wait for [`Signals::send`], after it is dropped, and are made by the
//! function's own [`Courier`] thread: a client can make a write to its eventfd block (clear
//! O_NONBLOCK on the file it shares with us, fill the counter), and then only that function's
//! interrupts wait, never an engine, the firmware's bus or another function.

/// A vector range outside the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

/// Eventfds of vectors that fired, to write once the lock that decided it is dropped.
#[derive(Debug, Default)]
#[must_use = "an interrupt is delivered only when its eventfd is written"]
pub struct Signals(Vec<(Arc<Courier>, Arc<OwnedFd>)>);

impl Signals {
    /// Hands each eventfd to its function's courier (never blocks).
    pub fn send(self) {
        for (courier, fd) in self.0 {
            courier.deliver(fd);
        }
    }
}

/// Interrupts a function's courier may hold undelivered; more are dropped (the eventfds of
/// a courier that far behind are stuck on their client, or already signalled).
const COURIER_BACKLOG: usize = 256;

/// A function's interrupt writer: a thread of its own, started with the first interrupt and
/// ended with the function, that writes its eventfds in order.
#[derive(Debug, Default)]
pub struct Courier {
    tx: std::sync::Mutex<Option<std::sync::mpsc::SyncSender<Arc<OwnedFd>>>>,
}

impl Courier {
    fn deliver(&self, fd: Arc<OwnedFd>) {
        use std::sync::mpsc::TrySendError;
        let mut g = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<OwnedFd>>(COURIER_BACKLOG);
            let started = std::thread::Builder::new()
                .name("accel-msix".into())
                .spawn(move || {
                    rx.into_iter()
                        .for_each(|fd| crate::sys::signal_eventfd(fd.as_fd()))
                });
            if started.is_err() {
                return; // no thread to be had: the interrupt is lost, nothing waits
            }
            *g = Some(tx);
        }
        if let Some(tx) = g.as_ref() {
            if let Err(TrySendError::Disconnected(_)) = tx.try_send(fd) {
                *g = None;
            }
        }
    }
}

const ENTRY: usize = 16;

/// One function's MSI-X state.
#[derive(Debug, Default)]
pub struct Msix {
    table: Vec<[u32; 4]>,
    pending: Vec<bool>,
    client_mask: Vec<bool>,
    fds: Vec<Option<Arc<OwnedFd>>>,
    courier: Arc<Courier>,
    /// Interrupts delivered (for tests and stats).
    pub delivered: u64,
}

impl Msix {
    /// `vectors` entries, all masked (reset state).
    pub fn new(vectors: u16) -> Self {
        let n = vectors as usize;
        Msix {
            table: vec![[0, 0, 0, 1]; n],
            pending: vec![false; n],
            client_mask: vec![false; n],
            fds: (0..n).map(|_| None).collect(),
            courier: Arc::default(),
            delivered: 0,
        }
    }

    /// Vectors.
    pub fn len(&self) -> usize {
        self.table.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Resizes (a VF whose vector count changed); new entries start masked.
    pub fn resize(&mut self, vectors: u16) {
        let n = vectors as usize;
        self.table.resize(n, [0, 0, 0, 1]);
        self.pending.resize(n, false);
        self.client_mask.resize(n, false);
        self.fds.resize_with(n, || None);
    }

    /// Reads a table dword at byte offset `off` in the table.
    pub fn table_read(&self, off: usize) -> Option<u32> {
        self.table.get(off / ENTRY).map(|e| e[(off % ENTRY) / 4])
    }

    /// Writes a table dword; returns false if out of range.
    pub fn table_write(
        &mut self,
        off: usize,
        v: u32,
        enabled: bool,
        fn_mask: bool,
        out: &mut Signals,
    ) -> bool {
        let i = off / ENTRY;
        let Some(e) = self.table.get_mut(i) else {
            return false;
        };
        let w = (off % ENTRY) / 4;
        e[w] = if w == 3 { v & 1 } else { v };
        if w == 3 && v & 1 == 0 && self.pending[i] {
            self.fire(i, enabled, fn_mask, out);
        }
        true
    }

    /// Reads a PBA dword.
    pub fn pba_read(&self, off: usize) -> u32 {
        let base = (off / 4) * 32;
        (0..32).fold(0, |acc, b| {
            acc | ((self.pending.get(base + b).copied().unwrap_or(false) as u32) << b)
        })
    }

    /// Installs eventfds for `[start, start + fds.len())`; an empty list de-assigns `count`.
    pub fn set_eventfds(
        &mut self,
        start: usize,
        count: usize,
        fds: Vec<OwnedFd>,
    ) -> Result<(), OutOfRange> {
        if start.checked_add(count).is_none_or(|e| e > self.len()) {
            return Err(OutOfRange);
        }
        if fds.is_empty() {
            for slot in &mut self.fds[start..start + count] {
                *slot = None;
            }
            return Ok(());
        }
        if fds.len() != count {
            return Err(OutOfRange);
        }
        for (slot, fd) in self.fds[start..start + count].iter_mut().zip(fds) {
            *slot = Some(Arc::new(fd));
        }
        Ok(())
    }

    /// Drops every eventfd (client gone, or DATA_NONE with count 0).
    pub fn clear_eventfds(&mut self) {
        for f in &mut self.fds {
            *f = None;
        }
    }

    /// SET_IRQS MASK/UNMASK for a range.
    pub fn set_client_mask(
        &mut self,
        start: usize,
        count: usize,
        masked: bool,
        enabled: bool,
        fn_mask: bool,
        out: &mut Signals,
    ) -> Result<(), OutOfRange> {
        if start.checked_add(count).is_none_or(|e| e > self.len()) {
            return Err(OutOfRange);
        }
        for i in start..start + count {
            self.client_mask[i] = masked;
            if !masked && self.pending[i] {
                self.fire(i, enabled, fn_mask, out);
            }
        }
        Ok(())
    }

    /// Raises vector `i`: its eventfd goes to `out` to be written. Returns false if it does
    /// not exist.
    pub fn fire(&mut self, i: usize, enabled: bool, fn_mask: bool, out: &mut Signals) -> bool {
        if i >= self.len() {
            return false;
        }
        let masked = !enabled || fn_mask || self.table[i][3] & 1 != 0 || self.client_mask[i];
        // A client that drives MSI-X through SET_IRQS owns masking; the table mask applies to
        // drivers that program the table directly (no eventfd registered).
        let masked = if self.fds[i].is_some() {
            !enabled || self.client_mask[i]
        } else {
            masked
        };
        if masked || self.fds[i].is_none() {
            self.pending[i] = true;
            return true;
        }
        self.pending[i] = false;
        if let Some(fd) = &self.fds[i] {
            out.0.push((self.courier.clone(), fd.clone()));
            self.delivered += 1;
        }
        true
    }

    /// Signals vector `i`'s eventfd now, whatever the masks, bus mastering or pending state
    /// say: a client's own SET_IRQS TRIGGER, which kernel vfio-pci and libvfio-user carry
    /// out as a plain eventfd signal (it loops the client's notifier; no message goes on the
    /// bus). Nothing happens without an eventfd. False if the vector does not exist.
    pub fn signal(&mut self, i: usize, out: &mut Signals) -> bool {
        let Some(slot) = self.fds.get(i) else {
            return false;
        };
        if let Some(fd) = slot {
            out.0.push((self.courier.clone(), fd.clone()));
        }
        true
    }

    /// The function may send MSI-X again (enabled, bus master, function mask clear): every
    /// pending vector that is not masked itself goes now, as silicon sends what it held.
    pub fn flush_pending(&mut self, enabled: bool, fn_mask: bool, out: &mut Signals) {
        for i in 0..self.len() {
            if self.pending[i] {
                self.fire(i, enabled, fn_mask, out);
            }
        }
    }

    /// Whether vector `i` is pending.
    pub fn is_pending(&self, i: usize) -> bool {
        self.pending.get(i).copied().unwrap_or(false)
    }

    /// Reset state: all masked, nothing pending; eventfds stay (they belong to the client).
    pub fn reset(&mut self) {
        for e in &mut self.table {
            *e = [0, 0, 0, 1];
        }
        self.pending.iter_mut().for_each(|p| *p = false);
        self.client_mask.iter_mut().for_each(|m| *m = false);
    }
}
