//! Helpers for the end-to-end tests: start `accel-sim` processes, run `accelctl`.
#![forbid(unsafe_code)]

pub mod kube_api;
pub mod kubelet;
pub mod remote;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The directory holding the workspace's built binaries (target/debug or target/release).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("target dir")
}

/// Path of a workspace binary; fails the test with a clear message if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace` (or `cargo test --workspace`)",
        p.display()
    );
    p
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The target directory the tests build firmware images in (its own, so that a test's cargo
/// does not wait for the one running the tests).
pub fn image_target_dir() -> PathBuf {
    root().join("target").join("fw-image-test")
}

/// A signed firmware image of the current sources, and the public key of the development
/// key that signed it: what a fresh device model's flash is provisioned with. Built once per
/// test run (`cargo xtask image`), not once per test binary: the first process to need it
/// builds it under a lock and stamps it with a fingerprint of what it is built from, and the
/// others (and later runs, while nothing changed) take it as it is. If it cannot be built,
/// the first test that needs it fails with the build's own words and every other one with a
/// line that points there, not a backtrace each.
pub fn firmware_image() -> &'static (PathBuf, PathBuf) {
    static IMAGE: std::sync::OnceLock<Result<(PathBuf, PathBuf), String>> =
        std::sync::OnceLock::new();
    static TOLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let built = IMAGE.get_or_init(|| {
        let target = image_target_dir();
        let image = target.join("fw").join("accel-fw.img");
        let key = target.join("accelvirt-keys").join("dev-ed25519.pub");
        std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        let lock_path = target.join(".image.lock");
        let lock = std::fs::File::create(&lock_path)
            .and_then(|f| f.lock().map(|()| f))
            .map_err(|e| format!("{}: {e}", lock_path.display()))?;
        let stamp = image.with_extension("img.stamp");
        let fp = format!("{:016x}", sources_fingerprint());
        let current = image.exists()
            && key.exists()
            && std::fs::read_to_string(&stamp).is_ok_and(|s| s == fp);
        if !current {
            try_build_image(&image, &[])?;
            std::fs::write(&stamp, &fp).map_err(|e| format!("{}: {e}", stamp.display()))?;
        }
        drop(lock);
        Ok((image, key))
    });
    match built {
        Ok(b) => b,
        Err(e) if !TOLD.swap(true, std::sync::atomic::Ordering::Relaxed) => {
            panic!("the firmware image could not be built: {e}")
        }
        // Unwinding without the panic hook: no message, no backtrace, the test fails.
        Err(_) => std::panic::resume_unwind(Box::new(
            "the firmware image could not be built (the first failing test says why)",
        )),
    }
}

