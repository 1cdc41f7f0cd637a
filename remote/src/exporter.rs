//! The exporter (host A): serves the VFs it exports to importers over mutual TLS, one
//! session per imported VF.
//!
//! A connection's thread completes the TLS handshake, reads the HELLO, admits the importer
//! ([`Admission`]) and then serves the session by polling, in turn, the link (SUBMIT, ACK,
//! register accesses, PING) and the real VF's completion ring, writing the COMPLETEs back in
//! one flush per pass. Nothing a connection does waits on another connection or VF.
//!
//! A session outlives its link: when the link drops, the session (the open VF, its running
//! jobs and the completions not yet acknowledged) is parked for `linger`, so the importer can
//! reconnect, resume it and resubmit what it has no completion for; jobs that finished
//! meanwhile are answered from the session's memory, never run again ([`Completions`]).
//! A session parked past `linger` is given up and its VF is free for another importer.
use crate::admission::{Admission, Lease};
use crate::export::Exported;
use crate::link::{tcp, Link, LinkError};
use crate::session::{Completions, OnSubmit};
use crate::wire::{refuse, space, Complete, Message, RegValue, Welcome};
use host_driver::vf::Target;
use nix::poll::{PollFd, PollFlags};
use shared_abi::jobs::Sqe;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use zerocopy::FromBytes;

/// Where an exported VF is found, each time a session opens it.
#[derive(Clone, Debug)]
pub enum VfSource {
    /// A VF socket or PCI address given directly.
    At(Target),
    /// VF `vf` of `device` ("" for acceld's only device) of the acceld at `acceld`: asked
    /// where it is when a session opens it (acceld may have re-created it since).
    Acceld {
        /// acceld's socket.
        acceld: PathBuf,
        /// The device's name in acceld.
        device: String,
        /// The VF's index.
        vf: u16,
    },
}

impl VfSource {
    /// Where the VF is now.
    pub fn resolve(&self) -> Result<Target, String> {
        match self {
            VfSource::At(t) => Ok(t.clone()),
            VfSource::Acceld { acceld, device, vf } => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                rt.block_on(host_driver::daemon::vf_target(acceld, device, *vf))
                    .map_err(|e| format!("acceld's VF {vf}: {e}"))
            }
        }
    }
}

impl std::fmt::Display for VfSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VfSource::At(t) => write!(f, "{t}"),
            VfSource::Acceld { device, vf, .. } if device.is_empty() => {
                write!(f, "acceld VF {vf}")
            }
            VfSource::Acceld { device, vf, .. } => write!(f, "acceld {device} VF {vf}"),
        }
    }
}

/// What an exporter serves, and how.
#[derive(Debug)]
pub struct Config {
    /// The exported VFs; a VF's number on the wire is its index here.
    pub vfs: Vec<VfSource>,
    /// Importer names (certificate DNS names) and the VFs each may import.
    pub allow: BTreeMap<String, BTreeSet<u32>>,
    /// The server's TLS configuration (it requires client certificates).
    pub tls: Arc<rustls::ServerConfig>,
    /// Jobs an importer may have in flight per VF.
    pub credits: u32,
    /// How long a session outlives its link, for the importer to resume it.
    pub linger: Duration,
    /// How long the exporter waits for a silent importer (a handshake, a HELLO, or any frame
    /// in a session; importers PING when idle) before it cuts the link.
    pub timeout: Duration,
}

/// Links served at once (each a thread): a client opening connections in a loop cannot
/// exhaust the exporter's threads.
pub const MAX_LINKS: usize = 64;

/// A session: one importer's use of one exported VF.
#[derive(Debug)]
struct Session {
    id: u64,
    who: String,
    /// The open VF (None only after a reset that could not reopen it: the session ends).
    exported: Option<Exported>,
    window: Completions,
    /// The session's large job not yet acknowledged, if any (at most one: see
    /// [`crate::convert`]).
    large: Option<u64>,
    /// When its link dropped (None while served).
    dropped: Option<Instant>,
    _lease: Lease,
}

/// A connection serving a session now.
#[derive(Debug)]
struct Live {
    who: String,
    session: u64,
    /// Set to make the connection give the session up (its importer reconnected).
    preempt: Arc<AtomicBool>,
}

