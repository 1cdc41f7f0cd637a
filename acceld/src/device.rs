//! One device the daemon owns: its one open handle, its desired state, and the supervisor
//! that reads its event ring, watches its heartbeat, reconnects when it goes away and puts
//! the desired layout back whenever the device comes back empty.
//!
//! Each device runs on a runtime of its own: a device that hangs holds its own threads, never
//! the API's or another device's.

use crate::events::{EventLog, New};
use crate::metrics::DeviceMetrics;
use crate::state::{self, DesiredState, VfLayout};
use host_driver::error::{Error, Result};
use host_driver::{Accel, DeviceAddr};
use shared_abi::events::EventKind;
use shared_abi::regs::{pf, DevStatus};
use shared_abi::resources::{VfInfo, VfSpec, VfStats};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How long the firmware heartbeat may stand still, beyond the longest a command may take
/// (`--timeout-ms`: the firmware does not beat while it executes one), before the firmware
/// counts as hung.
pub const HEARTBEAT_GRACE: Duration = Duration::from_secs(1);
/// How often the supervisor looks at a device when no interrupt wakes it.
pub const TICK: Duration = Duration::from_millis(100);
/// The wait before trying to reach a lost device again, for the first
/// [`RECONNECT_EAGER`] attempts; then each failure doubles it, up to [`RECONNECT_MAX`]: a
/// device model restarted in a moment is found again in a moment.
pub const RECONNECT_FIRST: Duration = Duration::from_millis(10);
/// Attempts at [`RECONNECT_FIRST`] intervals before they back off.
pub const RECONNECT_EAGER: u32 = 20;
/// The longest wait between attempts to reach a lost device.
pub const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// The least time between two automatic resets of a device that failed again soon after
/// the first; it doubles with each further one within [`RESET_WINDOW`], up to
/// [`RESET_BACKOFF_MAX`]: a device that keeps failing is not reset in a loop.
pub const RESET_BACKOFF: Duration = Duration::from_secs(10);
/// The longest wait between automatic resets.
pub const RESET_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A failure this long after the last reset is a new one.
pub const RESET_WINDOW: Duration = Duration::from_secs(600);
/// How long a reset may take to bring the firmware back.
pub const RESET_TIMEOUT: Duration = Duration::from_secs(15);
/// Counter samples kept for the fault and FLR rates (one per [`SAMPLE_EVERY`]: a minute).
const SAMPLES: usize = 13;
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// How the daemon treats its devices.
#[derive(Debug, Clone)]
pub struct Options {
    /// Per-command timeout.
    pub timeout: Duration,
    /// Re-create the desired layout on a device that holds another one (else: report).
    pub enforce: bool,
    /// Reset a device whose firmware faulted or hung, then restore its layout.
    pub auto_reset: bool,
    /// Where desired-state files live.
    pub state_dir: PathBuf,
}

/// What the supervisor knows of a device's health.
#[derive(Debug)]
pub struct Health {
    /// The daemon holds it open.
    pub online: bool,
    /// DEV_STATUS and FAULT_CODE at the last look.
    pub dev_status: u32,
    /// FAULT_CODE at the last look.
    pub fault_code: u32,
    hb_value: u32,
    hb_changed: Instant,
    /// The heartbeat moved within the loss threshold.
    pub heartbeat_ok: bool,
    /// Ring entries not yet consumed at the last look.
    pub backlog: u32,
    /// Events the firmware dropped (OVERFLOW), in total.
    pub dropped: u64,
    /// When the firmware last dropped events.
    dropped_at: Option<Instant>,
    /// How the device differs from the desired state (empty: in sync).
    pub drift: Vec<String>,
    /// Layouts restored onto the device.
    pub restores: u64,
    /// Resets the daemon made.
    pub resets: u64,
    last_reset: Option<Instant>,
    /// Automatic resets in a row, each within [`RESET_WINDOW`] of the one before.
    reset_streak: u32,
    samples: VecDeque<(Instant, Vec<VfStats>)>,
    /// The desired state could not be saved (the reason), until a save succeeds.
    pub save_error: Option<String>,
    /// The last time a connection attempt failed, and why.
    pub offline_reason: Option<String>,
}

/// Dropped events count as a problem for this long.
const DROPS_RECENT: Duration = Duration::from_secs(600);

impl Health {
    /// Whether an automatic reset may happen now: the first of a streak at once, the next
    /// ones after a backoff that doubles.
    fn reset_due(&self) -> bool {
        match self.last_reset {
            None => true,
            Some(t) if t.elapsed() >= RESET_WINDOW => true,
            Some(t) => {
                let wait = RESET_BACKOFF
                    .saturating_mul(1 << self.reset_streak.saturating_sub(1).min(5))
                    .min(RESET_BACKOFF_MAX);
                self.reset_streak == 0 || t.elapsed() >= wait
            }
        }
    }

