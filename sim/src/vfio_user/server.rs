//! The vfio-user server: one UNIX socket for the PF, one per enabled VF beside it. Every
//! connection is served on its own thread; a malformed message gets an error reply (or, if
//! the framing itself is lost, that connection is closed) and never disturbs other clients.
//!
//! Listeners live here; what one connection does with its messages is [`super::conn`].

use super::conn::Conn;
use crate::device::{Device, Func};
use std::collections::HashMap;
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

struct Listener {
    alive: Arc<AtomicBool>,
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
    /// The listening socket, to wake its accept loop out of `poll()` when stopping.
    waker: Option<UnixListener>,
}

impl Listener {
    /// The function is gone the moment it is disabled: unlink, then tell the threads (and
    /// wake the accept loop: shutting a listening socket down ends its `poll()`).
    fn signal(&self) {
        let _ = std::fs::remove_file(&self.path);
        self.alive.store(false, Ordering::Release);
        if let Some(w) = &self.waker {
            let _ = nix::sys::socket::shutdown(
                std::os::fd::AsRawFd::as_raw_fd(w),
                nix::sys::socket::Shutdown::Both,
            );
        }
    }

    fn stop(mut self) {
        self.signal();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Stops many listeners at once: all are signalled before any is waited for.
fn stop_all(ls: impl IntoIterator<Item = Listener>) {
    let ls: Vec<Listener> = ls.into_iter().collect();
    ls.iter().for_each(Listener::signal);
    ls.into_iter().for_each(Listener::stop);
}

/// The running server.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Serves `dev` on `pf_path` (and VF sockets as SR-IOV enables them) until `stop`.
    /// Returns after removing every socket it created.
    pub fn run(dev: Arc<Device>, pf_path: &Path, stop: Arc<AtomicBool>) -> Result<(), ServeError> {
        let conn_ids = Arc::new(AtomicU64::new(1));
        let pf = spawn_listener(
            dev.clone(),
            Func::Pf,
            pf_path.to_path_buf(),
            conn_ids.clone(),
        )?;
        let (tx, rx) = mpsc::channel();
        dev.on_sriov_change(tx);
        let mut vfs: HashMap<u16, Listener> = HashMap::new();
        let mut result = Ok(());
        while !stop.load(Ordering::Acquire) {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok((n, ack)) => {
                    stop_all(vfs.drain().map(|(_, l)| l));
                    for v in 0..n {
                        let path = vf_socket_path(pf_path, v);
                        match spawn_listener(dev.clone(), Func::Vf(v), path, conn_ids.clone()) {
                            Ok(l) => {
                                vfs.insert(v, l);
                            }
                            Err(e) => {
                                result = Err(e);
                                stop.store(true, Ordering::Release);
                                break;
                            }
                        }
                    }
                    let _ = ack.send(());
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        stop_all(vfs.drain().map(|(_, l)| l));
        pf.stop();
        result
    }
}

fn spawn_listener(
    dev: Arc<Device>,
    func: Func,
    path: PathBuf,
    ids: Arc<AtomicU64>,
) -> Result<Listener, ServeError> {
    let listener = bind(&path)?;
    let waker = listener.try_clone().ok();
    let alive = Arc::new(AtomicBool::new(true));
    let a = alive.clone();
    let name = match func {
        Func::Pf => "vfio-user-pf".to_string(),
        Func::Vf(v) => format!("vfio-user-vf{v}"),
    };
    let thread = std::thread::Builder::new()
        .name(name)
        .spawn(move || accept_loop(listener, dev, func, a, ids))
        .map_err(ServeError::Thread)?;
    Ok(Listener {
        alive,
        path,
        thread: Some(thread),
        waker,
    })
}

fn accept_loop(
    l: UnixListener,
    dev: Arc<Device>,
    func: Func,
    alive: Arc<AtomicBool>,
    ids: Arc<AtomicU64>,
) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while alive.load(Ordering::Acquire) {
        match l.accept() {
            Ok((stream, _)) => {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let (d, a) = (dev.clone(), alive.clone());
                if let Ok(t) = std::thread::Builder::new()
                    .name(format!("vfio-user-conn{id}"))
                    .spawn(move || Conn::new(d, func, id, stream, a).serve())
                {
                    conns.push(t);
                }
                conns.retain(|t| !t.is_finished());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Sleep in the kernel until a client knocks (or 50 ms pass, to see whether
                // the function is still there): no polling, no added connect latency.
                use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
                let mut fds = [PollFd::new(l.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::from(50u16));
            }
            Err(_) if !alive.load(Ordering::Acquire) => break,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    for t in conns {
        let _ = t.join();
    }
}
