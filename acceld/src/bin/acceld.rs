//! `acceld`: owns accelvirt devices and serves their management API.
#![forbid(unsafe_code)]

use acceld::access::Policy;
use acceld::device::{Managed, Options};
use acceld::events::EventLog;
use acceld::notify::notify;
use acceld::service::{self, Service};
use accelvirt_api::v1::accelvirt_server::AccelvirtServer;
use tonic::service::interceptor::InterceptedService;

/// The largest message either way: a firmware image (a flash slot) and its framing.
const MAX_MESSAGE: usize = shared_abi::image::SLOT_SIZE + (64 << 10);
/// Requests one connection may have in flight.
const MAX_STREAMS: u32 = 16;
use clap::{Parser, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

const AFTER_HELP: &str = "\
acceld opens each device once and keeps it open; accelctl (and any gRPC client, see
api/proto/accelvirt/v1/accelvirt.proto) reaches the devices through it. Root and members of
--group may manage; anyone else is refused.

The VF layout users ask for through acceld is kept per device in --state-dir and put back
whenever the device comes back empty: after a firmware fault or hang (acceld resets it), a
reset, a firmware update, or a device-model restart. A device found holding another layout
is reported (accelctl health) and left alone, unless --reconcile enforce.

Signals: SIGTERM and SIGINT end event streams, finish the requests in flight and exit; SIGHUP
re-reads the state files and the group, and reconciles.

Example:
  acceld --device /tmp/accelvirt/accel0.sock --listen /tmp/accelvirt/acceld.sock \\
         --state-dir /tmp/accelvirt/state --metrics 127.0.0.1:9400";

/// What to do with a device that holds another layout than the desired one.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Reconcile {
    /// Report it (accelctl health, an event) and leave it alone.
    Report,
    /// Destroy what it holds and re-create the desired layout.
    Enforce,
}

/// What to do when a device's firmware faults or hangs.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum OnFault {
    /// Reset the device and restore its layout.
    Reset,
    /// Report it and wait for an operator.
    Report,
}

/// The accelvirt device daemon.
#[derive(Parser, Debug)]
#[command(version, about, after_help = AFTER_HELP)]
struct Args {
    /// A device to own: a PCI address (kernel VFIO) or a device-model socket; repeat for
    /// more.
    #[arg(long = "device", short = 'd', required = true, value_name = "DEV")]
    devices: Vec<String>,
    /// The API's UNIX socket.
    #[arg(long, default_value = accelvirt_api::DEFAULT_SOCKET)]
    listen: PathBuf,
    /// Where each device's desired state is kept.
    #[arg(long, default_value = "/var/lib/accelvirt")]
    state_dir: PathBuf,
    /// The group whose members may manage (besides root).
    #[arg(long, default_value = "accelvirt")]
    group: String,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9400).
    #[arg(long, value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
    /// A device holding another layout than the desired one.
    #[arg(long, value_enum, default_value_t = Reconcile::Report)]
    reconcile: Reconcile,
    /// A device whose firmware faulted or hung.
    #[arg(long, value_enum, default_value_t = OnFault::Reset)]
    on_fault: OnFault,
    /// Milliseconds the firmware has to answer one command.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

fn main() -> ExitCode {
    // First: the descriptors systemd passed (before anything opens one of its own).
    let passed = acceld::sys::listen_fds();
    // SIGPIPE stays ignored (Rust's default), unlike accelctl's: a client that goes away
    // while the daemon writes to it is an EPIPE on that connection, not the daemon's end.
    let args = Args::parse();
    match run(args, passed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("acceld: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The container, group and device descriptors systemd passed for device `name`, if all
/// three were.
fn kept_for(
    passed: &mut Vec<(String, std::os::fd::OwnedFd)>,
    name: &str,
) -> Option<host_driver::kernel::vfio::Opened> {
    let mut take = |role: &str| {
        let want = acceld::device::fd_name(name, role);
        let i = passed.iter().position(|(n, _)| *n == want)?;
        Some(passed.swap_remove(i).1)
    };
    let (c, g, d) = (take("container"), take("group"), take("device"));
    Some(host_driver::kernel::vfio::Opened {
        container: c?,
        group: g?,
        device: d?,
    })
}

/// A lock on each device's state file: two daemons never own one device.
fn lock_device(dir: &std::path::Path, name: &str) -> Result<std::fs::File, String> {
    let p = acceld::device::state_path(dir, name).with_extension("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    f.try_lock().map_err(|_| {
        format!(
            "another acceld owns {name} (it holds {}); stop it first",
            p.display()
        )
    })?;
    Ok(f)
}

fn run(args: Args, mut passed: Vec<(String, std::os::fd::OwnedFd)>) -> Result<(), String> {
    std::fs::create_dir_all(&args.state_dir)
        .map_err(|e| format!("--state-dir {}: {e}", args.state_dir.display()))?;
    let opts = Options {
        timeout: Duration::from_millis(args.timeout_ms),
        enforce: args.reconcile == Reconcile::Enforce,
        auto_reset: args.on_fault == OnFault::Reset,
        state_dir: args.state_dir.clone(),
    };
    let events = Arc::new(EventLog::default());
    // Each device on a runtime of its own: a hung device holds only its own threads.
    let mut runtimes = Vec::new();
    let mut devices = Vec::new();
    let mut locks = Vec::new();
    let names: Vec<String> = args
        .devices
        .iter()
        .map(|d| acceld::device::canonical(d))
        .collect();
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(format!("--device {name} given twice"));
        }
        locks.push(lock_device(&args.state_dir, name)?);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("acceld-dev{i}"))
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        let d = Managed::new(name, opts.clone(), rt.handle().clone(), events.clone())
            .map_err(|e| format!("--device {name}: {e}"))?;
        if let Some(opened) = kept_for(&mut passed, &d.name) {
            d.keep(opened);
        }
        runtimes.push(rt);
        devices.push(d);
    }
    let devices = Arc::new(devices);
    let main_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("acceld-api")
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    // The socket before anything else runs: its mode comes from the umask at bind, so it
    // is set for that moment alone, and no other thread creates files meanwhile.
    let listener = bind(&args.listen)?;
    let r = main_rt.block_on(serve(args, listener, devices.clone(), events));
    // The supervisors stop with their runtimes; the devices keep their VFs.
    for rt in runtimes {
        rt.shutdown_timeout(Duration::from_secs(2));
    }
    drop(locks);
    r
}

