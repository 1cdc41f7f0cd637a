//! Remote VFs between two hosts: the exporter in one network namespace, the importer in
//! another, a veth pair between them (made here, as root). The device model and the tenant
//! (`accelctl`, the job library) talk to them over their UNIX sockets, as on the two hosts.
//!
//! Packet loss and delay: with `sch_netem` in the kernel the link gets `netem loss delay`;
//! without it (this CI's kernel has no netem) a token bucket small enough to drop what
//! overflows it, which makes real TCP losses and queueing delay, and the test checks from the
//! qdisc's own counters that packets were in fact dropped.
use accelvirt_tests::remote::*;
use accelvirt_tests::{accelctl, bin, pattern, Sim};
use host_driver::vf::{Addr, Job, VfDev};

use shared_abi::jobs::{self, xlat, JobOp, JobStatus};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn vf_jobs(sim: &Sim, v: usize) -> u64 {
    sim.ctl_json(&["stats"])["vfs"][v]["jobs"].as_u64().unwrap()
}

fn run_json(sock: &Path, args: &[&str]) -> (Output, serde_json::Value) {
    let mut a = vec!["run", "--json"];
    a.extend_from_slice(args);
    let o = accelctl(sock, &a);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (o, v)
}

fn ok(o: &Output) -> bool {
    o.status.success()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const ROOT: u64 = 0x10_0000;
const DATA: u64 = 0x40_0000;
const PAGES: u32 = 16;

/// Device-memory jobs through two-stage translation on the VF behind `sock`: a stage-1 table
/// written through BAR2, the XLAT registers, host→device, device→device, device→host, CRC
/// and SHA-256 of device memory. What each job gave, and the bytes that came back.
fn device_memory_jobs(sock: &Path) -> (Vec<(JobStatus, u64)>, Vec<u8>) {
    let mut dev = VfDev::open(sock, 2 << 20).unwrap();
    let mut q = dev.queue(0, 8).unwrap();
    let e: Vec<u8> = (0..PAGES)
        .flat_map(|i| xlat::entry(DATA + (PAGES - 1 - i) as u64 * 4096, true).to_le_bytes())
        .collect();
    dev.write_device(ROOT, &e).unwrap();
    dev.set_translation(ROOT, PAGES).unwrap();
    let len = PAGES as usize * 4096;
    let data = pattern(len, 77);
    let (h1, h2, h3) = (
        dev.alloc(len, 4096).unwrap(),
        dev.alloc(len, 4096).unwrap(),
        dev.alloc(4096, 4096).unwrap(),
    );
    dev.write(h1, 0, &data).unwrap();
    let job = |op, src, dst, len: usize| Job {
        op,
        src,
        dst,
        len: len as u32,
        value: 0,
    };
    let mut out = Vec::new();
    for j in [
        job(
            JobOp::Copy,
            Some(h1.into()),
            Some(Addr::Device(100)),
            len - 100,
        ),
        job(JobOp::Crc32c, Some(Addr::Device(100)), None, len - 100),
        job(
            JobOp::Copy,
            Some(Addr::Device(0)),
            Some(Addr::Device(5000)),
            20_000,
        ),
        job(
            JobOp::Sha256,
            Some(Addr::Device(5000)),
            Some(h3.into()),
            20_000,
        ),
        job(JobOp::Copy, Some(Addr::Device(0)), Some(h2.into()), len),
        // Past the table: stage 1 misses, only this job fails.
        job(
            JobOp::Crc32c,
            Some(Addr::Device(PAGES as u64 * 4096)),
            None,
            16,
        ),
    ] {
        let tag = dev.submit(&mut q, &j).unwrap();
        let c = dev.wait(&mut q, T).unwrap();
        assert_eq!(c.tag, tag);
        out.push((c.status, c.result));
    }
    let mut back = vec![0u8; len + 32];
    dev.read(h2, 0, &mut back[..len]).unwrap();
    dev.read(h3, 0, &mut back[len..]).unwrap();
    // The device memory itself, through BAR2.
    let mut page = vec![0u8; 4096];
    dev.read_device(DATA + (PAGES - 1) as u64 * 4096, &mut page)
        .unwrap();
    back.extend_from_slice(&page);
    (out, back)
}

#[test]
fn every_job_type_through_a_remote_vf_gives_what_a_local_vf_gives() {
    let sim = device(2);
    let net = Net::new(1);
    let _x = exporter(&net, &sim, &[0], &["client=0"], &[]);
    let (_i, sock) = imported(&net, &sim, 0, &[]);
    let before = vf_jobs(&sim, 0);
    let mut ran = 0;
    for job in ["copy", "fill", "crc32c", "sha256"] {
        for size in ["4K", "256K"] {
            let (o, v) = run_json(&sock, &["--job", job, "--size", size, "--seconds", "0.3"]);
            assert!(ok(&o), "{job} {size}: {}", err(&o));
            ran += v["jobs"].as_u64().unwrap();
        }
    }
    // Jobs past one frame: their data streams in chunks both ways.
    for job in ["copy", "sha256", "crc32c"] {
        let (o, v) = run_json(
            &sock,
            &[
                "--job",
                job,
                "--size",
                "16M",
                "--seconds",
                "0.2",
                "--depth",
                "2",
            ],
        );
        assert!(ok(&o), "{job} 16M: {}", err(&o));
        ran += v["jobs"].as_u64().unwrap();
    }
    // Counted on host A's real VF: every job ran there, once.
    assert_eq!(vf_jobs(&sim, 0) - before, ran);
    // Device-memory jobs give the same on the remote VF 0 as on the local VF 1.
    let (remote, rbytes) = device_memory_jobs(&sock);
    let (local, lbytes) = device_memory_jobs(&vf_socket(&sim, 1));
    assert_eq!(remote, local);
    assert!(rbytes == lbytes, "the bytes that came back differ");
    let data = pattern(PAGES as usize * 4096, 77);
    assert_eq!(
        remote[1],
        (
            JobStatus::Ok,
            jobs::crc32c(0, &data[..data.len() - 100]) as u64
        )
    );
    assert_eq!(remote[5].0, JobStatus::Stage1Fault);
    // The imported VF is listed with its origin, link and counters (its importer refreshes
    // them four times a second).
    let dir = sock.parent().unwrap().to_str().unwrap().to_string();
    let t = Instant::now();
    loop {
        let o = accelctl(&sock, &["imported", "--runtime-dir", &dir, "--json"]);
        assert!(ok(&o), "{}", err(&o));
        let l: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let me = l
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["socket"] == sock.to_str().unwrap())
            .expect("listed")
            .clone();
        assert_eq!(me["exporter"], net.addr());
        assert_eq!(me["link"], "up");
        if me["jobs"].as_u64().unwrap() >= ran {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{me} ran {ran}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_link_cut_mid_traffic_loses_no_job_and_runs_none_twice() {
    let sim = device(1);
    let net = Net::new(2);
    let _x = exporter(&net, &sim, &[0], &["client=0"], &[]);
    let (imp, sock) = imported(&net, &sim, 0, &["--timeout", "1"]);
    let before = vf_jobs(&sim, 0);
    let s = sock.clone();
    let run = std::thread::spawn(move || {
        run_json(
            &s,
            &[
                "--job",
                "copy",
                "--size",
                "16K",
                "--seconds",
                "5",
                "--depth",
                "16",
            ],
        )
    });
    std::thread::sleep(Duration::from_millis(1200));
    net.link(false);
    std::thread::sleep(Duration::from_millis(2000));
    net.link(true);
    let (o, v) = run.join().unwrap();
    assert!(ok(&o), "{}\nimporter: {}", err(&o), imp.log());
    let done = v["jobs"].as_u64().unwrap();
    assert!(done > 0);
    // Every job the tenant saw complete (each checked against the host's copy) ran on the
    // real VF exactly once: none lost, none run twice.
    assert_eq!(vf_jobs(&sim, 0) - before, done, "importer: {}", imp.log());
    assert!(
        imp.log().contains("link to") && imp.log().contains("back"),
        "{}",
        imp.log()
    );
}

#[test]
fn a_link_down_for_good_fails_jobs_clearly_and_the_vf_says_why() {
    let sim = device(1);
    let net = Net::new(3);
    let _x = exporter(&net, &sim, &[0], &["client=0"], &[]);
    let (imp, sock) = imported(&net, &sim, 0, &["--timeout", "1", "--link-limit", "2"]);
    let (o, _) = run_json(&sock, &["--seconds", "0.2", "--size", "4K"]);
    assert!(ok(&o), "{}", err(&o));
    net.link(false);
    let t = Instant::now();
    let (o, _) = run_json(&sock, &["--seconds", "0.5", "--size", "4K"]);
    assert!(!ok(&o), "jobs ran with the link down");
    assert!(
        err(&o).contains("LinkDown") || err(&o).contains("link"),
        "{}",
        err(&o)
    );
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "the error took {:?}",
        t.elapsed()
    );
    let dev = VfDev::open(&sock, 1 << 20).unwrap();
    let (count, code) = dev.faults().unwrap();
    assert!(count >= 1);
    assert_eq!(code, shared_abi::resources::VfFault::LinkDown as u32);
    drop(dev);
    // Back: a new session, and jobs run again.
    net.link(true);
    let t = Instant::now();
    loop {
        let (o, _) = run_json(&sock, &["--seconds", "0.2", "--size", "4K"]);
        if ok(&o) {
            break;
        }
        assert!(
            t.elapsed() < T,
            "jobs never ran again: {}\n{}",
            err(&o),
            imp.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether this kernel has netem.
fn have_netem(ns: &str, dev: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "netem", "loss", "2%",
            "delay", "5ms",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn qdisc_drops(ns: &str, dev: &str) -> u64 {
    let o = Command::new("ip")
        .args(["netns", "exec", ns, "tc", "-s", "qdisc", "show", "dev", dev])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&o.stdout);
    s.split("dropped ")
        .skip(1)
        .filter_map(|t| {
            t.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

#[test]
fn loss_and_delay_on_the_link_leave_every_result_correct() {
    let sim = device(1);
    let net = Net::new(4);
    let _x = exporter(&net, &sim, &[0], &["client=0"], &[]);
    let (imp, sock) = imported(&net, &sim, 0, &[]);
    let mut netem = true;
    for (ns, dev) in [(net.a.clone(), net.dev_a()), (net.b.clone(), net.dev_b())] {
        if !have_netem(&ns, &dev) {
            netem = false;
            // A bucket of 8 KiB at 40 Mbit/s: bursts past it are dropped (tail drop), and
            // what waits in it is delayed.
            let o = Command::new("ip")
                .args([
                    "netns", "exec", &ns, "tc", "qdisc", "add", "dev", &dev, "root", "tbf", "rate",
                    "40mbit", "burst", "8kb", "limit", "12kb",
                ])
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "tc: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    let before = vf_jobs(&sim, 0);
    let mut ran = 0;
    for job in ["copy", "crc32c", "sha256", "fill"] {
        let (o, v) = run_json(&sock, &["--job", job, "--size", "64K", "--seconds", "0.7"]);
        assert!(ok(&o), "{job}: {}\n{}", err(&o), imp.log());
        ran += v["jobs"].as_u64().unwrap();
    }
    assert_eq!(vf_jobs(&sim, 0) - before, ran);
    if !netem {
        let drops = qdisc_drops(&net.a, &net.dev_a()) + qdisc_drops(&net.b, &net.dev_b());
        assert!(
            drops > 0,
            "the shaped link dropped nothing: the test tested nothing"
        );
    }
}

#[test]
fn importers_get_only_their_vfs_one_at_a_time_and_a_bad_one_is_cut_off() {
    let sim = device(2);
    let net = Net::new(5);
    let _x = exporter(&net, &sim, &[0, 1], &["client=0", "other=0,1"], &[]);
    let (_i, sock) = imported(&net, &sim, 0, &[]);
    let dir = sim.dir.path();
    // VF 0 is taken: another importer allowed it too is refused, and says why.
    let mut p = importer(&net, certs(), "other", 0, &dir.join("o0.sock"), &[]);
    assert!(p.exit(T).is_some_and(|s| !s.success()));
    assert!(p.log().contains("another importer"), "{}", p.log());
    // VF 1 is not client's.
    let mut p = importer(&net, certs(), "client", 1, &dir.join("c1.sock"), &[]);
    assert!(p.exit(T).is_some_and(|s| !s.success()));
    assert!(p.log().contains("may not import VF 1"), "{}", p.log());
    // No such VF.
    let mut p = importer(&net, certs(), "other", 7, &dir.join("o7.sock"), &[]);
    assert!(p.exit(T).is_some_and(|s| !s.success()));
    assert!(p.log().contains("not exported"), "{}", p.log());
    // Another CA's importer gets no TLS link.
    let mut p = importer(
        &net,
        &certs().join("stranger"),
        "client",
        0,
        &dir.join("s.sock"),
        &[],
    );
    assert!(p.exit(T).is_some_and(|s| !s.success()));
    assert!(
        p.log().contains("TLS") || p.log().contains("certificate"),
        "{}",
        p.log()
    );
    // Garbage (not TLS at all), then an admitted importer's oversized frame: each is cut off.
    // The exporter ends the link (the read below returns) rather than wait on it.
    let garbage = Command::new("ip")
        .args(["netns", "exec", &net.b, "timeout", "10", "bash", "-c"])
        .arg(
            "exec 3<>/dev/tcp/10.77.5.1/7700; head -c 100000 /dev/urandom >&3; \
             cat <&3 >/dev/null",
        )
        .output()
        .unwrap();
    assert_ne!(
        garbage.status.code(),
        Some(124),
        "the exporter kept a garbage link"
    );
    oversized_frame(&net);
    // The admitted importer still works.
    let (o, _) = run_json(&sock, &["--seconds", "0.3", "--size", "4K"]);
    assert!(ok(&o), "{}", err(&o));
}

/// From namespace b, as `other` (allowed VF 1): a HELLO, then a frame header that claims a
/// gigabyte. The exporter must close the link without reading it.
fn oversized_frame(net: &Net) {
    let helper = bin("accel-remote-probe");
    let c = certs();
    let o = net
        .exec(&net.b, &helper)
        .arg(net.addr())
        .arg(c.join("other.crt"))
        .arg(c.join("other.key"))
        .arg(c.join("ca.crt"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("cut off"), "{out}");
    let _ = std::io::stdout().flush();
}

/// The exporter restarts under traffic. Stopped (SIGTERM, as a service manager restarts it),
/// it lets what runs finish and delivers those completions first: the importer resubmits only
/// jobs that never ran, so none is lost and none runs twice. Killed (SIGKILL), none is lost;
/// a job that had finished on the device but whose completion was lost with the process runs
/// again (docs/remote.md says which jobs that can matter for).
#[test]
fn an_exporter_restart_loses_no_job() {
    let sim = device(1);
    let net = Net::new(6);
    let (imp, sock) = {
        let _x = exporter(&net, &sim, &[0], &["client=0"], &[]);
        imported(&net, &sim, 0, &["--timeout", "1"])
    };
    for (sig, exact) in [
        (nix::sys::signal::Signal::SIGTERM, true),
        (nix::sys::signal::Signal::SIGKILL, false),
    ] {
        let mut x = exporter(&net, &sim, &[0], &["client=0"], &[]);
        // The importer finds the exporter again (it was down since the last round).
        let t = Instant::now();
        while !ok(&run_json(&sock, &["--seconds", "0.1", "--size", "4K"]).0) {
            assert!(t.elapsed() < T, "no link: {}", imp.log());
        }
        let before = vf_jobs(&sim, 0);
        let s = sock.clone();
        let run = std::thread::spawn(move || {
            run_json(
                &s,
                &[
                    "--job",
                    "copy",
                    "--size",
                    "64K",
                    "--seconds",
                    "4",
                    "--depth",
                    "16",
                ],
            )
        });
        std::thread::sleep(Duration::from_millis(1000));
        x.signal(sig);
        assert!(x.exit(T).is_some(), "the exporter did not stop");
        drop(x);
        let _y = exporter(&net, &sim, &[0], &["client=0"], &[]);
        let (o, v) = run.join().unwrap();
        assert!(ok(&o), "{sig}: {}\nimporter: {}", err(&o), imp.log());
        let done = v["jobs"].as_u64().unwrap();
        let ran = vf_jobs(&sim, 0) - before;
        if exact {
            assert_eq!(ran, done, "{sig}: importer: {}", imp.log());
        } else {
            assert!(ran >= done, "{sig}: {ran} ran, {done} done");
        }
        assert!(
            imp.log().contains("starting a new session"),
            "{}",
            imp.log()
        );
    }
}

/// Function level reset through the imported VF resets the real one: its memory is cleared
/// (device memory written before reads back as zero), the reset is counted on host A, and
/// jobs run afterwards.
#[test]
fn an_flr_of_the_imported_vf_resets_the_real_vf() {
    let sim = device(1);
    let net = Net::new(7);
    let _x = exporter(&net, &sim, &[0], &["client=0"], &[]);
    let (imp, sock) = imported(&net, &sim, 0, &[]);
    let dev = VfDev::open(&sock, 1 << 20).unwrap();
    dev.write_device(0x2000, &[0x5A; 64]).unwrap();
    let mut back = [0u8; 64];
    dev.read_device(0x2000, &mut back).unwrap();
    assert_eq!(back, [0x5A; 64]);
    let flrs = sim.ctl_json(&["stats"])["flrs"].as_u64().unwrap();
    dev.flr().unwrap();
    assert_eq!(sim.ctl_json(&["stats"])["flrs"].as_u64().unwrap(), flrs + 1);
    let dev = VfDev::open(&sock, 1 << 20).unwrap();
    // As after any FLR (Linux waits 100 ms before touching the function), reads may be all
    // ones while the real VF finishes its reset across the link; then they are zeros.
    let t = std::time::Instant::now();
    loop {
        dev.read_device(0x2000, &mut back).unwrap();
        if back != [0xFF; 64] || t.elapsed() > Duration::from_secs(2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(back, [0; 64], "the real VF's memory was cleared");
    drop(dev);
    let (o, _) = run_json(&sock, &["--seconds", "0.2", "--size", "4K"]);
    assert!(ok(&o), "{}\n{}", err(&o), imp.log());
}

/// The exporter serves a VF by acceld's id (`--vf acceld:ID`): acceld owns the device, and is
/// asked where the VF is when the session opens it.
#[test]
fn a_vf_acceld_owns_is_exported_by_its_id() {
    let sim = Sim::start();
    let d = accelvirt_tests::Acceld::start(&sim, &[]);
    let o = d.ctl(&["create-vf", "--count", "2"]);
    assert!(ok(&o), "{}", err(&o));
    let net = Net::new(8);
    let acceld = d.sock.to_str().unwrap().to_string();
    let _x = exporter(
        &net,
        &sim,
        &[],
        &["client=0"],
        &["--vf", "acceld:1", "--acceld", &acceld],
    );
    let (_i, sock) = imported(&net, &sim, 0, &[]);
    let (o, v) = run_json(&sock, &["--seconds", "0.3", "--size", "4K"]);
    assert!(ok(&o), "{}", err(&o));
    let stats = sim.ctl_json(&["stats"]);
    assert_eq!(
        stats["vfs"][1]["jobs"].as_u64(),
        v["jobs"].as_u64(),
        "{stats}"
    );
    assert_eq!(stats["vfs"][0]["jobs"], 0);
}
