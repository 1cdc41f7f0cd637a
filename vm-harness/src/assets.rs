//! What a guest needs, from Debian's package registry only: `apt-get` with a private sources
//! list, lists, cache and an empty status file (so it resolves whole dependency closures and
//! installs nothing), `dpkg-deb` to unpack. Kept in a cache directory between runs; a lock
//! file lets parallel tests share one download.

use crate::{io_err, run, Error, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Suite that carries QEMU with `vfio-user-pci` (10.1 or later).
pub const QEMU_SUITE: &str = "unstable";
/// Suite of the guest kernel (Linux 6.1), busybox and pciutils.
pub const GUEST_SUITE: &str = "bookworm";
/// The guest kernel's modules for kernel VFIO, in load order (paths under `kernel/`).
pub const MODULES: &[&str] = &[
    "virt/lib/irqbypass.ko",
    "drivers/vfio/vfio.ko",
    "drivers/vfio/vfio_virqfd.ko",
    "drivers/vfio/vfio_iommu_type1.ko",
    "drivers/vfio/pci/vfio-pci-core.ko",
    "drivers/vfio/pci/vfio-pci.ko",
];
/// Packages whose closure forms the guest's root file system.
const GUEST_PACKAGES: &[&str] = &["busybox-static", "pciutils"];
/// Written last: its presence means the cache is complete.
const STAMP: &str = "ready";

/// A fetched and unpacked set of guest assets.
#[derive(Debug, Clone)]
pub struct Assets {
    /// The QEMU prefix's own dynamic loader (QEMU runs against the prefix's glibc).
    pub loader: PathBuf,
    /// The prefix's library directory.
    pub libdir: PathBuf,
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// Firmware blob directories for `-L` (QEMU's own, SeaBIOS).
    pub firmware_dirs: Vec<PathBuf>,
    /// The guest kernel.
    pub kernel: PathBuf,
    /// The modules of [`MODULES`], in load order.
    pub modules: Vec<PathBuf>,
    /// Unpacked guest packages (busybox, pciutils and their libraries).
    pub rootfs: PathBuf,
    /// Package versions, one per line (for logs and the README's claims).
    pub versions: String,
}

/// Where assets are cached: `$ACCELVIRT_VM_CACHE`, else `vm-cache` in the cargo target
/// directory.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ACCELVIRT_VM_CACHE") {
        return PathBuf::from(d);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
            manifest.parent().unwrap_or(manifest).join("target")
        });
    target.join("vm-cache")
}

impl Assets {
    /// Returns the cached assets, fetching and unpacking them first if needed.
    pub fn fetch(cache: &Path) -> Result<Assets> {
        std::fs::create_dir_all(cache).map_err(io_err(cache))?;
        let lock_path = cache.join(".lock");
        let lock = std::fs::File::create(&lock_path).map_err(io_err(&lock_path))?;
        lock.lock().map_err(io_err(&lock_path))?;
        if !cache.join(STAMP).exists() {
            Self::download(cache)?;
        }
        Self::at(cache)
    }

    fn at(cache: &Path) -> Result<Assets> {
        let q = cache.join("qemu");
        let libdir = q.join("usr/lib/x86_64-linux-gnu");
        let k = cache.join("kernel");
        let kernel = find(&k.join("boot"), "vmlinuz-")?;
        let moddir = find(&k.join("lib/modules"), "")?.join("kernel");
        let a = Assets {
            loader: libdir.join("ld-linux-x86-64.so.2"),
            qemu: q.join("usr/bin/qemu-system-x86_64"),
            libdir,
            firmware_dirs: vec![q.join("usr/share/qemu"), q.join("usr/share/seabios")],
            kernel,
            modules: MODULES.iter().map(|m| moddir.join(m)).collect(),
            rootfs: cache.join("rootfs"),
            versions: std::fs::read_to_string(cache.join(STAMP))
                .map_err(io_err(&cache.join(STAMP)))?,
        };
        for p in [&a.loader, &a.qemu, &a.rootfs.join("bin/busybox")]
            .into_iter()
            .chain(&a.modules)
        {
            if !p.exists() {
                return Err(Error::Missing(format!(
                    "{} is missing from the VM cache {} (delete it to fetch again)",
                    p.display(),
                    cache.display()
                )));
            }
        }
        Ok(a)
    }

