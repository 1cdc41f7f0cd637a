//! A client's DMA map table: the IOVA ranges a VMM has mapped for one function, and the
//! device's reads and writes through them.
//!
//! What a mapping's descriptor is decides how the device reaches it, once, when it is mapped:
//!
//! - a memfd sealed against shrinking (`F_SEAL_SHRINK`) on tmpfs, as QEMU's
//!   `memory-backend-memfd` and the job library hand over, is mapped into this process and
//!   touched in place ([`ClientMem`]): it cannot shrink under the mapping, so an access can
//!   never fault. At most [`MAX_MAPPED`] mappings are mapped so; more are read with `pread`;
//! - any other regular file on tmpfs or hugetlbfs (memory) is read and written with
//!   `pread`/`pwrite`: a client that shrinks it fails one access, never the device;
//! - a file anywhere else (a FUSE file its owner could stall, a disk file), or no descriptor,
//!   is reached with DMA_READ/DMA_WRITE messages to the client ([`MessageDma`]). Those wait
//!   on the client, so the queue engine never does them itself (`DmaError::WouldBlock`).
//!
//! Descriptors that name the same file share one fd, so the fds a client can make us hold are
//! bounded by [`MAX_FILES`], not by its map count. Addresses, sizes and offsets are whole
//! pages (`pgsizes` 4096), and a mapping's READ and WRITE flags are each enforced.

use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use vfio_user_wire::proto;
use vfio_user_wire::shared::ClientMem;

/// Mappings one client may hold (advertised as `max_dma_maps`).
pub const MAX_MAPS: usize = proto::MAX_DMA_MAPS;
/// Distinct files one client's `pread`/`pwrite` mappings may name.
pub const MAX_FILES: usize = 64;
/// Mappings of one client mapped into the device's address space (each is a kernel mapping
/// of this process; `vm.max_map_count` is shared by every client).
pub const MAX_MAPPED: usize = 1024;
/// The page size advertised (`pgsizes`): addresses, sizes and offsets are multiples of it.
pub const PAGE: u64 = 4096;

/// Why a DMA map or unmap was refused; the client gets the errno.
pub type MapError = nix::errno::Errno;

/// Why a device access through the table failed. Each fails the one access; nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DmaError {
    /// No mapping covers the address.
    #[error("IOVA {0:#x} is not mapped")]
    Unmapped(u64),
    /// The device wrote to a read-only mapping.
    #[error("IOVA {0:#x} is mapped read-only")]
    ReadOnly(u64),
    /// The device read a write-only mapping.
    #[error("IOVA {0:#x} is mapped write-only")]
    WriteOnly(u64),
    /// The mapping has no fd and the client gave no way to message it.
    #[error("IOVA {0:#x} is mapped without a file")]
    NoFile(u64),
    /// The client's file ended before the mapping did (it shrank after the map).
    #[error("IOVA {0:#x}: the client's file is shorter than its mapping")]
    Short(u64),
    /// The read or write itself failed.
    #[error("IOVA {0:#x}: {1}")]
    Io(u64, nix::errno::Errno),
    /// The client did not answer a DMA_READ or DMA_WRITE for it (in time, or at all).
    #[error("IOVA {0:#x}: the client did not answer the DMA request")]
    NoAnswer(u64),
    /// Reaching it means waiting on the client (messages), which the caller may not do.
    #[error("IOVA {0:#x} is reached through messages")]
    WouldBlock(u64),
}

/// DMA through messages to the client, for memory it mapped without a file descriptor.
pub trait MessageDma: Send + Sync + std::fmt::Debug {
    /// DMA_READ.
    fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), DmaError>;
    /// DMA_WRITE.
    fn write(&self, iova: u64, data: &[u8]) -> Result<(), DmaError>;
}

#[derive(Debug)]
struct File {
    fd: OwnedFd,
    dev: u64,
    ino: u64,
}

/// How the device reaches a mapping's memory.
#[derive(Clone, Debug)]
enum Backing {
    /// Mapped here, from the mapping's first byte.
    Mem(Arc<Mapped>),
    /// `pread`/`pwrite` on the file, from the mapping's file offset.
    File(Arc<File>),
    /// DMA_READ/DMA_WRITE messages.
    Messages,
}

#[derive(Clone, Debug)]
struct Mapping {
    addr: u64,
    /// Inclusive last IOVA (a mapping may end at 2^64 - 1).
    last: u64,
    offset: u64,
    readable: bool,
    writable: bool,
    backing: Backing,
}

/// Memory the device reaches without the client's help, pinned: a queue's ring keeps the
/// memory it was armed with, whatever the client maps at that IOVA later.
#[derive(Clone, Debug)]
pub struct Direct {
    backing: Backing,
    /// Offset of the first byte in the backing (file offset or mapping offset).
    base: u64,
    len: u64,
    writable: bool,
}

