//! A mapping of memory the host and the device share (a BAR window offered by vfio-user or by
//! kernel VFIO, or the device's own register file), with the one access discipline of
//! `shared_abi::ordering`: every access is a single relaxed atomic (never torn, merged or
//! elided), and ordering comes only from [`Shared::publish32`]/[`Shared::observe32`] at handoff
//! words. The server and the client both access shared words through this type.
#![allow(unsafe_code)]

use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

/// A shared mapping, unmapped on drop.
#[derive(Debug)]
pub struct Shared {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: every access to the mapping is a bounds-checked atomic; the pointer is never handed
// out, so moving the owner to another thread moves nothing else.
unsafe impl Send for Shared {}
// SAFETY: as above: concurrent atomic access from several threads (and processes) is sound.
unsafe impl Sync for Shared {}

impl Shared {
    /// Maps `len` bytes of `fd` from `offset`, read-write and shared.
    ///
    /// The caller trusts the other side not to shrink the file under the mapping (an access
    /// past a file's end raises SIGBUS): the device maps only memfds it made, the host only
    /// the device's BARs. Memory a client hands the device is never mapped (accel-sim's DMA
    /// table reads it with `pread`).
    pub fn map(fd: BorrowedFd<'_>, offset: u64, len: usize) -> std::io::Result<Self> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let nz = std::num::NonZeroUsize::new(len).ok_or(std::io::ErrorKind::InvalidInput)?;
        let off = i64::try_from(offset).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // SAFETY: a new mapping at a kernel-chosen address aliases no Rust object; it is
        // unmapped only in Drop.
        let p = unsafe {
            mmap(
                None,
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                off,
            )?
        };
        Ok(Shared { ptr: p.cast(), len })
    }

