//! The plugin's view of the node: each acceld device's VFs and health, kept current from
//! the daemon's event stream, imported remote VFs from their importers' state files, and the
//! profiles file, carried out through acceld when it changes. Each change is published as a
//! [`Snapshot`] the resources' plugins stream to the kubelet.

use crate::health::{self, Tracker};
use crate::inventory::{self, Endpoint, Snapshot, Vf};
use crate::pods::{Allocations, PodResources};
use crate::profiles::Profiles;
use accelvirt_api::v1;
use host_driver::daemon::Client;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

mod carve;
mod claims;

/// How long one acceld call may take before the device counts as unhealthy.
pub const CALL: Duration = Duration::from_secs(2);
/// How long destroying or creating a device's VFs may take (each VF is a firmware command
/// and an SR-IOV change).
pub const CHANGE: Duration = Duration::from_secs(60);
/// How long after a failed re-carve it is tried again (doubling, up to [`FAILED_MAX`]),
/// unless the profiles file changes first.
pub const FAILED: Duration = Duration::from_secs(30);
/// The longest wait between tries of a failing re-carve.
pub const FAILED_MAX: Duration = Duration::from_secs(600);
/// How often the profiles file and importers' state files are looked at.
pub const TICK: Duration = Duration::from_millis(250);
/// How often everything is read again whatever the events say, and a refused re-carve
/// tried again (pods may have let go of their VFs).
pub const RESYNC: Duration = Duration::from_secs(10);

/// How often a refused re-carve is tried again (a look at the kubelet's pod resources).
pub const RETRY: Duration = Duration::from_secs(1);

/// What the plugin is pointed at.
#[derive(Debug, Clone)]
pub struct Config {
    /// acceld's socket.
    pub acceld: PathBuf,
    /// The profiles file, if any.
    pub profiles: Option<PathBuf>,
    /// The kubelet's pod resources API.
    pub pod_resources: PodResources,
    /// Where sysfs is (NUMA nodes of PCI VFs).
    pub sysfs: PathBuf,
    /// The runtime directory whose importers' VFs are advertised as `accelvirt.io/vf-remote`.
    pub imported: Option<PathBuf>,
    /// Where profile changes are reported.
    pub events: crate::events::Recorder,
}

#[derive(Debug, Clone, Default)]
struct DeviceView {
    problem: Option<String>,
    shift: u32,
    vfs: Vec<v1::VfInfo>,
    /// Each VF's hand-off and NUMA node, asked once per VF (again while it is not usable,
    /// and after the device is re-carved or reset).
    endpoints: BTreeMap<u32, (Endpoint, Option<i64>)>,
    /// The device was reset or re-carved: every hand-off is asked again (the ones known
    /// stand until then, so the kubelet's list does not lose a VF meanwhile).
    stale: bool,
}

/// The state task.
#[derive(Debug)]
pub struct State {
    cfg: Config,
    tracker: Tracker,
    views: BTreeMap<String, DeviceView>,
    profiles: Profiles,
    profiles_bytes: Option<Vec<u8>>,
    refused: BTreeMap<String, String>,
    /// Devices to be carved once they are well.
    waiting: BTreeSet<String>,
    failed: BTreeMap<String, carve::Failure>,
    carving: BTreeSet<String>,
    /// The resource each live VF is advertised as. It changes only when the kubelet says
    /// no pod holds the VF: a VF a pod holds as one resource, offered as another, could go
    /// to a second pod.
    advertised: BTreeMap<String, String>,
    /// VFs whose profile says another resource than they are advertised as: ID, to what.
    moving: BTreeMap<String, String>,
    /// VFs held back from the kubelet while the look at whether a pod holds them is made.
    settling: BTreeSet<String>,
    /// What the kubelet last said its pods hold of ours, and as what.
    held: BTreeMap<String, String>,
    /// The newest event the health tracker was made from (events the watch goes over
    /// again, up to this one, are not taken twice).
    seen_seq: u64,
    /// What the plugin last said about the kubelet's pod resources not answering.
    pods_said: String,
    /// Whether the kubelet has said so since the plugin started: until it has, a VF the
    /// plugin has no resource for yet is held back where profiles are in use (after a
    /// restart with a changed file, its profile may not be what a pod holds it as).
    pods_known: bool,
    remote: Vec<Vf>,
    remote_seen: bool,
    reachable: bool,
    allocations: Arc<Allocations>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    resources: watch::Sender<Vec<String>>,
}