impl Direct {
    /// Reads `buf.len()` bytes at `off`.
    pub fn read(&self, off: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let end = off.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(DmaError::Short(off));
        }
        match &self.backing {
            Backing::Mem(m) => mem_read(m, self.base + off, buf, off),
            Backing::File(f) => file_read(f, self.base + off, buf, off),
            Backing::Messages => Err(DmaError::WouldBlock(off)),
        }
    }

    /// Writes `data` at `off`, then (if given) the handoff dword `last` right after it,
    /// published after everything before it (a completion entry's status).
    pub fn write(&self, off: u64, data: &[u8], last: Option<u32>) -> Result<(), DmaError> {
        let total = data.len() as u64 + if last.is_some() { 4 } else { 0 };
        if !self.writable {
            return Err(DmaError::ReadOnly(off));
        }
        if off.checked_add(total).is_none_or(|e| e > self.len) {
            return Err(DmaError::Short(off));
        }
        let at = self.base + off;
        match &self.backing {
            Backing::Mem(m) => {
                mem_write(m, at, data, off)?;
                if let Some(w) = last {
                    let o = usize::try_from(at + data.len() as u64)
                        .map_err(|_| DmaError::Short(off))?;
                    if !m.publish32(o, w) {
                        return Err(DmaError::Short(off));
                    }
                }
                Ok(())
            }
            Backing::File(f) => {
                file_write(f, at, data, off)?;
                if let Some(w) = last {
                    // The write above is a system call: it is visible before this one.
                    file_write(f, at + data.len() as u64, &w.to_le_bytes(), off)?;
                }
                Ok(())
            }
            Backing::Messages => Err(DmaError::WouldBlock(off)),
        }
    }

    /// Reads the handoff dword at `off` (`shared_abi::ordering`: later reads come after it).
    pub fn observe32(&self, off: u64) -> Result<u32, DmaError> {
        match &self.backing {
            Backing::Mem(m) => usize::try_from(self.base + off)
                .ok()
                .filter(|_| off + 4 <= self.len)
                .and_then(|o| m.observe32(o))
                .ok_or(DmaError::Short(off)),
            _ => {
                let mut w = [0u8; 4];
                self.read(off, &mut w)?;
                Ok(u32::from_le_bytes(w))
            }
        }
    }

    /// Whether `other` is the same memory (the same backing at the same place).
    pub fn same(&self, other: &Direct) -> bool {
        let backing = match (&self.backing, &other.backing) {
            (Backing::Mem(a), Backing::Mem(b)) => Arc::ptr_eq(a, b),
            (Backing::File(a), Backing::File(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        backing && self.base == other.base && self.len == other.len
    }
}

fn mem_read(m: &Mapped, at: u64, buf: &mut [u8], iova: u64) -> Result<(), DmaError> {
    let ok = usize::try_from(at).is_ok_and(|o| m.read(o, buf));
    ok.then_some(()).ok_or(DmaError::Short(iova))
}

fn mem_write(m: &Mapped, at: u64, data: &[u8], iova: u64) -> Result<(), DmaError> {
    if !m.writable() {
        return Err(DmaError::ReadOnly(iova));
    }
    let ok = usize::try_from(at).is_ok_and(|o| m.write(o, data));
    ok.then_some(()).ok_or(DmaError::Short(iova))
}

fn file_read(f: &File, at: u64, buf: &mut [u8], iova: u64) -> Result<(), DmaError> {
    let off = i64::try_from(at).map_err(|_| DmaError::Short(iova))?;
    let mut got = 0;
    while got < buf.len() {
        let n = nix::sys::uio::pread(f.fd.as_fd(), &mut buf[got..], off + got as i64)
            .map_err(|e| DmaError::Io(iova, e))?;
        if n == 0 {
            return Err(DmaError::Short(iova + got as u64));
        }
        got += n;
    }
    Ok(())
}

fn file_write(f: &File, at: u64, data: &[u8], iova: u64) -> Result<(), DmaError> {
    let off = i64::try_from(at).map_err(|_| DmaError::Short(iova))?;
    let mut put = 0;
    while put < data.len() {
        let n = nix::sys::uio::pwrite(f.fd.as_fd(), &data[put..], off + put as i64)
            .map_err(|e| DmaError::Io(iova, e))?;
        if n == 0 {
            return Err(DmaError::Short(iova + put as u64));
        }
        put += n;
    }
    Ok(())
}

/// How the descriptor of a new mapping will be reached.
enum Reach {
    Map,
    File,
    Messages,
}

/// Decides how to reach a descriptor's memory (see the module's top).
fn reach(fd: &OwnedFd) -> Result<(Reach, nix::sys::stat::FileStat), MapError> {
    use nix::sys::stat::SFlag;
    use nix::sys::statfs::{fstatfs, TMPFS_MAGIC};
    // The seals first, then the size: once F_SEAL_SHRINK is seen the size can only grow, so a
    // client cannot shrink the file between our look at its size and our look at its seals.
    let seals = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GET_SEALS).unwrap_or(0);
    let sealed = nix::fcntl::SealFlag::from_bits_truncate(seals)
        .contains(nix::fcntl::SealFlag::F_SEAL_SHRINK);
    let st = nix::sys::stat::fstat(fd).map_err(|_| MapError::EINVAL)?;
    // Pipes, sockets, devices and directories are not memory.
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(MapError::EINVAL);
    }
    let fs = fstatfs(fd.as_fd())
        .map_err(|_| MapError::EINVAL)?
        .filesystem_type();
    // hugetlbfs is memory too, but it takes no pwrite (EINVAL) and a mapping of it can fail
    // to fault a page in (SIGBUS) even sealed: it goes through messages, as other files do.
    if fs != TMPFS_MAGIC {
        return Ok((Reach::Messages, st));
    }
    Ok((if sealed { Reach::Map } else { Reach::File }, st))
}

/// Bytes of mapped client memory copied out at a time for a checksum: small enough to stay in
/// the first-level cache while the checksum reads it.
const VISIT_PIECE: usize = 16 << 10;

/// Mappings of client memory into this process, all clients together: each is a kernel
/// mapping (`vm.max_map_count` is 65,530 by default) and address space.
pub const MAX_MAPPED_TOTAL: usize = 16_384;
/// Bytes of client memory mapped into this process, per client and all together (the
/// address space is 128 TiB; what is left over is read with `pread`).
pub const MAX_MAPPED_BYTES: u64 = 1 << 40;
/// Bytes of client memory mapped into this process, all clients together.
pub const MAX_MAPPED_BYTES_TOTAL: u64 = 16 << 40;

static MAPPED: std::sync::Mutex<(usize, u64)> = std::sync::Mutex::new((0, 0));

/// A client mapping counted against the process's budgets while it lives.
#[derive(Debug)]
struct Mapped(ClientMem);