/// A fingerprint (FNV-1a) of what the image is built from: the firmware, the ABI, the image
/// format, the tasks that build and sign it, the lock file and the toolchain file.
fn sources_fingerprint() -> u64 {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        if p.is_dir() {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    walk(&e.path(), out);
                }
            }
        } else {
            out.push(p.to_path_buf());
        }
    }
    let r = root();
    let mut files = Vec::new();
    for d in ["firmware", "shared-abi/src", "fw-image/src", "xtask/src"] {
        walk(&r.join(d), &mut files);
    }
    files.extend(["Cargo.lock", "rust-toolchain.toml"].map(|f| r.join(f)));
    files.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in files {
        for b in f
            .to_string_lossy()
            .bytes()
            .chain(std::fs::read(&f).unwrap_or_default())
        {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// `cargo xtask image --out OUT ARGS` in the tests' image target directory.
pub fn build_image(out: &Path, args: &[&str]) {
    if let Err(e) = try_build_image(out, args) {
        panic!("{e}");
    }
}

fn try_build_image(out: &Path, args: &[&str]) -> Result<(), String> {
    let o = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["xtask", "image", "--out"])
        .arg(out)
        .args(args)
        .env("CARGO_TARGET_DIR", image_target_dir())
        .output()
        .map_err(|e| format!("cannot run cargo xtask image: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo xtask image failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// An in-process device model with `engine_threads` queue-engine workers and `vfs` VFs made
/// as `spec` says, once their sockets are there; with a runtime and a management handle.
pub fn device_in_process(
    engine_threads: usize,
    vfs: u16,
    spec: host_driver::CreateSpec,
) -> (
    sim::inprocess::InProcess,
    tokio::runtime::Runtime,
    host_driver::Accel,
) {
    let d = sim::inprocess::InProcess::start_with(8, engine_threads).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let acc = host_driver::Accel::open(&host_driver::DeviceAddr::Socket(d.sock.clone())).unwrap();
    rt.block_on(acc.create_vfs(vfs, spec)).unwrap();
    // The VF sockets appear with SR-IOV; on a loaded machine a moment after create returns.
    let deadline = Instant::now() + Duration::from_secs(10);
    while (0..vfs).any(|v| !d.vf_socket(v).exists()) {
        assert!(Instant::now() < deadline, "the VF sockets appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
    (d, rt, acc)
}

/// A running `accel-sim` in its own temporary directory.
#[derive(Debug)]
pub struct Sim {
    child: Option<Child>,
    /// The directory holding its sockets.
    pub dir: tempfile::TempDir,
    /// The PF socket.
    pub sock: PathBuf,
}

impl Sim {
    /// Starts a device model and waits until its PF socket answers.
    pub fn start() -> Sim {
        Self::start_with(&[])
    }

    /// Starts with extra arguments.
    pub fn start_with(args: &[&str]) -> Sim {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("accel0.sock");
        let child = Self::spawn(&sock, args);
        Sim {
            child: Some(child),
            dir,
            sock,
        }
    }

    /// SIGKILL (a power cut: nothing is flushed or said), then a new device model on the
    /// same socket path and directory, as a restarted service would be.
    pub fn kill_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.child = Some(Self::spawn(&self.sock, &[]));
    }

    fn spawn(sock: &Path, args: &[&str]) -> Child {
        let _ = std::fs::remove_file(sock);
        let (image, key) = firmware_image();
        // What it reports (boots, resets, a stopped core) goes to a file beside its socket.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(sock.with_file_name("accel-sim.log"))
            .expect("accel-sim log");
        let child = Command::new(bin("accel-sim"))
            // Its own process group, with its firmware core: freezing the device freezes both.
            .process_group(0)
            .env("ACCEL_FW_IMAGE", image)
            .env("ACCEL_FW_KEY", key)
            .arg("--socket")
            .arg(sock)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start accel-sim");
        let t = Instant::now();
        while std::os::unix::net::UnixStream::connect(sock).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "accel-sim did not come up"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        child
    }

    /// The process id.
    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.as_ref().map_or(0, |c| c.id() as i32))
    }

    /// What the device model reported so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("accel-sim.log")).unwrap_or_default()
    }

    /// How many times the firmware has booted: once at start, then once per reset of the
    /// PF (each reboots it from flash).
    pub fn boots(&self) -> usize {
        self.log().matches(" running from slot ").count()
    }

    /// The firmware core process (a child of one of the device model's threads).
    pub fn core_pid(&self) -> nix::unistd::Pid {
        let t = Instant::now();
        loop {
            let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).unwrap();
            for task in tasks.flatten() {
                let kids =
                    std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                if let Some(p) = kids.split_whitespace().next().and_then(|p| p.parse().ok()) {
                    return nix::unistd::Pid::from_raw(p);
                }
            }
            assert!(t.elapsed() < Duration::from_secs(5), "no firmware core");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal to the device model and its firmware core (its process group).
    pub fn signal(&self, s: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::killpg(self.pid(), s);
    }

    /// Stops the process (SIGSTOP) and waits until it is really stopped.
    pub fn freeze(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
        let stat = format!("/proc/{}/stat", self.pid());
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            let s = std::fs::read_to_string(&stat).unwrap_or_default();
            // Field 3, after the parenthesised command name.
            if s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('T'))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("accel-sim did not stop");
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if t.elapsed() > Duration::from_secs(10) {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Runs accelctl against this device.
    pub fn ctl(&self, args: &[&str]) -> Output {
        accelctl(&self.sock, args)
    }

    /// Runs accelctl with `--json` and parses stdout; panics (with stderr) on failure.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let o = self.ctl(&a);
        assert!(
            o.status.success(),
            "accelctl {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("accelctl --json prints JSON")
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs accelctl with `-d sock`.
pub fn accelctl(sock: &Path, args: &[&str]) -> Output {
    Command::new(bin("accelctl"))
        .arg("-d")
        .arg(sock)
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run accelctl")
}

/// Deterministic pseudo-random bytes (xorshift), different for every seed: test data whose
/// pages never match another seed's by chance.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A hostile client of a VF over raw vfio-user: rings in a memfd it passes, job data mapped
/// without a descriptor (the device must ask it for every byte), and it never answers.
#[derive(Debug)]
pub struct Silent {
    /// The connection that maps the memory, and so gets the device's DMA requests.
    pub t: host_driver::vfio_user::VfioUser,
    /// A second connection for register writes: its replies never queue behind a request.
    pub regs: host_driver::vfio_user::VfioUser,
    rings: std::os::fd::OwnedFd,
}

/// Where [`Silent`] maps its rings.
pub const RING_IOVA: u64 = 1 << 32;
/// Where [`Silent`] maps its job data, without a descriptor.
pub const FILELESS_IOVA: u64 = 1 << 33;

impl Silent {
    pub fn connect(sock: &std::path::Path) -> Self {
        use std::os::fd::AsRawFd;
        use vfio_user_wire::proto::{cmd, DmaMap, DMA_FLAG_READ, DMA_FLAG_WRITE};
        use zerocopy::IntoBytes;
        let t = host_driver::vfio_user::VfioUser::connect(sock, false).unwrap();
        let rings =
            nix::sys::memfd::memfd_create(c"rings", nix::sys::memfd::MFdFlags::empty()).unwrap();
        nix::unistd::ftruncate(&rings, 8192).unwrap();
        let map = |addr, size| DmaMap {
            argsz: 32,
            flags: DMA_FLAG_READ | DMA_FLAG_WRITE,
            offset: 0,
            addr,
            size,
        };
        t.call(
            cmd::DMA_MAP,
            map(RING_IOVA, 8192).as_bytes(),
            &[rings.as_raw_fd()],
            "map",
        )
        .unwrap();
        t.call(
            cmd::DMA_MAP,
            map(FILELESS_IOVA, 16 << 20).as_bytes(),
            &[],
            "map",
        )
        .unwrap();
        let regs = host_driver::vfio_user::VfioUser::connect(sock, false).unwrap();
        Silent { t, regs, rings }
    }

    /// Posts `n` CRC32C jobs of 1 MiB over the fileless data, then enables queues `qs` on
    /// the rings (they share them): the device's first DMA_READ for each is never answered.
    pub fn post(&self, qs: std::ops::Range<usize>, n: u32) {
        use shared_abi::jobs::{Sqe, SqeHead};
        use shared_abi::regs::{queue, vf, QueueCtrl};
        use std::os::fd::AsFd;
        use zerocopy::{FromZeros, IntoBytes};
        for slot in 0..n {
            let mut e = Sqe::new_zeroed();
            e.tag = slot.into();
            e.src = FILELESS_IOVA.into();
            e.len = (1u32 << 20).into();
            let head = SqeHead {
                phase: 1,
                version: shared_abi::jobs::VERSION,
                op: shared_abi::jobs::JobOp::Crc32c.wire(),
                flags: 0,
            };
            let b = e.as_bytes();
            let at = slot as i64 * 64;
            nix::sys::uio::pwrite(self.rings.as_fd(), &b[4..], at + 4).unwrap();
            nix::sys::uio::pwrite(self.rings.as_fd(), &head.to_word().to_le_bytes(), at).unwrap();
        }
        for (q, (r, v)) in qs.flat_map(|q| {
            [
                (queue::SQ_BASE_LO, 0),
                (queue::SQ_BASE_HI, 1),
                (queue::SQ_SIZE, 16),
                (queue::CQ_BASE_LO, 4096),
                (queue::CQ_BASE_HI, 1),
                (queue::CQ_SIZE, 16),
                (queue::CONTROL, QueueCtrl::ENABLE.bits()),
            ]
            .map(|rv| (q, rv))
        }) {
            let at = vf::queue(q) as u64 + r.offset() as u64;
            self.regs.region_write(0, at, &v.to_le_bytes()).unwrap();
        }
    }
}

/// A running `acceld` owning one device model, in that device's directory: its socket
/// `acceld.sock`, its state in `state/`.
#[derive(Debug)]
pub struct Acceld {
    child: Option<Child>,
    /// The API socket.
    pub sock: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    device: PathBuf,
    args: Vec<String>,
    env: Vec<(String, std::ffi::OsString)>,
    /// Where its stderr goes (the journal it would write).
    pub log: PathBuf,
}

impl Acceld {
    /// Starts a daemon for `sim`'s device and waits until it serves.
    pub fn start(sim: &Sim, args: &[&str]) -> Acceld {
        Self::start_env(sim, args, &[])
    }

    /// The same, with these variables in the daemon's environment.
    pub fn start_env(sim: &Sim, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Acceld {
        let dir = sim.dir.path();
        let mut d = Acceld {
            child: None,
            sock: dir.join("acceld.sock"),
            state_dir: dir.join("state"),
            device: sim.sock.clone(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_os_string()))
                .collect(),
            log: dir.join("acceld.log"),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("acceld log");
        let child = Command::new(bin("acceld"))
            .arg("--device")
            .arg(&self.device)
            .arg("--listen")
            .arg(&self.sock)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start acceld");
        self.child = Some(child);
        let t = Instant::now();
        // Serving, and holding the device (its first reconcile done).
        loop {
            let o = self.ctl(&["health", "--json"]);
            if o.status.code().is_some_and(|c| c == 0 || c == 8)
                && String::from_utf8_lossy(&o.stdout).contains("\"online\": true")
            {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "acceld did not come up: {}\n{}",
                String::from_utf8_lossy(&o.stderr),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id.
    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.as_ref().map_or(0, |c| c.id() as i32))
    }

    /// SIGKILL, then a new daemon with the same arguments.
    pub fn kill_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn();
    }

    /// Sends a signal and waits up to 15 s for the exit; the status.
    pub fn stop_with(&mut self, s: nix::sys::signal::Signal) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), s);
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if t.elapsed() > Duration::from_secs(15) {
                let _ = c.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Runs accelctl through this daemon (`ACCELD_SOCKET`), on its device.
    pub fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_cmd(args).output().expect("run accelctl")
    }

    /// The accelctl command `ctl` runs, to change before running.
    pub fn ctl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("accelctl"));
        c.arg("-d")
            .arg(&self.device)
            .args(args)
            .env("ACCELD_SOCKET", &self.sock)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null());
        c
    }

    /// accelctl with `--json` through the daemon, parsed; panics with stderr on failure.
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        let o = self.ctl(&a);
        assert!(
            o.status.success(),
            "accelctl {args:?} through acceld failed ({:?}): {}\nacceld:\n{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        serde_json::from_slice(&o.stdout).expect("accelctl --json prints JSON")
    }

    /// What the daemon logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Acceld {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Each VF's index and resources (engines, granules, queues, vectors, weight) in a
/// `vf list --json`, and its FLR count and generation.
pub fn layout(list: &serde_json::Value) -> Vec<serde_json::Value> {
    list.as_array()
        .or_else(|| list["vfs"].as_array())
        .expect("a VF list")
        .iter()
        .map(|v| {
            serde_json::json!({
                "vf": v["vf"],
                "engines": v["engines"],
                "memory": v["memory_bytes"],
                "queues": v["queues"],
                "vectors": v["vectors"],
                "weight": v["weight"],
            })
        })
        .collect()
}

/// Python from a virtual environment under target/ with grpcio and grpcio-tools (from PyPI;
/// made once and reused), for the tests that drive our gRPC APIs from another
/// implementation.
pub fn grpc_python() -> PathBuf {
    python_venv("py-grpc", &["grpcio>=1.60", "grpcio-tools>=1.60"])
}

/// Python stubs generated by grpc_tools from `proto` (a path under `include`) into a
/// temporary directory, for `python` (from [`grpc_python`]).
pub fn grpc_python_stubs(python: &Path, include: &Path, proto: &str) -> tempfile::TempDir {
    let stubs = tempfile::tempdir().unwrap();
    let o = Command::new(python)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(include)
        .arg(format!("--python_out={}", stubs.path().display()))
        .arg(format!("--grpc_python_out={}", stubs.path().display()))
        .arg(include.join(proto))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "protoc: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    stubs
}

/// The python of a virtual environment `target/<name>` with `packages` from PyPI, made once
/// and reused. A file lock keeps test threads and processes from making it together (two
/// pip runs in one environment break it).
pub fn python_venv(name: &str, packages: &[&str]) -> PathBuf {
    let venv = root().join("target").join(name);
    let py = venv.join("bin").join("python");
    let stamp = venv.join(".installed");
    std::fs::create_dir_all(root().join("target")).unwrap();
    let lock_path = root().join("target").join(format!(".{name}.lock"));
    let lock = std::fs::File::create(&lock_path)
        .and_then(|f| f.lock().map(|()| f))
        .unwrap_or_else(|e| panic!("{}: {e}", lock_path.display()));
    if !stamp.exists() {
        let run = |c: &mut Command, what: &str| {
            let o = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                o.status.success(),
                "{what} failed:\n{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        };
        // A half-made environment from an interrupted run is made again.
        let _ = std::fs::remove_dir_all(&venv);
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv (python3 with venv is needed)",
        );
        run(
            Command::new(&py)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(packages),
            &format!("pip install {} (from PyPI)", packages.join(" ")),
        );
        std::fs::write(&stamp, b"").unwrap();
    }
    drop(lock);
    py
}
