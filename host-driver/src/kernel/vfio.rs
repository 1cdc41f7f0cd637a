//! Opening a device through the VFIO container/group/device interface, and the argument
//! layouts of the ioctls it needs.

use crate::error::{Error, Result};
use crate::sys::vfio as raw;
use std::ffi::CString;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

/// VFIO API version this driver was written against.
pub const API_VERSION: i32 = 0;
/// `VFIO_TYPE1v2_IOMMU`.
pub const TYPE1V2_IOMMU: i32 = 3;
/// `VFIO_GROUP_FLAGS_VIABLE`.
pub const GROUP_VIABLE: u32 = 1;
/// `VFIO_PCI_CONFIG_REGION_INDEX`.
pub const CONFIG_REGION_INDEX: u32 = 7;
/// `VFIO_DEVICE_FEATURE_SET`.
pub const FEATURE_SET: u32 = 1 << 17;
/// `VFIO_DEVICE_FEATURE_PCI_VF_TOKEN`.
pub const FEATURE_PCI_VF_TOKEN: u32 = 0;

/// The three descriptors of an opened device.
#[derive(Debug)]
pub struct Opened {
    /// Container.
    pub container: OwnedFd,
    /// Group.
    pub group: OwnedFd,
    /// Device.
    pub device: OwnedFd,
}

/// A region's size and mmap/pread offset.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    /// Bytes.
    pub size: u64,
    /// Offset in the device fd.
    pub offset: u64,
}

fn kerr(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> Error {
    let what = what.into();
    move |e| Error::Kernel {
        what,
        source: e.into(),
    }
}

/// The name passed to `VFIO_GROUP_GET_DEVICE_FD`: the address, plus ` vf_token=UUID` for a VF
/// whose PF is driven through vfio-pci.
pub fn device_name(addr: &str, vf_token: Option<&str>) -> Result<CString> {
    let s = match vf_token {
        Some(t) => format!("{addr} vf_token={t}"),
        None => addr.to_string(),
    };
    CString::new(s).map_err(|_| Error::Invalid("device name contains NUL".into()))
}

/// The `VFIO_DEVICE_FEATURE` argument that sets the PF's VF token: `struct vfio_device_feature`
/// (argsz, flags) followed by the 16-byte UUID.
pub fn vf_token_arg(uuid: &str) -> Result<Vec<u8>> {
    let hex: String = uuid.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(Error::Invalid(format!("'{uuid}' is not a UUID")));
    }
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&24u32.to_ne_bytes());
    out.extend_from_slice(&(FEATURE_SET | FEATURE_PCI_VF_TOKEN).to_ne_bytes());
    for i in 0..16 {
        out.push(u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap_or(0));
    }
    Ok(out)
}

/// `VFIO_PCI_MSIX_IRQ_INDEX`.
pub const MSIX_IRQ_INDEX: u32 = 2;
/// `VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER`.
pub const IRQ_SET_EVENTFD_TRIGGER: u32 = (1 << 2) | (1 << 5);

/// The `VFIO_DEVICE_SET_IRQS` argument wiring MSI-X vectors `[start, start + fds.len())` to
/// eventfds: `struct vfio_irq_set` (argsz, flags, index, start, count) then the fds as i32.
pub fn irq_set_eventfds(start: u32, fds: &[i32]) -> Vec<u8> {
    let argsz = 20 + 4 * fds.len();
    let mut a = Vec::with_capacity(argsz);
    for v in [
        argsz as u32,
        IRQ_SET_EVENTFD_TRIGGER,
        MSIX_IRQ_INDEX,
        start,
        fds.len() as u32,
    ] {
        a.extend_from_slice(&v.to_ne_bytes());
    }
    for fd in fds {
        a.extend_from_slice(&fd.to_ne_bytes());
    }
    a
}

/// A fresh random UUID (v4) for the VF token.
pub fn new_vf_token() -> String {
    let mut b = [0u8; 16];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn open(path: &str) -> Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::Kernel {
            what: format!("open {path} (run as root, with the vfio-pci module loaded)"),
            source: e,
        })?;
    Ok(OwnedFd::from(f))
}

