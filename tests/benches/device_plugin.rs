//! The device plugin, against bare baselines measured in the same run, with real
//! `accel-sim`, `acceld` and `accel-device-plugin` processes and the test kubelet
//! (`accelvirt_tests::kubelet`) in the bench process, on a device carved into 64 VFs:
//!
//! - a VF fault to the kubelet's list showing it unhealthy, against the same fault reaching
//!   a bare `WatchEvents` stream from acceld (what the plugin itself follows);
//! - Allocate of 1 and of 4 VFs, against an empty call (`GetDevicePluginOptions`) on the
//!   same connection;
//! - ListAndWatch with 64 VFs: a new stream's first list, against the same empty call.
use accel_device_plugin::proto::v1beta1 as k;
use accelvirt_api::v1;
use accelvirt_tests::kubelet::{DevicePlugin, Kubelet};
use accelvirt_tests::{Acceld, Sim};
use std::time::{Duration, Instant};

const VF: &str = "accelvirt.io/vf";
const VFS: u32 = 64;
const FAULTS: u32 = 32;
const CALLS: usize = 2000;

fn pct(v: &mut [Duration], p: usize) -> Duration {
    v.sort();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// p50 and p99 of `n` runs of `f` on the kubelet's runtime.
fn timed<F, Fut>(k: &Kubelet, n: usize, mut f: F) -> (Duration, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        k.block_on(f());
        v.push(t.elapsed());
    }
    (pct(&mut v, 50), pct(&mut v, 99))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("device plugin: bench");
    let sim = Sim::start();
    let d = Acceld::start(&sim, &[]);
    d.ctl_json(&[
        "create-vf",
        "--count",
        "64",
        "--engines",
        "1",
        "--memory",
        "128M",
        "--queues",
        "4",
    ]);
    let kubelet = Kubelet::start();
    let _p = DevicePlugin::start(&kubelet, &d.sock, &[]);
    let ids: Vec<String> = (0..VFS)
        .map(|v| accel_device_plugin::inventory::vf_id(sim.sock.to_str().unwrap(), v))
        .collect();
    let list = kubelet.wait_list(VF, Duration::from_secs(30), "64 healthy VFs", |l| {
        l.len() == VFS as usize && l.iter().all(|d| d.health == "Healthy")
    });
    let size = prost::Message::encoded_len(&k::ListAndWatchResponse { devices: list });

    // Empty calls, Allocate of 1 and of 4, a new ListAndWatch's first list.
    let c = kubelet.client(VF);
    let (e50, e99) = timed(&kubelet, CALLS, || {
        let mut c = c.clone();
        async move {
            c.get_device_plugin_options(k::Empty {}).await.unwrap();
        }
    });
    let alloc = |n: usize| {
        let ids = ids[..n].to_vec();
        timed(&kubelet, CALLS, || {
            let mut c = c.clone();
            let ids = ids.clone();
            async move {
                c.allocate(k::AllocateRequest {
                    container_requests: vec![k::ContainerAllocateRequest { devices_ids: ids }],
                })
                .await
                .unwrap();
            }
        })
    };
    let (a1_50, a1_99) = alloc(1);
    let (a4_50, a4_99) = alloc(4);
    let (l50, l99) = timed(&kubelet, CALLS / 4, || {
        let mut c = c.clone();
        async move {
            let mut s = c.list_and_watch(k::Empty {}).await.unwrap().into_inner();
            let m = s.message().await.unwrap().unwrap();
            assert_eq!(m.devices.len(), VFS as usize);
        }
    });

    // Faults: each on another VF (the firmware reports at most one per VF per 100 ms), seen
    // by a bare WatchEvents stream and by the kubelet; then the VF is reset, healthy again.
    let (tx, rx) = std::sync::mpsc::channel::<(u32, Instant)>();
    let sock = d.sock.clone();
    let watcher = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let c = host_driver::daemon::Client::connect(&sock).await.unwrap();
            let mut s = c
                .api
                .clone()
                .watch_events(v1::EventsRequest::default())
                .await
                .unwrap()
                .into_inner();
            while let Ok(Some(e)) = s.message().await {
                if e.kind == "vf_fault" && tx.send((e.vf.unwrap_or(0), Instant::now())).is_err() {
                    return;
                }
            }
        })
    });
    let beyond = shared_abi::regs::vf::QUEUES.start() as u64
        + 200 * shared_abi::regs::QUEUE_REGS_SIZE as u64;
    let mut bare = Vec::new();
    let mut plugin = Vec::new();
    for v in 0..FAULTS {
        let h = host_driver::vfio_user::VfioUser::connect(
            &sim.dir.path().join(format!("accel0-vf{v}.sock")),
            false,
        )
        .unwrap();
        let id = ids[v as usize].clone();
        let t0 = Instant::now();
        let _ = h.region_read(0, beyond, &mut [0u8; 4]);
        kubelet.wait_list(VF, Duration::from_secs(10), "the fault", |l| {
            l.iter().any(|d| d.id == id && d.health == "Unhealthy")
        });
        let seen = kubelet.with_seen(|s| s.lists[VF].1);
        plugin.push(seen - t0);
        let (fv, at) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(fv, v);
        bare.push(at - t0);
        drop(h);
        d.ctl_json(&["vf", "reset", &v.to_string()]);
        kubelet.wait_list(VF, Duration::from_secs(10), "healthy again", |l| {
            l.iter().all(|d| d.health == "Healthy")
        });
    }
    drop(rx);
    let (p50, p99) = (pct(&mut plugin, 50), pct(&mut plugin, 99));
    let (b50, b99) = (pct(&mut bare, 50), pct(&mut bare, 99));
    let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "fault -> kubelet sees it unhealthy ({FAULTS} faults, 64 VFs): p50 {} p99 {}; bare WatchEvents: p50 {} p99 {}; ratio p50 {:.2}x",
        ms(p50), ms(p99), ms(b50), ms(b99), r(p50, b50)
    );
    println!(
        "Allocate 1 VF: p50 {} p99 {}; 4 VFs: p50 {} p99 {}; empty call: p50 {} p99 {}; ratio p50 {:.2}x / {:.2}x",
        ms(a1_50), ms(a1_99), ms(a4_50), ms(a4_99), ms(e50), ms(e99), r(a1_50, e50), r(a4_50, e50)
    );
    println!(
        "ListAndWatch, 64 VFs ({size} bytes): first list p50 {} p99 {}; ratio to the empty call p50 {:.2}x",
        ms(l50), ms(l99), r(l50, e50)
    );
    let _ = watcher;
}
