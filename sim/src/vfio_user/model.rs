//! What a vfio-user connection serves: the device side of one PCI function's regions,
//! interrupts, DMA space and reset. The accelerator model ([`Device`]) is one; a function
//! whose work happens elsewhere (a remote VF's importer) is another, served by the same
//! protocol handling.

use crate::device::{AccessError, Device, Func};
use crate::dma::Space;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;

/// The device side of a vfio-user connection. Every method names the function it is for, so
/// one model can serve several (the accelerator's PF and VFs).
pub trait Model: Send + Sync {
    /// Reads configuration space.
    fn config_read(&self, f: Func, offset: u64, buf: &mut [u8]) -> Result<(), AccessError>;
    /// Writes configuration space, with its side effects.
    fn config_write(&self, f: Func, offset: u64, data: &[u8]) -> Result<(), AccessError>;
    /// Reads a BAR.
    fn bar_read(&self, f: Func, idx: u32, offset: u64, buf: &mut [u8]) -> Result<(), AccessError>;
    /// Writes a BAR on behalf of connection `conn`.
    fn bar_write(
        &self,
        f: Func,
        idx: u32,
        offset: u64,
        data: &[u8],
        conn: u64,
    ) -> Result<(), AccessError>;
    /// The size of a region (None: not implemented).
    fn region_size(&self, f: Func, idx: u32) -> Option<u64>;
    /// A part of a BAR the client may map: the memory file and the `[start, end)` offsets.
    fn mmap_area(&self, f: Func, idx: u32) -> Option<(BorrowedFd<'_>, u64, u64)>;
    /// MSI-X vectors of the function.
    fn msix_count(&self, f: Func) -> Result<u32, AccessError>;
    /// Installs eventfds for vectors `start..start + count`.
    fn set_msix_eventfds(
        &self,
        f: Func,
        start: u32,
        count: u32,
        fds: Vec<OwnedFd>,
    ) -> Result<(), AccessError>;
    /// Drops every MSI-X eventfd of the function.
    fn clear_msix(&self, f: Func);
    /// SET_IRQS TRIGGER from the client: signals the vectors' eventfds.
    fn signal_msix(&self, f: Func, start: u32, count: u32) -> Result<(), AccessError>;
    /// SET_IRQS MASK/UNMASK.
    fn mask_msix(&self, f: Func, start: u32, count: u32, masked: bool) -> Result<(), AccessError>;
    /// DEVICE_RESET: false if the reset could not be carried out.
    fn reset(&self, f: Func) -> bool;
    /// Connection `conn` asks to own the function's DMA, interrupts and reset: true if it
    /// does (it was first, or already owns them).
    fn claim(&self, f: Func, conn: u64) -> bool;
    /// Connection `conn` went away: if it owned `f`, nobody does now.
    fn disown(&self, f: Func, conn: u64);
    /// The function's DMA space for connection `conn` (None: another connection's).
    fn dma_space(&self, f: Func, conn: u64) -> Option<Arc<Space>>;
    /// Connection `conn` went away: its DMA space goes with it.
    fn release_dma(&self, f: Func, conn: u64);
    /// Connection `conn` went away: anything else it held is released.
    fn client_gone(&self, conn: u64);
}

impl Model for Device {
    fn config_read(&self, f: Func, offset: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        Device::config_read(self, f, offset, buf)
    }
    fn config_write(&self, f: Func, offset: u64, data: &[u8]) -> Result<(), AccessError> {
        Device::config_write(self, f, offset, data)
    }
    fn bar_read(&self, f: Func, idx: u32, offset: u64, buf: &mut [u8]) -> Result<(), AccessError> {
        Device::bar_read(self, f, idx, offset, buf)
    }
    fn bar_write(
        &self,
        f: Func,
        idx: u32,
        offset: u64,
        data: &[u8],
        conn: u64,
    ) -> Result<(), AccessError> {
        Device::bar_write(self, f, idx, offset, data, conn)
    }
    fn region_size(&self, f: Func, idx: u32) -> Option<u64> {
        Device::region_size(self, f, idx)
    }
    fn mmap_area(&self, f: Func, idx: u32) -> Option<(BorrowedFd<'_>, u64, u64)> {
        // The mailbox pages are plain memory the firmware polls: they may be mapped.
        // Everything else in BAR0 is trapped so the device can enforce its access rules.
        if f != Func::Pf || idx != crate::device::region::BAR0 {
            return None;
        }
        let fd = self.bar0().fd()?;
        let start = shared_abi::regs::pf::MBOX_CTRL_PAGE.offset as u64;
        let end = shared_abi::regs::pf::MBOX_RESP.end() as u64;
        Some((fd, start, end))
    }
    fn msix_count(&self, f: Func) -> Result<u32, AccessError> {
        Device::msix_count(self, f)
    }
    fn set_msix_eventfds(
        &self,
        f: Func,
        start: u32,
        count: u32,
        fds: Vec<OwnedFd>,
    ) -> Result<(), AccessError> {
        Device::set_msix_eventfds(self, f, start, count, fds)
    }
    fn clear_msix(&self, f: Func) {
        Device::clear_msix(self, f)
    }
    fn signal_msix(&self, f: Func, start: u32, count: u32) -> Result<(), AccessError> {
        Device::signal_msix(self, f, start, count)
    }
    fn mask_msix(&self, f: Func, start: u32, count: u32, masked: bool) -> Result<(), AccessError> {
        Device::mask_msix(self, f, start, count, masked)
    }
    fn reset(&self, f: Func) -> bool {
        match f {
            Func::Pf => {
                self.reset_pf();
                true
            }
            Func::Vf(v) => self.flr_vf(v),
        }
    }
    fn claim(&self, f: Func, conn: u64) -> bool {
        Device::claim(self, f, conn)
    }
    fn disown(&self, f: Func, conn: u64) {
        Device::disown(self, f, conn)
    }
    fn dma_space(&self, f: Func, conn: u64) -> Option<Arc<Space>> {
        Device::dma_space(self, f, conn)
    }
    fn release_dma(&self, f: Func, conn: u64) {
        Device::release_dma(self, f, conn)
    }
    fn client_gone(&self, conn: u64) {
        Device::client_gone(self, conn)
    }
}
