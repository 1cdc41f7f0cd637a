//! Arbitrary bytes to the device model's vfio-user message handling, for the PF and a VF,
//! after a valid VERSION or instead of it. Each input is one client connection over a socket
//! pair, served in process to its end; afterwards the device must still serve a new client.
//! One device model serves the whole run.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sim::device::Func;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::OnceLock;
use std::time::Duration;

fn device() -> &'static sim::inprocess::InProcess {
    static D: OnceLock<sim::inprocess::InProcess> = OnceLock::new();
    D.get_or_init(|| {
        let d = sim::inprocess::InProcess::start(4).unwrap();
        // One VF, through the PF's own registers and config space as a driver would.
        let t = host_driver::vfio_user::VfioUser::connect(&d.sock, true).unwrap();
        let acc = host_driver::Accel::with_transport(std::sync::Arc::new(t), Duration::from_secs(5))
            .unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(acc.create_vfs(1, host_driver::CreateSpec::Equal))
            .unwrap();
        d
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

/// Serves `input` as one connection of `func` and returns when the device has hung up.
fn connection(func: Func, input: &[u8]) -> Vec<u8> {
    let d = device();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let mut ours = ours;
    let _ = ours.write_all(input);
    let _ = ours.shutdown(std::net::Shutdown::Write);
    // The replies are drained on this thread while the device serves on another: a reply the
    // client does not read would (rightly) stall the device for its send timeout.
    let dev = d.dev.clone();
    let server = std::thread::spawn(move || sim::vfio_user::serve_connection(dev, func, theirs));
    let mut out = Vec::new();
    let _ = ours.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = ours.take(1 << 24).read_to_end(&mut out);
    server.join().expect("the device's handler does not panic");
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, bytes)) = data.split_first() else {
        return;
    };
    let func = if how & 1 == 0 { Func::Pf } else { Func::Vf(0) };
    let mut input = if how & 2 == 0 { version() } else { Vec::new() };
    input.extend_from_slice(bytes);
    connection(func, &input);
    // Still serving: a fresh client negotiates.
    let reply = connection(func, &version());
    assert!(reply.len() >= 16, "the device answers VERSION");
    assert_eq!(u32::from_ne_bytes(reply[12..16].try_into().unwrap()), 0, "VERSION accepted");
});
