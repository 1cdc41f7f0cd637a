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
use shared_abi::resources::{DeviceStats, VfInfo, VfSpec, VfStats};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How long the firmware heartbeat may stand still before the firmware counts as hung.
pub const HEARTBEAT_LOSS: Duration = Duration::from_secs(2);
/// How often the supervisor looks at a device when no interrupt wakes it.
pub const TICK: Duration = Duration::from_millis(100);
/// The first wait before trying to reach a lost device again; each failure doubles it, up
/// to [`RECONNECT_MAX`]: a device model restarted in a moment is found again in a moment.
pub const RECONNECT_FIRST: Duration = Duration::from_millis(10);
/// The longest wait between attempts to reach a lost device.
pub const RECONNECT_MAX: Duration = Duration::from_secs(1);
/// A reset that did not bring the device back is retried no sooner than this (a device
/// that never comes up is not reset in a loop).
pub const RESET_BACKOFF: Duration = Duration::from_secs(10);
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
    /// The heartbeat moved within [`HEARTBEAT_LOSS`].
    pub heartbeat_ok: bool,
    /// Ring entries not yet consumed at the last look.
    pub backlog: u32,
    /// Events the firmware dropped (OVERFLOW), in total.
    pub dropped: u64,
    /// How the device differs from the desired state (empty: in sync).
    pub drift: Vec<String>,
    /// Layouts restored onto the device.
    pub restores: u64,
    /// Resets the daemon made.
    pub resets: u64,
    last_reset: Option<Instant>,
    /// The device ran (READY, heartbeat moving) since the last reset: the next failure is
    /// a new one, not that reset failing again.
    recovered: bool,
    samples: VecDeque<(Instant, Vec<VfStats>)>,
    /// The desired state could not be saved (the reason), until a save succeeds.
    pub save_error: Option<String>,
    /// The last time a connection attempt failed, and why.
    pub offline_reason: Option<String>,
}

