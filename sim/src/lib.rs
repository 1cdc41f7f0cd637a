//! # accel-sim: the accelerator in software
//!
//! A PCIe device model of the accelerator: PF and VF configuration spaces (PCIe, power
//! management, MSI-X, SR-IOV), BARs backed by the register file, MSI-X delivered as eventfds,
//! device memory, the virtualization unit that enforces what the firmware programmed, and a
//! vfio-user server so VMMs (QEMU 10.1+ `vfio-user-pci`, cloud-hypervisor, SPDK) can attach the
//! PF and each VF out of process. `accel-sim` boots its firmware from flash (`flash`,
//! `boot`): a signed image whose ELF runs as a process of its own; the in-process model
//! (`inprocess`, for tests and fuzzing) runs the same firmware linked in, on a thread
//! (`fwhost`).
#![forbid(unsafe_code)]

pub mod boot;
pub mod config_space;
pub mod device;
pub mod devmem;
pub mod dma;
pub mod flash;
pub mod fwhost;
pub mod inprocess;
pub mod msix;
pub mod pci;
pub mod sys;
pub mod vfio_user;

pub use device::{Device, Func};