/// Binds the API socket: its directory made, a stale socket (no daemon answers) replaced, a
/// live one refused. Mode 0666: anyone may connect, and each connection is then checked
/// against its peer's credentials, so a refused user learns why instead of meeting a bare
/// EACCES. Set through the umask at bind, not a chmod after it (which would follow a symlink
/// someone put in its place).
fn bind(path: &std::path::Path) -> Result<std::os::unix::net::UnixListener, String> {
    use nix::sys::stat::{umask, Mode};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(format!(
            "another acceld answers at {}; stop it first",
            path.display()
        ));
    }
    let _ = std::fs::remove_file(path);
    use nix::sys::socket::{socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
    let err = |e: nix::Error| format!("--listen {}: {e}", path.display());
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(err)?;
    let addr = UnixAddr::new(path).map_err(err)?;
    let old = umask(Mode::from_bits_truncate(0o111));
    let bound = nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr);
    umask(old);
    bound.map_err(err)?;
    // A deep queue: a hundred clients connecting at once while the daemon is busy find
    // room (a full queue fails a non-blocking connect at once, with EAGAIN).
    nix::sys::socket::listen(&fd, Backlog::new(1024).map_err(err)?).map_err(err)?;
    let l = std::os::unix::net::UnixListener::from(fd);
    l.set_nonblocking(true)
        .map_err(|e| format!("--listen {}: {e}", path.display()))?;
    Ok(l)
}

async fn serve(
    args: Args,
    listener: std::os::unix::net::UnixListener,
    devices: Arc<Vec<Arc<Managed>>>,
    events: Arc<EventLog>,
) -> Result<(), String> {
    let listener = tokio::net::UnixListener::from_std(listener).map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for d in devices.iter() {
        d.runtime().spawn(d.clone().supervise(stop_rx.clone()));
    }
    let policy = Arc::new(RwLock::new(Policy::new(&args.group)));
    if policy.read().map(|p| p.gid.is_none()).unwrap_or(false) {
        eprintln!(
            "acceld: group '{}' does not exist: only root may manage (create it, then SIGHUP)",
            args.group
        );
    }
    if let Some(addr) = args.metrics {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("--metrics {addr}: {e}"))?;
        tokio::spawn(acceld::metrics::serve(l, devices.clone()));
    }
    let svc = Service::new(devices.clone(), events, stop_rx.clone());
    let incoming = acceld::listener::bounded(listener, policy.clone());
    let check = policy.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| e.to_string())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| e.to_string())?;
    let (down_tx, down_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            // Bounds on what one connection can make the daemon hold: streams at once, and
            // a peer that stops answering pings is dropped.
            .max_concurrent_streams(Some(MAX_STREAMS))
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(
                // The largest request is a firmware image, at most a flash slot.
                InterceptedService::new(
                    AccelvirtServer::new(svc)
                        .max_decoding_message_size(MAX_MESSAGE)
                        .max_encoding_message_size(MAX_MESSAGE),
                    move |r| service::admit(&check, r),
                ),
            )
            .serve_with_incoming_shutdown(incoming, async {
                let _ = down_rx.await;
            }),
    );
    eprintln!(
        "acceld: serving {} on {}",
        devices
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        args.listen.display()
    );
    notify("READY=1");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                notify("RELOADING=1");
                eprintln!("acceld: SIGHUP: re-reading the group and the state files");
                if let Ok(mut p) = policy.write() {
                    *p = Policy::new(&args.group);
                }
                service::reload_all(&devices).await;
                notify("READY=1");
            }
        }
    }
    notify("STOPPING=1");
    eprintln!("acceld: stopping: finishing the requests in flight");
    let _ = stop_tx.send(true);
    let _ = down_tx.send(());
    match tokio::time::timeout(service::DRAIN, server).await {
        Ok(Ok(Err(e))) => eprintln!("acceld: server: {e}"),
        Err(_) => eprintln!(
            "acceld: requests still running after {:?}: exiting",
            service::DRAIN
        ),
        _ => {}
    }
    let _ = std::fs::remove_file(&args.listen);
    Ok(())
}
