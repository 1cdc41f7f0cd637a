//! A VF opened through the kernel's VFIO for the job library: on a host whose PF is bound to
//! vfio-pci (with its VF token), or inside a VM that was given the VF. BARs and config space
//! go through the device fd; the library's memory is mapped for the device with
//! `VFIO_IOMMU_MAP_DMA` in the VF's own container.

use super::{vfio, Sysfs};
use crate::error::{Error, Result};
use crate::vf::VfPort;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use vfio_user_wire::shared::Shared;

/// A VF opened through `/dev/vfio`.
#[derive(Debug)]
pub struct KernelVf {
    addr: String,
    container: OwnedFd,
    _group: OwnedFd,
    device: OwnedFd,
    bars: [Option<vfio::Region>; 3],
    config: vfio::Region,
}

impl KernelVf {
    /// Opens VF `addr` (bound to vfio-pci, with our IDs). `vf_token` is needed when its PF is
    /// itself bound to vfio-pci on this host.
    pub fn open(addr: &str, sysfs: &Sysfs, vf_token: Option<&str>) -> Result<Self> {
        let opened = super::open_ours(addr, sysfs, shared_abi::pci::VF_DEVICE_ID, "VF", vf_token)?;
        let bar = |i| vfio::region(&opened.device, i).ok().filter(|r| r.size > 0);
        Ok(KernelVf {
            addr: addr.to_string(),
            bars: [bar(0), None, bar(2)],
            config: vfio::region(&opened.device, vfio::CONFIG_REGION_INDEX)?,
            container: opened.container,
            _group: opened.group,
            device: opened.device,
        })
    }

    fn at(&self, r: Option<vfio::Region>, off: u64, len: usize) -> Result<u64> {
        let r = r.ok_or_else(|| Error::NotOurDevice(format!("{}: no such BAR", self.addr)))?;
        if off.checked_add(len as u64).is_none_or(|e| e > r.size) {
            return Err(Error::Invalid(format!(
                "{}: access past the end of a region",
                self.addr
            )));
        }
        Ok(r.offset + off)
    }

    fn io(&self, what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
        let what = what.to_string();
        move |e| Error::Kernel {
            what: format!("{what} of {}", self.addr),
            source: e,
        }
    }
}

impl VfPort for KernelVf {
    fn bar_read(&self, bar: u32, off: u64, buf: &mut [u8]) -> Result<()> {
        let at = self.at(
            self.bars.get(bar as usize).copied().flatten(),
            off,
            buf.len(),
        )?;
        crate::sys::pread(self.device.as_fd(), buf, at).map_err(self.io("BAR read"))?;
        Ok(())
    }
    fn bar_write(&self, bar: u32, off: u64, data: &[u8]) -> Result<()> {
        let at = self.at(
            self.bars.get(bar as usize).copied().flatten(),
            off,
            data.len(),
        )?;
        crate::sys::pwrite(self.device.as_fd(), data, at).map_err(self.io("BAR write"))?;
        Ok(())
    }
    fn cfg_read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        let at = self.at(Some(self.config), off, buf.len())?;
        crate::sys::pread(self.device.as_fd(), buf, at).map_err(self.io("config read"))?;
        Ok(())
    }
    fn cfg_write(&self, off: u64, data: &[u8]) -> Result<()> {
        let at = self.at(Some(self.config), off, data.len())?;
        crate::sys::pwrite(self.device.as_fd(), data, at).map_err(self.io("config write"))?;
        Ok(())
    }
    fn dma_map(&self, iova: u64, mem: &Shared, _fd: BorrowedFd<'_>) -> Result<()> {
        crate::sys::vfio::iommu_map_dma(self.container.as_fd(), mem, iova).map_err(|e| {
            Error::Kernel {
                what: format!("VFIO_IOMMU_MAP_DMA for {}", self.addr),
                source: e.into(),
            }
        })
    }
    fn msix_eventfd(&self, vector: u32, fd: BorrowedFd<'_>) -> Result<()> {
        let mut arg = vfio::irq_set_eventfds(vector, &[fd.as_raw_fd()]);
        crate::sys::vfio::device_set_irqs(self.device.as_fd(), &mut arg)
            .map(|_| ())
            .map_err(|e| Error::Kernel {
                what: format!("VFIO_DEVICE_SET_IRQS (MSI-X) for {}", self.addr),
                source: e.into(),
            })
    }
    fn describe(&self) -> String {
        self.addr.clone()
    }
}
