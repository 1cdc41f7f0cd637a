//! Where a management command goes: to acceld when a daemon owns the device (it holds the
//! PF open; over kernel VFIO an open of our own would reset the PF and take every VF with
//! it), or to the device itself. Both return the same structures, so every command prints
//! the same output, JSON and exit codes either way.

use accelvirt_api::{convert, v1};
use host_driver::daemon::{self, reply, Client};
use host_driver::error::{Error, Result};
use host_driver::update::Slot;
use host_driver::{Accel, CreateSpec, VfHandoff};
use shared_abi::regs::{DevCaps, DevStatus};
use shared_abi::resources::{DeviceInfo, DeviceStats, FreeResources, VfInfo, VfSpec, VfStats};
use std::time::Duration;

/// A management path to one device.
#[derive(Debug)]
pub enum Backend {
    /// Opened here.
    Direct(Accel),
    /// Through acceld, which owns `device`.
    Daemon {
        /// The client.
        c: Client,
        /// The device's name in the daemon.
        device: String,
        /// Per-request timeout.
        timeout: Duration,
    },
}

/// What `info` prints.
pub struct Info {
    pub describe: String,
    pub info: DeviceInfo,
    pub free: FreeResources,
    pub health: (DevStatus, u32),
    pub slots: Option<[Slot; 2]>,
}

/// What a create made.
pub struct Created {
    pub vfs: Vec<VfInfo>,
    pub handoffs: Vec<VfHandoff>,
    pub notes: Vec<String>,
}

/// The resources a resize changes (the rest keep their size).
#[derive(Debug, Default, Clone, Copy)]
pub struct Change {
    pub engines: Option<u16>,
    pub mem_granules: Option<u32>,
    pub queues: Option<u16>,
    pub vectors: Option<u16>,
    pub weight: Option<u16>,
}

fn bad(e: convert::OutOfRange) -> Error {
    Error::Protocol(format!("acceld sent a {e}"))
}

fn spec_msg(s: &VfSpec) -> v1::VfSpec {
    v1::VfSpec {
        engines: Some(s.engines.get().into()),
        mem_granules: Some(s.mem_granules.get().into()),
        queues: Some(s.queues.get().into()),
        vectors: Some(s.vectors.get().into()),
        weight: (s.weight.get() != 0).then(|| s.weight.get().into()),
    }
}

fn vfs_from(l: &v1::VfList) -> Result<Vec<VfInfo>> {
    l.vfs
        .iter()
        .map(|v| convert::vf_info_from(v).map_err(bad))
        .collect()
}

impl Backend {
    fn req<T>(&self, m: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(m);
        if let Backend::Daemon { timeout, .. } = self {
            // The daemon's own work under one request (a restore after a reset) can take
            // longer than one command: room for that, and then a deadline.
            r.set_timeout(*timeout * 4 + Duration::from_secs(30));
        }
        r
    }

    fn dev(&self) -> String {
        match self {
            Backend::Daemon { device, .. } => device.clone(),
            Backend::Direct(_) => String::new(),
        }
    }

    fn client(&self) -> Option<v1::accelvirt_client::AccelvirtClient<tonic::transport::Channel>> {
        match self {
            Backend::Daemon { c, .. } => Some(c.api.clone()),
            Backend::Direct(_) => None,
        }
    }

    /// The device handle, where the command needs one (direct only).
    pub fn direct(&self) -> Option<&Accel> {
        match self {
            Backend::Direct(a) => Some(a),
            Backend::Daemon { .. } => None,
        }
    }

    /// Identity, free resources, health and flash slots.
    pub async fn info(&self) -> Result<Info> {
        if let Backend::Direct(a) = self {
            let info = a.device_info().await?;
            let free = a.free_resources().await?;
            let caps = DevCaps::from_bits_truncate(info.caps.get());
            let slots = if caps.contains(DevCaps::FW_UPDATE) {
                Some(a.slots().await?)
            } else {
                None
            };
            return Ok(Info {
                describe: a.transport().describe(),
                info,
                free,
                health: a.health()?,
                slots,
            });
        }
        let mut c = self.client().ok_or(Error::BadResponse("no client"))?;
        let r = reply(
            c.get_device_info(self.req(v1::DeviceRequest { device: self.dev() }))
                .await,
        )?;
        let missing = || Error::Protocol("acceld sent device info without its fields".into());
        let slots = if r.has_slots {
            let s: Vec<Slot> = r
                .slots
                .iter()
                .map(daemon::slot_from)
                .collect::<Result<_>>()?;
            Some(
                <[Slot; 2]>::try_from(s)
                    .map_err(|_| Error::Protocol("acceld sent other than two slots".into()))?,
            )
        } else {
            None
        };
        Ok(Info {
            describe: r.describe,
            info: convert::device_info_from(r.info.as_ref().ok_or_else(missing)?).map_err(bad)?,
            free: convert::free_from(r.free.as_ref().ok_or_else(missing)?).map_err(bad)?,
            health: (DevStatus::from_bits_retain(r.dev_status), r.fault_code),
            slots,
        })
    }

