//! PCI configuration space as the PCI and PCIe specifications lay it out: the standard
//! header, capability IDs, and the registers of the capabilities this device has (MSI-X, PCI
//! Express, SR-IOV). Declared once here for the device model, which builds the spaces, and
//! the host driver, which walks them; offsets are bytes (within the header, or from the
//! capability's own start), as the kernel's `pci_regs.h` gives them.
//!
//! Why not the `pci-driver` crate's definitions: its config-space types read through its own
//! `PciDevice` backends (sysfs, its VFIO), which open the device themselves, while ours reach
//! it through a transport that is already open (vfio-user, or kernel VFIO with the VF token),
//! and the device model writes these registers, which those types do not. The offsets are the
//! specification's and few; declaring them here costs less than adapting either side.

/// Bytes of PCIe configuration space.
pub const CONFIG_SIZE: usize = 4096;
/// Where the extended capability list starts.
pub const EXT_CAP_START: usize = 0x100;

/// Standard header (type 0) offsets.
pub mod header {
    /// Vendor ID.
    pub const VENDOR_ID: usize = 0x00;
    /// Device ID.
    pub const DEVICE_ID: usize = 0x02;
    /// Command.
    pub const COMMAND: usize = 0x04;
    /// Status.
    pub const STATUS: usize = 0x06;
    /// Revision ID.
    pub const REVISION: usize = 0x08;
    /// Programming interface.
    pub const PROG_IF: usize = 0x09;
    /// Subclass.
    pub const SUBCLASS: usize = 0x0A;
    /// Base class.
    pub const CLASS: usize = 0x0B;
    /// Cache line size.
    pub const CACHE_LINE: usize = 0x0C;
    /// Header type.
    pub const HEADER_TYPE: usize = 0x0E;
    /// BAR 0.
    pub const BAR0: usize = 0x10;
    /// Subsystem vendor ID.
    pub const SUBSYS_VENDOR: usize = 0x2C;
    /// Subsystem ID.
    pub const SUBSYS_ID: usize = 0x2E;
    /// Expansion ROM base.
    pub const ROM: usize = 0x30;
    /// Capabilities pointer.
    pub const CAP_PTR: usize = 0x34;
    /// Interrupt line.
    pub const INT_LINE: usize = 0x3C;
    /// Interrupt pin.
    pub const INT_PIN: usize = 0x3D;
}

/// Command register bits.
pub mod command {
    /// Memory Space Enable.
    pub const MEMORY: u16 = 1 << 1;
    /// Bus Master Enable: the function may issue memory requests (DMA, MSI-X messages).
    pub const BUS_MASTER: u16 = 1 << 2;
    /// SERR# Enable.
    pub const SERR: u16 = 1 << 8;
    /// INTx Disable.
    pub const INTX_DISABLE: u16 = 1 << 10;
}

/// Capability IDs.
pub mod cap_id {
    /// Power management.
    pub const PM: u8 = 0x01;
    /// MSI-X.
    pub const MSIX: u8 = 0x11;
    /// PCI Express.
    pub const PCIE: u8 = 0x10;
    /// SR-IOV (extended capability).
    pub const EXT_SRIOV: u16 = 0x0010;
}

/// MSI-X capability registers (from the capability's start).
pub mod msix {
    /// Message Control.
    pub const CTRL: usize = 0x02;
    /// Message Control: MSI-X Enable.
    pub const CTRL_ENABLE: u16 = 1 << 15;
    /// Message Control: Function Mask.
    pub const CTRL_FUNCTION_MASK: u16 = 1 << 14;
    /// Message Control: table size minus one.
    pub const CTRL_TABLE_SIZE: u16 = 0x7FF;
    /// Table offset and BIR.
    pub const TABLE: usize = 0x04;
    /// PBA offset and BIR.
    pub const PBA: usize = 0x08;
    /// Bytes per table entry (address low, high, data, vector control).
    pub const ENTRY_SIZE: usize = 16;
    /// Vector control: masked.
    pub const ENTRY_MASKED: u32 = 1;
}

/// PCI Express capability registers (from the capability's start).
pub mod pcie {
    /// PCIe capabilities.
    pub const CAPS: usize = 0x02;
    /// Device capabilities.
    pub const DEVCAP: usize = 0x04;
    /// Device control.
    pub const DEVCTL: usize = 0x08;
    /// Device status.
    pub const DEVSTA: usize = 0x0A;
    /// Link capabilities.
    pub const LINKCAP: usize = 0x0C;
    /// Link control.
    pub const LINKCTL: usize = 0x10;
    /// Link status.
    pub const LINKSTA: usize = 0x12;
    /// Device capabilities 2.
    pub const DEVCAP2: usize = 0x24;
    /// Device control 2.
    pub const DEVCTL2: usize = 0x28;
    /// Device capabilities: Function Level Reset capable.
    pub const DEVCAP_FLR: u32 = 1 << 28;
    /// Device control: Initiate Function Level Reset.
    pub const DEVCTL_FLR: u16 = 1 << 15;
}

/// SR-IOV extended capability registers (from the capability's start).
pub mod sriov {
    /// SR-IOV capabilities.
    pub const CAPS: usize = 0x04;
    /// SR-IOV control.
    pub const CTRL: usize = 0x08;
    /// SR-IOV status.
    pub const STATUS: usize = 0x0A;
    /// InitialVFs.
    pub const INITIAL_VFS: usize = 0x0C;
    /// TotalVFs.
    pub const TOTAL_VFS: usize = 0x0E;
    /// NumVFs.
    pub const NUM_VFS: usize = 0x10;
    /// Function dependency link.
    pub const FUNC_LINK: usize = 0x12;
    /// First VF offset.
    pub const VF_OFFSET: usize = 0x14;
    /// VF stride.
    pub const VF_STRIDE: usize = 0x16;
    /// VF device ID.
    pub const VF_DEVICE: usize = 0x1A;
    /// Supported page sizes.
    pub const SUPPORTED_PAGE_SIZES: usize = 0x1C;
    /// System page size.
    pub const SYSTEM_PAGE_SIZE: usize = 0x20;
    /// VF BAR 0.
    pub const VF_BAR0: usize = 0x24;
    /// VF migration state array offset.
    pub const MIGRATION: usize = 0x3C;
    /// Control: VF Enable.
    pub const CTRL_VF_ENABLE: u16 = 1 << 0;
    /// Control: VF Memory Space Enable.
    pub const CTRL_VF_MSE: u16 = 1 << 3;
    /// Control: ARI Capable Hierarchy.
    pub const CTRL_ARI: u16 = 1 << 4;
}
