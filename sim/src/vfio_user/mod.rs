//! vfio-user (QEMU's docs/interop/vfio-user.rst): the server. The wire format and framing are
//! the `vfio-user-wire` crate's, shared with the host driver's client.
pub use vfio_user_wire::proto;
pub mod server;
