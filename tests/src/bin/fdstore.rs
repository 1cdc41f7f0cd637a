//! `fdstore [--] CMD ARGS...`: what systemd does for a `Type=notify` service with a
//! descriptor store, for tests where systemd does not run (a busybox guest). It starts CMD
//! with `$NOTIFY_SOCKET`, prints `ready` when CMD says READY=1, keeps every descriptor CMD
//! hands it with FDSTORE=1 under its FDNAME, and on a line on stdin:
//!
//! - `restart`: SIGKILLs CMD and starts it again with the kept descriptors (`LISTEN_FDS`,
//!   `LISTEN_FDNAMES`, `LISTEN_PID`, descriptors from 3), as systemd restarts a service;
//! - `restart-fresh`: the same, but the kept descriptors are closed first (no store);
//! - `stop` (or the end of stdin): SIGTERM, then exits, closing what it kept.
#![deny(unsafe_code)]

use command_fds::{CommandFdExt, FdMapping};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

type Store = Arc<Mutex<BTreeMap<String, OwnedFd>>>;

fn spawn(cmd: &[String], sock: &std::path::Path, store: &Store) -> Child {
    let kept = store.lock().unwrap();
    let mut c = Command::new("sh");
    // LISTEN_PID must be the service's own pid: the shell's, which exec keeps.
    c.arg("-c")
        .arg("LISTEN_PID=$$ exec \"$@\"")
        .arg("sh")
        .args(cmd)
        .env("NOTIFY_SOCKET", sock);
    if !kept.is_empty() {
        let names: Vec<&str> = kept.keys().map(String::as_str).collect();
        c.env("LISTEN_FDS", kept.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"));
        let maps = kept
            .values()
            .enumerate()
            .map(|(i, fd)| FdMapping {
                parent_fd: fd.try_clone().expect("dup a kept descriptor"),
                child_fd: 3 + i as i32,
            })
            .collect();
        c.fd_mappings(maps).expect("descriptor mappings");
    } else {
        c.env_remove("LISTEN_FDS").env_remove("LISTEN_FDNAMES");
    }
    c.spawn().expect("start the service")
}

fn main() {
    let cmd: Vec<String> = std::env::args().skip(1).skip_while(|a| a == "--").collect();
    assert!(!cmd.is_empty(), "usage: fdstore [--] CMD ARGS...");
    let dir = std::env::temp_dir().join(format!("fdstore-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock_path = dir.join("notify");
    let sock = UnixDatagram::bind(&sock_path).expect("notify socket");
    let store: Store = Arc::default();
    {
        let store = store.clone();
        std::thread::spawn(move || loop {
            let mut buf = [0u8; 4096];
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 16]);
            let Ok(msg) = recvmsg::<UnixAddr>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) else {
                return;
            };
            let mut fds = Vec::new();
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        for r in raw {
                            // SAFETY: SCM_RIGHTS installed `r` in this process for this
                            // message alone; nothing else refers to it.
                            #[allow(unsafe_code)]
                            fds.push(unsafe { OwnedFd::from_raw_fd(r) });
                        }
                    }
                }
            }
            let n = msg.bytes;
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let mut name = None;
            let mut storing = false;
            for line in text.lines() {
                if line == "READY=1" {
                    println!("ready");
                    let _ = std::io::stdout().flush();
                }
                if line == "FDSTORE=1" {
                    storing = true;
                }
                if let Some(n) = line.strip_prefix("FDNAME=") {
                    name = Some(n.to_string());
                }
            }
            if storing {
                let name = name.unwrap_or_else(|| "stored".into());
                for fd in fds {
                    store.lock().unwrap().insert(name.clone(), fd);
                }
            }
        });
    }
    let mut child = spawn(&cmd, &sock_path, &store);
    for line in std::io::stdin().lock().lines() {
        let line = line.unwrap_or_default();
        match line.trim() {
            "restart" | "restart-fresh" => {
                let _ = child.kill();
                let _ = child.wait();
                if line.trim() == "restart-fresh" {
                    store.lock().unwrap().clear();
                }
                child = spawn(&cmd, &sock_path, &store);
            }
            "stop" => break,
            _ => {}
        }
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    store.lock().unwrap().clear();
    let _ = std::fs::remove_dir_all(&dir);
}
