//! A remote VF against a local one, and both against the network's bare limits, all in one
//! run between the same two network namespaces (a veth pair): the exporter in one, the
//! importer in the other, the device model and the tenant (`accelctl run`) beside them.
//!
//! - bare limits (`netbench`): a 64-byte TCP ping-pong (median round trip) and a one-way TCP
//!   stream (GiB/s), each plain and over the same mutual TLS the link uses;
//! - per VF: 4 KiB COPY jobs/s at depth 32, 1 MiB COPY and CRC32C GiB/s at depth 8, and one
//!   4 KiB COPY's submit-to-completion latency at depth 1 (median).
//!
//! Needs root (namespaces) and release binaries: `cargo build --release --workspace --bins`
//! first (see BENCHMARKS.md).
use accelvirt_tests::remote::{device, exporter, imported, vf_socket, Net, Proc};
use accelvirt_tests::{accelctl, bin};
use std::path::Path;
use std::time::Duration;

/// `accelctl run` on `sock`: (jobs/s, GiB/s, p50 µs).
fn run(sock: &Path, job: &str, size: &str, depth: &str, secs: &str) -> (f64, f64, f64) {
    let o = accelctl(
        sock,
        &[
            "run",
            "--json",
            "--job",
            job,
            "--size",
            size,
            "--depth",
            depth,
            "--seconds",
            secs,
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    (
        v["jobs_per_s"].as_f64().unwrap(),
        v["gib_per_s"].as_f64().unwrap(),
        v["latency_us_p50"].as_f64().unwrap(),
    )
}

/// Submit to completion of one 4 KiB COPY at a time (host to host): the median of `n`, µs.
fn latency(sock: &Path, n: usize) -> f64 {
    use host_driver::vf::{Job, VfDev};
    let mut dev = VfDev::open(sock, 1 << 20).unwrap();
    let mut q = dev.queue(0, 2).unwrap();
    let (a, b) = (
        dev.alloc(4096, 4096).unwrap(),
        dev.alloc(4096, 4096).unwrap(),
    );
    dev.write(a, 0, &accelvirt_tests::pattern(4096, 3)).unwrap();
    let job = Job {
        op: shared_abi::jobs::JobOp::Copy,
        src: Some(a.into()),
        dst: Some(b.into()),
        len: 4096,
        value: 0,
    };
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = std::time::Instant::now();
            dev.submit(&mut q, &job).unwrap();
            let c = dev.wait(&mut q, Duration::from_secs(5)).unwrap();
            assert_eq!(c.status, shared_abi::jobs::JobStatus::Ok);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[n / 2]
}

fn netbench(net: &Net, ns: &str, args: &[&str]) -> f64 {
    let o = net.exec(ns, &bin("netbench")).args(args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let sim = device(2);
    let net = Net::new(11);
    let _x = exporter(&net, &sim, &[0], &["client=0"], &["--credits", "64"]);
    let (_i, remote) = imported(&net, &sim, 0, &[]);
    let local = vf_socket(&sim, 1);
    let c = accelvirt_tests::remote::certs();
    let s = |f: &str| c.join(f).to_str().unwrap().to_string();
    let server_tls = [
        "--tls",
        &s("server.crt"),
        &s("server.key"),
        &s("ca.crt"),
        "-",
    ];
    let client_tls = [
        "--tls",
        &s("client.crt"),
        &s("client.key"),
        &s("ca.crt"),
        "localhost",
    ];
    let host = format!("10.77.{}.1", net.n);
    let (plain, tls) = (format!("{host}:7701"), format!("{host}:7702"));
    let serve = |addr: &str, extra: &[&str]| {
        let mut cmd = net.exec(&net.a, &bin("netbench"));
        cmd.args(["serve", addr]).args(extra);
        let p = Proc::spawn(
            cmd,
            sim.dir
                .path()
                .join(format!("netbench-{}.log", addr.len() + extra.len())),
        );
        while !p.log().contains("listening") {
            std::thread::sleep(Duration::from_millis(10));
        }
        p
    };
    let _p = serve(&plain, &[]);
    let _t = serve(&tls, &server_tls);
    let with = |args: Vec<&str>, t: bool| {
        let mut a = args;
        if t {
            a.extend_from_slice(&client_tls);
        }
        netbench(&net, &net.b, &a)
    };
    let ping = with(vec!["pingpong", &plain, "5000"], false);
    let ping_tls = with(vec!["pingpong", &tls, "5000"], true);
    let stream = with(vec!["stream", &plain, "512"], false);
    let stream_tls = with(vec!["stream", &tls, "512"], true);

    // Warm both paths, then measure each the same way.
    run(&local, "copy", "4K", "32", "0.5");
    run(&remote, "copy", "4K", "32", "0.5");
    let mut rows = Vec::new();
    for (name, sock) in [("local VF", &local), ("remote VF", &remote)] {
        let small = run(sock, "copy", "4K", "32", "3");
        let copy = run(sock, "copy", "1M", "8", "3");
        let crc = run(sock, "crc32c", "1M", "8", "3");
        latency(sock, 200);
        let lat = latency(sock, 3000);
        rows.push((name, small.0, copy.1, crc.1, lat));
    }
    println!("bare limits between the namespaces (one run):");
    println!("  TCP ping-pong, 64 B    plain {ping:>8.1} µs   TLS {ping_tls:>8.1} µs (median)");
    println!("  TCP stream, one way    plain {stream:>8.3} GiB/s TLS {stream_tls:>8.3} GiB/s");
    println!();
    println!(
        "{:<10} {:>12} {:>14} {:>16} {:>14}",
        "VF", "4K jobs/s", "1M COPY GiB/s", "1M CRC32C GiB/s", "4K latency µs"
    );
    for (name, small, copy, crc, lat) in &rows {
        println!("{name:<10} {small:>12.0} {copy:>14.3} {crc:>16.3} {lat:>14.1}");
    }
    let (_, small, copy, crc, lat) = rows[1];
    let (_, lsmall, lcopy, lcrc, llat) = rows[0];
    println!();
    println!(
        "remote ÷ local: 4K jobs/s {:.2}×, 1M COPY {:.2}×, 1M CRC32C {:.2}×, latency {:.2}×",
        small / lsmall,
        copy / lcopy,
        crc / lcrc,
        lat / llat
    );
    println!(
        "remote latency ÷ ping-pong: {:.2}× plain, {:.2}× TLS (goal ≤ 2×)",
        lat / ping,
        lat / ping_tls
    );
    println!(
        "remote 1M CRC32C ÷ stream: {:.2}× plain, {:.2}× TLS (goal ≥ 0.8×); 1M COPY (its data crosses both ways) {:.2}× plain, {:.2}× TLS",
        crc / stream,
        crc / stream_tls,
        copy / stream,
        copy / stream_tls
    );
}
