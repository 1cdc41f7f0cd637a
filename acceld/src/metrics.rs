//! Prometheus metrics (`acceld --metrics ADDR:PORT`, text format 0.0.4 at `/metrics`), as
//! dcgm-exporter serves a GPU's: per-VF jobs, bytes, engine time, faults and FLRs as the
//! supervisor last read them from the firmware (every 5 s; a scrape costs the device
//! nothing); device health from the supervisor; the mailbox latency
//! histogram and event counts from the daemon's own books. Every name starts `accelvirt_`.

use crate::device::{Health, Managed};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upper bounds of the mailbox latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3,
    1.0,
];

/// What the daemon counts for one device.
#[derive(Debug, Default)]
pub struct DeviceMetrics {
    up: AtomicBool,
    heartbeat_ok: AtomicBool,
    drift: AtomicU64,
    restores: AtomicU64,
    resets: AtomicU64,
    dropped: AtomicU64,
    backlog: AtomicU64,
    restore_ns: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
    events: Mutex<BTreeMap<&'static str, u64>>,
}

impl DeviceMetrics {
    /// One mailbox command took `d`.
    pub fn mailbox_latency(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// An event of `kind` was recorded.
    pub fn event(&self, kind: &'static str) {
        *self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default() += 1;
    }

    /// Whether the daemon holds the device.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    /// A restore took `d`.
    pub fn restored(&self, d: Duration) {
        self.restore_ns
            .store(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }

    /// The supervisor's view, copied.
    pub fn set_health(&self, h: &Health) {
        self.heartbeat_ok.store(h.heartbeat_ok, Ordering::Relaxed);
        self.drift.store(h.drift.len() as u64, Ordering::Relaxed);
        self.restores.store(h.restores, Ordering::Relaxed);
        self.resets.store(h.resets, Ordering::Relaxed);
        self.dropped.store(h.dropped, Ordering::Relaxed);
        self.backlog.store(h.backlog as u64, Ordering::Relaxed);
    }
}

/// A label value, escaped as the text format requires.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The whole exposition: each family's HELP and TYPE once, then its samples.
pub fn render(devices: &[Arc<Managed>]) -> String {
    let mut fam: BTreeMap<&'static str, (&'static str, &'static str, String)> = BTreeMap::new();
    let mut put = |name: &'static str, kind: &'static str, help: &'static str, line: String| {
        let e = fam
            .entry(name)
            .or_insert_with(|| (kind, help, String::new()));
        e.2.push_str(&line);
        e.2.push('\n');
    };
    for d in devices {
        let dev = label(&d.name);
        let m = &d.metrics;
        let g = |v: bool| if v { 1 } else { 0 };
        put(
            "accelvirt_device_up",
            "gauge",
            "Whether acceld holds the device open.",
            format!(
                "accelvirt_device_up{{device=\"{dev}\"}} {}",
                g(m.up.load(Ordering::Relaxed))
            ),
        );
        put(
            "accelvirt_device_heartbeat_ok",
            "gauge",
            "Whether the firmware heartbeat moved within the loss threshold.",
            format!(
                "accelvirt_device_heartbeat_ok{{device=\"{dev}\"}} {}",
                g(m.heartbeat_ok.load(Ordering::Relaxed))
            ),
        );
        put(
            "accelvirt_device_drift",
            "gauge",
            "Differences between the device and its desired state.",
            format!(
                "accelvirt_device_drift{{device=\"{dev}\"}} {}",
                m.drift.load(Ordering::Relaxed)
            ),
        );
        put(
            "accelvirt_device_restores_total",
            "counter",
            "Desired layouts acceld re-created on the device.",
            format!(
                "accelvirt_device_restores_total{{device=\"{dev}\"}} {}",
                m.restores.load(Ordering::Relaxed)
            ),
        );
        put(
            "accelvirt_device_resets_total",
            "counter",
            "Device resets acceld made (faults, hangs, updates).",
            format!(
                "accelvirt_device_resets_total{{device=\"{dev}\"}} {}",
                m.resets.load(Ordering::Relaxed)
            ),
        );
        put(
            "accelvirt_device_events_dropped_total",
            "counter",
            "Events the firmware dropped because its ring was full.",
            format!(
                "accelvirt_device_events_dropped_total{{device=\"{dev}\"}} {}",
                m.dropped.load(Ordering::Relaxed)
            ),
        );
        put(
            "accelvirt_device_last_restore_seconds",
            "gauge",
            "How long the last restore of the desired layout took.",
            format!(
                "accelvirt_device_last_restore_seconds{{device=\"{dev}\"}} {}",
                m.restore_ns.load(Ordering::Relaxed) as f64 / 1e9
            ),
        );
        for (k, n) in m.events.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            put(
                "accelvirt_events_total",
                "counter",
                "Events acceld recorded, by kind.",
                format!("accelvirt_events_total{{device=\"{dev}\",kind=\"{k}\"}} {n}"),
            );
        }
        let mut cum = 0;
        for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
            cum += m.buckets[i].load(Ordering::Relaxed);
            put(
                "accelvirt_mailbox_latency_seconds",
                "histogram",
                "Mailbox command latency, lock wait included.",
                format!(
                    "accelvirt_mailbox_latency_seconds_bucket{{device=\"{dev}\",le=\"{b}\"}} {cum}"
                ),
            );
        }
        let count = m.count.load(Ordering::Relaxed);
        put(
            "accelvirt_mailbox_latency_seconds",
            "histogram",
            "",
            format!(
                "accelvirt_mailbox_latency_seconds_bucket{{device=\"{dev}\",le=\"+Inf\"}} {count}\n\
                 accelvirt_mailbox_latency_seconds_sum{{device=\"{dev}\"}} {}\n\
                 accelvirt_mailbox_latency_seconds_count{{device=\"{dev}\"}} {count}",
                m.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
            ),
        );
        // The counters as the supervisor last sampled them: a scrape never reaches the device.
        let stats = d.sampled();
        if let Some(vfs) = stats {
            for v in vfs {
                let vf = v.vf.get();
                let mut vf_line = |name: &'static str, help: &'static str, value: String| {
                    put(
                        name,
                        "counter",
                        help,
                        format!("{name}{{device=\"{dev}\",vf=\"{vf}\"}} {value}"),
                    );
                };
                vf_line(
                    "accelvirt_vf_jobs_total",
                    "Jobs the VF's queues completed.",
                    v.jobs.get().to_string(),
                );
                vf_line(
                    "accelvirt_vf_bytes_total",
                    "Bytes the VF's jobs processed.",
                    v.bytes.get().to_string(),
                );
                vf_line(
                    "accelvirt_vf_engine_seconds_total",
                    "Engine time the VF's jobs used.",
                    (v.engine_us.get() as f64 / 1e6).to_string(),
                );
                vf_line(
                    "accelvirt_vf_faults_total",
                    "Accesses of the VF the device refused.",
                    v.faults.get().to_string(),
                );
                vf_line(
                    "accelvirt_vf_flrs_total",
                    "Function level resets of the VF.",
                    v.flr_count.get().to_string(),
                );
            }
        }
    }
    let mut out = String::new();
    for (name, (kind, help, lines)) in fam {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        out.push_str(&lines);
    }
    out
}

/// Serves `GET /metrics` on `listener` until the task is dropped. One request per
/// connection, at most 8 KiB of request, 5 s to send it: a scraper, not a web server.
pub async fn serve(listener: tokio::net::TcpListener, devices: Arc<Vec<Arc<Managed>>>) {
    let busy = Arc::new(tokio::sync::Semaphore::new(16));
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = busy.clone().try_acquire_owned() else {
            drop(s);
            continue;
        };
        let devices = devices.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() {
                    let k = s.read(&mut buf[n..]).await.ok()?;
                    if k == 0 {
                        break;
                    }
                    n += k;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Some(())
            })
            .await;
            if !matches!(read, Ok(Some(()))) {
                return;
            }
            let req = String::from_utf8_lossy(&buf[..n]);
            let line = req.lines().next().unwrap_or("");
            let resp = if line.starts_with("GET /metrics ") || line == "GET /metrics" {
                let body = render(&devices);
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            // A scraper that does not read gives its slot back after 5 s.
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            })
            .await;
        });
    }
}
