//! The mailbox client: async, one command at a time per device (the device's hardware
//! semaphore serializes processes), sequence numbers, a timeout with a clear error, and
//! retries that re-ring the same message so the firmware's replay cache answers them: a
//! command is never executed twice.

use crate::error::{Error, Result};
use crate::transport::Transport;
use shared_abi::mailbox::{self, HeaderFlags, Status, HEADER_LEN, MAX_MESSAGE};
use shared_abi::messages::Request;
use shared_abi::regs::{pf, DevStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default time the firmware has to answer one command (all retries together).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client on a mapped mailbox without a completion interrupt spins on the answer
/// before it sleeps: longer than the firmware's longest idle nap (1 ms in the device model
/// after 50 ms of quiet), so a command after a quiet spell costs the nap and not a timer tick
/// on top (tokio's timer has 1 ms granularity). Only commands that take longer (CREATE_VFS
/// scrubbing memory) sleep.
const SPIN_MAPPED: Duration = Duration::from_micros(1500);
/// The same with a completion interrupt to sleep on, or when every look is a message
/// anyway: past the firmware's short nap (100 µs).
const SPIN: Duration = Duration::from_micros(300);
/// Looks at DONE_DOORBELL before the first return to the executor: about 10 µs of spinning
/// on a mapped mailbox.
const INLINE_POLLS: u32 = 1000;
/// Doorbell rings per command (the first plus retries of the same message).
const ATTEMPTS: u32 = 3;

/// Mailbox client of one device.
pub struct Mailbox {
    t: Arc<dyn Transport>,
    seq: AtomicU32,
    token: u32,
    timeout: Duration,
    /// One command at a time from this client: tasks sharing it (acceld's) would otherwise
    /// all hold the device's lock under the same token at once.
    lane: tokio::sync::Mutex<()>,
    /// Told how long each command took, lock wait included (acceld's latency histogram).
    observer: std::sync::OnceLock<LatencyObserver>,
}

/// Receives the latency of each mailbox command.
pub type LatencyObserver = Arc<dyn Fn(Duration) + Send + Sync>;

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailbox")
            .field("device", &self.t.describe())
            .finish()
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    u32::from_ne_bytes(b) ^ std::process::id().rotate_left(16)
}

/// Releases the mailbox lock on every exit path (if it is still ours).
struct LockGuard<'a>(&'a dyn Transport, u32);
impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.cas32(pf::MBOX_LOCK.offset(), self.1, 0);
    }
}

impl Mailbox {
    /// A client over `t`.
    pub fn new(t: Arc<dyn Transport>, timeout: Duration) -> Self {
        // Random start so two processes never pair the same sequence number with the replay cache.
        let token = random_u32() | 1;
        // Best effort: where the device cannot hear it, the firmware's lease frees the lock.
        let _ = t.register_lock_token(token);
        Mailbox {
            t,
            seq: AtomicU32::new(random_u32()),
            token,
            timeout,
            lane: tokio::sync::Mutex::new(()),
            observer: std::sync::OnceLock::new(),
        }
    }

    /// How long the firmware has for one command.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends a request; returns the response payload on `Ok`, the firmware's status as an error
    /// otherwise.
    pub async fn call(&self, req: &Request<'_>) -> Result<Vec<u8>> {
        let (status, payload) = self.call_status(req).await?;
        if status != Status::Ok {
            return Err(Error::Firmware {
                op: req.opcode().name(),
                status,
            });
        }
        Ok(payload)
    }

    /// Has `f` told the latency of every later command (once per client).
    pub fn observe_latency(&self, f: LatencyObserver) {
        let _ = self.observer.set(f);
    }

    /// Sends a request; returns status and payload.
    pub async fn call_status(&self, req: &Request<'_>) -> Result<(Status, Vec<u8>)> {
        let start = Instant::now();
        let r = self.exchange(req).await;
        if let Some(f) = self.observer.get() {
            f(start.elapsed());
        }
        r
    }

    async fn exchange(&self, req: &Request<'_>) -> Result<(Status, Vec<u8>)> {
        // Build the payload in place behind the header: one buffer, no copy.
        let too_large = || Error::Invalid("request too large for the mailbox".into());
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        // Most requests are a few dozen bytes: build them on the stack, and only a large one
        // (explicit specs for many VFs) in a full-size buffer.
        let mut small = [0u8; 512];
        let mut large = Vec::new();
        let (msg, n): (&mut [u8], usize) = match req.write_payload(&mut small[HEADER_LEN..]) {
            Ok(n) => (&mut small, n),
            Err(_) => {
                large.resize(MAX_MESSAGE, 0);
                let n = req
                    .write_payload(&mut large[HEADER_LEN..])
                    .map_err(|_| too_large())?;
                (&mut large, n)
            }
        };
        let len = mailbox::seal(
            msg,
            req.opcode().wire(),
            HeaderFlags::empty(),
            Status::Ok,
            seq,
            self.token,
            n,
        )
        .map_err(|_| too_large())?;
        let msg = &msg[..len];
        let what = req.opcode().name();
        let t = &*self.t;
        let _lane = self.lane.lock().await;
        let start = Instant::now();
        self.acquire(start).await?;
        let _guard = LockGuard(t, self.token);
        t.write_bytes(pf::MBOX_REQ.start(), msg)?;
        t.write32(pf::MBOX_REQ_LEN.offset(), len as u32)?;
        let per_attempt = self.timeout / ATTEMPTS;
        // The firmware answers any change of the doorbell, so it need not be read first: a
        // value made from this command's sequence number differs from the last one rung.
        for attempt in 0..ATTEMPTS {
            let doorbell = seq.wrapping_mul(ATTEMPTS + 1).wrapping_add(attempt + 1);
            // The doorbell hands the request (bytes, REQ_LEN) over (shared_abi::ordering).
            t.publish32(pf::MBOX_DOORBELL.offset(), doorbell)?;
            if let Some(resp) = self.wait(doorbell, per_attempt).await? {
                let m = mailbox::decode(&resp)
                    .map_err(|_| Error::BadResponse("response failed validation"))?;
                if m.seq != seq || m.opcode != req.opcode().wire() {
                    return Err(Error::BadResponse("response answers another request"));
                }
                if m.status == Status::LockNotHeld {
                    return Err(Error::Conflict(format!(
                        "{what} was not executed: the mailbox lock was taken back (its lease \
                         expired) before the request arrived; retry"
                    )));
                }
                return Ok((m.status, m.payload.to_vec()));
            }
        }
        Err(Error::Timeout {
            what,
            ms: self.timeout.as_millis() as u64,
        })
    }

