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
        let dir = tempfile::tempdir().unwrap();
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

fn round_trip(c: &mut Criterion) {
    let sim = Sim::start();
    let rt = rt();
    let mut g = c.benchmark_group("mailbox_round_trip");
    for (name, mmap) in [("mmap_bar", true), ("vfio_user_messages", false)] {
        let acc = open(&sim, mmap);
        g.bench_function(name, |b| b.iter(|| rt.block_on(acc.heartbeat(7)).unwrap()));
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

/// Median and p99 of single round trips (criterion reports means and medians of batches).
fn latency_report() {
    let sim = Sim::start();
    let rt = rt();
    println!("\nmailbox round trip, 20000 single calls each:");
    for (name, mmap) in [("mmap_bar", true), ("vfio_user_messages", false)] {
        let acc = open(&sim, mmap);
        let mut v: Vec<Duration> = (0..20_000)
            .map(|i| {
                let t = Instant::now();
                rt.block_on(acc.heartbeat(i)).unwrap();
                t.elapsed()
            })
            .collect();
        v.sort();
        println!(
            "  {name:<20} median {:>8.1?}  p99 {:>8.1?}",
            v[v.len() / 2],
            v[v.len() * 99 / 100]
        );
    }
}

criterion_group!(benches, round_trip, create_vf);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    latency_report();
}
