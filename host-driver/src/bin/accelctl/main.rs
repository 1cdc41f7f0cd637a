//! `accelctl`: create, list, show, resize, reset and destroy the accelerator's VFs.
#![forbid(unsafe_code)]

mod backend;
mod events;
mod flash;
mod logs;
mod output;
mod run;

use backend::Backend;
use clap::{Args, Parser, Subcommand};
use host_driver::error::{Error, Result};
use host_driver::spec::{granules, parse_size};
use host_driver::CreateSpec;
use output::Out;
use shared_abi::resources::{VfInfo, VfSpec};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const AFTER_HELP: &str = "\
Examples:
  accel-sim --socket /tmp/accelvirt/accel0.sock &        # a simulated device
  accelctl list
  accelctl -d /tmp/accelvirt/accel0.sock info
  accelctl -d /tmp/accelvirt/accel0.sock create-vf --count 4
  accelctl -d 0000:3b:00.0 create-vf --count 2 --engines 2 --memory 4G --queues 32 --bind vfio-pci
  accelctl -d /tmp/accelvirt/accel0.sock vf list --json
  accelctl -d /tmp/accelvirt/accel0.sock vf resize 1 --memory 8G
  accelctl -d /tmp/accelvirt/accel0.sock destroy-vf --all
  accelctl -d 0000:3b:00.0 stats --watch 1
  accelctl -d /tmp/accelvirt/accel0.sock vf run 0 --job crc32c --size 1M --queues 2 --seconds 5
  accelctl -d 0000:00:03.0 run --job sha256 --size 64K        # inside a VM given a VF

The device (-d, or ACCEL_DEVICE) is a PCI address, driven through the kernel's VFIO, or the
path of a vfio-user socket (accel-sim).

Give VMs the VFs, never the PF: a VMM resets each device it is given when the VM starts, and a
PF reset disables SR-IOV and destroys every VF. Inside a VM that was given a PF anyway,
create-vf refuses: VMMs hide SR-IOV from guests.

Exit codes:
  0  success
  1  the firmware refused the command (the message names the reason)
  2  invalid arguments
  3  no such device or VF, not ours, or not usable (driver binding, permissions)
  4  busy: the firmware did not answer in time, another process holds the mailbox or is
     creating or destroying VFs, or existing VFs conflict with the request (fw-reset and
     flash --activate with VFs, a create another create got ahead of)
  5  the connection to the device failed or it broke the protocol
  6  the device's firmware has faulted: reset the device
  7  permission denied: acceld lets only root and its group manage (acceld --group)
  8  health: something needs attention (the lines printed say what)

When acceld owns the device (its socket: --acceld, $ACCELD_SOCKET, or
/run/accelvirt/acceld.sock if it exists), commands go through it, with the same output and
exit codes; --direct opens the device here instead. `events` and `health` need acceld.";

