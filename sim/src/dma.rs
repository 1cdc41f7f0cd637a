//! A client's DMA map table: the IOVA ranges a VMM has mapped for one function, and the
//! device's reads and writes through them.
//!
//! Memory a client hands over is never mapped into this process: it is read and written with
//! `pread`/`pwrite` on the client's fd. A client can shrink or punch its file at any time; a
//! mapped page would then fault the whole device (SIGBUS), a `pread` just comes back short and
//! fails that one access. It also keeps a client's claims from costing us address space or
//! mappings (`vm.max_map_count`), whatever sizes it maps.
//!
//! Descriptors that name the same file share one fd, so the fds a client can make us hold are
//! bounded by [`MAX_FILES`], not by its map count. Memory mapped without a descriptor is
//! reached with DMA_READ/DMA_WRITE messages to the client ([`MessageDma`]).

use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use vfio_user_wire::proto;

/// Mappings one client may hold (advertised as `max_dma_maps`).
pub const MAX_MAPS: usize = proto::MAX_DMA_MAPS;
/// Distinct files one client's mappings may name.
pub const MAX_FILES: usize = 64;

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
    /// The mapping has no fd: the access must go through DMA_READ/DMA_WRITE messages.
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

#[derive(Debug)]
struct Mapping {
    addr: u64,
    /// Inclusive last IOVA (a mapping may end at 2^64 - 1).
    last: u64,
    offset: u64,
    writable: bool,
    file: Option<Arc<File>>,
}

/// One client's DMA mappings.
#[derive(Debug, Default)]
pub struct DmaTable {
    maps: Vec<Mapping>,
    /// How to reach memory mapped without a file descriptor.
    messages: Option<Arc<dyn MessageDma>>,
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

