//! The vfio-user server: one UNIX socket for the PF, one per enabled VF beside it, all
//! watched by one thread. Every connection is served on its own thread; a malformed message gets an error reply (or, if
//! the framing itself is lost, that connection is closed) and never disturbs other clients.
//!
//! Listeners live here; what one connection does with its messages is [`super::conn`].

use super::conn::Conn;
use crate::device::{Device, Func, SriovChange};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another server answers on the socket.
    #[error("{0} is in use by another running server (stop it, or pick another --socket path)")]
    InUse(PathBuf),
    /// The socket could not be created.
    #[error("cannot create socket {path}: {source} (is the directory there and writable?)")]
    Bind {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(#[source] std::io::Error),
}

pub use vfio_user_wire::vf_socket_path;

/// Binds a listening socket, replacing a stale socket file but never a live server.
pub fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ServeError::InUse(path.to_path_buf()));
        }
        let is_socket = std::fs::symlink_metadata(path)
            .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            .unwrap_or(false);
        if !is_socket {
            return Err(ServeError::Bind {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is there",
                ),
            });
        }
        let _ = std::fs::remove_file(path);
    }
    let l = UnixListener::bind(path).map_err(|source| ServeError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    l.set_nonblocking(true).map_err(|source| ServeError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(l)
}

/// Connections one socket serves at once (each is a thread): enough for a VMM and a few
/// management processes, few enough that a client opening connections in a loop cannot
/// exhaust the device's threads or memory.
pub const MAX_CONNECTIONS: usize = 32;

/// One function's listening socket and the connections it accepted.
struct Endpoint {
    func: Func,
    path: PathBuf,
    listener: UnixListener,
    /// Cleared when the function goes away; its connections see it and hang up.
    alive: Arc<AtomicBool>,
    conns: Vec<JoinHandle<()>>,
}

impl Endpoint {
    fn open(func: Func, path: PathBuf) -> Result<Self, ServeError> {
        Ok(Endpoint {
            func,
            listener: bind(&path)?,
            path,
            alive: Arc::new(AtomicBool::new(true)),
            conns: Vec::new(),
        })
    }

    /// Accepts every client waiting, each served on its own thread; past
    /// [`MAX_CONNECTIONS`] live ones, a new client is closed at once.
    fn accept_all(&mut self, dev: &Arc<Device>, ids: &AtomicU64) {
        self.conns.retain(|t| !t.is_finished());
        loop {
            match self.listener.accept() {
                Ok((stream, _)) if self.conns.len() >= MAX_CONNECTIONS => drop(stream),
                Ok((stream, _)) => {
                    let id = ids.fetch_add(1, Ordering::Relaxed);
                    let (d, a, func) = (dev.clone(), self.alive.clone(), self.func);
                    if let Ok(t) = std::thread::Builder::new()
                        .name(format!("vfio-user-conn{id}"))
                        .spawn(move || {
                            Conn::new(d as Arc<dyn super::Model>, func, id, stream, a).serve()
                        })
                    {
                        self.conns.push(t);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    // Out of descriptors or memory: let the level-triggered poll come back
                    // later instead of spinning on it.
                    std::thread::sleep(Duration::from_millis(10));
                    return;
                }
            }
        }
    }

    /// The function is gone the moment it is disabled: unlink, then tell its connections.
    fn signal(&self) {
        let _ = std::fs::remove_file(&self.path);
        self.alive.store(false, Ordering::Release);
    }

    fn join(self) {
        for t in self.conns {
            let _ = t.join();
        }
    }
}

/// Stops endpoints: all are signalled before any connection is waited for.
fn stop_all(eps: Vec<Endpoint>) {
    eps.iter().for_each(Endpoint::signal);
    eps.into_iter().for_each(Endpoint::join);
}

/// The running server.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Serves `dev` on `pf_path` (and VF sockets as SR-IOV enables them) until `stop`.
    /// Returns after removing every socket it created.
    ///
    /// One thread waits on every listening socket and on SR-IOV changes at once (`poll`), so
    /// enabling 64 VFs binds 64 sockets and starts no thread; each connection gets its own.
    pub fn run(dev: Arc<Device>, pf_path: &Path, stop: Arc<AtomicBool>) -> Result<(), ServeError> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use nix::sys::eventfd::{EfdFlags, EventFd};
        let ids = AtomicU64::new(1);
        let mut pf = Endpoint::open(Func::Pf, pf_path.to_path_buf())?;
        let wake = Arc::new(
            EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
                .map_err(|e| ServeError::Thread(e.into()))?,
        );
        let (tx, rx) = mpsc::channel::<SriovChange>();
        let w = wake.clone();
        dev.on_sriov_change(Box::new(move |change| {
            let sent = tx.send(change).is_ok();
            if sent {
                let _ = w.write(1);
            }
            sent
        }));
        let mut vfs: Vec<Endpoint> = Vec::new();
        let mut result = Ok(());
        'serve: while !stop.load(Ordering::Acquire) {
            let ready: Vec<bool> = {
                let mut fds = vec![
                    PollFd::new(wake.as_fd(), PollFlags::POLLIN),
                    PollFd::new(pf.listener.as_fd(), PollFlags::POLLIN),
                ];
                fds.extend(
                    vfs.iter()
                        .map(|e| PollFd::new(e.listener.as_fd(), PollFlags::POLLIN)),
                );
                // The timeout only bounds how late `stop` is seen; clients and SR-IOV changes
                // wake the poll.
                let _ = poll(&mut fds, PollTimeout::from(50u16));
                fds.iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                    .collect()
            };
            if ready[0] {
                let _ = wake.read();
                while let Ok((n, ack)) = rx.try_recv() {
                    stop_all(std::mem::take(&mut vfs));
                    for v in 0..n {
                        match Endpoint::open(Func::Vf(v), vf_socket_path(pf_path, v)) {
                            Ok(e) => vfs.push(e),
                            Err(e) => {
                                result = Err(e);
                                let _ = ack.send(());
                                break 'serve;
                            }
                        }
                    }
                    let _ = ack.send(());
                }
                // The VF set changed under the readiness just read: poll again.
                continue;
            }
            if ready[1] {
                pf.accept_all(&dev, &ids);
            }
            for (e, _) in vfs.iter_mut().zip(&ready[2..]).filter(|(_, r)| **r) {
                e.accept_all(&dev, &ids);
            }
        }
        stop_all(vfs);
        stop_all(vec![pf]);
        result
    }
}