    fn new() -> Self {
        Health {
            online: false,
            dev_status: 0,
            fault_code: 0,
            hb_value: 0,
            hb_changed: Instant::now(),
            heartbeat_ok: true,
            backlog: 0,
            dropped: 0,
            dropped_at: None,
            drift: Vec::new(),
            restores: 0,
            resets: 0,
            last_reset: None,
            reset_streak: 0,
            samples: VecDeque::new(),
            save_error: None,
            offline_reason: None,
        }
    }

    /// Seconds since the heartbeat last moved.
    pub fn heartbeat_age(&self) -> Duration {
        self.hb_changed.elapsed()
    }

    /// Per VF: (vf, faults, flrs, faults per minute, FLRs per minute) over the sampled window.
    pub fn rates(&self) -> Vec<(u16, u64, u64, f64, f64)> {
        let (Some((t0, first)), Some((t1, last))) = (self.samples.front(), self.samples.back())
        else {
            return Vec::new();
        };
        let mins = t1.duration_since(*t0).as_secs_f64() / 60.0;
        last.iter()
            .map(|v| {
                let vf = v.vf.get();
                let (f, r) = (v.faults.get() as u64, v.flr_count.get() as u64);
                let before = first.iter().find(|b| b.vf.get() == vf);
                let rate = |now: u64, then: Option<u64>| match then {
                    Some(t) if mins > 0.0 && now >= t => (now - t) as f64 / mins,
                    _ => 0.0,
                };
                (
                    vf,
                    f,
                    r,
                    rate(f, before.map(|b| b.faults.get() as u64)),
                    rate(r, before.map(|b| b.flr_count.get() as u64)),
                )
            })
            .collect()
    }

    /// What needs attention, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.online {
            p.push(format!(
                "the daemon cannot reach the device{}",
                self.offline_reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ));
            return p;
        }
        let st = DevStatus::from_bits_retain(self.dev_status);
        if st.intersects(DevStatus::FAULT | DevStatus::HALTED) {
            p.push(format!(
                "the firmware has faulted ({}, fault code {})",
                host_driver::error::fault_name(self.fault_code),
                self.fault_code
            ));
        } else if !st.contains(DevStatus::READY) {
            p.push("the firmware is not ready".into());
        }
        if !self.heartbeat_ok {
            p.push(format!(
                "the firmware heartbeat has not moved for {:.1} s",
                self.heartbeat_age().as_secs_f64()
            ));
        }
        if self.dropped_at.is_some_and(|t| t.elapsed() < DROPS_RECENT) {
            p.push(format!(
                "the firmware dropped events in the last {} minutes (its ring was full; {} in all)",
                DROPS_RECENT.as_secs() / 60,
                self.dropped
            ));
        }
        for d in &self.drift {
            p.push(format!("drift from the desired state: {d}"));
        }
        if let Some(e) = &self.save_error {
            p.push(format!("the desired state could not be saved: {e}"));
        }
        p
    }
}

/// A device the daemon owns.
pub struct Managed {
    /// The name it was given (`--device`).
    pub name: String,
    addr: DeviceAddr,
    opts: Options,
    rt: tokio::runtime::Handle,
    conn: RwLock<Option<Arc<Accel>>>,
    /// Held across every change of which VFs exist or what they hold, and across a restore.
    pub mutate: tokio::sync::Mutex<()>,
    desired: Mutex<Option<DesiredState>>,
    state_path: PathBuf,
    /// What the supervisor knows.
    pub health: Mutex<Health>,
    events: Arc<EventLog>,
    /// Counters for `--metrics`.
    pub metrics: Arc<DeviceMetrics>,
    /// The event ring's one consumer.
    ring: tokio::sync::Mutex<()>,
    /// Descriptors an earlier acceld kept open (kernel VFIO), for the first connection.
    kept: Mutex<Option<host_driver::kernel::vfio::Opened>>,
    /// One firmware download at a time.
    pub flashing: tokio::sync::Mutex<()>,
    /// Concurrent `info` reads, one device read per batch.
    pub info_reads: crate::coalesce::Coalesced<accelvirt_api::v1::DeviceInfoResponse>,
    /// Concurrent VF list reads.
    pub vf_reads: crate::coalesce::Coalesced<accelvirt_api::v1::VfList>,
    /// Concurrent counter reads.
    pub stats_reads: crate::coalesce::Coalesced<accelvirt_api::v1::StatsResponse>,
}

impl std::fmt::Debug for Managed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Managed").field("name", &self.name).finish()
    }
}

