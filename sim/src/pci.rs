//! The accelerator's PCI functions: the PF's configuration space (PCIe endpoint, power
//! management, MSI-X, SR-IOV) and each VF's, built per the PCIe and SR-IOV specifications.

use crate::config_space::{cap_id, cmd, off, ConfigSpace};
use shared_abi::pci;
use shared_abi::regs::{pf as pfr, vf as vfr};

/// Where the capabilities live.
pub mod layout {
    /// Power management capability.
    pub const PM: usize = 0x40;
    /// MSI-X capability.
    pub const MSIX: usize = 0x50;
    /// PCI Express capability.
    pub const PCIE: usize = 0x70;
    /// SR-IOV extended capability (PF only).
    pub const SRIOV: usize = 0x100;
}

pub use shared_abi::config_space::{msix, pcie, sriov};

/// System page sizes the SR-IOV capability supports: 4K, 8K, 64K, 256K, 1M, 4M.
pub const SRIOV_PAGE_SIZES: u32 = 0x553;

fn common(c: &mut ConfigSpace, device: u16, msix_vectors: u16, msix_table: u32, msix_pba: u32) {
    c.init16(off::VENDOR_ID, pci::VENDOR_ID);
    c.init16(off::DEVICE_ID, device);
    c.writable16(
        off::COMMAND,
        cmd::MEMORY | cmd::BUS_MASTER | cmd::SERR | cmd::INTX_DISABLE,
    );
    // Capabilities List (bit 4) is read-only; error bits are RW1C.
    c.init16(off::STATUS, 1 << 4);
    c.w1c16(off::STATUS, 0xF900);
    c.init(
        off::REVISION,
        &[
            pci::REVISION_ID,
            pci::PROG_IF,
            pci::SUBCLASS,
            pci::CLASS_PROCESSING_ACCELERATOR,
        ],
    );
    c.writable(off::CACHE_LINE, &[0xFF]);
    c.init16(off::SUBSYS_VENDOR, pci::SUBSYSTEM_VENDOR_ID);
    c.init16(off::SUBSYS_ID, pci::SUBSYSTEM_ID);
    c.writable(off::INT_LINE, &[0xFF]);
    // No INTx: MSI-X only.
    c.init(off::INT_PIN, &[0]);

    // Power management: version 3, D0/D3hot, No_Soft_Reset.
    c.link_cap(off::CAP_PTR, layout::PM, cap_id::PM);
    c.init16(layout::PM + 2, 0x0003);
    c.init16(layout::PM + 4, 1 << 3);
    c.writable16(layout::PM + 4, 0x0003);

    // MSI-X: Table Size is N-1; Enable (15) and Function Mask (14) writable.
    c.data_next(layout::PM, layout::MSIX, cap_id::MSIX);
    set_msix_size(c, msix_vectors);
    c.writable16(
        layout::MSIX + msix::CTRL,
        msix::CTRL_ENABLE | msix::CTRL_FUNCTION_MASK,
    );
    c.init32(layout::MSIX + 4, msix_table); // BIR 0
    c.init32(layout::MSIX + 8, msix_pba);

    // PCI Express v2 endpoint, FLR capable, 256-byte max payload; x16 at 16 GT/s.
    c.data_next(layout::MSIX, layout::PCIE, cap_id::PCIE);
    c.init16(layout::PCIE + pcie::CAPS, 0x0002);
    c.init32(
        layout::PCIE + pcie::DEVCAP,
        pcie::DEVCAP_FLR | 0x1 | (0x7 << 6) | (0x7 << 9),
    );
    c.init16(layout::PCIE + pcie::DEVCTL, 0x2810);
    c.writable16(layout::PCIE + pcie::DEVCTL, 0x7CFF);
    c.w1c16(layout::PCIE + pcie::DEVSTA, 0x000F);
    c.init32(layout::PCIE + pcie::LINKCAP, 0x4 | (16 << 4));
    c.init16(layout::PCIE + pcie::LINKSTA, 0x4 | (16 << 4));
    c.init32(layout::PCIE + pcie::DEVCAP2, 0);
}

