//! vfio-user client transport: talks to a device model over its UNIX socket. BAR0 windows
//! the server offers for mmap are mapped and accessed directly; everything else goes through
//! REGION_READ/WRITE messages.

use crate::error::{Error, Result};
use crate::transport::{cap_id, find_ext_cap, header, msix, sriov, Transport, VfEndpoint};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vfio_user_wire::shared::Shared;

use vfio_user_wire::framing::{self, RecvError, Wait};
use vfio_user_wire::proto::{self, cmd, flags, region, Header, REGION_CAPS, REGION_MMAP};
use zerocopy::{FromBytes, IntoBytes};

const CONFIG_REGION: u32 = region::CONFIG;
const BAR0: u32 = region::BAR0;
/// How long one request may take before the device is declared unresponsive.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A vfio-user device.
#[derive(Debug)]
pub struct VfioUser {
    path: PathBuf,
    stream: Mutex<(UnixStream, u16, framing::Reader)>,
    /// Set after a timeout: a late reply may still be in the stream, so it cannot be reused.
    broken: std::sync::atomic::AtomicBool,
    /// (offset within BAR0, mapping)
    bar0_map: Option<(usize, Shared)>,
    /// How long one message waits for its answer, in ms ([`IO_TIMEOUT`] unless set).
    io_timeout_ms: std::sync::atomic::AtomicU64,
    /// The events vector's eventfd, once asked for (only the event ring's consumer does: the
    /// device keeps one eventfd per vector, and another client's would replace it).
    events_irq: std::sync::OnceLock<Option<nix::sys::eventfd::EventFd>>,
    /// The connection, a second descriptor of it: watched (never read) for its closing.
    watch: Option<OwnedFd>,
}

/// REGION_READ/REGION_WRITE head and the data.
fn region_msg(index: u32, offset: u64, data: &[u8]) -> Vec<u8> {
    let head = proto::RegionAccess {
        offset,
        region: index,
        count: data.len() as u32,
    };
    [head.as_bytes(), data].concat()
}

/// The structure a reply starts with, or a protocol error naming `what`.
fn reply<T: FromBytes + zerocopy::KnownLayout + zerocopy::Immutable>(
    r: &[u8],
    what: &str,
) -> Result<(T, usize)> {
    T::read_from_prefix(r)
        .map(|(t, rest)| (t, r.len() - rest.len()))
        .map_err(|_| Error::Protocol(format!("short {what}")))
}

/// `argsz` of a request whose reply is a `T` and nothing more.
fn argsz<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

/// A client waits for its reply until a deadline.
struct Deadline(Instant);

impl Wait for Deadline {
    fn idle(&mut self) -> bool {
        false
    }
    fn more(&mut self) -> bool {
        Instant::now() < self.0
    }
}

/// Region info as returned by the server.
#[derive(Debug)]
pub struct RegionInfo {
    /// Flags (READ/WRITE/MMAP/CAPS).
    pub flags: u32,
    /// Size.
    pub size: u64,
    /// mmap offset.
    pub offset: u64,
    /// Sparse mmap areas (offset, size).
    pub sparse: Vec<(u64, u64)>,
    /// Descriptor to map, if offered.
    pub fd: Option<OwnedFd>,
}

impl VfioUser {
    /// Connects and negotiates; maps BAR0 where the server allows it (`mmap = true`).
    pub fn connect(path: &Path, mmap: bool) -> Result<Self> {
        Self::connect_with(path, mmap, IO_TIMEOUT)
    }

