//! The whole device model in this process: the firmware thread, the queue engine and the
//! vfio-user server on a socket in a private directory (a tmpfs when there is one, as `/run`
//! is). For benchmarks and tests that drive it as a client would, with hooks into the model.

use crate::device::Device;
use shared_abi::board::Board;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running device model; stops when dropped.
#[derive(Debug)]
pub struct InProcess {
    /// The device, for hooks (fault injection, register peeks).
    pub dev: Arc<Device>,
    /// The PF socket.
    pub sock: PathBuf,
    stop: Arc<AtomicBool>,
    _dir: tempfile_free::Dir,
}

impl InProcess {
    /// Starts a device with `total_vfs` and waits until its PF socket answers; its queue
    /// engine has a worker per core.
    pub fn start(total_vfs: u16) -> std::io::Result<Self> {
        Self::start_with(
            total_vfs,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        )
    }

    /// The same with `engine_threads` queue engine workers.
    pub fn start_with(total_vfs: u16, engine_threads: usize) -> std::io::Result<Self> {
        let dir = tempfile_free::Dir::new()?;
        let sock = dir.0.join("accel0.sock");
        let dev = Device::new(Board::DEFAULT, total_vfs)?;
        let stop = Arc::new(AtomicBool::new(false));
        crate::fwhost::spawn(dev.clone(), stop.clone(), 1)?;
        dev.spawn_dataplane(stop.clone(), engine_threads)?;
        let (d, s, p) = (dev.clone(), stop.clone(), sock.clone());
        std::thread::Builder::new()
            .name("vfio-user-server".into())
            .spawn(move || {
                let _ = crate::vfio_user::server::Server::run(d, &p, s);
            })?;
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            if t.elapsed() > Duration::from_secs(5) {
                stop.store(true, Ordering::Release);
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(InProcess {
            dev,
            sock,
            stop,
            _dir: dir,
        })
    }

    /// VF `v`'s socket.
    pub fn vf_socket(&self, v: u16) -> PathBuf {
        vfio_user_wire::vf_socket_path(&self.sock, v)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// A private directory, removed on drop (no dependency for one directory).
mod tempfile_free {
    use std::path::PathBuf;

    #[derive(Debug)]
    pub struct Dir(pub PathBuf);

    impl Dir {
        pub fn new() -> std::io::Result<Self> {
            let base = ["/dev/shm", "/tmp"]
                .iter()
                .map(std::path::Path::new)
                .find(|p| p.is_dir())
                .map_or_else(std::env::temp_dir, |p| p.to_path_buf());
            // Never a name this process used before: a stopped device's server may still be
            // removing its sockets from the old directory's paths.
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            for _ in 0..1000u32 {
                let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p = base.join(format!("accel-sim-{}-{i}", std::process::id()));
                match std::fs::create_dir(&p) {
                    Ok(()) => return Ok(Dir(p)),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(std::io::ErrorKind::AlreadyExists.into())
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
