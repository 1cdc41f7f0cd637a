//! Kernel VFIO transport for real hardware: the PF is opened through `/dev/vfio`, BAR0 is
//! mapped from the device fd, config space is read and written through the config region, and
//! SR-IOV is enabled through sysfs `sriov_numvfs` (with a VF token when the PF itself is bound
//! to vfio-pci). VFs are bound to vfio-pci with `driver_override`.
//!
//! Why our own ioctls and not `vfio-ioctls`' container, group and device objects: its
//! `VfioDevice::new` asks the group for the device by the sysfs path's last component only, so
//! it cannot pass the `vf_token=` a VF of a vfio-pci PF needs (`VFIO_GROUP_GET_DEVICE_FD`
//! takes "name vf_token=uuid"), and it has no `VFIO_DEVICE_FEATURE` to set the PF's token.
//! The ioctls we need are few and live, with their `unsafe`, in `crate::sys`; the structures
//! are `vfio-bindings`', the crate the rust-vmm family shares. PCI configuration space is
//! `shared_abi::config_space`, declared once with the device model.
//!
//! No accelerator and no IOMMU are on the CI machines: [`sysfs`] is tested against a fake sysfs
//! tree and [`vfio`]'s ioctl arguments in unit tests; opening a real device is not exercised.

pub mod sysfs;
pub mod token;
pub mod vf;
pub mod vfio;

use crate::error::{Error, Result};
use crate::transport::{Transport, VfEndpoint};
use std::os::fd::{AsFd, OwnedFd};
pub use sysfs::Sysfs;
use vfio_user_wire::shared::Shared;

/// PCI command register and its Bus Master Enable bit.
const PCI_COMMAND: u64 = crate::transport::header::COMMAND as u64;
const PCI_COMMAND_MASTER: u16 = crate::transport::command::BUS_MASTER;

/// Opens one of our functions (`device` ID, called `what` in messages) through `/dev/vfio`,
/// after checking its IDs, that vfio-pci has it and that it has an IOMMU group.
pub(crate) fn open_ours(
    addr: &str,
    sysfs: &Sysfs,
    device: u16,
    what: &str,
    vf_token: Option<&str>,
) -> Result<vfio::Opened> {
    let (v, d) = sysfs.ids(addr)?;
    if v != shared_abi::pci::VENDOR_ID || d != device {
        return Err(Error::NotOurDevice(format!(
            "{addr} is {v:04x}:{d:04x}, not an accelvirt {what}"
        )));
    }
    if sysfs.driver(addr).as_deref() != Some("vfio-pci") {
        return Err(Error::NotOurDevice(format!(
            "{addr} is not bound to vfio-pci; bind it with: echo vfio-pci > {0}/driver_override && echo {addr} > /sys/bus/pci/drivers_probe",
            sysfs.device_dir(addr).display()
        )));
    }
    let group = sysfs.iommu_group(addr)?.ok_or_else(|| {
        Error::NotOurDevice(format!("{addr} has no IOMMU group (is the IOMMU enabled?)"))
    })?;
    vfio::open_device(group, addr, vf_token)
}

/// A PF opened through the kernel's VFIO.
#[derive(Debug)]
pub struct KernelVfio {
    addr: String,
    sysfs: Sysfs,
    container: OwnedFd,
    group: OwnedFd,
    device: OwnedFd,
    bar0: Shared,
    config_offset: u64,
    tokens: token::TokenStore,
    /// The mailbox vector's eventfd (MSI-X enabled through vfio-pci), when it could be set up.
    mailbox_irq: Option<nix::sys::eventfd::EventFd>,
    /// The events vector's eventfd, wired with the mailbox's (vfio-pci before Linux 6.5
    /// cannot add vectors to MSI-X once it is enabled).
    events_irq: Option<nix::sys::eventfd::EventFd>,
}

impl KernelVfio {
    /// Opens `addr` (which must be bound to vfio-pci and carry our IDs).
    pub fn open(addr: &str, sysfs: Sysfs) -> Result<Self> {
        let opened = open_ours(addr, &sysfs, shared_abi::pci::PF_DEVICE_ID, "PF", None)?;
        Self::adopt(addr, sysfs, opened)
    }

    /// Drives `addr` through descriptors opened before (by an earlier process of the same
    /// owner, kept for it by systemd's descriptor store): vfio-pci resets a function when it
    /// is opened and when it is released, and a PF reset destroys every VF, so an owner that
    /// restarts keeps the device open through its descriptors instead of opening it again.
    pub fn adopt(addr: &str, sysfs: Sysfs, opened: vfio::Opened) -> Result<Self> {
        let cfg = vfio::region(&opened.device, vfio::CONFIG_REGION_INDEX)?;
        let bar = vfio::region(&opened.device, 0)?;
        let bar0 =
            Shared::map(opened.device.as_fd(), bar.offset, bar.size as usize).map_err(|e| {
                Error::Kernel {
                    what: format!("mmap BAR0 of {addr}"),
                    source: e,
                }
            })?;
        let mut pf = KernelVfio {
            addr: addr.to_string(),
            sysfs,
            container: opened.container,
            group: opened.group,
            device: opened.device,
            bar0,
            config_offset: cfg.offset,
            tokens: token::TokenStore::system(),
            mailbox_irq: None,
            events_irq: None,
        };
        // Completion interrupts are an optimisation: without them the client polls. An MSI-X
        // message is a memory write, so the function must be a bus master to send one;
        // vfio-pci leaves that to the user (as DPDK and SPDK do, we set it).
        use nix::sys::eventfd::{EfdFlags, EventFd};
        let mut cmd = [0u8; 2];
        let master = pf.config_read(PCI_COMMAND, &mut cmd).is_ok() && {
            let v = u16::from_le_bytes(cmd) | PCI_COMMAND_MASTER;
            pf.config_write(PCI_COMMAND, &v.to_le_bytes()).is_ok()
        };
        let efd = || EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC);
        if let (true, Ok(mbox), Ok(events)) = (master, efd(), efd()) {
            // Vectors 0 (mailbox) and 1 (events), in one call.
            const _: () = assert!(
                shared_abi::pci::PF_VECTOR_MAILBOX == 0 && shared_abi::pci::PF_VECTOR_EVENTS == 1
            );
            if pf
                .set_msix_eventfds(0, &[mbox.as_fd(), events.as_fd()])
                .is_ok()
            {
                pf.mailbox_irq = Some(mbox);
                pf.events_irq = Some(events);
            }
        }
        Ok(pf)
    }
}

