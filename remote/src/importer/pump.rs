//! The importer's engine: one thread that polls the guest's submission rings (the polling
//! patent, as the local queue engine does), converts each job into a SUBMIT carrying its entry
//! and input bytes, forwards the VMM's register accesses, and turns each COMPLETE back into
//! guest memory: the output bytes first, then the completion entry, then the queue's vector.
//!
//! The link may drop at any time. Jobs without a completion stay in the session's window
//! ([`Outstanding`]); the pump reconnects, resumes the session and submits them again (the
//! exporter answers those it finished from its memory, never running one twice). If the
//! link stays down past its limit, every job in flight completes LINK_DOWN, the VF records a
//! LINK_DOWN fault, and new jobs complete LINK_DOWN at once until the link is back (then a new
//! session starts).
use super::vf::{QueueRegs, RemoteVf};
use super::Dial;
use crate::convert;
use crate::link::Link;
use crate::session::Outstanding;
use crate::wire::{space, Ack, Data, Hello, Message, Ping, RegRead, RegWrite, Submit, WithData};
use nix::poll::{PollFd, PollFlags};
use shared_abi::jobs::{self, queue_status, Cqe, JobStatus, Sqe, SqeHead};
use shared_abi::regs::QueueCtrl;
use shared_abi::resources::VfFault;
use sim::dma::{Direct, Space};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zerocopy::{FromBytes, IntoBytes};

/// What the VMM's threads ask of the real VF.
#[derive(Debug)]
pub(crate) enum Req {
    /// A dword read; the answer (None: no answer) goes back on `reply`.
    Read {
        space: u32,
        offset: u64,
        reply: SyncSender<Option<u32>>,
    },
    /// A posted dword write.
    Write { space: u32, offset: u64, value: u32 },
    /// A function level reset; whether it was done goes back on `reply`.
    Reset { reply: SyncSender<bool> },
}

/// A job in the session's window: what is needed to submit it again and to complete it.
#[derive(Clone, Debug)]
pub(super) struct Job {
    queue: u32,
    epoch: u32,
    sqe: [u8; jobs::SQE_SIZE],
    tag: u32,
    data: Vec<u8>,
    output: Option<(u64, usize)>,
}

/// What the pump knows of one queue.
#[derive(Debug, Default)]
struct Run {
    epoch: u32,
    armed: bool,
    failed: bool,
    space: Option<Arc<Space>>,
    sq: Option<Direct>,
    cq: Option<Direct>,
    sq_size: u32,
    cq_size: u32,
    head: u32,
    phase: u8,
    tail: u32,
    cq_phase: u8,
}

/// Frames taken from the link per pass.
const BURST: usize = 64;
/// Input buffers kept for reuse (at most 1 MiB each).
const SPARE: usize = 16;
/// How long the pump polls the guest's rings after its last work before it naps: the gap
/// between a completion and the tenant's next job.
const SPIN: Duration = Duration::from_micros(200);
/// With jobs in flight and nothing else to do, how long the pump sleeps on the link (a
/// completion ends it at once); a job the guest publishes meanwhile waits at most this.
const IN_FLIGHT_WAIT: Duration = Duration::from_micros(50);
/// The nap once quiet: what a job after a quiet spell waits at most.
const NAP: Duration = Duration::from_micros(100);
/// Quiet before the pump naps longer, and that nap.
const QUIET_BEFORE_DEEP: Duration = Duration::from_millis(50);
const DEEP_NAP: Duration = Duration::from_millis(1);

pub(super) struct Pump {
    pub vf: Arc<RemoteVf>,
    pub dial: Dial,
    pub link: Option<Box<dyn Link>>,
    pub session: u64,
    pub out: Outstanding<Job>,
    pub rx: Receiver<Req>,
    pub stop: Arc<AtomicBool>,
    reads: HashMap<u32, SyncSender<Option<u32>>>,
    resets: HashMap<u32, SyncSender<bool>>,
    next_id: u32,
    runs: Vec<Run>,
    /// When the link went down (None while up).
    down_since: Option<Instant>,
    /// The link stayed down past its limit: jobs fail at once.
    failed_over: bool,
    next_dial: Instant,
    /// The large job not yet acknowledged, if any (at most one per session).
    large: Option<u64>,
    /// Output bytes of a large job that arrived in DATA frames so far.
    gathered: HashMap<u64, usize>,
    heard: Instant,
    ping: Option<(u64, Instant)>,
    pinged: Instant,
    /// Input buffers of finished jobs, for the next ones.
    spare: Vec<Vec<u8>>,
}

