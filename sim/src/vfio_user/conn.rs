//! One vfio-user connection: it reads messages (framing from `vfio-user-wire`), answers
//! each command against the device, and releases what the client held when it goes.

use super::proto::{self, cmd, flags, Header, HEADER_SIZE};
use super::Model;
use crate::device::{region, AccessError, Func};
use nix::errno::Errno;
use serde_json::{json, Map, Value};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vfio_user_wire::framing::{self, RecvError, Wait};
use zerocopy::{FromBytes, IntoBytes};

/// A connection's read timeout: idle between messages (the loop checks `alive`), and a
/// message that started must finish within its deadline while the function exists.
struct MidMessage<'a> {
    deadline: Instant,
    alive: &'a AtomicBool,
}

impl Wait for MidMessage<'_> {
    fn idle(&mut self) -> bool {
        true
    }
    fn more(&mut self) -> bool {
        Instant::now() < self.deadline && self.alive.load(Ordering::Acquire)
    }
}

/// The wait of a conversation queued in a non-blocking socket: an empty socket is its end.
struct Drained;

impl Wait for Drained {
    fn idle(&mut self) -> bool {
        true
    }
    fn more(&mut self) -> bool {
        false
    }
}

/// Why a connection ended or a message could not be read.
#[derive(Debug)]
enum ConnError {
    Closed,
    Framing,
    Io,
}

pub(super) struct Conn {
    dev: Arc<dyn Model>,
    func: Func,
    id: u64,
    /// The socket: read by this connection's loop, written by its replies and by the
    /// device's own requests to the client.
    peer: Arc<super::peer::Peer>,
    /// What has been read of the socket and not yet served.
    reader: framing::Reader,
    alive: Arc<AtomicBool>,
    /// The whole conversation is already in the (non-blocking) socket: it ends when the
    /// socket is empty, as a live one ends when the client hangs up.
    queued: bool,
    negotiated: bool,
    /// The client proposed `write_multiple`: it may send REGION_WRITE_MULTI.
    write_multiple: bool,
    irqs_installed: bool,
    err_fd: Option<OwnedFd>,
    req_fd: Option<OwnedFd>,
    faults: FaultBudget,
}

/// Refused accesses a connection may make at full speed: a burst, then a steady rate. Past
/// it, the connection's own thread waits before its next message (never the device, never
/// another client), so a fault flood costs the machine the budget's worth of CPU and no more.
#[derive(Debug)]
struct FaultBudget {
    tokens: f64,
    last: Instant,
}

/// Refused accesses a connection may make in a burst.
const FAULT_BURST: f64 = 64.0;
/// Refused accesses a connection may make per second beyond the burst.
const FAULT_RATE: f64 = 200.0;

impl FaultBudget {
    fn new() -> Self {
        FaultBudget {
            tokens: FAULT_BURST,
            last: Instant::now(),
        }
    }

    /// `n` refused accesses happened: take them from the budget, and wait while it is
    /// overdrawn.
    fn spend(&mut self, n: u64) {
        let now = Instant::now();
        let earned = now.duration_since(self.last).as_secs_f64() * FAULT_RATE;
        self.tokens = (self.tokens + earned).min(FAULT_BURST) - n as f64;
        self.last = now;
        if self.tokens < 0.0 {
            let wait = Duration::from_secs_f64((-self.tokens / FAULT_RATE).min(0.1));
            std::thread::sleep(wait);
        }
    }
}

type Reply = Result<(Vec<u8>, Vec<RawFd>), Errno>;

/// How long a reply may wait for the client to make room for it.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
type Incoming = (Header, Vec<u8>, Vec<OwnedFd>);

fn signal(fd: &Option<OwnedFd>) {
    if let Some(fd) = fd {
        crate::sys::signal_eventfd(fd.as_fd());
    }
}