async fn call<T, F>(what: &str, f: F) -> Result<T, String>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    call_within(CALL, what, f).await
}

async fn call_within<T, F>(within: Duration, what: &str, f: F) -> Result<T, String>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    match tokio::time::timeout(within, f).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(format!("acceld {what}: {}", s.message())),
        Err(_) => Err(format!("acceld {what}: no answer in {within:?}")),
    }
}

impl State {
    /// A state task, with where it publishes.
    pub fn new(
        cfg: Config,
        allocations: Arc<Allocations>,
    ) -> (
        State,
        watch::Receiver<Arc<Snapshot>>,
        watch::Receiver<Vec<String>>,
    ) {
        let (snapshot, snap_rx) = watch::channel(Arc::new(Snapshot::default()));
        let (resources, res_rx) = watch::channel(vec![crate::GENERIC.to_string()]);
        let mut s = State {
            cfg,
            tracker: Tracker::default(),
            views: BTreeMap::new(),
            profiles: Profiles::default(),
            profiles_bytes: None,
            refused: BTreeMap::new(),
            waiting: BTreeSet::new(),
            failed: BTreeMap::new(),
            carving: BTreeSet::new(),
            advertised: BTreeMap::new(),
            moving: BTreeMap::new(),
            settling: BTreeSet::new(),
            held: BTreeMap::new(),
            pods_known: false,
            seen_seq: 0,
            pods_said: String::new(),
            remote: Vec::new(),
            remote_seen: false,
            reachable: false,
            allocations,
            snapshot,
            resources,
        };
        s.read_profiles();
        s.publish_resources();
        (s, snap_rx, res_rx)
    }

    /// Reads the profiles file if it changed; whether it did (and is good).
    fn read_profiles(&mut self) -> bool {
        let Some(p) = &self.cfg.profiles else {
            return false;
        };
        let b = match std::fs::read(p) {
            Ok(b) => b,
            Err(e) => {
                if self.profiles_bytes.is_some() {
                    crate::log!("{}: {e}; keeping the profiles read before", p.display());
                    self.profiles_bytes = None;
                }
                return false;
            }
        };
        if self.profiles_bytes.as_ref() == Some(&b) {
            return false;
        }
        self.profiles_bytes = Some(b.clone());
        match Profiles::parse(&b) {
            Ok(n) => {
                if n != self.profiles {
                    crate::log!(
                        "{}: profiles {}",
                        p.display(),
                        n.shapes.keys().cloned().collect::<Vec<_>>().join(", ")
                    );
                    self.profiles = n;
                    self.refused.clear();
                    self.failed.clear();
                    return true;
                }
                false
            }
            Err(e) => {
                crate::log!("{}: {e}; keeping the profiles read before", p.display());
                false
            }
        }
    }

    fn publish_resources(&mut self) {
        let mut r = self.profiles.resources();
        if self.remote_seen {
            r.push(crate::REMOTE.to_string());
        }
        // A resource a VF is still advertised as is served until none is.
        for a in self.advertised.values() {
            if !r.contains(a) {
                r.push(a.clone());
            }
        }
        self.resources.send_if_modified(|cur| {
            let changed = *cur != r;
            *cur = r;
            changed
        });
    }

