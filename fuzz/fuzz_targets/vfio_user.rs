//! Arbitrary bytes to the device model's vfio-user sockets (the PF's and a VF's), after a
//! valid VERSION or instead of it: whatever a client sends, the device must answer the next
//! client. One device model serves the whole run.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn device() -> &'static (PathBuf, PathBuf) {
    static D: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    D.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("accelvirt-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let pf = dir.join("pf.sock");
        let dev = sim::Device::new(shared_abi::board::Board::DEFAULT, 4).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        sim::fwhost::spawn(dev.clone(), stop.clone(), 1).unwrap();
        dev.spawn_dataplane(stop.clone()).unwrap();
        let (d, p) = (dev.clone(), pf.clone());
        std::thread::spawn(move || {
            let _ = sim::vfio_user::server::Server::run(d, &p, stop);
        });
        while UnixStream::connect(&pf).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
        // One VF, through the PF's own registers and config space as a driver would.
        let t = host_driver::vfio_user::VfioUser::connect(&pf, true).unwrap();
        let acc = host_driver::Accel::with_transport(Arc::new(t), Duration::from_secs(5)).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(acc.create_vfs(1, host_driver::CreateSpec::Equal))
            .unwrap();
        (pf.clone(), vfio_user_wire::vf_socket_path(&pf, 0))
    })
}

fn version() -> Vec<u8> {
    let json = br#"{"capabilities":{"max_msg_fds":8}}"#;
    let mut m = Vec::new();
    m.extend_from_slice(&1u16.to_ne_bytes()); // id
    m.extend_from_slice(&1u16.to_ne_bytes()); // VERSION
    m.extend_from_slice(&((16 + 4 + json.len() + 1) as u32).to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&1u16.to_ne_bytes());
    m.extend_from_slice(json);
    m.push(0);
    m
}

/// The device negotiates with a fresh client: it is alive and serving.
fn alive(path: &PathBuf) {
    let mut s = UnixStream::connect(path).expect("the device accepts a new client");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&version()).unwrap();
    let mut h = [0u8; 16];
    s.read_exact(&mut h).expect("the device answers VERSION");
    assert_eq!(
        u32::from_ne_bytes(h[12..16].try_into().unwrap()),
        0,
        "VERSION accepted"
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, bytes)) = data.split_first() else {
        return;
    };
    let (pf, vf) = device();
    let path = if how & 1 == 0 { pf } else { vf };
    let Ok(mut s) = UnixStream::connect(path) else {
        return;
    };
    let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
    let _ = s.set_read_timeout(Some(Duration::from_millis(2)));
    if how & 2 == 0 {
        let _ = s.write_all(&version());
    }
    let _ = s.write_all(bytes);
    // Take whatever comes back, briefly; then hang up mid-whatever.
    let mut sink = [0u8; 4096];
    for _ in 0..4 {
        if !matches!(s.read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
    drop(s);
    alive(path);
});