    /// log2 of the granule and TotalVFs (what sizing a create needs).
    pub async fn board(&self) -> Result<(u8, u16)> {
        match self {
            Backend::Direct(a) => Ok((a.granule_shift(), a.device_info().await?.total_vfs.get())),
            Backend::Daemon { .. } => {
                let i = self.info().await?;
                Ok((i.info.granule_shift, i.info.total_vfs.get()))
            }
        }
    }

    /// log2 of the granule (through the daemon: from a VF list, one command).
    pub async fn granule_shift(&self) -> Result<u8> {
        match self {
            Backend::Direct(a) => Ok(a.granule_shift()),
            Backend::Daemon { .. } => Ok(self.vfs().await?.1),
        }
    }

    /// Every VF.
    pub async fn vfs(&self) -> Result<(Vec<VfInfo>, u8)> {
        if let Backend::Direct(a) = self {
            return Ok((a.vfs().await?, a.granule_shift()));
        }
        let mut c = self.client().ok_or(Error::BadResponse("no client"))?;
        let r = reply(
            c.list_vfs(self.req(v1::DeviceRequest { device: self.dev() }))
                .await,
        )?;
        Ok((vfs_from(&r)?, r.granule_shift as u8))
    }

    /// One VF and its hand-off.
    pub async fn vf(&self, id: u16) -> Result<(VfInfo, VfHandoff, u8)> {
        if let Backend::Direct(a) = self {
            let info = a.vf(id).await?;
            return Ok((info, a.handoff(id)?, a.granule_shift()));
        }
        let mut c = self.client().ok_or(Error::BadResponse("no client"))?;
        let r = reply(
            c.get_vf(self.req(v1::VfRequest {
                device: self.dev(),
                vf: id.into(),
            }))
            .await,
        )?;
        let missing = || Error::Protocol("acceld sent a VF without its fields".into());
        Ok((
            convert::vf_info_from(r.info.as_ref().ok_or_else(missing)?).map_err(bad)?,
            daemon::handoff_from(r.handoff.as_ref().ok_or_else(missing)?)?,
            r.granule_shift as u8,
        ))
    }

    /// Creates VFs (bound to `bind` where given).
    pub async fn create(
        &self,
        count: u16,
        spec: CreateSpec,
        bind: Option<&str>,
    ) -> Result<Created> {
        if let Backend::Direct(a) = self {
            let made = a.create_vfs(count, spec).await;
            let notes = a.take_notes();
            for n in &notes {
                eprintln!("accelctl: {n}");
            }
            let made = made?;
            let mut handoffs = Vec::new();
            for v in &made {
                if bind.is_some() {
                    a.bind_vfio(v.vf.get())?;
                }
                handoffs.push(a.handoff(v.vf.get())?);
            }
            return Ok(Created {
                vfs: made,
                handoffs,
                notes: Vec::new(),
            });
        }
        let mut c = self.client().ok_or(Error::BadResponse("no client"))?;
        let r = reply(
            c.create_vfs(self.req(v1::CreateVfsRequest {
                device: self.dev(),
                count: count.into(),
                spec: match spec {
                    CreateSpec::Equal => None,
                    CreateSpec::Uniform(s) => Some(spec_msg(&s)),
                },
                bind: bind.unwrap_or_default().to_string(),
            }))
            .await,
        )?;
        Ok(Created {
            vfs: r
                .vfs
                .iter()
                .map(|v| convert::vf_info_from(v).map_err(bad))
                .collect::<Result<_>>()?,
            handoffs: r
                .handoffs
                .iter()
                .map(daemon::handoff_from)
                .collect::<Result<_>>()?,
            notes: r.notes,
        })
    }

    /// Destroys one VF or all; how many, and the notes.
    pub async fn destroy(&self, id: Option<u16>) -> Result<(u16, Vec<String>)> {
        if let Backend::Direct(a) = self {
            let n = match id {
                None => a.destroy_all().await,
                Some(id) => a.destroy_vf(id).await.map(|_| 1),
            };
            let notes = a.take_notes();
            if n.is_err() {
                // What was finished before the failure is still worth saying.
                for m in &notes {
                    eprintln!("accelctl: {m}");
                }
            }
            return n.map(|n| (n, notes));
        }
        let mut c = self.client().ok_or(Error::BadResponse("no client"))?;
        let r = reply(
            c.destroy_vfs(self.req(v1::DestroyVfsRequest {
                device: self.dev(),
                vf: id.unwrap_or(0).into(),
                all: id.is_none(),
            }))
            .await,
        )?;
        Ok((
            u16::try_from(r.destroyed).map_err(|_| Error::Protocol("count out of range".into()))?,
            r.notes,
        ))
    }

