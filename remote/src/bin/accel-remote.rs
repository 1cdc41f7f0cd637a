//! `accel-remote`: remote VFs. `export` serves VFs of this host's accelerator to importers on
//! other hosts; `import` presents one such VF here as a local vfio-user socket; `stats` shows
//! the imported VFs' links.
use accel_remote::exporter::{self, Exporter, VfSource};
use accel_remote::importer::{Dial, Importer};
use accel_remote::tls;
use clap::{Parser, Subcommand};
use host_driver::imported::{self, ImportedVf};
use host_driver::vf::Target;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "accel-remote", version, about = "Remote VFs over mutual TLS")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Debug)]
struct Tls {
    /// This side's certificate (PEM).
    #[arg(long)]
    cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    key: PathBuf,
    /// The CA the other side's certificate must chain to (PEM).
    #[arg(long)]
    ca: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve VFs of this host to importers (host A).
    Export {
        /// A VF to export: its vfio-user socket, its PCI address (bound to vfio-pci), or
        /// `acceld:ID` (`acceld:DEVICE/ID`) for VF ID of a device acceld owns, asked of acceld
        /// each time a session opens it. Repeat for more: the first is VF 0 on the wire, and
        /// so on.
        #[arg(long = "vf", required = true)]
        vfs: Vec<String>,
        /// acceld's socket, for `acceld:` VFs [default: $ACCELD_SOCKET, else acceld's own].
        #[arg(long)]
        acceld: Option<PathBuf>,
        /// Where to listen, ADDR:PORT.
        #[arg(long)]
        listen: String,
        #[command(flatten)]
        tls: Tls,
        /// NAME=VF[,VF...]: the importer whose certificate names NAME may import those VFs.
        /// Repeat for more importers. Nobody else may import anything.
        #[arg(long = "allow", required = true)]
        allow: Vec<String>,
        /// Jobs an importer may have in flight per VF.
        #[arg(long, default_value_t = 32)]
        credits: u32,
        /// Seconds a session outlives its link, for the importer to resume it.
        #[arg(long, default_value_t = 30.0)]
        linger: f64,
        /// Seconds a silent importer is waited for before its link is cut.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// Present a VF of another host as a local vfio-user socket (host B).
    Import {
        /// The exporter, HOST:PORT.
        #[arg(long)]
        connect: String,
        /// The VF's number at the exporter.
        #[arg(long)]
        vf: u32,
        /// The vfio-user socket to serve it on.
        #[arg(long)]
        socket: PathBuf,
        #[command(flatten)]
        tls: Tls,
        /// The name the exporter's certificate must carry [default: the host in --connect].
        #[arg(long)]
        server_name: Option<String>,
        /// Seconds a connection attempt, a register read or a silent exporter is waited for.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
        /// Seconds the link may stay down before jobs in flight complete LINK_DOWN and the
        /// VF records a LINK_DOWN fault.
        #[arg(long, default_value_t = 30.0)]
        link_limit: f64,
        /// Where the state file `accelctl imported` reads goes [default: the runtime dir].
        #[arg(long)]
        runtime_dir: Option<PathBuf>,
    },
    /// The imported VFs on this host and their links.
    Stats {
        /// As JSON.
        #[arg(long)]
        json: bool,
        /// [default: $ACCEL_RUNTIME_DIR, else $XDG_RUNTIME_DIR/accelvirt, else /tmp/accelvirt]
        #[arg(long)]
        runtime_dir: Option<PathBuf>,
    },
}

fn secs(s: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("--{what} {s}: give a positive number of seconds"))
}

/// An exported VF as `--vf` names it.
fn source(v: &str, acceld: &std::path::Path) -> Result<VfSource, String> {
    if let Some(rest) = v.strip_prefix("acceld:") {
        let (device, id) = rest.rsplit_once('/').unwrap_or(("", rest));
        let vf = id
            .parse()
            .map_err(|_| format!("--vf {v}: write acceld:ID or acceld:DEVICE/ID"))?;
        return Ok(VfSource::Acceld {
            acceld: acceld.to_path_buf(),
            device: device.to_string(),
            vf,
        });
    }
    Target::parse(v)
        .map(VfSource::At)
        .map_err(|e| format!("--vf {v}: {e}"))
}

