//! acceld against the direct path, each measured in the same run against real `accel-sim`
//! and `acceld` processes:
//!
//! - `info` (GET_DEVICE_INFO + GET_RESOURCES + FW_QUERY_SLOTS) under 100 concurrent clients:
//!   requests per second, p50 and p99, through the daemon (100 gRPC connections) against 100
//!   clients going to the device directly over 25 connections (the device model admits 32
//!   per function);
//! - create 4 VFs and destroy them, through the daemon against a direct handle;
//! - the device model killed and restarted: from the restart to the layout restored, against
//!   a create of the same layout;
//! - a tenant's downtime across `flash --activate` through the daemon (its last job before
//!   the reset to its first job after, reconnecting to its VF's socket).
use accelvirt_api::v1;
use accelvirt_tests::{Acceld, Sim};
use host_driver::daemon::Client;
use host_driver::vf::{Job, VfDev};
use host_driver::{Accel, CreateSpec, DeviceAddr};
use shared_abi::jobs::JobOp;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 100;
const DIRECT_CONNECTIONS: usize = 25;
const WINDOW: Duration = Duration::from_secs(3);

fn pct(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

/// Each of `CLIENTS` tasks repeats `call` for `WINDOW`: (requests per second, p50, p99).
async fn load<F, Fut>(call: F) -> (f64, Duration, Duration)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while start.elapsed() < WINDOW {
                    let t = Instant::now();
                    call(i).await;
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    let n = all.len() as f64;
    (n / secs, pct(&mut all, 50), pct(&mut all, 99))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("acceld: bench");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let sim = Sim::start();
    let d = Acceld::start(&sim, &[]);
    let dev = sim.sock.to_string_lossy().into_owned();

    // A request that does not reach the device (ListDevices): what gRPC over the socket and
    // the daemon's own handling cost, under the same 100 clients.
    let (bare_rps, bare50, bare99) = rt.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(Client::connect(&d.sock).await.unwrap());
        }
        let clients = Arc::new(clients);
        load(move |i| {
            let mut c = clients[i].api.clone();
            async move {
                c.list_devices(v1::ListDevicesRequest {}).await.unwrap();
            }
        })
        .await
    });
    println!(
        "ListDevices (no device access), {CLIENTS} clients: {bare_rps:.0}/s p50 {} p99 {}",
        ms(bare50),
        ms(bare99)
    );
    // info under 100 clients.
    let (via_rps, via50, via99) = rt.block_on(async {
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(Client::connect(&d.sock).await.unwrap());
        }
        let clients = Arc::new(clients);
        let dev = dev.clone();
        load(move |i| {
            let mut c = clients[i].api.clone();
            let dev = dev.clone();
            async move {
                c.get_device_info(v1::DeviceRequest { device: dev })
                    .await
                    .unwrap();
            }
        })
        .await
    });
    let (dir_rps, dir50, dir99) = rt.block_on(async {
        // The device model admits 32 connections per function: the direct clients share 25.
        let handles: Vec<Arc<Accel>> = (0..DIRECT_CONNECTIONS)
            .map(|_| Arc::new(Accel::open(&DeviceAddr::Socket(sim.sock.clone())).unwrap()))
            .collect();
        let handles = Arc::new(handles);
        load(move |i| {
            let a = handles[i % DIRECT_CONNECTIONS].clone();
            async move {
                a.device_info().await.unwrap();
                a.free_resources().await.unwrap();
                a.slots().await.unwrap();
            }
        })
        .await
    });
    println!(
        "info, {CLIENTS} clients: through acceld {via_rps:.0}/s p50 {} p99 {}; direct {dir_rps:.0}/s \
         p50 {} p99 {}; throughput {:.2}x direct",
        ms(via50),
        ms(via99),
        ms(dir50),
        ms(dir99),
        via_rps / dir_rps
    );

    // create 4 + destroy.
    let rounds = 20;
    let mut c = rt
        .block_on(Client::connect(&d.sock))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    let t = Instant::now();
    for _ in 0..rounds {
        rt.block_on(c.api.create_vfs(v1::CreateVfsRequest {
            device: dev.clone(),
            count: 4,
            ..Default::default()
        }))
        .unwrap();
        rt.block_on(c.api.destroy_vfs(v1::DestroyVfsRequest {
            device: dev.clone(),
            all: true,
            ..Default::default()
        }))
        .unwrap();
    }
    let via = t.elapsed() / rounds;
    let a = Accel::open(&DeviceAddr::Socket(sim.sock.clone())).unwrap();
    let t = Instant::now();
    for _ in 0..rounds {
        rt.block_on(a.create_vfs(4, CreateSpec::Equal)).unwrap();
        rt.block_on(a.destroy_all()).unwrap();
    }
    let direct = t.elapsed() / rounds;
    drop(a);
    println!(
        "create 4 + destroy: through acceld {}, direct {}; {:.2}x direct",
        ms(via),
        ms(direct),
        via.as_secs_f64() / direct.as_secs_f64()
    );
    drop(d);
    drop(sim);

    // Restart to restored, against a create of the same layout.
    let mut sim = Sim::start();
    let d = Acceld::start(&sim, &[]);
    d.ctl_json(&["create-vf", "--count", "4"]);
    let mut restores = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        sim.kill_and_restart();
        let restarted = t.elapsed();
        loop {
            let o = d.ctl(&["vf", "list", "--json"]);
            if o.status.success()
                && serde_json::from_slice::<serde_json::Value>(&o.stdout)
                    .is_ok_and(|j| j["vfs"].as_array().is_some_and(|v| v.len() == 4))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        restores.push(t.elapsed() - restarted);
    }
    drop(d);
    let a = Accel::open(&DeviceAddr::Socket(sim.sock.clone())).unwrap();
    rt.block_on(a.destroy_all()).unwrap();
    let mut creates = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        rt.block_on(a.create_vfs(4, CreateSpec::Equal)).unwrap();
        creates.push(t.elapsed());
        rt.block_on(a.destroy_all()).unwrap();
    }
    drop(a);
    let (r50, c50) = (pct(&mut restores, 50), pct(&mut creates, 50));
    println!(
        "device-model restart to layout restored (4 VFs): median {} (max {}); create-vf of the \
         same layout {}; {:.1}x",
        ms(r50),
        ms(*restores.iter().max().unwrap()),
        ms(c50),
        r50.as_secs_f64() / c50.as_secs_f64()
    );
    drop(sim);

    // A tenant's downtime across flash --activate.
    let sim = Sim::start();
    let d = Acceld::start(&sim, &[]);
    d.ctl_json(&["create-vf", "--count", "4"]);
    let image = accelvirt_tests::image_target_dir().join("acceld-upgrade.img");
    if !image.exists() {
        accelvirt_tests::build_image(&image, &["--version", "0.2.0", "--min-rollback", "0.2.0"]);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let vf0 = sim.dir.path().join("accel0-vf0.sock");
    let tenant = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut last_ok = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut dev) = VfDev::open(&vf0, 1 << 20) else {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                };
                let Ok(mut q) = dev.queue(0, 4) else { continue };
                let Ok(buf) = dev.alloc(4096, 4096) else {
                    continue;
                };
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return worst;
                    }
                    let job = Job {
                        op: JobOp::Crc32c,
                        src: Some(buf.into()),
                        dst: None,
                        len: 4096,
                        value: 0,
                    };
                    let ok = dev.submit(&mut q, &job).is_ok()
                        && dev
                            .wait(&mut q, Duration::from_millis(200))
                            .is_ok_and(|c| c.status == shared_abi::jobs::JobStatus::Ok);
                    if !ok {
                        break;
                    }
                    worst = worst.max(last_ok.elapsed());
                    last_ok = Instant::now();
                }
            }
            worst
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    d.ctl_json(&["flash", image.to_str().unwrap(), "--activate"]);
    let flash = t.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let down = tenant.join().unwrap();
    println!(
        "flash --activate through acceld with 4 VFs: {} in all; VF 0's tenant without a \
         completed job for {} (it reconnects to its socket)",
        ms(flash),
        ms(down)
    );
}
