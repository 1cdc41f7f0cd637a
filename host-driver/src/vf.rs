//! The VF job library: a user-space driver for one VF. It maps memory of its own (a sealed
//! memfd) for the device, lays submission and completion rings and data buffers in it, hands
//! it to the device for DMA, programs queue blocks, submits jobs and reaps completions by
//! polling (the device polls the rings too: no doorbell is rung).
//!
//! Formats and ordering are `shared_abi::jobs`. Over vfio-user the VF's socket is the device;
//! IOVAs are the client's choice ([`IOVA_BASE`] upward).

use crate::error::{Error, Result};
use crate::transport::Transport;
use crate::transport::{cap_id, command, header, msix};
use crate::vfio_user::VfioUser;
use shared_abi::jobs::{self, Cqe, JobOp, JobStatus, Sqe, SqeHead};
use shared_abi::regs::{self, queue, vf, QueueCtrl, VfStatus};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};
use vfio_user_wire::proto;
use vfio_user_wire::shared::Shared;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromZeros, IntoBytes};

/// Where the library's memory starts in the VF's IOVA space.
pub const IOVA_BASE: u64 = 0x1_0000_0000;
const BAR0: u32 = 0;
const BAR2: u32 = 2;
/// How long [`VfDev::open`] waits for the VF to become ready.
const READY_WAIT: Duration = Duration::from_secs(2);
/// Bytes per BAR2 message (well under the 1 MiB data transfer limit).
const BAR2_STEP: usize = 64 << 10;

/// Where a job reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    /// The library's memory (host memory, by IOVA).
    Host(Buf),
    /// The VF's device memory, by VF virtual address: translated by the VF's stage-1 table
    /// ([`VfDev::set_translation`]), then by the firmware's stage 2.
    Device(u64),
}

impl From<Buf> for Addr {
    fn from(b: Buf) -> Self {
        Addr::Host(b)
    }
}

impl Addr {
    fn wire(self) -> (u64, bool) {
        match self {
            Addr::Host(b) => (b.iova(), false),
            Addr::Device(va) => (va, true),
        }
    }
}

/// A job to submit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Job {
    /// What it does.
    pub op: JobOp,
    /// Source (COPY, CRC32C, SHA256).
    pub src: Option<Addr>,
    /// Destination (COPY, FILL, SHA256).
    pub dst: Option<Addr>,
    /// Bytes.
    pub len: u32,
    /// FILL byte or CRC32C seed.
    pub value: u32,
}

/// A completed job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The tag [`Queue::submit`] returned.
    pub tag: u32,
    /// How it went.
    pub status: JobStatus,
    /// CRC32C: the CRC; COPY and FILL: bytes written.
    pub result: u64,
}

/// A region of the library's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buf {
    /// Offset in the memory.
    pub off: usize,
    /// Bytes.
    pub len: usize,
}

impl Buf {
    /// Its address as the device sees it.
    pub fn iova(&self) -> u64 {
        IOVA_BASE + self.off as u64
    }
}