impl Pump {
    pub fn new(
        vf: Arc<RemoteVf>,
        dial: Dial,
        link: Box<dyn Link>,
        session: u64,
        credits: u32,
        rx: Receiver<Req>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        let queues = vf.queue_count as usize;
        vf.session.store(session, Ordering::Relaxed);
        Pump {
            vf,
            dial,
            link: Some(link),
            session,
            out: Outstanding::new(credits),
            rx,
            stop,
            reads: HashMap::new(),
            resets: HashMap::new(),
            next_id: 1,
            runs: (0..queues).map(|_| Run::default()).collect(),
            down_since: None,
            failed_over: false,
            next_dial: Instant::now(),
            large: None,
            gathered: HashMap::new(),
            heard: Instant::now(),
            ping: None,
            pinged: Instant::now(),
            spare: Vec::new(),
        }
    }

    /// Runs until told to stop.
    pub fn run(mut self) {
        crate::link::precise_timers();
        let mut last_work = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            let mut progress = false;
            if self.link.is_none() {
                self.redial();
            }
            progress |= self.requests();
            for q in 0..self.runs.len() {
                progress |= self.serve_queue(q);
            }
            progress |= self.receive();
            self.housekeeping();
            if let Some(l) = self.link.as_mut() {
                if let Err(e) = l.flush() {
                    self.lost(&e.to_string());
                }
            }
            if progress {
                last_work = Instant::now();
            } else {
                self.idle(last_work.elapsed());
            }
        }
    }

    /// A pass found nothing to do. The guest's rings have no doorbell (they are polled), so
    /// right after work the pump keeps polling them; with jobs in flight it sleeps on the
    /// link instead (their completions wake it, and the two cores stay with the exporter
    /// and the device); once quiet it naps, longer the longer the quiet.
    fn idle(&mut self, quiet: Duration) {
        let wait = if self.link.is_none() {
            std::thread::sleep(NAP);
            return;
        } else if !self.out.is_empty() {
            IN_FLIGHT_WAIT
        } else if quiet < SPIN {
            std::thread::yield_now();
            return;
        } else if quiet < QUIET_BEFORE_DEEP {
            NAP
        } else {
            DEEP_NAP
        };
        let Some(link) = self.link.as_ref() else {
            return;
        };
        let what = if link.backlog() > 0 {
            PollFlags::POLLIN | PollFlags::POLLOUT
        } else {
            PollFlags::POLLIN
        };
        let mut fds = [PollFd::new(link.fd(), what)];
        if let Err(e) = crate::link::wait_any(&mut fds, wait) {
            self.lost(&e.to_string());
        }
    }

    fn id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    fn queue(&mut self, m: &Message) {
        if let Some(l) = self.link.as_mut() {
            if let Err(e) = l.queue(m) {
                self.lost(&e.to_string());
            }
        }
    }

    /// The VMM's register accesses: sent while the link is up; refused once it has been
    /// down past its limit; left waiting (in order) in between.
    fn requests(&mut self) -> bool {
        if self.link.is_none() && !self.failed_over {
            return false;
        }
        let mut any = false;
        for _ in 0..super::vf::REQUESTS {
            let r = match self.rx.try_recv() {
                Ok(r) => r,
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => break,
            };
            any = true;
            if self.link.is_none() {
                match r {
                    Req::Read { reply, .. } => {
                        let _ = reply.try_send(None);
                    }
                    Req::Reset { reply } => {
                        let _ = reply.try_send(false);
                    }
                    Req::Write { .. } => self.vf.fault(VfFault::LinkDown),
                }
                continue;
            }
            let id = self.id();
            match r {
                Req::Read {
                    space,
                    offset,
                    reply,
                } => {
                    self.reads.insert(id, reply);
                    self.queue(&Message::RegRead(RegRead {
                        id: id.into(),
                        space: space.into(),
                        offset: offset.into(),
                    }));
                }
                Req::Write {
                    space,
                    offset,
                    value,
                } => self.queue(&Message::RegWrite(RegWrite {
                    id: id.into(),
                    space: space.into(),
                    offset: offset.into(),
                    value: value.into(),
                    reserved: 0.into(),
                })),
                Req::Reset { reply } => {
                    self.resets.insert(id, reply);
                    self.queue(&Message::RegWrite(RegWrite {
                        id: id.into(),
                        space: space::RESET.into(),
                        offset: 0.into(),
                        value: 1.into(),
                        reserved: 0.into(),
                    }));
                }
            }
        }
        any
    }

    /// The registers of queue `q` now.
    fn regs(&self, q: usize) -> QueueRegs {
        self.vf
            .regs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .queues[q]
    }

    /// Updates queue `q`'s device-written registers, unless it was re-armed meanwhile.
    fn set_regs(&self, q: usize, epoch: u32, f: impl FnOnce(&mut QueueRegs)) -> bool {
        let mut g = self.vf.regs.lock().unwrap_or_else(|e| e.into_inner());
        match g.queues.get_mut(q) {
            Some(r) if r.epoch == epoch => {
                f(r);
                true
            }
            _ => false,
        }
    }

    /// Takes the queue's new jobs (as many as the window has room for) and submits them.
    fn serve_queue(&mut self, q: usize) -> bool {
        let regs = self.regs(q);
        if self.runs[q].epoch != regs.epoch {
            self.runs[q] = Run {
                epoch: regs.epoch,
                ..Run::default()
            };
        }
        if self.runs[q].failed || regs.control & QueueCtrl::ENABLE.bits() == 0 {
            return false;
        }
        if !self.runs[q].armed && !self.arm(q, &regs) {
            return false;
        }
        let Some(space) = self.runs[q].space.clone() else {
            return false;
        };
        if space.revoked() {
            self.stop_queue(q, queue_status::DMA_ERROR);
            return false;
        }
        let mut took = false;
        while self.failed_over || self.out.has_room() {
            let run = &self.runs[q];
            let Some(sq) = run.sq.as_ref() else {
                break;
            };
            let at = run.head as u64 * jobs::SQE_SIZE as u64;
            let head = match sq.observe32(at) {
                Ok(w) => SqeHead::from_word(w),
                Err(_) => {
                    self.stop_queue(q, queue_status::DMA_ERROR);
                    break;
                }
            };
            if head.phase & 1 != run.phase {
                break;
            }
            let mut raw = [0u8; jobs::SQE_SIZE];
            if sq.read(at, &mut raw).is_err() {
                self.stop_queue(q, queue_status::DMA_ERROR);
                break;
            }
            // PCIe ordering: the VMM's writes before it published this entry (a stage-1
            // table, XLAT registers) reach the real VF before the job does.
            self.requests();
            let Ok(sqe) = Sqe::read_from_bytes(&raw) else {
                break;
            };
            let plan = convert::plan(&sqe);
            // One large job at a time: this queue waits until the last one is acknowledged.
            if !self.failed_over && self.large.is_some() && plan.is_ok_and(|p| p.large()) {
                break;
            }
            took = true;
            let run = &mut self.runs[q];
            run.head += 1;
            if run.head == run.sq_size {
                run.head = 0;
                run.phase ^= 1;
            }
            let head_now = run.head;
            self.set_regs(q, regs.epoch, |r| r.sq_head = head_now);
            let tag = sqe.tag.get();
            if self.failed_over {
                self.vf.stats.failed.fetch_add(1, Ordering::Relaxed);
                self.complete(q, tag, JobStatus::LinkDown, 0);
                continue;
            }
            let Ok(plan) = plan else {
                self.complete(q, tag, JobStatus::BadDescriptor, 0);
                continue;
            };
            let mut data = Vec::new();
            if let Some((iova, n)) = plan.input {
                data = self.spare.pop().unwrap_or_default();
                data.resize(n, 0);
                let ok = space
                    .try_table()
                    .is_some_and(|t| t.read(iova, &mut data, false).is_ok());
                if !ok {
                    self.complete(q, tag, JobStatus::HostDma, 0);
                    continue;
                }
            }
            let job = Job {
                queue: q as u32,
                epoch: regs.epoch,
                sqe: raw,
                tag,
                data,
                output: plan.output,
            };
            let sent = job.data.len() as u64;
            let Some(seq) = self.out.push(job) else {
                break; // has_room said otherwise: cannot happen
            };
            if plan.large() {
                self.large = Some(seq);
            }
            self.vf.stats.bytes_out.fetch_add(sent, Ordering::Relaxed);
            self.vf
                .stats
                .inflight
                .store(self.out.len() as u64, Ordering::Relaxed);
            self.submit(seq);
        }
        took
    }

    /// Keeps a finished job's input buffer for the next job (a fresh one costs a page fault
    /// per page and zeroing), up to [`SPARE`] of them and [`convert::CHUNK`] each.
    fn recycle(&mut self, mut data: Vec<u8>) {
        if self.spare.len() < SPARE && (1..=convert::CHUNK).contains(&data.capacity()) {
            data.clear();
            self.spare.push(data);
        }
    }

    /// Checks a newly enabled queue's rings (as the device does) and pins them.
    fn arm(&mut self, q: usize, regs: &QueueRegs) -> bool {
        let Some(space) = self.vf.space() else {
            return false;
        };
        let valid = |n: u32| n.is_power_of_two() && (jobs::MIN_RING..=jobs::MAX_RING).contains(&n);
        let irq = regs.control & QueueCtrl::IRQ_ENABLE.bits() != 0;
        let mut rings = None;
        let status = if !valid(regs.sq_size) || !valid(regs.cq_size) || regs.cq_size < regs.sq_size
        {
            queue_status::BAD_SIZE
        } else if !regs.sq_base.is_multiple_of(jobs::SQE_SIZE as u64)
            || !regs.cq_base.is_multiple_of(jobs::CQE_SIZE as u64)
        {
            queue_status::BAD_ALIGNMENT
        } else if irq && regs.vector >= self.vf.vectors {
            queue_status::BAD_VECTOR
        } else {
            let Some(t) = space.try_table() else {
                return false;
            };
            let s = t.direct(regs.sq_base, regs.sq_size as u64 * jobs::SQE_SIZE as u64);
            let c = t.direct(regs.cq_base, regs.cq_size as u64 * jobs::CQE_SIZE as u64);
            match (s, c) {
                (Some(s), Some(c)) => {
                    rings = Some((s, c));
                    queue_status::OK
                }
                _ => queue_status::DMA_ERROR,
            }
        };
        if !self.set_regs(q, regs.epoch, |r| {
            r.status = status;
            r.sq_head = 0;
            r.cq_tail = 0;
        }) {
            return false;
        }
        let run = &mut self.runs[q];
        let Some((s, c)) = rings else {
            run.failed = true;
            return false;
        };
        *run = Run {
            epoch: regs.epoch,
            armed: true,
            failed: false,
            space: Some(space),
            sq: Some(s),
            cq: Some(c),
            sq_size: regs.sq_size,
            cq_size: regs.cq_size,
            head: 0,
            phase: 1,
            tail: 0,
            cq_phase: 1,
        };
        true
    }

    fn stop_queue(&mut self, q: usize, status: u32) {
        let epoch = self.runs[q].epoch;
        self.runs[q] = Run {
            epoch,
            failed: true,
            ..Run::default()
        };
        self.set_regs(q, epoch, |r| r.status = status);
    }

    /// Publishes a completion in queue `q`'s ring and raises its vector if asked.
    fn complete(&mut self, q: usize, tag: u32, status: JobStatus, result: u64) {
        let run = &mut self.runs[q];
        let Some(cq) = run.cq.as_ref() else {
            return;
        };
        let cqe = Cqe {
            result: result.into(),
            tag: tag.into(),
            status: Cqe::status_word(status, run.cq_phase).into(),
        };
        let b = cqe.as_bytes();
        let word = Cqe::status_word(status, run.cq_phase);
        let at = run.tail as u64 * jobs::CQE_SIZE as u64;
        if cq.write(at, &b[..Cqe::STATUS_OFFSET], Some(word)).is_err() {
            self.stop_queue(q, queue_status::DMA_ERROR);
            return;
        }
        run.tail += 1;
        if run.tail == run.cq_size {
            run.tail = 0;
            run.cq_phase ^= 1;
        }
        let (tail, epoch) = (run.tail, run.epoch);
        let mut fire = None;
        self.set_regs(q, epoch, |r| {
            r.cq_tail = tail;
            if r.control & QueueCtrl::IRQ_ENABLE.bits() != 0 {
                fire = Some(r.vector);
            }
        });
        if let Some(v) = fire.filter(|v| *v < self.vf.vectors) {
            self.vf.fire(v);
        }
    }

    /// Queues outstanding job `seq`: its SUBMIT with the first chunk of its input, the rest
    /// in DATA frames.
    fn submit(&mut self, seq: u64) {
        let Some(j) = self.out.get(seq) else {
            return;
        };
        let first = j.data.len().min(convert::CHUNK);
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let head = Submit {
            seq: seq.into(),
            queue: j.queue.into(),
            in_len: (first as u32).into(),
            sqe: j.sqe,
        };
        let mut r = link.queue_data(WithData::Submit(head, &j.data[..first]));
        for (i, c) in j.data[first..].chunks(convert::CHUNK).enumerate() {
            let d = Data {
                seq: seq.into(),
                offset: ((first + i * convert::CHUNK) as u32).into(),
                len: (c.len() as u32).into(),
            };
            r = r.and_then(|_| link.queue_data(WithData::Data(d, c)));
        }
        if let Err(e) = r {
            self.lost(&e.to_string());
        }
    }

    /// A chunk of a large job's output: into the guest's memory at once (the completion is
    /// published only when all of it is there). A chunk that does not continue what came
    /// before starts the output over (the exporter sends it whole again after a reconnect).
    fn output_chunk(&mut self, d: &Data, bytes: &[u8]) {
        let seq = d.seq.get();
        let Some(job) = self.out.get(seq) else {
            return;
        };
        let Some((iova, n)) = job.output else {
            return;
        };
        let run = &self.runs[job.queue as usize];
        if run.epoch != job.epoch || !run.armed {
            return;
        }
        let at = d.offset.get() as usize;
        let got = self.gathered.entry(seq).or_insert(0);
        if at == 0 {
            *got = 0;
        }
        if at != *got || at + bytes.len() > n {
            return; // out of order: the COMPLETE finds the output short and says HOST_DMA
        }
        let ok = run.space.as_ref().is_some_and(|s| {
            s.try_table()
                .is_some_and(|t| t.write(iova + at as u64, bytes, false).is_ok())
        });
        if ok {
            *got += bytes.len();
        }
    }

    /// Frames from the exporter that are here.
    fn receive(&mut self) -> bool {
        let mut any = false;
        for _ in 0..BURST {
            let Some(link) = self.link.as_mut() else {
                return any;
            };
            let m = match link.poll(Duration::ZERO) {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    self.lost(&e.to_string());
                    break;
                }
            };
            any = true;
            self.heard = Instant::now();
            self.on_frame(m);
        }
        any
    }

    fn on_frame(&mut self, m: Message) {
        match m {
            Message::Complete(c, data) => {
                let Some(mut job) = self.out.complete(c.seq.get()) else {
                    return; // a duplicate after a resubmission
                };
                self.recycle(std::mem::take(&mut job.data));
                self.vf
                    .stats
                    .inflight
                    .store(self.out.len() as u64, Ordering::Relaxed);
                self.vf.stats.jobs.fetch_add(1, Ordering::Relaxed);
                let q = job.queue as usize;
                let run = &self.runs[q];
                if run.epoch != job.epoch || !run.armed {
                    return; // the queue was reset or re-armed: the job is not its now
                }
                let Ok(cqe) = Cqe::read_from_bytes(&c.cqe) else {
                    return;
                };
                let mut status =
                    Cqe::status_of(cqe.status.get()).unwrap_or(JobStatus::BadDescriptor);
                let got = self.gathered.remove(&c.seq.get()).unwrap_or(0);
                if status == JobStatus::Ok {
                    if let Some((iova, n)) = job.output {
                        // The last chunk, right after what DATA frames brought.
                        let wrote = got + data.len() == n
                            && run.space.as_ref().is_some_and(|s| {
                                s.try_table().is_some_and(|t| {
                                    t.write(iova + got as u64, &data, false).is_ok()
                                })
                            });
                        if wrote {
                            self.vf
                                .stats
                                .bytes_in
                                .fetch_add(n as u64, Ordering::Relaxed);
                        } else {
                            status = JobStatus::HostDma;
                        }
                    }
                }
                self.complete(q, job.tag, status, cqe.result.get());
            }
            Message::Data(d, bytes) => self.output_chunk(&d, &bytes),
            Message::RegValue(v) => {
                let id = v.id.get();
                if let Some(reply) = self.reads.remove(&id) {
                    let _ = reply.try_send((v.errno.get() == 0).then(|| v.value.get()));
                } else if let Some(reply) = self.resets.remove(&id) {
                    let _ = reply.try_send(v.errno.get() == 0);
                } else if v.errno.get() != 0 {
                    // A posted write the real VF refused.
                    self.vf.fault(VfFault::ReadOnly);
                }
            }
            Message::Pong(p) => {
                if let Some((nonce, at)) = self.ping {
                    if p.nonce.get() == nonce {
                        self.vf
                            .stats
                            .rtt_us
                            .store(at.elapsed().as_micros() as u64, Ordering::Relaxed);
                        self.ping = None;
                    }
                }
            }
            Message::Ping(p) => self.queue(&Message::Pong(p)),
            Message::Refuse(code, why) => {
                self.lost(&format!("the exporter cut the link ({code}): {why}"));
            }
            Message::Credit(_) => {}
            other => self.lost(&format!(
                "the exporter sent {:?} in a session",
                other.kind()
            )),
        }
    }

    /// ACKs, PINGs, and the link's and the jobs' time limits.
    fn housekeeping(&mut self) {
        if let Some(b) = self.out.ack_due() {
            self.queue(&Message::Ack(Ack { below: b.into() }));
            if self.large.is_some_and(|l| l < b) {
                self.large = None;
            }
        }
        if self.link.is_some() {
            let every = (self.dial.timeout / 4).max(Duration::from_millis(100));
            if self.pinged.elapsed() > every {
                let nonce = self.pinged.elapsed().as_nanos() as u64
                    ^ self.heard.elapsed().as_nanos() as u64;
                self.ping = Some((nonce, Instant::now()));
                self.pinged = Instant::now();
                self.queue(&Message::Ping(Ping {
                    nonce: nonce.into(),
                }));
            }
            if self.heard.elapsed() > self.dial.timeout {
                self.lost(&format!(
                    "nothing from the exporter for {:?}",
                    self.dial.timeout
                ));
            }
        }
        if let Some(since) = self.down_since {
            if !self.failed_over && since.elapsed() > self.dial.link_limit {
                self.fail_over();
            }
        }
    }

    /// The link is gone: register reads waiting on it get no answer; jobs wait in the
    /// window for the next link.
    fn lost(&mut self, why: &str) {
        if self.link.take().is_none() {
            return;
        }
        eprintln!("accel-remote: link to {} lost: {why}", self.dial.addr);
        self.vf.up.store(false, Ordering::Release);
        self.down_since = Some(Instant::now());
        for (_, r) in self.reads.drain() {
            let _ = r.try_send(None);
        }
        for (_, r) in self.resets.drain() {
            let _ = r.try_send(false);
        }
        self.next_dial = Instant::now();
    }

    /// Down past the limit: every job in flight completes LINK_DOWN, and the VF says why.
    fn fail_over(&mut self) {
        self.failed_over = true;
        self.vf.failed.store(true, Ordering::Release);
        let jobs = self.out.fail_all();
        eprintln!(
            "accel-remote: link to {} down for {:?}: {} job(s) complete LINK_DOWN",
            self.dial.addr,
            self.dial.link_limit,
            jobs.len()
        );
        self.vf.fault(VfFault::LinkDown);
        for (_, j) in jobs {
            self.vf.stats.failed.fetch_add(1, Ordering::Relaxed);
            let q = j.queue as usize;
            if self.runs[q].epoch == j.epoch && self.runs[q].armed {
                self.complete(q, j.tag, JobStatus::LinkDown, 0);
            }
        }
        self.vf.stats.inflight.store(0, Ordering::Relaxed);
        // The session's jobs are settled here: the next link starts a new one.
        self.session = 0;
        self.out = Outstanding::new(self.out.credits());
        self.large = None;
        self.gathered.clear();
    }

    /// Tries the exporter again (at most every so often), resuming the session.
    fn redial(&mut self) {
        if Instant::now() < self.next_dial {
            return;
        }
        self.next_dial = Instant::now() + Duration::from_millis(250);
        let (link, session, credits) = match self.dial.hello(self.session) {
            Ok(x) => x,
            Err(super::DialError::Refused(code, why))
                if code == crate::wire::refuse::NO_SUCH_SESSION =>
            {
                // The exporter restarted: a new session, and what was in flight is
                // submitted again in it.
                eprintln!("accel-remote: {why}; starting a new session");
                match self.dial.hello(0) {
                    Ok(x) => x,
                    Err(e) => {
                        eprintln!("accel-remote: {e}");
                        return;
                    }
                }
            }
            Err(e) => {
                if self
                    .down_since
                    .is_some_and(|d| d.elapsed() < Duration::from_secs(1))
                {
                    eprintln!("accel-remote: reconnecting to {}: {e}", self.dial.addr);
                }
                return;
            }
        };
        self.vf.stats.reconnects.fetch_add(1, Ordering::Relaxed);
        let resumed = session == self.session;
        self.link = Some(link);
        self.gathered.clear();
        self.heard = Instant::now();
        self.down_since = None;
        self.failed_over = false;
        self.vf.failed.store(false, Ordering::Release);
        if resumed {
            let (ack, jobs) = self.out.resume();
            self.queue(&Message::Ack(Ack { below: ack.into() }));
            self.vf
                .stats
                .resubmitted
                .fetch_add(jobs.len() as u64, Ordering::Relaxed);
            for (seq, _) in jobs {
                self.submit(seq);
            }
        } else {
            // A new session numbers jobs from 1 again.
            let (_, jobs) = self.out.resume();
            self.out = Outstanding::new(credits);
            self.vf
                .stats
                .resubmitted
                .fetch_add(jobs.len() as u64, Ordering::Relaxed);
            self.large = None;
            for (_, j) in jobs {
                let large = j.data.len() > convert::CHUNK
                    || j.output.is_some_and(|(_, n)| n > convert::CHUNK);
                if let Some(seq) = self.out.push(j) {
                    if large {
                        self.large = Some(seq);
                    }
                    self.submit(seq);
                }
            }
        }
        self.session = session;
        self.vf.session.store(session, Ordering::Relaxed);
        self.vf.up.store(true, Ordering::Release);
        eprintln!(
            "accel-remote: link to {} back (session {session:#x}, {})",
            self.dial.addr,
            if resumed { "resumed" } else { "new" }
        );
    }
}

/// The HELLO for `vf` resuming `session` (0: a new one).
pub(super) fn hello(vf: u32, session: u64) -> Message {
    Message::Hello(Hello {
        vf: vf.into(),
        reserved: 0.into(),
        session: session.into(),
    })
}
