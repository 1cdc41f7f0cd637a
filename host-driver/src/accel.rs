//! The driver proper: management operations on one PF, SR-IOV kept in step with the VFs the
//! firmware holds, and how to hand each VF to a VM.

use crate::error::{Error, Result};
use crate::kernel::{KernelVfio, Sysfs};
use crate::mailbox::{Mailbox, DEFAULT_TIMEOUT};
use crate::transport::{DeviceAddr, Transport, VfEndpoint};
use crate::vfio_user::VfioUser;
use shared_abi::messages::{
    split_list, view, ConfigureVf, CountResp, CreateVfs, Heartbeat, HeartbeatResp, Request, SetQos,
    Sizing, Target, VfIndex,
};
use shared_abi::resources::{DeviceInfo, DeviceStats, FreeResources, VfInfo, VfSpec, VfStats};
use std::sync::Arc;
use std::time::Duration;

/// How CREATE_VFS should size VFs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateSpec {
    /// Split what is free equally.
    Equal,
    /// Every VF gets this.
    Uniform(VfSpec),
}

/// What a user needs to give VF `vf` to a VM.
#[derive(Clone, Debug, serde::Serialize)]
pub struct VfHandoff {
    /// VF index.
    pub vf: u16,
    /// Where it is.
    pub endpoint: VfEndpoint,
    /// QEMU command-line fragment.
    pub qemu: String,
    /// cloud-hypervisor fragment.
    pub cloud_hypervisor: String,
}

/// One PF.
pub struct Accel {
    t: Arc<dyn Transport>,
    mbox: Mailbox,
    granule_shift: u8,
    /// What this handle found and did beyond the command asked (an interrupted operation it
    /// finished), for the caller to tell its user.
    notes: std::sync::Mutex<Vec<String>>,
}

impl std::fmt::Debug for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accel")
            .field("device", &self.t.describe())
            .finish()
    }
}

impl Accel {
    /// Opens a device by address: a PCI address through the kernel's VFIO, a path over
    /// vfio-user (mapping the mailbox when the server offers it).
    pub fn open(addr: &DeviceAddr) -> Result<Self> {
        Self::open_with_timeout(addr, DEFAULT_TIMEOUT)
    }

    /// The same, with `timeout` for each command and for every wait on the device under it
    /// (a vfio-user socket's answers included).
    pub fn open_with_timeout(addr: &DeviceAddr, timeout: Duration) -> Result<Self> {
        let t: Arc<dyn Transport> = match addr {
            DeviceAddr::Pci(a) => Arc::new(KernelVfio::open(a, Sysfs::default())?),
            DeviceAddr::Socket(p) => Arc::new(VfioUser::connect_with(p, true, timeout)?),
        };
        Self::with_transport(t, timeout)
    }