    /// Whether `[iova, iova + len)` is mapped and backed by files all the way (device
    /// structures the engine touches under its locks, rings, must be).
    pub fn file_backed(&self, iova: u64, len: u64) -> bool {
        usize::try_from(len).is_ok_and(|n| {
            self.spans(iova, n)
                .all(|p| p.is_ok_and(|(m, _, _)| m.file.is_some()))
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

    /// Distinct files held.
    pub fn files(&self) -> usize {
        let mut seen: Vec<*const File> = Vec::new();
        for f in self.maps.iter().filter_map(|m| m.file.as_ref()) {
            let p = Arc::as_ptr(f);
            if !seen.contains(&p) {
                seen.push(p);
            }
        }
        seen.len()
    }

    /// DMA_MAP: adds `[addr, addr + size)`, backed by `fd` from `offset` if given. Refused
    /// (table unchanged): bad flags or sizes, overlap with a mapping (EEXIST), a range past
    /// the end of its file, or a table at its limits (ENOSPC).
    pub fn map(&mut self, m: &proto::DmaMap, fd: Option<OwnedFd>) -> Result<(), MapError> {
        use MapError as E;
        if (m.argsz as usize) < std::mem::size_of::<proto::DmaMap>()
            || m.flags & !(proto::DMA_FLAG_READ | proto::DMA_FLAG_WRITE) != 0
            || m.size == 0
        {
            return Err(E::EINVAL);
        }
        let last = m.addr.checked_add(m.size - 1).ok_or(E::EINVAL)?;
        if self.maps.iter().any(|d| m.addr <= d.last && d.addr <= last) {
            return Err(E::EEXIST);
        }
        if self.maps.len() >= MAX_MAPS {
            return Err(E::ENOSPC);
        }
        let file = match fd {
            None => None,
            Some(fd) => {
                let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|_| E::EINVAL)?;
                let end = m.offset.checked_add(m.size).ok_or(E::EINVAL)?;
                if end > st.st_size as u64 {
                    return Err(E::EINVAL);
                }
                let (dev, ino) = (st.st_dev, st.st_ino);
                let known = self
                    .maps
                    .iter()
                    .filter_map(|d| d.file.as_ref())
                    .find(|f| f.dev == dev && f.ino == ino)
                    .cloned();
                match known {
                    Some(f) => Some(f),
                    None if self.files() >= MAX_FILES => return Err(E::ENOSPC),
                    None => Some(Arc::new(File { fd, dev, ino })),
                }
            }
        };
        self.maps.push(Mapping {
            addr: m.addr,
            last,
            offset: m.offset,
            writable: m.flags & proto::DMA_FLAG_WRITE != 0,
            file,
        });
        Ok(())
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
            self.maps.clear();
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
        self.maps.retain(|d| !inside(d));
        Ok(())
    }

    /// Empties the table (the client went away).
    pub fn clear(&mut self) {
        self.maps.clear();
    }

    /// The mapping holding `iova`, and how many bytes of it remain from there.
    fn find(&self, iova: u64) -> Result<(&Mapping, u64), DmaError> {
        let m = self
            .maps
            .iter()
            .find(|m| m.addr <= iova && iova <= m.last)
            .ok_or(DmaError::Unmapped(iova))?;
        Ok((m, (m.last - iova).saturating_add(1)))
    }

    /// `[iova, iova + len)` cut at mapping boundaries: each piece's mapping, its IOVA and its
    /// bytes of the range; an unmapped byte ends it with an error. Lazy, so the engine's
    /// per-poll 4-byte reads allocate nothing.
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

    /// Reads `buf.len()` bytes at `iova`, across mappings if they are contiguous.
    pub fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        for piece in self.spans(iova, buf.len()) {
            let (m, at, r) = piece?;
            let chunk = &mut buf[r];
            match &m.file {
                None => self.messages(at)?.read(at, chunk)?,
                Some(f) => {
                    let off = file_offset(m, at)?;
                    let mut got = 0;
                    while got < chunk.len() {
                        let n =
                            nix::sys::uio::pread(f.fd.as_fd(), &mut chunk[got..], off + got as i64)
                                .map_err(|e| DmaError::Io(at, e))?;
                        if n == 0 {
                            return Err(DmaError::Short(at + got as u64));
                        }
                        got += n;
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes `data` at `iova`, across mappings if they are contiguous. Every mapping touched
    /// must be writable and reachable, checked before any byte is written.
    pub fn write(&self, iova: u64, data: &[u8]) -> Result<(), DmaError> {
        let spans = self
            .spans(iova, data.len())
            .collect::<Result<Vec<_>, _>>()?;
        for (m, at, _) in &spans {
            if !m.writable {
                return Err(DmaError::ReadOnly(*at));
            }
            if m.file.is_none() {
                self.messages(*at)?;
            }
        }
        for (m, at, r) in spans {
            let chunk = &data[r];
            match &m.file {
                None => self.messages(at)?.write(at, chunk)?,
                Some(f) => {
                    let off = file_offset(m, at)?;
                    let mut put = 0;
                    while put < chunk.len() {
                        let n =
                            nix::sys::uio::pwrite(f.fd.as_fd(), &chunk[put..], off + put as i64)
                                .map_err(|e| DmaError::Io(at, e))?;
                        if n == 0 {
                            return Err(DmaError::Short(at + put as u64));
                        }
                        put += n;
                    }
                }
            }
        }
        Ok(())
    }

    /// The way to memory mapped without a file (at `at`), if the client gave one.
    fn messages(&self, at: u64) -> Result<&dyn MessageDma, DmaError> {
        self.messages.as_deref().ok_or(DmaError::NoFile(at))
    }
}

fn file_offset(m: &Mapping, at: u64) -> Result<i64, DmaError> {
    m.offset
        .checked_add(at - m.addr)
        .and_then(|o| i64::try_from(o).ok())
        .ok_or(DmaError::Short(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};

    fn memfd(len: i64) -> OwnedFd {
        let fd = memfd_create(c"dma-test", MemFdCreateFlag::empty()).unwrap();
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
        t.write(0x10_0ffe, &[1, 2, 3, 4]).unwrap();
        let mut b = [0u8; 4];
        nix::sys::uio::pread(mine.as_fd(), &mut b, 0x1ffe).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        let mut r = [0u8; 4];
        t.read(0x10_0ffe, &mut r).unwrap();
        assert_eq!(r, [1, 2, 3, 4]);
        assert_eq!(
            t.read(0x10_1fff, &mut r),
            Err(DmaError::Unmapped(0x10_2000))
        );
        assert_eq!(t.read(0xf_ffff, &mut r), Err(DmaError::Unmapped(0xf_ffff)));
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
        assert_eq!(t.read(0x8000, &mut b), Err(DmaError::Short(0x8000)));
        // A write past the end grows the client's own file; that is its memory to spend and
        // harms nobody else, so only the read side can come back short.
        assert!(t.write(0x8000, &b).is_ok());
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
        assert_eq!(t.write(0x10, &[0; 4]), Err(DmaError::ReadOnly(0x10)));
        let mut b = [0u8; 8];
        assert_eq!(t.read(0x1000, &mut b), Err(DmaError::NoFile(0x1000)));
        // A read across the two stops where the fileless one starts.
        assert_eq!(t.read(0xffc, &mut b), Err(DmaError::NoFile(0x1000)));
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
            t.map(&req(0xfff, 0x10, 0, RW), Some(memfd(0x1000))),
            Err(MapError::EEXIST)
        );
        for i in 1..MAX_FILES as u64 {
            t.map(&req(i << 12, 0x1000, 0, RW), Some(memfd(0x1000)))
                .unwrap();
        }
        assert_eq!(t.files(), MAX_FILES);
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
        assert_eq!((t.len(), t.files()), (200, 1));
        t.write(0x7ffe, &[9, 8, 7, 6]).unwrap();
        let mut b = [0u8; 4];
        t.read(0x7ffe, &mut b).unwrap();
        assert_eq!(
            b,
            [9, 8, 7, 6],
            "an access spanning two mappings of one file"
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
