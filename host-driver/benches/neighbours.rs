//! A noisy neighbour: how long one VF's register read takes while other VFs' clients flood
//! the device with register reads, faulting register writes or faulting BAR2 reads, against
//! the same reads on a quiet device, in one run.
use host_driver::vfio_user::VfioUser;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let d = sim::inprocess::InProcess::start(64).unwrap();
    let sock = d.sock.clone();
    let acc = host_driver::Accel::open(&host_driver::DeviceAddr::Socket(sock.clone())).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(acc.create_vfs(5, host_driver::CreateSpec::Equal))
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let victim = VfioUser::connect(&vfio_user_wire::vf_socket_path(&sock, 0), false).unwrap();
    let sample = |n: usize| {
        let mut v: Vec<Duration> = (0..n)
            .map(|_| {
                let t = Instant::now();
                let mut b = [0u8; 4];
                victim.region_read(0, 0, &mut b).unwrap();
                std::thread::sleep(Duration::from_micros(200));
                t.elapsed().saturating_sub(Duration::from_micros(200))
            })
            .collect();
        v.sort();
        (v[n / 2], v[n * 99 / 100], v[n - 1])
    };
    let quiet = sample(3000);
    println!("a VF's register read (median, p99, max) while 16 clients of four other VFs flood the device:");
    println!(
        "  quiet device             {:>9.2?} {:>9.2?} {:>9.2?}",
        quiet.0, quiet.1, quiet.2
    );
    // Sixteen clients on four other VFs, as fast as they can: register reads; writes to a
    // read-only register (each a fault recorded on the flooder's VF); and BAR2 reads past
    // the flooder's memory window (each a fault too).
    let floods: [(&str, u32, u64, bool); 3] = [
        ("register reads", 0, 0, false),
        ("BAR0 faults", 0, 0, true),
        ("BAR2 faults", 2, (1 << 32) - 4096, false),
    ];
    for (what, bar, off, write) in floods {
        let flooding = Arc::new(AtomicBool::new(true));
        let served = Arc::new(AtomicU64::new(0));
        let flooders: Vec<_> = (0..16u16)
            .map(|v| {
                let (p, f, n) = (
                    vfio_user_wire::vf_socket_path(&sock, 1 + v % 4),
                    flooding.clone(),
                    served.clone(),
                );
                std::thread::spawn(move || {
                    let c = VfioUser::connect(&p, false).unwrap();
                    let mut b = [0u8; 4];
                    while f.load(Ordering::Relaxed) {
                        if write {
                            c.region_write(bar, off, &b).unwrap();
                        } else {
                            c.region_read(bar, off, &mut b).unwrap();
                        }
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        let before = served.load(Ordering::Relaxed);
        let loud = sample(3000);
        let rate = (served.load(Ordering::Relaxed) - before) as f64 / t.elapsed().as_secs_f64();
        flooding.store(false, Ordering::Relaxed);
        for f in flooders {
            let _ = f.join();
        }
        println!(
            "  {what:<24} {:>9.2?} {:>9.2?} {:>9.2?}   p99 {:.1}x quiet ({rate:.0} flood accesses/s served)",
            loud.0,
            loud.1,
            loud.2,
            loud.1.as_secs_f64() / quiet.1.as_secs_f64()
        );
    }
}
