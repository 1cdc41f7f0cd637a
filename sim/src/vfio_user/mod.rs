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

use crate::device::{Device, Func};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Serves one already-connected client of `func` on this thread until it hangs up: what the
/// server does for each accepted connection, for embedding the device model (and for fuzzing
/// the message handling without a listening socket).
pub fn serve_connection(dev: Arc<Device>, func: Func, stream: UnixStream) {
    static IDS: AtomicU64 = AtomicU64::new(1 << 48);
    let id = IDS.fetch_add(1, Ordering::Relaxed);
    conn::Conn::new(dev, func, id, stream, Arc::new(AtomicBool::new(true))).serve();
}