    /// Builds and publishes the snapshot (only when it differs).
    fn publish(&mut self) {
        let mut s = Snapshot {
            acceld_reachable: self.reachable,
            ..Default::default()
        };
        let mut advertised = Vec::new();
        let mut moving = BTreeMap::new();
        for (name, view) in &self.views {
            for vf in view.vfs.iter().filter(|v| v.state != 0) {
                let id = inventory::vf_id(name, vf.vf);
                let Some((endpoint, numa)) = view.endpoints.get(&vf.vf).cloned() else {
                    continue;
                };
                let profile = self.profiles.resource_of(vf, view.shift);
                let known = self
                    .held
                    .get(&id)
                    .or_else(|| self.advertised.get(&id))
                    .cloned();
                let unknown = known.is_none() && self.awaiting_pods();
                let resource = known.unwrap_or_else(|| profile.clone());
                if resource != profile {
                    moving.insert(id.clone(), profile);
                }
                // Not offered at all until the kubelet says what pods hold: under a guessed
                // resource it could be another's.
                if unknown {
                    continue;
                }
                advertised.push((id.clone(), resource.clone()));
                let unhealthy = if !self.reachable {
                    Some("acceld cannot be reached".to_string())
                } else if self.carving.contains(name) {
                    Some(format!("{name} is being re-carved"))
                } else if self.settling.contains(&id) {
                    Some(format!(
                        "{id} is being moved to {}",
                        moving.get(&id).map_or("another resource", |r| r.as_str())
                    ))
                } else {
                    self.tracker
                        .device_problem(name)
                        .or_else(|| view.problem.clone())
                        .or_else(|| self.tracker.vf_problem(name, vf))
                        .or_else(|| endpoint.problem())
                };
                s.vfs.insert(
                    id.clone(),
                    Vf {
                        id,
                        resource,
                        device: name.clone(),
                        vf: vf.vf,
                        unhealthy,
                        numa,
                        endpoint,
                    },
                );
            }
        }
        for v in &self.remote {
            s.vfs.insert(v.id.clone(), v.clone());
        }
        // Kept for a VF gone from the list for a while (a device being reset): it comes
        // back as what it was, until the kubelet says no pod holds it.
        self.advertised.extend(advertised);
        self.moving = moving;
        self.publish_resources();
        self.snapshot.send_if_modified(|cur| {
            if **cur == s {
                return false;
            }
            *cur = Arc::new(s);
            true
        });
    }

    /// Reads one device's health and VFs again, and the hand-off of any VF new to us.
    async fn refresh(&mut self, c: &Client, name: &str) {
        let mut api = c.api.clone();
        let req = v1::DeviceRequest {
            device: name.to_string(),
        };
        let view = self.views.entry(name.to_string()).or_default();
        let health = call("GetHealth", api.get_health(req.clone())).await;
        let list = call("ListVfs", api.list_vfs(req)).await;
        view.problem = match &health {
            Ok(h) => health::device_problem(h),
            Err(e) => Some(e.clone()),
        };
        match list {
            Ok(l) => {
                view.shift = l.granule_shift;
                view.vfs = l.vfs;
            }
            // The last list stands (the IDs stay advertised, unhealthy).
            Err(e) => {
                view.problem.get_or_insert(e);
            }
        }
        let live: BTreeSet<u32> = view
            .vfs
            .iter()
            .filter(|v| v.state != 0)
            .map(|v| v.vf)
            .collect();
        view.endpoints.retain(|vf, _| live.contains(vf));
        let stale = std::mem::take(&mut view.stale);
        for vf in live {
            // Asked again while not usable: binding a VF to vfio-pci is done after it exists.
            if !stale
                && view
                    .endpoints
                    .get(&vf)
                    .is_some_and(|(e, _)| e.problem().is_none())
            {
                continue;
            }
            let r = call(
                "GetVf",
                api.get_vf(v1::VfRequest {
                    device: name.to_string(),
                    vf,
                }),
            )
            .await;
            let ep = r
                .ok()
                .and_then(|d| d.handoff)
                .and_then(|h| h.endpoint)
                .and_then(|e| e.kind);
            let got = match ep {
                Some(v1::vf_endpoint::Kind::Pci(p)) => {
                    let numa = inventory::numa_node(&self.cfg.sysfs, &p.address);
                    Some((
                        Endpoint::Pci {
                            address: p.address,
                            iommu_group: p.iommu_group,
                            vf_token: p.vf_token,
                            driver: p.driver,
                        },
                        numa,
                    ))
                }
                Some(v1::vf_endpoint::Kind::Socket(s)) => {
                    Some((Endpoint::Socket(PathBuf::from(s.path)), None))
                }
                None => None,
            };
            match got {
                Some(g) => {
                    view.endpoints.insert(vf, g);
                }
                // Asked again next time.
                None => view.stale |= stale,
            }
        }
    }

