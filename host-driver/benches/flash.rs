//! Firmware update speed against bare limits measured in the same run, on an accel-sim
//! process booting from its own flash:
//! - flash throughput: `Accel::flash` of the signed image (erase, chunks, the device's
//!   verification, commit) against the same bytes sent as the same number of mailbox
//!   commands that the firmware parses and refuses at once (the mailbox's own cost);
//! - `accelctl flash` as a whole process (MiB/s of image);
//! - reset to READY (`Accel::fw_reset`: FLR, the boot stage verifies the slot, starts the
//!   core, the core boots) against starting and reaping a process that does nothing.
//!
//! Needs `cargo build --release -p sim -p host-driver --bins` and `cargo xtask image` first.
use shared_abi::messages::{FwChunk, Request};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        p.exists(),
        "{} not built: cargo build --release -p sim -p host-driver --bins",
        p.display()
    );
    p
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let image_path = root.join("target/fw/accel-fw.img");
    let image = std::fs::read(&image_path).expect("cargo xtask image first");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("bench.sock");
    let mut sim = Command::new(bin("accel-sim"))
        .arg("--socket")
        .arg(&sock)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(10));
    }
    let a = host_driver::Accel::open(&host_driver::DeviceAddr::Socket(sock.clone())).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let chunks = image.len().div_ceil(host_driver::update::CHUNK);
    let mib = image.len() as f64 / (1 << 20) as f64;
    let (mut flash, mut bare, mut reset, mut spawn) = (vec![], vec![], vec![], vec![]);
    for _ in 0..7 {
        let t = Instant::now();
        rt.block_on(a.flash(&image, true, &mut |_, _| {})).unwrap();
        flash.push(t.elapsed());
        // The same bytes, the same number of commands, refused once parsed (no download).
        let t = Instant::now();
        rt.block_on(async {
            for c in image.chunks(host_driver::update::CHUNK) {
                let (st, _) = a
                    .mailbox()
                    .call_status(&Request::FwDownloadChunk(FwChunk { offset: 0, data: c }))
                    .await
                    .unwrap();
                assert_ne!(st, shared_abi::mailbox::Status::Ok);
            }
        });
        bare.push(t.elapsed());
        let t = Instant::now();
        a.fw_reset(Duration::from_secs(10)).unwrap();
        reset.push(t.elapsed());
        let t = Instant::now();
        Command::new("/bin/true").status().unwrap();
        spawn.push(t.elapsed());
    }
    let whole: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let o = Command::new(bin("accelctl"))
                .arg("-d")
                .arg(&sock)
                .arg("flash")
                .arg(&image_path)
                .arg("--allow-downgrade")
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            t.elapsed()
        })
        .collect();
    let (f, b, r, s, w) = (
        median(flash),
        median(bare),
        median(reset),
        median(spawn),
        median(whole),
    );
    println!("image {} bytes in {chunks} chunks", image.len());
    println!(
        "flash (library)      {:>8.1} ms  {:>6.1} MiB/s   bare mailbox, same bytes {:>7.1} ms ({:.1} MiB/s): {:.2}x",
        f.as_secs_f64() * 1e3,
        mib / f.as_secs_f64(),
        b.as_secs_f64() * 1e3,
        mib / b.as_secs_f64(),
        f.as_secs_f64() / b.as_secs_f64()
    );
    println!(
        "accelctl flash       {:>8.1} ms  {:>6.1} MiB/s (whole process)",
        w.as_secs_f64() * 1e3,
        mib / w.as_secs_f64()
    );
    println!(
        "reset to READY       {:>8.1} ms   bare process start+reap {:>6.2} ms: {:.1}x",
        r.as_secs_f64() * 1e3,
        s.as_secs_f64() * 1e3,
        r.as_secs_f64() / s.as_secs_f64()
    );
    let _ = sim.kill();
    let _ = sim.wait();
}
