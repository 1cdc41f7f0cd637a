//! A mapping of memory the host and the device share (a BAR window offered by vfio-user or by
//! kernel VFIO, or the device's own register file), with the one access discipline of
//! `shared_abi::ordering`: every access is a single relaxed atomic (never torn, merged or
//! elided), and ordering comes only from [`Shared::publish32`]/[`Shared::observe32`] at handoff
//! words. The server and the client both access shared words through this type.
//!
//! [`Shared`] touches memory only as whole aligned dwords: a byte access reads or updates its
//! dword. Rust's memory model has no answer for atomics of different sizes on the same bytes
//! from two threads, so one width per word is what keeps two threads of one process (the
//! device's firmware and its bus, or a client's two handles) free of data races.
#![allow(unsafe_code)]

use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

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
    ///
    /// `len` is whole dwords, so every byte of the mapping lies in a dword of it.
    pub fn map(fd: BorrowedFd<'_>, offset: u64, len: usize) -> std::io::Result<Self> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        if !len.is_multiple_of(4) {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
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

    /// The `n` whole dwords from `off` (aligned), checked once: a bulk copy is a loop of plain
    /// dword loads or stores, not a bounds check and an address computation per word.
    #[inline]
    fn words(&self, off: usize, n: usize) -> Option<&[AtomicU32]> {
        let end = n.checked_mul(4).and_then(|b| off.checked_add(b))?;
        if !off.is_multiple_of(4) || end > self.len {
            return None;
        }
        // SAFETY: in bounds and aligned (checked; the mapping is page-aligned); AtomicU32 has
        // u32's layout, and atomic access is sound for memory shared with other processes.
        Some(unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().add(off) as *const AtomicU32, n)
        })
    }

    /// The bytes `at..at + bytes.len()` of one dword (`at % 4 + bytes.len() <= 4`), as one
    /// atomic read-modify-write of it: the other bytes keep whatever another thread or process
    /// writes meanwhile, and a reader sees all of these bytes or none.
    #[inline]
    fn merge(&self, at: usize, bytes: &[u8]) {
        let Some(w) = self.word(at & !3) else {
            return;
        };
        let lane = at & 3;
        let _ = w.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
            let mut b = old.to_ne_bytes();
            b[lane..lane + bytes.len()].copy_from_slice(bytes);
            Some(u32::from_ne_bytes(b))
        });
    }

    /// The bytes `at..at + out.len()` of one dword, from one load of it.
    #[inline]
    fn extract(&self, at: usize, out: &mut [u8]) {
        let lane = at & 3;
        let b = self
            .word(at & !3)
            .map_or(u32::MAX, |w| w.load(Ordering::Relaxed))
            .to_ne_bytes();
        out.copy_from_slice(&b[lane..lane + out.len()]);
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
    /// Copies bytes out; false (nothing read) if out of range. Every dword is read with one
    /// load, the partial ones at either end included.
    #[inline]
    pub fn read(&self, off: usize, buf: &mut [u8]) -> bool {
        if off.checked_add(buf.len()).is_none_or(|e| e > self.len) {
            return false;
        }
        let head = off.next_multiple_of(4).saturating_sub(off).min(buf.len());
        let (head_buf, rest) = buf.split_at_mut(head);
        self.extract(off, head_buf);
        let at = off + head;
        let mut words = rest.chunks_exact_mut(4);
        let n = words.len();
        if let Some(src) = self.words(at, n) {
            for (w, a) in (&mut words).zip(src) {
                w.copy_from_slice(&a.load(Ordering::Relaxed).to_ne_bytes());
            }
        }
        let at = at + 4 * n;
        self.extract(at, words.into_remainder());
        true
    }
    /// Copies bytes in; false (nothing written) if out of range. Whole aligned dwords are
    /// written with one store each, the partial ones at either end with one read-modify-write
    /// each.
    #[inline]
    pub fn write(&self, off: usize, data: &[u8]) -> bool {
        if off.checked_add(data.len()).is_none_or(|e| e > self.len) {
            return false;
        }
        let head = off.next_multiple_of(4).saturating_sub(off).min(data.len());
        let (head_data, rest) = data.split_at(head);
        if !head_data.is_empty() {
            self.merge(off, head_data);
        }
        let at = off + head;
        let mut words = rest.chunks_exact(4);
        let n = words.len();
        if let Some(dst) = self.words(at, n) {
            for (w, a) in (&mut words).zip(dst) {
                a.store(
                    u32::from_ne_bytes([w[0], w[1], w[2], w[3]]),
                    Ordering::Relaxed,
                );
            }
        }
        let at = at + 4 * n;
        if !words.remainder().is_empty() {
            self.merge(at, words.remainder());
        }
        true
    }
}