/// How the library reaches a VF: its vfio-user socket ([`VfioUser`]) or the kernel's VFIO
/// (`kernel::vf::KernelVf`).
pub trait VfPort: Send {
    /// Reads a BAR (0: registers, 2: device memory).
    fn bar_read(&self, bar: u32, off: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes a BAR.
    fn bar_write(&self, bar: u32, off: u64, data: &[u8]) -> Result<()>;
    /// Reads config space.
    fn cfg_read(&self, off: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes config space.
    fn cfg_write(&self, off: u64, data: &[u8]) -> Result<()>;
    /// Makes `mem` (backed by `fd` from offset 0) the device's DMA memory at `iova`.
    fn dma_map(&self, iova: u64, mem: &Shared, fd: std::os::fd::BorrowedFd<'_>) -> Result<()>;
    /// Wires MSI-X `vector` to an eventfd.
    fn msix_eventfd(&self, vector: u32, fd: std::os::fd::BorrowedFd<'_>) -> Result<()>;
    /// The VF, for messages.
    fn describe(&self) -> String;
}

impl VfPort for VfioUser {
    fn bar_read(&self, bar: u32, off: u64, buf: &mut [u8]) -> Result<()> {
        self.region_read(bar, off, buf)
    }
    fn bar_write(&self, bar: u32, off: u64, data: &[u8]) -> Result<()> {
        self.region_write(bar, off, data)
    }
    fn cfg_read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.config_read(off, buf)
    }
    fn cfg_write(&self, off: u64, data: &[u8]) -> Result<()> {
        self.config_write(off, data)
    }
    fn dma_map(&self, iova: u64, mem: &Shared, fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
        let m = proto::DmaMap {
            argsz: 32,
            flags: proto::DMA_FLAG_READ | proto::DMA_FLAG_WRITE,
            offset: 0,
            addr: iova,
            size: mem.len() as u64,
        };
        self.call(
            proto::cmd::DMA_MAP,
            m.as_bytes(),
            &[fd.as_raw_fd()],
            "DMA map",
        )?;
        Ok(())
    }
    fn msix_eventfd(&self, vector: u32, fd: std::os::fd::BorrowedFd<'_>) -> Result<()> {
        self.set_msix_eventfds(vector, &[fd])
    }
    fn describe(&self) -> String {
        self.path().display().to_string()
    }
}

/// Where a VF is: its vfio-user socket, or a PCI address for the kernel's VFIO (with the
/// VF token when its PF is bound to vfio-pci on this host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A device model's VF socket.
    Socket(std::path::PathBuf),
    /// A PCI function bound to vfio-pci.
    Pci {
        /// Its address.
        address: String,
        /// The VF token its PF's vfio-pci wants, if one is set.
        vf_token: Option<String>,
    },
}

impl Target {
    /// What `-d` names: a socket path or a PCI address.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match crate::DeviceAddr::parse(s)? {
            crate::DeviceAddr::Socket(p) => Target::Socket(p),
            crate::DeviceAddr::Pci(address) => Target::Pci {
                address,
                vf_token: None,
            },
        })
    }

    /// Where a hand-off says the VF is.
    pub fn of(e: crate::transport::VfEndpoint) -> Self {
        match e {
            crate::transport::VfEndpoint::Socket { path } => Target::Socket(path),
            crate::transport::VfEndpoint::Pci {
                address, vf_token, ..
            } => Target::Pci { address, vf_token },
        }
    }

    /// Opens the VF for jobs with `mem` bytes of this process's memory ([`VfDev::open`]).
    pub fn open(&self, mem: usize) -> Result<VfDev> {
        match self {
            Target::Socket(p) => VfDev::open(p, mem),
            Target::Pci { address, vf_token } => {
                let sysfs = crate::kernel::Sysfs::default();
                let port = crate::kernel::vf::KernelVf::open(address, &sysfs, vf_token.as_deref())?;
                VfDev::with_port(Box::new(port), mem)
            }
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Socket(p) => write!(f, "{}", p.display()),
            Target::Pci { address, .. } => f.write_str(address),
        }
    }
}

/// One VF, opened for jobs.
pub struct VfDev {
    t: Box<dyn VfPort>,
    mem: Shared,
    _memfd: OwnedFd,
    size: usize,
    next: usize,
    queues: u32,
}

impl std::fmt::Debug for VfDev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfDev")
            .field("vf", &self.t.describe())
            .field("mem", &self.size)
            .finish()
    }
}

impl VfDev {
    /// Opens the VF behind its vfio-user `socket` and gives the device `mem_bytes` of this
    /// process's memory (rounded up to pages) for rings and buffers.
    pub fn open(socket: &Path, mem_bytes: usize) -> Result<Self> {
        Self::with_port(Box::new(VfioUser::connect(socket, false)?), mem_bytes)
    }