fn stop_on_signals() -> Arc<AtomicBool> {
    use nix::sys::signal::{SigSet, Signal};
    let stop = Arc::new(AtomicBool::new(false));
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    // Blocked here and in every thread started after; one thread waits for them.
    let _ = set.thread_block();
    let s = stop.clone();
    std::thread::spawn(move || {
        let _ = set.wait();
        s.store(true, Ordering::Release);
    });
    stop
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.cmd {
        Cmd::Export {
            vfs,
            acceld,
            listen,
            tls: t,
            allow,
            credits,
            linger,
            timeout,
        } => {
            let id = tls::Identity::load(&t.cert, &t.key).map_err(|e| e.to_string())?;
            let roots = tls::load_roots(&t.ca).map_err(|e| e.to_string())?;
            let acceld = host_driver::daemon::socket(acceld.as_deref())
                .map(|(p, _)| p)
                .unwrap_or_else(|| accelvirt_api::DEFAULT_SOCKET.into());
            let vfs = vfs
                .iter()
                .map(|v| source(v, &acceld))
                .collect::<Result<Vec<_>, _>>()?;
            let config = exporter::Config {
                vfs,
                allow: accel_remote::admission::Admission::parse_allow(&allow)?,
                tls: tls::server_config(id, roots).map_err(|e| e.to_string())?,
                credits: credits.clamp(1, 1024),
                linger: secs(linger, "linger")?,
                timeout: secs(timeout, "timeout")?,
            };
            let addr = listen
                .to_socket_addrs()
                .map_err(|e| format!("--listen {listen}: {e}"))?
                .next()
                .ok_or_else(|| format!("--listen {listen}: no address"))?;
            let stop = stop_on_signals();
            let x = Exporter::bind(addr, config)?;
            eprintln!(
                "accel-remote: exporting on {}",
                x.local_addr().map_err(|e| e.to_string())?
            );
            x.run(&stop);
            Ok(())
        }
        Cmd::Import {
            connect,
            vf,
            socket,
            tls: t,
            server_name,
            timeout,
            link_limit,
            runtime_dir,
        } => {
            let id = tls::Identity::load(&t.cert, &t.key).map_err(|e| e.to_string())?;
            let roots = tls::load_roots(&t.ca).map_err(|e| e.to_string())?;
            let host = connect
                .rsplit_once(':')
                .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
                .ok_or_else(|| format!("--connect {connect}: write HOST:PORT"))?
                .to_string();
            let dial = Dial {
                addr: connect.clone(),
                server_name: server_name.unwrap_or(host),
                tls: tls::client_config(id, roots).map_err(|e| e.to_string())?,
                vf,
                timeout: secs(timeout, "timeout")?,
                link_limit: secs(link_limit, "link-limit")?,
            };
            let stop = stop_on_signals();
            let imp = Importer::start(dial).map_err(|e| e.to_string())?;
            let dir = runtime_dir.unwrap_or_else(host_driver::vfio_user::default_runtime_dir);
            let socket = std::path::absolute(&socket).unwrap_or(socket);
            let v = imp.vf().clone();
            let from = format!("VF {vf} of {connect}");
            let (s2, stop2, dir2, connect2) = (socket.clone(), stop.clone(), dir.clone(), connect);
            // The state file, kept current for `accelctl imported` and `accel-remote stats`.
            let reporter = std::thread::spawn(move || {
                while !stop2.load(Ordering::Acquire) {
                    let st = &v.stats;
                    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                    let _ = imported::write(
                        &dir2,
                        &ImportedVf {
                            socket: s2.clone(),
                            exporter: connect2.clone(),
                            vf,
                            link: v.link_state().into(),
                            session: format!("{:#x}", v.session()),
                            pid: std::process::id(),
                            jobs: g(&st.jobs),
                            inflight: g(&st.inflight),
                            bytes_out: g(&st.bytes_out),
                            bytes_in: g(&st.bytes_in),
                            reconnects: g(&st.reconnects),
                            resubmitted: g(&st.resubmitted),
                            failed: g(&st.failed),
                            reg_accesses: g(&st.reg_accesses),
                            rtt_us: g(&st.rtt_us),
                        },
                    );
                    std::thread::sleep(Duration::from_millis(250));
                }
                let _ = std::fs::remove_file(imported::state_file(&dir2, &s2));
            });
            eprintln!("accel-remote: {from} served at {}", socket.display());
            let r = imp
                .serve(&socket, &stop)
                .map_err(|e| format!("{}: {e}", socket.display()));
            stop.store(true, Ordering::Release);
            let _ = reporter.join();
            r
        }
        Cmd::Stats { json, runtime_dir } => {
            let dir = runtime_dir.unwrap_or_else(host_driver::vfio_user::default_runtime_dir);
            let vfs = imported::list(&dir);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&vfs).map_err(|e| e.to_string())?
                );
                return Ok(());
            }
            if vfs.is_empty() {
                println!(
                    "no imported VF (state files in {})",
                    imported::dir(&dir).display()
                );
            } else {
                print!("{}", imported::table(&vfs));
            }
            Ok(())
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("accel-remote: {e}");
        std::process::exit(1);
    }
}