/// A client's memory mapped into the device (a sealed memfd a VMM handed over for DMA): the
/// payload a job reads and writes in place. Handoff words in it (a ring entry's first or
/// last dword) use [`ClientMem::observe32`]/[`ClientMem::publish32`]; payload bytes are moved
/// with plain bulk copies, as a DMA engine moves them, never through references that outlive
/// one call. Mapped read-only unless the client allowed writes; writes to a read-only mapping
/// are refused here, before any byte moves.
#[derive(Debug)]
pub struct ClientMem {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: the pointer is never handed out beyond one call; the memory is shared with another
// process by design, so moving or sharing the owner between threads adds no aliasing.
unsafe impl Send for ClientMem {}
// SAFETY: as above.
unsafe impl Sync for ClientMem {}

impl ClientMem {
    /// Maps `len` bytes of `fd` from `offset` (page aligned), shared, writable if `writable`.
    ///
    /// The caller must know the file cannot shrink under the mapping (an access past a file's
    /// end raises SIGBUS): accel-sim maps only memfds sealed with `F_SEAL_SHRINK` on tmpfs.
    pub fn map(
        fd: BorrowedFd<'_>,
        offset: u64,
        len: usize,
        writable: bool,
    ) -> std::io::Result<Self> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let nz = std::num::NonZeroUsize::new(len).ok_or(std::io::ErrorKind::InvalidInput)?;
        let off = i64::try_from(offset).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        let prot = if writable {
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
        } else {
            ProtFlags::PROT_READ
        };
        // SAFETY: a new mapping at a kernel-chosen address aliases no Rust object; it is
        // unmapped only in Drop.
        let p = unsafe { mmap(None, nz, prot, MapFlags::MAP_SHARED, fd, off)? };
        Ok(ClientMem {
            ptr: p.cast(),
            len,
            writable,
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
    /// Whether the device may write it.
    pub fn writable(&self) -> bool {
        self.writable
    }

    #[inline]
    fn range(&self, off: usize, len: usize) -> Option<*mut u8> {
        // SAFETY: `off <= self.len` is checked first, so the pointer stays inside (or one
        // past) the mapping.
        (off.checked_add(len)? <= self.len).then(|| unsafe { self.ptr.as_ptr().add(off) })
    }

    /// Copies `buf.len()` bytes out from `off`; false (nothing read) if out of range.
    #[inline]
    pub fn read(&self, off: usize, buf: &mut [u8]) -> bool {
        let Some(p) = self.range(off, buf.len()) else {
            return false;
        };
        // SAFETY: `p..p + len` is inside the live mapping (checked) and `buf` is our own
        // memory, so the two do not overlap. The client's process may write the same bytes
        // meanwhile; a DMA engine's read races the same way, and gives whatever bytes it saw.
        unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) };
        true
    }

    /// Copies `data` in at `off`; false (nothing written) if out of range or read-only.
    #[inline]
    pub fn write(&self, off: usize, data: &[u8]) -> bool {
        let Some(p) = self.range(off, data.len()).filter(|_| self.writable) else {
            return false;
        };
        // SAFETY: inside the live mapping, which is mapped writable (checked); `data` is not
        // in client memory mapped here unless a caller copies between mappings, which goes
        // through `copy` instead.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        true
    }

    /// Sets `len` bytes at `off` to `byte`; false (nothing written) if out of range or
    /// read-only.
    #[inline]
    pub fn fill(&self, off: usize, len: usize, byte: u8) -> bool {
        let Some(p) = self.range(off, len).filter(|_| self.writable) else {
            return false;
        };
        // SAFETY: inside the live mapping, mapped writable (checked).
        unsafe { std::ptr::write_bytes(p, byte, len) };
        true
    }

