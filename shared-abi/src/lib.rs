//! # accelvirt shared ABI
//!
//! The one definition of every byte layout that the host and the device agree on:
//! PCI identity, the PF and VF BAR0 register maps, the per-VF register banks of the
//! virtualization unit, the mailbox wire protocol and the resource descriptors it carries,
//! the event ring, and the data path's job formats.
//!
//! Everything here is `no_std`, allocation-free and panic-free on any input. Wire structs are
//! `#[repr(C)]`, little-endian (`zerocopy::little_endian`), with alignment 1 so they can be
//! viewed in place over any byte buffer. `docs/abi.md` is the human-readable form of this crate;
//! the tests in each module assert the two agree.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

/// Declares a wire enum once: the `#[repr]` enum, its value list, and checked decoding. Other
/// crates' wire formats (the remote-VF protocol) declare theirs with it too.
#[macro_export]
macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident : $ty:ty { $($(#[$vm:meta])* $v:ident = $n:expr,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr($ty)]
        pub enum $name { $($(#[$vm])* $v = $n,)* }
        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// Decodes a wire value.
            pub const fn from_wire(v: $ty) -> Option<Self> {
                match v { $($n => Some($name::$v),)* _ => None }
            }
            /// The wire value.
            pub const fn wire(self) -> $ty { self as $ty }
        }
    };
}

pub mod board;
pub mod config_space;
pub mod events;
pub mod image;
pub mod jobs;
pub mod mailbox;
pub mod messages;
pub mod ordering;
pub mod pci;
pub mod regs;
pub mod resources;

pub use mailbox::{DecodeError, EncodeError, Header, Opcode, Status};

/// ABI major version: bumped on any incompatible change to registers or the mailbox format.
pub const ABI_MAJOR: u16 = 2;
/// ABI minor version: bumped when something is added compatibly (new opcode, new register).
pub const ABI_MINOR: u16 = 2;

/// ABI version as it appears in the `ABI_VERSION` registers: major in bits 31..16, minor in 15..0.
pub const fn abi_version_word() -> u32 {
    ((ABI_MAJOR as u32) << 16) | ABI_MINOR as u32
}