/// Manage the accelerator's SR-IOV virtual functions.
#[derive(Parser, Debug)]
#[command(version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Device: PCI address (0000:3b:00.0) or vfio-user socket path.
    #[arg(short, long, env = "ACCEL_DEVICE", global = true)]
    device: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Milliseconds the firmware has to answer one command.
    #[arg(long, default_value_t = 5000, global = true)]
    timeout_ms: u64,
    /// acceld's socket [default: $ACCELD_SOCKET, else /run/accelvirt/acceld.sock if it exists].
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "direct")]
    acceld: Option<PathBuf>,
    /// Open the device here even if acceld owns it (over kernel VFIO this resets the PF, and
    /// every VF with it).
    #[arg(long, global = true)]
    direct: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List our devices: PCI functions with our IDs and device-model sockets.
    List {
        /// Directory with device-model sockets [default: $ACCEL_RUNTIME_DIR, else $XDG_RUNTIME_DIR/accelvirt, else /tmp/accelvirt].
        #[arg(long)]
        runtime_dir: Option<PathBuf>,
    },
    /// VFs imported from other hosts (`accel-remote import`): each one's local socket, its
    /// exporter and VF there, its link state and counters.
    Imported {
        /// Directory the importers keep their state in [default: $ACCEL_RUNTIME_DIR, else $XDG_RUNTIME_DIR/accelvirt, else /tmp/accelvirt].
        #[arg(long)]
        runtime_dir: Option<PathBuf>,
    },
    /// Capabilities, firmware version, board and free resources.
    Info,
    /// Create VFs (and enable SR-IOV to show them).
    CreateVf(CreateArgs),
    /// Work with existing VFs.
    #[command(subcommand)]
    Vf(VfCmd),
    /// Destroy one VF, or all of them (SR-IOV is disabled when none is left).
    DestroyVf {
        /// VF index.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<u16>,
        /// Destroy every VF.
        #[arg(long)]
        all: bool,
    },
    /// Run jobs on the VF given with -d (its vfio-user socket, or its PCI address inside a VM
    /// or on a host whose PF is bound to vfio-pci), as a tenant would: see `vf run`.
    Run {
        #[command(flatten)]
        load: RunArgs,
        /// The VF token of a VF whose PF is bound to vfio-pci (the kernel asks each VF user
        /// for it); `create-vf` and `vf show` print it in the VF's hand-off, and the device
        /// plugin gives a pod its VF's token in ACCEL_VF_TOKEN.
        #[arg(long, env = "ACCEL_VF_TOKEN", hide_env_values = true)]
        vf_token: Option<String>,
    },
    /// Write a signed firmware image (`cargo xtask image`) into the device's inactive flash
    /// slot; the device verifies it and boots it at the next reset. A download cut off
    /// (a lost connection) resumes when the same image is flashed again.
    Flash {
        /// The image file.
        image: PathBuf,
        /// Reset into the new image now and report its version (SR-IOV and every VF go with
        /// the reset: refused while VFs exist).
        #[arg(long)]
        activate: bool,
        /// Allow an image older than the running firmware (never one below the device's
        /// rollback floor, which an image raises once it has run and nothing lowers).
        #[arg(long)]
        allow_downgrade: bool,
    },
    /// Reset the device: the firmware reboots from flash (a pending slot is tried; one that
    /// never becomes ready rolls back). SR-IOV and every VF go with the reset, so it is
    /// refused while VFs exist unless --force.
    FwReset {
        /// Reset even though VFs exist: they are destroyed, and their VMs lose them.
        #[arg(long)]
        force: bool,
    },
    /// The running firmware's log (defmt frames from its log ring, decoded with its image's
    /// ELF, found by build id in --image, $ACCEL_FW_IMAGES or target/fw).
    Logs {
        /// Keep printing new lines until interrupted.
        #[arg(long)]
        follow: bool,
        /// The running image (or its ELF).
        #[arg(long)]
        image: Option<PathBuf>,
    },
    /// What happened to the device: firmware events (VF FLRs, faults, state changes,
    /// firmware faults and boots) and acceld's own (heartbeat lost, device lost and back,
    /// layout restored, drift). Needs acceld.
    Events {
        /// Keep printing events as they happen, until interrupted.
        #[arg(long)]
        follow: bool,
    },
    /// The device's health as acceld sees it: firmware heartbeat, event backlog and drops,
    /// per-VF fault and FLR rates, drift from the desired layout. Exit code 8 when something
    /// needs attention. Needs acceld.
    Health,
    /// Device and per-VF counters.
    Stats {
        /// Print them again every SECONDS (like `nvidia-smi -l`), until interrupted.
        #[arg(long, value_name = "SECONDS")]
        watch: Option<f64>,
        /// With --watch: stop after this many samples.
        #[arg(long, requires = "watch", value_name = "N")]
        count: Option<u32>,
    },
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// How many VFs.
    #[arg(long)]
    count: u16,
    /// Sizing: equal (split what is free) or small, medium, large presets.
    #[arg(long, conflicts_with_all = ["engines", "memory", "queues", "vectors"])]
    profile: Option<String>,
    #[command(flatten)]
    res: ResArgs,
    /// Bind the new VFs to this driver (kernel VFIO only; vfio-pci is the one supported).
    #[arg(long, value_name = "DRIVER")]
    bind: Option<String>,
}

#[derive(Args, Debug, Default)]
struct ResArgs {
    /// Compute engines per VF.
    #[arg(long)]
    engines: Option<u16>,
    /// Device memory per VF (e.g. 512M, 4G; a multiple of the 2 MiB granule).
    #[arg(long)]
    memory: Option<String>,
    /// Queue pairs per VF.
    #[arg(long)]
    queues: Option<u16>,
    /// MSI-X vectors per VF.
    #[arg(long)]
    vectors: Option<u16>,
    /// Scheduler weight (1..=1000).
    #[arg(long)]
    weight: Option<u16>,
}

