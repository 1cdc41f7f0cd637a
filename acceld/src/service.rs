//! The `accelvirt.v1.Accelvirt` service: each call checked against the access policy, run on
//! its device's runtime, answered with the firmware's structures converted field by field.
//! Changes to which VFs exist or what they hold are serialized per device and become the
//! device's desired state; reads take no lock but the mailbox's, one command long.

use crate::access::{Peer, Policy};
use crate::device::{offline, Managed, Outcome};
use crate::events::EventLog;
use accelvirt_api::convert;
use accelvirt_api::v1::{self, accelvirt_server::Accelvirt};
use host_driver::daemon::{error_status, handoff_msg};
use host_driver::error::{Error, Result};
use host_driver::{Accel, CreateSpec};
use shared_abi::regs::DevCaps;
use shared_abi::resources::{VfInfo, VfSpec, MAX_WEIGHT};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// The service.
#[derive(Debug)]
pub struct Service {
    devices: Arc<Vec<Arc<Managed>>>,
    events: Arc<EventLog>,
    /// Turns true when the daemon stops: event streams end then.
    stop: tokio::sync::watch::Receiver<bool>,
}

type Reply<T> = std::result::Result<Response<T>, Status>;

impl Service {
    /// Serves `devices`.
    pub fn new(
        devices: Arc<Vec<Arc<Managed>>>,
        events: Arc<EventLog>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Service {
            devices,
            events,
            stop,
        }
    }

    /// The caller, as the access check (see [`admit`]) left it on the request.
    fn admit<T>(&self, req: &Request<T>) -> std::result::Result<Peer, Status> {
        req.extensions()
            .get::<Peer>()
            .copied()
            .ok_or_else(|| deny("the request did not pass the access check".into()))
    }

    fn device(&self, name: &str) -> std::result::Result<Arc<Managed>, Status> {
        find(&self.devices, name).map_err(|e| error_status(&e))
    }
}

/// The access check, run on each request before its body is read (a tonic interceptor): the
/// peer's credentials from the socket against the policy. A caller who may manage has its
/// [`Peer`] put on the request; anyone else is refused before the daemon reads or decodes
/// anything it sent.
pub fn admit(
    policy: &RwLock<Policy>,
    mut req: Request<()>,
) -> std::result::Result<Request<()>, Status> {
    let caller = req.extensions().get::<crate::access::Caller>().cloned();
    let Some((peer, groups)) = caller.and_then(|c| Some((c.peer?, c.groups.clone()))) else {
        return Err(deny("the caller's credentials are unknown".into()));
    };
    policy
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .check(&peer, &groups)
        .map_err(deny)?;
    req.extensions_mut().insert(peer);
    Ok(req)
}

fn deny(why: String) -> Status {
    let mut s = Status::permission_denied(why);
    if let Ok(v) = accelvirt_api::EXIT_PERMISSION_DENIED.to_string().parse() {
        s.metadata_mut().insert(accelvirt_api::EXIT_CODE_KEY, v);
    }
    s
}