/// Sets the MSI-X Table Size field (N vectors, 1..=2048).
pub fn set_msix_size(c: &mut ConfigSpace, vectors: u16) {
    let ctl = c.r16(layout::MSIX + msix::CTRL) & (msix::CTRL_ENABLE | msix::CTRL_FUNCTION_MASK);
    c.set16(
        layout::MSIX + msix::CTRL,
        ctl | (vectors.clamp(1, msix::CTRL_TABLE_SIZE + 1) - 1),
    );
}

trait NextCap {
    fn data_next(&mut self, prev: usize, at: usize, id: u8);
}
impl NextCap for ConfigSpace {
    fn data_next(&mut self, prev: usize, at: usize, id: u8) {
        self.link_cap(prev + 1, at, id);
    }
}

/// The PF's configuration space.
pub fn pf_config(total_vfs: u16) -> ConfigSpace {
    let mut c = ConfigSpace::new();
    common(
        &mut c,
        pci::PF_DEVICE_ID,
        pci::PF_MSIX_VECTORS,
        pfr::MSIX_TABLE.offset,
        pfr::MSIX_PBA.offset,
    );
    c.bar64(off::BAR0, pci::PF_BAR0_SIZE, false);

    let s = layout::SRIOV;
    c.ext_cap(s, cap_id::EXT_SRIOV, 1, 0);
    c.init32(s + sriov::CAPS, 0);
    c.writable16(
        s + sriov::CTRL,
        sriov::CTRL_VF_ENABLE | sriov::CTRL_VF_MSE | sriov::CTRL_ARI,
    );
    c.w1c16(s + sriov::STATUS, 0x0001);
    c.init16(s + sriov::INITIAL_VFS, total_vfs);
    c.init16(s + sriov::TOTAL_VFS, total_vfs);
    c.writable16(s + sriov::NUM_VFS, 0xFFFF);
    c.init16(s + sriov::VF_OFFSET, pci::SRIOV_FIRST_VF_OFFSET);
    c.init16(s + sriov::VF_STRIDE, pci::SRIOV_VF_STRIDE);
    c.init16(s + sriov::VF_DEVICE, pci::VF_DEVICE_ID);
    c.init32(s + sriov::SUPPORTED_PAGE_SIZES, SRIOV_PAGE_SIZES);
    c.init32(s + sriov::SYSTEM_PAGE_SIZE, 1);
    c.writable32(s + sriov::SYSTEM_PAGE_SIZE, SRIOV_PAGE_SIZES);
    c.bar64(s + sriov::VF_BAR0, pci::VF_BAR0_SIZE, false);
    c.bar64(s + sriov::VF_BAR0 + 8, pci::VF_BAR2_SIZE, true);
    c
}

/// A VF's configuration space as the SR-IOV specification defines it: Vendor and Device ID
/// read 0xFFFF, no BARs of its own (the PF's VF BARn describe them), no INTx, MSI-X with as
/// many vectors as the firmware assigned, FLR capable.
pub fn vf_config(vectors: u16) -> ConfigSpace {
    let mut c = ConfigSpace::new();
    common(
        &mut c,
        0xFFFF,
        vectors,
        vfr::MSIX_TABLE.offset,
        vfr::MSIX_PBA.offset,
    );
    c.init16(off::VENDOR_ID, 0xFFFF);
    // Memory Space Enable is RsvdP in a VF (VF MSE in the PF governs it).
    c.writable16(
        off::COMMAND,
        cmd::BUS_MASTER | cmd::SERR | cmd::INTX_DISABLE,
    );
    c
}

/// What a VMM sees of a VF, as Linux vfio-pci presents one: the IDs a VF leaves as 0xFFFF are
/// filled in from the PF's SR-IOV capability and the VF BARs are emulated in the header, so a
/// guest driver binds it like any function.
pub fn vf_presented(raw: &ConfigSpace) -> ConfigSpace {
    let mut c = raw.clone();
    c.init16(off::VENDOR_ID, pci::VENDOR_ID);
    c.init16(off::DEVICE_ID, pci::VF_DEVICE_ID);
    c.bar64(off::BAR0, pci::VF_BAR0_SIZE, false);
    c.bar64(off::BAR0 + 8, pci::VF_BAR2_SIZE, true);
    c.writable16(
        off::COMMAND,
        cmd::MEMORY | cmd::BUS_MASTER | cmd::SERR | cmd::INTX_DISABLE,
    );
    c
}