    /// Resizes a VF: the given resources change, the rest keep their size.
    pub async fn resize(&self, id: u16, ch: Change) -> Result<VfInfo> {
        if let Backend::Direct(a) = self {
            let cur = a.vf(id).await?;
            let spec = VfSpec::new(
                ch.engines
                    .unwrap_or(cur.engine_mask.get().count_ones() as u16),
                ch.mem_granules.unwrap_or(cur.mem_granules.get()),
                ch.queues.unwrap_or(cur.queue_count.get()),
                ch.vectors.unwrap_or(cur.vector_count.get()),
                ch.weight.unwrap_or(0),
            );
            return a.resize(id, spec).await;
        }
        let mut c = self.client().ok_or(Error::BadResponse("no client"))?;
        let r = reply(
            c.resize_vf(self.req(v1::ResizeVfRequest {
                device: self.dev(),
                vf: id.into(),
                spec: Some(v1::VfSpec {
                    engines: ch.engines.map(Into::into),
                    mem_granules: ch.mem_granules.map(Into::into),
                    queues: ch.queues.map(Into::into),
                    vectors: ch.vectors.map(Into::into),
                    weight: ch.weight.map(Into::into),
                }),
            }))
            .await,
        )?;
        vfs_from(&r)?
            .pop()
            .ok_or_else(|| Error::Protocol("acceld sent no VF".into()))
    }

    /// Function level reset of a VF.
    pub async fn reset(&self, id: u16) -> Result<VfInfo> {
        if let Backend::Direct(a) = self {
            return a.reset(id).await;
        }
        let mut c = self.client().ok_or(Error::BadResponse("no client"))?;
        let r = reply(
            c.reset_vf(self.req(v1::VfRequest {
                device: self.dev(),
                vf: id.into(),
            }))
            .await,
        )?;
        vfs_from(&r)?
            .pop()
            .ok_or_else(|| Error::Protocol("acceld sent no VF".into()))
    }

    /// Sets a VF's weight.
    pub async fn set_qos(&self, id: u16, weight: u16) -> Result<VfInfo> {
        if let Backend::Direct(a) = self {
            return a.set_qos(id, weight).await;
        }
        let mut c = self.client().ok_or(Error::BadResponse("no client"))?;
        let r = reply(
            c.set_qos(self.req(v1::SetQosRequest {
                device: self.dev(),
                vf: id.into(),
                weight: weight.into(),
            }))
            .await,
        )?;
        vfs_from(&r)?
            .pop()
            .ok_or_else(|| Error::Protocol("acceld sent no VF".into()))
    }

    /// Counters.
    pub async fn stats(&self) -> Result<(DeviceStats, Vec<VfStats>)> {
        if let Backend::Direct(a) = self {
            return a.stats().await;
        }
        let mut c = self.client().ok_or(Error::BadResponse("no client"))?;
        let r = reply(
            c.get_stats(self.req(v1::DeviceRequest { device: self.dev() }))
                .await,
        )?;
        let d = convert::device_stats_from(
            r.device
                .as_ref()
                .ok_or_else(|| Error::Protocol("acceld sent stats without the device's".into()))?,
        )
        .map_err(bad)?;
        let v = r
            .vfs
            .iter()
            .map(|v| convert::vf_stats_from(v).map_err(bad))
            .collect::<Result<_>>()?;
        Ok((d, v))
    }

    /// Through the daemon: flashes, and with `activate` resets into the image and restores
    /// the VFs. Returns the slot, where it resumed, the seconds it took, the running
    /// version and build id after an activation, and how many VFs came back.
    pub async fn flash_via_daemon(
        &self,
        image: &[u8],
        activate: bool,
        allow_downgrade: bool,
    ) -> Result<v1::FlashResponse> {
        let mut c = self.client().ok_or(Error::BadResponse("no client"))?;
        reply(
            c.flash(self.req(v1::FlashRequest {
                device: self.dev(),
                image: image.to_vec(),
                activate,
                allow_downgrade,
            }))
            .await,
        )
    }

    /// Through the daemon: resets the device and restores its VFs.
    pub async fn fw_reset_via_daemon(&self, force: bool) -> Result<v1::ResetFirmwareResponse> {
        let mut c = self.client().ok_or(Error::BadResponse("no client"))?;
        reply(
            c.reset_firmware(self.req(v1::ResetFirmwareRequest {
                device: self.dev(),
                force,
            }))
            .await,
        )
    }

