//! `accel-sim`: run the accelerator model and serve it over vfio-user.
#![forbid(unsafe_code)]

use clap::Parser;
use shared_abi::board::Board;
use sim::config_space::lspci_dump;
use sim::device::{Device, Func};
use sim::pci::{layout, sriov};
use sim::vfio_user::server::Server;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A PCIe accelerator with SR-IOV, served over vfio-user.
///
/// The PF is served on --socket; each enabled VF gets its own socket beside it
/// (accel0.sock → accel0-vf0.sock, ...). Runs until SIGINT or SIGTERM, then removes its sockets.
///
/// Examples:
///   accel-sim --socket /run/accel/accel0.sock
///   accel-sim --socket ./accel0.sock --total-vfs 16
///   accel-sim --dump-config pf.txt && lspci -F pf.txt -vvv
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Args {
    /// UNIX socket path for the PF.
    #[arg(long, required_unless_present = "dump_config")]
    socket: Option<PathBuf>,
    /// TotalVFs advertised in the SR-IOV capability (1..=64).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=64))]
    total_vfs: u16,
    /// Write the PF config space (SR-IOV enabled with 4 VFs) in `lspci -xxxx` format and exit.
    #[arg(long, value_name = "FILE")]
    dump_config: Option<PathBuf>,
    /// The device's flash (persists across runs) [default: the socket's path with `.flash`].
    #[arg(long, value_name = "FILE")]
    flash: Option<PathBuf>,
    /// The image an empty flash is provisioned with (`cargo xtask image` builds it).
    #[arg(long, value_name = "FILE", env = "ACCEL_FW_IMAGE", default_value_os_t = built("fw/accel-fw.img"))]
    install_image: PathBuf,
    /// The public key an empty flash's OTP page is provisioned with (`cargo xtask image`
    /// makes the development key pair).
    #[arg(long, value_name = "FILE", env = "ACCEL_FW_KEY", default_value_os_t = built("accelvirt-keys/dev-ed25519.pub"))]
    key: PathBuf,
    /// Worker threads of the queue engine: the board's engines run on them in parallel
    /// [default: the host's cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    engine_threads: Option<u16>,
}

/// `rel` in the workspace's target directory, where `cargo xtask image` puts what it makes
/// (a clean path: no `sim/..` in messages).
fn built(rel: &str) -> PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .unwrap_or(manifest)
        .join("target")
        .join(rel)
}

/// The queue engine's workers: as asked, or one per core.
fn engine_threads(asked: Option<u16>) -> usize {
    asked.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    )
}

/// Opens the flash (provisioning an empty one), held for this process alone.
fn open_flash(args: &Args, socket: &std::path::Path) -> Result<sim::flash::Flash, String> {
    let path = args
        .flash
        .clone()
        .unwrap_or_else(|| socket.with_extension("flash"));
    let (image, key) = (args.install_image.clone(), args.key.clone());
    let provision = move || {
        let hint = "build one with `cargo xtask image`, or give --install-image and --key";
        let img = std::fs::read(&image).map_err(|e| {
            format!(
                "no firmware image to install ({}: {e}); {hint}",
                image.display()
            )
        })?;
        let k = std::fs::read(&key).map_err(|e| {
            format!(
                "no public key to provision ({}: {e}); {hint}",
                key.display()
            )
        })?;
        let k: [u8; 32] = k
            .try_into()
            .map_err(|_| format!("{}: not a 32-byte ed25519 public key", key.display()))?;
        Ok((k, img))
    };
    sim::flash::Flash::open(&path, fw_image::BOARD_SIM, provision)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accel-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How long the device may take to come up: the boot stage's watchdog for each slot, and
/// some.
const BOOT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(8);

fn run(args: Args) -> Result<(), String> {
    let dev = Device::new(Board::DEFAULT, args.total_vfs)
        .map_err(|e| format!("cannot create the device: {e}"))?;
    if let Some(file) = &args.dump_config {
        return dump_config(&dev, file);
    }
    let Some(socket) = args.socket.clone() else {
        return Err("--socket is required".into());
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    let dir = socket.parent().filter(|d| !d.as_os_str().is_empty());
    if dir.is_some_and(|d| !d.is_dir()) {
        return Err(format!(
            "cannot create socket {}: its directory does not exist",
            socket.display()
        ));
    }
    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return Err(format!(
            "socket {} is in use by another server",
            socket.display()
        ));
    }
    dev.attach_flash(open_flash(&args, &socket)?);
    let fw = sim::boot::spawn(
        dev.clone(),
        stop.clone(),
        Box::new(|m: &str| eprintln!("accel-sim: {m}")),
    )
    .map_err(|e| format!("cannot start the boot stage: {e}"))?;
    // Like silicon after reset, the device shows up only once its firmware is ready.
    let t = std::time::Instant::now();
    let ready = shared_abi::regs::DevStatus::READY.bits();
    while dev
        .bar0()
        .observe32(shared_abi::regs::pf::DEV_STATUS.offset())
        & ready
        == 0
    {
        if t.elapsed() > BOOT_TIMEOUT {
            stop.store(true, Ordering::Release);
            let _ = fw.join();
            return Err(format!(
                "the firmware did not become ready within {} s",
                BOOT_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    eprintln!(
        "accel-sim: serving PF on {} (TotalVFs {})",
        socket.display(),
        args.total_vfs
    );
    let engine = dev
        .spawn_dataplane(stop.clone(), engine_threads(args.engine_threads))
        .map_err(|e| format!("cannot start the queue engine: {e}"))?;
    let served = Server::run(dev, &socket, stop.clone());
    stop.store(true, Ordering::Release);
    let _ = fw.join();
    for t in engine {
        let _ = t.join();
    }
    served.map_err(|e| e.to_string())?;
    eprintln!("accel-sim: stopped");
    Ok(())
}

fn dump_config(dev: &Device, file: &std::path::Path) -> Result<(), String> {
    let s = layout::SRIOV;
    let w = |off: usize, v: u16| {
        dev.config_write(Func::Pf, off as u64, &v.to_le_bytes())
            .map_err(|e| e.to_string())
    };
    w(s + sriov::NUM_VFS, 4)?;
    w(s + sriov::CTRL, sriov::CTRL_VF_ENABLE | sriov::CTRL_VF_MSE)?;
    // A BAR address as firmware would assign, so lspci shows placed BARs.
    dev.config_write(Func::Pf, 0x10, &0xfe00_0004u32.to_le_bytes())
        .map_err(|e| e.to_string())?;
    dev.config_write(
        Func::Pf,
        (s + sriov::VF_BAR0) as u64,
        &0xfd00_0004u32.to_le_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let bytes = dev.pf_config_bytes();
    let text = lspci_dump(
        "00:00.0",
        "Processing accelerators: Device 1fac:a0c0 (rev 01)",
        &bytes[..],
    );
    std::fs::write(file, text).map_err(|e| format!("cannot write {}: {e}", file.display()))
}
