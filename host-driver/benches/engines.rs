//! The queue engine's workers and its scheduler, each against its bare limit in the same run:
//!
//! - two VFs on engines of their own with one engine worker, then with two: throughput scales
//!   with the workers (the bare limit is twice one worker's figure);
//! - four VFs sharing every engine under saturation, weights 1:1:1:1 and then 1:2:4:8: each
//!   VF's share of engine time against its share of the weights.
//!
//! Every client keeps its queues deep and sleeps between looks, so the clients take almost no
//! CPU: what a VF gets is what the device gives it.
use host_driver::vf::{Job, VfDev};
use host_driver::{Accel, CreateSpec};
use shared_abi::jobs::{JobOp, JobStatus};
use shared_abi::resources::VfSpec;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const JOB: usize = 256 << 10;

/// A device with `vfs` VFs of `spec` and `threads` engine workers.
fn device(
    vfs: u16,
    spec: VfSpec,
    threads: usize,
) -> (sim::inprocess::InProcess, tokio::runtime::Runtime, Accel) {
    let d = sim::inprocess::InProcess::start_with(64, threads).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let acc = Accel::open(&host_driver::DeviceAddr::Socket(d.sock.clone())).unwrap();
    rt.block_on(acc.create_vfs(vfs, CreateSpec::Uniform(spec)))
        .unwrap();
    while (0..vfs).any(|v| !d.vf_socket(v).exists()) {
        std::thread::sleep(Duration::from_millis(5));
    }
    (d, rt, acc)
}

/// Keeps `queues` queues of VF `v` 256 deep in CRC32C jobs until `stop` (more than the
/// engines run between two of its looks); returns bytes done.
fn load(
    d: &sim::inprocess::InProcess,
    v: u16,
    queues: u32,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    let sock = d.vf_socket(v);
    std::thread::spawn(move || {
        let mut dev = VfDev::open(&sock, 2 << 20).unwrap();
        let mut qs: Vec<_> = (0..queues).map(|i| dev.queue(i, 256).unwrap()).collect();
        let buf = dev.alloc(JOB, 4096).unwrap();
        let job = Job {
            op: JobOp::Crc32c,
            src: Some(buf.into()),
            dst: None,
            len: JOB as u32,
            value: 0,
        };
        let mut done = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for q in &mut qs {
                while q.inflight() < q.depth() {
                    dev.submit(q, &job).unwrap();
                }
                while let Some(c) = dev.poll(q) {
                    assert_eq!(c.status, JobStatus::Ok);
                    done += JOB as u64;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        for q in &mut qs {
            while q.inflight() > 0 {
                dev.wait(q, Duration::from_secs(5)).unwrap();
            }
        }
        done
    })
}

/// Engine time (µs) each VF got over `d` while loaded.
fn engine_time(rt: &tokio::runtime::Runtime, acc: &Accel, vfs: usize, d: Duration) -> Vec<f64> {
    let us = || -> Vec<u64> {
        rt.block_on(acc.stats()).unwrap().1[..vfs]
            .iter()
            .map(|s| s.engine_us.get())
            .collect()
    };
    let a = us();
    std::thread::sleep(d);
    let b = us();
    a.iter().zip(b).map(|(a, b)| (b - a) as f64).collect()
}

/// GiB/s two VFs on engines of their own get together with `threads` workers.
fn two_engines(threads: usize) -> f64 {
    let (d, _rt, _acc) = device(2, VfSpec::new(1, 64, 4, 4, 0), threads);
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = (0..2).map(|v| load(&d, v, 2, stop.clone())).collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let bytes: u64 = loads.into_iter().map(|l| l.join().unwrap()).sum();
    bytes as f64 / t.elapsed().as_secs_f64() / (1u64 << 30) as f64
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("queue engine workers and weighted shares, one run:");
    let one = two_engines(1);
    let two = two_engines(2);
    println!(
        "  two VFs on their own engines: 1 worker {one:.2} GiB/s, 2 workers {two:.2} GiB/s: {:.2}x (bare limit 2x)",
        two / one
    );
    // Four VFs on all 16 engines: every engine is shared by all four.
    let (d, rt, acc) = device(4, VfSpec::new(16, 64, 4, 4, 0), 2);
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = (0..4).map(|v| load(&d, v, 4, stop.clone())).collect();
    for weights in [
        [100u16, 100, 100, 100],
        [100, 200, 400, 800],
        [800, 400, 200, 100],
        [100, 100, 100, 800],
    ] {
        for (v, w) in weights.iter().enumerate() {
            rt.block_on(acc.set_qos(v as u16, *w)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        let t = engine_time(&rt, &acc, 4, Duration::from_secs(3));
        let total: f64 = t.iter().sum();
        let wsum: f64 = weights.iter().map(|&w| w as f64).sum();
        let shares: Vec<String> = t
            .iter()
            .zip(weights)
            .map(|(t, w)| {
                let got = t / total;
                let want = w as f64 / wsum;
                format!(
                    "{:.1} % (weight {:.1} %, {:+.1} %)",
                    100.0 * got,
                    100.0 * want,
                    100.0 * (got - want) / want
                )
            })
            .collect();
        println!("  weights {weights:?}: {}", shares.join(", "));
    }
    stop.store(true, Ordering::Relaxed);
    for l in loads {
        l.join().unwrap();
    }
}