    /// Debian's `lspci` from the guest packages, run on this host through their own loader
    /// and libraries (nothing installed on the host), with their `pci.ids`.
    pub fn lspci(&self) -> Command {
        let r = &self.rootfs;
        let libs = [
            r.join("lib/x86_64-linux-gnu"),
            r.join("usr/lib/x86_64-linux-gnu"),
        ]
        .map(|p| p.display().to_string())
        .join(":");
        let mut c = Command::new(r.join("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"));
        c.arg("--library-path")
            .arg(libs)
            .arg(r.join("usr/bin/lspci"))
            .arg("-i")
            .arg(r.join("usr/share/misc/pci.ids"));
        c
    }

    fn download(cache: &Path) -> Result<()> {
        for d in ["qemu", "kernel", "rootfs"] {
            let p = cache.join(d);
            if p.exists() {
                std::fs::remove_dir_all(&p).map_err(io_err(&p))?;
            }
        }
        let mut versions = String::new();

        // QEMU and its whole library closure, unpacked into one prefix.
        let unstable = Apt::new(&cache.join("apt-unstable"), QEMU_SUITE)?;
        unstable.update()?;
        let debs = unstable.closure(&["qemu-system-x86"])?;
        unpack_all(&debs, &cache.join("qemu"))?;
        versions += &format!("qemu-system-x86 {}\n", unstable.version("qemu-system-x86")?);

        // The guest: kernel (only the image and the vfio modules), busybox, pciutils.
        let guest = Apt::new(&cache.join("apt-bookworm"), GUEST_SUITE)?;
        guest.update()?;
        let image = guest.kernel_package()?;
        let deb = guest.download(&image)?;
        extract_kernel(&deb, &cache.join("kernel"))?;
        versions += &format!("{image} {}\n", guest.version(&image)?);
        let debs = guest.closure(GUEST_PACKAGES)?;
        unpack_all(&debs, &cache.join("rootfs"))?;
        for p in GUEST_PACKAGES {
            versions += &format!("{p} {}\n", guest.version(p)?);
        }
        let stamp = cache.join(STAMP);
        std::fs::write(&stamp, versions).map_err(io_err(&stamp))
    }
}

fn find(dir: &Path, prefix: &str) -> Result<PathBuf> {
    let rd = std::fs::read_dir(dir).map_err(io_err(dir))?;
    rd.flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .ok_or_else(|| Error::Missing(format!("nothing named {prefix}* in {}", dir.display())))
}

/// apt-get and apt-cache confined to one directory: its own sources list, lists, cache and an
/// empty dpkg status, so nothing of the machine's apt state is read or changed.
struct Apt {
    root: PathBuf,
}

impl Apt {
    fn new(root: &Path, suite: &str) -> Result<Apt> {
        for d in [
            "lists/partial",
            "cache/archives/partial",
            "etc/parts",
            "etc/prefs",
            "debs",
        ] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        let status = root.join("status");
        std::fs::write(&status, "").map_err(io_err(&status))?;
        let sources = root.join("sources.list");
        std::fs::write(
            &sources,
            format!(
                "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
                 http://deb.debian.org/debian {suite} main\n"
            ),
        )
        .map_err(io_err(&sources))?;
        Ok(Apt {
            root: root.to_path_buf(),
        })
    }

