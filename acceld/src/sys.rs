//! The one place acceld takes descriptors it did not open: those systemd passes it at start
//! (`LISTEN_FDS`, sd_listen_fds(3)), among them the device descriptors an earlier acceld left
//! in systemd's descriptor store.
#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const FIRST: i32 = 3;
/// More than any acceld stores (three per device, 64 devices).
const MOST: i32 = 1024;

/// The descriptors systemd passed this process, each with its name (`LISTEN_FDNAMES`), made
/// close-on-exec; the variables are removed so no child takes them as its own. Call once,
/// first thing in `main`, before any thread starts.
pub fn listen_fds() -> Vec<(String, OwnedFd)> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let n = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
        .map(|n| n.split(':').map(str::to_string).collect())
        .unwrap_or_default();
    for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(v);
    }
    if !ours {
        return Vec::new();
    }
    let mut out = Vec::new();
    for i in 0..n.clamp(0, MOST) {
        let fd = FIRST + i;
        use nix::libc::{fcntl, FD_CLOEXEC, F_SETFD};
        // A descriptor that is not open is skipped, not adopted.
        // SAFETY: fcntl(F_SETFD) on a number touches no memory; on a number that is not an
        // open descriptor it fails with EBADF.
        if unsafe { fcntl(fd, F_SETFD, FD_CLOEXEC) } < 0 {
            continue;
        }
        // SAFETY: LISTEN_PID names this process, so systemd passed it descriptors FIRST..
        // FIRST + LISTEN_FDS, and `fd` is open (fcntl above succeeded on it); nothing in the
        // process owns it yet, as this runs once, first in main, before anything opens or
        // adopts a descriptor.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        out.push((names.get(i as usize).cloned().unwrap_or_default(), owned));
    }
    out
}