impl KernelVfio {
    /// Wires MSI-X vectors `[start, start + fds.len())` of the PF to eventfds.
    pub fn set_msix_eventfds(&self, start: u32, fds: &[std::os::fd::BorrowedFd<'_>]) -> Result<()> {
        use std::os::fd::AsRawFd;
        let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let mut arg = vfio::irq_set_eventfds(start, &raw);
        crate::sys::vfio::device_set_irqs(self.device.as_fd(), &mut arg)
            .map(|_| ())
            .map_err(|e| Error::Kernel {
                what: "VFIO_DEVICE_SET_IRQS (MSI-X eventfds)".into(),
                source: e.into(),
            })
    }
}

impl Transport for KernelVfio {
    fn mailbox_irq(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.mailbox_irq.as_ref().map(|e| e.as_fd())
    }
    fn events_irq(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.events_irq.as_ref().map(|e| e.as_fd())
    }
    fn held_descriptors(&self) -> Vec<(&'static str, std::os::fd::BorrowedFd<'_>)> {
        vec![
            ("container", self.container.as_fd()),
            ("group", self.group.as_fd()),
            ("device", self.device.as_fd()),
        ]
    }
    fn mapped_mailbox(&self) -> bool {
        true
    }

    fn read32(&self, off: usize) -> Result<u32> {
        self.bar0
            .read32(off)
            .ok_or(Error::BadResponse("BAR0 access out of range"))
    }
    fn write32(&self, off: usize, v: u32) -> Result<()> {
        self.bar0
            .write32(off, v)
            .then_some(())
            .ok_or(Error::BadResponse("BAR0 access out of range"))
    }
    fn cas32(&self, off: usize, old: u32, new: u32) -> Result<bool> {
        self.bar0
            .cas32(off, old, new)
            .ok_or(Error::BadResponse("BAR0 access out of range"))
    }
    fn read_bytes(&self, off: usize, buf: &mut [u8]) -> Result<()> {
        self.bar0
            .read(off, buf)
            .then_some(())
            .ok_or(Error::BadResponse("BAR0 access out of range"))
    }
    fn write_bytes(&self, off: usize, data: &[u8]) -> Result<()> {
        self.bar0
            .write(off, data)
            .then_some(())
            .ok_or(Error::BadResponse("BAR0 access out of range"))
    }
    fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        crate::sys::pread(self.device.as_fd(), buf, self.config_offset + off)
            .map(|_| ())
            .map_err(|e| Error::Kernel {
                what: "config read".into(),
                source: e,
            })
    }
    fn config_write(&self, off: u64, data: &[u8]) -> Result<()> {
        crate::sys::pwrite(self.device.as_fd(), data, self.config_offset + off)
            .map(|_| ())
            .map_err(|e| Error::Kernel {
                what: "config write".into(),
                source: e,
            })
    }
    fn num_vfs(&self) -> Result<u16> {
        self.sysfs.num_vfs(&self.addr)
    }
    fn set_num_vfs(&self, n: u16) -> Result<()> {
        if n > 0 {
            // A vfio-pci PF must vouch for its VFs' users with a token before enabling them;
            // the same token every time, so VMMs that hold it keep working.
            let token = self.tokens.load_or_create(&self.addr)?;
            let mut arg = vfio::vf_token_arg(&token)?;
            crate::sys::vfio::device_feature(self.device.as_fd(), &mut arg).map_err(|e| {
                Error::Kernel {
                    what: "set the VF token".into(),
                    source: e.into(),
                }
            })?;
        }
        self.sysfs.set_num_vfs(&self.addr, n)
    }
    fn vf_endpoint(&self, v: u16) -> Result<VfEndpoint> {
        let address = self.sysfs.vf_address(&self.addr, v)?;
        Ok(VfEndpoint::Pci {
            iommu_group: self.sysfs.iommu_group(&address)?,
            driver: self.sysfs.driver(&address),
            vf_token: self.tokens.load(&self.addr),
            address,
        })
    }
    fn bind_vf(&self, v: u16) -> Result<()> {
        let a = self.sysfs.vf_address(&self.addr, v)?;
        self.sysfs.bind_vfio(&a)
    }
    fn describe(&self) -> String {
        format!("vfio:{}", self.addr)
    }
    fn lock_path(&self) -> std::path::PathBuf {
        std::path::Path::new(token::RUN_DIR).join(format!("{}.lock", self.addr))
    }
}