    async fn acquire(&self, start: Instant) -> Result<()> {
        let t = &*self.t;
        let mut delay = Duration::from_micros(50);
        loop {
            if t.cas32(pf::MBOX_LOCK.offset(), 0, self.token)? {
                return Ok(());
            }
            if start.elapsed() > self.timeout {
                return Err(Error::MailboxBusy(t.read32(pf::MBOX_LOCK.offset())?));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(5));
        }
    }

    /// Reads the response if DONE_DOORBELL shows `doorbell`.
    fn answered(&self, doorbell: u32) -> Result<Option<Vec<u8>>> {
        let t = &*self.t;
        // DONE_DOORBELL hands the response over: once it shows this command's doorbell,
        // RESP_LEN and the bytes published before it are this command's. (STATE alone could
        // still show the previous command's DONE.)
        if t.observe32(pf::MBOX_DONE_DOORBELL.offset())? != doorbell {
            return Ok(None);
        }
        let n = t.read32(pf::MBOX_RESP_LEN.offset())? as usize;
        if n > MAX_MESSAGE {
            return Err(Error::BadResponse("response length out of range"));
        }
        let mut buf = vec![0u8; n];
        t.read_bytes(pf::MBOX_RESP.start(), &mut buf)?;
        Ok(Some(buf))
    }

    /// How often a wait that has stopped spinning looks whether the firmware is there at all.
    const FAULT_CHECK: Duration = Duration::from_millis(5);

    /// Polls for the answer to `doorbell`. `None` on timeout.
    async fn wait(&self, doorbell: u32, limit: Duration) -> Result<Option<Vec<u8>>> {
        let t = &*self.t;
        let start = Instant::now();
        // A spinning firmware answers within a microsecond or two. Look for it without
        // returning to the executor: each return polls tokio's IO driver (a syscall), which
        // would cost more than the answer takes. Bounded by a poll count, not the clock.
        if self.t.mapped_mailbox() {
            for _ in 0..INLINE_POLLS {
                if let Some(r) = self.answered(doorbell)? {
                    return Ok(Some(r));
                }
                std::hint::spin_loop();
            }
        }
        let spin = if t.mailbox_irq().is_none() && t.mapped_mailbox() {
            SPIN_MAPPED
        } else {
            SPIN
        };
        // When to look at DEV_STATUS next (by time: an interrupt wait can take 10 ms a turn).
        let mut check_at = spin;
        loop {
            if let Some(r) = self.answered(doorbell)? {
                return Ok(Some(r));
            }
            if start.elapsed() > limit {
                return Ok(None);
            }
            // Spin first: a busy firmware answers in microseconds, and an idle one wakes from
            // its nap within `spin`; a sleep would cost a whole timer tick (1 ms). Past that,
            // sleep on the completion interrupt where there is one, else back off, and check
            // now and then that the firmware is there at all (a fault is reported now, not at
            // the timeout; the fast path never pays for this read).
            if start.elapsed() >= spin {
                if start.elapsed() >= check_at {
                    check_at = start.elapsed() + Self::FAULT_CHECK;
                    let st = DevStatus::from_bits_retain(t.read32(pf::DEV_STATUS.offset())?);
                    if st.intersects(DevStatus::HALTED | DevStatus::FAULT) {
                        let code = t.read32(pf::FAULT_CODE.offset())?;
                        return Err(Error::FirmwareFaulted { code });
                    }
                    if !st.contains(DevStatus::READY) {
                        return Err(Error::NotOurDevice("the firmware is not ready".into()));
                    }
                }
                if let Some(irq) = t.mailbox_irq() {
                    let left = limit.saturating_sub(start.elapsed());
                    wait_irq(irq, left.min(Duration::from_millis(10))).await?;
                    continue;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Waits until the eventfd is signalled or `limit` passes, then drains it. A signal left over
/// from an earlier command only costs one more look at the mailbox state.
async fn wait_irq(irq: std::os::fd::BorrowedFd<'_>, limit: Duration) -> Result<()> {
    let afd = crate::sys::async_eventfd(irq).map_err(Error::Io)?;
    if let Ok(Ok(mut ready)) = tokio::time::timeout(limit, afd.readable()).await {
        let mut b = [0u8; 8];
        let _ = nix::unistd::read(ready.get_inner(), &mut b);
        ready.clear_ready();
    }
    Ok(())
}
