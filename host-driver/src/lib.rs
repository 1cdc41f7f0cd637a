//! # accelvirt host driver
//!
//! A userspace VFIO driver for the accelerator's PF, over two transports behind one trait:
//! the kernel's VFIO (`/dev/vfio`, real hardware) and vfio-user (a UNIX socket to `accel-sim`
//! or any other device model). On top: the async mailbox client and [`Accel`], which creates,
//! lists, resizes, resets and destroys VFs and enables SR-IOV to match.
//!
//! The path of a command reads top to bottom: [`Accel`] → [`mailbox`] → [`transport`] →
//! the device.
#![deny(unsafe_code)]

pub mod accel;
pub mod daemon;
pub mod error;
pub mod events;
pub mod imported;
pub mod kernel;
pub mod logs;
pub mod mailbox;
pub mod spec;
pub mod sys;
pub mod table;
pub mod time;
pub mod transport;
pub mod update;
pub mod vf;
pub mod vfio_user;

pub use accel::{Accel, CreateSpec, VfHandoff};
pub use error::{Error, Result};
pub use transport::{DeviceAddr, Transport};
