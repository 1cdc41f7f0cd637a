//! `accelctl logs [--follow]`: the running firmware's log ring, decoded with its image's ELF
//! (the defmt table in it), as probe-rs shows an RTT log. The image is found by the running
//! build id and version among `--image`, `$ACCEL_FW_IMAGES` (a directory) and `target/fw`.

use crate::backend::Backend;
use host_driver::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The ELF of the image the device runs (`version`, `build`).
fn running_elf(version: u32, build: u32, given: Option<&Path>) -> Result<Vec<u8>> {
    // The ELF of `bytes` if they are a whole image of the running firmware (structure
    // checked, so a short or damaged file is not one).
    let running = |bytes: &[u8]| {
        fw_image::parse(bytes)
            .ok()
            .filter(|p| p.header.build_id.get() == build && p.header.fw_version.get() == version)
            .map(|p| p.payload.to_vec())
    };
    if let Some(p) = given {
        let b = std::fs::read(p).map_err(|e| Error::Invalid(format!("{}: {e}", p.display())))?;
        if b.starts_with(b"\x7fELF") {
            return Ok(b);
        }
        return running(&b).ok_or_else(|| {
            Error::Invalid(format!(
                "{} is not an image of the running firmware ({} build {build:08x})",
                p.display(),
                fw_image::Version(version)
            ))
        });
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("ACCEL_FW_IMAGES")
        .map(|d| vec![PathBuf::from(d)])
        .unwrap_or_default();
    dirs.push(PathBuf::from("target/fw"));
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    dirs.push(manifest.parent().unwrap_or(manifest).join("target/fw"));
    for d in &dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "img") {
                if let Some(elf) = std::fs::read(&p).ok().and_then(|b| running(&b)) {
                    return Ok(elf);
                }
            }
        }
    }
    Err(Error::Invalid(format!(
        "no image of the running firmware ({} build {build:08x}) in $ACCEL_FW_IMAGES or \
         target/fw: give it with --image",
        fw_image::Version(version)
    )))
}

/// What the firmware image logs first on every boot (`firmware/src/bin/accel-fw/main.rs`).
const FIRST_LINE: &str = "accelvirt firmware image starting";

/// Prints the log, and with `follow` keeps printing what comes until interrupted.
pub async fn run(b: &Backend, image: Option<&Path>, follow: bool, json: bool) -> Result<()> {
    let (mut first, version, build) = b.read_log(None).await?;
    let elf = running_elf(version, build, image)?;
    let table = defmt_decoder::Table::parse(&elf)
        .map_err(|e| Error::Invalid(format!("the image's ELF: {e}")))?
        .ok_or_else(|| Error::Invalid("the image carries no defmt table".into()))?;
    let mut dec = table.new_stream_decoder();
    // Started inside a frame (the ring wrapped): decode from the next frame boundary.
    if first.next as usize > first.bytes.len() || first.lost > 0 {
        let cut = first
            .bytes
            .iter()
            .position(|&b| b == 0)
            .map_or(first.bytes.len(), |i| i + 1);
        first.bytes.drain(..cut);
    }
    let mut next = first.next;
    let mut feed = |bytes: &[u8], lost: u32| {
        if lost > 0 {
            eprintln!("accelctl: {lost} log bytes were overwritten before they were read");
        }
        dec.received(bytes);
        loop {
            match dec.decode() {
                Ok(f) => {
                    let ts = f
                        .display_timestamp()
                        .map(|t| t.to_string())
                        .unwrap_or_default();
                    let level = f.level().map(|l| l.as_str()).unwrap_or("print");
                    let msg = f.display_message().to_string();
                    // The image's first line: a new boot (the ring keeps the boots before).
                    let boot = msg == FIRST_LINE;
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"timestamp": ts, "level": level, "message": msg, "boot": boot})
                        );
                    } else {
                        if boot {
                            println!("-- firmware boot --");
                        }
                        println!("{ts} {:<5} {msg}", level.to_uppercase());
                    }
                }
                Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
                Err(defmt_decoder::DecodeError::Malformed) => {
                    eprintln!("accelctl: a malformed log frame (skipped)");
                }
            }
        }
    };
    feed(&first.bytes, first.lost);
    if !follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (r, _, _) = b.read_log(Some(next)).await?;
        next = r.next;
        feed(&r.bytes, r.lost);
    }
}
