//! vfio-user (QEMU's docs/interop/vfio-user.rst): wire structures and the server.
pub mod proto;
pub mod server;
