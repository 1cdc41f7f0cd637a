//! VFs imported from another host (`accel-remote import`): each importer keeps a small state
//! file in `<runtime dir>/imported/` saying which socket it serves, where the VF comes from
//! and how its link is, so `accelctl imported` and `accel-remote stats` show them.
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One imported VF, as its importer last wrote it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedVf {
    /// The local vfio-user socket a VMM or the job library attaches.
    pub socket: PathBuf,
    /// The exporter, `HOST:PORT`.
    pub exporter: String,
    /// The VF's number at the exporter.
    pub vf: u32,
    /// `up`, `down` (reconnecting; jobs wait) or `failed` (down past its limit; jobs fail).
    pub link: String,
    /// The session with the exporter (hex), if one is open.
    pub session: String,
    /// The importer's process.
    pub pid: u32,
    /// Jobs completed through the link.
    pub jobs: u64,
    /// Jobs in flight now.
    pub inflight: u64,
    /// Host bytes sent with jobs.
    pub bytes_out: u64,
    /// Host bytes that came back with completions.
    pub bytes_in: u64,
    /// Links made again after a drop.
    pub reconnects: u64,
    /// Jobs submitted again after a reconnect.
    pub resubmitted: u64,
    /// Jobs completed LINK_DOWN.
    pub failed: u64,
    /// Register accesses forwarded.
    pub reg_accesses: u64,
    /// Last PING round trip, µs.
    pub rtt_us: u64,
}

/// Where importers keep their state files under `runtime_dir`.
pub fn dir(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("imported")
}

/// The state file for the importer serving `socket`.
pub fn state_file(runtime_dir: &Path, socket: &Path) -> PathBuf {
    let name: String = socket
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir(runtime_dir).join(format!("{name}.json"))
}

/// Writes `v`'s state file whole (a reader never sees half of one).
pub fn write(runtime_dir: &Path, v: &ImportedVf) -> std::io::Result<()> {
    std::fs::create_dir_all(dir(runtime_dir))?;
    let path = state_file(runtime_dir, &v.socket);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(v).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, path)
}

/// The imported VFs whose importer is still running, by socket.
pub fn list(runtime_dir: &Path) -> Vec<ImportedVf> {
    let Ok(rd) = std::fs::read_dir(dir(runtime_dir)) else {
        return Vec::new();
    };
    let mut out: Vec<ImportedVf> = rd
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<ImportedVf>(&b).ok())
        .filter(|v| Path::new(&format!("/proc/{}", v.pid)).exists())
        .collect();
    out.sort_by(|a, b| a.socket.cmp(&b.socket));
    out
}

/// The imported VFs as a table (one line each, with the link's counters).
pub fn table(vfs: &[ImportedVf]) -> String {
    let head = [
        "SOCKET",
        "EXPORTER",
        "VF",
        "LINK",
        "JOBS",
        "INFLIGHT",
        "BYTES_OUT",
        "BYTES_IN",
        "RECONNECTS",
        "RESUBMITTED",
        "FAILED",
        "RTT_US",
    ];
    let rows: Vec<Vec<String>> = vfs
        .iter()
        .map(|v| {
            vec![
                v.socket.display().to_string(),
                v.exporter.clone(),
                v.vf.to_string(),
                v.link.clone(),
                v.jobs.to_string(),
                v.inflight.to_string(),
                v.bytes_out.to_string(),
                v.bytes_in.to_string(),
                v.reconnects.to_string(),
                v.resubmitted.to_string(),
                v.failed.to_string(),
                v.rtt_us.to_string(),
            ]
        })
        .collect();
    crate::table::columns(&head, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_files_round_trip_and_a_dead_importers_is_not_listed() {
        let d = tempfile::tempdir().unwrap();
        let mut v = ImportedVf {
            socket: "/run/x/vf 0.sock".into(),
            exporter: "10.0.0.1:7000".into(),
            link: "up".into(),
            pid: std::process::id(),
            jobs: 3,
            ..Default::default()
        };
        write(d.path(), &v).unwrap();
        assert_eq!(list(d.path()), vec![v.clone()]);
        v.socket = "/run/x/other.sock".into();
        v.pid = u32::MAX; // no such process
        write(d.path(), &v).unwrap();
        assert_eq!(list(d.path()).len(), 1);
    }
}
