//! Mailbox round trip host → firmware → host over the mapped BAR and over vfio-user messages,
//! and create-vf for 1, 4, 16 and 64 VFs (in-library and as a whole accelctl process). The
//! device model runs in this process, served on a real UNIX socket.
use criterion::{criterion_group, BenchmarkId, Criterion};
use host_driver::vfio_user::VfioUser;
use host_driver::{Accel, CreateSpec};
use shared_abi::board::Board;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Sim {
    stop: Arc<AtomicBool>,
    sock: PathBuf,
    _dir: tempfile::TempDir,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Sim {
    fn start() -> Sim {
        // Sockets in a tmpfs, as in production (/run): on a disk filesystem each VF socket's
        // inode costs several microseconds more (ext4: about 1 ms for 64 binds and unlinks).
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .unwrap();
        let sock = dir.path().join("bench.sock");
        let dev = sim::Device::new(Board::DEFAULT, 64).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let fw = sim::fwhost::spawn(dev.clone(), stop.clone(), 1).unwrap();
        let (s, p) = (stop.clone(), sock.clone());
        let srv = std::thread::spawn(move || {
            let _ = sim::vfio_user::server::Server::run(dev, &p, s);
        });
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
        Sim {
            stop,
            sock,
            _dir: dir,
            threads: vec![fw, srv],
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn open(sim: &Sim, mmap: bool) -> Accel {
    let t = VfioUser::connect(&sim.sock, mmap).unwrap();
    assert_eq!(t.is_mapped(), mmap);
    Accel::with_transport(Arc::new(t), Duration::from_secs(5)).unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The bare limit of the mapped path: two threads bouncing a counter through a shared
/// memfd page, the responder spinning as the firmware does.
struct PingPong {
    mem: Arc<sim::sys::SharedMem>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    seq: u32,
}

impl PingPong {
    /// `napping`: the responder naps like the firmware thread once idle.
    fn start(napping: bool) -> PingPong {
        let mem = Arc::new(sim::sys::SharedMem::create("pingpong", 4096).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (mem.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut last = 0;
            let mut idle = sim::fwhost::Idle::default();
            while !s.load(Ordering::Relaxed) {
                let v = m.observe32(0);
                if v != last {
                    last = v;
                    idle.busy();
                    m.publish32(64, v);
                } else if napping {
                    idle.idle();
                }
                std::hint::spin_loop();
            }
        });
        PingPong {
            mem,
            stop,
            thread: Some(thread),
            seq: 0,
        }
    }
    fn round_trip(&mut self) {
        self.seq = self.seq.wrapping_add(1);
        self.mem.publish32(0, self.seq);
        while self.mem.observe32(64) != self.seq {
            std::hint::spin_loop();
        }
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The bare limit of the message path: one 16-byte UNIX-socket round trip to an echo thread.
struct SocketEcho {
    a: std::os::unix::net::UnixStream,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SocketEcho {
    fn start() -> SocketEcho {
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            while std::io::Read::read_exact(&mut b, &mut buf).is_ok() {
                if std::io::Write::write_all(&mut b, &buf).is_err() {
                    break;
                }
            }
        });
        SocketEcho {
            a,
            thread: Some(thread),
        }
    }
    fn round_trip(&mut self) {
        let mut buf = [7u8; 16];
        std::io::Write::write_all(&mut self.a, &buf).unwrap();
        std::io::Read::read_exact(&mut self.a, &mut buf).unwrap();
    }
}

impl Drop for SocketEcho {
    fn drop(&mut self) {
        let _ = self.a.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn round_trip(c: &mut Criterion) {
    let sim = Sim::start();
    let rt = rt();
    let mut g = c.benchmark_group("mailbox_round_trip");
    {
        let mut pp = PingPong::start(false);
        g.bench_function("bare_shared_memory_ping_pong", |b| {
            b.iter(|| pp.round_trip())
        });
    }
    {
        let mut echo = SocketEcho::start();
        g.bench_function("bare_socket_round_trip", |b| b.iter(|| echo.round_trip()));
    }
    // Calls are awaited inside one runtime entry, as accelctl and a service make them; a
    // `block_on` per call would add the executor's entry (about 170 ns here) to each.
    for (name, mmap) in [("mmap_bar", true), ("vfio_user_messages", false)] {
        let acc = open(&sim, mmap);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        acc.heartbeat(7).await.unwrap();
                    }
                    t.elapsed()
                })
            })
        });
    }
    g.finish();
}

fn create_vf(c: &mut Criterion) {
    let sim = Sim::start();
    let rt = rt();
    let acc = open(&sim, true);
    let mut g = c.benchmark_group("create_vf_library");
    g.sample_size(20);
    for n in [1u16, 4, 16, 64] {
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    rt.block_on(acc.create_vfs(n, CreateSpec::Equal)).unwrap();
                    total += t.elapsed();
                    rt.block_on(acc.destroy_all()).unwrap();
                }
                total
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("create_vf_process");
    g.sample_size(10);
    for n in [1u16, 4, 16, 64] {
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let o = std::process::Command::new(env!("CARGO_BIN_EXE_accelctl"))
                        .arg("-d")
                        .arg(&sim.sock)
                        .args(["create-vf", "--count", &n.to_string(), "--json"])
                        .output()
                        .unwrap();
                    total += t.elapsed();
                    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                    rt.block_on(acc.destroy_all()).unwrap();
                }
                total
            })
        });
    }
    g.finish();
}

