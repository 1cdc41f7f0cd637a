//! The VF data path against its bare limits, measured in the same run: the device model (queue
//! engine, firmware, vfio-user server on a tmpfs socket) in this process, a VF driven by the
//! job library as a tenant would.
//!
//! - throughput of 1 MiB CRC32C and COPY jobs, queue kept full, against the `crc32c` crate
//!   (the CPU's CRC instruction) and a memcpy over the same bytes in a loop on one core;
//! - 1 MiB SHA-256 jobs against the `sha2` crate (SHA-NI where the CPU has it) in a loop;
//! - 4 KiB CRC32C jobs per second against the bare loop's rate for 4 KiB;
//! - one 64-byte job's submit-to-reap latency at depth 1 against a bare shared-memory
//!   ping-pong (two threads bouncing a counter through a memfd page).
use host_driver::vf::{Job, VfDev};
use shared_abi::jobs::{JobOp, JobStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The device with one engine worker: a queue runs on one engine at a time, and the client
/// gets the other core, as the bare limits below each get one.
fn device() -> (sim::inprocess::InProcess, std::path::PathBuf) {
    let d = sim::inprocess::InProcess::start_with(64, 1).unwrap();
    let t = host_driver::vfio_user::VfioUser::connect(&d.sock, true).unwrap();
    let acc = host_driver::Accel::with_transport(Arc::new(t), Duration::from_secs(5)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(acc.create_vfs(1, host_driver::CreateSpec::Equal))
        .unwrap();
    let vf = d.vf_socket(0);
    (d, vf)
}

/// Jobs of `op` over `len` bytes with `depth` in flight for `secs`: bytes per second.
fn jobs_rate(dev: &mut VfDev, qi: u32, op: JobOp, len: usize, depth: u32, secs: f64) -> (f64, f64) {
    let mut q = dev.queue(qi, depth).unwrap();
    let src = dev.alloc(len, 4096).unwrap();
    let dst = dev.alloc(len, 4096).unwrap();
    dev.write(src, 0, &vec![7u8; len]).unwrap();
    let job = Job {
        op,
        src: Some(src.into()),
        dst: Some(dst.into()),
        len: len as u32,
        value: 0,
    };
    let stop_at = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut done = 0u64;
    while Instant::now() < stop_at || q.inflight() > 0 {
        while Instant::now() < stop_at && q.inflight() < q.depth() {
            dev.submit(&mut q, &job).unwrap();
        }
        let c = dev.wait(&mut q, Duration::from_secs(5)).unwrap();
        assert_eq!(c.status, JobStatus::Ok);
        done += 1;
    }
    let t = start.elapsed().as_secs_f64();
    (done as f64 * len as f64 / t, done as f64 / t)
}

fn bare_rate(len: usize, secs: f64, mut f: impl FnMut(&[u8], &mut [u8])) -> (f64, f64) {
    let src = vec![7u8; len];
    let mut dst = vec![0u8; len];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        f(std::hint::black_box(&src), &mut dst);
        std::hint::black_box(&mut dst);
        n += 1;
    }
    let t = start.elapsed().as_secs_f64();
    (n as f64 * len as f64 / t, n as f64 / t)
}

fn latency(dev: &mut VfDev, n: usize) -> Duration {
    let mut q = dev.queue(3, 2).unwrap();
    let b = dev.alloc(64, 64).unwrap();
    let job = Job {
        op: JobOp::Crc32c,
        src: Some(b.into()),
        dst: None,
        len: 64,
        value: 0,
    };
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            dev.submit(&mut q, &job).unwrap();
            dev.wait(&mut q, Duration::from_secs(5)).unwrap();
            t.elapsed()
        })
        .collect();
    v.sort();
    v[n / 2]
}

fn ping_pong(n: usize) -> Duration {
    let mem = Arc::new(sim::sys::SharedMem::create("pp", 4096).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let (m, s) = (mem.clone(), stop.clone());
    let t = std::thread::spawn(move || {
        let mut last = 0;
        while !s.load(Ordering::Relaxed) {
            let v = m.observe32(0);
            if v != last {
                last = v;
                m.publish32(64, v);
            }
            std::hint::spin_loop();
        }
    });
    let mut v: Vec<Duration> = (1..=n as u32)
        .map(|i| {
            let t = Instant::now();
            mem.publish32(0, i);
            while mem.observe32(64) != i {
                std::hint::spin_loop();
            }
            t.elapsed()
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    let _ = t.join();
    v.sort();
    v[n / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list: nothing to list
    }
    let (_device, vf) = device();
    let mut dev = VfDev::open(&vf, 64 << 20).unwrap();
    let gib = |b: f64| b / (1u64 << 30) as f64;
    println!("VF data path against its bare limits, one run:");
    let (crc, _) = jobs_rate(&mut dev, 0, JobOp::Crc32c, 1 << 20, 32, 2.0);
    let (bare_crc, _) = bare_rate(1 << 20, 1.0, |s, _| {
        std::hint::black_box(crc32c::crc32c(s));
    });
    println!(
        "  CRC32C 1 MiB jobs, depth 32     {:7.3} GiB/s  bare loop {:7.3} GiB/s  {:.2}x",
        gib(crc),
        gib(bare_crc),
        crc / bare_crc
    );
    let (copy, _) = jobs_rate(&mut dev, 1, JobOp::Copy, 1 << 20, 32, 2.0);
    let (bare_copy, _) = bare_rate(1 << 20, 1.0, |s, d| d.copy_from_slice(s));
    println!(
        "  COPY 1 MiB jobs, depth 32       {:7.3} GiB/s  bare memcpy {:7.3} GiB/s  {:.2}x",
        gib(copy),
        gib(bare_copy),
        copy / bare_copy
    );
    let (sha, _) = jobs_rate(&mut dev, 4, JobOp::Sha256, 1 << 20, 32, 2.0);
    let (bare_sha, _) = bare_rate(1 << 20, 1.0, |s, _| {
        use sha2::Digest;
        std::hint::black_box(sha2::Sha256::digest(s));
    });
    println!(
        "  SHA-256 1 MiB jobs, depth 32    {:7.3} GiB/s  bare loop {:7.3} GiB/s  {:.2}x",
        gib(sha),
        gib(bare_sha),
        sha / bare_sha
    );
    let (_, small) = jobs_rate(&mut dev, 2, JobOp::Crc32c, 4096, 64, 2.0);
    let (_, bare_small) = bare_rate(4096, 1.0, |s, _| {
        std::hint::black_box(crc32c::crc32c(s));
    });
    println!(
        "  CRC32C 4 KiB jobs, depth 64     {:9.0} jobs/s  bare loop {:9.0} /s  {:.2}x",
        small,
        bare_small,
        small / bare_small
    );
    let lat = latency(&mut dev, 20_000);
    let pp = ping_pong(20_000);
    println!(
        "  64-byte job, depth 1, median    {:9.2?}  bare ping-pong {:9.2?}  {:.1}x",
        lat,
        pp,
        lat.as_secs_f64() / pp.as_secs_f64()
    );
}
