//! acceld end to end, against real `accel-sim` and `acceld` processes and accelctl run the
//! way users run it: many clients at once, the device model and its firmware core killed or
//! hung, the daemon killed under a working tenant, a firmware update with VFs, events, access
//! control, metrics and the signals.
use accelvirt_tests::{layout, pattern, Acceld, Sim};
use host_driver::vf::{Job, VfDev};
use serde_json::Value;
use shared_abi::jobs::{self, JobOp};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the daemon may take to put a layout back once the device is reachable again
/// (README, "acceld"): a restart of the device model or a firmware fault is noticed within a
/// supervisor tick (100 ms), a hang once the heartbeat has stood still for the command
/// timeout and a second more (6 s by default); the restore itself takes milliseconds.
const RESTORE_BOUND: Duration = Duration::from_secs(5);
const HANG_BOUND: Duration = Duration::from_secs(12);

/// Waits until `f` holds (polling), or fails with `what` and the daemon's log.
fn until(d: &Acceld, bound: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < bound,
            "{what} within {bound:?}; acceld:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    t.elapsed()
}

/// The layout through the daemon, or `None` while it cannot answer.
fn vf_layout(d: &Acceld) -> Option<Vec<Value>> {
    let o = d.ctl(&["vf", "list", "--json"]);
    if !o.status.success() {
        return None;
    }
    Some(layout(&serde_json::from_slice(&o.stdout).ok()?))
}

/// Three VFs of different sizes and weights (a resize and a QoS change after the create):
/// a layout no equal split would make again by chance.
fn three_vfs(d: &Acceld) -> Vec<Value> {
    d.ctl_json(&[
        "create-vf",
        "--count",
        "3",
        "--engines",
        "2",
        "--memory",
        "256M",
        "--queues",
        "4",
    ]);
    d.ctl_json(&["vf", "resize", "2", "--queues", "8", "--memory", "512M"]);
    d.ctl_json(&["vf", "qos", "1", "--weight", "700"]);
    let l = vf_layout(d).expect("vf list");
    assert_eq!(l.len(), 3);
    l
}

#[test]
fn a_device_model_killed_and_restarted_gets_its_layout_back() {
    let mut sim = Sim::start();
    let d = Acceld::start(&sim, &[]);
    let want = three_vfs(&d);
    let t = Instant::now();
    sim.kill_and_restart();
    until(
        &d,
        RESTORE_BOUND,
        "the layout restored after the device model restart",
        || vf_layout(&d).as_ref() == Some(&want),
    );
    eprintln!("restored {:?} after the restart", t.elapsed());
    // With the same VF sockets, which a tenant can open again.
    for vf in 0..3 {
        let s = sim.dir.path().join(format!("accel0-vf{vf}.sock"));
        VfDev::open(&s, 1 << 20).unwrap_or_else(|e| panic!("VF {vf}'s socket: {e}"));
    }
    // The device itself agrees (not only the daemon's books).
    let direct = layout(&sim.ctl_json(&["--direct", "vf", "list"]));
    assert_eq!(direct, want);
    assert!(d.log().contains("restored 3 VFs"), "{}", d.log());
}