    /// Maps `fd` over `off..off + len` of this mapping (MAP_FIXED), from file offset `off`:
    /// how a device replaces part of a private register file with a window it shares.
    pub fn map_over(&mut self, fd: BorrowedFd<'_>, off: usize, len: usize) -> std::io::Result<()> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let page = 4096;
        let end = off.checked_add(len).filter(|&e| e <= self.len);
        if end.is_none() || !off.is_multiple_of(page) || !len.is_multiple_of(page) || len == 0 {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        let at = std::num::NonZeroUsize::new(self.ptr.as_ptr() as usize + off)
            .ok_or(std::io::ErrorKind::InvalidInput)?;
        let nz = std::num::NonZeroUsize::new(len).ok_or(std::io::ErrorKind::InvalidInput)?;
        let foff = i64::try_from(off).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // SAFETY: `at..at + len` lies inside the mapping `self` owns (checked above), and
        // `&mut self` means no reference into it is live; MAP_FIXED replaces those pages, and
        // Drop unmaps the whole range, replacement included.
        unsafe {
            mmap(
                Some(at),
                nz,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
                fd,
                foff,
            )?
        };
        Ok(())
    }

    /// Where the mapping starts in this process (for `VFIO_IOMMU_MAP_DMA`, which maps a
    /// process address range for a device).
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn word(&self, off: usize) -> Option<&AtomicU32> {
        if !off.is_multiple_of(4) || off.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: in bounds and aligned (the mapping is page-aligned); AtomicU32 has u32's
        // layout, and atomic access is sound for memory shared with other processes.
        Some(unsafe { &*(self.ptr.as_ptr().add(off) as *const AtomicU32) })
    }

    #[inline]
    fn byte(&self, off: usize) -> Option<&AtomicU8> {
        if off >= self.len {
            return None;
        }
        // SAFETY: in bounds; AtomicU8 has u8's layout.
        Some(unsafe { &*(self.ptr.as_ptr().add(off) as *const AtomicU8) })
    }

    /// Reads the dword at `off`; `None` if unaligned or out of range.
    #[inline]
    pub fn read32(&self, off: usize) -> Option<u32> {
        self.word(off).map(|w| w.load(Ordering::Relaxed))
    }
    /// Writes the dword at `off`; false if unaligned or out of range.
    #[inline]
    pub fn write32(&self, off: usize, v: u32) -> bool {
        self.word(off)
            .map(|w| w.store(v, Ordering::Relaxed))
            .is_some()
    }
    /// Writes a handoff word (`shared_abi::ordering`): every earlier write is visible first.
    #[inline]
    pub fn publish32(&self, off: usize, v: u32) -> bool {
        shared_abi::ordering::publish();
        self.write32(off, v)
    }
    /// Reads a handoff word (`shared_abi::ordering`): later reads happen after it.
    #[inline]
    pub fn observe32(&self, off: usize) -> Option<u32> {
        let v = self.read32(off);
        shared_abi::ordering::observe();
        v
    }
    /// Compare-and-swap on the dword at `off` (the mailbox lock word); `None` if out of range.
    #[inline]
    pub fn cas32(&self, off: usize, old: u32, new: u32) -> Option<bool> {
        self.word(off).map(|w| {
            w.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
    }
    /// Copies bytes out; false (nothing read) if out of range. Whole aligned dwords are read
    /// as dwords (a quarter of the accesses), the bytes around them one by one.
    #[inline]
    pub fn read(&self, off: usize, buf: &mut [u8]) -> bool {
        if off.checked_add(buf.len()).is_none_or(|e| e > self.len) {
            return false;
        }
        let head = off.next_multiple_of(4).saturating_sub(off).min(buf.len());
        let (head_buf, rest) = buf.split_at_mut(head);
        let mut at = off;
        for b in head_buf {
            *b = self.byte(at).map_or(0xFF, |a| a.load(Ordering::Relaxed));
            at += 1;
        }
        let mut words = rest.chunks_exact_mut(4);
        for w in &mut words {
            let v = self
                .word(at)
                .map_or(u32::MAX, |a| a.load(Ordering::Relaxed));
            w.copy_from_slice(&v.to_ne_bytes());
            at += 4;
        }
        for b in words.into_remainder() {
            *b = self.byte(at).map_or(0xFF, |a| a.load(Ordering::Relaxed));
            at += 1;
        }
        true
    }
    /// Copies bytes in; false (nothing written) if out of range. Whole aligned dwords are
    /// written as dwords, the bytes around them one by one.
    #[inline]
    pub fn write(&self, off: usize, data: &[u8]) -> bool {
        if off.checked_add(data.len()).is_none_or(|e| e > self.len) {
            return false;
        }
        let head = off.next_multiple_of(4).saturating_sub(off).min(data.len());
        let (head_data, rest) = data.split_at(head);
        let mut at = off;
        for b in head_data {
            if let Some(a) = self.byte(at) {
                a.store(*b, Ordering::Relaxed);
            }
            at += 1;
        }
        let mut words = rest.chunks_exact(4);
        for w in &mut words {
            if let Some(a) = self.word(at) {
                a.store(
                    u32::from_ne_bytes([w[0], w[1], w[2], w[3]]),
                    Ordering::Relaxed,
                );
            }
            at += 4;
        }
        for b in words.remainder() {
            if let Some(a) = self.byte(at) {
                a.store(*b, Ordering::Relaxed);
            }
            at += 1;
        }
        true
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from a successful mmap, and nothing borrows the mapping beyond
        // `&self` methods, which cannot outlive `self`.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn two_mappings_of_one_file_see_each_others_words() {
        let fd =
            nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MemFdCreateFlag::empty()).unwrap();
        nix::unistd::ftruncate(&fd, 8192).unwrap();
        let a = Shared::map(fd.as_fd(), 0, 8192).unwrap();
        let b = Shared::map(fd.as_fd(), 4096, 4096).unwrap();
        assert!(a.publish32(4100, 7));
        assert_eq!(b.observe32(4), Some(7));
        assert_eq!(b.cas32(4, 7, 9), Some(true));
        assert_eq!(a.read32(4100), Some(9));
        assert_eq!((a.read32(8192), a.read32(2)), (None, None));
        assert!(!b.write(4090, &[0; 8]));
        assert!(b.write(4088, &[1; 8]));
        let mut r = [0u8; 8];
        assert!(a.read(8184, &mut r));
        assert_eq!(r, [1; 8]);
    }

    #[test]
    fn byte_ranges_of_any_alignment_read_and_write_exactly_their_bytes() {
        let fd =
            nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MemFdCreateFlag::empty()).unwrap();
        nix::unistd::ftruncate(&fd, 4096).unwrap();
        let m = Shared::map(fd.as_fd(), 0, 4096).unwrap();
        let pattern: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5A).collect();
        for off in 0..8 {
            for len in 0..24 {
                assert!(m.write(0, &[0xEE; 64]));
                assert!(m.write(off, &pattern[..len]));
                let mut all = [0u8; 64];
                assert!(m.read(0, &mut all));
                for (i, &b) in all.iter().enumerate() {
                    let want = if (off..off + len).contains(&i) {
                        pattern[i - off]
                    } else {
                        0xEE
                    };
                    assert_eq!(b, want, "write at {off} of {len}: byte {i}");
                }
                let mut back = vec![0u8; len];
                assert!(m.read(off, &mut back));
                assert_eq!(back, &pattern[..len], "read at {off} of {len}");
            }
        }
        let mut over = [0u8; 2];
        assert!(!m.read(4095, &mut over));
        assert!(m.read(4094, &mut over));
    }
}
