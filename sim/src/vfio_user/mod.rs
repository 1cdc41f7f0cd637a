//! vfio-user (QEMU's docs/interop/vfio-user.rst): the server. The wire format and framing are
//! the `vfio-user-wire` crate's, shared with the host driver's client.
//!
//! - [`server`]: the PF socket and one per enabled VF, and their accept loops.
//! - `conn`: one client connection and its command handlers.
//! - [`Model`]: the function a connection serves (the accelerator model, or another).
//! - `peer`: requests the device sends its client (DMA_READ/DMA_WRITE).
mod conn;
mod model;
mod peer;
pub use model::Model;
pub use vfio_user_wire::proto;
pub mod server;

use crate::device::Func;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Serves one already-connected client of `func` on this thread until it hangs up: what the
/// server does for each accepted connection, for embedding the device model (and for fuzzing
/// the message handling without a listening socket).
pub fn serve_connection(dev: Arc<dyn Model>, func: Func, stream: UnixStream) {
    conn::Conn::new(
        dev,
        func,
        embedded_id(),
        stream,
        Arc::new(AtomicBool::new(true)),
    )
    .serve();
}

/// Serves, on this thread, one client of `func` whose whole conversation is already queued in
/// `stream` (which must be non-blocking): every message is answered as a live client's would
/// be, and the conversation ends, as if the client had hung up, when the socket is empty; a
/// message cut off there is answered as one that stalled. What the client held is released
/// before this returns. The socket stays open for another conversation; after a framing
/// error, the rest of this one may still be queued (what the connection had read ahead is
/// gone with it), so drain it first. For replaying a recorded session, and for fuzzing
/// without a socket pair per input.
pub fn serve_queued(dev: Arc<dyn Model>, func: Func, stream: &UnixStream) -> std::io::Result<()> {
    conn::Conn::queued(dev, func, embedded_id(), stream.try_clone()?).serve();
    Ok(())
}

/// A connection id for a client served outside the server's accept loops.
fn embedded_id() -> u64 {
    static IDS: AtomicU64 = AtomicU64::new(1 << 48);
    IDS.fetch_add(1, Ordering::Relaxed)
}
