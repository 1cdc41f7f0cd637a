//! The device model's system pieces: the memfds it shares (register file, device memory),
//! accessed through `vfio_user_wire::shared::Shared` with the same discipline as the host
//! (relaxed single-copy atomics; ordering only from `publish32`/`observe32` at handoff words,
//! `shared_abi::ordering`), and interrupt delivery. Client DMA memory is never mapped here
//! (see `dma`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use vfio_user_wire::shared::Shared;

/// A memfd we create, mapped shared: the register file or device memory. Accesses go through
/// [`Shared`], the one discipline both ends use.
#[derive(Debug)]
pub struct SharedMem {
    fd: Option<OwnedFd>,
    /// The whole file: for the device's own cores (the firmware), never for clients.
    whole: OwnedFd,
    map: Shared,
}

impl SharedMem {
    /// A new zeroed memfd of `len` bytes, mapped shared.
    pub fn create(name: &str, len: usize) -> std::io::Result<Self> {
        let fd = nix::sys::memfd::memfd_create(
            std::ffi::CString::new(name).unwrap_or_default().as_c_str(),
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )?;
        nix::unistd::ftruncate(&fd, len as i64)?;
        Ok(SharedMem {
            fd: None,
            map: Shared::map(fd.as_fd(), 0, len)?,
            whole: fd,
        })
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
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let (off, wlen) = window;
        if off.checked_add(wlen).is_none_or(|e| e > len) || wlen == 0 {
            return Err(std::io::ErrorKind::InvalidInput.into());
        }
        let mut m = Self::create(name, len)?; // private: mapped here and nowhere else
        let cname = std::ffi::CString::new(format!("{name}-window")).unwrap_or_default();
        let wfd = memfd_create(
            cname.as_c_str(),
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        nix::unistd::ftruncate(&wfd, (off + wlen) as i64)?;
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        fcntl(&wfd, FcntlArg::F_ADD_SEALS(seals))?;
        m.map.map_over(wfd.as_fd(), off, wlen)?;
        m.fd = Some(wfd);
        Ok(m)
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    /// The memfd a client may map: the sealed window of [`SharedMem::create_with_window`]
    /// (none for [`SharedMem::create`]).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|f| f.as_fd())
    }

    /// What the device's firmware core maps: the whole file, and the client window's file
    /// (mapped over the whole at the same offsets) if there is one.
    pub fn core_fds(&self) -> (BorrowedFd<'_>, Option<BorrowedFd<'_>>) {
        (self.whole.as_fd(), self.fd())
    }

    /// Reads a 32-bit word (all ones outside, as a bus reads nothing).
    #[inline]
    pub fn read32(&self, off: usize) -> u32 {
        self.map.read32(off).unwrap_or(u32::MAX)
    }
    /// Writes a 32-bit word (dropped outside).
    #[inline]
    pub fn write32(&self, off: usize, v: u32) {
        self.map.write32(off, v);
    }
    /// Writes a handoff word (`shared_abi::ordering`): earlier writes are visible first.
    #[inline]
    pub fn publish32(&self, off: usize, v: u32) {
        self.map.publish32(off, v);
    }
    /// Reads a handoff word (`shared_abi::ordering`): later reads happen after it.
    #[inline]
    pub fn observe32(&self, off: usize) -> u32 {
        self.map.observe32(off).unwrap_or(u32::MAX)
    }
    /// Compare-and-swap on a word.
    #[inline]
    pub fn cas32(&self, off: usize, old: u32, new: u32) -> bool {
        self.map.cas32(off, old, new).unwrap_or(false)
    }
    /// Copies bytes out; false if out of bounds.
    #[inline]
    pub fn read(&self, off: usize, buf: &mut [u8]) -> bool {
        self.map.read(off, buf)
    }
    /// Copies bytes in; false if out of bounds.
    #[inline]
    pub fn write(&self, off: usize, data: &[u8]) -> bool {
        self.map.write(off, data)
    }
}

/// Writes 1 to an eventfd (interrupt delivery); the fd is non-blocking ([`adopt_eventfds`]).
/// Errors are ignored: EAGAIN means the counter is saturated, so the client's eventfd is
/// signalled already; an interrupt nobody listens to is lost, as on hardware.
///
/// The client shares the file and can clear O_NONBLOCK again: it is set before every write,
/// and the write is made by the function's own courier thread (`msix::Courier`), so a client
/// that wins that race stalls only its own interrupts.
pub fn signal_eventfd(fd: BorrowedFd<'_>) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if let Ok(fl) = fcntl(fd, FcntlArg::F_GETFL) {
        let fl = OFlag::from_bits_retain(fl);
        if !fl.contains(OFlag::O_NONBLOCK) {
            let _ = fcntl(fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK));
        }
    }
    let _ = nix::unistd::write(fd, &1u64.to_ne_bytes());
}

/// Whether `fd` is an eventfd: the only kind a write to cannot wait on a reader for ever once
/// it is non-blocking, and what vfio takes for an interrupt.
pub fn is_eventfd(fd: BorrowedFd<'_>) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .is_ok_and(|p| p.as_os_str() == "anon_inode:[eventfd]")
}

/// Takes a client's descriptors for interrupt delivery (SET_IRQS): EINVAL, and nothing
/// changed, unless every one is an eventfd; then each is set O_NONBLOCK (on the open file,
/// which the client shares: like the kernel's eventfd_signal, a signal never waits; QEMU's
/// notifiers are non-blocking already).
pub fn adopt_eventfds(fds: Vec<OwnedFd>) -> Result<Vec<OwnedFd>, nix::errno::Errno> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if !fds.iter().all(|f| is_eventfd(f.as_fd())) {
        return Err(nix::errno::Errno::EINVAL);
    }
    for f in &fds {
        let fl = OFlag::from_bits_retain(fcntl(f, FcntlArg::F_GETFL)?);
        fcntl(f, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
    }
    Ok(fds)
}
