//! The host driver's `unsafe`: the raw VFIO ioctls and positioned reads and writes on a VFIO
//! device fd. A BAR is mapped with `vfio_user_wire::shared::Shared`, the mapping and access
//! discipline the device side uses too.
#![allow(unsafe_code)]

use std::os::fd::BorrowedFd;

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
        iommu_map_dma_raw,
        nix::request_code_none!(VFIO_TYPE, VFIO_BASE + 13),
        vfio_bindings::bindings::vfio::vfio_iommu_type1_dma_map
    );
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

    /// An ioctl argument that starts with its `argsz` (a u32) and is at least `head` bytes:
    /// `argsz` is set here to the buffer's length, so the kernel, which reads and writes up
    /// to `argsz` bytes of it, never goes past the buffer whatever the caller put there.
    pub(crate) fn sized(arg: &mut [u8], head: usize) -> nix::Result<()> {
        let len = u32::try_from(arg.len()).map_err(|_| nix::errno::Errno::EINVAL)?;
        if arg.len() < head.max(4) {
            return Err(nix::errno::Errno::EINVAL);
        }
        arg[..4].copy_from_slice(&len.to_ne_bytes());
        Ok(())
    }

    /// `VFIO_DEVICE_FEATURE` with an argument buffer (`struct vfio_device_feature` and its
    /// data, as `kernel::vfio::vf_token_arg` builds it); its `argsz` is set to its length.
    pub fn device_feature(dev: BorrowedFd<'_>, arg: &mut [u8]) -> nix::Result<i32> {
        sized(arg, 8)?;
        // SAFETY: `arg` is a writable buffer of `argsz` bytes (set just above), the most the
        // kernel reads or writes.
        unsafe { device_feature_raw(dev.as_raw_fd(), arg.as_mut_ptr()) }
    }

    /// `VFIO_IOMMU_MAP_DMA`: the container's devices may read and write `mem` at `iova`.
    /// Only a shared mapping can be handed over: memory the device writes behind the
    /// process's back must be memory every access of this process treats as shared.
    pub fn iommu_map_dma(
        container: BorrowedFd<'_>,
        mem: &vfio_user_wire::shared::Shared,
        iova: u64,
    ) -> nix::Result<()> {
        let m = vfio_bindings::bindings::vfio::vfio_iommu_type1_dma_map {
            argsz: std::mem::size_of::<vfio_bindings::bindings::vfio::vfio_iommu_type1_dma_map>()
                as u32,
            flags: 1 | 2, // READ | WRITE
            vaddr: mem.addr() as u64,
            iova,
            size: mem.len() as u64,
        };
        // SAFETY: the kernel reads `argsz` bytes of a valid struct. The range is a `Shared`
        // mapping, whose every access here is an atomic (so the device writing it is no data
        // race), and the kernel pins its pages for the container's life: dropping the mapping
        // leaves them to the device, never reused under it.
        unsafe { iommu_map_dma_raw(container.as_raw_fd(), &m)? };
        Ok(())
    }

    /// `VFIO_DEVICE_SET_IRQS` with a `struct vfio_irq_set` and its data (as
    /// `kernel::vfio::irq_set_eventfds` builds it); its `argsz` is set to its length.
    pub fn device_set_irqs(dev: BorrowedFd<'_>, arg: &mut [u8]) -> nix::Result<i32> {
        sized(arg, 20)?;
        // SAFETY: the kernel reads `argsz` bytes, set just above to `arg.len()`.
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

/// Restores the default action for SIGPIPE (Rust's runtime ignores it), so that a command
/// line tool whose output pipe closes (`accelctl info | head -1`) ends quietly, as other
/// tools do, instead of panicking on the failed write.
pub fn default_sigpipe() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_DFL installs no handler, so no code of ours runs in signal context; this is
    // called at start-up before other threads exist.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// Blocks SIGPIPE on the calling thread: a write there to a socket whose peer is gone fails
/// with EPIPE instead of ending the process, while threads that do not call this (the one
/// writing stdout) keep the default. SIGPIPE from a write goes to the thread that wrote.
pub fn block_sigpipe_here() {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGPIPE);
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
}

#[cfg(test)]
mod tests {
    /// Whatever `argsz` a caller wrote, the kernel is told the buffer's own length (before,
    /// a caller's argsz of 4096 on a 24-byte buffer let the kernel write past it).
    #[test]
    fn an_ioctl_argument_carries_its_own_length() {
        let mut arg = vec![0u8; 24];
        arg[..4].copy_from_slice(&4096u32.to_ne_bytes());
        super::vfio::sized(&mut arg, 8).unwrap();
        assert_eq!(u32::from_ne_bytes(arg[..4].try_into().unwrap()), 24);
        assert!(
            super::vfio::sized(&mut [0u8; 6], 8).is_err(),
            "short of the header"
        );
    }
}
