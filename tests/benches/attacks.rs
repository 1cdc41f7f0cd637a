//! A victim VF's job latency under each of the attack run's neighbours, against its own quiet
//! latency in the same run: the device in this process with a worker per core, the victim and
//! the attacker each on an engine of its own.
//!
//! - a client that maps its job data without a descriptor and never answers the device's DMA
//!   requests, on all of its queues;
//! - 16 MiB SHA-256 jobs kept on all of the attacker's queues;
//! - sixteen clients flooding the attacker's BAR2 with reads past its memory window (each a
//!   fault the device records).
use accelvirt_tests::{pattern, Silent};
use host_driver::vf::{Job, VfDev};
use host_driver::CreateSpec;
use shared_abi::jobs::{JobOp, JobStatus};
use shared_abi::resources::VfSpec;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Submit-to-reap of one 64 KiB CRC32C job at depth 1: (median, p99) of `n`.
fn latency(
    dev: &VfDev,
    q: &mut host_driver::vf::Queue,
    job: &Job,
    n: usize,
) -> (Duration, Duration) {
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            dev.submit(q, job).unwrap();
            let c = dev.wait(q, Duration::from_secs(5)).unwrap();
            assert_eq!(c.status, JobStatus::Ok);
            t.elapsed()
        })
        .collect();
    v.sort();
    (v[n / 2], v[n * 99 / 100])
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spec = CreateSpec::Uniform(VfSpec::new(1, 512, 4, 4, 0));
    let (d, rt, acc) = accelvirt_tests::device_in_process(cores, 2, spec);
    let mut dev = VfDev::open(&d.vf_socket(0), 1 << 20).unwrap();
    let mut q = dev.queue(0, 2).unwrap();
    let buf = dev.alloc(64 << 10, 4096).unwrap();
    dev.write(buf, 0, &pattern(buf.len, 1)).unwrap();
    let job = Job {
        op: JobOp::Crc32c,
        src: Some(buf.into()),
        dst: None,
        len: buf.len as u32,
        value: 0,
    };
    const N: usize = 5000;
    latency(&dev, &mut q, &job, 1000); // warm up: caches, page tables, the workers' spin
    let quiet = latency(&dev, &mut q, &job, N);
    println!("a victim VF's 64 KiB CRC32C job, submit to reap at depth 1 (median, p99), one run:");
    println!(
        "  quiet                        {:>9.2?} {:>9.2?}",
        quiet.0, quiet.1
    );
    let report = |what: &str, (m, p): (Duration, Duration)| {
        println!(
            "  {what:<28} {m:>9.2?} {p:>9.2?}   p99 {:.1}x quiet",
            p.as_secs_f64() / quiet.1.as_secs_f64()
        );
    };

    // A client that never answers the device's DMA requests, on all its queues.
    let silent = Silent::connect(&d.vf_socket(1));
    silent.post(0..4, 8);
    std::thread::sleep(Duration::from_millis(50));
    report("silent DMA client", latency(&dev, &mut q, &job, N));
    drop(silent);
    rt.block_on(acc.reset(1)).unwrap();

    // 16 MiB SHA-256 jobs on the attacker's own engine.
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let (sock, stop) = (d.vf_socket(1), stop.clone());
        std::thread::spawn(move || {
            let mut a = VfDev::open(&sock, 18 << 20).unwrap();
            let mut qs: Vec<_> = (0..4).map(|i| a.queue(i, 2).unwrap()).collect();
            let (src, dst) = (
                a.alloc(16 << 20, 4096).unwrap(),
                a.alloc(4096, 4096).unwrap(),
            );
            let j = Job {
                op: JobOp::Sha256,
                src: Some(src.into()),
                dst: Some(dst.into()),
                len: 16 << 20,
                value: 0,
            };
            while !stop.load(Ordering::Relaxed) {
                for q in &mut qs {
                    while q.inflight() < q.depth() {
                        a.submit(q, &j).unwrap();
                    }
                    while a.poll(q).is_some() {}
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    report("16 MiB SHA-256 neighbour", latency(&dev, &mut q, &job, N));
    stop.store(true, Ordering::Relaxed);
    attacker.join().unwrap();

    // Sixteen clients reading past the attacker's memory window (faults).
    let flooding = Arc::new(AtomicBool::new(true));
    let flooders: Vec<_> = (0..16)
        .map(|_| {
            let (p, f) = (d.vf_socket(1), flooding.clone());
            std::thread::spawn(move || {
                let c = host_driver::vfio_user::VfioUser::connect(&p, false).unwrap();
                let mut b = [0u8; 4];
                while f.load(Ordering::Relaxed) {
                    c.region_read(2, (1 << 32) - 4096, &mut b).unwrap();
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    report(
        "BAR2 fault flood (16 clients)",
        latency(&dev, &mut q, &job, N),
    );
    flooding.store(false, Ordering::Relaxed);
    for f in flooders {
        let _ = f.join();
    }
}