/// (MSI-X may be sent, function mask) from a function's configuration space. An MSI-X
/// message is a memory write: a function that is not a bus master (Command bit 2) holds its
/// vectors pending, as silicon must.
pub fn msix_ctl(c: &ConfigSpace) -> (bool, bool) {
    let ctl = c.r16(layout::MSIX + msix::CTRL);
    let master = c.r16(off::COMMAND) & cmd::BUS_MASTER != 0;
    (
        ctl & msix::CTRL_ENABLE != 0 && master,
        ctl & msix::CTRL_FUNCTION_MASK != 0,
    )
}

/// Whether MSI-X may go out (enabled, bus master, function mask clear), from [`msix_ctl`]:
/// when a configuration write makes this true, held vectors are sent.
pub fn msix_may_send((enabled, fn_mask): (bool, bool)) -> bool {
    enabled && !fn_mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pf_capability_chain() {
        let c = pf_config(64);
        assert_eq!(c.r16(0), 0x1FAC);
        assert_eq!(c.bytes()[off::CAP_PTR], 0x40);
        assert_eq!(c.bytes()[0x40], cap_id::PM);
        assert_eq!(c.bytes()[0x41] as usize, layout::MSIX);
        assert_eq!(c.bytes()[0x50], cap_id::MSIX);
        assert_eq!(c.bytes()[0x51] as usize, layout::PCIE);
        assert_eq!(c.bytes()[0x70], cap_id::PCIE);
        assert_eq!(c.bytes()[0x71], 0);
        assert_eq!(c.r32(0x100) & 0xFFFF, 0x0010);
        assert_eq!(c.r16(0x100 + sriov::TOTAL_VFS), 64);
        assert_eq!(
            c.r16(layout::MSIX + msix::CTRL) & msix::CTRL_TABLE_SIZE,
            7,
            "8 PF vectors"
        );
    }

    #[test]
    fn sriov_fields_read_only_where_required() {
        let mut c = pf_config(64);
        let s = layout::SRIOV;
        for o in [
            sriov::TOTAL_VFS,
            sriov::INITIAL_VFS,
            sriov::VF_OFFSET,
            sriov::VF_STRIDE,
            sriov::VF_DEVICE,
        ] {
            let before = c.r16(s + o);
            c.write(s + o, &[0xAA, 0x55]);
            assert_eq!(c.r16(s + o), before, "offset {o:#x} is RO");
        }
        c.write(s + sriov::VF_BAR0, &[0xFF; 8]);
        assert_eq!(c.r32(s + sriov::VF_BAR0), 0xFFFE_0004, "VF BAR0 128 KiB");
        c.write(s + sriov::VF_BAR0 + 8, &[0xFF; 8]);
        assert_eq!(c.r32(s + sriov::VF_BAR0 + 8), 0x0000_000C);
        assert_eq!(c.r32(s + sriov::VF_BAR0 + 12), 0xFFFF_FFFF, "VF BAR2 4 GiB");
    }

    #[test]
    fn vf_rules() {
        let raw = vf_config(512);
        assert_eq!(raw.r16(0), 0xFFFF);
        assert_eq!(raw.r16(2), 0xFFFF);
        assert_eq!(raw.r32(off::BAR0), 0);
        assert_eq!(
            raw.r16(layout::MSIX + msix::CTRL) & msix::CTRL_TABLE_SIZE,
            511
        );
        assert_ne!(raw.r32(layout::PCIE + pcie::DEVCAP) & pcie::DEVCAP_FLR, 0);
        assert_eq!(raw.r32(0x100), 0, "no SR-IOV capability in a VF");
        let mut raw2 = raw.clone();
        raw2.write(off::COMMAND, &[0xFF, 0xFF]);
        assert_eq!(
            raw2.r16(off::COMMAND) & cmd::MEMORY,
            0,
            "MSE is RsvdP in a VF"
        );
        let p = vf_presented(&raw);
        assert_eq!(p.r16(0), 0x1FAC);
        assert_eq!(p.r16(2), 0xA0C1);
    }
}
