//! PCI identity and the fixed PCI/SR-IOV parameters of the accelerator.
//!
//! Vendor ID 0x1FAC is a placeholder until silicon carries the company's PCI-SIG assigned ID:
//! it is unassigned in the PCI ID database Debian ships (pciutils' pci.ids), so no host driver
//! for a real product binds our functions and `lspci` names no one else's company. The device
//! IDs pair PF 0xA0C0 with VF 0xA0C1, the common practice (mlx5, ixgbe) of VF ID = PF ID + 1.

/// PCI vendor ID of both the PF and its VFs.
pub const VENDOR_ID: u16 = 0x1FAC;
/// PCI device ID of the physical function.
pub const PF_DEVICE_ID: u16 = 0xA0C0;
/// PCI device ID of every virtual function (the SR-IOV capability's VF Device ID).
pub const VF_DEVICE_ID: u16 = 0xA0C1;
/// Subsystem vendor ID.
pub const SUBSYSTEM_VENDOR_ID: u16 = VENDOR_ID;
/// Subsystem ID.
pub const SUBSYSTEM_ID: u16 = 0x0001;
/// Revision ID of the first silicon spin.
pub const REVISION_ID: u8 = 0x01;
/// Base class: processing accelerator (PCI Code and ID Assignment spec, class 0x12).
pub const CLASS_PROCESSING_ACCELERATOR: u8 = 0x12;
/// Sub-class 0x00: processing accelerator (no further sub-class defined).
pub const SUBCLASS: u8 = 0x00;
/// Programming interface 0x00: vendor specific.
pub const PROG_IF: u8 = 0x00;

/// Size of PF BAR0 (64-bit, non-prefetchable memory): the register file.
pub const PF_BAR0_SIZE: u64 = 0x4_0000;
/// Size of VF BAR0 (64-bit, non-prefetchable): VF registers, queues and MSI-X.
pub const VF_BAR0_SIZE: u64 = 0x2_0000;
/// Size of VF BAR2 (64-bit, prefetchable): the aperture onto the VF's device memory window.
/// Windows larger than this are reached by DMA only.
pub const VF_BAR2_SIZE: u64 = 1 << 32;

/// SR-IOV First VF Offset: routing-ID distance from the PF to VF 0.
pub const SRIOV_FIRST_VF_OFFSET: u16 = 1;
/// SR-IOV VF Stride: routing-ID distance between consecutive VFs.
pub const SRIOV_VF_STRIDE: u16 = 1;
/// Default TotalVFs advertised in the SR-IOV capability.
pub const DEFAULT_TOTAL_VFS: u16 = 64;
/// The most VFs this ABI can describe (VF banks in PF BAR0).
pub const MAX_VFS: usize = 64;

/// MSI-X vectors of the PF: vector 0 signals mailbox completion, vector 1 the event ring.
pub const PF_MSIX_VECTORS: u16 = 8;
/// PF MSI-X vector raised when a mailbox response is ready.
pub const PF_VECTOR_MAILBOX: u16 = 0;
/// PF MSI-X vector raised when events are posted to the event ring.
pub const PF_VECTOR_EVENTS: u16 = 1;
/// The most MSI-X vectors one VF can own (MSI-X Table Size field limit).
pub const VF_MAX_MSIX_VECTORS: u16 = 2048;
