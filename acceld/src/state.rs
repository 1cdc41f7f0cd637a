//! A device's desired state: the VF layout its users asked for (each VF's id and resources and
//! QoS weight), which the daemon restores after a reset and compares the device against.
//!
//! It is written as a whole file, as systemd and etcd write theirs: a temporary file beside
//! it, fsync, rename over the old one, fsync of the directory. A reader, or the daemon after
//! a crash or a full disk, finds the old file or the new one, never a part of either; what a
//! failed save leaves is removed, and a temporary file a killed daemon left is removed by the
//! next [`load`].

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file format this daemon writes. Format 2 added `vfio_pci` to each VF; an earlier
/// daemon refuses it by its number rather than as a corrupt file.
pub const FORMAT: u32 = 2;
/// The formats this daemon reads (1: before `vfio_pci`, which then reads as false).
pub const READS: std::ops::RangeInclusive<u32> = 1..=FORMAT;

/// One VF as its users asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VfLayout {
    /// VF index (its socket or PCI function follows from it).
    pub vf: u16,
    /// Compute engines.
    pub engines: u16,
    /// Device memory granules.
    pub mem_granules: u32,
    /// Queue pairs.
    pub queues: u16,
    /// MSI-X vectors.
    pub vectors: u16,
    /// Scheduler weight.
    pub weight: u16,
    /// Bound to vfio-pci when recorded (kernel VFIO): bound again whenever restored, since
    /// a VF made anew has no driver override. Absent (false) in files written before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vfio_pci: bool,
}

/// What one device should hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    /// [`FORMAT`] when written.
    pub format: u32,
    /// The device, as `accelctl -d` takes it (a PCI address or a device-model socket).
    pub device: String,
    /// Its VFs, by index, each index at most once.
    pub vfs: Vec<VfLayout>,
}

impl DesiredState {
    /// A device that should hold no VF.
    pub fn empty(device: &str) -> Self {
        DesiredState {
            format: FORMAT,
            device: device.to_string(),
            vfs: Vec::new(),
        }
    }
}

/// Why a state file could not be written or read. A failed save leaves the file as it was.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file system refused (permissions, a read-only mount, an I/O error).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The disk (or the quota) is full: the state on disk is still the one before.
    #[error("{}: no space left; the desired state there is still the one before", path.display())]
    NoSpace {
        /// The state file.
        path: PathBuf,
    },
    /// Not a desired-state file (another file at that name, or one edited by hand badly).
    #[error("{}: not a desired-state file: {reason}", path.display())]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A format this daemon does not read (written by a newer one).
    #[error("{}: desired-state format {found}; this acceld reads formats {} to {FORMAT}", path.display(), READS.start())]
    Format {
        /// The state file.
        path: PathBuf,
        /// The format it says.
        found: u32,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> StateError + '_ {
    move |source| {
        let full = matches!(
            source.raw_os_error(),
            Some(e) if e == nix::errno::Errno::ENOSPC as i32 || e == nix::errno::Errno::EDQUOT as i32
        );
        if full {
            StateError::NoSpace {
                path: path.to_path_buf(),
            }
        } else {
            StateError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// The prefix of the temporary files a save of `path` writes beside it.
fn temp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.tmp.")
}

/// Writes `state` to `path` whole: after this returns, `path` holds it; if it fails, or the
/// process dies part way, `path` holds what it held before.
pub fn save(path: &Path, state: &DesiredState) -> Result<(), StateError> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{}{}.{n}", temp_prefix(path), std::process::id()));
    let mut text = serde_json::to_vec_pretty(state).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    text.push(b'\n');
    let written = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&text).map_err(io(path))?;
        f.sync_all().map_err(io(path))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable once the directory is.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Reads the state at `path`: `None` if there is none. Temporary files a killed save left
/// beside it are removed first (only a daemon that owns the file loads it).
pub fn load(path: &Path) -> Result<Option<DesiredState>, StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let prefix = temp_prefix(path);
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    read(path)
}

/// Reads the state at `path` as [`load`] does, leaving temporary files alone (a save may be
/// under way: a re-read while the daemon runs).
pub fn read(path: &Path) -> Result<Option<DesiredState>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    // The format first, so a newer file is named as such rather than as a bad one.
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let found = v.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
    if !u32::try_from(found).is_ok_and(|f| READS.contains(&f)) {
        return Err(StateError::Format {
            path: path.to_path_buf(),
            found: u32::try_from(found).unwrap_or(u32::MAX),
        });
    }
    let state: DesiredState = serde_json::from_value(v).map_err(|e| corrupt(e.to_string()))?;
    let mut ids: Vec<u16> = state.vfs.iter().map(|v| v.vf).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(corrupt("a VF index appears twice".into()));
    }
    Ok(Some(state))
}