    /// Drives a device through an already-open transport.
    pub fn with_transport(t: Arc<dyn Transport>, timeout: Duration) -> Result<Self> {
        // A device just reset (or just started) shows its identity once its firmware is up.
        let deadline = std::time::Instant::now() + timeout.min(Duration::from_secs(5));
        // A halted one will not come up by waiting (its commands say why; a reset is the way
        // back, and needs this handle).
        use shared_abi::regs::DevStatus;
        loop {
            let st =
                DevStatus::from_bits_retain(t.read32(shared_abi::regs::pf::DEV_STATUS.offset())?);
            if st.intersects(DevStatus::READY | DevStatus::HALTED)
                || std::time::Instant::now() >= deadline
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let magic = t.read32(shared_abi::regs::pf::MAGIC.offset())?;
        if magic != shared_abi::regs::PF_MAGIC {
            return Err(Error::NotOurDevice(format!(
                "{} is not an accelvirt PF (BAR0 magic {magic:#010x})",
                t.describe()
            )));
        }
        let abi = t.read32(shared_abi::regs::pf::ABI_VERSION.offset())?;
        if (abi >> 16) as u16 != shared_abi::ABI_MAJOR {
            return Err(Error::NotOurDevice(format!(
                "firmware speaks ABI {}.{}, this accelctl speaks {}.{}: update one of them",
                abi >> 16,
                abi & 0xFFFF,
                shared_abi::ABI_MAJOR,
                shared_abi::ABI_MINOR
            )));
        }
        // A register, not a command: every VF subcommand needs it to print sizes.
        let granule_shift = t.read32(shared_abi::regs::pf::BOARD_GRANULE_SHIFT.offset())? as u8;
        let mbox = Mailbox::new(t.clone(), timeout);
        Ok(Accel {
            t,
            mbox,
            granule_shift,
            notes: Default::default(),
        })
    }

    /// log2 of the device memory granule (the board's BOARD_GRANULE_SHIFT register).
    pub fn granule_shift(&self) -> u8 {
        self.granule_shift
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.t
    }

    /// The mailbox.
    pub fn mailbox(&self) -> &Mailbox {
        &self.mbox
    }

    /// The device's health: its status bits and, if it faulted, the fault code. A firmware
    /// that recorded a fault may still answer commands; this is how an operator sees it.
    pub fn health(&self) -> Result<(shared_abi::regs::DevStatus, u32)> {
        use shared_abi::regs::{pf, DevStatus};
        let st = DevStatus::from_bits_retain(self.t.read32(pf::DEV_STATUS.offset())?);
        Ok((st, self.t.read32(pf::FAULT_CODE.offset())?))
    }

    /// Identity, versions and board.
    pub async fn device_info(&self) -> Result<DeviceInfo> {
        let p = self.mbox.call(&Request::GetDeviceInfo(())).await?;
        view::<DeviceInfo>(&p)
            .copied()
            .map_err(|_| Error::BadResponse("device info size"))
    }

    /// Free resources.
    pub async fn free_resources(&self) -> Result<FreeResources> {
        let p = self.mbox.call(&Request::GetResources(())).await?;
        view::<FreeResources>(&p)
            .copied()
            .map_err(|_| Error::BadResponse("resources size"))
    }

    /// Liveness round trip.
    pub async fn heartbeat(&self, nonce: u32) -> Result<HeartbeatResp> {
        let p = self
            .mbox
            .call(&Request::Heartbeat(Heartbeat { nonce }))
            .await?;
        let r = *view::<HeartbeatResp>(&p).map_err(|_| Error::BadResponse("heartbeat size"))?;
        if r.nonce.get() != nonce {
            return Err(Error::BadResponse("heartbeat nonce mismatch"));
        }
        Ok(r)
    }

    /// Device and per-VF counters.
    pub async fn stats(&self) -> Result<(DeviceStats, Vec<VfStats>)> {
        let p = self.mbox.call(&Request::GetStats(Target::All)).await?;
        let (d, v) =
            split_list::<DeviceStats, VfStats>(&p).map_err(|_| Error::BadResponse("stats size"))?;
        Ok((*d, v.to_vec()))
    }

    /// Every VF that holds resources, in one command.
    pub async fn vfs(&self) -> Result<Vec<VfInfo>> {
        let p = self.mbox.call(&Request::QueryVf(Target::All)).await?;
        let (_, list) =
            split_list::<CountResp, VfInfo>(&p).map_err(|_| Error::BadResponse("vf list size"))?;
        Ok(list.to_vec())
    }

    /// One VF.
    pub async fn vf(&self, vf: u16) -> Result<VfInfo> {
        let p = self.mbox.call(&Request::QueryVf(Target::One(vf))).await?;
        view::<VfInfo>(&p)
            .copied()
            .map_err(|_| Error::BadResponse("vf info size"))
    }

    /// Creates `count` VFs and makes them visible: SR-IOV is enabled to cover them. All or
    /// nothing: if they cannot be made visible, they are destroyed again.
    pub async fn create_vfs(&self, count: u16, spec: CreateSpec) -> Result<Vec<VfInfo>> {
        let sizing = match &spec {
            CreateSpec::Equal => Sizing::Equal,
            CreateSpec::Uniform(s) => Sizing::Uniform(s),
        };
        // Where SR-IOV cannot be seen (a PF inside a VM), say so before the firmware
        // allocates anything.
        self.t.num_vfs()?;
        let held = self.management_lock().await?;
        self.reconcile(&held).await?;
        // Recorded before the first step, cleared after the last: a create killed between its
        // firmware command and its SR-IOV change is finished by the next management command.
        held.record("create-vf")?;
        let p = match self
            .mbox
            .call(&Request::CreateVfs(CreateVfs { count, sizing }))
            .await
        {
            Ok(p) => p,
            Err(e) => {
                // Refused (or unanswered): nothing was made that a later command must finish.
                held.clear()?;
                return Err(self.explain_create_refusal(e, count, &spec).await);
            }
        };
        let (_, list) = split_list::<CountResp, VfInfo>(&p)
            .map_err(|_| Error::BadResponse("create response size"))?;
        let made = list.to_vec();
        let need = made.iter().map(|v| v.vf.get() + 1).max().unwrap_or(0);
        let enabled = self.t.num_vfs()?;
        let visible = if need <= enabled {
            Ok(())
        } else if enabled == 0 {
            self.t.set_num_vfs(need)
        } else {
            Err(Error::Conflict(format!(
                "SR-IOV is enabled with {enabled} VFs and the new VFs need {need}; changing NumVFs would pull \
                 the running VFs from their VMs. Destroy all VFs first (accelctl destroy-vf --all)"
            )))
        };
        if let Err(e) = visible {
            for v in &made {
                let _ = self
                    .mbox
                    .call(&Request::DestroyVf(Target::One(v.vf.get())))
                    .await;
            }
            held.clear()?;
            return Err(e);
        }
        held.clear()?;
        Ok(made)
    }

    /// Re-creates VFs with exactly these indices and resources on a device that holds none
    /// (after a reset, a firmware update, a device-model restart), and shows them through
    /// SR-IOV. Indices between them that the layout does not name are made as placeholders
    /// and destroyed again, since the firmware gives each new VF the lowest free index. All
    /// or nothing: on any failure every VF made here is destroyed.
    pub async fn restore(&self, layout: &[(u16, VfSpec)]) -> Result<Vec<VfInfo>> {
        let Some(max) = layout.iter().map(|(v, _)| *v).max() else {
            return Ok(Vec::new());
        };
        let placeholder = VfSpec::new(1, 1, 1, 1, 0);
        let specs: Vec<VfSpec> = (0..=max)
            .map(|i| {
                layout
                    .iter()
                    .find(|(v, _)| *v == i)
                    .map_or(placeholder, |(_, s)| *s)
            })
            .collect();
        let count = max + 1;
        self.t.num_vfs()?;
        let held = self.management_lock().await?;
        self.reconcile(&held).await?;
        if !self.vfs().await?.is_empty() {
            held.clear()?;
            return Err(Error::Conflict(
                "the device already holds VFs: a layout is restored only onto an empty device"
                    .into(),
            ));
        }
        held.record("create-vf")?;
        let p = match self
            .mbox
            .call(&Request::CreateVfs(CreateVfs {
                count,
                sizing: Sizing::Explicit(&specs),
            }))
            .await
        {
            Ok(p) => p,
            Err(e) => {
                held.clear()?;
                return Err(e);
            }
        };
        let (_, list) = split_list::<CountResp, VfInfo>(&p)
            .map_err(|_| Error::BadResponse("create response size"))?;
        let made = list.to_vec();
        let wanted = |v: u16| layout.iter().any(|(w, _)| *w == v);
        let undo = async |e: Error| {
            let _ = self.mbox.call(&Request::DestroyVf(Target::All)).await;
            let _ = held.clear();
            e
        };
        if made.len() != count as usize
            || made.iter().enumerate().any(|(i, v)| v.vf.get() != i as u16)
        {
            return Err(undo(Error::BadResponse(
                "the firmware gave the VFs other indices",
            ))
            .await);
        }
        for v in made.iter().filter(|v| !wanted(v.vf.get())) {
            if let Err(e) = self
                .mbox
                .call(&Request::DestroyVf(Target::One(v.vf.get())))
                .await
            {
                return Err(undo(e).await);
            }
        }
        if self.t.num_vfs()? < count {
            let r = if self.t.num_vfs()? == 0 {
                self.t.set_num_vfs(count)
            } else {
                Err(Error::Conflict(
                    "SR-IOV is enabled with fewer VFs than the layout needs".into(),
                ))
            };
            if let Err(e) = r {
                return Err(undo(e).await);
            }
        }
        held.clear()?;
        Ok(made.into_iter().filter(|v| wanted(v.vf.get())).collect())
    }

    /// Notes on what this handle found and did beyond the commands asked (taken once).
    pub fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Finishes a management operation a killed process left half done (see
    /// [`Accel::reconcile`]), if there is one and no process holds the management lock (one
    /// that does is in the middle of its operation, not dead). What it did is in
    /// [`Accel::take_notes`]. accelctl runs this before every command it opens the device
    /// for, so that no command lives with a half-done create or destroy.
    pub async fn finish_interrupted(&self) -> Result<()> {
        let Ok(f) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.t.lock_path())
        else {
            // No lock file: nothing was ever recorded here.
            return Ok(());
        };
        if f.metadata().map_or(true, |m| m.len() == 0) {
            return Ok(());
        }
        match f.try_lock() {
            Ok(()) => self.reconcile(&MgmtLock(f)).await,
            Err(_) => Ok(()),
        }
    }

    /// Finishes a management operation that a killed process left half done, as its record
    /// in the lock file says: VFs the firmware made for a create but SR-IOV never showed are
    /// shown; VFs a destroy took out of SR-IOV are destroyed; SR-IOV left on with no VF behind
    /// it is turned off. Each leaves the state the operation meant to reach.
    async fn reconcile(&self, held: &MgmtLock) -> Result<()> {
        let Some(op) = held.recorded()? else {
            return Ok(());
        };
        let live = self.vfs().await?;
        let enabled = self.t.num_vfs()?;
        let need = live.iter().map(|v| v.vf.get() + 1).max().unwrap_or(0);
        let did = if op == "create-vf" && !live.is_empty() && enabled == 0 {
            self.t.set_num_vfs(need)?;
            format!(
                "finished an interrupted create-vf: SR-IOV now shows the {} VFs it had made",
                live.len()
            )
        } else if op == "destroy-vf" && !live.is_empty() && enabled == 0 {
            self.mbox.call(&Request::DestroyVf(Target::All)).await?;
            format!("finished an interrupted destroy-vf: destroyed the {} VFs it had taken out of SR-IOV", live.len())
        } else if live.is_empty() && enabled != 0 {
            self.t.set_num_vfs(0)?;
            format!("finished an interrupted {op}: SR-IOV off, no VF was left")
        } else {
            format!("an interrupted {op} had left the device consistent; nothing to do")
        };
        self.notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(did);
        held.clear()
    }

    /// A create refused for resources while VFs hold them and SR-IOV shows none: what a
    /// create interrupted between its firmware command and its SR-IOV step leaves. Say so,
    /// and how to clear it, instead of only "not enough free resources".
    async fn explain_create_refusal(&self, e: Error, count: u16, spec: &CreateSpec) -> Error {
        use shared_abi::mailbox::Status;
        let resources = matches!(
            e.status(),
            Some(Status::OutOfResources | Status::Fragmented | Status::TooManyVfs)
        );
        // Whether the device, empty, could have given what was asked (an equal split always
        // could): only then are VFs that exist what stands in the way.
        let fits_empty = match spec {
            CreateSpec::Equal => true,
            CreateSpec::Uniform(s) => self.device_info().await.is_ok_and(|d| {
                let n = count as u64;
                n * s.engines.get() as u64 <= d.engines as u64
                    && n * s.mem_granules.get() as u64 <= d.mem_granules.get() as u64
                    && n * s.queues.get() as u64 <= d.queues.get() as u64
                    && n * s.vectors.get() as u64 <= d.vectors.get() as u64
            }),
        };
        if !resources {
            return e;
        }
        let shown = self.t.num_vfs().ok();
        if shown.is_some_and(|n| n > 0) && fits_empty {
            // Another create got here first (this one waited for its lock), or VFs made
            // earlier are in the way: busy, not a refusal of what was asked.
            return match self.vfs().await {
                Ok(held) if !held.is_empty() => Error::Conflict(format!(
                    "{e}: {} VF{} already hold the device's resources (another create-vf may have \
                     just made them); see them with `accelctl vf list`, or destroy them first",
                    held.len(),
                    if held.len() == 1 { "" } else { "s" }
                )),
                _ => e,
            };
        }
        if shown != Some(0) {
            return e;
        }
        match self.vfs().await {
            Ok(held) if !held.is_empty() => Error::Conflict(format!(
                "{e}: {} VF{} hold the device's resources while SR-IOV shows none (a create-vf \
                 that was interrupted?); free them with `accelctl destroy-vf --all`",
                held.len(),
                if held.len() == 1 { "" } else { "s" }
            )),
            _ => e,
        }
    }

    /// Takes the device's management lock (see [`Transport::lock_path`]), waiting up to the
    /// command timeout for another process to finish; released when the file is dropped.
    async fn management_lock(&self) -> Result<MgmtLock> {
        let p = self.t.lock_path();
        if let Some(dir) = p.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&p)
            .map_err(|e| {
                Error::Io(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", p.display()),
                ))
            })?;
        let deadline = std::time::Instant::now() + self.mbox.timeout();
        loop {
            match f.try_lock() {
                Ok(()) => return Ok(MgmtLock(f)),
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(Error::Conflict(format!(
                        "another process is creating or destroying VFs on {} (lock {}); retry when it is done",
                        self.t.describe(),
                        p.display()
                    )))
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::Io(e)),
            }
        }
    }

    /// Binds VFs to vfio-pci (kernel transport).
    pub fn bind_vfio(&self, vf: u16) -> Result<()> {
        self.t.bind_vf(vf)
    }

    /// Destroys one VF; SR-IOV is disabled when none is left.
    pub async fn destroy_vf(&self, vf: u16) -> Result<()> {
        let held = self.management_lock().await?;
        self.reconcile(&held).await?;
        held.record("destroy-vf")?;
        if let Err(e) = self.mbox.call(&Request::DestroyVf(Target::One(vf))).await {
            // Refused (no such VF, say): nothing happened that a later command must finish.
            if e.status().is_some() {
                held.clear()?;
            }
            return Err(e);
        }
        if self.stats().await?.1.is_empty() && self.t.num_vfs()? != 0 {
            self.t.set_num_vfs(0)?;
        }
        held.clear()
    }

    /// Destroys every VF and disables SR-IOV. Returns how many were destroyed.
    pub async fn destroy_all(&self) -> Result<u16> {
        let held = self.management_lock().await?;
        self.reconcile(&held).await?;
        held.record("destroy-vf")?;
        // VFs leave their VMs first (SR-IOV off), then their resources are scrubbed and freed.
        if self.t.num_vfs()? != 0 {
            self.t.set_num_vfs(0)?;
        }
        let p = self.mbox.call(&Request::DestroyVf(Target::All)).await?;
        held.clear()?;
        Ok(view::<CountResp>(&p)
            .map_err(|_| Error::BadResponse("destroy response size"))?
            .count
            .get())
    }

    /// Resizes a live VF in place.
    pub async fn resize(&self, vf: u16, spec: VfSpec) -> Result<VfInfo> {
        let p = self
            .mbox
            .call(&Request::ConfigureVf(ConfigureVf { vf, spec: &spec }))
            .await?;
        view::<VfInfo>(&p)
            .copied()
            .map_err(|_| Error::BadResponse("vf info size"))
    }

    /// Function level reset of one VF.
    pub async fn reset(&self, vf: u16) -> Result<VfInfo> {
        let p = self.mbox.call(&Request::ResetVf(VfIndex(vf))).await?;
        view::<VfInfo>(&p)
            .copied()
            .map_err(|_| Error::BadResponse("vf info size"))
    }

    /// Sets a VF's scheduler weight.
    pub async fn set_qos(&self, vf: u16, weight: u16) -> Result<VfInfo> {
        let p = self
            .mbox
            .call(&Request::SetQos(SetQos { vf, weight }))
            .await?;
        view::<VfInfo>(&p)
            .copied()
            .map_err(|_| Error::BadResponse("vf info size"))
    }

    /// How to give VF `vf` to a VM.
    pub fn handoff(&self, vf: u16) -> Result<VfHandoff> {
        Ok(handoff(vf, self.t.vf_endpoint(vf)?))
    }
}

