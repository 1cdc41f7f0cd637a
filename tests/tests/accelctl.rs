//! accelctl against a real accel-sim process over a real socket: the VF lifecycle, refusals
//! that change nothing, racing processes, and a device model that dies or hangs.
use accelvirt_tests::{accelctl, Sim};
use serde_json::Value;
use std::time::{Duration, Instant};

fn vfs(sim: &Sim) -> Vec<Value> {
    sim.ctl_json(&["vf", "list"])["vfs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn create_list_show_resize_reset_destroy() {
    let sim = Sim::start();
    let created = sim.ctl_json(&["create-vf", "--count", "4"]);
    let list = created["created"].as_array().unwrap();
    assert_eq!(list.len(), 4);
    for (i, v) in list.iter().enumerate() {
        assert_eq!(v["vf"], i);
        assert_eq!(v["engines"], 4);
        assert_eq!(v["memory_bytes"], 4u64 << 30);
        assert_eq!(v["queues"], 64);
        assert_eq!(v["vectors"], 512);
        let path = v["handoff"]["endpoint"]["path"].as_str().unwrap();
        assert!(
            std::path::Path::new(path).exists(),
            "VF socket {path} exists"
        );
        assert!(v["handoff"]["qemu"]
            .as_str()
            .unwrap()
            .contains("vfio-user-pci"));
        assert!(v["handoff"]["cloud_hypervisor"]
            .as_str()
            .unwrap()
            .starts_with("--user-device socket="));
    }
    // The table form shows the same VFs.
    let o = sim.ctl(&["vf", "list"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.lines().next().unwrap().starts_with("VF  STATE"));
    assert_eq!(text.lines().filter(|l| l.contains("enabled")).count(), 4);

    let all = vfs(&sim);
    assert!(all.iter().all(|v| v["state"] == "enabled"));
    let show = sim.ctl_json(&["vf", "show", "2"]);
    assert_eq!(show["vf"], 2);
    assert_eq!(show["engine_mask"], 0x0F00);

    // Resize VF 3 (the last one can shrink and grow back in place).
    let r = sim.ctl_json(&["vf", "resize", "3", "--memory", "2G", "--engines", "2"]);
    assert_eq!(r["vfs"][0]["memory_bytes"], 2u64 << 30);
    assert_eq!(r["vfs"][0]["engines"], 2);
    let info = sim.ctl_json(&["info"]);
    assert_eq!(info["free"]["memory_bytes"], 2u64 << 30);
    assert_eq!(info["free"]["engines"], 2);

    // Reset VF 1: its FLR count moves, the others keep their state.
    let before: Vec<Value> = vfs(&sim);
    let r = sim.ctl_json(&["vf", "reset", "1"]);
    assert_eq!(r["vfs"][0]["flr_count"], 1);
    let after = vfs(&sim);
    for (b, a) in before.iter().zip(&after) {
        if a["vf"] != 1 {
            assert_eq!(a, b, "VF {} unchanged by VF 1's reset", a["vf"]);
        }
    }

    // Destroy one, then all; SR-IOV goes off with the last.
    assert!(sim.ctl(&["destroy-vf", "0"]).status.success());
    assert_eq!(vfs(&sim).len(), 3);
    let d = sim.ctl_json(&["destroy-vf", "--all"]);
    assert_eq!(d["destroyed"], 3);
    assert!(vfs(&sim).is_empty());
    let info = sim.ctl_json(&["info"]);
    assert_eq!(info["vfs_enabled"], 0);
    assert_eq!(info["free"]["memory_bytes"], 16u64 << 30);
    assert!(!sim.dir.path().join("accel0-vf0.sock").exists());
}

#[test]
fn refusals_are_clear_and_change_nothing() {
    let sim = Sim::start();
    sim.ctl_json(&[
        "create-vf",
        "--count",
        "2",
        "--engines",
        "2",
        "--memory",
        "1G",
        "--queues",
        "8",
    ]);
    let info_before = sim.ctl_json(&["info"]);
    let vfs_before = vfs(&sim);
    let cases: &[(&[&str], i32, &str)] = &[
        (&["create-vf", "--count", "65"], 2, "at most 64 VFs"),
        (
            &[
                "create-vf",
                "--count",
                "1",
                "--engines",
                "17",
                "--memory",
                "1G",
                "--queues",
                "1",
            ],
            1,
            "not enough free resources",
        ),
        (
            &[
                "create-vf",
                "--count",
                "1",
                "--engines",
                "1",
                "--memory",
                "64G",
                "--queues",
                "1",
            ],
            1,
            "not enough free resources",
        ),
        (
            &[
                "create-vf",
                "--count",
                "1",
                "--engines",
                "1",
                "--memory",
                "3M",
                "--queues",
                "1",
            ],
            2,
            "granule",
        ),
        (&["vf", "show", "9"], 3, "no such VF"),
        (&["vf", "resize", "0", "--memory", "15G"], 1, "fragmented"),
        (&["vf", "qos", "0", "--weight", "0"], 2, "from 1 to 1000"),
        (&["destroy-vf", "7"], 3, "no such VF"),
    ];
    for (args, code, msg) in cases {
        let o = sim.ctl(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(*code), "{args:?}: {err}");
        assert!(
            err.contains(msg),
            "{args:?}: '{err}' should mention '{msg}'"
        );
        assert!(o.stdout.is_empty(), "nothing on stdout for a failure");
    }
    assert_eq!(sim.ctl_json(&["info"])["free"], info_before["free"]);
    assert_eq!(vfs(&sim), vfs_before);
    // No device: a usage error naming what to do.
    let o = accelctl(&sim.dir.path().join("nothing.sock"), &["info"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is accel-sim running?"));
}

/// Two creators whose VFs would both fit: the firmware step and the SR-IOV step are one
/// critical section, so one wins and the other is told it conflicts (exit 4), its VFs rolled
/// back, and NumVFs always covers exactly the VFs that exist.
#[test]
fn racing_creators_one_wins_one_clear_conflict() {
    for round in 0..8 {
        let sim = Sim::start();
        let spawn = || {
            std::process::Command::new(accelvirt_tests::bin("accelctl"))
                .args(["-d"])
                .arg(&sim.sock)
                .args([
                    "create-vf",
                    "--count",
                    "2",
                    "--engines",
                    "2",
                    "--memory",
                    "1G",
                ])
                .args(["--queues", "8", "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (spawn(), spawn());
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        let ok = [a.status.success(), b.status.success()];
        assert_eq!(
            ok.iter().filter(|x| **x).count(),
            1,
            "round {round}: exactly one creator wins: {a:?} {b:?}"
        );
        let loser = if ok[0] { &b } else { &a };
        assert_eq!(loser.status.code(), Some(4), "round {round}: {loser:?}");
        assert!(
            String::from_utf8_lossy(&loser.stderr).contains("SR-IOV is enabled with 2 VFs"),
            "round {round}: {loser:?}"
        );
        let list = vfs(&sim);
        assert_eq!(
            list.len(),
            2,
            "round {round}: the loser's VFs were rolled back"
        );
        let info = sim.ctl_json(&["info"]);
        assert_eq!(
            info["vfs_enabled"], 2,
            "round {round}: NumVFs covers the VFs"
        );
        let mut mask = 0u64;
        for v in &list {
            let m = v["engine_mask"].as_u64().unwrap();
            assert_eq!(mask & m, 0, "no engine given twice");
            mask |= m;
        }
    }
}

/// While another process holds the management lock, a create waits at most its timeout,
/// then says who is in the way (exit 4) and changes nothing.
#[test]
fn a_held_management_lock_is_a_clear_busy_error() {
    let sim = Sim::start();
    let mut lock = sim.sock.clone().into_os_string();
    lock.push(".lock");
    let f = std::fs::File::create(&lock).unwrap();
    f.lock().unwrap();
    let t = Instant::now();
    let o = sim.ctl(&["--timeout-ms", "300", "create-vf", "--count", "1"]);
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("another process is creating or destroying VFs"),
        "{o:?}"
    );
    drop(f);
    assert_eq!(vfs(&sim).len(), 0, "nothing was created");
    sim.ctl_json(&["create-vf", "--count", "1"]);
}

#[test]
fn sim_killed_mid_command_is_a_clear_error_not_a_hang() {
    let sim = Sim::start();
    // Freeze the device so the command is in flight, then kill it.
    sim.freeze();
    let t = Instant::now();
    let child = std::process::Command::new(accelvirt_tests::bin("accelctl"))
        .arg("-d")
        .arg(&sim.sock)
        .args(["create-vf", "--count", "4"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    sim.signal(nix::sys::signal::Signal::SIGKILL);
    let o = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(8), "no hang");
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("connection lost"));
}

#[test]
fn library_call_on_a_killed_device_fails_fast() {
    let mut sim = Sim::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let acc = host_driver::Accel::open(&host_driver::DeviceAddr::Socket(sim.sock.clone())).unwrap();
    rt.block_on(acc.heartbeat(1)).unwrap();
    sim.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = sim.stop();
    let t = Instant::now();
    let e = rt.block_on(acc.heartbeat(2)).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    assert!(matches!(e, host_driver::Error::Io(_)), "{e}");
}

#[test]
fn a_hung_device_times_out_with_a_clear_error() {
    let sim = Sim::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let acc = host_driver::Accel::open(&host_driver::DeviceAddr::Socket(sim.sock.clone())).unwrap();
    rt.block_on(acc.heartbeat(1)).unwrap();
    let short =
        host_driver::Accel::with_transport(acc.transport().clone(), Duration::from_millis(300))
            .unwrap();
    sim.freeze();
    let t = Instant::now();
    let e = rt.block_on(short.heartbeat(2)).unwrap_err();
    sim.signal(nix::sys::signal::Signal::SIGCONT);
    assert!(t.elapsed() < Duration::from_secs(8));
    assert!(
        matches!(
            e,
            host_driver::Error::Timeout { .. } | host_driver::Error::Io(_)
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("heartbeat") || e.to_string().contains("no answer"),
        "{e}"
    );
}

#[test]
fn list_finds_the_sim_and_exits_cleanly_on_sigterm() {
    let mut sim = Sim::start();
    let o = std::process::Command::new(accelvirt_tests::bin("accelctl"))
        .args(["list", "--json", "--runtime-dir"])
        .arg(sim.dir.path())
        .output()
        .unwrap();
    let j: Value = serde_json::from_slice(&o.stdout).unwrap();
    let devs = j["devices"].as_array().unwrap();
    assert!(
        devs.iter()
            .any(|d| d["device"] == sim.sock.display().to_string() && d["status"] == "ok"),
        "{j}"
    );
    sim.ctl_json(&["create-vf", "--count", "2"]);
    assert!(sim.dir.path().join("accel0-vf1.sock").exists());
    let st = sim.stop().unwrap();
    assert!(st.success(), "accel-sim exits 0 on SIGTERM");
    assert!(!sim.sock.exists(), "PF socket removed");
    assert!(
        !sim.dir.path().join("accel0-vf0.sock").exists(),
        "VF sockets removed"
    );
}

#[test]
fn socket_in_use_or_unwritable_is_a_clear_error() {
    let sim = Sim::start();
    let o = std::process::Command::new(accelvirt_tests::bin("accel-sim"))
        .arg("--socket")
        .arg(&sim.sock)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = std::process::Command::new(accelvirt_tests::bin("accel-sim"))
        .args(["--socket", "/nonexistent-dir/x.sock"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot create socket"));
}

/// `vf list` and the other VF subcommands cost one mailbox command, not one per VF plus a
/// device query for the granule size.
#[test]
fn vf_list_is_one_mailbox_command() {
    let sim = Sim::start();
    sim.ctl_json(&["create-vf", "--count", "8"]);
    let commands = || {
        sim.ctl_json(&["stats"])["mailbox_commands"]
            .as_u64()
            .unwrap()
    };
    let before = commands();
    assert_eq!(vfs(&sim).len(), 8);
    sim.ctl_json(&["vf", "show", "3"]);
    // The second stats counts itself, as the first did.
    assert_eq!(commands() - before, 1 + 1 + 1);
}

/// An accelctl killed while it holds the mailbox lock (waiting for a frozen device) does not
/// lock anyone out: the device sees its connection go and frees the lock the token it
/// registered holds, at once, without waiting for the firmware's lease.
#[test]
fn a_killed_lock_holder_is_released_with_its_connection() {
    use host_driver::transport::Transport;
    let sim = Sim::start();
    let mut watch = std::process::Command::new(accelvirt_tests::bin("accelctl"))
        .arg("-d")
        .arg(&sim.sock)
        .args(["stats", "--watch", "0.05"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A second client, mapped, reads the lock word without the device's help.
    let t = host_driver::vfio_user::VfioUser::connect(&sim.sock, true).unwrap();
    assert!(t.is_mapped());
    let lock = shared_abi::regs::pf::MBOX_LOCK.offset();
    // Once it has printed a sample it is connected and mapped; freeze the device so its next
    // command takes the lock and waits.
    let mut out = watch.stdout.take().unwrap();
    let mut first = [0u8; 1];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    sim.signal(nix::sys::signal::Signal::SIGSTOP);
    let deadline = Instant::now() + Duration::from_secs(2);
    while t.read32(lock).unwrap() == 0 {
        assert!(Instant::now() < deadline, "the watcher never took the lock");
        std::thread::sleep(Duration::from_millis(5));
    }
    watch.kill().unwrap();
    watch.wait().unwrap();
    sim.signal(nix::sys::signal::Signal::SIGCONT);
    // Generous: what tells a connection release from the lease is the expiry count below.
    let deadline = Instant::now() + Duration::from_secs(5);
    while t.read32(lock).unwrap() != 0 {
        assert!(
            Instant::now() < deadline,
            "the dead holder's lock is still held"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let expired = t
        .read32(shared_abi::regs::pf::MBOX_LEASES_EXPIRED.offset())
        .unwrap();
    assert_eq!(expired, 0, "freed with the connection, not by the lease");
    sim.ctl_json(&["info"]);
}

/// Every sizing argument is checked on its own and named when it is wrong; none is dropped
/// silently, and a refused create changes nothing.
#[test]
fn create_vf_arguments_are_checked_and_named() {
    let sim = Sim::start();
    for (args, msg) in [
        (vec!["--count", "1", "--vectors", "0"], "--vectors 0"),
        (
            vec![
                "--count",
                "1",
                "--engines",
                "1",
                "--memory",
                "1G",
                "--queues",
                "1",
                "--vectors",
                "2049",
            ],
            "--vectors 2049",
        ),
        (vec!["--count", "1", "--weight", "0"], "--weight 0"),
        (vec!["--count", "1", "--weight", "1001"], "--weight 1001"),
        (vec!["--count", "0"], "--count 0"),
        (vec!["--count", "1", "--engines", "0"], "--engines 0"),
        (vec!["--count", "1", "--memory", "1Q"], "unknown unit"),
        (
            vec!["--count", "1", "--vectors", "4"],
            "give --engines, --memory and",
        ),
        (
            vec!["--count", "1", "--weight", "50"],
            "give --engines, --memory and",
        ),
    ] {
        let mut a = vec!["create-vf"];
        a.extend(&args);
        let o = sim.ctl(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{a:?}: {err}");
        assert!(err.contains(msg), "{a:?}: {err}");
    }
    assert_eq!(
        sim.ctl_json(&["info"])["vfs_in_use"],
        0,
        "nothing was created"
    );
}

/// `--timeout-ms` bounds every wait, the socket's included, and a device that does not answer
/// is "busy" (exit 4), as the README says.
#[test]
fn timeout_ms_bounds_a_frozen_device_and_exits_busy() {
    let sim = Sim::start();
    sim.freeze();
    let t = Instant::now();
    let o = sim.ctl(&["--timeout-ms", "300", "info"]);
    let took = t.elapsed();
    sim.signal(nix::sys::signal::Signal::SIGCONT);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// What a create-vf killed between its firmware command and its SR-IOV step leaves (VFs
/// holding everything, SR-IOV off) is explained, with the way out, and the way out works.
#[test]
fn resources_held_by_an_interrupted_create_are_explained() {
    use host_driver::transport::Transport;
    let sim = Sim::start();
    sim.ctl_json(&["create-vf", "--count", "4"]);
    // SR-IOV switched off under the VFs: the state a create interrupted before its SR-IOV
    // write leaves behind.
    let t = host_driver::vfio_user::VfioUser::connect(&sim.sock, false).unwrap();
    t.set_num_vfs(0).unwrap();
    let o = sim.ctl(&["create-vf", "--count", "2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains("4 VFs hold the device's resources while SR-IOV shows none")
            && err.contains("destroy-vf --all"),
        "{err}"
    );
    let d = sim.ctl(&["destroy-vf", "--all"]);
    assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
    assert_eq!(
        sim.ctl_json(&["create-vf", "--count", "2"])["created"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

/// A management command killed half way leaves its record in the lock file; the next one
/// finishes it (reaching the state the killed one meant to reach) and says what it did.
#[test]
fn interrupted_operations_are_finished_by_the_next_command() {
    use host_driver::transport::Transport;
    let lock = |sim: &Sim| {
        let mut p = sim.sock.clone().into_os_string();
        p.push(".lock");
        std::path::PathBuf::from(p)
    };
    let raw = |sim: &Sim| host_driver::vfio_user::VfioUser::connect(&sim.sock, false).unwrap();
    // A create killed after its firmware command, before SR-IOV showed the VFs.
    let sim = Sim::start();
    sim.ctl_json(&["create-vf", "--count", "2"]);
    raw(&sim).set_num_vfs(0).unwrap();
    std::fs::write(lock(&sim), "create-vf").unwrap();
    // Any command finishes it first, `vf list` here (before, only create-vf and destroy-vf
    // did, and the others showed the half-made VFs as they were).
    let o = sim.ctl(&["vf", "list", "--json"]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("finished an interrupted create-vf: SR-IOV now shows the 2 VFs it had made"),
        "{err}"
    );
    assert_eq!(raw(&sim).num_vfs().unwrap(), 2, "rolled forward");
    assert_eq!(
        std::fs::read_to_string(lock(&sim)).unwrap(),
        "",
        "record cleared"
    );
    // A destroy killed after SR-IOV went off, before the firmware destroyed the VFs: `stats`
    // finishes it.
    raw(&sim).set_num_vfs(0).unwrap();
    std::fs::write(lock(&sim), "destroy-vf").unwrap();
    let o = sim.ctl(&["stats"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("finished an interrupted destroy-vf: destroyed the 2 VFs"),
        "{err}"
    );
    assert_eq!(sim.ctl_json(&["info"])["vfs_in_use"], 0);
    // A destroy killed after the last VF went, before SR-IOV went off.
    sim.ctl_json(&["create-vf", "--count", "1"]);
    let a = host_driver::Accel::open(&host_driver::DeviceAddr::Socket(sim.sock.clone())).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            // Only the firmware step of a destroy (as a killed accelctl would have done it).
            a.mailbox()
                .call(&shared_abi::messages::Request::DestroyVf(
                    shared_abi::messages::Target::All,
                ))
                .await
                .unwrap();
        });
    std::fs::write(lock(&sim), "destroy-vf").unwrap();
    let o = sim.ctl(&["info"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("SR-IOV off, no VF was left"), "{err}");
    assert_eq!(raw(&sim).num_vfs().unwrap(), 0);
}

/// The device model killed (a power cut) while `create-vf`, `vf resize` or `destroy-vf`
/// runs, at a spread of moments from before its first message to after its last: accelctl
/// ends (an error or success), never hangs; the restarted device is a fresh one (its state
/// is not persistent, as a device's registers are not across a power cut), and the next
/// commands find nothing half made, everything free and no lock held.
#[test]
fn a_device_killed_during_create_resize_or_destroy_comes_back_clean() {
    use std::process::{Command, Stdio};
    let mut sim = Sim::start();
    for delay_us in [0u64, 200, 500, 1_000, 2_000, 4_000, 8_000, 20_000] {
        for op in ["create", "resize", "destroy"] {
            let args: &[&str] = match op {
                "create" => &["create-vf", "--count", "16"],
                "resize" => {
                    sim.ctl_json(&["create-vf", "--count", "4", "--profile", "small"]);
                    &["vf", "resize", "2", "--engines", "2", "--memory", "64M"]
                }
                _ => {
                    sim.ctl_json(&["create-vf", "--count", "16"]);
                    &["destroy-vf", "--all"]
                }
            };
            let mut cmd = Command::new(accelvirt_tests::bin("accelctl"))
                .arg("-d")
                .arg(&sim.sock)
                .args(["--timeout-ms", "2000"])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_micros(delay_us));
            sim.kill_and_restart();
            let t = Instant::now();
            let done = loop {
                if let Some(st) = cmd.try_wait().unwrap() {
                    break st.success();
                }
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "{op} at {delay_us} us: accelctl hangs on a dead device"
                );
                std::thread::sleep(Duration::from_millis(5));
            };
            let info = sim.ctl_json(&["info"]);
            let ctx = format!("{op} killed at {delay_us} us (accelctl ok: {done}): {info}");
            // No VF made but not shown, or shown but not made.
            assert_eq!(info["vfs_in_use"], info["vfs_enabled"], "{ctx}");
            if !done {
                // The command died with the device: the fresh device has nothing.
                assert_eq!(info["vfs_in_use"], 0, "{ctx}");
                assert_eq!(info["free"]["engines"], info["board"]["engines"], "{ctx}");
                assert_eq!(
                    info["free"]["memory_bytes"], info["board"]["memory_bytes"],
                    "{ctx}"
                );
            }
            // (A command that started after the restart ran on the new device in full.)
            let o = sim.ctl(&["destroy-vf", "--all"]);
            assert!(o.status.success() || info["vfs_in_use"] == 0, "{ctx}");
            // The next create gets the whole device; the next destroy leaves nothing.
            let o = sim.ctl(&["create-vf", "--count", "64"]);
            assert!(
                o.status.success(),
                "{ctx}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let o = sim.ctl(&["destroy-vf", "--all"]);
            assert!(o.status.success(), "{ctx}");
        }
    }
}

/// One rule for a VF that does not exist: exit 3 (no such device), whichever command met it,
/// and a refused destroy leaves no record for the next command to "finish". Bad numbers say
/// their range.
#[test]
fn a_missing_vf_is_exit_3_everywhere_and_ranges_are_named() {
    let sim = Sim::start();
    sim.ctl_json(&["create-vf", "--count", "2"]);
    for args in [
        &["vf", "show", "9"][..],
        &["vf", "run", "9", "--seconds", "0.1"],
        &["vf", "reset", "9"],
        &["vf", "qos", "9", "--weight", "10"],
        &["destroy-vf", "7"],
    ] {
        let o = sim.ctl(args);
        assert_eq!(
            o.status.code(),
            Some(3),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // The refused destroy left nothing behind: the next management command has nothing to
    // finish and says nothing of it.
    let o = sim.ctl(&["destroy-vf", "1"]);
    assert!(o.status.success());
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(!said.contains("interrupted"), "{said}");
    let o = sim.ctl(&["vf", "qos", "0", "--weight", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("from 1 to 1000"));
    let o = sim.ctl(&["create-vf", "--count", "100"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("at most 64"));
}

/// Two equal-split creates at once: the one that waited for the other's lock finds the
/// device taken, and says so as busy (exit 4), not as a refusal of what it asked.
#[test]
fn a_create_that_lost_the_race_is_busy() {
    let sim = Sim::start();
    let spawn = || {
        std::process::Command::new(accelvirt_tests::bin("accelctl"))
            .arg("-d")
            .arg(&sim.sock)
            .args(["create-vf", "--count", "4"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let loser = if a.status.success() { &b } else { &a };
    assert!(a.status.success() || b.status.success());
    assert_eq!(loser.status.code(), Some(4), "{loser:?}");
    let err = String::from_utf8_lossy(&loser.stderr);
    assert!(err.contains("another create-vf"), "{err}");
    assert_eq!(vfs(&sim).len(), 4);
}

/// Nothing answering at what `-d` names: the hint fits what it names (a VF's socket, a
/// directory, another file), and `list` finds a device `-d` names outside the runtime
/// directory, or says where it looked.
#[test]
fn what_d_names_gets_a_hint_that_fits_and_list_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let hint = |p: &std::path::Path| {
        let o = accelctl(p, &["info"]);
        assert_eq!(o.status.code(), Some(3));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let vf = dir.path().join("accel0-vf3.sock");
    let h = hint(&vf);
    assert!(
        h.contains("VF 3's socket") && h.contains("accel0.sock"),
        "{h}"
    );
    assert!(!h.contains(&format!("--socket {}", vf.display())), "{h}");
    assert!(hint(dir.path()).contains("a directory"));
    let flash = dir.path().join("accel0.flash");
    std::fs::write(&flash, b"x").unwrap();
    assert!(hint(&flash).contains("not a socket"));
    // A device model outside the runtime directory, named by -d: list shows it.
    let sim = Sim::start();
    let empty = tempfile::tempdir().unwrap();
    let runtime = empty.path().to_str().unwrap();
    let o = sim.ctl(&["list", "--runtime-dir", runtime, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let devices = v["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 1, "{v}");
    assert_eq!(devices[0]["device"], sim.sock.display().to_string());
    // Nothing named, nothing there: it says where it looked.
    let o = std::process::Command::new(accelvirt_tests::bin("accelctl"))
        .args(["list", "--runtime-dir", runtime])
        .env_remove("ACCEL_DEVICE")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(runtime) && text.contains("/sys/bus/pci"),
        "{text}"
    );
}

/// `vf run` stops submitting at its deadline and says how long the jobs in flight then took;
/// its progress bar is drawn on a terminal only, not on a dumb one (a guest's serial log).
#[test]
fn run_stops_at_its_deadline_and_draws_no_bar_on_a_dumb_terminal() {
    let sim = Sim::start();
    sim.ctl_json(&["create-vf", "--count", "1"]);
    let r = sim.ctl_json(&[
        "vf",
        "run",
        "0",
        "--job",
        "sha256",
        "--size",
        "1M",
        "--depth",
        "64",
        "--seconds",
        "1",
    ]);
    let (secs, drain) = (
        r["seconds"].as_f64().unwrap(),
        r["drain_seconds"].as_f64().unwrap(),
    );
    assert!(
        drain >= 0.0 && secs - drain >= 0.99 && secs - drain < 1.5,
        "{r}"
    );
    // Under a terminal (script(1) makes one): a bar with TERM=xterm, none with TERM=dumb.
    let under_tty = |term: &str| {
        let cmd = format!(
            "{} -d {} vf run 0 --job crc32c --size 64K --seconds 2.2",
            accelvirt_tests::bin("accelctl").display(),
            sim.sock.display()
        );
        let o = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("TERM", term)
            .output()
            .expect("script(1), from util-linux");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let drawn = under_tty("xterm");
    assert!(
        drawn.contains("GiB/s\r") || drawn.matches('\r').count() > 20,
        "{drawn:?}"
    );
    let plain = under_tty("dumb");
    assert!(
        plain.matches('\r').count() <= plain.matches('\n').count(),
        "no bar redrawn with carriage returns: {plain:?}"
    );
}
