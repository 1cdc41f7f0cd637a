//! One tenant against another on the data path, through an in-process device whose engine can
//! be slowed down (`Device::inject_step_delay`) so that a test acts while a job is under way:
//! a job never outlives its VF's grant on memory, a replaced client's old jobs never run into
//! the new client, and a translation root near the top of the address space is a fault, not
//! a dead engine.
use accelvirt_tests::{pattern, Silent, RING_IOVA};
use host_driver::vf::{Addr, Buf, Job, VfDev};
use host_driver::{Accel, CreateSpec};
use shared_abi::jobs::{self, xlat, JobOp, JobStatus};
use shared_abi::resources::VfSpec;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);
/// Granules (2 MiB) each VF starts with: VF 0 holds [0, 512), VF 1 [512, 1024).
const GRANULES: u32 = 512;
const ROOT: u64 = 0x10_0000; // VF-physical address of VF 1's stage-1 table
const DATA: u64 = 0x100_0000; // VF-physical pages the table maps
const LEN: usize = 16 << 20; // one job: 64 steps of 256 KiB
const PAGES: u32 = (LEN / 4096) as u32;
/// VF 1's table maps its VA pages round a window of this many pages, so a job's later steps
/// use translations its IOTLB cached in the first (the attack's way to outlive a grant).
const WINDOW: usize = 64;

/// The tests here measure rates and wait on a slowed engine: each holds this while it runs,
/// so the others' devices do not take its cores.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// An in-process device, a worker per core, with `vfs` VFs of 2 engines and 512 granules.
fn device(vfs: u16) -> (sim::inprocess::InProcess, tokio::runtime::Runtime, Accel) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spec = VfSpec::new(2, GRANULES, 4, 4, 0);
    accelvirt_tests::device_in_process(cores, vfs, CreateSpec::Uniform(spec))
}

fn job(op: JobOp, src: Option<Addr>, dst: Option<Addr>, len: usize) -> Job {
    Job {
        op,
        src,
        dst,
        len: len as u32,
        value: 0,
    }
}

/// Counts the 4 KiB pages of `got` equal to the same page of `theirs`.
fn pages_equal(got: &[u8], theirs: &[u8]) -> usize {
    got.chunks(4096)
        .zip(theirs.chunks(4096))
        .filter(|(a, b)| a == b)
        .count()
}