/// The device's management lock, held for the life of this value, and the record of the
/// operation its holder is in the middle of (the file's contents: empty when none).
struct MgmtLock(std::fs::File);

impl MgmtLock {
    fn recorded(&self) -> Result<Option<String>> {
        use std::io::{Read, Seek};
        let mut f = &self.0;
        let mut s = String::new();
        f.seek(std::io::SeekFrom::Start(0)).map_err(Error::Io)?;
        f.take(256).read_to_string(&mut s).map_err(Error::Io)?;
        let s = s.trim();
        Ok((!s.is_empty()).then(|| s.to_string()))
    }

    fn record(&self, op: &str) -> Result<()> {
        use std::io::{Seek, Write};
        let mut f = &self.0;
        f.set_len(0).map_err(Error::Io)?;
        f.seek(std::io::SeekFrom::Start(0)).map_err(Error::Io)?;
        // No fsync: the record is for a killed process, whose writes the next one sees.
        f.write_all(op.as_bytes()).map_err(Error::Io)
    }

    fn clear(&self) -> Result<()> {
        self.0.set_len(0).map_err(Error::Io)
    }
}

/// The VMM command-line pieces that attach `endpoint`.
pub fn handoff(vf: u16, endpoint: VfEndpoint) -> VfHandoff {
    let (qemu, ch) = match &endpoint {
        VfEndpoint::Pci {
            address, vf_token, ..
        } => (
            match vf_token {
                Some(t) => format!("-device vfio-pci,host={address},vf-token={t}"),
                None => format!("-device vfio-pci,host={address}"),
            },
            format!("--device path=/sys/bus/pci/devices/{address}/"),
        ),
        VfEndpoint::Socket { path } => (
            format!(
                "-device '{{\"driver\":\"vfio-user-pci\",\"socket\":{{\"type\":\"unix\",\"path\":\"{}\"}}}}'",
                path.display()
            ),
            format!("--user-device socket={}", path.display()),
        ),
    };
    VfHandoff {
        vf,
        endpoint,
        qemu,
        cloud_hypervisor: ch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_vfio_handoff_carries_the_vf_token() {
        let ep = |t: Option<&str>| VfEndpoint::Pci {
            address: "0000:3b:00.1".into(),
            iommu_group: Some(12),
            driver: Some("vfio-pci".into()),
            vf_token: t.map(str::to_string),
        };
        let t = "2ab74924-c335-45f4-9b16-8569e5b08258";
        assert_eq!(
            handoff(0, ep(Some(t))).qemu,
            format!("-device vfio-pci,host=0000:3b:00.1,vf-token={t}")
        );
        assert_eq!(
            handoff(0, ep(None)).qemu,
            "-device vfio-pci,host=0000:3b:00.1"
        );
        let j = serde_json::to_value(handoff(0, ep(Some(t)))).unwrap();
        assert_eq!(j["endpoint"]["vf_token"], t);
    }
}