    /// The same over any port (the kernel's VFIO: `kernel::vf::KernelVf`).
    pub fn with_port(t: Box<dyn VfPort>, mem_bytes: usize) -> Result<Self> {
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let mut id = [0u8; 4];
        t.bar_read(BAR0, vf::MAGIC.offset() as u64, &mut id)?;
        if u32::from_le_bytes(id) != regs::VF_MAGIC {
            return Err(Error::NotOurDevice(format!(
                "{} is not an accelvirt VF",
                t.describe()
            )));
        }
        // The firmware enables a VF shortly after SR-IOV shows it, and a reset VF comes back
        // by itself: wait for that (as a driver waits for its function to be ready).
        let deadline = Instant::now() + READY_WAIT;
        loop {
            let status = VfStatus::from_bits_retain(read32(&*t, vf::STATUS.offset())?);
            if status.contains(VfStatus::ENABLED) {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Invalid(format!(
                    "VF {} is not enabled after {} s (its state allows no jobs)",
                    t.describe(),
                    READY_WAIT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let queues = read32(&*t, vf::QUEUE_COUNT.offset())?;
        let size = mem_bytes.max(1).div_ceil(4096) * 4096;
        let fd = memfd_create(
            c"accelvirt-vf-dma",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(|e| Error::Io(e.into()))?;
        nix::unistd::ftruncate(&fd, size as i64).map_err(|e| Error::Io(e.into()))?;
        // The device may rely on the memory staying: it can neither shrink nor grow.
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
        )
        .map_err(|e| Error::Io(e.into()))?;
        let mem = Shared::map(fd.as_fd(), 0, size).map_err(Error::Io)?;
        t.dma_map(IOVA_BASE, &mem, fd.as_fd())?;
        Ok(VfDev {
            t,
            mem,
            _memfd: fd,
            size,
            next: 0,
            queues,
        })
    }

    /// The VF's registers and configuration space, for accesses the job library does not
    /// make itself (a remote VF's exporter forwards its importer's).
    pub fn port(&self) -> &dyn VfPort {
        &*self.t
    }

    /// Function level reset (PCIe Initiate FLR, which vfio-pci and the device model both
    /// carry out): the VF's queues and memory are cleared. This handle's queues are gone
    /// with it; open the VF again to use it.
    pub fn flr(self) -> Result<()> {
        let cap = find_cap(&*self.t, cap_id::PCIE)
            .ok_or_else(|| Error::NotOurDevice("the VF has no PCI Express capability".into()))?;
        let devctl = cap + crate::transport::pcie::DEVCTL as u64;
        let mut b = [0u8; 2];
        self.t.cfg_read(devctl, &mut b)?;
        let v = u16::from_le_bytes(b) | crate::transport::pcie::DEVCTL_FLR;
        self.t.cfg_write(devctl, &v.to_le_bytes())
    }

    /// Queues the VF owns.
    pub fn queue_count(&self) -> u32 {
        self.queues
    }

    /// Bytes of device memory the VF owns (VF-physical addresses 0 up to this).
    pub fn device_mem_size(&self) -> Result<u64> {
        Ok(read32(&*self.t, vf::MEM_SIZE_LO.offset())? as u64
            | (read32(&*self.t, vf::MEM_SIZE_HI.offset())? as u64) << 32)
    }

    /// Writes the VF's device memory at VF-physical address `pa` (through BAR2: stage 2 only).
    pub fn write_device(&self, pa: u64, data: &[u8]) -> Result<()> {
        for (i, c) in data.chunks(BAR2_STEP).enumerate() {
            self.t.bar_write(BAR2, pa + (i * BAR2_STEP) as u64, c)?;
        }
        Ok(())
    }

    /// Reads the VF's device memory at VF-physical address `pa`.
    pub fn read_device(&self, pa: u64, out: &mut [u8]) -> Result<()> {
        for (i, c) in out.chunks_mut(BAR2_STEP).enumerate() {
            self.t.bar_read(BAR2, pa + (i * BAR2_STEP) as u64, c)?;
        }
        Ok(())
    }

    /// Points the device at the VF's stage-1 table: `pages` entries (`jobs::xlat`) at
    /// VF-physical address `root` in its device memory. Flushes the VF's IOTLB.
    pub fn set_translation(&self, root: u64, pages: u32) -> Result<()> {
        write32(&*self.t, vf::XLAT_ROOT_LO.offset() as u64, root as u32)?;
        write32(
            &*self.t,
            vf::XLAT_ROOT_HI.offset() as u64,
            (root >> 32) as u32,
        )?;
        write32(&*self.t, vf::XLAT_PAGES.offset() as u64, pages)
    }

    /// Flushes the VF's IOTLB: needed after changing entries of the stage-1 table.
    pub fn invalidate(&self) -> Result<()> {
        write32(&*self.t, vf::XLAT_INVALIDATE.offset() as u64, 1)
    }

    /// The VF's IOTLB (hits, misses).
    pub fn iotlb(&self) -> Result<(u32, u32)> {
        Ok((
            read32(&*self.t, vf::IOTLB_HITS.offset())?,
            read32(&*self.t, vf::IOTLB_MISSES.offset())?,
        ))
    }

    /// The VF's fault count and last fault code.
    pub fn faults(&self) -> Result<(u32, u32)> {
        Ok((
            read32(&*self.t, vf::FAULT_COUNT.offset())?,
            read32(&*self.t, vf::FAULT_CODE.offset())?,
        ))
    }

    /// Takes `len` bytes (aligned to `align`) of the memory.
    pub fn alloc(&mut self, len: usize, align: usize) -> Result<Buf> {
        let off = self.next.div_ceil(align.max(1)) * align.max(1);
        let end = off
            .checked_add(len)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "out of job memory: {len} bytes wanted, {} of {} used",
                    self.next, self.size
                ))
            })?;
        self.next = end;
        Ok(Buf { off, len })
    }