impl ResArgs {
    /// Each given field on its own, named in the message (before any is required).
    fn check(&self, shift: u8) -> Result<()> {
        let zero = |what: &str| Error::Invalid(format!("--{what} 0: at least 1"));
        if self.engines == Some(0) {
            return Err(zero("engines"));
        }
        if self.queues == Some(0) {
            return Err(zero("queues"));
        }
        if self.vectors == Some(0) {
            return Err(zero("vectors"));
        }
        if let Some(v) = self
            .vectors
            .filter(|&v| v > shared_abi::pci::VF_MAX_MSIX_VECTORS)
        {
            return Err(Error::Invalid(format!(
                "--vectors {v}: at most {} per VF",
                shared_abi::pci::VF_MAX_MSIX_VECTORS
            )));
        }
        if let Some(w) = self.weight.filter(|w| !(1..=1000).contains(w)) {
            return Err(Error::Invalid(format!("--weight {w}: from 1 to 1000")));
        }
        if let Some(m) = &self.memory {
            granules(parse_size(m)?, shift)?;
        }
        Ok(())
    }
}

#[derive(Subcommand, Debug)]
enum VfCmd {
    /// Every VF with its resources.
    List,
    /// One VF, and how to hand it to a VM.
    Show { id: u16 },
    /// Resize a live VF in place (unspecified resources keep their size).
    Resize {
        id: u16,
        #[command(flatten)]
        res: ResArgs,
    },
    /// Function level reset: clears the VF's queues and memory, nothing else.
    Reset { id: u16 },
    /// Set the VF's scheduler weight.
    Qos {
        id: u16,
        #[arg(long)]
        weight: u16,
    },
    /// Run jobs on a VF from here: keeps its queues full for a while, checks every result
    /// against the host's, and prints throughput and latency.
    Run {
        id: u16,
        #[command(flatten)]
        load: RunArgs,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// copy, fill, crc32c or sha256.
    #[arg(long, default_value = "crc32c")]
    job: String,
    /// Bytes per job (e.g. 4K, 1M; at most 16M).
    #[arg(long, default_value = "1M")]
    size: String,
    /// Queues to drive at once.
    #[arg(long, default_value_t = 1)]
    queues: u32,
    /// Jobs in flight per queue (a power of two, 2..=4096).
    #[arg(long, default_value_t = 32)]
    depth: u32,
    /// How long to keep submitting.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

impl RunArgs {
    fn load(&self) -> Result<run::Load> {
        if !(0.0..=86_400.0).contains(&self.seconds) {
            return Err(Error::Invalid(format!(
                "--seconds {}: from 0 to 86400",
                self.seconds
            )));
        }
        let size = u32::try_from(parse_size(&self.size)?)
            .map_err(|_| Error::Invalid("--size: at most 16M".into()))?;
        Ok(run::Load {
            op: run::parse_op(&self.job)?,
            size,
            queues: self.queues,
            depth: self.depth,
            duration: Duration::from_secs_f64(self.seconds),
        })
    }
}

fn main() -> ExitCode {
    host_driver::sys::default_sigpipe();
    let cli = Cli::parse();
    let out = Out { json: cli.json };
    // The daemon's connection is driven by tasks on the runtime's own thread, where SIGPIPE
    // is blocked: acceld going away mid-write is an error accelctl reports (exit 5), never a
    // signal that kills it; stdout, written here, keeps the default (`| head` ends quietly).
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(host_driver::sys::block_sigpipe_here)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("accelctl: cannot start: {e}");
            return ExitCode::from(5);
        }
    };
    match rt.block_on(run(cli, &out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accelctl: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Tells the user what the library or the daemon found and did beyond the command (an
/// interrupted operation it finished), on stderr so that --json stays parseable.
fn tell(notes: &[String]) {
    for n in notes {
        eprintln!("accelctl: {n}");
    }
}

async fn open(cli: &Cli, timeout: Duration) -> Result<Backend> {
    backend::open(
        cli.device.as_deref(),
        cli.acceld.as_deref(),
        cli.direct,
        timeout,
    )
    .await
}

fn spec_from(res: &ResArgs, base: Option<&VfInfo>, shift: u8) -> Result<VfSpec> {
    let need = |what: &str| {
        Error::Invalid(format!(
            "--{what} is required with explicit sizing (or use --profile)"
        ))
    };
    let engines = match (res.engines, base) {
        (Some(e), _) => e,
        (None, Some(b)) => b.engine_mask.get().count_ones() as u16,
        (None, None) => return Err(need("engines")),
    };
    let mem = match (&res.memory, base) {
        (Some(m), _) => granules(parse_size(m)?, shift)?,
        (None, Some(b)) => b.mem_granules.get(),
        (None, None) => return Err(need("memory")),
    };
    let queues = match (res.queues, base) {
        (Some(q), _) => q,
        (None, Some(b)) => b.queue_count.get(),
        (None, None) => return Err(need("queues")),
    };
    let vectors = res
        .vectors
        .or(base.map(|b| b.vector_count.get()))
        .unwrap_or(queues.max(1));
    let weight = res.weight.unwrap_or(0);
    Ok(VfSpec::new(engines, mem, queues, vectors, weight))
}

fn preset(name: &str, shift: u8) -> Result<Option<VfSpec>> {
    let gib = |n: u64| granules(n << 30, shift);
    Ok(match name {
        "equal" => None,
        "small" => Some(VfSpec::new(1, gib(1)?, 8, 16, 0)),
        "medium" => Some(VfSpec::new(2, gib(2)?, 16, 64, 0)),
        "large" => Some(VfSpec::new(4, gib(4)?, 64, 512, 0)),
        _ => {
            return Err(Error::Invalid(format!(
                "unknown profile '{name}' (equal, small, medium, large)"
            )))
        }
    })
}

async fn run(cli: Cli, out: &Out) -> Result<()> {
    let timeout = Duration::from_millis(cli.timeout_ms);
    match &cli.cmd {
        Cmd::List { runtime_dir: dir } => {
            let dir = dir
                .clone()
                .unwrap_or_else(host_driver::vfio_user::default_runtime_dir);
            out.list(&output::discover(&dir, cli.device.as_deref()).await, &dir);
            Ok(())
        }
        Cmd::Imported { runtime_dir: dir } => {
            let dir = dir
                .clone()
                .unwrap_or_else(host_driver::vfio_user::default_runtime_dir);
            let vfs = host_driver::imported::list(&dir);
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&vfs).unwrap_or_default());
            } else if vfs.is_empty() {
                println!(
                    "no imported VF: no running importer has a state file in {}",
                    host_driver::imported::dir(&dir).display()
                );
            } else {
                print!("{}", host_driver::imported::table(&vfs));
            }
            Ok(())
        }
        Cmd::Info => {
            let b = open(&cli, timeout).await?;
            let i = b.info().await?;
            out.info(&i.describe, &i.info, &i.free, i.health, i.slots);
            Ok(())
        }
        Cmd::Flash {
            image,
            activate,
            allow_downgrade,
        } => {
            let bytes = std::fs::read(image)
                .map_err(|e| Error::Invalid(format!("{}: {e}", image.display())))?;
            let b = open(&cli, timeout).await?;
            let Some(a) = b.direct() else {
                // acceld activates with VFs present: it puts them back after the reset.
                let header = fw_image::header(&bytes)
                    .map_err(|e| Error::Invalid(format!("not a usable image: {e}")))?;
                let r = b
                    .flash_via_daemon(&bytes, *activate, *allow_downgrade)
                    .await?;
                if r.resumed_from != 0 {
                    eprintln!(
                        "accelctl: resumed the interrupted download at byte {}",
                        r.resumed_from
                    );
                }
                if r.restored_vfs != 0 {
                    eprintln!(
                        "accelctl: acceld restored {} VF{} after the reset",
                        r.restored_vfs,
                        if r.restored_vfs == 1 { "" } else { "s" }
                    );
                }
                let report = flash::Report {
                    flashed: host_driver::update::Flashed {
                        slot: r.slot as u8,
                        resumed_from: r.resumed_from as u32,
                    },
                    elapsed: Duration::from_secs_f64(r.seconds.max(0.0)),
                    header,
                };
                out.flashed(
                    &report,
                    bytes.len(),
                    r.activated.then_some((r.fw_version, r.build_id)),
                );
                return Ok(());
            };
            if *activate && a.device_info().await?.vfs_in_use.get() != 0 {
                return Err(Error::Conflict(format!(
                    "--activate resets the device, and the reset destroys every VF ({} now): \
                         destroy them first (`accelctl destroy-vf --all`), flash without \
                         --activate and reset later, or run acceld, which restores them",
                    a.device_info().await?.vfs_in_use.get()
                )));
            }
            let f = flash::run(a, &bytes, *allow_downgrade, out.json).await?;
            let mut activated = None;
            if *activate {
                let (v, b) = a.fw_reset(timeout.max(Duration::from_secs(10)))?;
                if b != f.header.build_id.get() || v != f.header.fw_version.get() {
                    return Err(Error::ImageRejected(
                        "the new image did not become ready, and the device rolled back to the image it \
                         ran before (see `accelctl info`)",
                    ));
                }
                activated = Some((v, b));
            }
            out.flashed(&f, bytes.len(), activated);
            Ok(())
        }
        Cmd::Logs { follow, image } => {
            let b = open(&cli, timeout).await?;
            logs::run(&b, image.as_deref(), *follow, out.json).await
        }
        Cmd::FwReset { force } => {
            let b = open(&cli, timeout).await?;
            let Some(a) = b.direct() else {
                let r = b.fw_reset_via_daemon(*force).await?;
                if r.vfs_before != 0 {
                    eprintln!(
                        "accelctl: the reset took down {} VF{}; acceld restored {}",
                        r.vfs_before,
                        if r.vfs_before == 1 { "" } else { "s" },
                        r.restored_vfs
                    );
                }
                out.fw_reset(r.fw_version, r.build_id);
                return Ok(());
            };
            // A firmware that has faulted answers nothing: the reset is the way out, and its
            // VFs are of no use to anyone until then.
            let vfs = match a.device_info().await {
                Ok(i) => i.vfs_in_use.get(),
                Err(Error::FirmwareFaulted { .. }) => 0,
                Err(e) => return Err(e),
            };
            if vfs != 0 && !force {
                return Err(Error::Conflict(format!(
                    "the reset destroys every VF ({vfs} now) and SR-IOV with them: destroy them \
                     first (`accelctl destroy-vf --all`), or give --force"
                )));
            }
            if vfs != 0 {
                eprintln!(
                    "accelctl: the reset destroyed {vfs} VF{}",
                    if vfs == 1 { "" } else { "s" }
                );
            }
            let (v, b) = a.fw_reset(timeout.max(Duration::from_secs(10)))?;
            out.fw_reset(v, b);
            Ok(())
        }
        Cmd::CreateVf(c) => {
            let b = open(&cli, timeout).await?;
            if let Some(d) = &c.bind {
                if d != "vfio-pci" {
                    return Err(Error::Invalid(format!(
                        "--bind {d}: only vfio-pci is supported"
                    )));
                }
            }
            let (shift, total) = b.board().await?;
            if c.count == 0 {
                return Err(Error::Invalid("--count 0: create at least one VF".into()));
            }
            if c.count > total {
                return Err(Error::Invalid(format!(
                    "--count {}: this device has at most {total} VFs (its TotalVFs)",
                    c.count
                )));
            }
            c.res.check(shift)?;
            let explicit =
                c.res.engines.is_some() || c.res.memory.is_some() || c.res.queues.is_some();
            if c.profile.is_none()
                && !explicit
                && (c.res.vectors.is_some() || c.res.weight.is_some())
            {
                return Err(Error::Invalid(
                    "--vectors and --weight size VFs explicitly: give --engines, --memory and \
                     --queues too (or a --profile), or leave them out for an equal split"
                        .into(),
                ));
            }
            let spec = match (&c.profile, explicit) {
                (Some(p), _) => preset(p, shift)?,
                (None, true) => Some(spec_from(&c.res, None, shift)?),
                (None, false) => None,
            };
            let spec = match spec {
                None => CreateSpec::Equal,
                Some(mut s) => {
                    if let Some(w) = c.res.weight {
                        s.weight.set(w);
                    }
                    CreateSpec::Uniform(s)
                }
            };
            let made = b.create(c.count, spec, c.bind.as_deref()).await?;
            tell(&made.notes);
            out.created(&made.vfs, &made.handoffs, shift);
            Ok(())
        }
        Cmd::Vf(v) => {
            let b = open(&cli, timeout).await?;
            match v {
                VfCmd::List => {
                    let (vfs, shift) = b.vfs().await?;
                    out.vfs(&vfs, shift)
                }
                VfCmd::Show { id } => {
                    let (info, h, shift) = b.vf(*id).await?;
                    out.vf_show(&info, &h, shift);
                }
                VfCmd::Resize { id, res } => {
                    let shift = b.granule_shift().await?;
                    res.check(shift)?;
                    let change = backend::Change {
                        engines: res.engines,
                        mem_granules: res
                            .memory
                            .as_deref()
                            .map(|m| granules(parse_size(m)?, shift))
                            .transpose()?,
                        queues: res.queues,
                        vectors: res.vectors,
                        weight: res.weight,
                    };
                    out.vfs(&[b.resize(*id, change).await?], shift);
                }
                VfCmd::Reset { id } => {
                    let shift = b.granule_shift().await?;
                    out.vfs(&[b.reset(*id).await?], shift)
                }
                VfCmd::Qos { id, weight } => {
                    if !(1..=shared_abi::resources::MAX_WEIGHT).contains(weight) {
                        return Err(Error::Invalid(format!(
                            "--weight {weight}: from 1 to {}",
                            shared_abi::resources::MAX_WEIGHT
                        )));
                    }
                    let shift = b.granule_shift().await?;
                    out.vfs(&[b.set_qos(*id, *weight).await?], shift)
                }
                VfCmd::Run { id, load } => {
                    let load = load.load()?;
                    // No such VF: exit 3, as for every VF command.
                    let (_, h, _) = b.vf(*id).await?;
                    let target = run::Target::of(h.endpoint);
                    out.run_report(&run::run(&target, load)?);
                }
            }
            Ok(())
        }
        Cmd::DestroyVf { id, all } => {
            let b = open(&cli, timeout).await?;
            let which = if *all {
                None
            } else {
                Some(id.ok_or_else(|| Error::Invalid("give a VF index or --all".into()))?)
            };
            let (n, notes) = b.destroy(which).await?;
            tell(&notes);
            out.destroyed(n);
            Ok(())
        }
        Cmd::Run { load, vf_token } => {
            let load = load.load()?;
            let Some(d) = &cli.device else {
                return Err(Error::Invalid(
                    "no VF given: use -d with the VF's socket or PCI address".into(),
                ));
            };
            let mut target = run::Target::parse(d)?;
            if let run::Target::Pci { vf_token: t, .. } = &mut target {
                *t = vf_token.clone().filter(|t| !t.is_empty());
            }
            out.run_report(&run::run(&target, load)?);
            Ok(())
        }
        Cmd::Events { follow } => {
            let b = backend::open_all(
                cli.device.as_deref(),
                cli.acceld.as_deref(),
                cli.direct,
                timeout,
            )
            .await?;
            events::events(&b, *follow, out.json).await
        }
        Cmd::Health => {
            let b = open(&cli, timeout).await?;
            events::health(&b, out.json).await
        }
        Cmd::Stats { watch, count } => {
            let interval = match watch {
                Some(s) if !(0.01..=86_400.0).contains(s) => {
                    return Err(Error::Invalid(format!(
                        "--watch {s}: give an interval from 0.01 to 86400 seconds"
                    )))
                }
                Some(s) => Some(Duration::from_secs_f64(*s)),
                None => None,
            };
            let b = open(&cli, timeout).await?;
            let mut left = count.unwrap_or(u32::MAX);
            loop {
                let (d, v) = b.stats().await?;
                out.stats(&d, &v);
                left = left.saturating_sub(1);
                match interval {
                    Some(i) if left > 0 => {
                        println!();
                        tokio::time::sleep(i).await;
                    }
                    _ => return Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let c = Cli::try_parse_from([
            "accelctl",
            "-d",
            "x.sock",
            "create-vf",
            "--count",
            "4",
            "--engines",
            "2",
            "--memory",
            "1G",
            "--queues",
            "8",
        ])
        .unwrap();
        assert!(matches!(c.cmd, Cmd::CreateVf(_)));
        assert!(Cli::try_parse_from(["accelctl", "destroy-vf"]).is_err());
        assert!(Cli::try_parse_from(["accelctl", "destroy-vf", "1", "--all"]).is_err());
        assert!(Cli::try_parse_from([
            "accelctl",
            "create-vf",
            "--count",
            "2",
            "--profile",
            "equal",
            "--engines",
            "1"
        ])
        .is_err());
    }
}
