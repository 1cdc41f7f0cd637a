//! `cargo xtask image [--version X.Y.Z] [--min-rollback X.Y.Z] [--out PATH]`: builds the
//! freestanding firmware with that version and packages its ELF as a signed image
//! (`fw-image`): header, CRC-32, ed25519 signature. The signing key is a development key
//! made on first use in `target/accelvirt-keys/` (never committed); its public half is what
//! a device's boot stage is provisioned with.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where the development key pair lives.
pub fn key_dir(root: &Path) -> PathBuf {
    super::target_dir(root).join("accelvirt-keys")
}

/// The development signing key's secret seed, made (from the kernel's random source) if
/// there is none yet.
fn signing_seed(root: &Path) -> Result<[u8; 32], String> {
    let dir = key_dir(root);
    let secret = dir.join("dev-ed25519.seed");
    if let Ok(b) = std::fs::read(&secret) {
        return b
            .try_into()
            .map_err(|_| format!("{}: not a 32-byte seed", secret.display()));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut seed = [0u8; 32];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").map_err(|e| format!("/dev/urandom: {e}"))?,
        &mut seed,
    )
    .map_err(|e| format!("/dev/urandom: {e}"))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret)
        .map_err(|e| format!("{}: {e}", secret.display()))?;
    f.write_all(&seed)
        .map_err(|e| format!("{}: {e}", secret.display()))?;
    std::fs::write(dir.join("dev-ed25519.pub"), fw_image::public_key(&seed))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    eprintln!("made a development signing key in {}", dir.display());
    Ok(seed)
}

fn parse_version(s: &str) -> Result<u32, String> {
    fw_image::parse_version(s.as_bytes())
        .ok_or_else(|| format!("{s}: a version is X.Y.Z (X, Y < 256; Z < 65536)"))
}

/// Builds and signs an image; returns its path.
pub fn build(
    root: &Path,
    version: &str,
    min_rollback: &str,
    out: Option<PathBuf>,
) -> Result<PathBuf, String> {
    let v = parse_version(version)?;
    let floor = parse_version(min_rollback)?;
    let elf_path = super::build_firmware_version(root, Some(version))?;
    let elf = std::fs::read(&elf_path).map_err(|e| format!("{}: {e}", elf_path.display()))?;
    let seed = signing_seed(root)?;
    let h = fw_image::header_for(
        &elf,
        v,
        super::build_id(root, version),
        fw_image::BOARD_SIM,
        floor,
    );
    let sig = fw_image::sign(&h, &elf, &seed);
    let img = [zerocopy::IntoBytes::as_bytes(&h), &sig[..], &elf].concat();
    // What the device will check, checked here first.
    fw_image::verify(&img, &fw_image::public_key(&seed), fw_image::BOARD_SIM)
        .map_err(|e| format!("the new image does not verify: {e}"))?;
    let out = out.unwrap_or_else(|| default_image(root));
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    // Written aside and renamed: a device model reading the image never sees half of it.
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &img).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out)
}

/// Where `cargo xtask image` puts the image by default.
pub fn default_image(root: &Path) -> PathBuf {
    super::target_dir(root).join("fw").join("accel-fw.img")
}

const USAGE: &str =
    "usage: cargo xtask image [--version X.Y.Z] [--min-rollback X.Y.Z] [--out PATH]";

pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let (mut version, mut floor, mut out) = (super::DEFAULT_VERSION.to_string(), None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--help" | "-h" => {
                println!("{USAGE}\n\nBuilds the firmware for the simulated board and signs it with the development\nkey in target/accelvirt-keys (made on first use). Defaults: --version and\n--min-rollback {}, --out {}.", super::DEFAULT_VERSION, default_image(root).display());
                return Ok(());
            }
            "--version" => version = val()?,
            "--min-rollback" => floor = Some(val()?),
            "--out" => out = Some(PathBuf::from(val()?)),
            _ => return Err(format!("unknown argument {a}; {USAGE}")),
        }
    }
    let floor = floor.unwrap_or_else(|| super::DEFAULT_VERSION.to_string());
    let path = build(root, &version, &floor, out)?;
    let img = std::fs::read(&path).map_err(|e| e.to_string())?;
    let h = fw_image::header(&img).map_err(|e| e.to_string())?;
    println!("firmware image: {}", path.display());
    println!("  version       {}", fw_image::Version(h.fw_version.get()));
    println!("  build id      {:08x}", h.build_id.get());
    println!(
        "  rollback      {}",
        fw_image::Version(h.min_rollback.get())
    );
    println!(
        "  payload       {} bytes (ELF), CRC-32 {:08x}",
        h.payload_size.get(),
        h.payload_crc.get()
    );
    println!(
        "  signed by     {}",
        key_dir(root).join("dev-ed25519.pub").display()
    );
    Ok(())
}