    fn cmd(&self, tool: &str) -> Command {
        let r = |p: &str| self.root.join(p).display().to_string();
        let mut c = Command::new(tool);
        for (k, v) in [
            ("Dir::Etc::SourceList", r("sources.list")),
            ("Dir::Etc::SourceParts", "/dev/null".into()),
            ("Dir::Etc::Parts", r("etc/parts")),
            ("Dir::Etc::PreferencesParts", r("etc/prefs")),
            ("Dir::Etc::Preferences", "/dev/null".into()),
            ("Dir::State::Lists", r("lists")),
            ("Dir::State::Status", r("status")),
            ("Dir::Cache", r("cache")),
            ("Debug::NoLocking", "1".into()),
            ("APT::Sandbox::User", "root".into()),
            ("APT::Install-Recommends", "false".into()),
            ("Acquire::Languages", "none".into()),
        ] {
            c.arg("-o").arg(format!("{k}={v}"));
        }
        c.env("DEBIAN_FRONTEND", "noninteractive");
        c
    }

    fn update(&self) -> Result<()> {
        run("apt-get update", self.cmd("apt-get").args(["-q", "update"])).map(drop)
    }

    /// Downloads `pkgs` and everything they depend on; returns the .deb files.
    fn closure(&self, pkgs: &[&str]) -> Result<Vec<PathBuf>> {
        run(
            "apt-get install --download-only",
            self.cmd("apt-get")
                .args(["-q", "-y", "install", "--download-only"])
                .args(pkgs),
        )?;
        debs_in(&self.root.join("cache/archives"))
    }

    /// Downloads one package without its dependencies.
    fn download(&self, pkg: &str) -> Result<PathBuf> {
        let dir = self.root.join("debs");
        run(
            "apt-get download",
            self.cmd("apt-get")
                .current_dir(&dir)
                .args(["-q", "download", pkg]),
        )?;
        debs_in(&dir)?
            .into_iter()
            .find(|d| {
                d.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{pkg}_")))
            })
            .ok_or_else(|| Error::Missing(format!("apt-get download {pkg} left no .deb")))
    }

    /// The versioned kernel image package that `linux-image-amd64` points at.
    fn kernel_package(&self) -> Result<String> {
        let out = run(
            "apt-cache depends linux-image-amd64",
            self.cmd("apt-cache").args(["depends", "linux-image-amd64"]),
        )?;
        out.lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
            .map(str::to_string)
            .ok_or_else(|| Error::Missing(format!("no kernel image in: {out}")))
    }

    fn version(&self, pkg: &str) -> Result<String> {
        let out = run(
            "apt-cache policy",
            self.cmd("apt-cache").args(["policy", pkg]),
        )?;
        Ok(out
            .lines()
            .find_map(|l| l.trim().strip_prefix("Candidate: "))
            .unwrap_or("?")
            .to_string())
    }
}

fn debs_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(io_err(dir))?;
    let mut v: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    v.sort();
    Ok(v)
}

fn unpack_all(debs: &[PathBuf], into: &Path) -> Result<()> {
    std::fs::create_dir_all(into).map_err(io_err(into))?;
    for d in debs {
        run(
            "dpkg-deb -x",
            Command::new("dpkg-deb").arg("-x").arg(d).arg(into),
        )?;
    }
    Ok(())
}

/// Extracts only the kernel image and the vfio modules from the (large) image package.
fn extract_kernel(deb: &Path, into: &Path) -> Result<()> {
    std::fs::create_dir_all(into).map_err(io_err(into))?;
    let mut data = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Command {
            what: "dpkg-deb --fsys-tarfile".into(),
            detail: e.to_string(),
        })?;
    let stdout = data.stdout.take().ok_or_else(|| Error::Command {
        what: "dpkg-deb --fsys-tarfile".into(),
        detail: "no output pipe".into(),
    })?;
    let mut tar = Command::new("tar");
    tar.arg("-x")
        .arg("-C")
        .arg(into)
        .arg("--wildcards")
        .arg("./boot/vmlinuz-*");
    for m in MODULES {
        tar.arg(format!("./lib/modules/*/kernel/{m}"));
    }
    let r = run("tar -x (kernel)", tar.stdin(stdout));
    let _ = data.wait();
    r.map(drop)
}
