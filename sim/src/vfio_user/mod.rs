//! vfio-user (QEMU's docs/interop/vfio-user.rst): the server. The wire format and framing are
//! the `vfio-user-wire` crate's, shared with the host driver's client.
//!
//! - [`server`]: the PF socket and one per enabled VF, and their accept loops.
//! - `conn`: one client connection and its command handlers.
//! - `peer`: requests the device sends its client (DMA_READ/DMA_WRITE).
mod conn;
mod peer;
pub use vfio_user_wire::proto;
pub mod server;