/// The device named `name` (empty: the only one), matched as accelctl's -d would be.
pub fn find(devices: &[Arc<Managed>], name: &str) -> Result<Arc<Managed>> {
    if name.is_empty() {
        return match devices {
            [one] => Ok(one.clone()),
            _ => Err(Error::Invalid(format!(
                "acceld owns {} devices: name one with -d ({})",
                devices.len(),
                devices
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        };
    }
    let want = host_driver::transport::canonical_name(name);
    devices
        .iter()
        .find(|d| d.name == name || d.name == want)
        .cloned()
        .ok_or_else(|| {
            Error::NotOurDevice(format!(
                "acceld does not own {name} (it owns {})",
                devices
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// Runs `f` with the device's handle on the device's runtime: a hung device holds its own
/// threads, not the API's.
async fn on_device<T, F>(d: &Arc<Managed>, f: F) -> std::result::Result<T, Status>
where
    T: Send + 'static,
    F: for<'a> FnOnce(Arc<Managed>, Arc<Accel>) -> Pin<Box<dyn Future<Output = Result<T>> + Send>>
        + Send
        + 'static,
{
    let a = d.accel().ok_or_else(|| error_status(&offline()))?;
    let d2 = d.clone();
    d.runtime()
        .spawn(async move { f(d2, a).await })
        .await
        .map_err(|e| Status::internal(format!("the request's task failed: {e}")))?
        .map_err(|e| error_status(&e))
}

/// A change, run as [`on_device`] runs a read, and logged: who asked and what before it
/// starts, and how it went from the device's task when it ends, so that a client that goes
/// away mid-change does not take the record of the change with it.
async fn change<T, F>(
    d: &Arc<Managed>,
    peer: &Peer,
    what: String,
    f: F,
) -> std::result::Result<T, Status>
where
    T: Send + 'static,
    F: for<'a> FnOnce(Arc<Managed>, Arc<Accel>) -> Pin<Box<dyn Future<Output = Result<T>> + Send>>
        + Send
        + 'static,
{
    let who = format!("uid {} pid {} on {}: {what}", peer.uid, peer.pid, d.name);
    eprintln!("acceld: {who}: requested");
    let a = match d.accel() {
        Some(a) => a,
        None => {
            let e = offline();
            eprintln!("acceld: {who}: failed: {e}");
            return Err(error_status(&e));
        }
    };
    let d2 = d.clone();
    d.runtime()
        .spawn(async move {
            let r = f(d2, a).await;
            match &r {
                Ok(_) => eprintln!("acceld: {who}: ok"),
                Err(e) => eprintln!("acceld: {who}: failed: {e}"),
            }
            r
        })
        .await
        .map_err(|e| Status::internal(format!("the request's task failed: {e}")))?
        .map_err(|e| error_status(&e))
}

fn u16_arg(v: u32, what: &str) -> Result<u16> {
    u16::try_from(v).map_err(|_| Error::Invalid(format!("{what} {v}: out of range")))
}

/// A message's spec, each unset field taken from `base` (a resize), or required (a create).
fn spec_of(m: &v1::VfSpec, base: Option<&VfInfo>) -> Result<VfSpec> {
    let need = |w: &str| Error::Invalid(format!("{w} is required with explicit sizing"));
    let engines = match (m.engines, base) {
        (Some(e), _) => u16_arg(e, "engines")?,
        (None, Some(b)) => b.engine_mask.get().count_ones() as u16,
        (None, None) => return Err(need("engines")),
    };
    let mem = match (m.mem_granules, base) {
        (Some(g), _) => {
            u32::try_from(g).map_err(|_| Error::Invalid("mem_granules out of range".into()))?
        }
        (None, Some(b)) => b.mem_granules.get(),
        (None, None) => return Err(need("memory")),
    };
    let queues = match (m.queues, base) {
        (Some(q), _) => u16_arg(q, "queues")?,
        (None, Some(b)) => b.queue_count.get(),
        (None, None) => return Err(need("queues")),
    };
    let vectors = match (m.vectors, base) {
        (Some(v), _) => u16_arg(v, "vectors")?,
        (None, Some(b)) => b.vector_count.get(),
        (None, None) => queues.max(1),
    };
    let weight = match (m.weight, base) {
        (Some(w), _) => u16_arg(w, "weight")?,
        (None, Some(b)) => b.weight.get(),
        (None, None) => 0,
    };
    if engines == 0 || queues == 0 || vectors == 0 || mem == 0 {
        return Err(Error::Invalid(
            "engines, memory, queues and vectors: at least 1 each".into(),
        ));
    }
    if weight > MAX_WEIGHT {
        return Err(Error::Invalid(format!(
            "weight {weight}: from 1 to {MAX_WEIGHT}"
        )));
    }
    Ok(VfSpec::new(engines, mem, queues, vectors, weight))
}

/// A read shared with concurrent identical ones (never one older than the request: see
/// [`crate::coalesce`]); its error as the device's, by exit code and message.
async fn coalesced<T, F, Fut>(c: &crate::coalesce::Coalesced<T>, read: F) -> Result<T>
where
    T: Clone,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    c.get(|| async { read().await.map_err(|e| (e.exit_code(), e.to_string())) })
        .await
        .map_err(|(code, message)| Error::Daemon { code, message })
}

fn vf_list(vfs: &[VfInfo], shift: u8) -> v1::VfList {
    v1::VfList {
        vfs: vfs.iter().map(convert::vf_info).collect(),
        granule_shift: shift.into(),
    }
}

/// After a change to a VF's resources: they are what users asked for now.
async fn record(d: &Managed, a: &Accel, notes: &mut Vec<String>) {
    if let Err(e) = d.record_layout(a).await {
        notes.push(format!("acceld could not record the new layout: {e}"));
    }
    if let Some(e) = d
        .health
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .save_error
        .clone()
    {
        notes.push(format!(
            "acceld could not save the desired state ({e}): it is kept in memory, and lost if \
             the daemon restarts"
        ));
    }
}

#[tonic::async_trait]
impl Accelvirt for Service {
    async fn list_devices(
        &self,
        req: Request<v1::ListDevicesRequest>,
    ) -> Reply<v1::ListDevicesResponse> {
        self.admit(&req)?;
        Ok(Response::new(v1::ListDevicesResponse {
            devices: self
                .devices
                .iter()
                .map(|d| v1::Device {
                    name: d.name.clone(),
                    transport: d.transport_kind().into(),
                    describe: d
                        .accel()
                        .map(|a| a.transport().describe())
                        .unwrap_or_default(),
                    online: d.accel().is_some(),
                })
                .collect(),
        }))
    }

    async fn get_device_info(
        &self,
        req: Request<v1::DeviceRequest>,
    ) -> Reply<v1::DeviceInfoResponse> {
        self.admit(&req)?;
        let d = self.device(&req.get_ref().device)?;
        let r = on_device(&d, |d, a| {
            Box::pin(async move {
                coalesced(&d.info_reads, || async move {
                    let info = a.device_info().await?;
                    let free = a.free_resources().await?;
                    let (st, code) = a.health()?;
                    let caps = DevCaps::from_bits_truncate(info.caps.get());
                    let slots = if caps.contains(DevCaps::FW_UPDATE) {
                        Some(a.slots().await?)
                    } else {
                        None
                    };
                    Ok(v1::DeviceInfoResponse {
                        describe: a.transport().describe(),
                        info: Some(convert::device_info(&info)),
                        free: Some(convert::free(&free)),
                        dev_status: st.bits(),
                        fault_code: code,
                        has_slots: slots.is_some(),
                        slots: slots
                            .map(|s| s.iter().map(host_driver::daemon::slot_msg).collect())
                            .unwrap_or_default(),
                    })
                })
                .await
            })
        })
        .await?;
        Ok(Response::new(r))
    }

    async fn list_vfs(&self, req: Request<v1::DeviceRequest>) -> Reply<v1::VfList> {
        self.admit(&req)?;
        let d = self.device(&req.get_ref().device)?;
        let r = on_device(&d, |d, a| {
            Box::pin(async move {
                coalesced(&d.vf_reads, || async move {
                    Ok(vf_list(&a.vfs().await?, a.granule_shift()))
                })
                .await
            })
        })
        .await?;
        Ok(Response::new(r))
    }

    async fn get_vf(&self, req: Request<v1::VfRequest>) -> Reply<v1::VfDetail> {
        self.admit(&req)?;
        let d = self.device(&req.get_ref().device)?;
        let vf = req.get_ref().vf;
        let r = on_device(&d, move |_, a| {
            Box::pin(async move {
                let vf = u16_arg(vf, "VF")?;
                let info = a.vf(vf).await?;
                Ok(v1::VfDetail {
                    info: Some(convert::vf_info(&info)),
                    handoff: Some(handoff_msg(&a.handoff(vf)?)),
                    granule_shift: a.granule_shift().into(),
                })
            })
        })
        .await?;
        Ok(Response::new(r))
    }

    async fn create_vfs(&self, req: Request<v1::CreateVfsRequest>) -> Reply<v1::CreateVfsResponse> {
        let peer = self.admit(&req)?;
        let d = self.device(&req.get_ref().device)?;
        let m = req.into_inner();
        let what = format!("create-vf --count {}", m.count);
        let r = change(&d, &peer, what, move |d, a| {
            Box::pin(async move {
                if !m.bind.is_empty() && m.bind != "vfio-pci" {
                    return Err(Error::Invalid(format!(
                        "--bind {}: only vfio-pci is supported",
                        m.bind
                    )));
                }
                let count = u16_arg(m.count, "count")?;
                if count == 0 {
                    return Err(Error::Invalid("--count 0: create at least one VF".into()));
                }
                let spec = match &m.spec {
                    None => CreateSpec::Equal,
                    Some(s) => CreateSpec::Uniform(spec_of(s, None)?),
                };
                let _m = d.mutate.lock().await;
                let made = a.create_vfs(count, spec).await;
                let mut notes = a.take_notes();
                // Bound before the layout is recorded: the record says so, and a restore
                // binds them again.
                let bound = match (&made, m.bind.is_empty()) {
                    (Ok(made), false) => made.iter().try_for_each(|v| a.bind_vfio(v.vf.get())),
                    _ => Ok(()),
                };
                // Whatever the create left (it may have got part of the way), the desired
                // state is what the device holds now.
                record(&d, &a, &mut notes).await;
                for n in &notes {
                    eprintln!("acceld: {}: {n}", d.name);
                }
                let made = made?;
                bound?;
                let mut handoffs = Vec::new();
                for v in &made {
                    handoffs.push(handoff_msg(&a.handoff(v.vf.get())?));
                }
                Ok(v1::CreateVfsResponse {
                    vfs: made.iter().map(convert::vf_info).collect(),
                    handoffs,
                    granule_shift: a.granule_shift().into(),
                    notes,
                })
            })
        })
        .await;
        Ok(Response::new(r?))
    }

    async fn destroy_vfs(
        &self,
        req: Request<v1::DestroyVfsRequest>,
    ) -> Reply<v1::DestroyVfsResponse> {
        let peer = self.admit(&req)?;
        let d = self.device(&req.get_ref().device)?;
        let m = req.into_inner();
        let what = if m.all {
            "destroy-vf --all".to_string()
        } else {
            format!("destroy-vf {}", m.vf)
        };
        let r = change(&d, &peer, what, move |d, a| {
            Box::pin(async move {
                let _m = d.mutate.lock().await;
                let n = if m.all {
                    a.destroy_all().await
                } else {
                    a.destroy_vf(u16_arg(m.vf, "VF")?).await.map(|_| 1)
                };
                let mut notes = a.take_notes();
                record(&d, &a, &mut notes).await;
                for n in &notes {
                    eprintln!("acceld: {}: {n}", d.name);
                }
                let n = n?;
                Ok(v1::DestroyVfsResponse {
                    destroyed: n.into(),
                    notes,
                })
            })
        })
        .await;
        Ok(Response::new(r?))
    }

    async fn resize_vf(&self, req: Request<v1::ResizeVfRequest>) -> Reply<v1::VfList> {
        let peer = self.admit(&req)?;
        let d = self.device(&req.get_ref().device)?;
        let m = req.into_inner();
        let what = format!("vf resize {}", m.vf);
        let r = change(&d, &peer, what, move |d, a| {
            Box::pin(async move {
                let vf = u16_arg(m.vf, "VF")?;
                let _m = d.mutate.lock().await;
                let cur = a.vf(vf).await?;
                let spec = spec_of(&m.spec.unwrap_or_default(), Some(&cur))?;
                let info = a.resize(vf, spec).await;
                record(&d, &a, &mut Vec::new()).await;
                let info = info?;
                Ok(vf_list(&[info], a.granule_shift()))
            })
        })
        .await;
        Ok(Response::new(r?))
    }

    async fn reset_vf(&self, req: Request<v1::VfRequest>) -> Reply<v1::VfList> {
        let peer = self.admit(&req)?;
        let d = self.device(&req.get_ref().device)?;
        let vf = req.get_ref().vf;
        let r = change(&d, &peer, format!("vf reset {vf}"), move |_, a| {
            Box::pin(async move {
                let info = a.reset(u16_arg(vf, "VF")?).await?;
                Ok(vf_list(&[info], a.granule_shift()))
            })
        })
        .await;
        Ok(Response::new(r?))
    }

    async fn set_qos(&self, req: Request<v1::SetQosRequest>) -> Reply<v1::VfList> {
        let peer = self.admit(&req)?;
        let d = self.device(&req.get_ref().device)?;
        let m = req.into_inner();
        let what = format!("vf qos {} --weight {}", m.vf, m.weight);
        let r = change(&d, &peer, what, move |d, a| {
            Box::pin(async move {
                let weight = u16_arg(m.weight, "--weight")?;
                if !(1..=MAX_WEIGHT).contains(&weight) {
                    return Err(Error::Invalid(format!(
                        "--weight {weight}: from 1 to {MAX_WEIGHT}"
                    )));
                }
                let _m = d.mutate.lock().await;
                let info = a.set_qos(u16_arg(m.vf, "VF")?, weight).await;
                record(&d, &a, &mut Vec::new()).await;
                let info = info?;
                Ok(vf_list(&[info], a.granule_shift()))
            })
        })
        .await;
        Ok(Response::new(r?))
    }

    async fn get_stats(&self, req: Request<v1::DeviceRequest>) -> Reply<v1::StatsResponse> {
        self.admit(&req)?;
        let d = self.device(&req.get_ref().device)?;
        let r = on_device(&d, |d, a| {
            Box::pin(async move {
                coalesced(&d.stats_reads, || async move {
                    let (dev, vfs) = a.stats().await?;
                    Ok(v1::StatsResponse {
                        device: Some(convert::device_stats(&dev)),
                        vfs: vfs.iter().map(convert::vf_stats).collect(),
                    })
                })
                .await
            })
        })
        .await?;
        Ok(Response::new(r))
    }

    async fn flash(&self, req: Request<v1::FlashRequest>) -> Reply<v1::FlashResponse> {
        let peer = self.admit(&req)?;
        let d = self.device(&req.get_ref().device)?;
        let m = req.into_inner();
        let what = format!(
            "flash ({} bytes){}",
            m.image.len(),
            if m.activate { " --activate" } else { "" }
        );
        let r = change(&d, &peer, what, move |d, a| {
            Box::pin(async move {
                let header = fw_image::header(&m.image)
                    .map_err(|e| Error::Invalid(format!("not a usable image: {e}")))?;
                // One download at a time: two would take turns on one slot.
                let _one = d.flashing.lock().await;
                let start = Instant::now();
                let f = a.flash(&m.image, m.allow_downgrade, &mut |_, _| {}).await?;
                let seconds = start.elapsed().as_secs_f64();
                let mut resp = v1::FlashResponse {
                    slot: f.slot.into(),
                    resumed_from: f.resumed_from.into(),
                    seconds,
                    ..Default::default()
                };
                if m.activate {
                    let _m = d.mutate.lock().await;
                    let ((v, b), n) = d.reset_and_restore(&a, "a firmware update").await?;
                    if b != header.build_id.get() || v != header.fw_version.get() {
                        return Err(Error::ImageRejected(
                            "the new image did not become ready, and the device rolled back to \
                             the image it ran before (see `accelctl info`)",
                        ));
                    }
                    resp.activated = true;
                    resp.fw_version = v;
                    resp.build_id = b;
                    resp.restored_vfs = n as u32;
                }
                Ok(resp)
            })
        })
        .await;
        Ok(Response::new(r?))
    }

    async fn reset_firmware(
        &self,
        req: Request<v1::ResetFirmwareRequest>,
    ) -> Reply<v1::ResetFirmwareResponse> {
        let peer = self.admit(&req)?;
        let d = self.device(&req.get_ref().device)?;
        let force = req.get_ref().force;
        let what = if force {
            "fw-reset --force"
        } else {
            "fw-reset"
        };
        let r = change(&d, &peer, what.to_string(), move |d, a| {
            Box::pin(async move {
                let _m = d.mutate.lock().await;
                let vfs = match a.device_info().await {
                    Ok(i) => i.vfs_in_use.get(),
                    // A faulted firmware answers nothing; a hung one nothing in time. The
                    // reset is the way out, and --force asks for it whatever the VFs.
                    Err(Error::FirmwareFaulted { .. }) => 0,
                    Err(_) if force => 0,
                    Err(e) => return Err(e),
                };
                if vfs != 0 && !force {
                    return Err(Error::Conflict(format!(
                        "the reset takes down every VF ({vfs} now) and SR-IOV with them (acceld \
                         restores them after): give --force, or destroy them first \
                         (`accelctl destroy-vf --all`)"
                    )));
                }
                let ((v, b), n) = d.reset_and_restore(&a, "fw-reset").await?;
                Ok(v1::ResetFirmwareResponse {
                    fw_version: v,
                    build_id: b,
                    vfs_before: vfs.into(),
                    restored_vfs: n as u32,
                })
            })
        })
        .await;
        Ok(Response::new(r?))
    }

    async fn read_log(&self, req: Request<v1::ReadLogRequest>) -> Reply<v1::ReadLogResponse> {
        self.admit(&req)?;
        let d = self.device(&req.get_ref().device)?;
        let from = req.get_ref().from;
        let r = on_device(&d, move |_, a| {
            Box::pin(async move {
                let t = a.transport();
                let (v, b) = (
                    t.read32(shared_abi::regs::pf::FW_VERSION.offset())?,
                    t.read32(shared_abi::regs::pf::FW_BUILD_ID.offset())?,
                );
                let r = a.read_log(from)?;
                Ok(v1::ReadLogResponse {
                    next: r.next,
                    bytes: r.bytes,
                    lost: r.lost,
                    fw_version: v,
                    build_id: b,
                })
            })
        })
        .await?;
        Ok(Response::new(r))
    }

    async fn get_health(&self, req: Request<v1::DeviceRequest>) -> Reply<v1::HealthResponse> {
        self.admit(&req)?;
        let d = self.device(&req.get_ref().device)?;
        // The ring's backlog as it is now, when the device answers (a register, not a command).
        let backlog = d.accel().and_then(|a| {
            let t = a.transport();
            let p = t.read32(shared_abi::regs::pf::EVQ_PROD.offset()).ok()?;
            let c = t.read32(shared_abi::regs::pf::EVQ_CONS.offset()).ok()?;
            Some(p.wrapping_sub(c))
        });
        let h = d.health.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Response::new(v1::HealthResponse {
            device: d.name.clone(),
            online: h.online,
            dev_status: h.dev_status,
            fault_code: h.fault_code,
            heartbeat_ok: h.heartbeat_ok,
            heartbeat_age_seconds: h.heartbeat_age().as_secs_f64(),
            event_backlog: backlog.unwrap_or(h.backlog),
            events_dropped: h.dropped,
            vfs: h
                .rates()
                .into_iter()
                .map(|(vf, faults, flrs, fr, rr)| v1::VfHealth {
                    vf: vf.into(),
                    faults,
                    flrs,
                    faults_per_minute: fr,
                    flrs_per_minute: rr,
                })
                .collect(),
            drift: !h.drift.is_empty(),
            drift_details: h.drift.clone(),
            restores: h.restores,
            problems: h.problems(),
        }))
    }

    async fn list_events(&self, req: Request<v1::EventsRequest>) -> Reply<v1::EventsResponse> {
        self.admit(&req)?;
        let dev = &req.get_ref().device;
        let name = if dev.is_empty() {
            String::new()
        } else {
            self.device(dev)?.name.clone()
        };
        Ok(Response::new(v1::EventsResponse {
            events: self.events.kept(&name),
        }))
    }

    type WatchEventsStream =
        Pin<Box<dyn tokio_stream::Stream<Item = std::result::Result<v1::Event, Status>> + Send>>;

    async fn watch_events(
        &self,
        req: Request<v1::EventsRequest>,
    ) -> Reply<Self::WatchEventsStream> {
        self.admit(&req)?;
        let dev = &req.get_ref().device;
        let name = if dev.is_empty() {
            String::new()
        } else {
            self.device(dev)?.name.clone()
        };
        let (kept, rx) = self.events.watch(&name);
        use tokio_stream::StreamExt;
        let live = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(move |r| match r {
            Ok(e) if name.is_empty() || e.device == name => Some(Ok(e)),
            Ok(_) => None,
            // Fell behind the fan-out: say how much was missed, and go on.
            Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                Some(Ok(v1::Event {
                    kind: "missed".into(),
                    data: n,
                    message: format!("this watcher fell behind: {n} events not delivered"),
                    ..Default::default()
                }))
            }
        });
        // A stopping daemon ends the stream (its requests in flight are what it waits for).
        let mut stop = self.stop.clone();
        let stopping = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let s = tokio_stream::iter(kept.into_iter().map(Ok)).chain(live);
        // Forwarded until the daemon stops or the watcher goes away, whichever is first.
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut s = std::pin::pin!(s);
            let mut stopping = std::pin::pin!(stopping);
            loop {
                tokio::select! {
                    _ = &mut stopping => break,
                    _ = tx.closed() => break,
                    item = s.next() => match item {
                        Some(e) => {
                            if tx.send(e).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// SIGHUP: each device's state file re-read and the device reconciled, under its mutation
/// lock, all devices at once, each bounded by [`RELOAD_TIMEOUT`].
pub async fn reload_all(devices: &[Arc<Managed>]) {
    let tasks: Vec<_> = devices
        .iter()
        .map(|d| {
            let d2 = d.clone();
            let h = d.runtime().spawn(async move {
                let _m = d2.mutate.lock().await;
                d2.reload()?;
                let Some(a) = d2.accel() else { return Ok(None) };
                d2.reconcile_locked(&a, "a configuration reload", false)
                    .await
                    .map(Some)
                    .map_err(|e| e.to_string())
            });
            (d.name.clone(), h)
        })
        .collect();
    for (name, h) in tasks {
        match tokio::time::timeout(RELOAD_TIMEOUT, h).await {
            Ok(Ok(Ok(Some(Outcome::Drift(diff))))) => {
                eprintln!("acceld: {name}: drift after reload: {}", diff.join("; "))
            }
            Ok(Ok(Err(e))) => eprintln!("acceld: {name}: reload: {e}"),
            Err(_) => eprintln!("acceld: {name}: reload still running after {RELOAD_TIMEOUT:?}"),
            _ => {}
        }
    }
}

/// How long a reload waits for one device.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a graceful stop waits for requests in flight.
pub const DRAIN: Duration = Duration::from_secs(10);
