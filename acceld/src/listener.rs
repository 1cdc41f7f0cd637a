//! The API socket's connections, bounded: past [`MAX_CONNECTIONS`] a new client is closed at
//! once, so no one can make the daemon hold more descriptors and buffers than that. Callers
//! the access policy refuses share a pool of their own ([`MAX_REFUSED`]): all they can get is
//! their refusal, and however many connections they open, those who may manage still get
//! theirs. Each connection carries its peer's credentials for the access check.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::{Stream, StreamExt};

/// Connections served at once to callers who may manage.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections served at once to callers who may not (each gets its refusal).
pub const MAX_REFUSED: usize = 16;
/// How long a new connection waits for a slot when its pool is full.
pub const FULL_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A connection that counts against the bound while it lives.
#[derive(Debug)]
pub struct Conn {
    s: UnixStream,
    caller: crate::access::Caller,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.s).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.s).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.s).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.s).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.s).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.s.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = crate::access::Caller;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.caller.clone()
    }
}

/// The listener's connections, each holding a permit; a client past the bound is closed and
/// skipped, and an accept that fails (out of descriptors) waits a moment instead of spinning.
pub fn bounded(
    l: tokio::net::UnixListener,
    policy: Arc<std::sync::RwLock<crate::access::Policy>>,
) -> impl Stream<Item = std::io::Result<Conn>> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let refused = Arc::new(Semaphore::new(MAX_REFUSED));
    tokio_stream::wrappers::UnixListenerStream::new(l)
        .then(|r| async move {
            if r.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            r
        })
        .then(move |r| {
            let (slots, refused, policy) = (slots.clone(), refused.clone(), policy.clone());
            async move {
                let s = r.ok()?;
                // Taken now, while the process that connected is the one behind its pid.
                let caller = crate::access::Caller::of(&s);
                let admitted = caller.peer.as_ref().is_some_and(|p| {
                    policy
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .check(p, &caller.groups)
                        .is_ok()
                });
                // A full pool of those who may manage waits a moment (connections closing
                // give their slots back), the queue behind it held by the kernel; then the
                // newcomer is closed. Refused callers never wait: they could stall the
                // accept of everyone behind them.
                let permit = if admitted {
                    tokio::time::timeout(FULL_WAIT, slots.acquire_owned())
                        .await
                        .ok()?
                        .ok()?
                } else {
                    refused.try_acquire_owned().ok()?
                };
                Some(Ok(Conn {
                    s,
                    caller,
                    _permit: permit,
                }))
            }
        })
        .filter_map(|c| c)
}