    /// Writes into a buffer.
    pub fn write(&self, b: Buf, at: usize, data: &[u8]) -> Result<()> {
        if at.checked_add(data.len()).is_none_or(|e| e > b.len) || !self.mem.write(b.off + at, data)
        {
            return Err(Error::Invalid("write past the buffer".into()));
        }
        Ok(())
    }

    /// Reads from a buffer.
    pub fn read(&self, b: Buf, at: usize, out: &mut [u8]) -> Result<()> {
        if at.checked_add(out.len()).is_none_or(|e| e > b.len) || !self.mem.read(b.off + at, out) {
            return Err(Error::Invalid("read past the buffer".into()));
        }
        Ok(())
    }

    /// Sets up VF-local queue `q` with `depth` entries per ring and enables it; completions
    /// are reaped by polling.
    pub fn queue(&mut self, q: u32, depth: u32) -> Result<Queue> {
        self.setup_queue(q, depth, None)
    }

    /// The same, and the device raises the VF's MSI-X `vector` after each completion: [`wait`]
    /// then sleeps on it instead of polling. Enables bus mastering and MSI-X on the VF and
    /// registers an eventfd for the vector.
    ///
    /// [`wait`]: VfDev::wait
    pub fn queue_with_irq(&mut self, q: u32, depth: u32, vector: u32) -> Result<Queue> {
        use nix::sys::eventfd::{EfdFlags, EventFd};
        let cap = find_msix(&*self.t)?;
        let mut b = [0u8; 2];
        self.t.cfg_read(cap + msix::CTRL as u64, &mut b)?;
        let table = (u16::from_le_bytes(b) & msix::CTRL_TABLE_SIZE) as u32 + 1;
        if vector >= table {
            return Err(Error::Invalid(format!(
                "vector {vector}: the VF has {table} MSI-X vectors"
            )));
        }
        // MSI-X enabled, function not masked; a completion interrupt is a memory write, so the
        // VF must be a bus master.
        let ctl = (u16::from_le_bytes(b) | msix::CTRL_ENABLE) & !msix::CTRL_FUNCTION_MASK;
        self.t
            .cfg_write(cap + msix::CTRL as u64, &ctl.to_le_bytes())?;
        let command = header::COMMAND as u64;
        self.t.cfg_read(command, &mut b)?;
        self.t.cfg_write(
            command,
            &(u16::from_le_bytes(b) | command::BUS_MASTER).to_le_bytes(),
        )?;
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| Error::Io(e.into()))?;
        self.t.msix_eventfd(vector, efd.as_fd())?;
        self.setup_queue(q, depth, Some((vector, efd)))
    }

    fn setup_queue(
        &mut self,
        q: u32,
        depth: u32,
        irq: Option<(u32, nix::sys::eventfd::EventFd)>,
    ) -> Result<Queue> {
        if q >= self.queues {
            return Err(Error::Invalid(format!(
                "queue {q}: the VF owns {} queues",
                self.queues
            )));
        }
        if !depth.is_power_of_two() || !(jobs::MIN_RING..=jobs::MAX_RING).contains(&depth) {
            return Err(Error::Invalid(format!(
                "queue depth {depth}: a power of two from {} to {}",
                jobs::MIN_RING,
                jobs::MAX_RING
            )));
        }
        let sq = self.alloc(depth as usize * jobs::SQE_SIZE, 4096)?;
        let cq = self.alloc(depth as usize * jobs::CQE_SIZE, 4096)?;
        // A fresh ring: every phase bit 0, so nothing looks new on the first lap.
        self.write(sq, 0, &vec![0; sq.len])?;
        self.write(cq, 0, &vec![0; cq.len])?;
        let base = vf::queue(q as usize) as u64;
        let w = |r: regs::Reg, v: u32| write32(&*self.t, base + r.offset() as u64, v);
        let mut ctrl = QueueCtrl::ENABLE;
        w(queue::CONTROL, 0)?;
        w(queue::SQ_BASE_LO, sq.iova() as u32)?;
        w(queue::SQ_BASE_HI, (sq.iova() >> 32) as u32)?;
        w(queue::SQ_SIZE, depth)?;
        w(queue::CQ_BASE_LO, cq.iova() as u32)?;
        w(queue::CQ_BASE_HI, (cq.iova() >> 32) as u32)?;
        w(queue::CQ_SIZE, depth)?;
        if let Some((vector, _)) = &irq {
            w(queue::MSIX_VECTOR, *vector)?;
            ctrl |= QueueCtrl::IRQ_ENABLE;
        }
        w(queue::CONTROL, ctrl.bits())?;
        Ok(Queue {
            q,
            sq,
            cq,
            depth,
            sq_tail: 0,
            sq_phase: 1,
            cq_head: 0,
            cq_phase: 1,
            inflight: 0,
            next_tag: 0,
            irq: irq.map(|(_, fd)| fd),
            interrupts: 0,
        })
    }

    /// The queue's STATUS register (`shared_abi::jobs::queue_status`).
    pub fn queue_status(&self, q: &Queue) -> Result<u32> {
        read32(&*self.t, vf::queue(q.q as usize) + queue::STATUS.offset())
    }

    /// Submits a job; returns its tag. Fails if the queue is full (reap completions first).
    pub fn submit(&self, q: &mut Queue, job: &Job) -> Result<u32> {
        if q.inflight >= q.depth {
            return Err(Error::Invalid("queue full: reap completions first".into()));
        }
        let tag = q.next_tag;
        q.next_tag = q.next_tag.wrapping_add(1);
        let mut e = Sqe::new_zeroed();
        let (src, src_dev) = job.src.map_or((0, false), Addr::wire);
        let (dst, dst_dev) = job.dst.map_or((0, false), Addr::wire);
        e.tag = U32::new(tag);
        e.src = U64::new(src);
        e.dst = U64::new(dst);
        e.len = U32::new(job.len);
        e.value = U32::new(job.value);
        let head = SqeHead {
            phase: q.sq_phase,
            version: jobs::VERSION,
            op: job.op.wire(),
            flags: if src_dev { jobs::flags::SRC_DEVICE } else { 0 }
                | if dst_dev { jobs::flags::DST_DEVICE } else { 0 },
        };
        let at = q.sq.off + q.sq_tail as usize * jobs::SQE_SIZE;
        // Body first, then the head dword hands the entry over (shared_abi::jobs).
        self.mem.write(at + 4, &e.as_bytes()[4..]);
        self.mem.publish32(at, head.to_word());
        q.sq_tail += 1;
        if q.sq_tail == q.depth {
            q.sq_tail = 0;
            q.sq_phase ^= 1;
        }
        q.inflight += 1;
        Ok(tag)
    }

    /// The next completion, if one has arrived.
    pub fn poll(&self, q: &mut Queue) -> Option<Completion> {
        let at = q.cq.off + q.cq_head as usize * jobs::CQE_SIZE;
        let word = self.mem.observe32(at + Cqe::STATUS_OFFSET)?;
        if Cqe::phase_of(word) != q.cq_phase {
            return None;
        }
        let result = self.mem.read32(at)? as u64 | (self.mem.read32(at + 4)? as u64) << 32;
        let tag = self.mem.read32(at + 8)?;
        q.cq_head += 1;
        if q.cq_head == q.depth {
            q.cq_head = 0;
            q.cq_phase ^= 1;
        }
        q.inflight = q.inflight.saturating_sub(1);
        Some(Completion {
            tag,
            status: Cqe::status_of(word).unwrap_or(JobStatus::BadDescriptor),
            result,
        })
    }

    /// Waits for the next completion: spins briefly, then sleeps on the queue's interrupt if
    /// it has one, else in short steps. A queue the device refused (STATUS ≠ 0) or a silent
    /// device is an error, not a hang.
    pub fn wait(&self, q: &mut Queue, timeout: Duration) -> Result<Completion> {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if let Some(c) = self.poll(q) {
                return Ok(c);
            }
            spins += 1;
            if spins < 20_000 {
                std::hint::spin_loop();
                continue;
            }
            let st = self.queue_status(q)?;
            if st != jobs::queue_status::OK {
                return Err(Error::Invalid(format!(
                    "the device stopped queue {} (status {st})",
                    q.q
                )));
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(Error::Timeout {
                    what: "job completion",
                    ms: timeout.as_millis() as u64,
                });
            }
            match &q.irq {
                Some(fd) => {
                    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
                    let ms = left.as_millis().min(100) as u16;
                    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                    if poll(&mut fds, PollTimeout::from(ms.max(1))).unwrap_or(0) > 0 {
                        if let Ok(n) = fd.read() {
                            q.interrupts += n;
                        }
                    }
                }
                None => std::thread::sleep(Duration::from_micros(50)),
            }
        }
    }
}