    /// Copies `len` bytes from `src` at `soff` to `dst` at `doff` (memmove: the ranges may
    /// overlap); false (nothing moved) if either is out of range or `dst` is read-only.
    #[inline]
    pub fn copy(src: &ClientMem, soff: usize, dst: &ClientMem, doff: usize, len: usize) -> bool {
        let (Some(s), Some(d)) = (
            src.range(soff, len),
            dst.range(doff, len).filter(|_| dst.writable),
        ) else {
            return false;
        };
        // SAFETY: both ranges are inside live mappings (checked), the destination writable;
        // `copy` is a memmove, so an overlap within one mapping is fine.
        unsafe { std::ptr::copy(s, d, len) };
        true
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

    /// Reads a handoff dword (`shared_abi::ordering`): later reads happen after it.
    #[inline]
    pub fn observe32(&self, off: usize) -> Option<u32> {
        let v = self.word(off)?.load(Ordering::Relaxed);
        shared_abi::ordering::observe();
        Some(v)
    }

    /// Writes a handoff dword (`shared_abi::ordering`): every earlier write is visible first;
    /// false if out of range, unaligned or read-only.
    #[inline]
    pub fn publish32(&self, off: usize, v: u32) -> bool {
        if !self.writable {
            return false;
        }
        shared_abi::ordering::publish();
        self.word(off)
            .map(|w| w.store(v, Ordering::Relaxed))
            .is_some()
    }
}

impl ClientMem {
    /// CRC-32C of `len` bytes at `off`, continuing from `seed` (as `crc32c::crc32c_append`),
    /// read in place: every byte is loaded atomically, so bytes the client or another job
    /// writes meanwhile change the result, never the soundness of reading them. `None` if out
    /// of range.
    pub fn crc32c(&self, off: usize, len: usize, seed: u32) -> Option<u32> {
        self.range(off, len)?;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU has SSE4.2 (checked just now), all `crc32_in_place` needs.
            return Some(unsafe { self.crc32_in_place(off, len, seed) });
        }
        // Elsewhere: a cache-sized copy at a time, through the atomic loads of `byte`.
        let mut crc = seed;
        let mut buf = [0u8; 4096];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(buf.len());
            for (i, b) in buf[..n].iter_mut().enumerate() {
                *b = self.byte(off + done + i)?.load(Ordering::Relaxed);
            }
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            done += n;
        }
        Some(crc)
    }

    #[inline]
    fn byte(&self, off: usize) -> Option<&AtomicU8> {
        if off >= self.len {
            return None;
        }
        // SAFETY: in bounds; AtomicU8 has u8's layout.
        Some(unsafe { &*(self.ptr.as_ptr().add(off) as *const AtomicU8) })
    }

    #[inline]
    fn qword(&self, off: usize) -> u64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= self.len);
        // SAFETY: `off` is 8-aligned inside the mapping (the callers' loops keep it so; the
        // mapping is page-aligned); AtomicU64 has u64's layout, and atomic loads of memory
        // others write are sound.
        unsafe { &*(self.ptr.as_ptr().add(off) as *const AtomicU64) }.load(Ordering::Relaxed)
    }

    /// The CPU's CRC32 instruction over `[off, off + len)` (in range), three streams at once
    /// where the range is long: each stream is a dependency chain, and three keep the
    /// instruction's pipeline full; their states are joined with [`crc_shift`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse4.2")]
    unsafe fn crc32_in_place(&self, off: usize, len: usize, seed: u32) -> u32 {
        use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
        let end = off + len;
        let mut s = !seed;
        let mut at = off;
        while at < end && !at.is_multiple_of(8) {
            s = _mm_crc32_u8(s, self.byte(at).map_or(0, |b| b.load(Ordering::Relaxed)));
            at += 1;
        }
        for &block in &CRC_BLOCKS {
            while end - at >= 3 * block {
                let (mut a, mut b, mut c) = (s as u64, 0u64, 0u64);
                let mut i = 0;
                while i < block {
                    a = _mm_crc32_u64(a, self.qword(at + i));
                    b = _mm_crc32_u64(b, self.qword(at + block + i));
                    c = _mm_crc32_u64(c, self.qword(at + 2 * block + i));
                    i += 8;
                }
                s = crc_shift(crc_shift(a as u32, block) ^ b as u32, block) ^ c as u32;
                at += 3 * block;
            }
        }
        let mut s64 = s as u64;
        while end - at >= 8 {
            s64 = _mm_crc32_u64(s64, self.qword(at));
            at += 8;
        }
        s = s64 as u32;
        while at < end {
            s = _mm_crc32_u8(s, self.byte(at).map_or(0, |b| b.load(Ordering::Relaxed)));
            at += 1;
        }
        !s
    }
}

/// The stream lengths (bytes, multiples of 8) the three-stream CRC runs at, longest first.
const CRC_BLOCKS: [usize; 2] = [8192, 512];

