//! `cargo xtask <task>`: build chores that need more than one cargo call.
//!
//! - `firmware`: build the freestanding firmware image for the simulated board and print its
//!   section sizes.
//! - `image`: build the firmware and package it as a signed image (see `image.rs`).
//! - `demo`: the main job on the simulated device: start `accel-sim`, create 4 VFs, show
//!   them, use them, destroy them, stop the sim.
//! - `vm`: boot a Linux guest under QEMU with vfio-user devices attached (see `vm.rs`).
#![forbid(unsafe_code)]

use object::{Object, ObjectSection};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const FW_TARGET: &str = "x86_64-unknown-none";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Whether stdout is a terminal (only then do steps get bold).
pub(crate) fn styled() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal()
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Where cargo puts builds: `$CARGO_TARGET_DIR`, else target/ in the workspace.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// `cargo build --quiet` with `args` (debug profile); returns target/debug.
pub(crate) fn build_debug(root: &Path, args: &[&str]) -> Result<PathBuf, String> {
    let st = cargo()
        .current_dir(root)
        .args(["build", "--quiet"])
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !st.success() {
        return Err("build failed".into());
    }
    Ok(target_dir(root).join("debug"))
}

/// A stable id for one firmware build: CRC32 of its version and of every file under
/// firmware/ and shared-abi/ (two versions built from one tree are two builds).
pub(crate) fn build_id(root: &Path, version: &str) -> u32 {
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let mut d = crc.digest();
    d.update(version.as_bytes());
    let mut files = Vec::new();
    for dir in ["firmware/src", "shared-abi/src"] {
        collect(&root.join(dir), &mut files);
    }
    files.sort();
    for f in files {
        d.update(f.to_string_lossy().as_bytes());
        d.update(&std::fs::read(&f).unwrap_or_default());
    }
    d.finalize()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Builds the image; returns its path.
pub fn build_firmware(root: &Path) -> Result<PathBuf, String> {
    build_firmware_version(root, None)
}

/// Makes sure the toolchain has the firmware's target. rustup installs what
/// `rust-toolchain.toml` names only when it installs the toolchain itself; on a machine whose
/// toolchain was already there, the target is added here, with one line saying so. Without
/// rustup, the build says what is missing.
fn ensure_fw_target(root: &Path) -> Result<(), String> {
    let Ok(out) = Command::new("rustup")
        .current_dir(root)
        .args(["target", "list", "--installed"])
        .output()
    else {
        return Ok(()); // no rustup: the toolchain is someone else's to equip
    };
    let installed = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || installed.lines().any(|l| l.trim() == FW_TARGET) {
        return Ok(());
    }
    eprintln!("xtask: adding the {FW_TARGET} target the firmware builds for (rustup target add {FW_TARGET})");
    let st = Command::new("rustup")
        .current_dir(root)
        .args(["target", "add", FW_TARGET])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if !st.success() {
        return Err(format!(
            "rustup could not add the {FW_TARGET} target; add it by hand (rustup target add {FW_TARGET})"
        ));
    }
    Ok(())
}

/// Builds the image with `version` (`X.Y.Z`, else the source's); returns its path.
fn build_firmware_version(root: &Path, version: Option<&str>) -> Result<PathBuf, String> {
    ensure_fw_target(root)?;
    let id = build_id(root, version.unwrap_or(DEFAULT_VERSION));
    let status = cargo()
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "-p",
            "firmware",
            "--features",
            "image",
            "--bin",
            "accel-fw",
        ])
        .args(["--target", FW_TARGET, "--profile", "fw"])
        .env("DEFMT_LOG", "info")
        .env("ACCEL_FW_BUILD_ID", format!("{id:08x}"))
        .env("ACCEL_FW_VERSION", version.unwrap_or(DEFAULT_VERSION))
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_NONE_RUSTFLAGS",
            "-C relocation-model=static",
        )
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "the firmware did not build for {FW_TARGET} (cargo's errors are above)"
        ));
    }
    Ok(target_dir(root).join(FW_TARGET).join("fw").join("accel-fw"))
}

fn sizes(elf: &Path) -> Result<(u64, u64, u64), String> {
    let data = std::fs::read(elf).map_err(|e| format!("{}: {e}", elf.display()))?;
    let file = object::File::parse(&*data).map_err(|e| format!("{}: {e}", elf.display()))?;
    let (mut text, mut dat, mut bss) = (0, 0, 0);
    for s in file.sections() {
        let name = s.name().unwrap_or("");
        match name {
            ".text" => text += s.size(),
            ".rodata" | ".data" | ".got" => dat += s.size(),
            ".bss" => bss += s.size(),
            _ => {}
        }
    }
    Ok((text, dat, bss))
}

fn firmware() -> Result<(), String> {
    let root = root();
    let elf = build_firmware(&root)?;
    let (text, data, bss) = sizes(&elf)?;
    println!(
        "firmware image: {}",
        elf.strip_prefix(&root).unwrap_or(&elf).display()
    );
    println!("  build id  {:08x}", build_id(&root, DEFAULT_VERSION));
    println!("  .text     {text:>8} bytes");
    println!("  .data     {data:>8} bytes (.rodata + .data + .got)");
    println!("  .bss      {bss:>8} bytes");
    println!("  total     {:>8} bytes loaded", text + data + bss);
    Ok(())
}

mod certs;
mod demo;
mod image;
mod vm;

/// The version an image build gets unless `--version` says otherwise.
const DEFAULT_VERSION: &str = "0.1.0";

fn main() -> ExitCode {
    let task = std::env::args().nth(1).unwrap_or_default();
    let r = match task.as_str() {
        "firmware" => firmware(),
        "image" => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            image::run(&root(), &args)
        }
        "demo" => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            demo::run(&root(), &args)
        }
        "certs" => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            certs::run(&root(), &args)
        }
        "vm" => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            match vm::run(&root(), &args) {
                Ok(0) => Ok(()),
                Ok(code) => return ExitCode::from(code.clamp(1, 255) as u8),
                Err(e) => Err(e),
            }
        }
        _ => {
            eprintln!("usage: cargo xtask <firmware|image|demo|vm|certs>");
            return ExitCode::from(2);
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's first commands on a fresh machine build the firmware: the toolchain file
    /// must name its target (rustup installs it with the toolchain) and the components CI runs.
    #[test]
    fn the_toolchain_file_names_what_the_build_needs() {
        let text = std::fs::read_to_string(root().join("rust-toolchain.toml")).unwrap();
        let list = |key: &str| -> Vec<String> {
            text.lines()
                .find(|l| l.trim_start().starts_with(key))
                .and_then(|l| l.split_once('='))
                .map(|(_, v)| {
                    v.trim()
                        .trim_matches(|c| c == '[' || c == ']')
                        .split(',')
                        .map(|s| s.trim().trim_matches('"').to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        assert!(list("targets").contains(&FW_TARGET.to_string()));
        for c in ["rustfmt", "clippy"] {
            assert!(list("components").contains(&c.to_string()), "{c}");
        }
        let channel = list("channel");
        let ws = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
        let msrv = ws
            .lines()
            .find(|l| l.starts_with("rust-version"))
            .and_then(|l| l.split('"').nth(1))
            .unwrap();
        assert!(
            channel.first().is_some_and(|c| c.starts_with(msrv)),
            "the pinned channel {channel:?} is the workspace's rust-version {msrv}"
        );
    }
}