    async fn refresh_all(&mut self, c: &Client) -> Result<(), String> {
        let devs = call(
            "ListDevices",
            c.api.clone().list_devices(v1::ListDevicesRequest {}),
        )
        .await?
        .devices;
        let names: BTreeSet<String> = devs.into_iter().map(|d| d.name).collect();
        self.views.retain(|n, _| names.contains(n));
        for n in names {
            self.refresh(c, &n).await;
        }
        Ok(())
    }

    fn read_remote(&mut self) {
        let Some(dir) = &self.cfg.imported else {
            return;
        };
        let now: Vec<Vf> = host_driver::imported::list(dir)
            .into_iter()
            .map(|i| Vf {
                id: inventory::remote_id(&i.exporter, i.vf),
                resource: crate::REMOTE.to_string(),
                device: i.exporter.clone(),
                vf: i.vf,
                unhealthy: (i.link != "up")
                    .then(|| format!("the link to {} is {}", i.exporter, i.link)),
                numa: None,
                endpoint: Endpoint::Socket(i.socket),
            })
            .collect();
        // Served from the first imported VF on (the next publish says so).
        self.remote_seen |= !now.is_empty();
        self.remote = now;
    }

    /// Runs until `stop` turns true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        let mut said = String::new();
        loop {
            let session = async {
                let c = Client::connect(&self.cfg.acceld)
                    .await
                    .map_err(|e| e.to_string())?;
                // Watching first: nothing between the read and the watch is missed. The
                // daemon replays the events it kept, so faults before the plugin started
                // count too.
                let events = call(
                    "WatchEvents",
                    c.api.clone().watch_events(v1::EventsRequest::default()),
                )
                .await?;
                Ok::<_, String>((c, events))
            };
            let got = tokio::select! {
                r = session => r,
                _ = stop.changed() => return,
            };
            let got = match got {
                Ok((c, events)) => match self.resync(&c).await {
                    Ok(()) => Ok((c, events)),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            let (c, mut events) = match got {
                Ok(x) => x,
                Err(e) => {
                    if e != said {
                        crate::log!("{e}; trying again");
                        said = e;
                    }
                    self.reachable = false;
                    self.read_remote();
                    self.publish();
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            said.clear();
            self.reachable = true;
            crate::log!(
                "acceld at {}: {} device(s)",
                self.cfg.acceld.display(),
                self.views.len()
            );
            self.read_remote();
            // What the kubelet's pods hold, and as what, before anything is advertised: a
            // VF keeps the resource a pod holds it as, whatever the profiles say now.
            self.ask_pods().await;
            self.publish();
            self.reconcile(&c).await;
            let mut tick = tokio::time::interval(TICK);
            // After a long call (a re-carve), one tick, not the ones missed in a burst.
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_sync = Instant::now();
            let mut last_retry = Instant::now();
            let lost = loop {
                let mut dirty = BTreeSet::new();
                tokio::select! {
                    m = events.message() => match m {
                        Ok(Some(e)) => {
                            self.apply(&e, &mut dirty);
                            // Events come in bursts (a reset, a replay): take what is
                            // already here before reading the devices again.
                            while let Ok(m) =
                                tokio::time::timeout(Duration::ZERO, events.message()).await
                            {
                                match m {
                                    Ok(Some(e)) => self.apply(&e, &mut dirty),
                                    _ => break,
                                }
                            }
                        }
                        Ok(None) => break "acceld ended the event stream".to_string(),
                        Err(s) => break format!("acceld's event stream: {}", s.message()),
                    },
                    _ = tick.tick() => {
                        let changed = self.read_profiles();
                        self.read_remote();
                        self.publish();
                        if changed || last_sync.elapsed() >= RESYNC {
                            last_sync = Instant::now();
                            if let Err(e) = self.refresh_all(&c).await {
                                break e;
                            }
                            // What pods hold, again: a VF is never offered as what it was
                            // not, from an answer grown old.
                            self.ask_pods().await;
                            self.publish();
                            self.reconcile(&c).await;
                            self.settle().await;
                        } else if last_retry.elapsed() >= RETRY
                            && !(self.refused.is_empty()
                                && self.waiting.is_empty()
                                && self.moving.is_empty()
                                && !self.awaiting_pods())
                        {
                            last_retry = Instant::now();
                            if self.awaiting_pods() {
                                self.ask_pods().await;
                                self.publish();
                            }
                            self.reconcile(&c).await;
                            self.settle().await;
                        }
                        continue;
                    }
                    _ = stop.changed() => return,
                }
                // What the events say reaches the kubelet now; what the devices say, after
                // reading them.
                self.publish();
                // Events were lost: the health tracker is made again from what the daemon
                // kept, and every device read again.
                if dirty.remove("") {
                    crate::log!("acceld's events were missed: reading what it kept");
                    if let Err(e) = self.resync(&c).await {
                        break e;
                    }
                    // Every device was read just now.
                    dirty.clear();
                }
                let known: Vec<String> = dirty
                    .into_iter()
                    .filter(|d| self.views.contains_key(d))
                    .collect();
                for d in known {
                    self.refresh(&c, &d).await;
                }
                self.publish();
            };
            crate::log!("{lost}: every VF is unhealthy until acceld answers again");
            self.reachable = false;
            self.publish();
        }
    }

    /// Whether VFs wait for the kubelet's first word on what pods hold (only profiles make
    /// a VF's resource a question).
    fn awaiting_pods(&self) -> bool {
        !self.pods_known && self.cfg.profiles.is_some()
    }

    /// The health tracker made from the events acceld kept, and every device read again.
    /// The watch opened before goes over some of the same events again; those are skipped
    /// by their numbers.
    async fn resync(&mut self, c: &Client) -> Result<(), String> {
        let kept = call(
            "ListEvents",
            c.api.clone().list_events(v1::EventsRequest::default()),
        )
        .await?
        .events;
        let mut t = Tracker::default();
        for e in &kept {
            t.apply(e);
        }
        self.tracker = t;
        self.seen_seq = kept.iter().map(|e| e.seq).max().unwrap_or(0);
        // Whatever happened meanwhile (a reset, the daemon's restart), every hand-off is
        // asked again: the VFs may be new ones.
        for v in self.views.values_mut() {
            v.stale = true;
        }
        self.refresh_all(c).await
    }

    /// Takes one event in, noting the device it is about ("" for the daemon's own, a
    /// missed-events notice).
    fn apply(&mut self, e: &v1::Event, dirty: &mut BTreeSet<String>) {
        // Already in the tracker (the watch's replay of what the daemon kept). A notice of
        // missed events has no number.
        if e.seq != 0 && e.seq <= self.seen_seq {
            return;
        }
        self.tracker.apply(e);
        // The device was reset and its VFs made anew: their hand-offs are asked again.
        if matches!(e.kind.as_str(), "fw_ready" | "restored" | "device_back") {
            if let Some(v) = self.views.get_mut(&e.device) {
                v.stale = true;
            }
        }
        dirty.insert(e.device.clone());
    }
}