/// Container → group → device, as in the kernel's VFIO documentation.
pub fn open_device(group: u32, addr: &str, vf_token: Option<&str>) -> Result<Opened> {
    let container = open("/dev/vfio/vfio")?;
    let v = raw::api_version(container.as_fd()).map_err(kerr("VFIO_GET_API_VERSION"))?;
    if v != API_VERSION {
        return Err(Error::NotOurDevice(format!(
            "kernel VFIO API {v}, expected {API_VERSION}"
        )));
    }
    if !raw::has_extension(container.as_fd(), TYPE1V2_IOMMU)
        .map_err(kerr("VFIO_CHECK_EXTENSION"))?
    {
        return Err(Error::NotOurDevice(
            "the kernel's VFIO lacks the type1v2 IOMMU".into(),
        ));
    }
    let group_fd = open(&format!("/dev/vfio/{group}"))?;
    let st = raw::group_status(group_fd.as_fd()).map_err(kerr("VFIO_GROUP_GET_STATUS"))?;
    if st.flags & GROUP_VIABLE == 0 {
        return Err(Error::NotOurDevice(format!(
            "IOMMU group {group} is not viable: bind every device in /sys/kernel/iommu_groups/{group}/devices to vfio-pci"
        )));
    }
    raw::set_container(group_fd.as_fd(), container.as_fd())
        .map_err(kerr("VFIO_GROUP_SET_CONTAINER"))?;
    raw::use_iommu(container.as_fd(), TYPE1V2_IOMMU).map_err(kerr("VFIO_SET_IOMMU"))?;
    let name = device_name(addr, vf_token)?;
    let fd = raw::group_get_device_fd(group_fd.as_fd(), &name)
        .map_err(kerr(format!("VFIO_GROUP_GET_DEVICE_FD {addr}")))?;
    let device = fd_from_ioctl(fd);
    Ok(Opened {
        container,
        group: group_fd,
        device,
    })
}

#[allow(unsafe_code)]
fn fd_from_ioctl(fd: i32) -> OwnedFd {
    // SAFETY: VFIO_GROUP_GET_DEVICE_FD returned a new descriptor owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A device region.
pub fn region(device: &OwnedFd, index: u32) -> Result<Region> {
    let r = raw::region_info(device.as_fd(), index)
        .map_err(kerr(format!("VFIO_DEVICE_GET_REGION_INFO {index}")))?;
    Ok(Region {
        size: r.size,
        offset: r.offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux_vfio_h() {
        // _IO(';', 100 + n)
        assert_eq!(
            nix::request_code_none!(raw::VFIO_TYPE, raw::VFIO_BASE) as u32,
            0x3B64
        );
        assert_eq!(
            nix::request_code_none!(raw::VFIO_TYPE, raw::VFIO_BASE + 6) as u32,
            0x3B6A
        );
        assert_eq!(
            nix::request_code_none!(raw::VFIO_TYPE, raw::VFIO_BASE + 8) as u32,
            0x3B6C
        );
        assert_eq!(
            nix::request_code_none!(raw::VFIO_TYPE, raw::VFIO_BASE + 17) as u32,
            0x3B75
        );
        assert_eq!(
            std::mem::size_of::<vfio_bindings::bindings::vfio::vfio_region_info>(),
            32
        );
        assert_eq!(
            std::mem::size_of::<vfio_bindings::bindings::vfio::vfio_group_status>(),
            8
        );
    }

    #[test]
    fn vf_token_argument_layout() {
        let a = vf_token_arg("2ab74924-c335-45f4-9b16-8569e5b08258").unwrap();
        assert_eq!(a.len(), 24);
        assert_eq!(u32::from_ne_bytes(a[0..4].try_into().unwrap()), 24);
        assert_eq!(u32::from_ne_bytes(a[4..8].try_into().unwrap()), FEATURE_SET);
        assert_eq!(&a[8..12], &[0x2a, 0xb7, 0x49, 0x24]);
        assert_eq!(a[23], 0x58);
        assert!(vf_token_arg("not-a-uuid").is_err());
        let t = new_vf_token();
        assert_eq!(t.len(), 36);
        assert!(vf_token_arg(&t).is_ok());
        assert_eq!(&t[14..15], "4", "version 4 UUID");
    }

    #[test]
    fn irq_set_argument_layout() {
        let a = irq_set_eventfds(3, &[10, 11]);
        let w = |i: usize| u32::from_ne_bytes(a[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(a.len(), 28);
        assert_eq!((w(0), w(1), w(2), w(3), w(4)), (28, 0x24, 2, 3, 2));
        assert_eq!((w(5), w(6)), (10, 11));
        assert_eq!(
            std::mem::size_of::<vfio_bindings::bindings::vfio::vfio_irq_set>(),
            20
        );
        assert_eq!(
            nix::request_code_none!(raw::VFIO_TYPE, raw::VFIO_BASE + 10) as u32,
            0x3B6E
        );
    }

    #[test]
    fn device_names() {
        assert_eq!(
            device_name("0000:3b:00.1", None).unwrap().to_str().unwrap(),
            "0000:3b:00.1"
        );
        assert_eq!(
            device_name("0000:3b:00.1", Some("2ab74924-c335-45f4-9b16-8569e5b08258"))
                .unwrap()
                .to_str()
                .unwrap(),
            "0000:3b:00.1 vf_token=2ab74924-c335-45f4-9b16-8569e5b08258"
        );
    }
}