/// One queue pair of a [`VfDev`].
#[derive(Debug)]
pub struct Queue {
    q: u32,
    sq: Buf,
    cq: Buf,
    depth: u32,
    sq_tail: u32,
    sq_phase: u8,
    cq_head: u32,
    cq_phase: u8,
    inflight: u32,
    next_tag: u32,
    irq: Option<nix::sys::eventfd::EventFd>,
    interrupts: u64,
}

impl Queue {
    /// The eventfd the queue's completion vector signals (a queue made with
    /// [`VfDev::queue_with_irq`]), for a loop that waits on it beside other descriptors;
    /// [`Queue::take_interrupts`] then consumes what it counted.
    pub fn irq_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.irq.as_ref().map(|fd| fd.as_fd())
    }

    /// Consumes the interrupts signalled since the last call (adds them to
    /// [`Queue::interrupts`]); never waits.
    pub fn take_interrupts(&mut self) -> u64 {
        let n = self.irq.as_ref().and_then(|fd| fd.read().ok()).unwrap_or(0);
        self.interrupts += n;
        n
    }

    /// Completion interrupts this queue's waits have consumed.
    pub fn interrupts(&self) -> u64 {
        self.interrupts
    }
    /// Jobs submitted and not yet reaped.
    pub fn inflight(&self) -> u32 {
        self.inflight
    }
    /// Ring entries.
    pub fn depth(&self) -> u32 {
        self.depth
    }
}

fn read32(t: &dyn VfPort, off: usize) -> Result<u32> {
    let mut b = [0u8; 4];
    t.bar_read(BAR0, off as u64, &mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn write32(t: &dyn VfPort, off: u64, v: u32) -> Result<()> {
    t.bar_write(BAR0, off, &v.to_le_bytes())
}

/// The MSI-X capability in the VF's config space list.
fn find_msix(t: &dyn VfPort) -> Result<u64> {
    find_cap(t, cap_id::MSIX)
        .ok_or_else(|| Error::NotOurDevice("the VF has no MSI-X capability".into()))
}

/// A capability in the VF's config space list.
fn find_cap(t: &dyn VfPort, id: u8) -> Option<u64> {
    let mut p = [0u8; 1];
    t.cfg_read(header::CAP_PTR as u64, &mut p).ok()?;
    let mut pos = (p[0] & 0xFC) as u64;
    for _ in 0..48 {
        if pos < 0x40 {
            break;
        }
        let mut h = [0u8; 2];
        t.cfg_read(pos, &mut h).ok()?;
        if h[0] == id {
            return Some(pos);
        }
        pos = (h[1] & 0xFC) as u64;
    }
    None
}
