//! The host driver's `unsafe`: mapping a BAR (an fd offered by vfio-user or the kernel) and
//! volatile access to it, and the raw VFIO ioctls. Accesses here are plain and unordered; the
//! barriers at handoff words are `Transport::publish32`/`observe32` (`shared_abi::ordering`).
#![allow(unsafe_code)]

use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

/// A mapped window of a BAR.
#[derive(Debug)]
pub struct BarMap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: accesses are volatile and bounds-checked; the mapping is owned by this value.
unsafe impl Send for BarMap {}
// SAFETY: as above; concurrent volatile accesses to device memory are the device's business.
unsafe impl Sync for BarMap {}

impl BarMap {
    /// Maps `len` bytes of `fd` at `offset`, read/write, shared.
    pub fn map(fd: BorrowedFd<'_>, offset: u64, len: usize) -> std::io::Result<Self> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let nz = std::num::NonZeroUsize::new(len).ok_or(std::io::ErrorKind::InvalidInput)?;
        let off = i64::try_from(offset).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // SAFETY: a new mapping at a kernel-chosen address aliases nothing; it lives until Drop.
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
        Ok(BarMap { ptr: p.cast(), len })
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads a dword at `off` (relative to the mapping).
    pub fn read32(&self, off: usize) -> Option<u32> {
        if !off.is_multiple_of(4) || off.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: aligned and in bounds of the live mapping.
        let v = unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(off) as *const u32) };
        Some(v)
    }

    /// Writes a dword.
    pub fn write32(&self, off: usize, v: u32) -> bool {
        if !off.is_multiple_of(4) || off.checked_add(4).is_none_or(|e| e > self.len) {
            return false;
        }
        // SAFETY: aligned and in bounds of the live mapping.
        unsafe { std::ptr::write_volatile(self.ptr.as_ptr().add(off) as *mut u32, v) };
        true
    }

    /// Compare-and-swap on a dword of the mapping (the mailbox lock word); `None` if out of
    /// range.
    pub fn cas32(&self, off: usize, old: u32, new: u32) -> Option<bool> {
        if !off.is_multiple_of(4) || off.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: aligned and in bounds of the live mapping; AtomicU32 has u32's layout, and
        // the word is memory the device and other clients also access atomically.
        let a = unsafe { &*(self.ptr.as_ptr().add(off) as *const std::sync::atomic::AtomicU32) };
        Some(
            a.compare_exchange(
                old,
                new,
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
            )
            .is_ok(),
        )
    }

    /// Copies bytes out (dword-wise, so device registers see whole accesses).
    pub fn read(&self, off: usize, buf: &mut [u8]) -> bool {
        if off.checked_add(buf.len()).is_none_or(|e| e > self.len) {
            return false;
        }
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: in bounds as checked above.
            *b = unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(off + i)) };
        }
        true
    }

    /// Copies bytes in.
    pub fn write(&self, off: usize, data: &[u8]) -> bool {
        if off.checked_add(data.len()).is_none_or(|e| e > self.len) {
            return false;
        }
        for (i, b) in data.iter().enumerate() {
            // SAFETY: in bounds as checked above.
            unsafe { std::ptr::write_volatile(self.ptr.as_ptr().add(off + i), *b) };
        }
        true
    }
}

impl Drop for BarMap {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; no reference into it outlives `self`.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len) };
    }
}

/// Raw VFIO ioctls (see linux/vfio.h). Argument structs come from `vfio-bindings`.
pub mod vfio {
    use std::os::fd::{AsRawFd, BorrowedFd};
    use vfio_bindings::bindings::vfio::{vfio_group_status, vfio_region_info};

    /// ioctl type of VFIO (';').
    pub const VFIO_TYPE: u8 = b';';
    /// `VFIO_BASE` command number.
    pub const VFIO_BASE: u8 = 100;