fn access_errno(e: AccessError) -> Errno {
    match e {
        AccessError::NoFunction => Errno::ENODEV,
        AccessError::NoRegion | AccessError::OutOfRange | AccessError::BadSize => Errno::EINVAL,
    }
}

/// A request's `argsz` must cover the structure its reply fills, as the kernel's VFIO and
/// libvfio-user require: a smaller one is refused, not answered with more than it allowed.
fn fits<T>(argsz: u32) -> Result<(), Errno> {
    if (argsz as usize) < std::mem::size_of::<T>() {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

fn view<T: FromBytes + zerocopy::KnownLayout + zerocopy::Immutable + Copy>(
    p: &[u8],
) -> Result<(T, &[u8]), Errno> {
    T::read_from_prefix(p).map_err(|_| Errno::EINVAL)
}

impl Conn {
    pub(super) fn new(
        dev: Arc<dyn Model>,
        func: Func,
        id: u64,
        stream: UnixStream,
        alive: Arc<AtomicBool>,
    ) -> Self {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
        // A client that stops reading its replies loses its connection, not a thread forever:
        // a reply that cannot be sent within this ends the connection.
        let _ = stream.set_write_timeout(Some(SEND_TIMEOUT));
        Self::with_stream(dev, func, id, stream, alive, false)
    }

    /// A connection whose client's whole conversation is already queued in `stream`, which
    /// is non-blocking: served until the socket is empty (a reply that does not fit in the
    /// client's buffer ends it, as the send timeout does for a live client).
    pub(super) fn queued(dev: Arc<dyn Model>, func: Func, id: u64, stream: UnixStream) -> Self {
        let alive = Arc::new(AtomicBool::new(true));
        Self::with_stream(dev, func, id, stream, alive, true)
    }

    fn with_stream(
        dev: Arc<dyn Model>,
        func: Func,
        id: u64,
        stream: UnixStream,
        alive: Arc<AtomicBool>,
        queued: bool,
    ) -> Self {
        Conn {
            dev,
            func,
            id,
            peer: Arc::new(super::peer::Peer::new(stream)),
            reader: framing::Reader::new(),
            alive,
            queued,
            negotiated: false,
            write_multiple: false,
            irqs_installed: false,
            err_fd: None,
            req_fd: None,
            faults: FaultBudget::new(),
        }
    }

    pub(super) fn serve(mut self) {
        loop {
            if !self.alive.load(Ordering::Acquire) {
                break;
            }
            let (h, body, fds) = match self.recv() {
                Ok(Some(m)) => m,
                Ok(None) if self.queued => break,
                Ok(None) => continue,
                Err(ConnError::Framing) => {
                    // The stream is no longer aligned on message boundaries: say so and hang up.
                    let _ = self.send(
                        &Header {
                            flags: flags::TYPE_REPLY | flags::ERROR,
                            error: Errno::EINVAL as u32,
                            size: 16,
                            ..Header::default()
                        },
                        &[],
                        &[],
                    );
                    break;
                }
                Err(_) => break,
            };
            if h.flags & flags::TYPE_MASK == flags::TYPE_REPLY && self.peer.route(h, &body) {
                continue; // the answer to one of the device's DMA requests
            }
            if h.flags & flags::TYPE_MASK != flags::TYPE_COMMAND {
                if h.flags & flags::NO_REPLY == 0 {
                    let _ = self.reply(&h, Err(Errno::EINVAL));
                }
                continue;
            }
            let close_after = h.command == cmd::VERSION && !self.negotiated;
            let r = self.dispatch(&h, &body, fds);
            let failed = r.is_err();
            if h.flags & flags::NO_REPLY == 0 && self.reply(&h, r).is_err() {
                break;
            }
            if close_after && failed {
                break;
            }
        }
        if !self.alive.load(Ordering::Acquire) {
            // The function is going away (SR-IOV disabled, or the server stops): ask the VMM
            // to release it, as vfio-pci does before a device is removed.
            signal(&self.req_fd);
        }
        self.dev.client_gone(self.id);
        self.dev.release_dma(self.func, self.id);
        if self.irqs_installed {
            self.dev.clear_msix(self.func);
        }
        self.dev.disown(self.func, self.id);
    }

    /// Reads one message. `Ok(None)`: nothing arrived within the poll interval.
    fn recv(&mut self) -> Result<Option<Incoming>, ConnError> {
        let stream = self.peer.stream();
        let got = if self.queued {
            self.reader.recv(stream, proto::MAX_MESSAGE, &mut Drained)
        } else {
            let mut wait = MidMessage {
                deadline: Instant::now() + Duration::from_secs(10),
                alive: &self.alive,
            };
            self.reader.recv(stream, proto::MAX_MESSAGE, &mut wait)
        };
        got.map_err(|e| match e {
            RecvError::Closed => ConnError::Closed,
            RecvError::Framing | RecvError::TimedOut => ConnError::Framing,
            RecvError::Io(_) => ConnError::Io,
        })
    }

    fn send(&self, h: &Header, payload: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
        self.peer.send(h, payload, fds)
    }

    fn reply(&self, req: &Header, r: Reply) -> std::io::Result<()> {
        match r {
            Ok((payload, fds)) => {
                let h = Header {
                    msg_id: req.msg_id,
                    command: req.command,
                    size: (HEADER_SIZE + payload.len()) as u32,
                    flags: flags::TYPE_REPLY,
                    error: 0,
                };
                self.send(&h, &payload, &fds)
            }
            Err(e) => {
                let h = Header {
                    msg_id: req.msg_id,
                    command: req.command,
                    size: HEADER_SIZE as u32,
                    flags: flags::TYPE_REPLY | flags::ERROR,
                    error: e as u32,
                };
                self.send(&h, &[], &[])
            }
        }
    }

    fn dispatch(&mut self, h: &Header, p: &[u8], fds: Vec<OwnedFd>) -> Reply {
        if h.command != cmd::VERSION && !self.negotiated {
            return Err(Errno::EINVAL);
        }
        // Only these commands carry descriptors; any others are dropped (closed) here.
        if !fds.is_empty() && !matches!(h.command, cmd::DMA_MAP | cmd::DEVICE_SET_IRQS) {
            return Err(Errno::EINVAL);
        }
        match h.command {
            cmd::VERSION => self.version(p),
            cmd::DMA_MAP => self.dma_map(p, fds),
            cmd::DMA_UNMAP => self.dma_unmap(p),
            cmd::DEVICE_GET_INFO => {
                let (req, _) = view::<proto::DeviceInfo>(p)?;
                fits::<proto::DeviceInfo>(req.argsz)?;
                let info = proto::DeviceInfo {
                    argsz: 16,
                    flags: proto::DEVICE_FLAGS_RESET | proto::DEVICE_FLAGS_PCI,
                    num_regions: region::COUNT,
                    num_irqs: proto::NUM_IRQS,
                };
                Ok((info.as_bytes().to_vec(), vec![]))
            }
            cmd::DEVICE_GET_REGION_INFO => self.region_info(p),
            cmd::DEVICE_GET_IRQ_INFO => self.irq_info(p),
            cmd::DEVICE_SET_IRQS => self.set_irqs(p, fds),
            cmd::REGION_READ | cmd::REGION_WRITE | cmd::REGION_WRITE_MULTI => {
                let before = crate::device::access_faults_here();
                let r = match h.command {
                    cmd::REGION_READ => self.region_read(p),
                    cmd::REGION_WRITE => self.region_write(p),
                    // Only for a client that said it would send them.
                    _ if !self.write_multiple => Err(Errno::EINVAL),
                    _ => self.write_multi(p),
                };
                let refused = crate::device::access_faults_here().wrapping_sub(before);
                // A conversation queued whole has no live client to slow down.
                if refused > 0 && !self.queued {
                    self.faults.spend(refused);
                }
                r
            }
            cmd::DEVICE_RESET => {
                if !p.is_empty() {
                    return Err(Errno::EINVAL);
                }
                self.own()?;
                if !self.dev.reset(self.func) {
                    return Err(Errno::EIO);
                }
                Ok((vec![], vec![]))
            }
            // A feature the device does not have (it has none: no migration, no dirty-page
            // logging) is ENOTTY, as the kernel's VFIO_DEVICE_FEATURE answers and
            // libvfio-user's own tests expect of a device without migration.
            cmd::DEVICE_FEATURE => Err(Errno::ENOTTY),
            cmd::DEVICE_GET_REGION_IO_FDS | cmd::MIG_DATA_READ | cmd::MIG_DATA_WRITE => {
                Err(Errno::ENOTSUP)
            }
            _ => Err(Errno::ENOSYS),
        }
    }

    /// This connection may use the function's DMA, interrupts and reset only as their one
    /// owner: the first client to ask for any of them, until it hangs up ([`Model::claim`]).
    fn own(&mut self) -> Result<(), Errno> {
        if self.dev.claim(self.func, self.id) {
            Ok(())
        } else {
            Err(Errno::EBUSY)
        }
    }

    fn version(&mut self, p: &[u8]) -> Reply {
        if self.negotiated {
            return Err(Errno::EINVAL);
        }
        let (v, rest) = view::<proto::Version>(p)?;
        if v.major != proto::MAJOR {
            return Err(Errno::ENOTSUP);
        }
        // The capabilities are a NUL-terminated JSON string (or nothing at all), and each
        // one the spec defines has its type: anything else is refused, not guessed at.
        let proposed: Map<String, Value> = match rest {
            [] => Map::new(),
            [json @ .., 0] if !json.contains(&0) => {
                let val: Value = serde_json::from_slice(json).map_err(|_| Errno::EINVAL)?;
                match val.get("capabilities") {
                    Some(Value::Object(m)) => m.clone(),
                    Some(_) => return Err(Errno::EINVAL),
                    None => Map::new(),
                }
            }
            _ => return Err(Errno::EINVAL),
        };
        let count = |k: &str, least: u64| match proposed.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|n| *n >= least)
                .map(Some)
                .ok_or(Errno::EINVAL),
        };
        count("max_msg_fds", 0)?;
        count("max_dma_maps", 0)?;
        count("pgsizes", 1)?;
        let xfer = count("max_data_xfer_size", 1)?;
        let multi = match proposed.get("write_multiple") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(Errno::EINVAL),
        };
        if proposed.get("migration").is_some_and(|m| !m.is_object()) {
            return Err(Errno::EINVAL);
        }
        self.write_multiple = multi;
        if let Some(x) = xfer {
            self.peer
                .limit_transfers(usize::try_from(x).unwrap_or(usize::MAX));
        }
        // Reply with the subset of proposed capabilities that we support, with our values.
        let mut caps = Map::new();
        for (k, ours) in [
            ("max_msg_fds", json!(proto::MAX_MSG_FDS)),
            ("max_data_xfer_size", json!(proto::MAX_DATA_XFER)),
            ("max_dma_maps", json!(crate::dma::MAX_MAPS)),
            ("pgsizes", json!(4096)),
            ("write_multiple", json!(true)),
        ] {
            if proposed.contains_key(k) {
                caps.insert(k.to_string(), ours);
            }
        }
        let mut out = proto::Version {
            major: proto::MAJOR,
            minor: v.minor.min(proto::MINOR),
        }
        .as_bytes()
        .to_vec();
        out.extend_from_slice(json!({ "capabilities": caps }).to_string().as_bytes());
        out.push(0);
        self.negotiated = true;
        Ok((out, vec![]))
    }

    fn dma_map(&mut self, p: &[u8], mut fds: Vec<OwnedFd>) -> Reply {
        let (m, _) = view::<proto::DmaMap>(p)?;
        if fds.len() > 1 {
            return Err(Errno::EINVAL);
        }
        self.own()?;
        let space = self.dev.dma_space(self.func, self.id).ok_or(Errno::EBUSY)?;
        space.map(&m, fds.pop(), self.peer.clone())?;
        Ok((vec![], vec![]))
    }

    fn dma_unmap(&mut self, p: &[u8]) -> Reply {
        let (u, _) = view::<proto::DmaUnmap>(p)?;
        fits::<proto::DmaUnmap>(u.argsz)?;
        self.own()?;
        let space = self.dev.dma_space(self.func, self.id).ok_or(Errno::EBUSY)?;
        space.unmap(&u)?;
        Ok((u.as_bytes().to_vec(), vec![]))
    }

    fn region_info(&self, p: &[u8]) -> Reply {
        let (req, _) = view::<proto::RegionInfo>(p)?;
        fits::<proto::RegionInfo>(req.argsz)?;
        if req.index >= region::COUNT {
            return Err(Errno::EINVAL);
        }
        let size = self.dev.region_size(self.func, req.index).unwrap_or(0);
        let mut info = proto::RegionInfo {
            argsz: 32,
            flags: 0,
            index: req.index,
            cap_offset: 0,
            size,
            offset: 0,
        };
        if size == 0 {
            return Ok((info.as_bytes().to_vec(), vec![]));
        }
        info.flags = proto::REGION_READ | proto::REGION_WRITE;
        let mut caps = Vec::new();
        let mut fds = Vec::new();
        if let Some((fd, area, end)) = self.dev.mmap_area(self.func, req.index) {
            info.flags |= proto::REGION_MMAP | proto::REGION_CAPS;
            info.cap_offset = 32;
            caps.extend_from_slice(
                proto::CapHeader {
                    id: proto::CAP_SPARSE_MMAP,
                    version: 1,
                    next: 0,
                }
                .as_bytes(),
            );
            caps.extend_from_slice(
                proto::SparseMmap {
                    nr_areas: 1,
                    reserved: 0,
                }
                .as_bytes(),
            );
            caps.extend_from_slice(
                proto::SparseArea {
                    offset: area,
                    size: end - area,
                }
                .as_bytes(),
            );
            fds.push(fd.as_raw_fd());
        }
        info.argsz = 32 + caps.len() as u32;
        if req.argsz < info.argsz {
            // As libvfio-user answers a query too small for the capabilities: the size
            // needed, and neither capabilities nor a descriptor the client did not make room
            // for. Unlike kernel VFIO, the CAPS flag is cleared too: QEMU's vfio-user client
            // refuses CAPS with a cap_offset outside the reply before it retries.
            info.flags &= !proto::REGION_CAPS;
            info.cap_offset = 0;
            return Ok((info.as_bytes().to_vec(), vec![]));
        }
        let mut out = info.as_bytes().to_vec();
        out.extend_from_slice(&caps);
        Ok((out, fds))
    }

    fn irq_info(&self, p: &[u8]) -> Reply {
        let (req, _) = view::<proto::IrqInfo>(p)?;
        fits::<proto::IrqInfo>(req.argsz)?;
        let (flags, count) = match req.index {
            proto::IRQ_MSIX => (
                proto::IRQ_INFO_EVENTFD | proto::IRQ_INFO_MASKABLE | proto::IRQ_INFO_NORESIZE,
                self.dev.msix_count(self.func).map_err(access_errno)?,
            ),
            // Like vfio-pci for a PCIe function: one error and one request notifier, which
            // QEMU looks for (error recovery, and unplug when the function goes away).
            proto::IRQ_ERR | proto::IRQ_REQ => (proto::IRQ_INFO_EVENTFD, 1),
            proto::IRQ_INTX | proto::IRQ_MSI => (proto::IRQ_INFO_EVENTFD, 0),
            _ => return Err(Errno::EINVAL),
        };
        Ok((
            proto::IrqInfo {
                argsz: 16,
                flags,
                index: req.index,
                count,
            }
            .as_bytes()
            .to_vec(),
            vec![],
        ))
    }

    fn set_irqs(&mut self, p: &[u8], fds: Vec<OwnedFd>) -> Reply {
        let (s, data) = view::<proto::IrqSet>(p)?;
        let data_kind =
            s.flags & (proto::IRQ_DATA_NONE | proto::IRQ_DATA_BOOL | proto::IRQ_DATA_EVENTFD);
        let action = s.flags
            & (proto::IRQ_ACTION_MASK | proto::IRQ_ACTION_UNMASK | proto::IRQ_ACTION_TRIGGER);
        if data_kind.count_ones() != 1 || action.count_ones() != 1 || s.flags & !0x3F != 0 {
            return Err(Errno::EINVAL);
        }
        // As the kernel's VFIO_DEVICE_SET_IRQS: argsz covers the header and a BOOL's array
        // (an EVENTFD's descriptors travel beside the message), count 0 only with DATA_NONE
        // and TRIGGER (disable all), and descriptors only with DATA_EVENTFD.
        let head = std::mem::size_of::<proto::IrqSet>();
        let need = head
            + if data_kind == proto::IRQ_DATA_BOOL {
                s.count as usize
            } else {
                0
            };
        if (s.argsz as usize) < need || head + data.len() < need {
            return Err(Errno::EINVAL);
        }
        if s.count == 0
            && !(data_kind == proto::IRQ_DATA_NONE && action == proto::IRQ_ACTION_TRIGGER)
        {
            return Err(Errno::EINVAL);
        }
        if !fds.is_empty() && data_kind != proto::IRQ_DATA_EVENTFD {
            return Err(Errno::EINVAL);
        }
        self.own()?;
        match s.index {
            proto::IRQ_MSIX => {}
            proto::IRQ_ERR | proto::IRQ_REQ => {
                return self.set_notifier(&s, data_kind, action, data, fds)
            }
            // No INTx or MSI: only "disable all" is meaningful.
            proto::IRQ_INTX | proto::IRQ_MSI => {
                return if data_kind == proto::IRQ_DATA_NONE && s.count == 0 {
                    Ok((vec![], vec![]))
                } else {
                    Err(Errno::EINVAL)
                };
            }
            _ => return Err(Errno::EINVAL),
        }
        // The whole range first: per-vector paths below then index within it.
        s.start.checked_add(s.count).ok_or(Errno::EINVAL)?;
        let e = |r: Result<(), AccessError>| r.map_err(access_errno);
        match (data_kind, action) {
            (proto::IRQ_DATA_EVENTFD, proto::IRQ_ACTION_TRIGGER) => {
                if !fds.is_empty() && fds.len() != s.count as usize {
                    return Err(Errno::EINVAL);
                }
                let fds = crate::sys::adopt_eventfds(fds)?;
                e(self.dev.set_msix_eventfds(self.func, s.start, s.count, fds))?;
                self.irqs_installed = true;
            }
            (proto::IRQ_DATA_NONE, proto::IRQ_ACTION_TRIGGER) if s.count == 0 => {
                self.dev.clear_msix(self.func)
            }
            (proto::IRQ_DATA_NONE, proto::IRQ_ACTION_TRIGGER) => {
                e(self.dev.signal_msix(self.func, s.start, s.count))?
            }
            (proto::IRQ_DATA_BOOL, proto::IRQ_ACTION_TRIGGER) => {
                let flags = data.get(..s.count as usize).ok_or(Errno::EINVAL)?;
                for (i, &b) in flags.iter().enumerate() {
                    if b != 0 {
                        e(self.dev.signal_msix(self.func, s.start + i as u32, 1))?;
                    }
                }
            }
            (proto::IRQ_DATA_NONE, a) => {
                e(self
                    .dev
                    .mask_msix(self.func, s.start, s.count, a == proto::IRQ_ACTION_MASK))?
            }
            (proto::IRQ_DATA_BOOL, a) => {
                let flags = data.get(..s.count as usize).ok_or(Errno::EINVAL)?;
                for (i, &b) in flags.iter().enumerate() {
                    if b != 0 {
                        e(self.dev.mask_msix(
                            self.func,
                            s.start + i as u32,
                            1,
                            a == proto::IRQ_ACTION_MASK,
                        ))?;
                    }
                }
            }
            _ => return Err(Errno::EINVAL),
        }
        Ok((vec![], vec![]))
    }

    /// The one-vector ERR and REQ indexes: install or clear the eventfd, or trigger it.
    fn set_notifier(
        &mut self,
        s: &proto::IrqSet,
        data_kind: u32,
        action: u32,
        data: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Reply {
        if action != proto::IRQ_ACTION_TRIGGER || s.start != 0 || s.count > 1 {
            return Err(Errno::EINVAL);
        }
        let slot = if s.index == proto::IRQ_ERR {
            &mut self.err_fd
        } else {
            &mut self.req_fd
        };
        match data_kind {
            proto::IRQ_DATA_EVENTFD if s.count == 1 && fds.len() <= 1 => {
                *slot = crate::sys::adopt_eventfds(fds)?.pop()
            }
            proto::IRQ_DATA_NONE if s.count == 0 => *slot = None,
            proto::IRQ_DATA_NONE if s.count == 1 => signal(slot),
            proto::IRQ_DATA_BOOL if s.count == 1 => {
                if *data.first().ok_or(Errno::EINVAL)? != 0 {
                    signal(slot);
                }
            }
            _ => return Err(Errno::EINVAL),
        }
        Ok((vec![], vec![]))
    }

    fn read_region(&self, idx: u32, offset: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let r = if idx == region::CONFIG {
            self.dev.config_read(self.func, offset, buf)
        } else {
            self.dev.bar_read(self.func, idx, offset, buf)
        };
        r.map_err(access_errno)
    }

    fn write_region(&self, idx: u32, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let r = if idx == region::CONFIG {
            self.dev.config_write(self.func, offset, data)
        } else {
            self.dev.bar_write(self.func, idx, offset, data, self.id)
        };
        r.map_err(access_errno)
    }

    fn region_read(&self, p: &[u8]) -> Reply {
        let (a, rest) = view::<proto::RegionAccess>(p)?;
        if !rest.is_empty() || a.count as usize > proto::MAX_DATA_XFER || a.count == 0 {
            return Err(Errno::EINVAL);
        }
        let mut out = a.as_bytes().to_vec();
        let mut buf = vec![0u8; a.count as usize];
        self.read_region(a.region, a.offset, &mut buf)?;
        out.extend_from_slice(&buf);
        Ok((out, vec![]))
    }

    fn region_write(&self, p: &[u8]) -> Reply {
        let (a, data) = view::<proto::RegionAccess>(p)?;
        if data.len() != a.count as usize || a.count as usize > proto::MAX_DATA_XFER || a.count == 0
        {
            return Err(Errno::EINVAL);
        }
        self.write_region(a.region, a.offset, data)?;
        Ok((a.as_bytes().to_vec(), vec![]))
    }

    fn write_multi(&self, p: &[u8]) -> Reply {
        let (n, rest) = view::<u64>(p)?;
        let entries =
            <[proto::WriteMultiEntry]>::ref_from_bytes(rest).map_err(|_| Errno::EINVAL)?;
        if entries.len() as u64 != n {
            return Err(Errno::EINVAL);
        }
        for e in entries {
            if e.count == 0 || e.count > 8 {
                return Err(Errno::EINVAL);
            }
            self.write_region(e.region, e.offset, &e.data[..e.count as usize])?;
        }
        Ok((n.as_bytes().to_vec(), vec![]))
    }
}