    /// Log bytes from `from`, and the running version and build id.
    pub async fn read_log(
        &self,
        from: Option<u32>,
    ) -> Result<(host_driver::logs::LogRead, u32, u32)> {
        if let Backend::Direct(a) = self {
            let t = a.transport();
            let v = t.read32(shared_abi::regs::pf::FW_VERSION.offset())?;
            let b = t.read32(shared_abi::regs::pf::FW_BUILD_ID.offset())?;
            return Ok((a.read_log(from)?, v, b));
        }
        let mut c = self.client().ok_or(Error::BadResponse("no client"))?;
        let r = reply(
            c.read_log(self.req(v1::ReadLogRequest {
                device: self.dev(),
                from,
            }))
            .await,
        )?;
        Ok((
            host_driver::logs::LogRead {
                next: r.next,
                bytes: r.bytes,
                lost: r.lost,
            },
            r.fw_version,
            r.build_id,
        ))
    }

    /// The daemon's client, for the commands only it serves (health, events).
    pub fn daemon(
        &self,
    ) -> Option<(
        v1::accelvirt_client::AccelvirtClient<tonic::transport::Channel>,
        String,
    )> {
        self.client().map(|c| (c, self.dev()))
    }
}

/// Picks the path for a command on `device`: acceld if one answers and owns the device
/// (or must: --acceld / $ACCELD_SOCKET given), else the device itself.
pub async fn open(
    device: Option<&str>,
    acceld: Option<&std::path::Path>,
    direct: bool,
    timeout: Duration,
) -> Result<Backend> {
    if !direct {
        if let Some((sock, explicit)) = daemon::socket(acceld) {
            match daemon_for(&sock, device, timeout).await {
                Ok(Some(b)) => return Ok(b),
                Ok(None) if explicit => {
                    return Err(Error::NotOurDevice(format!(
                        "acceld at {} does not own {} (give --direct to open it here)",
                        sock.display(),
                        device.unwrap_or("any device")
                    )))
                }
                // A daemon that answers and does not own this device: it is ours to open.
                Ok(None) => {}
                Err(e @ Error::PermissionDenied(_)) => return Err(e),
                Err(e) if explicit => return Err(e),
                // The default socket is there and nothing answers: the daemon may be
                // restarting. Opening the device here could reset it (kernel VFIO resets a
                // PF at each open, and the reset destroys every VF), so say so instead.
                Err(e) => {
                    return Err(Error::Daemon {
                        code: 5,
                        message: format!(
                            "acceld's socket {} is there but the daemon does not answer ({e}); \
                             it may be restarting: retry, or give --direct to open the device \
                             here",
                            sock.display()
                        ),
                    })
                }
            }
        }
    }
    let Some(d) = device else {
        return Err(Error::Invalid(
            "no device given: use -d DEV or ACCEL_DEVICE (see `accelctl list`)".into(),
        ));
    };
    // --timeout-ms bounds every wait on the device, the socket's as well as the firmware's.
    let a = Accel::open_with_timeout(&host_driver::DeviceAddr::parse(d)?, timeout)?;
    // Whatever the command, a create or destroy a killed accelctl left half done is finished
    // first, so that no command shows or acts on the half-made state.
    let finished = a.finish_interrupted().await;
    for n in a.take_notes() {
        eprintln!("accelctl: {n}");
    }
    finished?;
    Ok(Backend::Direct(a))
}

/// The daemon for commands that may span every device it owns (`events`): with no device
/// named, all of them.
pub async fn open_all(
    device: Option<&str>,
    acceld: Option<&std::path::Path>,
    direct: bool,
    timeout: Duration,
) -> Result<Backend> {
    if device.is_none() && !direct {
        if let Some((sock, _)) = daemon::socket(acceld) {
            let c = Client::connect(&sock).await?;
            return Ok(Backend::Daemon {
                c,
                device: String::new(),
                timeout,
            });
        }
    }
    open(device, acceld, direct, timeout).await
}

async fn daemon_for(
    sock: &std::path::Path,
    device: Option<&str>,
    timeout: Duration,
) -> Result<Option<Backend>> {
    let c = Client::connect(sock).await?;
    let mut api = c.api.clone();
    let mut r = tonic::Request::new(v1::ListDevicesRequest {});
    r.set_timeout(timeout.max(Duration::from_secs(1)));
    let list = reply(api.list_devices(r).await)?;
    let names: Vec<String> = list.devices.into_iter().map(|d| d.name).collect();
    let owned = match device {
        None if names.len() == 1 => Some(names[0].clone()),
        None => None,
        Some(d) => {
            // The daemon names its devices canonically.
            let want = host_driver::transport::canonical_name(d);
            names.into_iter().find(|n| n == d || *n == want)
        }
    };
    Ok(owned.map(|device| Backend::Daemon { c, device, timeout }))
}