    /// The same, with `io_timeout` for every exchange, negotiation included.
    pub fn connect_with(path: &Path, mmap: bool, io_timeout: Duration) -> Result<Self> {
        let stream = UnixStream::connect(path).map_err(|source| Error::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .map_err(Error::Io)?;
        let watch = stream.try_clone().ok().map(OwnedFd::from);
        let mut dev = VfioUser {
            // Canonical once: VF sockets sit beside it, so their paths need no lookups.
            path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
            stream: Mutex::new((stream, 0, framing::Reader::new())),
            broken: Default::default(),
            bar0_map: None,
            io_timeout_ms: (io_timeout.as_millis().max(1) as u64).into(),
            events_irq: Default::default(),
            watch,
        };
        let version = proto::Version {
            major: proto::MAJOR,
            minor: proto::MINOR,
        };
        let caps = format!(
            r#"{{"capabilities":{{"max_msg_fds":{},"max_data_xfer_size":{}}}}}"#,
            proto::MAX_MSG_FDS,
            proto::MAX_DATA_XFER
        );
        let v = [version.as_bytes(), caps.as_bytes(), &[0]].concat();
        let (r, _) = dev.call(cmd::VERSION, &v, &[], "version negotiation")?;
        if reply::<proto::Version>(&r, "version")?.0.major != proto::MAJOR {
            return Err(Error::Protocol(
                "server speaks another major version".into(),
            ));
        }
        let ask = proto::DeviceInfo {
            argsz: argsz::<proto::DeviceInfo>(),
            ..Default::default()
        };
        let (r, _) = dev.call(cmd::DEVICE_GET_INFO, ask.as_bytes(), &[], "device info")?;
        let (info, _) = reply::<proto::DeviceInfo>(&r, "device info")?;
        if info.flags & proto::DEVICE_FLAGS_PCI == 0 {
            return Err(Error::NotOurDevice(format!(
                "{} is not a PCI device",
                path.display()
            )));
        }
        let r = dev.region_info(BAR0)?;
        if mmap && r.flags & REGION_MMAP != 0 {
            if let (Some(fd), Some(&(off, len))) = (r.fd.as_ref(), r.sparse.first()) {
                let map = Shared::map(
                    fd.as_fd(),
                    r.offset.checked_add(off).ok_or_else(|| {
                        Error::Protocol("sparse mmap area offset overflows".into())
                    })?,
                    usize::try_from(len)
                        .map_err(|_| Error::Protocol("sparse mmap area too large".into()))?,
                )
                .map_err(Error::Io)?;
                dev.bar0_map = Some((off as usize, map));
            }
        }
        Ok(dev)
    }

    /// The socket.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether BAR0's mailbox pages are mapped.
    pub fn is_mapped(&self) -> bool {
        self.bar0_map.is_some()
    }

    /// Sends one command; returns the connection, still locked for the reply, and the id.
    /// A posted command (`no_reply`) is not answered.
    fn send(
        &self,
        command: u16,
        payload: &[u8],
        fds: &[RawFd],
        no_reply: bool,
    ) -> Result<std::sync::MutexGuard<'_, (UnixStream, u16, framing::Reader)>> {
        if self.broken.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "connection abandoned after an earlier timeout",
            )));
        }
        let mut g = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        let (stream, next, _) = &mut *g;
        *next = next.wrapping_add(1);
        let h = Header {
            msg_id: *next,
            command,
            size: (16 + payload.len()) as u32,
            flags: flags::TYPE_COMMAND | if no_reply { flags::NO_REPLY } else { 0 },
            error: 0,
        };
        framing::send(stream, &h, payload, fds).map_err(Error::Io)?;
        Ok(g)
    }

    /// Sends one command and waits for its reply.
    pub fn call(
        &self,
        command: u16,
        payload: &[u8],
        fds: &[RawFd],
        what: &'static str,
    ) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
        use std::sync::atomic::Ordering;
        let mut g = self.send(command, payload, fds, false)?;
        let (stream, id, reader) = &mut *g;
        let id = *id;
        let limit = self.io_timeout_ms.load(Ordering::Relaxed);
        let mut wait = Deadline(Instant::now() + Duration::from_millis(limit));
        let (rh, body, rfds) =
            match reader.recv(stream, vfio_user_wire::proto::MAX_MESSAGE, &mut wait) {
                Ok(Some(m)) => m,
                Ok(None) | Err(RecvError::TimedOut) | Err(RecvError::Framing) if !wait.more() => {
                    self.broken.store(true, Ordering::Release);
                    return Err(Error::Timeout { what, ms: limit });
                }
                Ok(None) | Err(RecvError::TimedOut) | Err(RecvError::Framing) => {
                    return Err(Error::Protocol(format!("unexpected reply to {what}")))
                }
                Err(RecvError::Closed) => {
                    return Err(Error::Io(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the device closed the connection",
                    )))
                }
                Err(RecvError::Io(e)) => return Err(Error::Io(e.into())),
            };
        if rh.msg_id != id || rh.flags & flags::TYPE_MASK != flags::TYPE_REPLY {
            return Err(Error::Protocol(format!("unexpected reply to {what}")));
        }
        if rh.flags & flags::ERROR != 0 {
            return Err(Error::Remote {
                what,
                errno: nix::errno::Errno::from_raw(rh.error as i32),
            });
        }
        Ok((body, rfds))
    }

    /// DEVICE_GET_REGION_INFO, with capabilities.
    pub fn region_info(&self, index: u32) -> Result<RegionInfo> {
        // Room for the structure and its capabilities (a sparse mmap of a few areas).
        let ask = proto::RegionInfo {
            argsz: 256,
            index,
            ..Default::default()
        };
        let (r, mut fds) = self.call(
            cmd::DEVICE_GET_REGION_INFO,
            ask.as_bytes(),
            &[],
            "region info",
        )?;
        let (info, _) = reply::<proto::RegionInfo>(&r, "region info")?;
        let mut sparse = Vec::new();
        if info.flags & REGION_CAPS != 0 {
            let head = std::mem::size_of::<proto::RegionInfo>();
            let mut at = info.cap_offset as usize;
            // A bounded walk of a chain that only moves forward.
            for _ in 0..16 {
                let Some((cap, _)) = (at >= head)
                    .then(|| r.get(at..))
                    .flatten()
                    .and_then(|c| proto::CapHeader::read_from_prefix(c).ok())
                else {
                    break;
                };
                if cap.id == proto::CAP_SPARSE_MMAP {
                    let body = &r[at + std::mem::size_of::<proto::CapHeader>()..];
                    if let Ok((m, areas)) = proto::SparseMmap::read_from_prefix(body) {
                        sparse.extend(
                            <[proto::SparseArea]>::ref_from_prefix_with_elems(
                                areas,
                                (m.nr_areas as usize).min(16),
                            )
                            .map(|(a, _)| a)
                            .unwrap_or(&[])
                            .iter()
                            .map(|a| (a.offset, a.size)),
                        );
                    }
                }
                let next = cap.next as usize;
                if next <= at {
                    break;
                }
                at = next;
            }
        }
        Ok(RegionInfo {
            flags: info.flags,
            size: info.size,
            offset: info.offset,
            sparse,
            fd: fds.pop(),
        })
    }

    /// REGION_READ.
    pub fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> Result<()> {
        let req = proto::RegionAccess {
            offset,
            region: index,
            count: buf.len() as u32,
        };
        let (r, _) = self.call(cmd::REGION_READ, req.as_bytes(), &[], "region read")?;
        let (_, at) = reply::<proto::RegionAccess>(&r, "region read")?;
        let data = r
            .get(at..at + buf.len())
            .ok_or_else(|| Error::Protocol("short region read".into()))?;
        buf.copy_from_slice(data);
        Ok(())
    }

    /// REGION_WRITE as a posted write: sent with NO_REPLY, not waited for, like a PCIe memory
    /// write. Messages on one connection are handled in order, so the next read (which is
    /// answered) comes after it; a write the device refuses is dropped, as on the bus.
    pub fn region_post(&self, index: u32, offset: u64, data: &[u8]) -> Result<()> {
        drop(self.send(
            cmd::REGION_WRITE,
            &region_msg(index, offset, data),
            &[],
            true,
        )?);
        Ok(())
    }

    /// REGION_WRITE, waiting for the device's answer.
    pub fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> Result<()> {
        let req = region_msg(index, offset, data);
        self.call(cmd::REGION_WRITE, &req, &[], "region write")?;
        Ok(())
    }

    /// MSI-X vectors (IRQ index 2).
    pub fn msix_count(&self) -> Result<u32> {
        let ask = proto::IrqInfo {
            argsz: argsz::<proto::IrqInfo>(),
            index: proto::IRQ_MSIX,
            ..Default::default()
        };
        let (r, _) = self.call(cmd::DEVICE_GET_IRQ_INFO, ask.as_bytes(), &[], "irq info")?;
        Ok(reply::<proto::IrqInfo>(&r, "irq info")?.0.count)
    }

    /// Registers eventfds for MSI-X vectors `[start, start + fds.len())`, in messages of at
    /// most 16 descriptors (the most either side of a vfio-user socket accepts).
    pub fn set_msix_eventfds(&self, start: u32, fds: &[std::os::fd::BorrowedFd<'_>]) -> Result<()> {
        for (i, chunk) in fds.chunks(proto::MAX_MSG_FDS).enumerate() {
            // An EVENTFD's descriptors travel beside the message: argsz is the header's.
            let req = proto::IrqSet {
                argsz: argsz::<proto::IrqSet>(),
                flags: proto::IRQ_DATA_EVENTFD | proto::IRQ_ACTION_TRIGGER,
                index: proto::IRQ_MSIX,
                start: start + (i * proto::MAX_MSG_FDS) as u32,
                count: chunk.len() as u32,
            };
            let raw: Vec<RawFd> = chunk.iter().map(|f| f.as_raw_fd()).collect();
            self.call(cmd::DEVICE_SET_IRQS, req.as_bytes(), &raw, "set irqs")?;
        }
        Ok(())
    }

    /// DEVICE_RESET.
    pub fn reset(&self) -> Result<()> {
        self.call(cmd::DEVICE_RESET, &[], &[], "device reset")?;
        Ok(())
    }

    fn mapped(&self, off: usize, len: usize) -> Option<(&Shared, usize)> {
        let (base, m) = self.bar0_map.as_ref()?;
        (off >= *base && off + len <= base + m.len()).then(|| (m, off - base))
    }
}

