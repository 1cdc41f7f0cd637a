//! The device model's `unsafe`: shared memory (memfd + mmap) with atomic 32-bit access. Client
//! DMA memory is never mapped here (see `dma`). Everything else is safe code on top. Plain
//! accesses are relaxed single-copy atomics (never torn); ordering comes only from
//! `publish32`/`observe32` at handoff words (`shared_abi::ordering`), as on the other sides.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

/// A shared mapping of a memfd we create: the register file or device memory.
#[derive(Debug)]
pub struct SharedMem {
    fd: Option<OwnedFd>,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: all access to the mapping goes through atomics; the pointer is never handed out.
unsafe impl Send for SharedMem {}
// SAFETY: as above: concurrent atomic access from several threads is sound.
unsafe impl Sync for SharedMem {}

impl SharedMem {
    /// A new zeroed memfd of `len` bytes, mapped shared.
    pub fn create(name: &str, len: usize) -> std::io::Result<Self> {
        let fd = nix::sys::memfd::memfd_create(
            &std::ffi::CString::new(name).unwrap_or_default(),
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )?;
        nix::unistd::ftruncate(&fd, len as i64)?;
        // The fd closes here: the mapping is the only way to the file, so nobody can resize it.
        Self::map(fd.as_fd(), len)
    }

    /// A register file of `len` zeroed bytes of which only `window` (offset, length; page
    /// aligned) can be handed to clients. The window lives in its own memfd, sized to end with
    /// the window (so file offsets equal register offsets) and sealed against resizing; it is
    /// mapped over that part of a private memfd, which holds everything else and never leaves
    /// this process. [`SharedMem::fd`] is the window's fd.
    pub fn create_with_window(
        name: &str,
        len: usize,
        window: (usize, usize),
    ) -> std::io::Result<Self> {
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let (off, wlen) = window;
        let page = 4096;
        let end = off.checked_add(wlen).filter(|&e| e <= len);
        if end.is_none() || off % page != 0 || wlen % page != 0 || wlen == 0 {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        let mut m = Self::create(name, len)?; // private: mapped here and nowhere else
        let cname = std::ffi::CString::new(format!("{name}-window")).unwrap_or_default();
        let wfd = memfd_create(
            &cname,
            MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
        )?;
        nix::unistd::ftruncate(&wfd, (off + wlen) as i64)?;
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&wfd),
            FcntlArg::F_ADD_SEALS(seals),
        )?;
        let at = std::num::NonZeroUsize::new(m.ptr.as_ptr() as usize + off)
            .ok_or(std::io::ErrorKind::InvalidInput)?;
        let nz = std::num::NonZeroUsize::new(wlen).ok_or(std::io::ErrorKind::InvalidInput)?;
        // SAFETY: `at..at + wlen` lies inside the mapping `m` owns (checked above), which no
        // reference points into yet; MAP_FIXED replaces those pages with the window's, and
        // `m`'s Drop unmaps the whole range, window included.
        unsafe {
            mmap(
                Some(at),
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
                wfd.as_fd(),
                off as i64,
            )?
        };
        m.fd = Some(wfd);
        Ok(m)
    }

    /// Maps `len` bytes of our own memfd `fd`, read-write and shared.
    fn map(fd: BorrowedFd<'_>, len: usize) -> std::io::Result<Self> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let nz = std::num::NonZeroUsize::new(len).ok_or(std::io::ErrorKind::InvalidInput)?;
        let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
        // SAFETY: a fresh mapping (no address hint) aliases no Rust object; it is unmapped only
        // in Drop, and all accesses are bounds-checked atomics. The file is ours and was sized
        // to `len` before this call; no client holds an fd that could shrink it (a client only
        // ever gets the sealed window of `create_with_window`).
        let p = unsafe { mmap(None, nz, prot, MapFlags::MAP_SHARED, fd, 0)? };
        Ok(SharedMem {
            fd: None,
            ptr: p.cast(),
            len,
        })
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The memfd a client may map: the sealed window of [`SharedMem::create_with_window`]
    /// (none for [`SharedMem::create`]).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }

    fn word(&self, off: usize) -> Option<&AtomicU32> {
        if !off.is_multiple_of(4) || off.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: in bounds and aligned (the mapping is page-aligned); AtomicU32 has the layout
        // of u32 and atomic access is sound for memory shared with other processes.
        Some(unsafe { &*(self.ptr.as_ptr().add(off) as *const AtomicU32) })
    }

    fn byte(&self, off: usize) -> Option<&AtomicU8> {
        if off >= self.len {
            return None;
        }
        // SAFETY: in bounds; AtomicU8 has the layout of u8.
        Some(unsafe { &*(self.ptr.as_ptr().add(off) as *const AtomicU8) })
    }

    /// Reads a 32-bit word (all ones outside).
    pub fn read32(&self, off: usize) -> u32 {
        self.word(off)
            .map_or(u32::MAX, |w| w.load(Ordering::Relaxed))
    }
    /// Writes a 32-bit word (dropped outside).
    pub fn write32(&self, off: usize, v: u32) {
        if let Some(w) = self.word(off) {
            w.store(v, Ordering::Relaxed);
        }
    }
    /// Writes a handoff word (`shared_abi::ordering`): earlier writes are visible first.
    pub fn publish32(&self, off: usize, v: u32) {
        shared_abi::ordering::publish();
        self.write32(off, v);
    }
    /// Reads a handoff word (`shared_abi::ordering`): later reads happen after it.
    pub fn observe32(&self, off: usize) -> u32 {
        let v = self.read32(off);
        shared_abi::ordering::observe();
        v
    }
    /// Compare-and-swap on a word.
    pub fn cas32(&self, off: usize, old: u32, new: u32) -> bool {
        self.word(off).is_some_and(|w| {
            w.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
    }
    /// Copies bytes out; false if out of bounds.
    pub fn read(&self, off: usize, buf: &mut [u8]) -> bool {
        if off.checked_add(buf.len()).is_none_or(|e| e > self.len) {
            return false;
        }
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self
                .byte(off + i)
                .map_or(0xFF, |a| a.load(Ordering::Relaxed));
        }
        true
    }
    /// Copies bytes in; false if out of bounds.
    pub fn write(&self, off: usize, data: &[u8]) -> bool {
        if off.checked_add(data.len()).is_none_or(|e| e > self.len) {
            return false;
        }
        for (i, b) in data.iter().enumerate() {
            if let Some(a) = self.byte(off + i) {
                a.store(*b, Ordering::Relaxed);
            }
        }
        true
    }
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from a successful mmap and nothing borrows the mapping beyond
        // `&self` methods, which cannot outlive `self`.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
    }
}

/// Writes 1 to an eventfd (interrupt delivery). Errors (a closed or full fd) are ignored: an
/// interrupt nobody listens to is lost, as on hardware.
pub fn signal_eventfd(fd: BorrowedFd<'_>) {
    let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
}