/// Median and p99 of `n` single calls of `f`.
fn percentiles(n: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    (v[n / 2], v[n * 99 / 100])
}

/// Medians and p99 of single round trips, each path as a ratio to its bare limit measured
/// in the same run (criterion reports means and medians of batches).
fn latency_report() {
    let sim = Sim::start();
    let rt = rt();
    const N: usize = 20_000;
    let (bare_mem, bare_mem99) = {
        let mut pp = PingPong::start(false);
        percentiles(N, || pp.round_trip())
    };
    let (bare_sock, bare_sock99) = {
        let mut e = SocketEcho::start();
        percentiles(N, || e.round_trip())
    };
    println!("\nround trips, {N} single calls each (median, p99, ratio of medians):");
    println!("  bare shared-memory ping-pong  {bare_mem:>9.2?} {bare_mem99:>9.2?}");
    println!("  bare UNIX-socket round trip   {bare_sock:>9.2?} {bare_sock99:>9.2?}");
    for (name, mmap, bare) in [
        ("HEARTBEAT, mapped mailbox", true, bare_mem),
        ("HEARTBEAT, vfio-user messages", false, bare_sock),
    ] {
        let acc = open(&sim, mmap);
        let (med, p99) = rt.block_on(async {
            let mut v = Vec::with_capacity(N);
            for i in 0..N as u32 {
                let t = Instant::now();
                acc.heartbeat(i).await.unwrap();
                v.push(t.elapsed());
            }
            v.sort();
            (v[N / 2], v[N * 99 / 100])
        });
        println!(
            "  {name:<29} {med:>9.2?} {p99:>9.2?}  {:.1}× bare",
            med.as_secs_f64() / bare.as_secs_f64()
        );
    }
    // The first command after 2 ms of quiet: the firmware has gone to its nap.
    const IDLE: usize = 1000;
    let after_quiet = |f: &mut dyn FnMut()| {
        let mut v: Vec<Duration> = (0..IDLE)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(2));
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect();
        v.sort();
        (v[IDLE / 2], v[IDLE * 99 / 100])
    };
    let (bare_idle, bare_idle99) = {
        let mut pp = PingPong::start(true);
        after_quiet(&mut || pp.round_trip())
    };
    let acc = open(&sim, true);
    // Awaited inside one runtime entry, as the back-to-back figure is.
    let (idle, idle99) = rt.block_on(async {
        let mut v = Vec::with_capacity(IDLE);
        for i in 0..IDLE as u32 {
            std::thread::sleep(Duration::from_millis(2));
            let t = Instant::now();
            acc.heartbeat(i).await.unwrap();
            v.push(t.elapsed());
        }
        v.sort();
        (v[IDLE / 2], v[IDLE * 99 / 100])
    });
    println!("\nfirst round trip after 2 ms idle, {IDLE} each (median, p99):");
    println!("  bare ping-pong, napping responder {bare_idle:>9.2?} {bare_idle99:>9.2?}");
    println!(
        "  HEARTBEAT, mapped mailbox         {idle:>9.2?} {idle99:>9.2?}  {:.1}× bare",
        idle.as_secs_f64() / bare_idle.as_secs_f64()
    );

    // Whole processes: create and destroy as a user runs them, against the bare limit of two
    // processes that connect, send one command and exit.
    let ctl = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_accelctl"))
            .arg("-d")
            .arg(&sim.sock)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let pair = |a: &[&str], b: &[&str]| {
        let t = Instant::now();
        ctl(a);
        ctl(b);
        t.elapsed()
    };
    // Interleaved, so the machine's drift during the run falls on all three alike.
    const PAIRS: usize = 40;
    let (mut bare, mut four, mut all) = (vec![], vec![], vec![]);
    for _ in 0..PAIRS {
        bare.push(pair(&["stats"], &["stats"]));
        four.push(pair(
            &["create-vf", "--count", "4"],
            &["destroy-vf", "--all"],
        ));
        all.push(pair(
            &["create-vf", "--count", "64"],
            &["destroy-vf", "--all"],
        ));
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (bare, four, all) = (median(bare), median(four), median(all));
    println!("\nwhole processes, median of {PAIRS} interleaved pairs each:");
    println!("  stats + stats (bare)              {bare:>9.2?}");
    println!(
        "  create-vf 4 + destroy-vf --all    {four:>9.2?}  {:.2}× bare",
        four.as_secs_f64() / bare.as_secs_f64()
    );
    println!(
        "  create-vf 64 + destroy-vf --all   {all:>9.2?}  {:.2}× the 4-VF pair",
        all.as_secs_f64() / four.as_secs_f64()
    );
}

criterion_group!(benches, round_trip, create_vf);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    latency_report();
}
