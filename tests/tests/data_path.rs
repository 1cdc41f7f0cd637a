//! The VF data path against a real accel-sim process: a VF driver (the host-driver's job
//! library) maps its own memory for DMA, sets up rings and runs every job type, each checked
//! against a host reference; bad descriptors and unmapped addresses fail that job only; a VF's
//! jobs reach only its own memory; counters count.
use accelvirt_tests::{pattern, Sim};
use host_driver::vf::{Buf, Job, VfDev};
use shared_abi::jobs::{self, JobOp, JobStatus};
use std::path::PathBuf;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn vf_socket(sim: &Sim, v: u16) -> PathBuf {
    vfio_user_wire::vf_socket_path(&sim.sock, v)
}

fn with_vfs(n: u16) -> Sim {
    let sim = Sim::start();
    let o = sim.ctl(&["create-vf", "--count", &n.to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    sim
}

fn run(dev: &VfDev, q: &mut host_driver::vf::Queue, job: Job) -> host_driver::vf::Completion {
    let tag = dev.submit(q, &job).unwrap();
    let c = dev.wait(q, T).unwrap();
    assert_eq!(c.tag, tag);
    c
}

/// A job (the struct's fields in order).
fn job_of(
    op: JobOp,
    src: Option<host_driver::vf::Addr>,
    dst: Option<host_driver::vf::Addr>,
    len: u32,
    value: u32,
) -> Job {
    Job {
        op,
        src,
        dst,
        len,
        value,
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[test]
fn every_job_type_matches_a_host_reference() {
    let sim = with_vfs(2);
    let mut dev = VfDev::open(&vf_socket(&sim, 0), 40 << 20).unwrap();
    let mut q = dev.queue(0, 16).unwrap();
    let src = dev.alloc(17 << 20, 4096).unwrap();
    let dst = dev.alloc(17 << 20, 4096).unwrap();
    // Sizes around the device's 1 MiB DMA step and odd alignments.
    for (i, (len, align)) in [
        (1usize, 0usize),
        (3, 1),
        (4096, 0),
        (65_537, 7),
        ((1 << 20) - 1, 0),
        ((1 << 20) + 13, 5),
        (3 << 20, 4095),
        (16 << 20, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let data = pattern(len, i as u64 + 1);
        let s = Buf {
            off: src.off + align,
            len,
        };
        let d = Buf {
            off: dst.off + align,
            len,
        };
        dev.write(s, 0, &data).unwrap();
        // COPY
        let c = run(
            &dev,
            &mut q,
            job_of(JobOp::Copy, Some(s.into()), Some(d.into()), len as u32, 0),
        );
        assert_eq!((c.status, c.result), (JobStatus::Ok, len as u64));
        let mut back = vec![0u8; len];
        dev.read(d, 0, &mut back).unwrap();
        assert!(back == data, "copy of {len} bytes at +{align}");
        // CRC32C, plain and seeded.
        let c = run(
            &dev,
            &mut q,
            job_of(JobOp::Crc32c, Some(s.into()), None, len as u32, 0),
        );
        assert_eq!(c.status, JobStatus::Ok);
        assert_eq!(c.result, jobs::crc32c(0, &data) as u64, "crc32c of {len}");
        let c = run(
            &dev,
            &mut q,
            job_of(JobOp::Crc32c, Some(s.into()), None, len as u32, 0xDEAD_BEEF),
        );
        assert_eq!(c.result, jobs::crc32c(0xDEAD_BEEF, &data) as u64);
        // SHA-256 into the destination.
        let c = run(
            &dev,
            &mut q,
            job_of(JobOp::Sha256, Some(s.into()), Some(d.into()), len as u32, 0),
        );
        assert_eq!(c.status, JobStatus::Ok);
        let mut digest = [0u8; 32];
        let at = Buf {
            off: d.off,
            len: 32,
        };
        dev.read(at, 0, &mut digest).unwrap();
        assert_eq!(digest, sha256(&data), "sha256 of {len}");
        // FILL
        let c = run(
            &dev,
            &mut q,
            job_of(JobOp::Fill, None, Some(d.into()), len as u32, 0xA5),
        );
        assert_eq!((c.status, c.result), (JobStatus::Ok, len as u64));
        dev.read(d, 0, &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0xA5), "fill of {len}");
    }
    // Overlapping copies behave as memmove, both ways.
    let data = pattern(3 << 20, 99);
    for (from, to) in [(0usize, 1_000_003usize), (1_000_003, 0)] {
        dev.write(src, 0, &data).unwrap();
        let len = 2 << 20;
        let c = run(
            &dev,
            &mut q,
            Job {
                op: JobOp::Copy,
                src: Some(
                    Buf {
                        off: src.off + from,
                        len,
                    }
                    .into(),
                ),
                dst: Some(
                    Buf {
                        off: src.off + to,
                        len,
                    }
                    .into(),
                ),
                len: len as u32,
                value: 0,
            },
        );
        assert_eq!(c.status, JobStatus::Ok);
        let mut back = vec![0u8; len];
        dev.read(src, to, &mut back).unwrap();
        assert!(back[..] == data[from..from + len], "overlap {from}->{to}");
    }
    // The VF's counters moved: jobs and bytes (engine time is at least a microsecond).
    let v = &sim.ctl_json(&["stats"])["vfs"][0];
    assert!(v["jobs"].as_u64().unwrap() >= 8 * 5 + 2, "{v}");
    assert!(v["bytes"].as_u64().unwrap() > 5 * (16 << 20), "{v}");
    assert!(v["engine_us"].as_u64().unwrap() > 0, "{v}");
    let other = &sim.ctl_json(&["stats"])["vfs"][1];
    assert_eq!(other["jobs"], 0, "VF 1 ran nothing");
}

#[test]
fn many_jobs_in_flight_complete_in_order_across_ring_laps() {
    let sim = with_vfs(1);
    let mut dev = VfDev::open(&vf_socket(&sim, 0), 4 << 20).unwrap();
    let mut q = dev.queue(3, 4).unwrap();
    let buf = dev.alloc(64 * 1024, 64).unwrap();
    let data = pattern(buf.len, 5);
    dev.write(buf, 0, &data).unwrap();
    let mut expect = std::collections::VecDeque::new();
    let mut done = 0;
    // 1,000 jobs through a 4-entry ring: 250 laps, the phase bit flipping each time.
    for i in 0..1000u32 {
        while q.inflight() == q.depth() {
            let c = dev.wait(&mut q, T).unwrap();
            let (tag, crc) = expect.pop_front().unwrap();
            assert_eq!((c.tag, c.status, c.result), (tag, JobStatus::Ok, crc));
            done += 1;
        }
        let len = 1 + (i as usize * 61) % buf.len;
        let tag = dev
            .submit(
                &mut q,
                &job_of(JobOp::Crc32c, Some(buf.into()), None, len as u32, i),
            )
            .unwrap();
        expect.push_back((tag, jobs::crc32c(i, &data[..len]) as u64));
    }
    while let Some((tag, crc)) = expect.pop_front() {
        let c = dev.wait(&mut q, T).unwrap();
        assert_eq!((c.tag, c.status, c.result), (tag, JobStatus::Ok, crc));
        done += 1;
    }
    assert_eq!(done, 1000);
}

#[test]
fn bad_jobs_fail_alone_and_the_queue_goes_on() {
    let sim = with_vfs(1);
    let mut dev = VfDev::open(&vf_socket(&sim, 0), 4 << 20).unwrap();
    let mut q = dev.queue(0, 8).unwrap();
    let buf = dev.alloc(4096, 4096).unwrap();
    let unmapped = Buf {
        off: 1 << 40,
        len: 4096,
    };
    let cases = [
        (
            job_of(
                JobOp::Copy,
                Some(unmapped.into()),
                Some(buf.into()),
                4096,
                0,
            ),
            JobStatus::HostDma,
        ),
        (
            job_of(JobOp::Fill, None, Some(unmapped.into()), 16, 1),
            JobStatus::HostDma,
        ),
        (
            job_of(JobOp::Fill, None, Some(buf.into()), 16, 0x100),
            JobStatus::BadDescriptor,
        ),
        (
            job_of(JobOp::Copy, Some(buf.into()), Some(buf.into()), 0, 0),
            JobStatus::BadDescriptor,
        ),
        (
            job_of(
                JobOp::Copy,
                Some(buf.into()),
                Some(buf.into()),
                jobs::MAX_JOB_LEN + 1,
                0,
            ),
            JobStatus::BadDescriptor,
        ),
    ];
    for (job, want) in cases {
        let c = run(&dev, &mut q, job);
        assert_eq!(c.status, want, "{job:?}");
        // The next good job on the same queue still runs.
        let c = run(
            &dev,
            &mut q,
            job_of(JobOp::Fill, None, Some(buf.into()), 4096, 7),
        );
        assert_eq!(c.status, JobStatus::Ok);
    }
    assert_eq!(dev.queue_status(&q).unwrap(), jobs::queue_status::OK);
}

#[test]
fn rings_the_device_cannot_use_are_refused_with_a_reason() {
    use shared_abi::regs::{queue, vf, QueueCtrl};
    let sim = with_vfs(1);
    let mut dev = VfDev::open(&vf_socket(&sim, 0), 1 << 20).unwrap();
    // The library refuses what it can see itself.
    assert!(dev.queue(0, 3).is_err());
    assert!(dev.queue(500, 4).is_err(), "a queue the VF does not own");
    // A driver that programs rings by hand gets the device's reason in STATUS.
    let raw = host_driver::vfio_user::VfioUser::connect(&vf_socket(&sim, 0), false).unwrap();
    let program = |q: usize, sq: u64, sq_size: u32, cq_size: u32, ctrl: QueueCtrl, vector: u32| {
        let base = vf::queue(q) as u64;
        for (r, v) in [
            (queue::CONTROL, 0),
            (queue::SQ_BASE_LO, sq as u32),
            (queue::SQ_BASE_HI, (sq >> 32) as u32),
            (queue::SQ_SIZE, sq_size),
            (queue::CQ_BASE_LO, 0),
            (queue::CQ_BASE_HI, 1),
            (queue::CQ_SIZE, cq_size),
            (queue::MSIX_VECTOR, vector),
            (queue::CONTROL, ctrl.bits()),
        ] {
            raw.region_write(0, base + r.offset() as u64, &v.to_le_bytes())
                .unwrap();
        }
    };
    let status = |q: usize| {
        let deadline = std::time::Instant::now() + T;
        loop {
            let mut b = [0u8; 4];
            raw.region_read(0, (vf::queue(q) + queue::STATUS.offset()) as u64, &mut b)
                .unwrap();
            let s = u32::from_le_bytes(b);
            if s != 0 || std::time::Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let en = QueueCtrl::ENABLE;
    program(2, 1 << 32, 3, 4, en, 0);
    assert_eq!(
        status(2),
        jobs::queue_status::BAD_SIZE,
        "not a power of two"
    );
    program(3, 1 << 32, 8, 4, en, 0);
    assert_eq!(
        status(3),
        jobs::queue_status::BAD_SIZE,
        "CQ smaller than SQ"
    );
    program(4, (1 << 32) + 8, 4, 4, en, 0);
    assert_eq!(status(4), jobs::queue_status::BAD_ALIGNMENT);
    program(5, 1 << 32, 4, 4, en | QueueCtrl::IRQ_ENABLE, 100_000);
    assert_eq!(status(5), jobs::queue_status::BAD_VECTOR);
    // A good queue next to them runs.
    let mut q = dev.queue(1, 4).unwrap();
    let b = dev.alloc(8, 8).unwrap();
    let c = run(
        &dev,
        &mut q,
        job_of(JobOp::Crc32c, Some(b.into()), None, 8, 0),
    );
    assert_eq!(c.status, JobStatus::Ok);
}

#[test]
fn a_vf_without_a_dma_client_is_left_alone_and_another_client_cannot_take_its_memory() {
    let sim = with_vfs(2);
    let mut a = VfDev::open(&vf_socket(&sim, 0), 1 << 20).unwrap();
    // A second client of the same VF cannot map into the DMA space the first one owns.
    let e = VfDev::open(&vf_socket(&sim, 0), 1 << 20).unwrap_err();
    assert!(e.to_string().contains("DMA map"), "{e}");
    // VF 1's client maps the same IOVAs in its own space: jobs see only their own memory.
    let mut b = VfDev::open(&vf_socket(&sim, 1), 1 << 20).unwrap();
    let (ba, bb) = (a.alloc(4096, 4096).unwrap(), b.alloc(4096, 4096).unwrap());
    assert_eq!(ba.iova(), bb.iova(), "same IOVA in two VFs");
    a.write(ba, 0, &[1; 4096]).unwrap();
    b.write(bb, 0, &[2; 4096]).unwrap();
    let (mut qa, mut qb) = (a.queue(0, 4).unwrap(), b.queue(0, 4).unwrap());
    let crc = |dev: &VfDev, q: &mut host_driver::vf::Queue, buf: Buf| {
        run(
            dev,
            q,
            job_of(JobOp::Crc32c, Some(buf.into()), None, 4096, 0),
        )
        .result
    };
    assert_eq!(crc(&a, &mut qa, ba), jobs::crc32c(0, &[1; 4096]) as u64);
    assert_eq!(crc(&b, &mut qb, bb), jobs::crc32c(0, &[2; 4096]) as u64);
}

#[test]
fn accelctl_vf_run_reports_checked_throughput_for_every_job_type() {
    let sim = with_vfs(2);
    for job in ["copy", "fill", "crc32c", "sha256"] {
        let r = sim.ctl_json(&[
            "vf",
            "run",
            "1",
            "--job",
            job,
            "--size",
            "64K",
            "--queues",
            "2",
            "--depth",
            "8",
            "--seconds",
            "0.3",
        ]);
        assert_eq!(r["job"], job);
        assert_eq!(
            (r["size"].as_u64(), r["queues"].as_u64()),
            (Some(65536), Some(2))
        );
        let jobs = r["jobs"].as_u64().unwrap();
        assert!(jobs > 0, "{r}");
        assert_eq!(r["bytes"].as_u64().unwrap(), jobs * 65536);
        assert!(r["gib_per_s"].as_f64().unwrap() > 0.0);
        assert!(r["latency_us_p99"].as_f64().unwrap() >= r["latency_us_p50"].as_f64().unwrap());
    }
    // The device counted what accelctl ran, on VF 1 only.
    let stats = sim.ctl_json(&["stats"]);
    assert!(stats["vfs"][1]["jobs"].as_u64().unwrap() > 0);
    assert_eq!(stats["vfs"][0]["jobs"], 0);
    // Refusals name the problem and exit 2.
    for (args, msg) in [
        (vec!["--job", "md5"], "--job md5"),
        (vec!["--queues", "9999"], "--queues 9999"),
        (vec!["--depth", "3"], "queue depth 3"),
        (vec!["--size", "17M"], "--size"),
    ] {
        let mut a = vec!["vf", "run", "0", "--seconds", "0.1"];
        a.extend(args);
        let o = sim.ctl(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{a:?}: {err}");
        assert!(err.contains(msg), "{a:?}: {err}");
    }
}

/// Keeps `depth` CRC32C jobs of `len` bytes in flight on each of `sock`'s first `queues`
/// queues until `stop`, checking every result; returns how many completed.
fn worker(
    sock: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    depth: u32,
    len: usize,
    queues: u32,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut dev = VfDev::open(&sock, 4 << 20).unwrap();
        let mut qs: Vec<_> = (0..queues).map(|i| dev.queue(i, depth).unwrap()).collect();
        let buf = dev.alloc(len, 4096).unwrap();
        let data = pattern(len, 77);
        dev.write(buf, 0, &data).unwrap();
        let want = jobs::crc32c(0, &data) as u64;
        let job = job_of(JobOp::Crc32c, Some(buf.into()), None, len as u32, 0);
        let mut done = 0;
        let reap = |dev: &VfDev, q: &mut host_driver::vf::Queue| {
            let c = dev.wait(q, T).unwrap();
            assert_eq!((c.status, c.result), (JobStatus::Ok, want));
        };
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for q in &mut qs {
                while q.inflight() < q.depth() {
                    dev.submit(q, &job).unwrap();
                }
                reap(&dev, q);
                done += 1;
            }
        }
        for q in &mut qs {
            while q.inflight() > 0 {
                reap(&dev, q);
            }
        }
        done
    })
}

/// A VF kept saturated: 16 jobs of 256 KiB in flight on each of 4 queues, more than the
/// engine's workers can run at once, so the engines it shares are contended.
fn saturate(
    sock: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    worker(sock, stop, 16, 256 << 10, 4)
}

/// VFs 0 and 1 kept saturated until `finish`.
struct Saturated {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<std::thread::JoinHandle<u64>>,
}

impl Saturated {
    fn start(sim: &Sim) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers = (0..2)
            .map(|v| saturate(vf_socket(sim, v), stop.clone()))
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        Saturated { stop, workers }
    }

    fn finish(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in self.workers {
            assert!(w.join().unwrap() > 0);
        }
    }
}

/// Sets VF 0's and VF 1's weights and returns VF 1's engine time over VF 0's while both are
/// saturated.
fn weighted(sim: &Sim, w0: u16, w1: u16) -> f64 {
    sim.ctl_json(&["vf", "qos", "0", "--weight", &w0.to_string()]);
    sim.ctl_json(&["vf", "qos", "1", "--weight", &w1.to_string()]);
    std::thread::sleep(Duration::from_millis(200));
    let (a, b) = shares(sim, Duration::from_millis(1500));
    assert!(a > 0.0 && b > 0.0, "both VFs ran: {a}:{b} µs");
    b / a
}

/// Engine time each VF got over `d` while both are saturated.
fn shares(sim: &Sim, d: Duration) -> (f64, f64) {
    let us = |s: &serde_json::Value, v: usize| s["vfs"][v]["engine_us"].as_u64().unwrap() as f64;
    let a = sim.ctl_json(&["stats"]);
    std::thread::sleep(d);
    let b = sim.ctl_json(&["stats"]);
    (us(&b, 0) - us(&a, 0), us(&b, 1) - us(&a, 1))
}

#[test]
fn a_saturated_engine_is_shared_by_weight_and_set_qos_changes_it_live() {
    // Both VFs own all 16 engines: they share every one.
    let sim = Sim::start();
    let o = sim.ctl(&[
        "create-vf",
        "--count",
        "2",
        "--engines",
        "16",
        "--memory",
        "1G",
        "--queues",
        "8",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let load = Saturated::start(&sim);
    let r = weighted(&sim, 100, 300);
    assert!(r > 2.0 && r < 4.5, "weights 100:300 gave 1:{r}");
    // Live: equal weights, equal shares.
    let r = weighted(&sim, 100, 100);
    assert!(r > 0.6 && r < 1.6, "weights 100:100 gave 1:{r}");
    // A heavy VF first in line does not starve a light one behind it.
    let r = weighted(&sim, 1000, 100);
    assert!(r > 0.05 && r < 0.25, "weights 1000:100 gave 1:{r}");
    load.finish();
}

#[test]
fn vfs_on_their_own_engines_are_not_shared_by_weight() {
    // Equal split: VF 0 owns engines 0-7, VF 1 engines 8-15. Weights only divide an engine
    // between the VFs that share it, so 100:1000 still gives each half of the machine.
    let sim = with_vfs(2);
    let load = Saturated::start(&sim);
    let r = weighted(&sim, 100, 1000);
    assert!(
        r > 0.6 && r < 1.6,
        "own engines with weights 100:1000 gave 1:{r}"
    );
    load.finish();
}

/// VF `v` with its queue 0 (`depth` entries) full of copies of `size` bytes each, still
/// running; returns the device, the queue and the copies' destination.
fn busy(
    sim: &Sim,
    v: u16,
    depth: u32,
    size: usize,
) -> (VfDev, host_driver::vf::Queue, host_driver::vf::Buf) {
    let mut dev = VfDev::open(&vf_socket(sim, v), 2 * size + (4 << 20)).unwrap();
    let mut q = dev.queue(0, depth).unwrap();
    let (src, dst) = (
        dev.alloc(size, 4096).unwrap(),
        dev.alloc(size, 4096).unwrap(),
    );
    let copy = job_of(
        JobOp::Copy,
        Some(src.into()),
        Some(dst.into()),
        src.len as u32,
        0,
    );
    for _ in 0..depth {
        dev.submit(&mut q, &copy).unwrap();
    }
    (dev, q, dst)
}

#[test]
fn resetting_a_vf_mid_traffic_stops_only_its_jobs() {
    use shared_abi::regs::{queue, vf};
    let sim = with_vfs(2);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // VF 1 runs checked jobs throughout.
    let bystander = worker(vf_socket(&sim, 1), stop.clone(), 2, 128 << 10, 1);
    // VF 0 fills its ring with long copies, then is reset while they run.
    let (mut dev, mut q, dst) = busy(&sim, 0, 8, 4 << 20);
    let r = sim.ctl_json(&["vf", "reset", "0"]);
    assert_eq!(r["vfs"][0]["flr_count"], 1, "{r}");
    // The reset disabled VF 0's queue; nothing more completes on it.
    let raw = host_driver::vfio_user::VfioUser::connect(&vf_socket(&sim, 0), false).unwrap();
    let mut b = [0u8; 4];
    raw.region_read(0, (vf::queue(0) + queue::CONTROL.offset()) as u64, &mut b)
        .unwrap();
    assert_eq!(u32::from_le_bytes(b), 0, "CONTROL cleared by the reset");
    let before = (0..8).filter_map(|_| dev.poll(&mut q)).count();
    std::thread::sleep(Duration::from_millis(100));
    let after = (0..8).filter_map(|_| dev.poll(&mut q)).count();
    assert_eq!(
        after, 0,
        "no completion lands after the reset ({before} before)"
    );
    // The driver sets its queue up again and goes on.
    let mut q = dev.queue(0, 8).unwrap();
    let c = run(
        &dev,
        &mut q,
        job_of(JobOp::Fill, None, Some(dst.into()), 4096, 3),
    );
    assert_eq!(c.status, JobStatus::Ok);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(bystander.join().unwrap() > 0);
    let stats = sim.ctl_json(&["stats"]);
    assert_eq!(stats["vfs"][1]["faults"], 0);
    assert_eq!(stats["vfs"][1]["flr_count"], 0);
}

#[test]
fn completions_can_be_reaped_by_msix_interrupt() {
    let sim = with_vfs(1);
    let mut dev = VfDev::open(&vf_socket(&sim, 0), 4 << 20).unwrap();
    let mut q = dev.queue_with_irq(2, 4, 3).unwrap();
    let buf = dev.alloc(2 << 20, 4096).unwrap();
    let digest = dev.alloc(32, 64).unwrap();
    for _ in 0..20 {
        // Long enough that the waiter is past its spin and asleep on the eventfd (a FILL is
        // a memset now, over before the spin ends).
        let c = run(
            &dev,
            &mut q,
            job_of(
                JobOp::Sha256,
                Some(buf.into()),
                Some(digest.into()),
                buf.len as u32,
                0,
            ),
        );
        assert_eq!(c.status, JobStatus::Ok);
    }
    assert!(
        q.interrupts() > 0,
        "the waits slept on the completion vector"
    );
    // A vector the VF does not have is refused before anything is set up.
    let v = dev.queue_with_irq(3, 4, 100_000).unwrap_err();
    assert!(v.to_string().contains("MSI-X vectors"), "{v}");
}

mod translation {
    use super::*;
    use host_driver::vf::Addr;
    use shared_abi::jobs::xlat;

    const ROOT: u64 = 0x10_0000; // VF-physical address of the stage-1 table
    const DATA: u64 = 0x40_0000; // VF-physical pages the table points into
    const PAGES: u32 = 64;

    /// Writes stage-1 entries `first..` at ROOT.
    fn entries(dev: &VfDev, first: u32, e: &[u64]) {
        let bytes: Vec<u8> = e.iter().flat_map(|x| x.to_le_bytes()).collect();
        dev.write_device(ROOT + first as u64 * 8, &bytes).unwrap();
    }

    /// VA page i → VF-physical page DATA + (PAGES - 1 - i): scattered, not an identity map.
    fn reversed(i: u32) -> u64 {
        DATA + (PAGES - 1 - i) as u64 * 4096
    }

    fn job(op: JobOp, src: Option<Addr>, dst: Option<Addr>, len: usize, value: u32) -> Job {
        job_of(op, src, dst, len as u32, value)
    }

    fn setup(sim: &Sim, v: u16) -> (VfDev, host_driver::vf::Queue) {
        let mut dev = VfDev::open(&vf_socket(sim, v), 4 << 20).unwrap();
        let q = dev.queue(0, 8).unwrap();
        let e: Vec<u64> = (0..PAGES).map(|i| xlat::entry(reversed(i), true)).collect();
        entries(&dev, 0, &e);
        dev.set_translation(ROOT, PAGES).unwrap();
        (dev, q)
    }

    #[test]
    fn device_memory_jobs_go_through_both_stages() {
        let sim = with_vfs(2);
        let (mut dev, mut q) = setup(&sim, 0);
        let len = PAGES as usize * 4096;
        let data = pattern(len, 21);
        let (h1, h2) = (dev.alloc(len, 4096).unwrap(), dev.alloc(len, 4096).unwrap());
        dev.write(h1, 0, &data).unwrap();
        // Host → device at VA 100 (unaligned): lands page by page where the table says.
        let c = run(
            &dev,
            &mut q,
            job(
                JobOp::Copy,
                Some(h1.into()),
                Some(Addr::Device(100)),
                len - 100,
                0,
            ),
        );
        assert_eq!(c.status, JobStatus::Ok);
        for i in [0u32, 1, 31, 63] {
            let mut page = vec![0u8; 4096];
            dev.read_device(reversed(i), &mut page).unwrap();
            let va = i as usize * 4096;
            let lo = 100usize.saturating_sub(va).min(4096);
            assert!(
                page[lo..] == data[va + lo - 100..va + 4096 - 100],
                "page {i}"
            );
        }
        // CRC32C and SHA-256 read device memory; COPY brings it back to the host.
        let c = run(
            &dev,
            &mut q,
            job(JobOp::Crc32c, Some(Addr::Device(100)), None, len - 100, 0),
        );
        assert_eq!(c.result, jobs::crc32c(0, &data[..len - 100]) as u64);
        let c = run(
            &dev,
            &mut q,
            job(
                JobOp::Copy,
                Some(Addr::Device(100)),
                Some(h2.into()),
                len - 100,
                0,
            ),
        );
        assert_eq!(c.status, JobStatus::Ok);
        let mut back = vec![0u8; len - 100];
        dev.read(h2, 0, &mut back).unwrap();
        assert!(back[..] == data[..len - 100]);
        // Device → device, overlapping, is a memmove too.
        let c = run(
            &dev,
            &mut q,
            job(
                JobOp::Copy,
                Some(Addr::Device(0)),
                Some(Addr::Device(5000)),
                100_000,
                0,
            ),
        );
        assert_eq!(c.status, JobStatus::Ok);
        let c = run(
            &dev,
            &mut q,
            job(JobOp::Crc32c, Some(Addr::Device(5000)), None, 100_000, 0),
        );
        let mut before = vec![0u8; 100_000];
        before[..100].fill(0);
        before[100..].copy_from_slice(&data[..100_000 - 100]);
        assert_eq!(c.result, jobs::crc32c(0, &before) as u64);
        let (hits, misses) = dev.iotlb().unwrap();
        assert!(
            misses >= PAGES && hits > misses,
            "IOTLB hits {hits} misses {misses}"
        );
        assert_eq!(dev.faults().unwrap().0, 0);
    }

    #[test]
    fn misses_and_violations_fail_the_job_and_count_only_where_they_should() {
        let sim = with_vfs(2);
        let (mut dev, mut q) = setup(&sim, 0);
        let h = dev.alloc(8192, 4096).unwrap();
        let mem = dev.device_mem_size().unwrap();
        // Stage 1 misses: past XLAT_PAGES, and an invalid entry. No fault is counted.
        let c = run(
            &dev,
            &mut q,
            job(
                JobOp::Crc32c,
                Some(Addr::Device(PAGES as u64 * 4096)),
                None,
                16,
                0,
            ),
        );
        assert_eq!(c.status, JobStatus::Stage1Fault);
        entries(&dev, 7, &[0]);
        dev.invalidate().unwrap();
        let c = run(
            &dev,
            &mut q,
            job(JobOp::Fill, None, Some(Addr::Device(7 * 4096 + 8)), 16, 1),
        );
        assert_eq!(c.status, JobStatus::Stage1Fault);
        // A read-only page can be read, not written.
        entries(&dev, 8, &[xlat::entry(reversed(8), false)]);
        dev.invalidate().unwrap();
        let c = run(
            &dev,
            &mut q,
            job(JobOp::Crc32c, Some(Addr::Device(8 * 4096)), None, 4096, 0),
        );
        assert_eq!(c.status, JobStatus::Ok);
        let c = run(
            &dev,
            &mut q,
            job(
                JobOp::Copy,
                Some(h.into()),
                Some(Addr::Device(8 * 4096)),
                4096,
                0,
            ),
        );
        assert_eq!(c.status, JobStatus::Stage1Fault);
        assert_eq!(
            dev.faults().unwrap().0,
            0,
            "stage-1 misses are the VF's own business"
        );
        // Stage 2 refuses a table entry that points past the VF's memory: a fault on this VF.
        entries(&dev, 9, &[xlat::entry(mem, true)]);
        dev.invalidate().unwrap();
        let c = run(
            &dev,
            &mut q,
            job(JobOp::Fill, None, Some(Addr::Device(9 * 4096)), 4096, 9),
        );
        assert_eq!(c.status, JobStatus::Stage2Fault);
        let (n, code) = dev.faults().unwrap();
        assert_eq!(
            (n, code),
            (1, shared_abi::resources::VfFault::MemOutOfWindow as u32)
        );
        // So does a table the VF placed outside its memory.
        dev.set_translation(mem, 1).unwrap();
        let c = run(
            &dev,
            &mut q,
            job(JobOp::Crc32c, Some(Addr::Device(0)), None, 8, 0),
        );
        assert_eq!(c.status, JobStatus::Stage2Fault);
        assert_eq!(dev.faults().unwrap().0, 2);
        let stats = sim.ctl_json(&["stats"]);
        assert_eq!(stats["vfs"][0]["faults"], 2);
        assert_eq!(
            stats["vfs"][1]["faults"], 0,
            "nothing counted on the other VF"
        );
        // The queue went on through all of it.
        assert_eq!(dev.queue_status(&q).unwrap(), jobs::queue_status::OK);
    }

    #[test]
    fn the_iotlb_serves_stale_translations_until_invalidated() {
        let sim = with_vfs(1);
        let (mut dev, mut q) = setup(&sim, 0);
        let h = dev.alloc(4096, 4096).unwrap();
        dev.write_device(reversed(0), &[1; 4096]).unwrap();
        dev.write_device(DATA + PAGES as u64 * 4096, &[2; 4096])
            .unwrap();
        let crc = |dev: &VfDev, q: &mut host_driver::vf::Queue| {
            run(
                dev,
                q,
                job(JobOp::Crc32c, Some(Addr::Device(0)), None, 4096, 0),
            )
            .result
        };
        let (one, two) = (
            jobs::crc32c(0, &[1; 4096]) as u64,
            jobs::crc32c(0, &[2; 4096]) as u64,
        );
        assert_eq!(crc(&dev, &mut q), one);
        // Repoint VA page 0 without telling the device: the cached translation still wins.
        entries(&dev, 0, &[xlat::entry(DATA + PAGES as u64 * 4096, true)]);
        assert_eq!(crc(&dev, &mut q), one, "IOTLB hit on the old page");
        dev.invalidate().unwrap();
        assert_eq!(crc(&dev, &mut q), two, "after XLAT_INVALIDATE");
        // A reset forgets the table (and the memory it was in).
        let _ = dev.write(h, 0, &[0; 16]);
        sim.ctl_json(&["vf", "reset", "0"]);
        let mut q = dev.queue(0, 8).unwrap();
        let c = run(
            &dev,
            &mut q,
            job(JobOp::Crc32c, Some(Addr::Device(0)), None, 16, 0),
        );
        assert_eq!(
            c.status,
            JobStatus::Stage1Fault,
            "no stage-1 table after reset"
        );
    }

    #[test]
    fn a_vf_reaches_only_its_own_device_memory() {
        let sim = with_vfs(2);
        let (dev0, mut q0) = setup(&sim, 0);
        let (dev1, mut q1) = setup(&sim, 1);
        // Both use the same VF-physical and virtual addresses: each sees its own memory.
        dev0.write_device(reversed(0), &[7; 4096]).unwrap();
        let c0 = run(
            &dev0,
            &mut q0,
            job(JobOp::Crc32c, Some(Addr::Device(0)), None, 4096, 0),
        );
        let c1 = run(
            &dev1,
            &mut q1,
            job(JobOp::Crc32c, Some(Addr::Device(0)), None, 4096, 0),
        );
        assert_eq!(c0.result, jobs::crc32c(0, &[7; 4096]) as u64);
        assert_eq!(
            c1.result,
            jobs::crc32c(0, &[0; 4096]) as u64,
            "VF 1 sees its own zeroes"
        );
        // VF 1 aims its table at every VF-physical address past its window: refused, counted
        // on VF 1; VF 0's data is untouched.
        let mem = dev1.device_mem_size().unwrap();
        for pa in [mem, mem + (2 << 20), xlat::ADDR_MASK] {
            entries(&dev1, 0, &[xlat::entry(pa, true)]);
            dev1.invalidate().unwrap();
            let c = run(
                &dev1,
                &mut q1,
                job(JobOp::Fill, None, Some(Addr::Device(0)), 4096, 0xEE),
            );
            assert_eq!(c.status, JobStatus::Stage2Fault, "pa {pa:#x}");
        }
        assert_eq!(dev1.faults().unwrap().0, 3);
        assert_eq!(dev0.faults().unwrap().0, 0);
        let c0 = run(
            &dev0,
            &mut q0,
            job(JobOp::Crc32c, Some(Addr::Device(0)), None, 4096, 0),
        );
        assert_eq!(c0.result, jobs::crc32c(0, &[7; 4096]) as u64);
    }
}

#[test]
fn destroying_or_resizing_a_vf_mid_traffic_leaves_the_others_running() {
    let sim = with_vfs(3);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bystander = worker(vf_socket(&sim, 2), stop.clone(), 2, 64 << 10, 1);
    // VF 1 keeps its queue 0 through a resize that takes half its queues away.
    let resized = worker(vf_socket(&sim, 1), stop.clone(), 2, 64 << 10, 1);
    // VF 0 fills its ring with long jobs and is destroyed under them.
    let (dev, mut q, _) = busy(&sim, 0, 4, 8 << 20);
    std::thread::sleep(Duration::from_millis(50));
    let r = sim.ctl(&["vf", "resize", "1", "--queues", "32"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let d = sim.ctl(&["destroy-vf", "0"]);
    assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stderr));
    let drained = (0..4).filter_map(|_| dev.poll(&mut q)).count();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        (0..4).filter_map(|_| dev.poll(&mut q)).count(),
        0,
        "nothing completes for a destroyed VF ({drained} did before)"
    );
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(bystander.join().unwrap() > 0);
    assert!(resized.join().unwrap() > 0);
    let stats = sim.ctl_json(&["stats"]);
    for v in stats["vfs"].as_array().unwrap() {
        assert_eq!(v["faults"], 0, "{v}");
    }
    assert_eq!(sim.ctl_json(&["vf", "show", "1"])["queues"], 32);
}

mod properties {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    /// Any job, any length, any alignment of source and destination: the device's answer is
    /// the host's. One device model and one VF driver serve every case (and go when the test
    /// ends).
    #[test]
    fn jobs_match_the_host() {
        let sim = with_vfs(1);
        let mut dev = VfDev::open(&vf_socket(&sim, 0), 4 << 20).unwrap();
        let q = std::cell::RefCell::new(dev.queue(0, 4).unwrap());
        let a = dev.alloc(1 << 20, 4096).unwrap();
        let b = dev.alloc(1 << 20, 4096).unwrap();
        let cases = (
            0usize..4,
            1usize..300_000,
            0usize..4096,
            0usize..4096,
            any::<u32>(),
            any::<u64>(),
        );
        let mut runner = TestRunner::new(Config {
            cases: 48,
            ..Config::default()
        });
        runner
            .run(&cases, |(op, len, so, dof, value, seed)| {
                let data = pattern(len, seed);
                let src = Buf {
                    off: a.off + so,
                    len,
                };
                let dst = Buf {
                    off: b.off + dof,
                    len: len.max(32),
                };
                dev.write(src, 0, &data).unwrap();
                let op = [JobOp::Copy, JobOp::Fill, JobOp::Crc32c, JobOp::Sha256][op];
                let value = match op {
                    JobOp::Fill => value & 0xFF,
                    JobOp::Crc32c => value,
                    _ => 0,
                };
                let c = run(
                    &dev,
                    &mut q.borrow_mut(),
                    Job {
                        op,
                        src: Some(src.into()),
                        dst: Some(dst.into()),
                        len: len as u32,
                        value,
                    },
                );
                prop_assert_eq!(c.status, JobStatus::Ok);
                match op {
                    JobOp::Copy | JobOp::Fill => {
                        let mut out = vec![0u8; len];
                        dev.read(dst, 0, &mut out).unwrap();
                        let want = if op == JobOp::Copy {
                            data.clone()
                        } else {
                            vec![value as u8; len]
                        };
                        prop_assert!(out == want);
                        prop_assert_eq!(c.result, len as u64);
                    }
                    JobOp::Crc32c => prop_assert_eq!(c.result, jobs::crc32c(value, &data) as u64),
                    JobOp::Sha256 => {
                        let mut out = [0u8; 32];
                        dev.read(dst, 0, &mut out).unwrap();
                        prop_assert_eq!(out, sha256(&data));
                    }
                }
                Ok(())
            })
            .unwrap();
    }
}

/// A client that maps its data memory without a file descriptor (as a client whose memory
/// cannot be shared does): the device reaches it with DMA_READ and DMA_WRITE messages, which
/// this raw client answers from its own buffer while it waits for completions. Rings must
/// still be in memory shared by descriptor.
#[test]
fn jobs_reach_memory_mapped_without_a_file_through_dma_messages() {
    use shared_abi::jobs::{Cqe, Sqe, SqeHead};
    use shared_abi::regs::{queue, vf, QueueCtrl};
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::net::UnixStream;
    use vfio_user_wire::framing::{self, Wait};
    use vfio_user_wire::proto::{cmd, flags, Header};
    use zerocopy::{FromZeros, IntoBytes};

    struct Poll;
    impl Wait for Poll {
        fn idle(&mut self) -> bool {
            true
        }
        fn more(&mut self) -> bool {
            true
        }
    }
    let sim = with_vfs(1);
    // Wait until the firmware has enabled the VF.
    drop(VfDev::open(&vf_socket(&sim, 0), 4096).unwrap());
    let s = UnixStream::connect(vf_socket(&sim, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut id = 0u16;
    let mut send = |command: u16, p: &[u8], fds: &[i32]| {
        id += 1;
        let h = Header {
            msg_id: id,
            command,
            size: (16 + p.len()) as u32,
            flags: flags::TYPE_COMMAND,
            error: 0,
        };
        framing::send(&s, &h, p, fds).unwrap();
        id
    };
    // Our buffer behind IOVA 2^33, mapped with no descriptor.
    const DATA: u64 = 1 << 33;
    // What this client takes in one message (the device's own step is 64 KiB).
    const XFER: usize = 16 << 10;
    let mut memory = pattern(1 << 20, 5);
    let original = memory.clone();
    let (mut reads, mut writes) = (0, 0);
    // Commands of our own sent between a device request and its answer (ids from 0x8000),
    // and their replies: one shared socket carries both ways' requests, and a client that
    // interleaves them must not wedge it.
    let (interleaved, answered) = (std::cell::Cell::new(0u16), std::cell::Cell::new(0u16));
    let mut reader = framing::Reader::new();
    // Answers the device's requests until `done` says the awaited reply or completion came.
    let mut serve = |memory: &mut Vec<u8>, until: &mut dyn FnMut(&Header) -> bool| {
        let deadline = std::time::Instant::now() + T;
        loop {
            assert!(std::time::Instant::now() < deadline, "nothing came");
            let Some((h, body, _)) = reader.recv(&s, 2 << 20, &mut Poll).unwrap() else {
                if until(&Header::default()) {
                    return;
                }
                continue;
            };
            if h.flags & flags::TYPE_MASK == flags::TYPE_COMMAND
                && (h.command == cmd::DMA_READ || h.command == cmd::DMA_WRITE)
            {
                let addr = u64::from_ne_bytes(body[0..8].try_into().unwrap());
                let count = u64::from_ne_bytes(body[8..16].try_into().unwrap()) as usize;
                // Never more than this client's max_data_xfer_size.
                assert!(count <= XFER, "a DMA message of {count} bytes");
                let at = (addr - DATA) as usize;
                if (reads + writes) % 3 == 0 {
                    // Our own config read first, the device's request still unanswered.
                    let p = [
                        &0u64.to_ne_bytes()[..],
                        &7u32.to_ne_bytes(),
                        &4u32.to_ne_bytes(),
                    ]
                    .concat();
                    let q = Header {
                        msg_id: 0x8000 + interleaved.get(),
                        command: cmd::REGION_READ,
                        size: 16 + p.len() as u32,
                        flags: flags::TYPE_COMMAND,
                        error: 0,
                    };
                    framing::send(&s, &q, &p, &[]).unwrap();
                    interleaved.set(interleaved.get() + 1);
                }
                let mut reply = body[..16].to_vec();
                if h.command == cmd::DMA_READ {
                    reply.extend_from_slice(&memory[at..at + count]);
                    reads += 1;
                } else {
                    memory[at..at + count].copy_from_slice(&body[16..16 + count]);
                    writes += 1;
                }
                let rh = Header {
                    msg_id: h.msg_id,
                    command: h.command,
                    size: (16 + reply.len()) as u32,
                    flags: flags::TYPE_REPLY,
                    error: 0,
                };
                framing::send(&s, &rh, &reply, &[]).unwrap();
                continue;
            }
            if h.msg_id >= 0x8000 && h.flags & flags::TYPE_MASK == flags::TYPE_REPLY {
                assert_eq!(h.flags & flags::ERROR, 0, "an interleaved read failed");
                assert_eq!(
                    u16::from_le_bytes([body[16], body[17]]),
                    shared_abi::pci::VENDOR_ID
                );
                answered.set(answered.get() + 1);
                continue;
            }
            if until(&h) {
                return;
            }
        }
    };
    let mut call = |command: u16, p: &[u8], fds: &[i32], memory: &mut Vec<u8>| {
        let want = send(command, p, fds);
        serve(memory, &mut |h| {
            if h.msg_id == want && h.flags & flags::TYPE_MASK == flags::TYPE_REPLY {
                assert_eq!(
                    h.flags & flags::ERROR,
                    0,
                    "command {command} failed: {}",
                    h.error
                );
                true
            } else {
                false
            }
        });
    };
    call(
        cmd::VERSION,
        &[
            &0u16.to_ne_bytes()[..],
            &1u16.to_ne_bytes(),
            format!("{{\"capabilities\":{{\"max_data_xfer_size\":{XFER}}}}}\0").as_bytes(),
        ]
        .concat(),
        &[],
        &mut memory,
    );
    // Rings in a shared memfd at IOVA 2^32.
    let rings =
        nix::sys::memfd::memfd_create(c"rings", nix::sys::memfd::MFdFlags::empty()).unwrap();
    nix::unistd::ftruncate(&rings, 8192).unwrap();
    let map = |addr: u64, size: u64| {
        [
            &32u32.to_ne_bytes()[..],
            &3u32.to_ne_bytes(),
            &0u64.to_ne_bytes(),
            &addr.to_ne_bytes(),
            &size.to_ne_bytes(),
        ]
        .concat()
    };
    call(
        cmd::DMA_MAP,
        &map(1 << 32, 8192),
        &[rings.as_raw_fd()],
        &mut memory,
    );
    call(cmd::DMA_MAP, &map(DATA, 1 << 20), &[], &mut memory);
    let base = vf::queue(0) as u64;
    for (r, v) in [
        (queue::SQ_BASE_LO, 0),
        (queue::SQ_BASE_HI, 1),
        (queue::SQ_SIZE, 4),
        (queue::CQ_BASE_LO, 4096),
        (queue::CQ_BASE_HI, 1),
        (queue::CQ_SIZE, 4),
        (queue::CONTROL, QueueCtrl::ENABLE.bits()),
    ] {
        let mut p = (base + r.offset() as u64).to_ne_bytes().to_vec();
        p.extend_from_slice(&0u32.to_ne_bytes());
        p.extend_from_slice(&4u32.to_ne_bytes());
        p.extend_from_slice(&v.to_le_bytes());
        call(cmd::REGION_WRITE, &p, &[], &mut memory);
    }
    // Job 0: CRC32C of 200,000 bytes at DATA + 123. Job 1: copy them to DATA + 600,000.
    let jobs_ = [
        (JobOp::Crc32c, DATA + 123, 0u64),
        (JobOp::Copy, DATA + 123, DATA + 600_000),
    ];
    for (slot, (op, src, dst)) in jobs_.iter().enumerate() {
        let mut e = Sqe::new_zeroed();
        e.tag = (slot as u32).into();
        e.src = (*src).into();
        e.dst = (*dst).into();
        e.len = 200_000u32.into();
        let head = SqeHead {
            phase: 1,
            version: jobs::VERSION,
            op: op.wire(),
            flags: 0,
        };
        let b = e.as_bytes();
        nix::sys::uio::pwrite(rings.as_fd(), &b[4..], slot as i64 * 64 + 4).unwrap();
        nix::sys::uio::pwrite(
            rings.as_fd(),
            &head.to_word().to_le_bytes(),
            slot as i64 * 64,
        )
        .unwrap();
    }
    // Serve the device's DMA requests until both completions are in the ring.
    let cqe = |i: i64| {
        let mut b = [0u8; 16];
        nix::sys::uio::pread(rings.as_fd(), &mut b, 4096 + i * 16).unwrap();
        b
    };
    serve(&mut memory, &mut |_| {
        (0..2).all(|i| Cqe::phase_of(u32::from_le_bytes(cqe(i)[12..16].try_into().unwrap())) == 1)
    });
    for i in 0..2 {
        let c = cqe(i);
        let status = u32::from_le_bytes(c[12..16].try_into().unwrap());
        assert_eq!(Cqe::status_of(status), Some(JobStatus::Ok), "job {i}");
    }
    let crc = u64::from_le_bytes(cqe(0)[0..8].try_into().unwrap());
    assert_eq!(crc, jobs::crc32c(0, &original[123..200_123]) as u64);
    assert!(
        memory[600_000..800_000] == original[123..200_123],
        "the copy landed in our buffer"
    );
    // Every command sent in the middle of a device request was answered (the last ones'
    // replies may trail the final completion).
    serve(&mut memory, &mut |_| answered.get() == interleaved.get());
    assert!(
        interleaved.get() > 10,
        "{interleaved:?} interleaved commands"
    );
    assert!(
        reads >= 2 * 200_000 / XFER && writes >= 200_000 / XFER,
        "{reads} {writes}"
    );
    // Rings themselves must be shared by descriptor: queue 1 with its rings in our buffer is
    // refused with DMA_ERROR in STATUS.
    let raw = host_driver::vfio_user::VfioUser::connect(&vf_socket(&sim, 0), false).unwrap();
    let q1 = vf::queue(1) as u64;
    for (r, v) in [
        (queue::SQ_BASE_LO, 0),
        (queue::SQ_BASE_HI, 2),
        (queue::SQ_SIZE, 4),
        (queue::CQ_BASE_LO, 4096),
        (queue::CQ_BASE_HI, 2),
        (queue::CQ_SIZE, 4),
        (queue::CONTROL, QueueCtrl::ENABLE.bits()),
    ] {
        raw.region_write(0, q1 + r.offset() as u64, &v.to_le_bytes())
            .unwrap();
    }
    let deadline = std::time::Instant::now() + T;
    let status = loop {
        let mut b = [0u8; 4];
        raw.region_read(0, q1 + queue::STATUS.offset() as u64, &mut b)
            .unwrap();
        let st = u32::from_le_bytes(b);
        if st != 0 || std::time::Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    assert_eq!(status, jobs::queue_status::DMA_ERROR);
}

/// The device dies under a tenant with jobs in flight: the job library reports it within a
/// couple of seconds; it does not hang waiting for completions that will never come.
#[test]
fn a_device_that_dies_mid_traffic_is_an_error_not_a_hang() {
    let mut sim = with_vfs(1);
    let mut dev = VfDev::open(&vf_socket(&sim, 0), 20 << 20).unwrap();
    let mut q = dev.queue(0, 8).unwrap();
    let (src, dst) = (
        dev.alloc(8 << 20, 4096).unwrap(),
        dev.alloc(8 << 20, 4096).unwrap(),
    );
    // Frozen first, so none of the jobs can complete before it dies.
    sim.freeze();
    for _ in 0..8 {
        let j = job_of(
            JobOp::Copy,
            Some(src.into()),
            Some(dst.into()),
            src.len as u32,
            0,
        );
        dev.submit(&mut q, &j).unwrap();
    }
    sim.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = sim.stop();
    let t = std::time::Instant::now();
    let mut outcome = Ok(());
    for _ in 0..8 {
        if let Err(e) = dev.wait(&mut q, T) {
            outcome = Err(e);
            break;
        }
    }
    let e = outcome.expect_err("completions cannot all arrive from a dead device");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}: {e}",
        t.elapsed()
    );
}