/// One exported VF's sessions.
#[derive(Debug, Default)]
struct Slot {
    live: Option<Live>,
    parked: Option<Session>,
}

#[derive(Debug)]
struct Shared {
    cfg: Config,
    admission: Admission,
    slots: Vec<Mutex<Slot>>,
    next_session: AtomicU64,
    links: AtomicU64,
    /// The exporter is stopping: sessions finish what runs and close their links.
    stopping: AtomicBool,
}

/// A listening exporter.
#[derive(Debug)]
pub struct Exporter {
    listener: TcpListener,
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a session's link ended.
#[derive(Debug, thiserror::Error)]
enum End {
    #[error("{0}")]
    Link(#[from] LinkError),
    #[error("the importer broke the protocol: {0}")]
    Protocol(String),
    #[error("the importer reconnected")]
    Preempted,
    #[error("the importer was silent for {0:?}")]
    Silent(Duration),
    #[error("the VF could not be reset: {0}")]
    Reset(String),
    #[error("the exporter is stopping")]
    Stopping,
}

impl Exporter {
    /// Listens on `addr` for importers.
    pub fn bind(addr: SocketAddr, cfg: Config) -> Result<Self, String> {
        let n = u32::try_from(cfg.vfs.len()).map_err(|_| "too many VFs".to_string())?;
        if n == 0 {
            return Err("no VF to export (give --vf SOCKET)".into());
        }
        let admission = Admission::new(n, cfg.allow.clone())?;
        let listener = TcpListener::bind(addr).map_err(|e| format!("listening on {addr}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("listening on {addr}: {e}"))?;
        let slots = (0..n).map(|_| Mutex::default()).collect();
        Ok(Exporter {
            listener,
            shared: Arc::new(Shared {
                cfg,
                admission,
                slots,
                next_session: AtomicU64::new(seed()),
                links: AtomicU64::new(0),
                stopping: AtomicBool::new(false),
            }),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` is set: accepts importers, each on a thread of its own, and gives
    /// up sessions parked past their time.
    pub fn run(&self, stop: &AtomicBool) {
        let mut threads: Vec<std::thread::JoinHandle<()>> = Vec::new();
        while !stop.load(Ordering::Acquire) {
            threads.retain(|t| !t.is_finished());
            match self.listener.accept() {
                Ok((sock, peer)) if threads.len() < MAX_LINKS => {
                    let shared = self.shared.clone();
                    let id = shared.links.fetch_add(1, Ordering::Relaxed);
                    match std::thread::Builder::new()
                        .name(format!("export-link{id}"))
                        .spawn(move || shared.serve_link(sock, peer))
                    {
                        Ok(t) => threads.push(t),
                        Err(e) => eprintln!("accel-remote: no thread for {peer}: {e}"),
                    }
                }
                Ok((sock, peer)) => {
                    eprintln!("accel-remote: {peer} turned away: {MAX_LINKS} links served");
                    drop(sock);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.shared.expire();
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    eprintln!("accel-remote: accept: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        // Stopping (a restart): every session lets the jobs running on its VF finish and
        // sends their completions before it closes its link, so the importer resubmits only
        // jobs that never ran (to the exporter that comes back) and none runs twice.
        self.shared.stopping.store(true, Ordering::Release);
        let until = Instant::now() + self.shared.cfg.timeout;
        while threads.iter().any(|t| !t.is_finished()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Session numbers start somewhere new each run, so an importer resuming a session of an
/// exporter that restarted is told the session is unknown, not handed another's.
fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    (t ^ (std::process::id() as u64) << 40) | 1
}

impl Shared {
    /// Gives up sessions parked past `linger`: their VFs close and are free.
    fn expire(&self) {
        for s in &self.slots {
            let mut g = lock(s);
            if g.parked
                .as_ref()
                .is_some_and(|p| p.dropped.is_some_and(|d| d.elapsed() > self.cfg.linger))
            {
                if let Some(p) = g.parked.take() {
                    eprintln!(
                        "accel-remote: session {:#x} of {} given up after {:?} without a link",
                        p.id, p.who, self.cfg.linger
                    );
                }
            }
        }
    }

    fn serve_link(&self, sock: std::net::TcpStream, peer: SocketAddr) {
        crate::link::precise_timers();
        let (mut link, who) = match tcp::server(sock, self.cfg.tls.clone(), self.cfg.timeout) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("accel-remote: {peer}: {e}");
                return;
            }
        };
        let hello = match link.recv() {
            Ok(Message::Hello(h)) if h.reserved.get() == 0 => h,
            Ok(_) => {
                refuse_link(&mut link, refuse::PROTOCOL, "the first frame must be HELLO");
                return;
            }
            Err(e) => {
                eprintln!("accel-remote: {peer}: {e}");
                return;
            }
        };
        let vf = hello.vf.get();
        let (mut session, preempt) =
            match self.take_session(who.as_deref(), vf, hello.session.get()) {
                Ok(s) => s,
                Err((code, why)) => {
                    eprintln!(
                        "accel-remote: {peer} ({}) refused: {why}",
                        who.as_deref().unwrap_or("?")
                    );
                    refuse_link(&mut link, code, &why);
                    return;
                }
            };
        let welcome = Message::Welcome(Welcome {
            session: session.id.into(),
            credits: self.cfg.credits.into(),
            reserved: 0.into(),
        });
        let end = match link.send(&welcome) {
            Ok(()) => serve_session(
                &mut link,
                &mut session,
                &preempt,
                &self.stopping,
                self.cfg.timeout,
            ),
            Err(e) => Err(End::Link(e)),
        };
        let end = end.err();
        if let Some(End::Protocol(why)) = &end {
            refuse_link(&mut link, refuse::PROTOCOL, why);
        }
        eprintln!(
            "accel-remote: {peer} ({}) VF {vf} session {:#x}: link ended: {}",
            session.who,
            session.id,
            end.as_ref().map_or("closed".to_string(), |e| e.to_string())
        );
        let mut g = lock(&self.slots[vf as usize]);
        g.live = None;
        if !matches!(end, Some(End::Reset(_))) {
            session.dropped = Some(Instant::now());
            g.parked = Some(session);
        }
    }

    /// The session an importer's HELLO asks for: a new one, or the one it resumes (taken from
    /// the connection serving it, if that connection has not noticed its link is gone).
    fn take_session(
        &self,
        who: Option<&str>,
        vf: u32,
        resume: u64,
    ) -> Result<(Session, Arc<AtomicBool>), (u32, String)> {
        self.admission.allowed(who, vf)?;
        let who = who.unwrap_or_default().to_string();
        let slot = &self.slots[vf as usize];
        let deadline = Instant::now() + self.cfg.timeout;
        loop {
            let mut g = lock(slot);
            if let Some(live) = &g.live {
                if live.who != who || (resume != 0 && resume != live.session) {
                    return Err((
                        refuse::BUSY,
                        format!("VF {vf} is imported by another importer"),
                    ));
                }
                // Ours, on a link the importer has given up: have it let go, then take it.
                live.preempt.store(true, Ordering::Release);
                drop(g);
                if Instant::now() > deadline {
                    return Err((refuse::BUSY, format!("VF {vf}'s old link does not let go")));
                }
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let parked = g.parked.take();
            let session = match parked {
                Some(p) if p.who == who && resume == p.id => p,
                Some(p)
                    if p.who == who || p.dropped.is_some_and(|d| d.elapsed() > self.cfg.linger) =>
                {
                    // The importer started over (or the session's time is up): the old
                    // session's jobs are nobody's now.
                    drop(p);
                    self.new_session(&who, vf, resume)?
                }
                Some(p) => {
                    g.parked = Some(p);
                    return Err((
                        refuse::BUSY,
                        format!("VF {vf} is imported by another importer"),
                    ));
                }
                None => self.new_session(&who, vf, resume)?,
            };
            let preempt = Arc::new(AtomicBool::new(false));
            g.live = Some(Live {
                who,
                session: session.id,
                preempt: preempt.clone(),
            });
            return Ok((
                Session {
                    dropped: None,
                    ..session
                },
                preempt,
            ));
        }
    }

    fn new_session(&self, who: &str, vf: u32, resume: u64) -> Result<Session, (u32, String)> {
        if resume != 0 {
            return Err((
                refuse::NO_SUCH_SESSION,
                format!("session {resume:#x} is not known here (start a new one)"),
            ));
        }
        let lease = self.admission.admit(Some(who), vf)?;
        let unusable = |e: String| (refuse::NO_SUCH_VF, format!("VF {vf} cannot be opened: {e}"));
        let target = self.cfg.vfs[vf as usize].resolve().map_err(unusable)?;
        let exported =
            Exported::open(&target, self.cfg.credits).map_err(|e| unusable(e.to_string()))?;
        Ok(Session {
            id: self.next_session.fetch_add(2, Ordering::Relaxed),
            who: who.to_string(),
            exported: Some(exported),
            window: Completions::new(self.cfg.credits),
            large: None,
            dropped: None,
            _lease: lease,
        })
    }
}

fn refuse_link(link: &mut dyn Link, code: u32, why: &str) {
    let mut text = why.to_string();
    while text.len() > crate::wire::MAX_REASON {
        text.pop();
    }
    let _ = link.send(&Message::Refuse(code, text));
}

/// Frames taken from the link per pass, so the device is polled between bursts.
const BURST: usize = 64;

/// Serves one session on `link` until the link ends or the session is taken over.
fn serve_session(
    link: &mut dyn Link,
    s: &mut Session,
    preempt: &AtomicBool,
    stopping: &AtomicBool,
    timeout: Duration,
) -> Result<(), End> {
    let mut heard = Instant::now();
    let mut last_backlog = 0;
    loop {
        if preempt.load(Ordering::Acquire) {
            return Err(End::Preempted);
        }
        let running = s.exported.as_ref().map_or(0, |e| e.running());
        let stop = stopping.load(Ordering::Acquire);
        if stop && running == 0 {
            // Everything that ran has its completion queued: deliver it, then close.
            link.close(timeout);
            return Err(End::Stopping);
        }
        let mut progress = false;
        // A peer that does not read its answers gets no more of them (while it takes what
        // is waiting, it is not silent).
        let backlog = link.backlog();
        let burst = if stop {
            0 // no new work: what runs finishes
        } else if backlog > crate::link::MAX_BACKLOG {
            if backlog < last_backlog {
                heard = Instant::now();
            }
            std::thread::sleep(Duration::from_micros(200));
            0
        } else {
            BURST
        };
        last_backlog = backlog;
        for _ in 0..burst {
            let Some(m) = link.poll(Duration::ZERO)? else {
                break;
            };
            heard = Instant::now();
            progress = true;
            on_frame(link, s, m)?;
        }
        let done = s.exported.as_mut().map(|e| e.poll()).unwrap_or_default();
        for (c, d) in done {
            progress = true;
            if let Some((c, d)) = s.window.finish(c, d) {
                send(link, c, d)?;
            }
        }
        link.flush()?;
        if heard.elapsed() > timeout {
            return Err(End::Silent(timeout));
        }
        // Spinning here instead was measured slower: on two cores the exporter, the
        // importer, the device's workers and the tenant would all be spinning.
        if !progress {
            wait(link, s.exported.as_mut(), running > 0)?;
        }
    }
}

/// Nothing to do: sleeps until the importer sends something, the link has room for what
/// waits, or (jobs running) the VF raises its completion interrupt. A VF without one is
/// polled every [`POLL_RUNNING`].
fn wait(link: &mut dyn Link, vf: Option<&mut Exported>, running: bool) -> Result<(), End> {
    let what = if link.backlog() > 0 {
        PollFlags::POLLIN | PollFlags::POLLOUT
    } else {
        PollFlags::POLLIN
    };
    let irq = vf.as_ref().filter(|_| running).and_then(|v| v.irq_fd());
    let wait = match (running, irq.is_some()) {
        (false, _) => IDLE_WAIT,
        (true, true) => RUNNING_WAIT,
        (true, false) => POLL_RUNNING,
    };
    let mut fds = vec![PollFd::new(link.fd(), what)];
    fds.extend(irq.map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
    crate::link::wait_any(&mut fds, wait).map_err(|e| End::Link(LinkError::Io(e)))?;
    drop(fds);
    if let Some(v) = vf {
        v.take_interrupts();
    }
    Ok(())
}

/// Waits with nothing running (the importer PINGs a quiet link well within its timeout).
const IDLE_WAIT: Duration = Duration::from_millis(5);
/// Waits with jobs running, for a completion interrupt that was lost.
const RUNNING_WAIT: Duration = Duration::from_millis(1);
/// The poll period of a VF without a completion interrupt while jobs run.
const POLL_RUNNING: Duration = Duration::from_micros(20);

/// Queues a finished job's frames (its output in DATA frames past one chunk, then COMPLETE).
fn send(link: &mut dyn Link, c: &Complete, data: &[u8]) -> Result<(), End> {
    for m in crate::export::frames(c, data) {
        link.queue_data(m)?;
    }
    Ok(())
}

fn on_frame(link: &mut dyn Link, s: &mut Session, m: Message) -> Result<(), End> {
    match m {
        Message::Submit(sub, data) => {
            let large = Sqe::read_from_bytes(&sub.sqe)
                .ok()
                .and_then(|e| crate::convert::plan(&e).ok())
                .is_some_and(|p| p.large());
            match s
                .window
                .submit(&sub)
                .map_err(|e| End::Protocol(e.to_string()))?
            {
                OnSubmit::Run => {
                    if large {
                        if s.large.is_some_and(|l| l != sub.seq.get()) {
                            return Err(End::Protocol(
                                "a second large job before the first was acknowledged".into(),
                            ));
                        }
                        s.large = Some(sub.seq.get());
                    }
                    let ex = s.exported.as_mut().ok_or(End::Reset("VF closed".into()))?;
                    if let Err((c, d)) = ex.start(&sub, &data) {
                        if let Some((c, d)) = s.window.finish(c, d) {
                            send(link, c, d)?;
                        }
                    }
                }
                OnSubmit::Running => {
                    // Sent again after a reconnect: its input, if still arriving, starts over.
                    if let Some(ex) = s.exported.as_mut() {
                        ex.restart(&sub, &data);
                    }
                }
                OnSubmit::Resend(c, d) => send(link, &c, &d)?,
            }
        }
        Message::Data(d, bytes) => {
            let ex = s.exported.as_mut().ok_or(End::Reset("VF closed".into()))?;
            if let Some((c, d)) = ex
                .more(&d, &bytes)
                .map_err(|e| End::Protocol(e.to_string()))?
            {
                if let Some((c, d)) = s.window.finish(c, d) {
                    send(link, c, d)?;
                }
            }
        }
        Message::Ack(a) => {
            s.window
                .ack(a.below.get())
                .map_err(|e| End::Protocol(e.to_string()))?;
            if s.large.is_some_and(|l| l < a.below.get()) {
                s.large = None;
            }
        }
        Message::RegRead(r) => {
            let ex = s.exported.as_ref().ok_or(End::Reset("VF closed".into()))?;
            let v = ex.read_reg(r.space.get(), r.offset.get());
            link.queue(&Message::RegValue(RegValue {
                id: r.id,
                errno: v.err().unwrap_or(0).into(),
                value: v.unwrap_or(u32::MAX).into(),
                reserved: 0.into(),
            }))?;
        }
        Message::RegWrite(w) if w.space.get() == space::RESET => {
            if w.value.get() != 1 || w.offset.get() != 0 {
                return Err(End::Protocol("a RESET write is 1 at offset 0".into()));
            }
            let ex = s.exported.take().ok_or(End::Reset("VF closed".into()))?;
            let (fresh, aborted) = ex.reset().map_err(|e| End::Reset(e.to_string()))?;
            s.exported = Some(fresh);
            for (c, d) in aborted {
                if let Some((c, d)) = s.window.finish(c, d) {
                    send(link, c, d)?;
                }
            }
            link.queue(&Message::RegValue(RegValue {
                id: w.id,
                ..RegValue::default()
            }))?;
        }
        Message::RegWrite(w) => {
            let ex = s.exported.as_ref().ok_or(End::Reset("VF closed".into()))?;
            let r = ex.write_reg(w.space.get(), w.offset.get(), w.value.get());
            link.queue(&Message::RegValue(RegValue {
                id: w.id,
                errno: r.err().unwrap_or(0).into(),
                value: 0.into(),
                reserved: 0.into(),
            }))?;
        }
        Message::Ping(p) => link.queue(&Message::Pong(p))?,
        Message::Pong(_) => {}
        other => {
            return Err(End::Protocol(format!(
                "{:?} is not a frame an importer sends in a session",
                other.kind()
            )))
        }
    }
    Ok(())
}