/// The state file of device `name` in `dir`: the name made safe for a file name, and a hash
/// of it so that two names never share a file.
pub fn state_path(dir: &Path, name: &str) -> PathBuf {
    let safe: String = name
        .trim_start_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".:-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    // FNV-1a: stable across releases, unlike std's hasher.
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    dir.join(format!("{safe}-{:08x}.json", h as u32))
}

/// The name under which the descriptor `role` of device `name` is kept in systemd's store
/// (no ':' allowed there; a hash of the device's name tells devices apart).
pub fn fd_name(name: &str, role: &str) -> String {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    format!("acceld-{:08x}-{role}", h as u32)
}

/// One spelling per device (`host_driver::transport::canonical_name`): names, state files
/// and the lock that keeps two daemons off one device all use it.
pub fn canonical(name: &str) -> String {
    host_driver::transport::canonical_name(name)
}

/// A VF's layout as the firmware reports it.
pub fn layout_of(v: &VfInfo) -> VfLayout {
    VfLayout {
        vf: v.vf.get(),
        engines: v.engine_mask.get().count_ones() as u16,
        mem_granules: v.mem_granules.get(),
        queues: v.queue_count.get(),
        vectors: v.vector_count.get(),
        weight: v.weight.get(),
        vfio_pci: false,
    }
}

/// `live` as the desired state: each VF's resources, and whether vfio-pci holds it.
pub fn layout_now(a: &Accel, live: &[VfInfo]) -> Vec<VfLayout> {
    live.iter()
        .map(|v| VfLayout {
            vfio_pci: pci_driver(a, v.vf.get()) == Some(Some("vfio-pci".into())),
            ..layout_of(v)
        })
        .collect()
}

/// The driver holding PCI VF `vf` (`Some(None)`: none); `None` for a VF that is no PCI
/// function of this host (a vfio-user one) or that cannot be looked at.
fn pci_driver(a: &Accel, vf: u16) -> Option<Option<String>> {
    match a.handoff(vf).ok()?.endpoint {
        host_driver::transport::VfEndpoint::Pci { driver, .. } => Some(driver),
        _ => None,
    }
}

/// How `live` differs from `want`, one line per difference (empty: the same).
pub fn differences(want: &[VfLayout], live: &[VfInfo]) -> Vec<String> {
    let mut d = Vec::new();
    for w in want {
        match live.iter().find(|v| v.vf.get() == w.vf) {
            None => d.push(format!("VF {} is missing", w.vf)),
            Some(v) => {
                let l = layout_of(v);
                // Which driver holds a VF is no resource of the device's.
                if l != (VfLayout {
                    vfio_pci: false,
                    ..*w
                }) {
                    d.push(format!(
                        "VF {} holds {} engines, {} granules, {} queues, {} vectors, weight {}; \
                         wanted {}, {}, {}, {}, {}",
                        w.vf,
                        l.engines,
                        l.mem_granules,
                        l.queues,
                        l.vectors,
                        l.weight,
                        w.engines,
                        w.mem_granules,
                        w.queues,
                        w.vectors,
                        w.weight
                    ));
                }
            }
        }
    }
    for v in live {
        if !want.iter().any(|w| w.vf == v.vf.get()) {
            d.push(format!(
                "VF {} exists and is not in the desired state",
                v.vf.get()
            ));
        }
    }
    d
}

fn lost(e: &Error) -> bool {
    matches!(
        e,
        Error::Io(_) | Error::Connect { .. } | Error::Protocol(_) | Error::Remote { .. }
    )
}

/// What a reconcile did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The device held the desired layout: nothing touched.
    Adopted,
    /// The layout was created on an empty device (how many VFs).
    Restored(usize),
    /// The device holds another layout, left alone.
    Drift(Vec<String>),
}

impl Managed {
    /// A device to own, with its desired state loaded (`None` when there is no file yet: the
    /// first connection adopts what the device holds).
    pub fn new(
        name: &str,
        opts: Options,
        rt: tokio::runtime::Handle,
        events: Arc<EventLog>,
    ) -> std::result::Result<Arc<Self>, String> {
        let addr = DeviceAddr::parse(name).map_err(|e| e.to_string())?;
        let name = &canonical(name);
        let state_path = state_path(&opts.state_dir, name);
        let desired = state::load(&state_path).map_err(|e| e.to_string())?;
        if let Some(d) = &desired {
            if d.device != *name {
                return Err(format!(
                    "{} is the state of {}, not {name}",
                    state_path.display(),
                    d.device
                ));
            }
        }
        Ok(Arc::new(Managed {
            name: name.to_string(),
            addr,
            opts,
            rt,
            conn: RwLock::new(None),
            mutate: tokio::sync::Mutex::new(()),
            desired: Mutex::new(desired),
            state_path,
            health: Mutex::new(Health::new()),
            events,
            metrics: Arc::new(DeviceMetrics::default()),
            ring: tokio::sync::Mutex::new(()),
            kept: Mutex::new(None),
            flashing: tokio::sync::Mutex::new(()),
            info_reads: Default::default(),
            vf_reads: Default::default(),
            stats_reads: Default::default(),
        }))
    }