impl Health {
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
            drift: Vec::new(),
            restores: 0,
            resets: 0,
            last_reset: None,
            recovered: true,
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
        if self.dropped > 0 {
            p.push(format!(
                "the firmware dropped {} events (its ring was full)",
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

/// A VF's layout as the firmware reports it.
pub fn layout_of(v: &VfInfo) -> VfLayout {
    VfLayout {
        vf: v.vf.get(),
        engines: v.engine_mask.get().count_ones() as u16,
        mem_granules: v.mem_granules.get(),
        queues: v.queue_count.get(),
        vectors: v.vector_count.get(),
        weight: v.weight.get(),
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
                if l != *w {
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
        let state_path = state_path(&opts.state_dir, name);
        let desired = state::load(&state_path).map_err(|e| e.to_string())?;
        if let Some(d) = &desired {
            if d.device != name {
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
            info_reads: Default::default(),
            vf_reads: Default::default(),
            stats_reads: Default::default(),
        }))
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
            vfs: live.iter().map(layout_of).collect(),
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
    pub fn reload(&self) -> std::result::Result<(), String> {
        let d = state::load(&self.state_path).map_err(|e| e.to_string())?;
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
    pub async fn reconcile_locked(&self, a: &Accel, why: &str) -> Result<Outcome> {
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
                vfs: live.iter().map(layout_of).collect(),
            });
            return Ok(Outcome::Adopted);
        };
        let diff = differences(&want, &live);
        if diff.is_empty() {
            // Made and never shown (an interrupted create): SR-IOV shows them now.
            let need = live.iter().map(|v| v.vf.get() + 1).max().unwrap_or(0);
            if need > 0 && a.transport().num_vfs()? == 0 {
                a.transport().set_num_vfs(need)?;
            }
            self.health().drift.clear();
            return Ok(Outcome::Adopted);
        }
        if !live.is_empty() && !self.opts.enforce {
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

    /// Resets the device and restores its layout. Call with `mutate` held. Returns the
    /// running version and build id, and how many VFs were restored.
    pub async fn reset_and_restore(&self, a: &Accel, why: &str) -> Result<((u32, u32), usize)> {
        self.event("reset", None, 0, 0, format!("resetting the device: {why}"));
        {
            let mut h = self.health();
            h.resets += 1;
            h.last_reset = Some(Instant::now());
            h.recovered = false;
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
        self.drain_events(a)?;
        let n = match self.reconcile_locked(a, why).await? {
            Outcome::Restored(n) => n,
            _ => 0,
        };
        Ok((vb, n))
    }

    /// Reads the event ring; returns whether the firmware (re)booted.
    fn drain_events(&self, a: &Accel) -> Result<bool> {
        let mut booted = false;
        for e in a.take_events()? {
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
                    self.health().dropped += data;
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
        let a = tokio::task::spawn_blocking(move || Accel::open_with_timeout(&addr, timeout))
            .await
            .map_err(|e| Error::Invalid(format!("connect task: {e}")))??;
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
                        let _ = self.drain_events(&a);
                        let _m = self.mutate.lock().await;
                        if let Err(e) = self.reconcile_locked(&a, why).await {
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
                        backoff = (backoff * 2).min(RECONNECT_MAX);
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
                    // Sleep until the events vector fires, or a tick.
                    let irq = a
                        .transport()
                        .events_irq()
                        .and_then(|fd| host_driver::sys::async_eventfd(fd).ok());
                    match irq {
                        Some(afd) => {
                            tokio::select! {
                                r = afd.readable() => {
                                    if let Ok(mut g) = r {
                                        let mut b = [0u8; 8];
                                        let _ = nix::unistd::read(
                                            std::os::fd::AsRawFd::as_raw_fd(g.get_inner()),
                                            &mut b,
                                        );
                                        g.clear_ready();
                                    }
                                }
                                _ = tokio::time::sleep(TICK) => {}
                                _ = stop.changed() => {}
                            }
                        }
                        None => {
                            let _ = tokio::time::timeout(TICK, stop.changed()).await;
                        }
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

    async fn tick(&self, a: &Arc<Accel>) -> Result<()> {
        let t = a.transport();
        let st = t.read32(pf::DEV_STATUS.offset())?;
        let code = t.read32(pf::FAULT_CODE.offset())?;
        let hb = t.read32(pf::HEARTBEAT.offset())?;
        let booted = self.drain_events(a)?;
        let status = DevStatus::from_bits_retain(st);
        let (hung, due) = {
            let mut h = self.health();
            h.dev_status = st;
            h.fault_code = code;
            if hb != h.hb_value {
                h.hb_value = hb;
                h.hb_changed = Instant::now();
                if status.contains(DevStatus::READY)
                    && !status.intersects(DevStatus::FAULT | DevStatus::HALTED)
                {
                    h.recovered = true;
                }
            }
            let was_ok = h.heartbeat_ok;
            h.heartbeat_ok =
                h.hb_changed.elapsed() < HEARTBEAT_LOSS || status.contains(DevStatus::HALTED);
            let newly_hung = was_ok && !h.heartbeat_ok;
            let due = h.recovered || h.last_reset.is_none_or(|t| t.elapsed() >= RESET_BACKOFF);
            (newly_hung, due)
        };
        self.metrics.set_health(&self.health());
        if hung {
            self.event(
                "heartbeat_lost",
                None,
                0,
                0,
                format!(
                    "the firmware heartbeat stood still for {} s",
                    HEARTBEAT_LOSS.as_secs()
                ),
            );
        }
        let bad =
            status.intersects(DevStatus::FAULT | DevStatus::HALTED) || !self.health().heartbeat_ok;
        if bad && self.opts.auto_reset && due {
            let why = if status.intersects(DevStatus::FAULT | DevStatus::HALTED) {
                format!(
                    "the firmware faulted ({})",
                    host_driver::error::fault_name(code)
                )
            } else {
                "the firmware heartbeat stopped".to_string()
            };
            let _m = self.mutate.lock().await;
            if let Err(e) = self.reset_and_restore(a, &why).await {
                if lost(&e) {
                    return Err(e);
                }
                self.event("restore_failed", None, 0, 0, e.to_string());
            }
            return Ok(());
        }
        if booted && !bad {
            // Someone else reset the device (a VMM, a direct fw-reset, a power event).
            let _m = self.mutate.lock().await;
            if let Err(e) = self.reconcile_locked(a, "a device reset").await {
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
            self.reconcile_locked(a, "a periodic check").await?;
        }
        Ok(())
    }

    /// Device and per-VF counters, for the metrics endpoint.
    pub async fn stats(&self) -> Result<(DeviceStats, Vec<VfStats>)> {
        let a = self.accel().ok_or_else(offline)?;
        a.stats().await
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
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "the daemon cannot reach the device now (it reconnects on its own; see `accelctl health`)",
    ))
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
        let mut other = l;
        other.queues = 4;
        assert_eq!(differences(&[other], &[v]).len(), 1);
        let mut missing = l;
        missing.vf = 2;
        let d = differences(&[missing], &[v]);
        assert_eq!(d.len(), 2, "{d:?}");
    }
}