impl Transport for VfioUser {
    fn read32(&self, off: usize) -> Result<u32> {
        if let Some((m, o)) = self.mapped(off, 4) {
            return m.read32(o).ok_or(Error::BadResponse("unaligned register"));
        }
        let mut b = [0u8; 4];
        self.region_read(BAR0, off as u64, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn write32(&self, off: usize, v: u32) -> Result<()> {
        if let Some((m, o)) = self.mapped(off, 4) {
            m.write32(o, v);
            return Ok(());
        }
        self.region_post(BAR0, off as u64, &v.to_le_bytes())
    }
    fn cas32(&self, off: usize, old: u32, new: u32) -> Result<bool> {
        if let Some((m, o)) = self.mapped(off, 4) {
            return m
                .cas32(o, old, new)
                .ok_or(Error::BadResponse("unaligned register"));
        }
        crate::transport::trapped_cas32(self, off, new)
    }
    fn register_lock_token(&self, token: u32) -> Result<()> {
        self.write32(shared_abi::regs::pf::MBOX_OWNER.offset(), token)
    }
    fn read_bytes(&self, off: usize, buf: &mut [u8]) -> Result<()> {
        if let Some((m, o)) = self.mapped(off, buf.len()) {
            m.read(o, buf);
            return Ok(());
        }
        self.region_read(BAR0, off as u64, buf)
    }
    fn write_bytes(&self, off: usize, data: &[u8]) -> Result<()> {
        if let Some((m, o)) = self.mapped(off, data.len()) {
            m.write(o, data);
            return Ok(());
        }
        self.region_post(BAR0, off as u64, data)
    }
    fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.region_read(CONFIG_REGION, off, buf)
    }
    fn config_write(&self, off: u64, data: &[u8]) -> Result<()> {
        self.region_write(CONFIG_REGION, off, data)
    }
    fn num_vfs(&self) -> Result<u16> {
        let Some(cap) = find_ext_cap(self, cap_id::EXT_SRIOV)? else {
            return Ok(0);
        };
        let mut b = [0u8; 2];
        self.config_read(cap + sriov::CTRL as u64, &mut b)?;
        if u16::from_le_bytes(b) & sriov::CTRL_VF_ENABLE == 0 {
            return Ok(0);
        }
        self.config_read(cap + sriov::NUM_VFS as u64, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    fn set_num_vfs(&self, n: u16) -> Result<()> {
        let cap = find_ext_cap(self, cap_id::EXT_SRIOV)?
            .ok_or_else(|| Error::NotOurDevice("no SR-IOV capability".into()))?;
        let mut b = [0u8; 2];
        self.config_read(cap + sriov::CTRL as u64, &mut b)?;
        let ctrl = u16::from_le_bytes(b);
        // NumVFs may only change with VF Enable clear (PCIe SR-IOV 9.3.3.7).
        if ctrl & sriov::CTRL_VF_ENABLE != 0 {
            self.config_write(
                cap + sriov::CTRL as u64,
                &(ctrl & !(sriov::CTRL_VF_ENABLE | sriov::CTRL_VF_MSE)).to_le_bytes(),
            )?;
        }
        // The device model answers an SR-IOV write once the VF sockets match it: no waiting
        // for them here.
        self.config_write(cap + sriov::NUM_VFS as u64, &n.to_le_bytes())?;
        if n > 0 {
            self.config_write(
                cap + sriov::CTRL as u64,
                &(ctrl | sriov::CTRL_VF_ENABLE | sriov::CTRL_VF_MSE).to_le_bytes(),
            )?;
            if self.num_vfs()? != n {
                return Err(Error::Invalid(format!(
                    "the device refused to enable {n} VFs"
                )));
            }
            // The device answers this write once every VF socket is listening (accel-sim's
            // contract); `vf_endpoint` reports a VF whose socket is missing.
        }
        Ok(())
    }
    fn vf_endpoint(&self, v: u16) -> Result<VfEndpoint> {
        let p = vf_socket_path(&self.path, v);
        if !p.exists() {
            return Err(Error::Invalid(format!(
                "VF {v} is not enabled (no socket {})",
                p.display()
            )));
        }
        Ok(VfEndpoint::Socket { path: p })
    }
    fn describe(&self) -> String {
        format!("vfio-user:{}", self.path.display())
    }
    fn connection_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.watch.as_ref().map(|f| f.as_fd())
    }
    fn events_irq(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use nix::sys::eventfd::{EfdFlags, EventFd};
        self.events_irq
            .get_or_init(|| {
                let efd =
                    EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC).ok()?;
                let v = shared_abi::pci::PF_VECTOR_EVENTS as u32;
                self.set_msix_eventfds(v, &[efd.as_fd()]).ok()?;
                // An MSI-X message is a memory write: the PF must be a bus master with MSI-X
                // enabled, and the vector unmasked (what a kernel's PCI core does for it).
                let mut w = [0u8; 2];
                let command = header::COMMAND as u64;
                self.config_read(command, &mut w).ok()?;
                let on = u16::from_le_bytes(w) | crate::transport::command::BUS_MASTER;
                self.config_write(command, &on.to_le_bytes()).ok()?;
                let cap = crate::transport::find_cap(self, cap_id::MSIX).ok()??;
                let ctl_at = cap + msix::CTRL as u64;
                self.config_read(ctl_at, &mut w).ok()?;
                let ctl = (u16::from_le_bytes(w) | msix::CTRL_ENABLE) & !msix::CTRL_FUNCTION_MASK;
                self.config_write(ctl_at, &ctl.to_le_bytes()).ok()?;
                let entry =
                    shared_abi::regs::pf::MSIX_TABLE.start() + v as usize * msix::ENTRY_SIZE;
                self.write32(entry + 12, 0).ok()?;
                Some(efd)
            })
            .as_ref()
            .map(|e| e.as_fd())
    }
    fn mapped_mailbox(&self) -> bool {
        self.is_mapped()
    }
    fn lock_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".lock");
        PathBuf::from(p)
    }
}

pub use vfio_user_wire::vf_socket_path;

/// Where device-model sockets live by default: `$ACCEL_RUNTIME_DIR`, else
/// `$XDG_RUNTIME_DIR/accelvirt`, else `/tmp/accelvirt`.
pub fn default_runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ACCEL_RUNTIME_DIR") {
        return d.into();
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("accelvirt"),
        None => PathBuf::from("/tmp/accelvirt"),
    }
}

/// Sockets in a directory that look like device-model PF sockets (not VF sockets).
pub fn scan_sockets(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let is_sock = std::fs::symlink_metadata(p)
                .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                .unwrap_or(false);
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            is_sock && !name.contains("-vf")
        })
        .collect();
    v.sort();
    v
}
