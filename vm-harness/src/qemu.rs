//! One guest boot: QEMU with TCG, q35 with split irqchip, an emulated Intel IOMMU (interrupt
//! remapping, caching mode, as vfio-pci in a guest needs), guest RAM in a shared memfd (a
//! vfio-user server maps it for DMA), and the vfio-user devices given.

use crate::initramfs::Archive;
use crate::{io_err, Assets, Error, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The line the guest's init prints with the script's exit status.
const EXIT_MARK: &str = "ACCELVIRT-GUEST-EXIT ";

/// The guest's init: mount, load the vfio modules, run the script, power off.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
# The console is a serial log, not a screen: no progress bars redrawn with carriage returns.
export TERM=dumb
for m in $(cat /etc/modules.order); do insmod "$m" || echo "init: insmod $m failed"; done
sh -e /test.sh
echo "ACCELVIRT-GUEST-EXIT $?"
poweroff -f
"#;

/// The `-device` value for a vfio-user socket, as `accelctl` prints it in handoff lines.
pub fn vfio_user_device(socket: &Path) -> String {
    format!(
        r#"{{"driver":"vfio-user-pci","socket":{{"type":"unix","path":"{}"}}}}"#,
        socket.display()
    )
}

/// A guest to boot.
#[derive(Debug, Clone)]
pub struct Guest {
    devices: Vec<String>,
    files: Vec<(String, PathBuf)>,
    script: String,
    memory_mib: u32,
    timeout: Duration,
}

/// What a boot produced.
#[derive(Debug)]
pub struct Outcome {
    /// The script's exit status; `None` if the guest never reported one.
    pub status: Option<i32>,
    /// The serial console (kernel and script output), `\r` removed.
    pub serial: String,
    /// Everything QEMU printed on stderr: a clean boot prints nothing.
    pub qemu_stderr: String,
}

impl Outcome {
    /// The lines the script printed after `@@ name` up to the next `@@` line, leaving out
    /// kernel log lines.
    pub fn section(&self, name: &str) -> Option<String> {
        let mut lines = self.serial.lines();
        lines.find(|l| l.trim_end() == format!("@@ {name}"))?;
        Some(
            lines
                .take_while(|l| !l.starts_with("@@ ") && !l.starts_with(EXIT_MARK))
                .filter(|l| !is_kernel_log(l))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    }
}

fn is_kernel_log(l: &str) -> bool {
    let t = l.trim_start();
    t.starts_with('[')
        && t[1..]
            .trim_start()
            .starts_with(|c: char| c.is_ascii_digit())
}

impl Guest {
    /// A guest that runs `script` (a busybox `sh -e` script) as init's only job.
    pub fn new(script: &str) -> Self {
        Guest {
            devices: Vec::new(),
            files: Vec::new(),
            script: script.to_string(),
            memory_mib: 512,
            timeout: Duration::from_secs(240),
        }
    }

    /// Attaches a device: a `-device` value, e.g. [`vfio_user_device`] or a handoff line's.
    pub fn device(mut self, value: impl Into<String>) -> Self {
        self.devices.push(value.into());
        self
    }

    /// Copies a host file into the guest at `guest_path` (executables keep their mode; debug
    /// info is stripped to keep the initramfs small).
    pub fn file(mut self, guest_path: &str, host: &Path) -> Self {
        self.files
            .push((guest_path.to_string(), host.to_path_buf()));
        self
    }

    /// Boots, waits for the guest to power off, and returns what it printed. `work` holds
    /// the initramfs and the serial log.
    pub fn boot(&self, assets: &Assets, work: &Path) -> Result<Outcome> {
        std::fs::create_dir_all(work).map_err(io_err(work))?;
        let initrd = work.join("initrd.cpio");
        let image = self.initramfs(assets, work)?;
        std::fs::write(&initrd, image).map_err(io_err(&initrd))?;
        let serial = work.join("serial.log");
        let _ = std::fs::remove_file(&serial);
        let stderr = work.join("qemu.stderr");
        let err_file = std::fs::File::create(&stderr).map_err(io_err(&stderr))?;
        let mut cmd = Command::new(&assets.loader);
        cmd.arg("--library-path")
            .arg(&assets.libdir)
            .arg(&assets.qemu);
        for d in &assets.firmware_dirs {
            cmd.arg("-L").arg(d);
        }
        let mem = format!("{}M", self.memory_mib);
        cmd.args(["-machine", "q35,kernel-irqchip=split,memory-backend=mem"])
            .args(["-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", &mem])
            .args([
                "-object",
                &format!("memory-backend-memfd,id=mem,size={mem},share=on"),
            ])
            .args(["-device", "intel-iommu,intremap=on,caching-mode=on"])
            .args(["-nodefaults", "-display", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-kernel")
            .arg(&assets.kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args([
                "-append",
                "console=ttyS0 intel_iommu=on panic=-1 loglevel=4 rdinit=/init",
            ]);
        for d in &self.devices {
            cmd.arg("-device").arg(d);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err_file)
            .spawn()
            .map_err(|e| Error::Command {
                what: "qemu-system-x86_64".into(),
                detail: e.to_string(),
            })?;
        let t0 = Instant::now();
        let read_serial = || {
            std::fs::read_to_string(&serial)
                .unwrap_or_default()
                .replace('\r', "")
        };
        loop {
            if child.try_wait().map_err(io_err(&assets.qemu))?.is_some() {
                break;
            }
            if t0.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Timeout {
                    secs: self.timeout.as_secs(),
                    serial: read_serial(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let serial = read_serial();
        let status = serial
            .lines()
            .filter_map(|l| l.strip_prefix(EXIT_MARK))
            .find_map(|s| s.trim().parse().ok());
        Ok(Outcome {
            status,
            serial,
            qemu_stderr: std::fs::read_to_string(&stderr).unwrap_or_default(),
        })
    }

    fn initramfs(&self, assets: &Assets, work: &Path) -> Result<Vec<u8>> {
        let mut a = Archive::new();
        a.tree(&assets.rootfs)?;
        a.file("init", 0o755, INIT.as_bytes());
        a.file("test.sh", 0o755, self.script.as_bytes());
        let mut order = String::new();
        for m in &assets.modules {
            let name = m
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let data = std::fs::read(m).map_err(io_err(m))?;
            a.file(&format!("lib/accelvirt/{name}"), 0o644, &data);
            order += &format!("/lib/accelvirt/{name}\n");
        }
        a.file("etc/modules.order", 0o644, order.as_bytes());
        for (guest, host) in &self.files {
            let data = stripped(host, work)?;
            let md = std::fs::metadata(host).map_err(io_err(host))?;
            a.file(
                guest,
                std::os::unix::fs::PermissionsExt::mode(&md.permissions()),
                &data,
            );
        }
        Ok(a.finish())
    }
}

/// An executable's bytes without debug info when `strip` is there (a debug build of accelctl
/// is ~30 MB, mostly DWARF); any other file as it is.
fn stripped(host: &Path, work: &Path) -> Result<Vec<u8>> {
    let data = std::fs::read(host).map_err(io_err(host))?;
    if !data.starts_with(b"\x7fELF") {
        return Ok(data);
    }
    let out = work.join(format!(
        "stripped-{}",
        host.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let ok = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&out)
        .arg(host)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        std::fs::read(&out).map_err(io_err(&out))
    } else {
        Ok(data)
    }
}