/// The attack run's first finding: a long job of VF 1 kept its translations past
/// `destroy-vf 1` and `vf resize 0`, and read and wrote VF 0's memory in VF 1's old granules.
/// Now every step checks VF 1's grant: the jobs stop at their next step and no byte crosses.
#[test]
fn a_job_does_not_outlive_its_vfs_grant_on_memory() {
    let _one = serial();
    let (r, rt, acc) = device(2);
    let mut dev = VfDev::open(&r.vf_socket(1), 2 * LEN + (1 << 20)).unwrap();
    let mut q0 = dev.queue(0, 4).unwrap();
    let mut q1 = dev.queue(1, 4).unwrap();
    // VF 1's stage-1 table maps VA page i to VF-physical DATA + (i mod WINDOW) pages.
    let entries: Vec<u8> = (0..PAGES as u64)
        .flat_map(|i| xlat::entry(DATA + (i % WINDOW as u64) * 4096, true).to_le_bytes())
        .collect();
    dev.write_device(ROOT, &entries).unwrap();
    dev.set_translation(ROOT, PAGES).unwrap();
    let mine = pattern(WINDOW * 4096, 2).repeat(LEN / (WINDOW * 4096));
    dev.write_device(DATA, &mine[..WINDOW * 4096]).unwrap();
    let (out, src) = (dev.alloc(LEN, 4096).unwrap(), dev.alloc(LEN, 4096).unwrap());
    let incoming = pattern(LEN, 3);
    dev.write(src, 0, &incoming).unwrap();
    // Two long jobs: device → host (reads VF 1's memory) and host → device (writes it).
    r.dev.inject_step_delay(Duration::from_millis(20));
    dev.submit(
        &mut q0,
        &job(JobOp::Copy, Some(Addr::Device(0)), Some(out.into()), LEN),
    )
    .unwrap();
    dev.submit(
        &mut q1,
        &job(JobOp::Copy, Some(src.into()), Some(Addr::Device(0)), LEN),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    // The administrator destroys VF 1 and gives its memory to VF 0, whose tenant fills it.
    rt.block_on(acc.destroy_vf(1)).unwrap();
    let spec = VfSpec::new(2, 2 * GRANULES, 4, 4, 0);
    let grown = rt.block_on(acc.resize(0, spec)).unwrap();
    assert_eq!(
        (grown.mem_base.get(), grown.mem_granules.get()),
        (0, 2 * GRANULES),
        "VF 0 grew in place over VF 1's granules (the test's premise)"
    );
    let victim = VfDev::open(&r.vf_socket(0), 4096).unwrap();
    // VF 1's DATA, as VF 0 now addresses it.
    let at = ((GRANULES as u64) << 21) + DATA;
    let secret = pattern(WINDOW * 4096, 1);
    victim.write_device(at, &secret).unwrap();
    let secret_seen = secret.repeat(LEN / (WINDOW * 4096));
    // Had VF 1's jobs gone on (a step every 20 ms), this is long enough for many more steps.
    std::thread::sleep(Duration::from_millis(600));
    let mut seen = vec![0u8; LEN];
    dev.read(out, 0, &mut seen).unwrap();
    let copied = pages_equal(&seen, &mine);
    assert!(
        copied > 0 && copied < LEN / 4096,
        "VF 1's read job was cut short while under way ({copied} pages of its own data)"
    );
    assert_eq!(
        pages_equal(&seen, &secret_seen),
        0,
        "no page of VF 0's data reached VF 1's tenant"
    );
    let mut now = vec![0u8; WINDOW * 4096];
    victim.read_device(at, &mut now).unwrap();
    assert_eq!(
        pages_equal(&now, &secret),
        WINDOW,
        "no byte of VF 1's job landed in VF 0's memory"
    );
    r.dev.inject_step_delay(Duration::ZERO);
    drop(q0);
    drop(q1);
}

/// A job in flight when its client is replaced: the new client's queue works, and the old
/// client's jobs do not run again into the new client's memory.
#[test]
fn a_replaced_client_gets_a_working_queue_and_none_of_the_old_jobs() {
    let _one = serial();
    let (r, _rt, _acc) = device(1);
    r.dev.inject_step_delay(Duration::from_millis(20));
    {
        let mut old = VfDev::open(&r.vf_socket(0), 2 * LEN + (1 << 20)).unwrap();
        let mut q = old.queue(0, 4).unwrap();
        let (a, b) = (old.alloc(LEN, 4096).unwrap(), old.alloc(LEN, 4096).unwrap());
        for _ in 0..4 {
            old.submit(
                &mut q,
                &job(JobOp::Copy, Some(a.into()), Some(b.into()), LEN),
            )
            .unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    } // the old client goes with its jobs in flight
    r.dev.inject_step_delay(Duration::ZERO);
    // The old client's connection lets go of the VF's DMA space as soon as its thread sees
    // the hang-up (after the step under way): until then a new client's map gets EBUSY.
    let deadline = Instant::now() + T;
    let mut new = loop {
        match VfDev::open(&r.vf_socket(0), 2 << 20) {
            Ok(d) => break d,
            Err(host_driver::Error::Remote {
                errno: nix::errno::Errno::EBUSY,
                ..
            }) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("{e}"),
        }
    };
    let mut q = new.queue(0, 4).unwrap();
    let buf: Buf = new.alloc(64 << 10, 4096).unwrap();
    let data = pattern(buf.len, 9);
    new.write(buf, 0, &data).unwrap();
    let want = jobs::crc32c(0, &data) as u64;
    for _ in 0..20 {
        let tag = new
            .submit(&mut q, &job(JobOp::Crc32c, Some(buf.into()), None, buf.len))
            .unwrap();
        let c = new.wait(&mut q, T).unwrap();
        assert_eq!((c.tag, c.status, c.result), (tag, JobStatus::Ok, want));
    }
    assert_eq!(q.inflight(), 0, "no completion of an old job arrived");
}

/// A stage-1 root near 2^64: its entries' addresses would wrap. The job fails with a stage-1
/// fault; the engine lives on and the next job runs.
#[test]
fn a_translation_root_near_the_top_of_the_address_space_faults_the_job_only() {
    let _one = serial();
    let (r, _rt, _acc) = device(1);
    let mut dev = VfDev::open(&r.vf_socket(0), 2 << 20).unwrap();
    let mut q = dev.queue(0, 4).unwrap();
    let buf = dev.alloc(8192, 4096).unwrap();
    dev.set_translation(u64::MAX - 4095, 1 << 20).unwrap();
    let started = Instant::now();
    dev.submit(
        &mut q,
        &job(
            JobOp::Copy,
            Some(Addr::Device(0x7000_0000)),
            Some(buf.into()),
            4096,
        ),
    )
    .unwrap();
    let c = dev.wait(&mut q, T).unwrap();
    assert_eq!(c.status, JobStatus::Stage1Fault);
    assert!(started.elapsed() < T);
    let c = {
        dev.submit(&mut q, &job(JobOp::Fill, None, Some(buf.into()), 4096))
            .unwrap();
        dev.wait(&mut q, T).unwrap()
    };
    assert_eq!(c.status, JobStatus::Ok, "the engine is alive");
}

/// The same grant, for a VF that stays enabled: VF 1 shrinks while its long job reads memory
/// in the half it gives back. The job stops with ABORTED at its next step (its cached
/// translations are not used again), and none of the released memory reaches its host buffer.
#[test]
fn a_vf_resized_under_a_running_job_aborts_it() {
    let _one = serial();
    let (r, rt, acc) = device(2);
    let mut dev = VfDev::open(&r.vf_socket(1), LEN + (1 << 20)).unwrap();
    let mut q = dev.queue(0, 4).unwrap();
    // The window lies in VF 1's upper half, which the resize releases.
    let data = (GRANULES as u64 / 2) << 21;
    let entries: Vec<u8> = (0..PAGES as u64)
        .flat_map(|i| xlat::entry(data + (i % WINDOW as u64) * 4096, true).to_le_bytes())
        .collect();
    dev.write_device(ROOT, &entries).unwrap();
    dev.set_translation(ROOT, PAGES).unwrap();
    let mine = pattern(WINDOW * 4096, 4);
    dev.write_device(data, &mine).unwrap();
    let out = dev.alloc(LEN, 4096).unwrap();
    r.dev.inject_step_delay(Duration::from_millis(20));
    let tag = dev
        .submit(
            &mut q,
            &job(JobOp::Copy, Some(Addr::Device(0)), Some(out.into()), LEN),
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let spec = VfSpec::new(2, GRANULES / 2, 4, 4, 0);
    rt.block_on(acc.resize(1, spec)).unwrap();
    let c = dev.wait(&mut q, T).unwrap();
    r.dev.inject_step_delay(Duration::ZERO);
    assert_eq!((c.tag, c.status), (tag, JobStatus::Aborted));
    let mut seen = vec![0u8; LEN];
    dev.read(out, 0, &mut seen).unwrap();
    let zero = vec![0u8; 4096];
    let scrubbed = seen.chunks(4096).filter(|p| *p == zero.as_slice()).count();
    let copied = pages_equal(&seen, &mine.repeat(LEN / (WINDOW * 4096)));
    assert!(copied > 0, "the job was under way");
    assert_eq!(
        copied + scrubbed,
        LEN / 4096,
        "every page is VF 1's own data or untouched"
    );
}

/// CRC32C jobs of `len` bytes kept `depth` deep on `dev`'s queue `q` for `d`, each checked:
/// jobs per second.
fn rate(dev: &mut VfDev, q: &mut host_driver::vf::Queue, buf: Buf, d: Duration) -> f64 {
    let mut data = vec![0u8; buf.len];
    dev.read(buf, 0, &mut data).unwrap();
    let want = jobs::crc32c(0, &data) as u64;
    let j = job(JobOp::Crc32c, Some(buf.into()), None, buf.len);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < d {
        while q.inflight() < q.depth() {
            dev.submit(q, &j).unwrap();
        }
        let c = dev.wait(q, T).unwrap();
        assert_eq!((c.status, c.result), (JobStatus::Ok, want));
        n += 1;
    }
    while q.inflight() > 0 {
        dev.wait(q, T).unwrap();
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The attack run's fourth finding: a tenant whose job data is mapped without a descriptor
/// and who never answers the device's DMA requests stopped every VF's data path (the one
/// engine thread waited 500 ms per request). Now that job waits on its own client's thread:
/// another VF keeps its jobs/s, and the PF resets the silent VF at once.
#[test]
fn a_client_that_never_answers_dma_stalls_only_its_own_queue() {
    let _one = serial();
    let (r, rt, acc) = device(2);
    let mut dev = VfDev::open(&r.vf_socket(0), 1 << 20).unwrap();
    let mut q = dev.queue(0, 4).unwrap();
    let buf = dev.alloc(64 << 10, 4096).unwrap();
    dev.write(buf, 0, &pattern(buf.len, 6)).unwrap();
    let quiet = rate(&mut dev, &mut q, buf, Duration::from_millis(700));
    let attacker = Silent::connect(&r.vf_socket(1));
    // Every queue it has: more than the engine has workers.
    attacker.post(0..4, 8);
    std::thread::sleep(Duration::from_millis(50));
    let loud = rate(&mut dev, &mut q, buf, Duration::from_millis(700));
    assert!(
        loud >= 0.5 * quiet,
        "VF 0 kept {loud:.0} of its quiet {quiet:.0} jobs/s"
    );
    let t = Instant::now();
    rt.block_on(acc.reset(1)).unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "the PF reset the silent VF in {:?}",
        t.elapsed()
    );
    let after = rate(&mut dev, &mut q, buf, Duration::from_millis(300));
    assert!(after >= 0.5 * quiet, "{after:.0} of {quiet:.0} jobs/s");
    drop(attacker);
}

/// The attack's fifth finding: rings armed in memory passed by descriptor, then remapped to
/// memory without one, made the device write completions through messages under its locks.
/// Rings are pinned when armed: the remap stops that queue (DMA_ERROR), and nothing else.
#[test]
fn rings_remapped_after_arming_stop_their_queue_only() {
    let _one = serial();
    use shared_abi::regs::{queue, vf};
    use vfio_user_wire::proto::{cmd, DmaMap, DmaUnmap, DMA_FLAG_READ, DMA_FLAG_WRITE};
    use zerocopy::IntoBytes;
    let (r, _rt, _acc) = device(2);
    let attacker = Silent::connect(&r.vf_socket(1));
    attacker.post(1..2, 0); // armed, nothing posted yet
    let status = |t: &host_driver::vfio_user::VfioUser| {
        let mut b = [0u8; 4];
        t.region_read(
            0,
            vf::queue(1) as u64 + queue::STATUS.offset() as u64,
            &mut b,
        )
        .unwrap();
        u32::from_le_bytes(b)
    };
    let deadline = Instant::now() + T;
    while Instant::now() < deadline && status(&attacker.regs) != 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let unmap = DmaUnmap {
        argsz: 24,
        flags: 0,
        addr: RING_IOVA,
        size: 8192,
    };
    attacker
        .t
        .call(cmd::DMA_UNMAP, unmap.as_bytes(), &[], "unmap")
        .unwrap();
    let map = DmaMap {
        argsz: 32,
        flags: DMA_FLAG_READ | DMA_FLAG_WRITE,
        offset: 0,
        addr: RING_IOVA,
        size: 8192,
    };
    attacker
        .t
        .call(cmd::DMA_MAP, map.as_bytes(), &[], "map")
        .unwrap();
    let deadline = Instant::now() + T;
    while status(&attacker.regs) != jobs::queue_status::DMA_ERROR {
        assert!(
            Instant::now() < deadline,
            "the remapped queue stopped (status {})",
            status(&attacker.regs)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut dev = VfDev::open(&r.vf_socket(0), 1 << 20).unwrap();
    let mut q = dev.queue(0, 4).unwrap();
    let buf = dev.alloc(4096, 4096).unwrap();
    dev.write(buf, 0, &pattern(4096, 8)).unwrap();
    assert!(rate(&mut dev, &mut q, buf, Duration::from_millis(100)) > 0.0);
}

/// The attack's sixth finding: 16 MiB SHA-256 jobs on the attacker's own engine took the
/// victim, on another engine, to 2.9 % of its quiet throughput (every engine was time-sliced
/// on one thread, and jobs were not preemptible). Engines now run on parallel workers: with
/// no more busy engines than the host has cores, the victim keeps its throughput.
#[test]
fn a_vf_on_its_own_engine_keeps_its_throughput_under_a_neighbours_long_jobs() {
    let _one = serial();
    let spec = VfSpec::new(1, GRANULES, 4, 4, 0);
    let (r, rt, acc) = accelvirt_tests::device_in_process(2, 2, CreateSpec::Uniform(spec));
    let masks: Vec<u32> = rt
        .block_on(acc.vfs())
        .unwrap()
        .iter()
        .map(|v| v.engine_mask.get())
        .collect();
    assert_eq!(masks[0] & masks[1], 0, "each VF has an engine of its own");
    // The victim keeps its queue deep and sleeps between looks, so its own client takes
    // almost no CPU: what it gets is what the device gives it (two cores here, one each for
    // the two busy engines).
    let mut dev = VfDev::open(&r.vf_socket(0), 1 << 20).unwrap();
    let mut q = dev.queue(0, 64).unwrap();
    let buf = dev.alloc(256 << 10, 4096).unwrap();
    dev.write(buf, 0, &pattern(buf.len, 11)).unwrap();
    let want = jobs::crc32c(0, &pattern(buf.len, 11)) as u64;
    let mut rate = |d: Duration| {
        let j = job(JobOp::Crc32c, Some(buf.into()), None, buf.len);
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < d {
            while q.inflight() < q.depth() {
                dev.submit(&mut q, &j).unwrap();
            }
            std::thread::sleep(Duration::from_millis(1));
            while let Some(c) = dev.poll(&mut q) {
                assert_eq!((c.status, c.result), (JobStatus::Ok, want));
                n += 1;
            }
        }
        let t = start.elapsed().as_secs_f64();
        while q.inflight() > 0 {
            dev.wait(&mut q, T).unwrap();
        }
        n as f64 / t
    };
    let quiet = rate(Duration::from_millis(1000));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attacker = {
        let (sock, stop) = (r.vf_socket(1), stop.clone());
        std::thread::spawn(move || {
            let mut a = VfDev::open(&sock, LEN + (1 << 20)).unwrap();
            let mut qs: Vec<_> = (0..4).map(|i| a.queue(i, 2).unwrap()).collect();
            let (src, dst) = (a.alloc(LEN, 4096).unwrap(), a.alloc(4096, 4096).unwrap());
            let j = job(JobOp::Sha256, Some(src.into()), Some(dst.into()), LEN);
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for q in &mut qs {
                    while q.inflight() < q.depth() {
                        a.submit(q, &j).unwrap();
                    }
                    // Its completions come slowly: it sleeps between looks.
                    if let Some(c) = a.poll(q) {
                        assert_eq!(c.status, JobStatus::Ok);
                        n += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let busy = || rt.block_on(acc.stats()).unwrap().1[1].engine_us.get();
    let before = busy();
    let loud = rate(Duration::from_millis(1000));
    let used = busy() - before;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    attacker.join().unwrap();
    assert!(
        used > 800_000,
        "the neighbour kept its engine busy ({used} us of engine time in about 1 s)"
    );
    assert!(
        loud >= 0.8 * quiet,
        "VF 0 kept {loud:.0} of its quiet {quiet:.0} jobs/s ({:.0} %)",
        100.0 * loud / quiet
    );
}

/// The attack's ninth finding: BAR2 and BAR0 fault floods from one VF raised another VF's
/// register read p99 40-fold. VF accesses now share the virtualization unit's lock, and
/// interrupts are signalled after it: the victim's p99 stays within 3x of quiet. Against an
/// `accel-sim` process (its firmware core a process of its own), with 24 flooding clients:
/// on the code before this change the BAR2 flood gave 3.7x.
#[test]
fn fault_floods_from_one_vf_leave_anothers_register_reads_alone() {
    let _one = serial();
    let sim = accelvirt_tests::Sim::start();
    // 1 GiB each: BAR2 (4 GiB) reaches past the window.
    let o = sim.ctl(&[
        "create-vf",
        "--count",
        "2",
        "--engines",
        "2",
        "--memory",
        "1G",
        "--queues",
        "4",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let vf = |v: u16| vfio_user_wire::vf_socket_path(&sim.sock, v);
    let victim = host_driver::vfio_user::VfioUser::connect(&vf(0), false).unwrap();
    let sample = |n: usize| {
        let mut v: Vec<Duration> = (0..n)
            .map(|_| {
                let t = Instant::now();
                let mut b = [0u8; 4];
                victim.region_read(0, 0, &mut b).unwrap();
                let d = t.elapsed();
                std::thread::sleep(Duration::from_micros(200));
                d
            })
            .collect();
        v.sort();
        v[n * 99 / 100]
    };
    sample(200);
    let quiet = sample(1500);
    // (BAR, offset, write): past the memory window; a read-only register.
    let mut louds = Vec::new();
    for (bar, off, write) in [(2u32, (1u64 << 32) - 4096, false), (0, 0, true)] {
        let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flooders: Vec<_> = (0..24)
            .map(|_| {
                let (p, f) = (vf(1), flooding.clone());
                std::thread::spawn(move || {
                    let c = host_driver::vfio_user::VfioUser::connect(&p, false).unwrap();
                    let mut b = [0u8; 4];
                    while f.load(std::sync::atomic::Ordering::Relaxed) {
                        if write {
                            c.region_write(bar, off, &b).unwrap();
                        } else {
                            c.region_read(bar, off, &mut b).unwrap();
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let loud = sample(1500);
        flooding.store(false, std::sync::atomic::Ordering::Relaxed);
        for f in flooders {
            f.join().unwrap();
        }
        louds.push((bar, loud));
    }
    // Quiet is measured again after the floods, and the larger taken: this machine's own
    // noise moves a quiet p99 by half between runs.
    let quiet = quiet.max(sample(1500));
    for (bar, loud) in louds {
        assert!(
            loud <= quiet * 3,
            "BAR{bar} fault flood: the victim's p99 {loud:?} against {quiet:?} quiet"
        );
    }
    let stats = sim.ctl_json(&["stats"]);
    assert!(
        stats["vfs"][1]["faults"].as_u64() > Some(0),
        "faults counted on the flooder: {stats}"
    );
    assert_eq!(stats["vfs"][0]["faults"], 0, "and none on the victim");
}

/// A QoS change is not a change of what a VF holds: the VF's jobs running across it finish,
/// correctly (a weight change once moved the bank generation, and so aborted them).
#[test]
fn a_weight_change_does_not_stop_the_vfs_running_jobs() {
    let _one = serial();
    let (r, rt, acc) = device(1);
    let mut dev = VfDev::open(&r.vf_socket(0), LEN + (1 << 20)).unwrap();
    let mut q = dev.queue(0, 4).unwrap();
    let src = dev.alloc(LEN, 4096).unwrap();
    let data = pattern(LEN, 9);
    dev.write(src, 0, &data).unwrap();
    // One long job (64 steps, 20 ms each), the weight changed while it runs.
    r.dev.inject_step_delay(Duration::from_millis(20));
    dev.submit(&mut q, &job(JobOp::Crc32c, Some(src.into()), None, LEN))
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    rt.block_on(acc.set_qos(0, 700)).unwrap();
    let c = dev.wait(&mut q, T).unwrap();
    r.dev.inject_step_delay(Duration::ZERO);
    assert_eq!(
        (c.status, c.result),
        (JobStatus::Ok, jobs::crc32c(0, &data) as u64),
        "the job ran on across the QoS change"
    );
}
