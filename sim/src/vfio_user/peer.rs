//! Requests the device sends its client: DMA_READ and DMA_WRITE for memory the client mapped
//! without a file descriptor. They share the connection's socket with the client's own
//! commands (no twin socket): sends are serialized with the connection's replies, and the
//! connection's receive loop hands each reply to the request waiting for it.

use super::proto::{cmd, flags, Header, HEADER_SIZE};
use crate::dma::{DmaError, MessageDma};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Mutex;
use std::time::Duration;
use vfio_user_wire::framing;

/// Bytes per DMA_READ/DMA_WRITE message unless the client proposed fewer: the spec's
/// default for a client that proposed no `max_data_xfer_size` is 1 MiB, and a device that
/// holds a 1 MiB buffer per message waiting on a client gains nothing over 64 KiB steps.
const STEP: usize = 64 << 10;
/// How long the device waits for its client to answer one request: a client that does not
/// answer fails the job (HostDma); it cannot hold the engine longer than this.
const ANSWER: Duration = Duration::from_millis(500);

/// Where the reply to one device request goes.
type Waiter = SyncSender<(Header, Vec<u8>)>;

/// The client end of one connection, as the device sees it.
#[derive(Debug)]
pub struct Peer {
    stream: UnixStream,
    /// Bytes per DMA_READ/DMA_WRITE message: [`STEP`], or the client's `max_data_xfer_size`
    /// if it proposed less.
    step: std::sync::atomic::AtomicUsize,
    send: Mutex<()>,
    pending: Mutex<HashMap<u16, Waiter>>,
    next: AtomicU16,
}

impl Peer {
    /// The device's end of the connection's socket.
    pub fn new(stream: UnixStream) -> Self {
        Peer {
            stream,
            step: std::sync::atomic::AtomicUsize::new(STEP),
            send: Mutex::new(()),
            // Ids of device requests count down from the top, far from any client's ids.
            next: AtomicU16::new(u16::MAX),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// The client's `max_data_xfer_size`: no DMA_READ or DMA_WRITE carries more.
    pub fn limit_transfers(&self, max: usize) {
        self.step
            .store(max.clamp(1, STEP), std::sync::atomic::Ordering::Relaxed);
    }

    fn step(&self) -> usize {
        self.step.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The connection's socket, which the connection's receive loop reads.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sends one message, never interleaved with another.
    pub fn send(&self, h: &Header, payload: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
        let _g = self.send.lock().unwrap_or_else(|e| e.into_inner());
        framing::send(&self.stream, h, payload, fds)
    }

    /// A reply from the client: to the request waiting for it (false if none is).
    pub fn route(&self, h: Header, body: &[u8]) -> bool {
        let waiter = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&h.msg_id);
        waiter.is_some_and(|w| w.try_send((h, body.to_vec())).is_ok())
    }

    fn call(&self, command: u16, payload: &[u8]) -> Result<Vec<u8>, ()> {
        let id = self.next.fetch_sub(1, Ordering::Relaxed);
        let (tx, rx) = sync_channel(1);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let h = Header {
            msg_id: id,
            command,
            size: (HEADER_SIZE + payload.len()) as u32,
            flags: flags::TYPE_COMMAND,
            error: 0,
        };
        let answer = self
            .send(&h, payload, &[])
            .ok()
            .and_then(|_| rx.recv_timeout(ANSWER).ok());
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        match answer {
            Some((rh, body)) if rh.flags & flags::ERROR == 0 && rh.command == command => Ok(body),
            _ => Err(()),
        }
    }
}

fn region(addr: u64, count: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(16 + count);
    p.extend_from_slice(&addr.to_ne_bytes());
    p.extend_from_slice(&(count as u64).to_ne_bytes());
    p
}

impl MessageDma for Peer {
    fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let step = self.step();
        for (i, chunk) in buf.chunks_mut(step).enumerate() {
            let at = iova + (i * step) as u64;
            let body = self
                .call(cmd::DMA_READ, &region(at, chunk.len()))
                .map_err(|_| DmaError::NoAnswer(at))?;
            let data = body
                .get(16..16 + chunk.len())
                .ok_or(DmaError::NoAnswer(at))?;
            chunk.copy_from_slice(data);
        }
        Ok(())
    }

    fn write(&self, iova: u64, data: &[u8]) -> Result<(), DmaError> {
        let step = self.step();
        for (i, chunk) in data.chunks(step).enumerate() {
            let at = iova + (i * step) as u64;
            let mut p = region(at, chunk.len());
            p.extend_from_slice(chunk);
            self.call(cmd::DMA_WRITE, &p)
                .map_err(|_| DmaError::NoAnswer(at))?;
        }
        Ok(())
    }
}
