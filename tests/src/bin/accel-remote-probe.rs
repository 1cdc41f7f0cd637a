//! `accel-remote-probe ADDR CERT KEY CA`: an importer that breaks the protocol on purpose,
//! for the remote-VF tests (run inside the importer's network namespace). It connects with a
//! valid certificate, says HELLO for VF 1, and once welcomed sends a frame header claiming a
//! gigabyte of payload; it prints `cut off` if the exporter then ends the link (with or
//! without a REFUSE first) within 10 s, and fails otherwise.
#![forbid(unsafe_code)]

use accel_remote::link::{tcp, Link};
use accel_remote::wire::{self, Hello, Message, Ping};
use std::io::Write;
use std::time::{Duration, Instant};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [addr, cert, key, ca] = &a[..] else {
        eprintln!("usage: accel-remote-probe ADDR CERT KEY CA");
        std::process::exit(2);
    };
    let id = accel_remote::tls::Identity::load(cert.as_ref(), key.as_ref()).expect("identity");
    let roots = accel_remote::tls::load_roots(ca.as_ref()).expect("roots");
    let cfg = accel_remote::tls::client_config(id, roots).expect("config");
    let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
    let mut link = tcp::connect(addr.as_str(), host, cfg, Duration::from_secs(5)).expect("connect");
    link.send(&Message::Hello(Hello {
        vf: 1.into(),
        reserved: 0.into(),
        session: 0.into(),
    }))
    .expect("hello");
    match link.recv() {
        Ok(Message::Welcome(_)) => {}
        other => panic!("not welcomed: {other:?}"),
    }
    let mut h = wire::encode(&Message::Ping(Ping::default())).expect("encode");
    h[8..12].copy_from_slice(&(1u32 << 30).to_le_bytes());
    // Straight into the TLS stream, past the link's own checks.
    let mut s = link;
    s.get_mut()
        .write_all(&h[..wire::HEADER_SIZE])
        .expect("write");
    s.get_mut().flush().expect("flush");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        match s.poll(Duration::from_millis(100)) {
            Ok(Some(Message::Refuse(..))) | Err(_) => {
                println!("cut off");
                let _ = std::io::stdout().flush();
                return;
            }
            Ok(_) => {}
        }
    }
    eprintln!("the exporter kept the link after an oversized frame");
    std::process::exit(1);
}
