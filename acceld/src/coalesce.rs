//! Concurrent identical reads answered by one device read, without ever answering a request
//! with a read that began before the request arrived (each answer is as fresh as a read of
//! its own would be: a client that changed the device and then reads sees its change).
//!
//! Reads run one at a time. A request that arrives while one runs waits for it to finish,
//! then takes the result of the next read, which it shares with everyone who arrived in the
//! meantime: under N concurrent clients the device sees about one read per batch, not N.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A read's result: its error kept as (exit code, message).
pub type Outcome<T> = Result<T, (u8, String)>;

/// A coalescing read of `T`.
#[derive(Debug)]
pub struct Coalesced<T> {
    /// Reads started so far.
    started: AtomicU64,
    /// One read at a time.
    turn: tokio::sync::Mutex<()>,
    /// The last read finished: its number and its result.
    last: Mutex<Option<(u64, Outcome<T>)>>,
}

impl<T> Default for Coalesced<T> {
    fn default() -> Self {
        Coalesced {
            started: AtomicU64::new(0),
            turn: tokio::sync::Mutex::new(()),
            last: Mutex::new(None),
        }
    }
}

impl<T: Clone> Coalesced<T> {
    /// The result of a read that began after this call did: `read`'s own, or a concurrent
    /// caller's.
    pub async fn get<F, Fut>(&self, read: F) -> Outcome<T>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Outcome<T>>,
    {
        // Reads numbered at most this began before we arrived.
        let arrived = self.started.load(Ordering::Acquire);
        let _turn = self.turn.lock().await;
        if let Some((n, r)) = &*self.last.lock().unwrap_or_else(|p| p.into_inner()) {
            if *n > arrived {
                return r.clone();
            }
        }
        let n = self.started.fetch_add(1, Ordering::AcqRel) + 1;
        let r = read().await;
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((n, r.clone()));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;

    #[test]
    fn many_callers_share_reads_that_began_after_they_arrived() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let c: Arc<Coalesced<u32>> = Arc::default();
        // The "device": a counter each read returns after bumping it.
        let device = Arc::new(AtomicU32::new(0));
        let reads = Arc::new(AtomicU32::new(0));
        rt.block_on(async {
            let tasks: Vec<_> = (0..200)
                .map(|_| {
                    let (c, device, reads) = (c.clone(), device.clone(), reads.clone());
                    tokio::spawn(async move {
                        // What a read of its own would at least see.
                        let floor = device.load(Ordering::SeqCst);
                        let v = c
                            .get(|| async {
                                reads.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                                Ok(device.fetch_add(1, Ordering::SeqCst))
                            })
                            .await
                            .unwrap();
                        assert!(
                            v >= floor,
                            "an answer older than the request: {v} < {floor}"
                        );
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        let n = reads.load(Ordering::SeqCst);
        assert!(n < 100, "200 concurrent callers made {n} reads");
    }
}