/// The raw CRC-32C state `s` advanced over `n` zero bytes (`n` one of [`CRC_BLOCKS`]): the
/// operator is linear in `s`, kept as four byte-indexed tables per length, made once.
fn crc_shift(s: u32, n: usize) -> u32 {
    static TABLES: std::sync::OnceLock<Vec<[[u32; 256]; 4]>> = std::sync::OnceLock::new();
    let tables = TABLES.get_or_init(|| {
        CRC_BLOCKS
            .iter()
            .map(|&len| {
                let zeros = vec![0u8; len];
                // The raw state h(s, data) = !crc32c_append(!s, data); h is linear in s.
                let col = |bit: u32| {
                    !crc32c::crc32c_append(!(1u32 << bit), &zeros)
                        ^ !crc32c::crc32c_append(!0u32, &zeros)
                };
                let cols: Vec<u32> = (0..32).map(col).collect();
                let mut t = [[0u32; 256]; 4];
                for (k, table) in t.iter_mut().enumerate() {
                    for (v, e) in table.iter_mut().enumerate() {
                        *e = (0..8)
                            .filter(|b| v & (1 << b) != 0)
                            .fold(0, |acc, b| acc ^ cols[k * 8 + b]);
                    }
                }
                t
            })
            .collect()
    });
    let i = CRC_BLOCKS.iter().position(|&b| b == n).unwrap_or(0);
    let t = &tables[i];
    t[0][(s & 0xFF) as usize]
        ^ t[1][((s >> 8) & 0xFF) as usize]
        ^ t[2][((s >> 16) & 0xFF) as usize]
        ^ t[3][(s >> 24) as usize]
}

impl Drop for ClientMem {
    fn drop(&mut self) {
        // SAFETY: ptr/len came from a successful mmap; no borrow outlives a `&self` call.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
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
        let fd = nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MFdFlags::empty()).unwrap();
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

    /// A write inside one dword is one access of it, never a byte at a time: a reader on
    /// another thread sees all of its bytes or none (with byte stores it saw halves).
    #[test]
    fn a_partial_dword_write_is_one_access() {
        let fd = nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MFdFlags::empty()).unwrap();
        nix::unistd::ftruncate(&fd, 4096).unwrap();
        let m = std::sync::Arc::new(Shared::map(fd.as_fd(), 0, 4096).unwrap());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (m, stop) = (m.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut v = 0u8;
                while !stop.load(Ordering::Relaxed) {
                    v = v.wrapping_add(1);
                    m.write(1, &[v; 3]);
                }
            })
        };
        let t = std::time::Instant::now();
        let mut torn = 0;
        while t.elapsed() < std::time::Duration::from_millis(300) {
            let mut b = [0u8; 3];
            m.read(1, &mut b);
            torn += usize::from(b[0] != b[1] || b[1] != b[2]);
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert_eq!(torn, 0, "reads saw a write half done");
    }

    #[test]
    fn a_mapping_is_whole_dwords() {
        let fd = nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MFdFlags::empty()).unwrap();
        nix::unistd::ftruncate(&fd, 4096).unwrap();
        assert!(Shared::map(fd.as_fd(), 0, 4094).is_err());
    }

    #[test]
    fn byte_ranges_of_any_alignment_read_and_write_exactly_their_bytes() {
        let fd = nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MFdFlags::empty()).unwrap();
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

    #[test]
    fn crc32c_in_place_matches_the_crate_at_every_alignment_and_length() {
        let len = 3 * 8192 * 2 + 3 * 512 + 4096;
        let fd = nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MFdFlags::empty()).unwrap();
        nix::unistd::ftruncate(&fd, len as i64).unwrap();
        let m = ClientMem::map(fd.as_fd(), 0, len, true).unwrap();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(m.write(0, &data));
        for (off, n) in [
            (0, 0),
            (0, 1),
            (3, 7),
            (5, 100),
            (0, 3 * 512),
            (1, 3 * 512 + 9),
            (8, 3 * 8192),
            (7, 3 * 8192 + 3 * 512 + 13),
            (0, len),
            (13, len - 13),
        ] {
            for seed in [0, 0xDEAD_BEEF] {
                assert_eq!(
                    m.crc32c(off, n, seed),
                    Some(crc32c::crc32c_append(seed, &data[off..off + n])),
                    "{off} {n} {seed:#x}"
                );
            }
        }
        assert_eq!(m.crc32c(len - 1, 2, 0), None);
    }
}