impl Mapped {
    /// Maps `len` bytes of `fd` if the budgets allow (`None`: read it with `pread` instead).
    fn new(fd: &OwnedFd, offset: u64, len: usize, writable: bool) -> Option<Mapped> {
        let mut g = MAPPED.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 >= MAX_MAPPED_TOTAL || g.1.saturating_add(len as u64) > MAX_MAPPED_BYTES_TOTAL {
            return None;
        }
        let m = ClientMem::map(fd.as_fd(), offset, len, writable).ok()?;
        g.0 += 1;
        g.1 += len as u64;
        Some(Mapped(m))
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        let mut g = MAPPED.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = g.0.saturating_sub(1);
        g.1 = g.1.saturating_sub(self.0.len() as u64);
    }
}

impl std::ops::Deref for Mapped {
    type Target = ClientMem;
    fn deref(&self) -> &ClientMem {
        &self.0
    }
}

/// One client's DMA mappings, sorted by IOVA.
#[derive(Debug, Default)]
pub struct DmaTable {
    maps: Vec<Mapping>,
    /// How to reach memory mapped without a file descriptor.
    messages: Option<Arc<dyn MessageDma>>,
    /// The distinct files behind `pread` mappings (a map looks its file up here, not through
    /// every mapping: a vIOMMU guest maps page by page, tens of thousands of them).
    files: Vec<Arc<File>>,
    /// Mappings mapped into this process, and their bytes.
    mapped: (usize, u64),
}