    /// Hands the device descriptors an earlier acceld kept to the first connection.
    pub fn keep(&self, opened: host_driver::kernel::vfio::Opened) {
        *self.kept.lock().unwrap_or_else(|p| p.into_inner()) = Some(opened);
    }

    /// "pci" or "vfio-user".
    pub fn transport_kind(&self) -> &'static str {
        match self.addr {
            DeviceAddr::Pci(_) => "pci",
            DeviceAddr::Socket(_) => "vfio-user",
        }
    }

    /// The device's runtime.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }

    /// The open handle, if the device is reachable now.
    pub fn accel(&self) -> Option<Arc<Accel>> {
        self.conn.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The desired layout (empty if none was ever set).
    pub fn desired(&self) -> Vec<VfLayout> {
        self.desired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|d| d.vfs.clone())
            .unwrap_or_default()
    }

    fn event(&self, kind: &'static str, vf: Option<u16>, code: u32, data: u64, message: String) {
        self.metrics.event(kind);
        self.events.push(New {
            device: &self.name,
            kind,
            vf,
            code,
            data,
            message,
        });
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes what the device now holds the desired state and saves it (after a change made
    /// through the daemon). Call with `mutate` held. A save that fails leaves the old file
    /// and is reported by health; the device keeps what it has.
    pub async fn record_layout(&self, a: &Accel) -> Result<()> {
        let live = a.vfs().await?;
        let st = DesiredState {
            format: state::FORMAT,
            device: self.name.clone(),
            vfs: layout_now(a, &live),
        };
        self.save(st);
        self.health().drift.clear();
        Ok(())
    }

    fn save(&self, st: DesiredState) {
        let r = std::fs::create_dir_all(&self.opts.state_dir)
            .map_err(|e| e.to_string())
            .and_then(|()| state::save(&self.state_path, &st).map_err(|e| e.to_string()));
        match r {
            Ok(()) => {
                self.health().save_error = None;
                *self.desired.lock().unwrap_or_else(|p| p.into_inner()) = Some(st);
            }
            Err(e) => {
                eprintln!(
                    "acceld: {}: cannot save the desired state to {}: {e}",
                    self.name,
                    self.state_path.display()
                );
                self.health().save_error = Some(e);
                // The daemon still means to keep what the users asked for.
                *self.desired.lock().unwrap_or_else(|p| p.into_inner()) = Some(st);
            }
        }
    }

    /// Re-reads the desired state from its file (SIGHUP: an operator may have edited it).
    /// Call with `mutate` held: a change in flight records its own state.
    pub fn reload(&self) -> std::result::Result<(), String> {
        let d = state::read(&self.state_path).map_err(|e| e.to_string())?;
        if let Some(d) = &d {
            if d.device != self.name {
                return Err(format!(
                    "{} names {}, not {}",
                    self.state_path.display(),
                    d.device,
                    self.name
                ));
            }
        }
        *self.desired.lock().unwrap_or_else(|p| p.into_inner()) = d;
        Ok(())
    }

    /// Brings the device to its desired state, as far as the policy allows. Call with
    /// `mutate` held.
    /// `came_back`: the device was just reset, reconnected or first opened, so an empty one
    /// lost its VFs and gets them back. Otherwise (a periodic look, a reload) an empty device
    /// is drift like any other difference: someone emptied it on purpose.
    pub async fn reconcile_locked(&self, a: &Accel, why: &str, came_back: bool) -> Result<Outcome> {
        let live = a.vfs().await?;
        let want = {
            let d = self.desired.lock().unwrap_or_else(|p| p.into_inner());
            d.as_ref().map(|d| d.vfs.clone())
        };
        let Some(want) = want else {
            // No state yet: what the device holds is what its users asked for.
            self.save(DesiredState {
                format: state::FORMAT,
                device: self.name.clone(),
                vfs: layout_now(a, &live),
            });
            return Ok(Outcome::Adopted);
        };
        let diff = differences(&want, &live);
        if diff.is_empty() {
            // Made and never shown (an interrupted create): SR-IOV shows them now. Only when
            // the device came back: otherwise a direct accelctl may be between its two steps.
            let need = live.iter().map(|v| v.vf.get() + 1).max().unwrap_or(0);
            if came_back && need > 0 && a.transport().num_vfs()? == 0 {
                a.transport().set_num_vfs(need)?;
            }
            if came_back {
                // Bound as recorded (a restore whose binding failed, a reset while no
                // daemon ran), then recorded as bound (a file from before bindings were).
                // A binding is only ever added here: one that did not take stays wanted.
                self.bind_as_recorded(a, &want);
                let vfs: Vec<VfLayout> = want
                    .iter()
                    .map(|w| VfLayout {
                        vfio_pci: w.vfio_pci
                            || pci_driver(a, w.vf) == Some(Some("vfio-pci".into())),
                        ..*w
                    })
                    .collect();
                if vfs != want {
                    self.save(DesiredState {
                        format: state::FORMAT,
                        device: self.name.clone(),
                        vfs,
                    });
                }
            }
            self.health().drift.clear();
            return Ok(Outcome::Adopted);
        }
        if (!live.is_empty() || !came_back) && !self.opts.enforce {
            let changed = self.health().drift != diff;
            if changed {
                self.health().drift = diff.clone();
                self.event(
                    "drift",
                    None,
                    0,
                    diff.len() as u64,
                    format!(
                        "the device differs from the desired state ({}); left alone (acceld \
                         --reconcile enforce would re-create it)",
                        diff.join("; ")
                    ),
                );
            }
            return Ok(Outcome::Drift(diff));
        }
        if !live.is_empty() {
            a.destroy_all().await?;
        }
        let layout: Vec<(u16, VfSpec)> = want
            .iter()
            .map(|w| {
                (
                    w.vf,
                    VfSpec::new(w.engines, w.mem_granules, w.queues, w.vectors, w.weight),
                )
            })
            .collect();
        let t = Instant::now();
        let made = a.restore(&layout).await?;
        // Bound again as they were, before anyone is told they are back.
        self.bind_as_recorded(a, &want);
        self.metrics.restored(t.elapsed());
        {
            let mut h = self.health();
            h.restores += 1;
            h.drift.clear();
        }
        if !made.is_empty() {
            self.event(
                "restored",
                None,
                0,
                made.len() as u64,
                format!(
                    "restored {} VF{} ({}) after {why}, in {:.0} ms",
                    made.len(),
                    if made.len() == 1 { "" } else { "s" },
                    made.iter()
                        .map(|v| v.vf.get().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    t.elapsed().as_secs_f64() * 1e3
                ),
            );
        }
        Ok(Outcome::Restored(made.len()))
    }

    /// Binds to vfio-pci each VF the desired state says vfio-pci held that no driver holds
    /// now (one another driver took is someone's choice, left alone); a failure is an event
    /// (the VF is there, unusable by a VMM until bound).
    fn bind_as_recorded(&self, a: &Accel, want: &[VfLayout]) {
        for w in want.iter().filter(|w| w.vfio_pci) {
            if pci_driver(a, w.vf) != Some(None) {
                continue;
            }
            if let Err(e) = a.bind_vfio(w.vf) {
                self.event(
                    "restore_failed",
                    Some(w.vf),
                    0,
                    0,
                    format!("VF {} is not bound to vfio-pci again: {e}", w.vf),
                );
            }
        }
    }

    /// Resets the device and restores its layout. Call with `mutate` held. Returns the
    /// running version and build id, and how many VFs were restored.
    pub async fn reset_and_restore(&self, a: &Accel, why: &str) -> Result<((u32, u32), usize)> {
        self.event("reset", None, 0, 0, format!("resetting the device: {why}"));
        {
            let mut h = self.health();
            h.resets += 1;
            h.last_reset = Some(Instant::now());
        }
        let a2 = self.accel().ok_or_else(offline)?;
        let vb = tokio::task::spawn_blocking(move || a2.fw_reset(RESET_TIMEOUT))
            .await
            .map_err(|e| Error::Invalid(format!("reset task: {e}")))??;
        {
            let mut h = self.health();
            h.hb_changed = Instant::now();
            h.heartbeat_ok = true;
        }
        // The boot's own events (FW_READY) are this reset's: read them now.
        self.drain_events(a).await?;
        Ok((vb, self.restore_after(a, why).await))
    }

    /// After a reset the daemon made: the layout back, or the reason it is not, as an event
    /// and in health (the reset itself worked, and is not undone by a failed restore).
    pub async fn restore_after(&self, a: &Accel, why: &str) -> usize {
        let r = self.reconcile_locked(a, why, true).await;
        for n in a.take_notes() {
            eprintln!("acceld: {}: {n}", self.name);
        }
        match r {
            Ok(Outcome::Restored(n)) => n,
            Ok(_) => 0,
            Err(e) => {
                self.event("restore_failed", None, 0, 0, e.to_string());
                0
            }
        }
    }

    /// Reads the event ring (its one consumer at a time); returns whether the firmware
    /// (re)booted.
    async fn drain_events(&self, a: &Accel) -> Result<bool> {
        let _ring = self.ring.lock().await;
        let mut booted = false;
        let taken = match a.take_events() {
            Err(Error::BadResponse(why)) => {
                self.event("overflow", None, 0, 0, format!("events lost: {why}"));
                return Ok(false);
            }
            r => r?,
        };
        for e in taken {
            let vf = (e.vf.get() != shared_abi::events::DEVICE).then(|| e.vf.get());
            let (code, data) = (e.code.get(), e.data.get());
            let Some(kind) = EventKind::from_wire(e.kind.get()) else {
                self.event(
                    "unknown",
                    vf,
                    code,
                    data,
                    format!("an event of unknown kind {}", e.kind.get()),
                );
                continue;
            };
            let message = match kind {
                EventKind::FwReady => {
                    booted = true;
                    format!("firmware {} ready", fw_version(code))
                }
                EventKind::VfFlrDone => format!("function level reset done ({data} in all)"),
                EventKind::VfFault => format!("refused access, fault code {code}"),
                EventKind::VfStateChanged => format!("state now {}", state_name(code)),
                EventKind::FwFault => format!(
                    "firmware fault: {} (code {code})",
                    host_driver::error::fault_name(code)
                ),
                EventKind::Overflow => {
                    let mut h = self.health();
                    h.dropped = h.dropped.saturating_add(data);
                    h.dropped_at = Some(Instant::now());
                    drop(h);
                    format!("the ring was full: {data} events dropped")
                }
            };
            self.event(
                accelvirt_api::convert::event_kind_name(kind),
                vf,
                code,
                data,
                message,
            );
        }
        Ok(booted)
    }

    async fn connect(&self) -> Result<Arc<Accel>> {
        let (addr, timeout) = (self.addr.clone(), self.opts.timeout);
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner()).take();
        let (a, adopted) = tokio::task::spawn_blocking(move || match (&addr, kept) {
            // Descriptors an earlier acceld kept in systemd's store: the device is still
            // open, with its VFs, and taken over without the reset an open would make.
            (DeviceAddr::Pci(pci), Some(opened)) => {
                match host_driver::kernel::KernelVfio::adopt(pci, Default::default(), opened)
                    .and_then(|t| Accel::with_transport(Arc::new(t), timeout))
                {
                    Ok(a) => Ok((a, true)),
                    Err(e) => {
                        eprintln!(
                            "acceld: {pci}: the kept descriptors are of no use ({e}): opening it"
                        );
                        Accel::open_with_timeout(&addr, timeout).map(|a| (a, false))
                    }
                }
            }
            _ => Accel::open_with_timeout(&addr, timeout).map(|a| (a, false)),
        })
        .await
        .map_err(|e| Error::Invalid(format!("connect task: {e}")))??;
        if adopted {
            self.event(
                "adopted",
                None,
                0,
                0,
                "took over the descriptors an earlier acceld kept in systemd's store: no reset"
                    .into(),
            );
        } else {
            // Kept by systemd from now on, so a restart of acceld does not release the device
            // (vfio-pci would reset it, and the reset destroys every VF).
            for (role, fd) in a.transport().held_descriptors() {
                match crate::notify::store_fd(&fd_name(&self.name, role), fd) {
                    Ok(_) => {}
                    Err(e) => eprintln!(
                        "acceld: {}: cannot keep the {role} descriptor in systemd's store: {e}",
                        self.name
                    ),
                }
            }
        }
        let m = self.metrics.clone();
        a.mailbox()
            .observe_latency(Arc::new(move |d| m.mailbox_latency(d)));
        // The events vector: where the transport can wire it (polled otherwise).
        let _ = a.transport().events_irq();
        Ok(Arc::new(a))
    }

    /// The supervisor: runs until `stop` turns true.
    pub async fn supervise(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut backoff = RECONNECT_FIRST;
        let mut tries = 0u32;
        let mut was_online = false;
        // Counters are sampled apart from the watch: a command that hangs on a hung firmware
        // must not keep the supervisor from noticing the hang.
        let sampler = self.rt.spawn(self.clone().sampler(stop.clone()));
        let _stop_sampler = AbortOnDrop(sampler);
        loop {
            if *stop.borrow() {
                return;
            }
            match self.accel() {
                None => match self.connect().await {
                    Ok(a) => {
                        backoff = RECONNECT_FIRST;
                        tries = 0;
                        *self.conn.write().unwrap_or_else(|p| p.into_inner()) = Some(a.clone());
                        {
                            let mut h = self.health();
                            h.online = true;
                            h.offline_reason = None;
                            h.hb_changed = Instant::now();
                            h.heartbeat_ok = true;
                        }
                        self.metrics.set_up(true);
                        let why = if was_online {
                            self.event("device_back", None, 0, 0, "the device is back".into());
                            "the device came back"
                        } else {
                            self.event(
                                "device_back",
                                None,
                                0,
                                0,
                                format!("opened {}", a.transport().describe()),
                            );
                            "the daemon started"
                        };
                        was_online = true;
                        // Events from before the daemon took the device are history.
                        let _ = self.drain_events(&a).await;
                        let _m = self.mutate.lock().await;
                        if let Err(e) = self.reconcile_locked(&a, why, true).await {
                            self.event("restore_failed", None, 0, 0, e.to_string());
                        }
                    }
                    Err(e) => {
                        let first = self.health().offline_reason.is_none();
                        self.health().offline_reason = Some(e.to_string());
                        if first {
                            eprintln!("acceld: {}: cannot open: {e} (retrying)", self.name);
                        }
                        let _ = tokio::time::timeout(backoff, stop.changed()).await;
                        // Every 10 ms for the first fifth of a second (a device model that
                        // restarts is back by then), then less and less often.
                        tries += 1;
                        if tries >= RECONNECT_EAGER {
                            backoff = (backoff * 2).min(RECONNECT_MAX);
                        }
                        continue;
                    }
                },
                Some(a) => {
                    if let Err(e) = self.tick(&a).await {
                        if lost(&e) {
                            *self.conn.write().unwrap_or_else(|p| p.into_inner()) = None;
                            {
                                let mut h = self.health();
                                h.online = false;
                                h.offline_reason = Some(e.to_string());
                            }
                            self.metrics.set_up(false);
                            self.event("device_lost", None, 0, 0, e.to_string());
                            continue;
                        }
                    }
                    // Sleep until the events vector fires, the device's connection closes,
                    // or a tick.
                    let t = a.transport();
                    let irq = t
                        .events_irq()
                        .and_then(|fd| host_driver::sys::async_eventfd(fd).ok());
                    let conn = t
                        .connection_fd()
                        .and_then(|fd| host_driver::sys::async_eventfd(fd).ok());
                    let fired = async {
                        match &irq {
                            Some(afd) => {
                                if let Ok(mut g) = afd.readable().await {
                                    let mut b = [0u8; 8];
                                    let _ = nix::unistd::read(g.get_inner(), &mut b);
                                    g.clear_ready();
                                }
                            }
                            None => std::future::pending().await,
                        }
                    };
                    let closed = async {
                        match &conn {
                            // Readable also while an answer is in flight: only a close
                            // wakes the supervisor.
                            Some(afd) => loop {
                                match afd.readable().await {
                                    Ok(g) if g.ready().is_read_closed() => break,
                                    Ok(mut g) => g.clear_ready(),
                                    Err(_) => std::future::pending::<()>().await,
                                }
                            },
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = fired => {}
                        _ = closed => {}
                        _ = tokio::time::sleep(TICK) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }

    async fn sampler(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            let _ = tokio::time::timeout(SAMPLE_EVERY, stop.changed()).await;
            if *stop.borrow() {
                return;
            }
            let healthy = {
                let h = self.health();
                h.online
                    && h.heartbeat_ok
                    && !DevStatus::from_bits_retain(h.dev_status)
                        .intersects(DevStatus::FAULT | DevStatus::HALTED)
            };
            if let (true, Some(a)) = (healthy, self.accel()) {
                if let Err(e) = self.sample(&a).await {
                    eprintln!("acceld: {}: sampling counters: {e}", self.name);
                }
            }
        }
    }

    /// How long the heartbeat may stand still before the firmware counts as hung.
    fn heartbeat_loss(&self) -> Duration {
        self.opts.timeout + HEARTBEAT_GRACE
    }

    /// DEV_STATUS, FAULT_CODE and the heartbeat, looked at and recorded; whether the device
    /// needs a reset (faulted, halted or hung) and why.
    fn look(&self, a: &Accel) -> Result<(DevStatus, Option<String>)> {
        let t = a.transport();
        let st = t.read32(pf::DEV_STATUS.offset())?;
        let code = t.read32(pf::FAULT_CODE.offset())?;
        let hb = t.read32(pf::HEARTBEAT.offset())?;
        let status = DevStatus::from_bits_retain(st);
        let loss = self.heartbeat_loss();
        let (newly_hung, ok) = {
            let mut h = self.health();
            h.dev_status = st;
            h.fault_code = code;
            if hb != h.hb_value {
                h.hb_value = hb;
                h.hb_changed = Instant::now();
            }
            let was_ok = h.heartbeat_ok;
            h.heartbeat_ok = h.hb_changed.elapsed() < loss || status.contains(DevStatus::HALTED);
            (was_ok && !h.heartbeat_ok, h.heartbeat_ok)
        };
        if newly_hung {
            self.event(
                "heartbeat_lost",
                None,
                0,
                0,
                format!(
                    "the firmware heartbeat stood still for {:.1} s",
                    loss.as_secs_f64()
                ),
            );
        }
        let why = if status.intersects(DevStatus::FAULT | DevStatus::HALTED) {
            Some(format!(
                "the firmware faulted ({})",
                host_driver::error::fault_name(code)
            ))
        } else if !ok {
            Some("the firmware heartbeat stopped".to_string())
        } else {
            None
        };
        Ok((status, why))
    }

    async fn tick(&self, a: &Arc<Accel>) -> Result<()> {
        let booted = self.drain_events(a).await?;
        let (_, bad) = self.look(a)?;
        self.metrics.set_health(&self.health());
        if let Some(why) = bad {
            if !self.opts.auto_reset || !self.health().reset_due() {
                return Ok(());
            }
            let _m = self.mutate.lock().await;
            // Looked at again now that nothing else changes the device: a reset someone
            // made meanwhile (fw-reset, flash --activate) may have fixed it already.
            let (_, still) = self.look(a)?;
            let Some(why) = still.map(|_| why) else {
                return Ok(());
            };
            {
                let mut h = self.health();
                let streak = h.last_reset.is_some_and(|t| t.elapsed() < RESET_WINDOW);
                h.reset_streak = if streak { h.reset_streak + 1 } else { 1 };
            }
            if let Err(e) = self.reset_and_restore(a, &why).await {
                if lost(&e) {
                    return Err(e);
                }
                self.event("restore_failed", None, 0, 0, e.to_string());
            }
            return Ok(());
        }
        if booted {
            // Someone else reset the device (a VMM, a direct fw-reset, a power event).
            let _m = self.mutate.lock().await;
            if let Err(e) = self.reconcile_locked(a, "a device reset", true).await {
                if lost(&e) {
                    return Err(e);
                }
                self.event("restore_failed", None, 0, 0, e.to_string());
            }
        }
        Ok(())
    }

    /// Counters for the rates, and a look for drift when no change is under way.
    async fn sample(&self, a: &Accel) -> Result<()> {
        let (_, vfs) = a.stats().await?;
        {
            let mut h = self.health();
            if h.samples.len() == SAMPLES {
                h.samples.pop_front();
            }
            h.samples.push_back((Instant::now(), vfs));
        }
        if let Ok(_m) = self.mutate.try_lock() {
            self.reconcile_locked(a, "a periodic check", false).await?;
        }
        Ok(())
    }

    /// The per-VF counters as last sampled (every few seconds), for the metrics endpoint:
    /// a scrape costs the device nothing.
    pub fn sampled(&self) -> Option<Vec<VfStats>> {
        self.health().samples.back().map(|(_, v)| v.clone())
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The error for a device the daemon cannot reach now.
pub fn offline() -> Error {
    // Exit 3, as a device model that is not there is when accelctl goes to it directly.
    Error::Daemon {
        code: 3,
        message: "acceld cannot reach the device now (it reconnects on its own; see \
                  `accelctl health`)"
            .into(),
    }
}

fn fw_version(w: u32) -> String {
    format!("{}.{}.{}", w >> 24, (w >> 16) & 0xFF, w & 0xFFFF)
}

fn state_name(code: u32) -> &'static str {
    match code {
        0 => "free",
        1 => "allocated",
        2 => "enabled",
        3 => "resetting",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_never_collide() {
        let d = Path::new("/var/lib/accelvirt");
        let a = state_path(d, "/tmp/a/b.sock");
        let b = state_path(d, "/tmp/a_b.sock");
        assert_ne!(a, b);
        assert_eq!(a, state_path(d, "/tmp/a/b.sock"));
        assert!(state_path(d, "0000:3b:00.0")
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("0000:3b:00.0-"));
    }

    #[test]
    fn differences_name_each_vf() {
        let mut v = <VfInfo as zerocopy::FromZeros>::new_zeroed();
        v.vf.set(1);
        v.engine_mask.set(0b11);
        v.mem_granules.set(4);
        v.queue_count.set(8);
        v.vector_count.set(8);
        v.weight.set(100);
        let l = layout_of(&v);
        assert!(differences(&[l], &[v]).is_empty());
        // Bound to vfio-pci or not, the device holds the same VF.
        let bound = VfLayout {
            vfio_pci: true,
            ..l
        };
        assert!(differences(&[bound], &[v]).is_empty());
        let mut other = l;
        other.queues = 4;
        assert_eq!(differences(&[other], &[v]).len(), 1);
        let mut missing = l;
        missing.vf = 2;
        let d = differences(&[missing], &[v]);
        assert_eq!(d.len(), 2, "{d:?}");
    }
}
