//! The importer (host B): presents a VF of another host's accelerator as a local vfio-user
//! device, so a VMM attaches it with the same `vfio-user-pci` line as a local VF and the job
//! library drives it unchanged.
//!
//! It is not a byte tunnel: it is a device model of its own ([`vf::RemoteVf`]) whose queue
//! engine ([`pump`]) polls the guest's rings in the guest's memory (the DMA maps the VMM gives
//! it), converts each job into a SUBMIT and writes each COMPLETE's data and entry back, while
//! the accesses that are the real VF's (its register block, its device memory window, FLR)
//! are forwarded as messages.
mod pump;
pub mod vf;

use crate::link::{tcp, Link, LinkError};
use crate::wire::{space, Message, RegRead};
use sim::device::Func;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
pub use vf::{RemoteVf, Stats};

/// How to reach the exporter.
#[derive(Clone, Debug)]
pub struct Dial {
    /// `HOST:PORT`.
    pub addr: String,
    /// The name the exporter's certificate must carry.
    pub server_name: String,
    /// The client's TLS configuration (its certificate and the CA it trusts).
    pub tls: Arc<rustls::ClientConfig>,
    /// The exported VF's number.
    pub vf: u32,
    /// How long a connection attempt, a register read or a silent exporter is waited for.
    pub timeout: Duration,
    /// How long the link may stay down before jobs in flight complete LINK_DOWN.
    pub link_limit: Duration,
}

/// Why the exporter could not be reached or would not serve.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// TCP or TLS.
    #[error("connecting to the exporter: {0}")]
    Connect(#[from] tcp::ConnectError),
    /// The link failed during the greeting.
    #[error("greeting the exporter: {0}")]
    Link(#[from] LinkError),
    /// The exporter refused (a [`refuse`] code and its reason).
    #[error("the exporter refused: {1}")]
    Refused(u32, String),
    /// The exporter answered something else.
    #[error("the exporter answered {0}")]
    Protocol(String),
}

impl Dial {
    /// Connects and says HELLO; the link, the session and its credits.
    pub fn hello(&self, session: u64) -> Result<(Box<dyn Link>, u64, u32), DialError> {
        let t = self.timeout.min(Duration::from_secs(2));
        let mut link = tcp::connect(self.addr.as_str(), &self.server_name, self.tls.clone(), t)?;
        link.send(&pump::hello(self.vf, session))?;
        match link.recv()? {
            Message::Welcome(w) => Ok((Box::new(link), w.session.get(), w.credits.get().max(1))),
            Message::Refuse(code, why) => Err(DialError::Refused(code, why)),
            other => Err(DialError::Protocol(format!("{:?}", other.kind()))),
        }
    }
}

/// A running importer.
#[derive(Debug)]
pub struct Importer {
    vf: Arc<RemoteVf>,
    stop: Arc<AtomicBool>,
    pump: Option<std::thread::JoinHandle<()>>,
}

/// The VF register block's dwords read at start (everything below the first queue block
/// that is a register), answered from this copy while the link is down.
const CACHED: u64 = shared_abi::regs::vf::IOTLB_MISSES.offset() as u64 + 4;

/// A dword of the real VF, read before the pump runs.
fn read_now(link: &mut dyn Link, id: u32, offset: u64) -> Result<u32, DialError> {
    link.send(&Message::RegRead(RegRead {
        id: id.into(),
        space: space::BAR0.into(),
        offset: offset.into(),
    }))?;
    match link.recv()? {
        Message::RegValue(v) if v.id.get() == id && v.errno.get() == 0 => Ok(v.value.get()),
        Message::RegValue(v) => Err(DialError::Protocol(format!(
            "errno {} reading the VF's register at {offset:#x}",
            v.errno.get()
        ))),
        Message::Refuse(code, why) => Err(DialError::Refused(code, why)),
        other => Err(DialError::Protocol(format!("{:?}", other.kind()))),
    }
}

impl Importer {
    /// Connects to the exporter (it must answer now), learns the real VF's shape, and starts
    /// the engine.
    pub fn start(dial: Dial) -> Result<Self, DialError> {
        let (mut link, session, credits) = dial.hello(0)?;
        let mut cache = Vec::new();
        for (i, off) in (0..CACHED).step_by(4).enumerate() {
            cache.push(read_now(&mut *link, i as u32 + 1, off)?);
        }
        let word = |r: shared_abi::regs::Reg| cache[r.offset() / 4];
        if word(shared_abi::regs::vf::MAGIC) != shared_abi::regs::VF_MAGIC {
            return Err(DialError::Protocol(
                "the exported function is not an accelvirt VF".into(),
            ));
        }
        let queues = word(shared_abi::regs::vf::QUEUE_COUNT);
        let vectors = word(shared_abi::regs::vf::VECTOR_COUNT);
        let (vf, rx) = RemoteVf::new(queues, vectors, cache, dial.timeout);
        let stop = Arc::new(AtomicBool::new(false));
        let p = pump::Pump::new(vf.clone(), dial, link, session, credits, rx, stop.clone());
        let pump = std::thread::Builder::new()
            .name("import-pump".into())
            .spawn(move || p.run())
            .map_err(|e| DialError::Protocol(format!("no thread for the engine: {e}")))?;
        Ok(Importer {
            vf,
            stop,
            pump: Some(pump),
        })
    }

    /// The imported VF.
    pub fn vf(&self) -> &Arc<RemoteVf> {
        &self.vf
    }

    /// Serves the VF's vfio-user socket at `path` until `stop` is set; each client on a
    /// thread of its own (one of them owns the VF's DMA and interrupts at a time).
    pub fn serve(&self, path: &Path, stop: &AtomicBool) -> std::io::Result<()> {
        let _ = std::fs::remove_file(path);
        let l = UnixListener::bind(path)?;
        l.set_nonblocking(true)?;
        let mut conns: Vec<std::thread::JoinHandle<()>> = Vec::new();
        while !stop.load(Ordering::Acquire) {
            conns.retain(|c| !c.is_finished());
            match l.accept() {
                Ok((s, _)) if conns.len() < sim::vfio_user::server::MAX_CONNECTIONS => {
                    let vf: Arc<dyn sim::vfio_user::Model> = self.vf.clone();
                    if let Ok(t) = std::thread::Builder::new()
                        .name("import-vfio-user".into())
                        .spawn(move || sim::vfio_user::serve_connection(vf, Func::Vf(0), s))
                    {
                        conns.push(t);
                    }
                }
                Ok((s, _)) => drop(s),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => return Err(e),
            }
        }
        let _ = std::fs::remove_file(path);
        Ok(())
    }
}

impl Drop for Importer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(p) = self.pump.take() {
            let _ = p.join();
        }
    }
}