#[test]
fn a_killed_or_hung_firmware_core_is_reset_and_the_layout_restored() {
    use nix::sys::signal::{kill, Signal};
    let sim = Sim::start();
    let d = Acceld::start(&sim, &[]);
    let want = three_vfs(&d);
    let restores = |d: &Acceld| d.log().matches("restored 3 VFs").count();
    // Killed: the device halts (a watchdog fault); the daemon resets it and restores.
    let core = sim.core_pid();
    kill(core, Signal::SIGKILL).unwrap();
    let took = until(
        &d,
        RESTORE_BOUND,
        "a restore after the core was killed",
        || restores(&d) == 1,
    );
    assert_eq!(vf_layout(&d).as_ref(), Some(&want));
    eprintln!("killed core: restored within {took:?}");
    // Hung: the heartbeat stops; past the threshold the daemon resets and restores.
    let core = sim.core_pid();
    assert_ne!(core, nix::unistd::Pid::from_raw(0));
    kill(core, Signal::SIGSTOP).unwrap();
    let took = until(&d, HANG_BOUND, "a restore after the core hung", || {
        restores(&d) == 2
    });
    assert_eq!(vf_layout(&d).as_ref(), Some(&want));
    eprintln!("hung core: restored within {took:?}");
    let log = d.log();
    assert!(log.contains("heartbeat_lost"), "{log}");
    assert!(log.contains("watchdog"), "{log}");
    // Health says it came back, and how often the daemon restored.
    let h = d.ctl_json(&["health"]);
    assert_eq!(h["firmware"], "ready", "{h}");
    assert_eq!(h["restores"], 2, "{h}");
}