impl DmaTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reaches fileless mappings through `m` (the owning connection).
    pub fn set_messages(&mut self, m: Arc<dyn MessageDma>) {
        self.messages = Some(m);
    }

    /// `[iova, iova + len)` as memory the device reaches without the client's help, if one
    /// mapping holds all of it and is mapped here or a file (a ring must be).
    pub fn direct(&self, iova: u64, len: u64) -> Option<Direct> {
        let (m, left) = self.find(iova).ok()?;
        if len == 0 || left < len || !m.readable {
            return None;
        }
        let within = iova - m.addr;
        let (backing, base) = match &m.backing {
            Backing::Mem(_) => (m.backing.clone(), within),
            Backing::File(_) => (m.backing.clone(), m.offset.checked_add(within)?),
            Backing::Messages => return None,
        };
        Some(Direct {
            backing,
            base,
            len,
            writable: m.writable,
        })
    }

    /// Mappings held.
    pub fn len(&self) -> usize {
        self.maps.len()
    }

    /// Whether nothing is mapped.
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }

    /// Distinct files held for `pread`/`pwrite` (a file a pinned ring still uses counts).
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Bytes mapped into this process.
    pub fn mapped_bytes(&self) -> u64 {
        self.mapped.1
    }

    /// Mappings mapped into this process.
    pub fn mapped_count(&self) -> usize {
        self.mapped.0
    }

    /// Removes the mappings `gone` says, keeping the counts, and lets go of files nothing
    /// uses any more.
    fn remove(&mut self, gone: impl Fn(&Mapping) -> bool) {
        let mapped = &mut self.mapped;
        self.maps.retain(|m| {
            let drop = gone(m);
            if drop && matches!(m.backing, Backing::Mem(_)) {
                mapped.0 -= 1;
                mapped.1 -= m.last - m.addr + 1;
            }
            !drop
        });
        self.files.retain(|f| Arc::strong_count(f) > 1);
    }

    /// DMA_MAP: adds `[addr, addr + size)`, reached through `fd` from `offset` if given.
    /// Refused (table unchanged): bad flags, sizes or alignment, a descriptor that is not a
    /// regular file, overlap with a mapping (EEXIST), a range past the end of its file, or a
    /// table at its limits (ENOSPC).
    pub fn map(&mut self, m: &proto::DmaMap, fd: Option<OwnedFd>) -> Result<(), MapError> {
        use MapError as E;
        if (m.argsz as usize) < std::mem::size_of::<proto::DmaMap>()
            || m.flags & !(proto::DMA_FLAG_READ | proto::DMA_FLAG_WRITE) != 0
            || m.size == 0
            || !m.addr.is_multiple_of(PAGE)
            || !m.size.is_multiple_of(PAGE)
            || !m.offset.is_multiple_of(PAGE)
        {
            return Err(E::EINVAL);
        }
        let last = m.addr.checked_add(m.size - 1).ok_or(E::EINVAL)?;
        let at = self.maps.partition_point(|d| d.last < m.addr);
        if self.maps.get(at).is_some_and(|d| d.addr <= last) {
            return Err(E::EEXIST);
        }
        if self.maps.len() >= MAX_MAPS {
            return Err(E::ENOSPC);
        }
        let writable = m.flags & proto::DMA_FLAG_WRITE != 0;
        let backing = match fd {
            None => Backing::Messages,
            Some(fd) => {
                let (how, st) = reach(&fd)?;
                let end = m.offset.checked_add(m.size).ok_or(E::EINVAL)?;
                if end > st.st_size as u64 {
                    return Err(E::EINVAL);
                }
                let size = usize::try_from(m.size).map_err(|_| E::EINVAL)?;
                match how {
                    Reach::Messages => Backing::Messages,
                    Reach::Map
                        if self.mapped_count() < MAX_MAPPED
                            && self.mapped_bytes().saturating_add(m.size) <= MAX_MAPPED_BYTES =>
                    {
                        match Mapped::new(&fd, m.offset, size, writable) {
                            Some(mem) => Backing::Mem(Arc::new(mem)),
                            None => self.file_backing(fd, &st)?,
                        }
                    }
                    Reach::Map | Reach::File => self.file_backing(fd, &st)?,
                }
            }
        };
        if matches!(backing, Backing::Mem(_)) {
            self.mapped.0 += 1;
            self.mapped.1 += m.size;
        }
        self.maps.insert(
            at,
            Mapping {
                addr: m.addr,
                last,
                offset: m.offset,
                readable: m.flags & proto::DMA_FLAG_READ != 0,
                writable,
                backing,
            },
        );
        Ok(())
    }

    /// `pread`/`pwrite` on `fd`, sharing the fd of a file already held.
    fn file_backing(
        &mut self,
        fd: OwnedFd,
        st: &nix::sys::stat::FileStat,
    ) -> Result<Backing, MapError> {
        let (dev, ino) = (st.st_dev, st.st_ino);
        if let Some(f) = self.files.iter().find(|f| f.dev == dev && f.ino == ino) {
            return Ok(Backing::File(f.clone()));
        }
        if self.files.len() >= MAX_FILES {
            return Err(MapError::ENOSPC);
        }
        let f = Arc::new(File { fd, dev, ino });
        self.files.push(f.clone());
        Ok(Backing::File(f))
    }

    /// DMA_UNMAP, with kernel VFIO type1 semantics, which QEMU's vIOMMU path relies on: every
    /// mapping wholly inside the range goes (none is fine: whole-IOVA-space unmaps are
    /// routine), a mapping that straddles an end of the range refuses the whole request, and
    /// FLAG_ALL empties the table.
    pub fn unmap(&mut self, u: &proto::DmaUnmap) -> Result<(), MapError> {
        use MapError as E;
        if u.flags & proto::DMA_UNMAP_FLAG_GET_DIRTY_BITMAP != 0 {
            return Err(E::ENOTSUP);
        }
        if u.flags & !proto::DMA_UNMAP_FLAG_ALL != 0 {
            return Err(E::EINVAL);
        }
        if u.flags & proto::DMA_UNMAP_FLAG_ALL != 0 {
            if u.addr != 0 || u.size != 0 {
                return Err(E::EINVAL);
            }
            self.remove(|_| true);
            return Ok(());
        }
        // Inclusive ends, as the kernel computes them: a range may end at the top of the
        // 64-bit IOVA space (QEMU unmaps [0xfef00000, 2^64) when the vIOMMU comes up).
        if u.size == 0 {
            return Err(E::EINVAL);
        }
        let last = u.addr.checked_add(u.size - 1).ok_or(E::EINVAL)?;
        let overlaps = |d: &Mapping| d.addr <= last && u.addr <= d.last;
        let inside = |d: &Mapping| u.addr <= d.addr && d.last <= last;
        if self.maps.iter().any(|d| overlaps(d) && !inside(d)) {
            return Err(E::EINVAL);
        }
        self.remove(inside);
        Ok(())
    }

    /// Empties the table (the client went away).
    pub fn clear(&mut self) {
        self.remove(|_| true);
    }

    /// The mapping holding `iova`, and how many bytes of it remain from there.
    fn find(&self, iova: u64) -> Result<(&Mapping, u64), DmaError> {
        let at = self.maps.partition_point(|m| m.last < iova);
        let m = self
            .maps
            .get(at)
            .filter(|m| m.addr <= iova)
            .ok_or(DmaError::Unmapped(iova))?;
        Ok((m, (m.last - iova).saturating_add(1)))
    }

    /// `[iova, iova + len)` cut at mapping boundaries: each piece's mapping, its IOVA and its
    /// bytes of the range; an unmapped byte ends it with an error. Lazy, so small accesses
    /// allocate nothing.
    fn spans(
        &self,
        iova: u64,
        len: usize,
    ) -> impl Iterator<Item = Result<(&Mapping, u64, Range<usize>), DmaError>> + '_ {
        let mut done = 0usize;
        let mut failed = false;
        std::iter::from_fn(move || {
            if done >= len || failed {
                return None;
            }
            let piece = iova
                .checked_add(done as u64)
                .ok_or(DmaError::Unmapped(iova))
                .and_then(|at| self.find(at).map(|(m, left)| (m, at, left)))
                .map(|(m, at, left)| {
                    let n = (len - done).min(usize::try_from(left).unwrap_or(usize::MAX));
                    let r = done..done + n;
                    done += n;
                    (m, at, r)
                });
            failed = piece.is_err();
            Some(piece)
        })
    }

    /// Checks that `[iova, iova + len)` may be read (`write` false) or written, and that
    /// reaching it does not wait on the client unless `block`, before any byte moves.
    fn check(&self, iova: u64, len: usize, write: bool, block: bool) -> Result<(), DmaError> {
        for piece in self.spans(iova, len) {
            let (m, at, _) = piece?;
            if write && !m.writable {
                return Err(DmaError::ReadOnly(at));
            }
            if !write && !m.readable {
                return Err(DmaError::WriteOnly(at));
            }
            if matches!(m.backing, Backing::Messages) {
                if !block {
                    return Err(DmaError::WouldBlock(at));
                }
                self.messages(at)?;
            }
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `iova`, across mappings if they are contiguous; through
    /// messages only if `block`.
    pub fn read(&self, iova: u64, buf: &mut [u8], block: bool) -> Result<(), DmaError> {
        self.check(iova, buf.len(), false, block)?;
        for piece in self.spans(iova, buf.len()) {
            let (m, at, r) = piece?;
            let chunk = &mut buf[r];
            match &m.backing {
                Backing::Messages => self.messages(at)?.read(at, chunk)?,
                Backing::Mem(c) => mem_read(c, at - m.addr, chunk, at)?,
                Backing::File(f) => file_read(f, file_offset(m, at)?, chunk, at)?,
            }
        }
        Ok(())
    }

    /// Runs `f` over the `len` bytes at `iova` in order, piece by piece, each copied into
    /// `scratch` (at least one byte) first.
    pub fn visit(
        &self,
        iova: u64,
        len: usize,
        scratch: &mut [u8],
        block: bool,
        mut f: impl FnMut(&[u8]),
    ) -> Result<(), DmaError> {
        self.check(iova, len, false, block)?;
        for piece in self.spans(iova, len) {
            let (m, at, r) = piece?;
            // Mapped memory is copied out a cache-sized piece at a time (a checksum never
            // holds a reference to bytes the client or another job may be writing); other
            // memory is read as big a piece as `scratch` holds.
            let piece = match m.backing {
                Backing::Mem(_) => VISIT_PIECE.min(scratch.len()),
                _ => scratch.len(),
            };
            let mut done = 0;
            while done < r.len() {
                let n = (r.len() - done).min(piece);
                self.read(at + done as u64, &mut scratch[..n], block)?;
                f(&scratch[..n]);
                done += n;
            }
        }
        Ok(())
    }

    /// CRC-32C of the `len` bytes at `iova`, continuing from `seed`: in place where they are
    /// mapped here (`ClientMem::crc32c`), else read into `scratch` a piece at a time.
    pub fn crc32c(
        &self,
        iova: u64,
        len: usize,
        seed: u32,
        scratch: &mut [u8],
        block: bool,
    ) -> Result<u32, DmaError> {
        self.check(iova, len, false, block)?;
        let mut crc = seed;
        for piece in self.spans(iova, len) {
            let (m, at, r) = piece?;
            if let Backing::Mem(c) = &m.backing {
                let o = usize::try_from(at - m.addr).map_err(|_| DmaError::Short(at))?;
                crc = c.crc32c(o, r.len(), crc).ok_or(DmaError::Short(at))?;
                continue;
            }
            let mut done = 0;
            while done < r.len() {
                let n = (r.len() - done).min(scratch.len());
                self.read(at + done as u64, &mut scratch[..n], block)?;
                crc = crc32c::crc32c_append(crc, &scratch[..n]);
                done += n;
            }
        }
        Ok(crc)
    }

    /// Writes `data` at `iova`, across mappings if they are contiguous. Every mapping touched
    /// must be writable and reachable (through messages only if `block`), checked before any
    /// byte is written.
    pub fn write(&self, iova: u64, data: &[u8], block: bool) -> Result<(), DmaError> {
        self.check(iova, data.len(), true, block)?;
        for piece in self.spans(iova, data.len()) {
            let (m, at, r) = piece?;
            let chunk = &data[r];
            match &m.backing {
                Backing::Messages => self.messages(at)?.write(at, chunk)?,
                Backing::Mem(c) => mem_write(c, at - m.addr, chunk, at)?,
                Backing::File(f) => file_write(f, file_offset(m, at)?, chunk, at)?,
            }
        }
        Ok(())
    }

    /// Sets `len` bytes at `iova` to `byte` (in place where mapped here, else from
    /// `scratch`), checked first as [`DmaTable::write`] is.
    pub fn fill(
        &self,
        iova: u64,
        len: usize,
        byte: u8,
        scratch: &mut [u8],
        block: bool,
    ) -> Result<(), DmaError> {
        self.check(iova, len, true, block)?;
        for piece in self.spans(iova, len) {
            let (m, at, r) = piece?;
            if let Backing::Mem(c) = &m.backing {
                let o = usize::try_from(at - m.addr).map_err(|_| DmaError::Short(at))?;
                if !c.fill(o, r.len(), byte) {
                    return Err(DmaError::Short(at));
                }
                continue;
            }
            let mut done = 0;
            while done < r.len() {
                let n = (r.len() - done).min(scratch.len());
                scratch[..n].fill(byte);
                self.write(at + done as u64, &scratch[..n], block)?;
                done += n;
            }
        }
        Ok(())
    }

    /// Copies `len` bytes from `src` to `dst` (memmove within a piece): directly between
    /// mappings mapped here, else through `scratch`. Checked first, both sides.
    pub fn copy(
        &self,
        src: u64,
        dst: u64,
        len: usize,
        scratch: &mut [u8],
        block: bool,
    ) -> Result<(), DmaError> {
        self.check(src, len, false, block)?;
        self.check(dst, len, true, block)?;
        let (Ok((s, sl)), Ok((d, dl))) = (self.find(src), self.find(dst)) else {
            return Err(DmaError::Unmapped(src));
        };
        if let (Backing::Mem(sc), Backing::Mem(dc)) = (&s.backing, &d.backing) {
            if sl >= len as u64 && dl >= len as u64 {
                let so = usize::try_from(src - s.addr).map_err(|_| DmaError::Short(src))?;
                let doff = usize::try_from(dst - d.addr).map_err(|_| DmaError::Short(dst))?;
                return ClientMem::copy(sc, so, dc, doff, len)
                    .then_some(())
                    .ok_or(DmaError::Short(dst));
            }
        }
        let mut done = 0;
        while done < len {
            let n = (len - done).min(scratch.len());
            self.read(src + done as u64, &mut scratch[..n], block)?;
            self.write(dst + done as u64, &scratch[..n], block)?;
            done += n;
        }
        Ok(())
    }

    /// The way to memory mapped without a file (at `at`), if the client gave one.
    fn messages(&self, at: u64) -> Result<&dyn MessageDma, DmaError> {
        self.messages.as_deref().ok_or(DmaError::NoFile(at))
    }
}

/// A job that waits on its client, run on the client's own thread ([`Space::park`]).
pub type Parked = Box<dyn FnOnce() + Send>;

/// A function's DMA space: the map table of the one connection that maps into it (a device
/// has one IOMMU domain), as the queue engine and that connection share it.
///
/// The engine never waits for the table: it takes it with `try_read` for one step of a job
/// (at most `jobs::STEP` bytes of memory copies) and moves on if a map or unmap holds it, so
/// an unmap returns only after every step that could still see the old mapping is over.
/// Jobs that must wait on the client (message DMA) run on the space's own thread, started on
/// first use and ended when the space is revoked.
#[derive(Debug)]
pub struct Space {
    conn: u64,
    table: std::sync::RwLock<DmaTable>,
    /// Bumped on every unmap: the engine checks again that pinned rings are still mapped.
    version: std::sync::atomic::AtomicU64,
    /// Set when the owning connection goes: jobs under the space stop at their next step,
    /// and queues armed with it stop.
    revoked: std::sync::atomic::AtomicBool,
    parked: std::sync::Mutex<Option<std::sync::mpsc::Sender<Parked>>>,
}

impl Space {
    /// An empty space owned by connection `conn`.
    pub fn new(conn: u64) -> Self {
        Space {
            conn,
            table: Default::default(),
            version: Default::default(),
            revoked: Default::default(),
            parked: Default::default(),
        }
    }

    /// The owning connection.
    pub fn conn(&self) -> u64 {
        self.conn
    }

    /// Whether the owner is gone.
    pub fn revoked(&self) -> bool {
        self.revoked.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The owner went: every job and queue under the space stops; its thread ends.
    pub fn revoke(&self) {
        self.revoked
            .store(true, std::sync::atomic::Ordering::Release);
        self.parked.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Unmaps seen so far.
    pub fn version(&self) -> u64 {
        self.version.load(std::sync::atomic::Ordering::Acquire)
    }

    /// DMA_MAP ([`DmaTable::map`]); fileless memory is reached through `messages`.
    pub fn map(
        &self,
        m: &proto::DmaMap,
        fd: Option<OwnedFd>,
        messages: Arc<dyn MessageDma>,
    ) -> Result<(), MapError> {
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        t.map(m, fd)?;
        t.set_messages(messages);
        Ok(())
    }

    /// DMA_UNMAP ([`DmaTable::unmap`]); returns once no step of a job can still reach what
    /// it removed (the write lock waits for the steps under way).
    pub fn unmap(&self, u: &proto::DmaUnmap) -> Result<(), MapError> {
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        t.unmap(u)?;
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(())
    }

    /// The table for one step of the engine, unless a map or unmap holds it.
    pub fn try_table(&self) -> Option<std::sync::RwLockReadGuard<'_, DmaTable>> {
        self.table.try_read().ok()
    }

    /// The table for one step on the space's own thread. The step may wait on the client
    /// while it holds it: a map or unmap the client sends meanwhile waits for the step, whose
    /// message to that client then goes unanswered and fails the job within
    /// `vfio_user::peer::ANSWER`; so an unmap never returns while a step could still touch
    /// what it removed.
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, DmaTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `job` on the space's own thread (started now if it is not running); false if the
    /// space is revoked or the thread cannot be started.
    pub fn park(&self, job: Parked) -> bool {
        if self.revoked() {
            return false;
        }
        let mut g = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<Parked>();
            let started = std::thread::Builder::new()
                .name("accel-dma-wait".into())
                .spawn(move || rx.into_iter().for_each(|job| job()));
            if started.is_err() {
                return false;
            }
            *g = Some(tx);
        }
        g.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }
}

fn file_offset(m: &Mapping, at: u64) -> Result<u64, DmaError> {
    m.offset
        .checked_add(at - m.addr)
        .filter(|o| i64::try_from(*o).is_ok())
        .ok_or(DmaError::Short(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::memfd::{memfd_create, MFdFlags};

    fn memfd(len: i64) -> OwnedFd {
        let fd = memfd_create(c"dma-test", MFdFlags::empty()).unwrap();
        nix::unistd::ftruncate(&fd, len).unwrap();
        fd
    }

    fn req(addr: u64, size: u64, offset: u64, flags: u32) -> proto::DmaMap {
        proto::DmaMap {
            argsz: 32,
            flags,
            offset,
            addr,
            size,
        }
    }

    const RW: u32 = proto::DMA_FLAG_READ | proto::DMA_FLAG_WRITE;

    #[test]
    fn reads_and_writes_land_in_the_clients_file() {
        let fd = memfd(0x4000);
        let mine = fd.try_clone().unwrap();
        let mut t = DmaTable::new();
        t.map(&req(0x10_0000, 0x2000, 0x1000, RW), Some(fd))
            .unwrap();
        t.write(0x10_0ffe, &[1, 2, 3, 4], true).unwrap();
        let mut b = [0u8; 4];
        nix::sys::uio::pread(mine.as_fd(), &mut b, 0x1ffe).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        let mut r = [0u8; 4];
        t.read(0x10_0ffe, &mut r, true).unwrap();
        assert_eq!(r, [1, 2, 3, 4]);
        assert_eq!(
            t.read(0x10_1fff, &mut r, true),
            Err(DmaError::Unmapped(0x10_2000))
        );
        assert_eq!(
            t.read(0xf_ffff, &mut r, true),
            Err(DmaError::Unmapped(0xf_ffff))
        );
    }

    /// The review's crash: a client maps its file, then shrinks it. A mapping would SIGBUS
    /// the device on the next access; the table fails that access and nothing else.
    #[test]
    fn a_file_shrunk_after_its_map_fails_the_access_not_the_device() {
        let fd = memfd(1 << 20);
        let mine = fd.try_clone().unwrap();
        let mut t = DmaTable::new();
        t.map(&req(0, 1 << 20, 0, RW), Some(fd)).unwrap();
        nix::unistd::ftruncate(&mine, 0).unwrap();
        let mut b = [0u8; 64];
        assert_eq!(t.read(0x8000, &mut b, true), Err(DmaError::Short(0x8000)));
        // A write past the end grows the client's own file; that is its memory to spend and
        // harms nobody else, so only the read side can come back short.
        assert!(t.write(0x8000, &b, true).is_ok());
    }

    #[test]
    fn read_only_and_fileless_mappings() {
        let mut t = DmaTable::new();
        t.map(
            &req(0, 0x1000, 0, proto::DMA_FLAG_READ),
            Some(memfd(0x1000)),
        )
        .unwrap();
        t.map(&req(0x1000, 0x1000, 0, RW), None).unwrap();
        assert_eq!(t.write(0x10, &[0; 4], true), Err(DmaError::ReadOnly(0x10)));
        let mut b = [0u8; 8];
        assert_eq!(t.read(0x1000, &mut b, true), Err(DmaError::NoFile(0x1000)));
        // A read across the two stops where the fileless one starts.
        assert_eq!(t.read(0xffc, &mut b, true), Err(DmaError::NoFile(0x1000)));
    }

    #[test]
    fn maps_past_their_file_overlaps_and_too_many_files_are_refused() {
        let mut t = DmaTable::new();
        assert_eq!(
            t.map(&req(0, 0x2000, 0, RW), Some(memfd(0x1000))),
            Err(MapError::EINVAL)
        );
        assert_eq!(
            t.map(&req(0, 1 << 40, 0, RW), Some(memfd(0x1000))),
            Err(MapError::EINVAL),
            "a 4 KiB file mapped as 1 TiB"
        );
        t.map(&req(0, 0x1000, 0, RW), Some(memfd(0x1000))).unwrap();
        assert_eq!(
            t.map(&req(0, 0x1000, 0, RW), Some(memfd(0x1000))),
            Err(MapError::EEXIST)
        );
        for (addr, size, offset) in [
            (0x10_0800, 0x1000, 0),
            (0x10_0000, 0x10, 0),
            (0x10_0000, 0x1000, 8),
        ] {
            assert_eq!(
                t.map(&req(addr, size, offset, RW), Some(memfd(0x2000))),
                Err(MapError::EINVAL),
                "not whole pages: {addr:#x} {size:#x} {offset:#x}"
            );
        }
        for i in 1..MAX_FILES as u64 {
            t.map(&req(i << 12, 0x1000, 0, RW), Some(memfd(0x1000)))
                .unwrap();
        }
        assert_eq!(t.file_count(), MAX_FILES);
        let n = MAX_FILES as u64;
        assert_eq!(
            t.map(&req(n << 12, 0x1000, 0, RW), Some(memfd(0x1000))),
            Err(MapError::ENOSPC)
        );
        assert_eq!(t.len(), MAX_FILES);
    }

    #[test]
    fn descriptors_for_one_file_share_one_fd() {
        let fd = memfd(1 << 20);
        let mut t = DmaTable::new();
        for i in 0..200u64 {
            t.map(
                &req(i << 12, 0x1000, i << 12, RW),
                Some(fd.try_clone().unwrap()),
            )
            .unwrap();
        }
        assert_eq!((t.len(), t.file_count()), (200, 1));
        t.write(0x7ffe, &[9, 8, 7, 6], true).unwrap();
        let mut b = [0u8; 4];
        t.read(0x7ffe, &mut b, true).unwrap();
        assert_eq!(
            b,
            [9, 8, 7, 6],
            "an access spanning two mappings of one file"
        );
    }

    fn sealed(len: i64) -> OwnedFd {
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        let fd = memfd_create(c"dma-test", MFdFlags::MFD_ALLOW_SEALING).unwrap();
        nix::unistd::ftruncate(&fd, len).unwrap();
        fcntl(&fd, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK)).unwrap();
        fd
    }

    #[test]
    fn a_sealed_memfd_is_mapped_and_touched_in_place() {
        let fd = sealed(0x4000);
        let mine = fd.try_clone().unwrap();
        let mut t = DmaTable::new();
        t.map(&req(0x20_0000, 0x2000, 0x1000, RW), Some(fd))
            .unwrap();
        t.map(&req(0x40_0000, 0x1000, 0, RW), Some(memfd(0x1000)))
            .unwrap();
        assert_eq!((t.mapped_count(), t.file_count()), (1, 1));
        t.write(0x20_0ffe, &[1, 2, 3, 4], true).unwrap();
        let mut b = [0u8; 4];
        nix::sys::uio::pread(mine.as_fd(), &mut b, 0x1ffe).unwrap();
        assert_eq!(b, [1, 2, 3, 4], "the write landed in the client's file");
        nix::sys::uio::pwrite(mine.as_fd(), &[9; 4], 0x2000).unwrap();
        t.read(0x20_1000, &mut b, true).unwrap();
        assert_eq!(b, [9; 4], "the client's write is seen in place");
        let mut scratch = [0u8; 16];
        t.fill(0x20_0000, 0x2000, 0xA5, &mut scratch, false)
            .unwrap();
        let mut sum = 0usize;
        t.visit(0x20_0000, 0x2000, &mut scratch, false, |c| {
            sum += c.iter().filter(|&&x| x == 0xA5).count()
        })
        .unwrap();
        assert_eq!(sum, 0x2000);
        // Between a mapped and a pread mapping, and within the mapped one (overlapping).
        t.copy(0x20_0000, 0x40_0000, 0x1000, &mut scratch, false)
            .unwrap();
        t.read(0x40_0ffc, &mut b, true).unwrap();
        assert_eq!(b, [0xA5; 4]);
        t.write(0x20_0000, &[7; 8], true).unwrap();
        t.copy(0x20_0000, 0x20_0004, 8, &mut scratch, false)
            .unwrap();
        let mut r = [0u8; 12];
        t.read(0x20_0000, &mut r, true).unwrap();
        assert_eq!(r, [7; 12], "memmove within one mapping");
        // A sealed file that cannot shrink still cannot be mapped past its end.
        assert_eq!(
            t.map(&req(0x60_0000, 0x8000, 0, RW), Some(sealed(0x4000))),
            Err(MapError::EINVAL)
        );
    }

    #[test]
    fn past_the_mapping_budget_memory_is_read_with_pread() {
        let mut t = DmaTable::new();
        let fd = sealed(0x1000);
        for i in 0..=MAX_MAPPED as u64 {
            t.map(&req(i << 12, 0x1000, 0, RW), Some(fd.try_clone().unwrap()))
                .unwrap();
        }
        assert_eq!((t.mapped_count(), t.file_count()), (MAX_MAPPED, 1));
        let top = (MAX_MAPPED as u64) << 12;
        t.write(top, &[3; 8], true).unwrap();
        let mut b = [0u8; 8];
        t.read(0, &mut b, true).unwrap();
        assert_eq!(b, [3; 8], "both ways reach the same file");
    }

    #[test]
    fn a_file_off_memory_is_reached_through_messages() {
        use std::io::Write;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../target");
        let mut f = tempfile::tempfile_in(dir).unwrap();
        f.write_all(&[0u8; 0x1000]).unwrap();
        let fs = nix::sys::statfs::fstatfs(&f).unwrap().filesystem_type();
        if fs == nix::sys::statfs::TMPFS_MAGIC {
            eprintln!("skipped: the target directory is on tmpfs");
            return;
        }
        let mut t = DmaTable::new();
        t.map(&req(0, 0x1000, 0, RW), Some(f.into())).unwrap();
        let mut b = [0u8; 4];
        assert_eq!(t.read(0, &mut b, false), Err(DmaError::WouldBlock(0)));
        assert_eq!(t.file_count(), 0, "its descriptor is not kept");
    }

    #[test]
    fn counts_follow_maps_and_unmaps() {
        let mut t = DmaTable::new();
        let shared = memfd(0x4000);
        for i in 0..4u64 {
            t.map(
                &req(i << 12, 0x1000, i << 12, RW),
                Some(shared.try_clone().unwrap()),
            )
            .unwrap();
        }
        t.map(&req(0x10_0000, 0x2000, 0, RW), Some(sealed(0x2000)))
            .unwrap();
        assert_eq!(
            (t.file_count(), t.mapped_count(), t.mapped_bytes()),
            (1, 1, 0x2000)
        );
        let un = |addr, size| proto::DmaUnmap {
            argsz: 24,
            flags: 0,
            addr,
            size,
        };
        t.unmap(&un(0, 0x2000)).unwrap();
        assert_eq!(t.file_count(), 1, "two pages of the file are still mapped");
        t.unmap(&un(0, 0x20_0000)).unwrap();
        assert!(t.is_empty());
        assert_eq!(
            (t.file_count(), t.mapped_count(), t.mapped_bytes()),
            (0, 0, 0)
        );
        // The files' room is back.
        for i in 0..MAX_FILES as u64 {
            t.map(&req(i << 12, 0x1000, 0, RW), Some(memfd(0x1000)))
                .unwrap();
        }
    }

    #[test]
    fn descriptors_that_are_not_memory_are_refused_and_rights_are_enforced() {
        let mut t = DmaTable::new();
        let (r, w) = nix::unistd::pipe().unwrap();
        assert_eq!(
            t.map(&req(0, 0x1000, 0, RW), Some(r)),
            Err(MapError::EINVAL)
        );
        drop(w);
        let null = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(
            t.map(&req(0, 0x1000, 0, RW), Some(null.into())),
            Err(MapError::EINVAL)
        );
        assert!(t.is_empty());
        t.map(
            &req(0, 0x1000, 0, proto::DMA_FLAG_WRITE),
            Some(sealed(0x1000)),
        )
        .unwrap();
        t.map(
            &req(0x1000, 0x1000, 0, proto::DMA_FLAG_READ),
            Some(sealed(0x1000)),
        )
        .unwrap();
        let mut b = [0u8; 4];
        assert_eq!(t.read(0x10, &mut b, true), Err(DmaError::WriteOnly(0x10)));
        assert!(t.write(0x10, &b, true).is_ok());
        assert_eq!(t.write(0x1010, &b, true), Err(DmaError::ReadOnly(0x1010)));
        assert!(t.read(0x1010, &mut b, true).is_ok());
        assert!(t.direct(0, 0x1000).is_none(), "a ring must be readable");
    }

    #[test]
    fn message_dma_is_refused_to_a_caller_that_may_not_wait() {
        let mut t = DmaTable::new();
        t.map(&req(0, 0x1000, 0, RW), Some(sealed(0x1000))).unwrap();
        t.map(&req(0x1000, 0x1000, 0, RW), None).unwrap();
        let mut b = [0u8; 8];
        assert_eq!(
            t.read(0xffc, &mut b, false),
            Err(DmaError::WouldBlock(0x1000))
        );
        assert_eq!(
            t.write(0xffc, &[5; 8], false),
            Err(DmaError::WouldBlock(0x1000))
        );
        t.read(0xff8, &mut b, true).unwrap();
        assert_eq!(
            b, [0; 8],
            "a refused write wrote nothing, not even its mapped half"
        );
        assert!(
            t.direct(0x1000, 16).is_none(),
            "a ring is never reached through messages"
        );
    }

    #[test]
    fn unmap_follows_type1_rules() {
        let mut t = DmaTable::new();
        t.map(&req(0x1000, 0x2000, 0, RW), None).unwrap();
        let un = |addr, size, flags| proto::DmaUnmap {
            argsz: 24,
            flags,
            addr,
            size,
        };
        assert_eq!(
            t.unmap(&un(0x2000, 0x1000, 0)),
            Err(MapError::EINVAL),
            "straddles"
        );
        t.unmap(&un(0x10_0000, u64::MAX - 0x10_0000 + 1, 0))
            .unwrap();
        assert_eq!(t.len(), 1);
        t.unmap(&un(0, 0x4000, 0)).unwrap();
        assert!(t.is_empty());
    }
}
