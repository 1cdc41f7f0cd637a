//! What happened to the devices: the firmware's events as the daemon read them from each
//! event ring, and the daemon's own (heartbeat lost, device lost and back, layout restored,
//! drift). Kept in a bounded log for `ListEvents` and fanned out to `WatchEvents` streams;
//! a watcher that falls behind by more than the fan-out's capacity is told how many it
//! missed, and never holds the daemon's memory.

use accelvirt_api::v1;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// Events kept for `ListEvents` (and replayed to a new watcher), in all.
pub const KEPT: usize = 4096;
/// Events kept per device.
pub const KEPT_PER_DEVICE: usize = 1024;
/// Events a watcher may fall behind by before it is told it missed some.
pub const FANOUT: usize = 1024;

/// The daemon's event log.
#[derive(Debug)]
pub struct EventLog {
    inner: Mutex<(u64, VecDeque<v1::Event>)>,
    tx: broadcast::Sender<v1::Event>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            inner: Mutex::new((0, VecDeque::with_capacity(KEPT))),
            tx: broadcast::channel(FANOUT).0,
        }
    }
}

/// An event before the log numbers and stamps it.
#[derive(Debug, Clone)]
pub struct New<'a> {
    /// Device name.
    pub device: &'a str,
    /// API kind name.
    pub kind: &'static str,
    /// VF, or `None` for the device.
    pub vf: Option<u16>,
    /// Kind-specific code.
    pub code: u32,
    /// Kind-specific data.
    pub data: u64,
    /// For people.
    pub message: String,
}

impl EventLog {
    /// Records an event, logs it on stderr (the journal) and hands it to every watcher.
    pub fn push(&self, e: New<'_>) -> v1::Event {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        let ev = v1::Event {
            seq: g.0,
            device: e.device.to_string(),
            time,
            kind: e.kind.to_string(),
            vf: e.vf.map(u32::from),
            code: e.code,
            data: e.data,
            message: e.message,
        };
        // Each device keeps its own share: one whose tenants make many events (a VF that
        // keeps faulting) does not push another's history out.
        let mine = g.1.iter().filter(|x| x.device == ev.device).count();
        if mine >= KEPT_PER_DEVICE {
            if let Some(i) = g.1.iter().position(|x| x.device == ev.device) {
                g.1.remove(i);
            }
        } else if g.1.len() >= KEPT {
            g.1.pop_front();
        }
        g.1.push_back(ev.clone());
        // Sent under the lock: a watcher that subscribed under it sees each event once,
        // either in its snapshot or from the channel.
        let _ = self.tx.send(ev.clone());
        drop(g);
        eprintln!(
            "acceld: event {} {}{}: {}",
            ev.device,
            ev.kind,
            ev.vf.map(|v| format!(" vf {v}")).unwrap_or_default(),
            ev.message
        );
        ev
    }

    /// The kept events of `device` (all when empty), oldest first.
    pub fn kept(&self, device: &str) -> Vec<v1::Event> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.1.iter()
            .filter(|e| device.is_empty() || e.device == device)
            .cloned()
            .collect()
    }

    /// The kept events and a receiver for every later one, with nothing lost or repeated
    /// between them.
    pub fn watch(&self, device: &str) -> (Vec<v1::Event>, broadcast::Receiver<v1::Event>) {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        let kept =
            g.1.iter()
                .filter(|e| device.is_empty() || e.device == device)
                .cloned()
                .collect();
        (kept, rx)
    }

    /// Events recorded so far (the last sequence number).
    pub fn count(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(log: &EventLog, i: u64) {
        log.push(New {
            device: if i.is_multiple_of(2) { "a" } else { "b" },
            kind: "fw_ready",
            vf: None,
            code: i as u32,
            data: 0,
            message: String::new(),
        });
    }

    #[test]
    fn kept_is_bounded_and_a_watcher_misses_nothing_between_snapshot_and_stream() {
        let log = EventLog::default();
        // Device "b" floods; "a" keeps its history.
        ev(&log, 0);
        for i in 0..(KEPT_PER_DEVICE as u64 * 3) {
            ev(&log, 2 * i + 1);
        }
        assert_eq!(log.kept("b").len(), KEPT_PER_DEVICE);
        assert_eq!(log.kept("a").len(), 1);
        assert_eq!(log.kept("a")[0].code, 0);
        let (kept, mut rx) = log.watch("");
        ev(&log, 7);
        assert_eq!(kept.last().unwrap().seq + 1, rx.try_recv().unwrap().seq);
    }
}
