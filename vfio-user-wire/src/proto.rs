//! vfio-user wire format. All fields are in host byte order (the protocol's rule for
//! AF_UNIX); structs are `#[repr(C)]` views derived with zerocopy.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Commands (client → server unless noted).
pub mod cmd {
    pub const VERSION: u16 = 1;
    pub const DMA_MAP: u16 = 2;
    pub const DMA_UNMAP: u16 = 3;
    pub const DEVICE_GET_INFO: u16 = 4;
    pub const DEVICE_GET_REGION_INFO: u16 = 5;
    pub const DEVICE_GET_REGION_IO_FDS: u16 = 6;
    pub const DEVICE_GET_IRQ_INFO: u16 = 7;
    pub const DEVICE_SET_IRQS: u16 = 8;
    pub const REGION_READ: u16 = 9;
    pub const REGION_WRITE: u16 = 10;
    /// Server → client.
    pub const DMA_READ: u16 = 11;
    /// Server → client.
    pub const DMA_WRITE: u16 = 12;
    pub const DEVICE_RESET: u16 = 13;
    pub const REGION_WRITE_MULTI: u16 = 15;
    pub const DEVICE_FEATURE: u16 = 16;
    pub const MIG_DATA_READ: u16 = 17;
    pub const MIG_DATA_WRITE: u16 = 18;
}

/// Header flags.
pub mod flags {
    pub const TYPE_MASK: u32 = 0xF;
    pub const TYPE_COMMAND: u32 = 0;
    pub const TYPE_REPLY: u32 = 1;
    pub const NO_REPLY: u32 = 1 << 4;
    pub const ERROR: u32 = 1 << 5;
}

/// Protocol version this server speaks.
pub const MAJOR: u16 = 0;
/// Highest minor version.
pub const MINOR: u16 = 1;
/// Largest region/DMA transfer in one message.
pub const MAX_DATA_XFER: usize = 1 << 20;
/// Largest message accepted (a maximal transfer plus headers).
pub const MAX_MESSAGE: usize = MAX_DATA_XFER + 4096;
/// File descriptors either side may send in one message. QEMU refuses a peer that offers more
/// than 16 (`VFIO_USER_MAX_MAX_FDS`), and no message of ours needs more than one.
pub const MAX_MSG_FDS: usize = 16;
/// DMA mappings per client.
pub const MAX_DMA_MAPS: usize = 65535;

/// Message header.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Header {
    pub msg_id: u16,
    pub command: u16,
    pub size: u32,
    pub flags: u32,
    pub error: u32,
}
/// Header bytes.
pub const HEADER_SIZE: usize = 16;

/// VERSION payload head (JSON follows).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
}

/// DMA_MAP.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DmaMap {
    pub argsz: u32,
    pub flags: u32,
    pub offset: u64,
    pub addr: u64,
    pub size: u64,
}
/// DMA_MAP readable.
pub const DMA_FLAG_READ: u32 = 1;
/// DMA_MAP writeable.
pub const DMA_FLAG_WRITE: u32 = 2;

/// DMA_UNMAP flag: report dirty pages (not supported: no migration).
pub const DMA_UNMAP_FLAG_GET_DIRTY_BITMAP: u32 = 1;
/// DMA_UNMAP flag: unmap every mapping (address and size must be 0).
pub const DMA_UNMAP_FLAG_ALL: u32 = 2;

/// DMA_UNMAP.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DmaUnmap {
    pub argsz: u32,
    pub flags: u32,
    pub addr: u64,
    pub size: u64,
}

/// DEVICE_GET_INFO.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DeviceInfo {
    pub argsz: u32,
    pub flags: u32,
    pub num_regions: u32,
    pub num_irqs: u32,
}
/// Device supports reset.
pub const DEVICE_FLAGS_RESET: u32 = 1;
/// Device is PCI.
pub const DEVICE_FLAGS_PCI: u32 = 2;

/// DEVICE_GET_REGION_INFO.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct RegionInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub cap_offset: u32,
    pub size: u64,
    pub offset: u64,
}
/// Region flags.
pub const REGION_READ: u32 = 1;
pub const REGION_WRITE: u32 = 2;
pub const REGION_MMAP: u32 = 4;
pub const REGION_CAPS: u32 = 8;
/// VFIO PCI region indices (the kernel's `VFIO_PCI_*_REGION_INDEX`).
pub mod region {
    /// BAR 0.
    pub const BAR0: u32 = 0;
    /// BAR 2.
    pub const BAR2: u32 = 2;
    /// Configuration space.
    pub const CONFIG: u32 = 7;
    /// Regions of a PCI device (six BARs, the ROM, config space and VGA).
    pub const COUNT: u32 = 9;
}
/// Sparse mmap capability id.
pub const CAP_SPARSE_MMAP: u16 = 1;

/// Region capability header.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct CapHeader {
    pub id: u16,
    pub version: u16,
    pub next: u32,
}

/// Sparse mmap capability body head.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SparseMmap {
    pub nr_areas: u32,
    pub reserved: u32,
}

/// One sparse mmap area.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SparseArea {
    pub offset: u64,
    pub size: u64,
}

/// DEVICE_GET_IRQ_INFO.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct IrqInfo {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub count: u32,
}
/// IRQ info flags.
pub const IRQ_INFO_EVENTFD: u32 = 1;
pub const IRQ_INFO_MASKABLE: u32 = 2;
pub const IRQ_INFO_NORESIZE: u32 = 8;
/// VFIO PCI IRQ indices.
pub const IRQ_INTX: u32 = 0;
pub const IRQ_MSI: u32 = 1;
pub const IRQ_MSIX: u32 = 2;
pub const IRQ_ERR: u32 = 3;
pub const IRQ_REQ: u32 = 4;
pub const NUM_IRQS: u32 = 5;

/// DEVICE_SET_IRQS.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct IrqSet {
    pub argsz: u32,
    pub flags: u32,
    pub index: u32,
    pub start: u32,
    pub count: u32,
}
/// SET_IRQS flags.
pub const IRQ_DATA_NONE: u32 = 1;
pub const IRQ_DATA_BOOL: u32 = 2;
pub const IRQ_DATA_EVENTFD: u32 = 4;
pub const IRQ_ACTION_MASK: u32 = 8;
pub const IRQ_ACTION_UNMASK: u32 = 16;
pub const IRQ_ACTION_TRIGGER: u32 = 32;

/// REGION_READ / REGION_WRITE head.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct RegionAccess {
    pub offset: u64,
    pub region: u32,
    pub count: u32,
}

/// One write of REGION_WRITE_MULTI.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct WriteMultiEntry {
    pub offset: u64,
    pub region: u32,
    pub count: u32,
    pub data: [u8; 8],
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn sizes_match_the_specification() {
        assert_eq!(size_of::<Header>(), 16);
        assert_eq!(size_of::<DmaMap>(), 32);
        assert_eq!(size_of::<DmaUnmap>(), 24);
        assert_eq!(size_of::<DeviceInfo>(), 16);
        assert_eq!(size_of::<RegionInfo>(), 32);
        assert_eq!(size_of::<IrqInfo>(), 16);
        assert_eq!(size_of::<IrqSet>(), 20);
        assert_eq!(size_of::<RegionAccess>(), 16);
        assert_eq!(size_of::<WriteMultiEntry>(), 24);
        assert_eq!(size_of::<SparseArea>(), 16);
    }
}
