//! The main job on the simulated device, step by step, with the commands a user would type.

use host_driver::vfio_user::VfioUser;
use shared_abi::regs::{queue, vf};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The running device model and the demo's own directory: on drop the model is stopped and
/// the directory (socket, flash, lock files) removed.
struct SimGuard(Child, PathBuf);

impl Drop for SimGuard {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

impl SimGuard {
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn step(title: &str) {
    if super::styled() {
        println!("\n\x1b[1m== {title}\x1b[0m");
    } else {
        println!("\n== {title}");
    }
}

const USAGE: &str = "usage: cargo xtask demo";

fn ctl(bin: &Path, sock: &Path, args: &[&str]) -> Result<(), String> {
    println!("$ accelctl -d {} {}", sock.display(), args.join(" "));
    let st = Command::new(bin)
        .arg("-d")
        .arg(sock)
        .args(args)
        .status()
        .map_err(|e| format!("accelctl: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("accelctl {} failed ({st})", args.join(" ")))
    }
}

pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        None => {}
        Some("--help" | "-h") => {
            println!(
                "{USAGE}\n\nThe main job on the simulated device: builds and signs the firmware, starts\n\
                 accel-sim in a directory of its own, creates 4 VFs, shows and uses them, runs jobs,\n\
                 resets and resizes VFs, destroys them, flashes and boots firmware 0.1.1, and stops\n\
                 the device model (its directory is removed)."
            );
            return Ok(());
        }
        Some(a) => return Err(format!("unknown argument {a}; {USAGE}")),
    }
    step("build accel-sim and accelctl");
    let bins = super::build_debug(root, &["-p", "sim", "-p", "host-driver", "--bins"])?;
    let sim_bin = bins.join("accel-sim");
    let ctl_bin = bins.join("accelctl");
    // A directory of its own: two demos at once do not meet, and nothing is left behind.
    let dir =
        host_driver::vfio_user::default_runtime_dir().join(format!("demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let sock = dir.join("demo0.sock");

    step("build and sign the firmware image (a development key is made on first use)");
    println!("$ cargo xtask image");
    let image = super::image::build(root, super::DEFAULT_VERSION, super::DEFAULT_VERSION, None)?;
    let key = super::image::key_dir(root).join("dev-ed25519.pub");
    println!("{}", image.display());

    step("start the simulated accelerator: a fresh flash gets that image, and it boots from it");
    let flash = dir.join("demo0.flash");
    let _ = std::fs::remove_file(&flash);
    println!(
        "$ accel-sim --socket {} --flash {} --install-image {} --key {} &",
        sock.display(),
        flash.display(),
        image.display(),
        key.display()
    );
    let child = Command::new(&sim_bin)
        .arg("--socket")
        .arg(&sock)
        .arg("--flash")
        .arg(&flash)
        .arg("--install-image")
        .arg(&image)
        .arg("--key")
        .arg(&key)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let _guard = SimGuard(child, dir.clone());
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        if t.elapsed() > Duration::from_secs(10) {
            return Err("accel-sim did not come up".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("$ accelctl list --runtime-dir {}", dir.display());
    Command::new(&ctl_bin)
        .args(["list", "--runtime-dir"])
        .arg(&dir)
        .status()
        .map_err(|e| e.to_string())?;
    ctl(&ctl_bin, &sock, &["info"])?;

    step("carve the device into 4 VFs");
    ctl(&ctl_bin, &sock, &["create-vf", "--count", "4"])?;
    ctl(&ctl_bin, &sock, &["vf", "list"])?;

    step("resize VF 3 live to 2 GiB: something SR-IOV stacks usually cannot do");
    ctl(&ctl_bin, &sock, &["vf", "resize", "3", "--memory", "2G"])?;

    step("use VF 3 through its own vfio-user socket, as a VMM would");
    let vf0 = vfio_user_wire::vf_socket_path(&sock, 3);
    let v = VfioUser::connect(&vf0, false).map_err(|e| e.to_string())?;
    let rd = |bar: u32, off: u64| -> Result<u32, String> {
        let mut b = [0u8; 4];
        v.region_read(bar, off, &mut b).map_err(|e| e.to_string())?;
        Ok(u32::from_le_bytes(b))
    };
    let wr = |bar: u32, off: u64, val: u32| {
        v.region_write(bar, off, &val.to_le_bytes())
            .map_err(|e| e.to_string())
    };
    let mem =
        (rd(0, vf::MEM_SIZE_HI.0 as u64)? as u64) << 32 | rd(0, vf::MEM_SIZE_LO.0 as u64)? as u64;
    println!(
        "VF BAR0: magic {:#010x}, VF index {}, {} queues, {} vectors, {} GiB device memory",
        rd(0, vf::MAGIC.0 as u64)?,
        rd(0, vf::VF_INDEX.0 as u64)?,
        rd(0, vf::QUEUE_COUNT.0 as u64)?,
        rd(0, vf::VECTOR_COUNT.0 as u64)?,
        mem >> 30
    );
    let q0 = vf::queue(0) as u64;
    wr(0, q0 + queue::SQ_BASE_LO.0 as u64, 0x1000_0000)?;
    wr(0, q0 + queue::SQ_SIZE.0 as u64, 256)?;
    println!(
        "programmed queue 0: SQ base {:#x}, {} entries",
        rd(0, q0 + queue::SQ_BASE_LO.0 as u64)?,
        rd(0, q0 + queue::SQ_SIZE.0 as u64)?
    );
    let pattern = b"accelvirt: VF-local address 0x1000, translated to device memory";
    v.region_write(2, 0x1000, pattern)
        .map_err(|e| e.to_string())?;
    let mut back = vec![0u8; pattern.len()];
    v.region_read(2, 0x1000, &mut back)
        .map_err(|e| e.to_string())?;
    println!(
        "device memory via BAR2: wrote and read back {} bytes: {}",
        back.len(),
        String::from_utf8_lossy(&back)
    );
    println!(
        "now VF 3 reaches past its {} GiB window and touches a queue it does not own:",
        mem >> 30
    );
    println!("  read at VF-local {:#x} -> {:#010x}", mem, rd(2, mem)?);
    println!(
        "  read of queue 100 -> {:#010x}",
        rd(0, vf::queue(100) as u64)?
    );
    println!(
        "  both refused by the virtualization unit; VF 3 fault count = {}",
        rd(0, vf::FAULT_COUNT.0 as u64)?
    );
    drop(v);
    ctl(&ctl_bin, &sock, &["vf", "show", "3"])?;

    step("run jobs on VF 0 and VF 2: the device polls their rings, results checked on the host");
    ctl(
        &ctl_bin,
        &sock,
        &[
            "vf",
            "run",
            "0",
            "--job",
            "crc32c",
            "--size",
            "1M",
            "--seconds",
            "1",
        ],
    )?;
    ctl(
        &ctl_bin,
        &sock,
        &[
            "vf",
            "run",
            "2",
            "--job",
            "copy",
            "--size",
            "256K",
            "--queues",
            "2",
            "--seconds",
            "1",
        ],
    )?;
    ctl(&ctl_bin, &sock, &["stats"])?;

    step("reset VF 1 (FLR): its queues and memory are cleared, the others keep their state");
    ctl(&ctl_bin, &sock, &["vf", "reset", "1"])?;
    ctl(&ctl_bin, &sock, &["vf", "list"])?;
    ctl(&ctl_bin, &sock, &["stats"])?;

    step("destroy the VFs");
    ctl(&ctl_bin, &sock, &["destroy-vf", "--all"])?;

    step("build firmware 0.1.1, flash it into the other slot and boot it");
    println!("$ cargo xtask image --version 0.1.1 --out target/fw/accel-fw-0.1.1.img");
    let next = image.with_file_name("accel-fw-0.1.1.img");
    super::image::build(root, "0.1.1", super::DEFAULT_VERSION, Some(next.clone()))?;
    let next_s = next.to_string_lossy().into_owned();
    ctl(&ctl_bin, &sock, &["flash", &next_s, "--activate"])?;
    ctl(&ctl_bin, &sock, &["info"])?;
    println!("\ndemo complete");
    Ok(())
}
