//! `netbench`: the bare network limits the remote-VF benchmark sets its figures against,
//! measured between the same two network namespaces, over plain TCP or the same mutual TLS.
//!
//! - `netbench serve ADDR [TLS...]`: echoes what each client sends (ping-pong), or swallows
//!   it and answers 8 bytes at the end (stream), one client at a time, until killed;
//! - `netbench pingpong ADDR N [TLS...]`: N round trips of 64 bytes; prints the median in µs;
//! - `netbench stream ADDR MIB [TLS...]`: MIB MiB one way; prints GiB/s.
//!
//! TLS... is `--tls CERT KEY CA SERVER_NAME` (the server's name is ignored when serving).
#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

fn tls(args: &[String]) -> Option<(accel_remote::tls::Identity, rustls::RootCertStore, String)> {
    let i = args.iter().position(|a| a == "--tls")?;
    let a = &args[i + 1..i + 5];
    Some((
        accel_remote::tls::Identity::load(a[0].as_ref(), a[1].as_ref()).expect("identity"),
        accel_remote::tls::load_roots(a[2].as_ref()).expect("roots"),
        a[3].clone(),
    ))
}

fn client(addr: &str, args: &[String]) -> Box<dyn Conn> {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    match tls(args) {
        None => Box::new(s),
        Some((id, roots, name)) => {
            let cfg = accel_remote::tls::client_config(id, roots).expect("config");
            let name = rustls::pki_types::ServerName::try_from(name).expect("name");
            let c = rustls::ClientConnection::new(cfg, name).expect("tls");
            Box::new(rustls::StreamOwned::new(c, s))
        }
    }
}

fn serve(addr: &str, args: &[String]) {
    let l = TcpListener::bind(addr).expect("bind");
    println!("listening");
    let cfg = tls(args)
        .map(|(id, roots, _)| accel_remote::tls::server_config(id, roots).expect("config"));
    for s in l.incoming() {
        let Ok(s) = s else { continue };
        s.set_nodelay(true).unwrap();
        let mut c: Box<dyn Conn> = match &cfg {
            None => Box::new(s),
            Some(cfg) => {
                let c = rustls::ServerConnection::new(Arc::clone(cfg)).expect("tls");
                Box::new(rustls::StreamOwned::new(c, s))
            }
        };
        // First byte: 'p' ping-pong (64-byte echoes), 's' stream (count, then an answer).
        let mut mode = [0u8; 1];
        if c.read_exact(&mut mode).is_err() {
            continue;
        }
        let mut buf = vec![0u8; 1 << 20];
        if mode[0] == b'p' {
            let mut m = [0u8; 64];
            while c.read_exact(&mut m).is_ok() {
                if c.write_all(&m).and_then(|_| c.flush()).is_err() {
                    break;
                }
            }
        } else {
            let mut n = [0u8; 8];
            if c.read_exact(&mut n).is_err() {
                continue;
            }
            let mut left = u64::from_le_bytes(n) as usize;
            while left > 0 {
                let k = left.min(buf.len());
                if c.read_exact(&mut buf[..k]).is_err() {
                    break;
                }
                left -= k;
            }
            let _ = c.write_all(b"received").and_then(|_| c.flush());
        }
    }
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    match a.first().map(String::as_str) {
        Some("serve") => serve(&a[1], &a),
        Some("pingpong") => {
            let n: usize = a[2].parse().expect("N");
            let mut c = client(&a[1], &a);
            c.write_all(b"p").unwrap();
            let mut m = [7u8; 64];
            let mut t: Vec<Duration> = (0..n)
                .map(|_| {
                    let s = Instant::now();
                    c.write_all(&m).unwrap();
                    c.flush().unwrap();
                    c.read_exact(&mut m).unwrap();
                    s.elapsed()
                })
                .collect();
            t.sort();
            println!("{:.1}", t[n / 2].as_secs_f64() * 1e6);
        }
        Some("stream") => {
            let mib: u64 = a[2].parse().expect("MIB");
            let mut c = client(&a[1], &a);
            let buf = vec![0x5Au8; 1 << 20];
            let s = Instant::now();
            c.write_all(b"s").unwrap();
            c.write_all(&(mib << 20).to_le_bytes()).unwrap();
            for _ in 0..mib {
                c.write_all(&buf).unwrap();
            }
            c.flush().unwrap();
            let mut ok = [0u8; 8];
            c.read_exact(&mut ok).unwrap();
            let secs = s.elapsed().as_secs_f64();
            println!("{:.3}", (mib as f64 / 1024.0) / secs);
        }
        _ => {
            eprintln!("usage: netbench serve|pingpong|stream ADDR ...");
            std::process::exit(2);
        }
    }
}