    nix::ioctl_none!(get_api_version, VFIO_TYPE, VFIO_BASE);
    nix::ioctl_write_int_bad!(
        check_extension,
        nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 1)
    );
    nix::ioctl_write_int_bad!(set_iommu, nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 2));
    nix::ioctl_write_ptr_bad!(
        device_set_irqs_raw,
        nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 10),
        u8
    );
    nix::ioctl_readwrite_bad!(
        group_get_status,
        nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 3),
        vfio_group_status
    );
    nix::ioctl_write_ptr_bad!(
        group_set_container,
        nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 4),
        i32
    );
    nix::ioctl_write_ptr_bad!(
        group_get_device_fd_raw,
        nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 6),
        libc::c_char
    );
    nix::ioctl_readwrite_bad!(
        device_get_region_info,
        nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 8),
        vfio_region_info
    );
    nix::ioctl_readwrite_bad!(
        device_feature_raw,
        nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 17),
        u8
    );

    /// `VFIO_GROUP_GET_DEVICE_FD` with a name (and optional `vf_token=`), NUL-terminated.
    pub fn group_get_device_fd(group: BorrowedFd<'_>, name: &std::ffi::CStr) -> nix::Result<i32> {
        // SAFETY: the kernel reads a NUL-terminated string from a valid pointer.
        unsafe { group_get_device_fd_raw(group.as_raw_fd(), name.as_ptr()) }
    }

    /// `VFIO_DEVICE_FEATURE` with a prepared argument buffer (see `kernel::vfio::vf_token_arg`).
    pub fn device_feature(dev: BorrowedFd<'_>, arg: &mut [u8]) -> nix::Result<i32> {
        // SAFETY: `arg` is a writable buffer whose `argsz` field the caller set to its length.
        unsafe { device_feature_raw(dev.as_raw_fd(), arg.as_mut_ptr()) }
    }

    /// `VFIO_DEVICE_SET_IRQS` with a prepared `struct vfio_irq_set` (see
    /// `kernel::vfio::irq_set_eventfds`).
    pub fn device_set_irqs(dev: BorrowedFd<'_>, arg: &[u8]) -> nix::Result<i32> {
        // SAFETY: the kernel reads `argsz` bytes (set by the caller to `arg.len()`).
        unsafe { device_set_irqs_raw(dev.as_raw_fd(), arg.as_ptr()) }
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` (fixed part only).
    pub fn region_info(dev: BorrowedFd<'_>, index: u32) -> nix::Result<vfio_region_info> {
        let mut info = vfio_region_info {
            argsz: std::mem::size_of::<vfio_region_info>() as u32,
            index,
            ..Default::default()
        };
        // SAFETY: `info` is a valid, writable vfio_region_info with argsz set.
        unsafe { device_get_region_info(dev.as_raw_fd(), &mut info)? };
        Ok(info)
    }

    /// `VFIO_GROUP_GET_STATUS`.
    pub fn group_status(group: BorrowedFd<'_>) -> nix::Result<vfio_group_status> {
        let mut st = vfio_group_status {
            argsz: std::mem::size_of::<vfio_group_status>() as u32,
            flags: 0,
        };
        // SAFETY: valid, writable struct with argsz set.
        unsafe { group_get_status(group.as_raw_fd(), &mut st)? };
        Ok(st)
    }

    /// Joins a group to a container.
    pub fn set_container(group: BorrowedFd<'_>, container: BorrowedFd<'_>) -> nix::Result<()> {
        let fd: i32 = container.as_raw_fd();
        // SAFETY: the kernel reads one int from a valid pointer.
        unsafe { group_set_container(group.as_raw_fd(), &fd)? };
        Ok(())
    }

    /// API version of the container.
    pub fn api_version(container: BorrowedFd<'_>) -> nix::Result<i32> {
        // SAFETY: no arguments.
        unsafe { get_api_version(container.as_raw_fd()) }
    }

    /// Whether the container supports an extension (e.g. TYPE1v2 = 3).
    pub fn has_extension(container: BorrowedFd<'_>, ext: i32) -> nix::Result<bool> {
        // SAFETY: integer argument.
        Ok(unsafe { check_extension(container.as_raw_fd(), ext)? } > 0)
    }

    /// Selects the IOMMU model.
    pub fn use_iommu(container: BorrowedFd<'_>, model: i32) -> nix::Result<()> {
        // SAFETY: integer argument.
        unsafe { set_iommu(container.as_raw_fd(), model)? };
        Ok(())
    }
}

/// Reads config space through a VFIO device fd at `offset` (pread).
pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    Ok(nix::sys::uio::pread(fd, buf, offset as i64)?)
}

/// Writes through a VFIO device fd at `offset` (pwrite).
pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], offset: u64) -> std::io::Result<usize> {
    Ok(nix::sys::uio::pwrite(fd, buf, offset as i64)?)
}

/// Registers an eventfd with the tokio reactor for readiness (the mailbox interrupt).
pub fn async_eventfd(
    fd: BorrowedFd<'_>,
) -> std::io::Result<tokio::io::unix::AsyncFd<BorrowedFd<'_>>> {
    // SAFETY: the BorrowedFd keeps the descriptor open, referring to the same file, for its
    // whole lifetime, and the returned AsyncFd borrows it, so it cannot outlive it.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            .map_err(std::io::Error::from)
    }
}