#[test]
fn a_daemon_killed_under_a_working_tenant_never_stops_its_jobs() {
    let sim = Sim::start();
    let mut d = Acceld::start(&sim, &[]);
    d.ctl_json(&[
        "create-vf",
        "--count",
        "2",
        "--engines",
        "1",
        "--memory",
        "64M",
        "--queues",
        "2",
    ]);
    let before = d.ctl_json(&["vf", "show", "0"]);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let worst_gap = Arc::new(AtomicU64::new(0));
    let vf0 = sim.dir.path().join("accel0-vf0.sock");
    let tenant = {
        let (stop, done, worst_gap) = (stop.clone(), done.clone(), worst_gap.clone());
        std::thread::spawn(move || {
            let mut dev = VfDev::open(&vf0, 1 << 20).unwrap();
            let mut q = dev.queue(0, 8).unwrap();
            let buf = dev.alloc(4096, 4096).unwrap();
            let data = pattern(4096, 5);
            dev.write(buf, 0, &data).unwrap();
            let want = jobs::crc32c(0, &data) as u64;
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                dev.submit(
                    &mut q,
                    &Job {
                        op: JobOp::Crc32c,
                        src: Some(buf.into()),
                        dst: None,
                        len: 4096,
                        value: 0,
                    },
                )
                .unwrap();
                let c = dev.wait(&mut q, Duration::from_secs(5)).unwrap();
                assert_eq!(c.result, want);
                worst_gap.fetch_max(last.elapsed().as_micros() as u64, Ordering::Relaxed);
                last = Instant::now();
                done.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    until(&d, Duration::from_secs(5), "the tenant running", || {
        done.load(Ordering::Relaxed) > 100
    });
    for _ in 0..3 {
        let n = done.load(Ordering::Relaxed);
        d.kill_and_restart();
        until(
            &d,
            Duration::from_secs(5),
            "jobs completing after the restart",
            || done.load(Ordering::Relaxed) > n + 100,
        );
    }
    stop.store(true, Ordering::Relaxed);
    tenant
        .join()
        .expect("the tenant's jobs all completed, correctly");
    let after = d.ctl_json(&["vf", "show", "0"]);
    for k in ["flr_count", "engines", "memory_bytes", "queues", "state"] {
        assert_eq!(before[k], after[k], "{k} moved across daemon restarts");
    }
    let gap = Duration::from_micros(worst_gap.load(Ordering::Relaxed));
    assert!(
        gap < Duration::from_secs(2),
        "the tenant stalled for {gap:?}"
    );
    // The restarted daemons adopted the device: nothing was restored or reset.
    let log = d.log();
    assert!(!log.contains("restored"), "{log}");
    assert!(!log.contains("resetting"), "{log}");
}

#[test]
fn a_hundred_clients_at_once_leave_one_consistent_layout() {
    let sim = Sim::start();
    let d = Acceld::start(&sim, &[]);
    d.ctl_json(&[
        "create-vf",
        "--count",
        "4",
        "--engines",
        "1",
        "--memory",
        "64M",
        "--queues",
        "2",
    ]);
    let ops: Vec<Vec<String>> = (0..100)
        .map(|i| {
            let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
            let vf = (i % 12).to_string();
            match i % 7 {
                0 => s(&["info", "--json"]),
                1 => s(&["vf", "list", "--json"]),
                2 => s(&["stats", "--json"]),
                3 => s(&[
                    "create-vf",
                    "--count",
                    "1",
                    "--engines",
                    "1",
                    "--memory",
                    "64M",
                    "--queues",
                    "2",
                    "--json",
                ]),
                4 => s(&["destroy-vf", &vf, "--json"]),
                5 => s(&["vf", "resize", &vf, "--queues", "3", "--json"]),
                _ => s(&["vf", "qos", &vf, "--weight", "250", "--json"]),
            }
        })
        .collect();
    let children: Vec<_> = ops
        .iter()
        .map(|a| {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            d.ctl_cmd(&a)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let (mut made, mut destroyed) = (0i64, 0i64);
    for (a, c) in ops.iter().zip(children) {
        let o = c.wait_with_output().unwrap();
        let code = o.status.code().unwrap_or(-1);
        let err = String::from_utf8_lossy(&o.stderr);
        // Success, a refusal by the firmware (no room), no such VF, or busy: never a broken
        // connection, a protocol error or a crash.
        assert!(
            [0, 1, 3, 4].contains(&code),
            "accelctl {a:?} exited {code}: {err}"
        );
        if code == 0 {
            let j: Value = serde_json::from_slice(&o.stdout)
                .unwrap_or_else(|e| panic!("{a:?} printed no JSON ({e})"));
            match a[0].as_str() {
                "create-vf" => made += j["created"].as_array().map_or(0, |v| v.len()) as i64,
                "destroy-vf" => destroyed += j["destroyed"].as_i64().unwrap(),
                _ => {}
            }
        }
    }
    // Every VF made is there or was destroyed; none was made twice or lost.
    let through = vf_layout(&d).unwrap();
    assert_eq!(through.len() as i64, 4 + made - destroyed);
    let mut ids: Vec<u64> = through.iter().map(|v| v["vf"].as_u64().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), through.len());
    // The device, the daemon and the desired state agree.
    let direct = layout(&sim.ctl_json(&["--direct", "vf", "list"]));
    assert_eq!(direct, through);
    let state: Value = serde_json::from_slice(
        &std::fs::read(
            std::fs::read_dir(&d.state_dir)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "json"))
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let kept: Vec<u64> = state["vfs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["vf"].as_u64().unwrap())
        .collect();
    assert_eq!(kept, ids);
    let h = d.ctl_json(&["health"]);
    assert_eq!(h["drift"], false, "{h}");
}

#[test]
fn through_the_daemon_output_and_exit_codes_are_the_direct_ones() {
    let sim = Sim::start();
    let d = Acceld::start(&sim, &[]);
    d.ctl_json(&["create-vf", "--count", "2"]);
    for args in [
        &["vf", "list", "--json"][..],
        &["vf", "show", "1", "--json"],
        &["vf", "list"],
        &["vf", "show", "0"],
    ] {
        let via = d.ctl(args);
        let mut direct = vec!["--direct"];
        direct.extend_from_slice(args);
        let dir = d.ctl(&direct);
        assert!(via.status.success() && dir.status.success(), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&via.stdout),
            String::from_utf8_lossy(&dir.stdout),
            "{args:?}"
        );
    }
    for (args, code) in [
        (&["vf", "show", "63"][..], 3),
        (&["vf", "resize", "0", "--queues", "4000"], 1),
        (&["create-vf", "--count", "0"], 2),
        (&["vf", "qos", "0", "--weight", "0"], 2),
        (&["destroy-vf", "9"], 3),
        (&["fw-reset"], 4),
    ] {
        let via = d.ctl(args);
        let mut direct = vec!["--direct"];
        direct.extend_from_slice(args);
        let dir = d.ctl(&direct);
        assert_eq!(
            via.status.code(),
            Some(code),
            "{args:?} through acceld: {}",
            String::from_utf8_lossy(&via.stderr)
        );
        assert_eq!(
            dir.status.code(),
            Some(code),
            "{args:?} direct: {}",
            String::from_utf8_lossy(&dir.stderr)
        );
    }
    // A daemon named but not answering is an error, not a silent switch to the device.
    let o = accelvirt_tests::accelctl(&sim.sock, &["info"]);
    assert!(o.status.success());
    let mut c = d.ctl_cmd(&["info"]);
    c.env("ACCELD_SOCKET", sim.dir.path().join("nothing.sock"));
    let o = c.output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn flash_activate_through_the_daemon_keeps_the_same_four_vfs() {
    let sim = Sim::start();
    let d = Acceld::start(&sim, &[]);
    d.ctl_json(&[
        "create-vf",
        "--count",
        "4",
        "--engines",
        "2",
        "--memory",
        "128M",
        "--queues",
        "4",
    ]);
    d.ctl_json(&["vf", "qos", "3", "--weight", "900"]);
    let want = vf_layout(&d).unwrap();
    let image = {
        static IMG: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
        IMG.get_or_init(|| {
            // The same build as the firmware-update tests' upgrade: cargo's cache serves both.
            let out = accelvirt_tests::image_target_dir().join("acceld-upgrade.img");
            accelvirt_tests::build_image(&out, &["--version", "0.2.0", "--min-rollback", "0.2.0"]);
            out
        })
    };
    let r = d.ctl_json(&["flash", image.to_str().unwrap(), "--activate"]);
    assert_eq!(r["running"]["version"], "0.2.0", "{r}");
    assert_eq!(vf_layout(&d).as_ref(), Some(&want));
    let info = d.ctl_json(&["info"]);
    assert_eq!(info["firmware"], "0.2.0");
    // The VFs are reachable at their sockets again.
    for vf in 0..4 {
        VfDev::open(&sim.dir.path().join(format!("accel0-vf{vf}.sock")), 1 << 20).unwrap();
    }
    // Directly the same command is refused while VFs exist (nothing would bring them back).
    let o = d.ctl(&["--direct", "flash", image.to_str().unwrap(), "--activate"]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn firmware_events_reach_accelctl_events() {
    let sim = Sim::start();
    let d = Acceld::start(&sim, &[]);
    d.ctl_json(&["create-vf", "--count", "2"]);
    let mut follow = d
        .ctl_cmd(&["events", "--follow", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(follow.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for l in lines.lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&l) {
                let _ = tx.send(v);
            }
        }
    });
    // A function level reset of VF 1, and a refused access by VF 0's tenant (a queue it does
    // not own).
    d.ctl_json(&["vf", "reset", "1"]);
    let vf0 =
        host_driver::vfio_user::VfioUser::connect(&sim.dir.path().join("accel0-vf0.sock"), false)
            .unwrap();
    let mut b = [0u8; 4];
    // Equal halves: VF 0 owns queues 0..128 of the 256 its window shows.
    let beyond = shared_abi::regs::vf::QUEUES.start() as u64
        + 200 * shared_abi::regs::QUEUE_REGS_SIZE as u64;
    let _ = vf0.region_read(0, beyond, &mut b);
    let mut seen = Vec::new();
    let t = Instant::now();
    while !(seen
        .iter()
        .any(|e: &Value| e["kind"] == "vf_flr_done" && e["vf"] == 1)
        && seen.iter().any(|e| e["kind"] == "vf_fault" && e["vf"] == 0))
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "events seen: {seen:#?}\nacceld:\n{}",
            d.log()
        );
        if let Ok(e) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.push(e);
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    // The kept events, listed; and the EVENTS capability is advertised.
    let o = d.ctl(&["events"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("vf 1 vf_flr_done"), "{text}");
    assert!(text.contains("vf 0 vf_fault"), "{text}");
    let info = d.ctl_json(&["info"]);
    assert!(
        info["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "events"),
        "{info}"
    );
    // Watchers that vanish (SIGKILL) while events flow to them cost the daemon nothing: its
    // writes to their closed sockets fail on those connections alone.
    let watchers: Vec<_> = (0..4)
        .map(|_| {
            d.ctl_cmd(&["events", "--follow"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for mut w in watchers {
        let _ = w.kill();
        let _ = w.wait();
    }
    for _ in 0..5 {
        d.ctl_json(&["vf", "reset", "1"]);
    }
    std::thread::sleep(Duration::from_millis(200));
    d.ctl_json(&["vf", "list"]);
}

/// Runs accelctl through the daemon as another user (setpriv), with these groups.
fn as_user(d: &Acceld, uid: u32, gid: u32, groups: &str, args: &[&str]) -> std::process::Output {
    let mut c = std::process::Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"));
    if groups.is_empty() {
        c.arg("--clear-groups");
    } else {
        c.arg(format!("--groups={groups}"));
    }
    c.arg(accelvirt_tests::bin("accelctl"))
        .args(args)
        .env("ACCELD_SOCKET", &d.sock)
        .stdin(Stdio::null())
        .output()
        .expect("setpriv")
}

#[test]
fn only_root_and_the_group_may_manage() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: running as other users needs root (CI runs as root)");
        return;
    }
    let sim = Sim::start();
    // The group: one that exists on every Debian system, with no member but those we make.
    let d = Acceld::start(&sim, &["--group", "nogroup"]);
    let gid = nix::unistd::Group::from_name("nogroup")
        .unwrap()
        .expect("group nogroup")
        .gid
        .as_raw();
    let dev = sim.sock.to_str().unwrap().to_string();
    // Someone else: refused, with its own exit code, and nothing done.
    let o = as_user(
        &d,
        4321,
        4321,
        "",
        &["-d", &dev, "create-vf", "--count", "1"],
    );
    assert_eq!(
        o.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("permission denied") && err.contains("nogroup"),
        "{err}"
    );
    let o = as_user(&d, 4321, 4321, "", &["-d", &dev, "vf", "list"]);
    assert_eq!(o.status.code(), Some(7));
    assert!(vf_layout(&d).unwrap().is_empty());
    // A member (supplementary group): allowed, and the change audited with its uid.
    let o = as_user(
        &d,
        4321,
        4321,
        &gid.to_string(),
        &["-d", &dev, "create-vf", "--count", "1"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Primary group: allowed.
    let o = as_user(&d, 4322, gid, "", &["-d", &dev, "vf", "list", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("uid 4321") && l.contains("create-vf --count 1: ok")),
        "{log}"
    );
}

#[test]
fn metrics_health_signals_and_systemd_readiness() {
    let sim = Sim::start();
    let notify_dir = tempfile::tempdir().unwrap();
    let notify = notify_dir.path().join("notify");
    let rx = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let d = Acceld::start_env(
        &sim,
        &["--metrics", &addr],
        &[("NOTIFY_SOCKET", notify.as_os_str())],
    );
    let mut b = [0u8; 64];
    let n = rx.recv(&mut b).unwrap();
    assert_eq!(&b[..n], b"READY=1");
    // SIGPIPE ignored: a client gone while the daemon writes to it is an error on that
    // connection, not the daemon's death (seen once in CI, a watcher exiting at SIGTERM).
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let ignored = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .unwrap();
    assert_ne!(
        ignored & (1 << (libc_sigpipe() - 1)),
        0,
        "SIGPIPE is not ignored"
    );
    d.ctl_json(&["create-vf", "--count", "2"]);
    // A tenant's jobs show in the VF's counters.
    let mut dev = VfDev::open(&sim.dir.path().join("accel0-vf1.sock"), 1 << 20).unwrap();
    let mut q = dev.queue(0, 4).unwrap();
    let buf = dev.alloc(4096, 4096).unwrap();
    for _ in 0..10 {
        dev.submit(
            &mut q,
            &Job {
                op: JobOp::Crc32c,
                src: Some(buf.into()),
                dst: None,
                len: 4096,
                value: 0,
            },
        )
        .unwrap();
        dev.wait(&mut q, Duration::from_secs(5)).unwrap();
    }
    let scrape = || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let dev_label = format!("device=\"{}\"", sim.sock.display());
    // The VF counters are the supervisor's last sample (every 5 s): a scrape costs the
    // device nothing.
    let jobs_line = format!("accelvirt_vf_jobs_total{{{dev_label},vf=\"1\"}} 10");
    until(
        &d,
        Duration::from_secs(12),
        "the jobs in the metrics",
        || scrape().contains(&jobs_line),
    );
    let m = scrape();
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    for (family, kind) in [
        ("accelvirt_vf_jobs_total", "counter"),
        ("accelvirt_vf_bytes_total", "counter"),
        ("accelvirt_vf_engine_seconds_total", "counter"),
        ("accelvirt_vf_faults_total", "counter"),
        ("accelvirt_vf_flrs_total", "counter"),
        ("accelvirt_device_up", "gauge"),
        ("accelvirt_device_heartbeat_ok", "gauge"),
        ("accelvirt_mailbox_latency_seconds", "histogram"),
    ] {
        assert!(
            m.contains(&format!("# TYPE {family} {kind}")),
            "{family}: {m}"
        );
    }
    assert!(
        m.contains(&format!(
            "accelvirt_vf_jobs_total{{{dev_label},vf=\"1\"}} 10"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!("accelvirt_device_up{{{dev_label}}} 1")),
        "{m}"
    );
    let count = m
        .lines()
        .find(|l| l.starts_with("accelvirt_mailbox_latency_seconds_count"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap();
    assert!(count > 0, "{m}");
    // Health: in order now; a state file edited to another layout, re-read on SIGHUP, is
    // drift (reported, exit 8, the device left alone).
    assert_eq!(d.ctl(&["health"]).status.code(), Some(0));
    let state = std::fs::read_dir(&d.state_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();
    let mut st: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    st["vfs"].as_array_mut().unwrap().pop();
    std::fs::write(&state, serde_json::to_vec(&st).unwrap()).unwrap();
    nix::sys::signal::kill(d.pid(), nix::sys::signal::Signal::SIGHUP).unwrap();
    let n = rx.recv(&mut b).unwrap();
    assert_eq!(&b[..n], b"RELOADING=1");
    let o = until(&d, Duration::from_secs(5), "drift reported", || {
        d.ctl(&["health"]).status.code() == Some(8)
    });
    let _ = o;
    let h = d.ctl(&["health", "--json"]);
    let h: Value = serde_json::from_slice(&h.stdout).unwrap();
    assert_eq!(h["drift"], true);
    assert!(h["drift_details"][0]
        .as_str()
        .unwrap()
        .contains("VF 1 exists and is not in the desired state"));
    assert_eq!(
        vf_layout(&d).unwrap().len(),
        2,
        "drift is reported, not acted on"
    );
    // SIGTERM: ends event streams, drains, says STOPPING, exits 0, removes its socket; the
    // VFs stay. A watcher does not hold the exit up.
    let mut d = d;
    let follower = d
        .ctl_cmd(&["events", "--follow"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let st = d.stop_with(nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(st.success(), "{st:?}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "a watcher held the stop up for {:?}",
        t.elapsed()
    );
    let fo = follower.wait_with_output().unwrap();
    assert_eq!(
        fo.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&fo.stderr)
    );
    let mut saw_stopping = false;
    while let Ok(n) = rx.recv(&mut b) {
        if &b[..n] == b"STOPPING=1" {
            saw_stopping = true;
            break;
        }
    }
    assert!(saw_stopping);
    assert!(!d.sock.exists());
    assert_eq!(layout(&sim.ctl_json(&["vf", "list"])).len(), 2);
}

#[test]
fn the_systemd_unit_verifies() {
    // The unit as installed, with the binary where this build put it.
    let dir = tempfile::tempdir().unwrap();
    let unit =
        std::fs::read_to_string(accelvirt_tests::root().join("acceld/systemd/acceld.service"))
            .unwrap()
            .replace(
                "/usr/bin/acceld",
                accelvirt_tests::bin("acceld").to_str().unwrap(),
            );
    assert!(unit.contains("Type=notify"));
    let p = dir.path().join("acceld.service");
    std::fs::write(&p, unit).unwrap();
    let o = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&p)
        .output()
        .expect("systemd-analyze (systemd) is needed to check the unit");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && !err.contains("acceld.service"),
        "{err}"
    );
}

#[test]
fn a_device_emptied_on_purpose_is_reported_not_refilled() {
    let sim = Sim::start();
    let d = Acceld::start(&sim, &[]);
    d.ctl_json(&["create-vf", "--count", "2"]);
    // Someone empties the device behind the daemon's back (no reset: nothing was lost).
    let o = d.ctl(&["--direct", "destroy-vf", "--all"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The daemon's periodic look (every 5 s) reports it, and leaves the device as it is.
    until(&d, Duration::from_secs(12), "drift reported", || {
        d.ctl(&["health"]).status.code() == Some(8)
    });
    let h: Value = serde_json::from_slice(&d.ctl(&["health", "--json"]).stdout).unwrap();
    assert!(
        h["drift_details"][0]
            .as_str()
            .unwrap()
            .contains("VF 0 is missing"),
        "{h}"
    );
    assert_eq!(vf_layout(&d).unwrap().len(), 0, "not refilled");
    assert!(!d.log().contains("restored"), "{}", d.log());
}

#[test]
fn a_hung_device_holds_up_no_request_for_another() {
    let a = Sim::start();
    let b = Sim::start();
    let b_sock = b.sock.to_str().unwrap().to_string();
    let d = Acceld::start(&a, &["--device", &b_sock, "--on-fault", "report"]);
    // Both owned, both answering.
    let ctl_b = |args: &[&str]| {
        let mut c = std::process::Command::new(accelvirt_tests::bin("accelctl"));
        c.arg("-d")
            .arg(&b.sock)
            .args(args)
            .env("ACCELD_SOCKET", &d.sock)
            .stdin(Stdio::null());
        c.output().unwrap()
    };
    until(&d, Duration::from_secs(10), "device B online", || {
        ctl_b(&["info"]).status.success()
    });
    d.ctl_json(&["create-vf", "--count", "1"]);
    // Device A freezes (its model and firmware stopped): requests to it hang until their
    // timeout; meanwhile B's are served as fast as ever.
    a.freeze();
    let stuck: Vec<_> = (0..8)
        .map(|_| {
            d.ctl_cmd(&["vf", "list"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..10 {
        let t = Instant::now();
        let o = ctl_b(&["vf", "list", "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "B answered in {:?} while A hung",
            t.elapsed()
        );
        let o = ctl_b(&["create-vf", "--count", "1", "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let o = ctl_b(&["destroy-vf", "--all"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // A's requests were waiting on it all along.
    let mut stuck = stuck;
    assert!(
        stuck.iter_mut().all(|c| matches!(c.try_wait(), Ok(None))),
        "the requests to the frozen device were not waiting on it"
    );
    a.signal(nix::sys::signal::Signal::SIGCONT);
    for mut c in stuck {
        let _ = c.wait();
    }
}

/// SIGPIPE's number.
fn libc_sigpipe() -> u32 {
    nix::sys::signal::Signal::SIGPIPE as i32 as u32
}
