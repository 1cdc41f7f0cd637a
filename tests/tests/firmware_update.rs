//! Firmware updates end to end against accel-sim processes that boot from their flash:
//! `accelctl flash` streams a signed image, the device verifies it, `--activate` resets into
//! it; every bad image is refused with the running firmware untouched; an image that never
//! becomes ready rolls back; power cut at any point of a download or of the slot switch
//! leaves a device that boots a verified image.
use accelvirt_tests::{build_image, firmware_image, image_target_dir, Sim};
use host_driver::Accel;
use serde_json::Value;
use shared_abi::messages::{FwBeginReq, FwChunk, Request};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;
use zerocopy::little_endian::{U16, U32};
use zerocopy::IntoBytes;

/// Version 0.2.0 with rollback floor 0.2.0, built once.
fn upgrade() -> &'static PathBuf {
    static UP: OnceLock<PathBuf> = OnceLock::new();
    UP.get_or_init(|| {
        firmware_image(); // the key pair and the base image first
        let out = image_target_dir().join("fw").join("accel-fw-0.2.0.img");
        build_image(&out, &["--version", "0.2.0", "--min-rollback", "0.2.0"]);
        out
    })
}

fn read(p: &std::path::Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// An image of `payload` with these header fields, signed with the development key.
fn signed(payload: &[u8], version: u32, board: u32, floor: u32) -> Vec<u8> {
    let seed: [u8; 32] = read(&image_target_dir().join("accelvirt-keys/dev-ed25519.seed"))
        .try_into()
        .unwrap();
    let h = fw_image::header_for(payload, version, 0x0bad_f00d, board, floor);
    let sig = fw_image::sign(&h, payload, &seed);
    [h.as_bytes(), &sig[..], payload].concat()
}

fn write_tmp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_string_lossy().into_owned()
}

fn info(sim: &Sim) -> Value {
    sim.ctl_json(&["info"])
}

/// The running firmware and the flash slots' states, as `accelctl info` shows them.
fn state(sim: &Sim) -> (String, String, Vec<(String, String)>) {
    let i = info(sim);
    let slots = i["flash"]
        .as_array()
        .expect("a device booted from flash shows its slots")
        .iter()
        .map(|s| {
            (
                s["state"].as_str().unwrap().to_string(),
                s["build_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (
        i["firmware"].as_str().unwrap().to_string(),
        i["build_id"].as_str().unwrap().to_string(),
        slots,
    )
}

fn build_of(image: &[u8]) -> String {
    format!("{:08x}", fw_image::header(image).unwrap().build_id.get())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn flash_activate_refuse_resume_downgrade_and_roll_back() {
    let base = read(&firmware_image().0);
    let up_path = upgrade();
    let up = read(up_path);
    let tmp = tempfile::tempdir().unwrap();
    let sim = Sim::start();
    let (v0, b0, slots0) = state(&sim);
    assert_eq!((v0.as_str(), b0.clone()), ("0.1.0", build_of(&base)));
    assert_eq!(slots0[0].0, "active");
    assert!(info(&sim)["capabilities"]
        .as_array()
        .unwrap()
        .contains(&Value::from("fw_update")));

    // Each refusal names the defect and leaves the running firmware and the slots as they were.
    let mut bad_sig = up.clone();
    bad_sig[fw_image::HEADER_SIZE + 5] ^= 1;
    let mut bad_crc = up.clone();
    *bad_crc.last_mut().unwrap() ^= 1;
    let elf = &base[fw_image::PAYLOAD_OFFSET..];
    let cases: [(&str, Vec<u8>, u8, &str); 4] = [
        ("truncated", up[..up.len() - 100].to_vec(), 2, "truncated"),
        ("crc", bad_crc, 2, "CRC"),
        ("signature", bad_sig, 1, "signature does not verify"),
        (
            "board",
            signed(elf, 0x0002_0000, u32::from_le_bytes(*b"ASIC"), 0),
            1,
            "another board",
        ),
    ];
    for (name, bytes, code, says) in cases {
        let f = write_tmp(&tmp, name, &bytes);
        let o = sim.ctl(&["flash", &f]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code as i32), "{name}: {err}");
        assert!(err.contains(says), "{name}: {err}");
        let (v, b, slots) = state(&sim);
        assert_eq!(
            (v, b),
            (v0.clone(), b0.clone()),
            "{name}: running firmware untouched"
        );
        assert!(
            slots.iter().all(|s| s.0 != "pending"),
            "{name}: nothing armed"
        );
    }

    // A second download while one is in progress is refused; the interrupted one resumes.
    let a = Accel::open(&host_driver::DeviceAddr::Socket(sim.sock.clone())).unwrap();
    runtime().block_on(async {
        let req = FwBeginReq {
            total_len: U32::new(up.len() as u32),
            image_crc: U32::new(fw_image::crc32(&up)),
            slot: 0xFF,
            flags: 0,
            reserved: U16::new(0),
        };
        a.mailbox()
            .call(&Request::FwDownloadBegin(&req))
            .await
            .unwrap();
        a.mailbox()
            .call(&Request::FwDownloadChunk(FwChunk {
                offset: 0,
                data: &up[..4032],
            }))
            .await
            .unwrap();
    });
    drop(a); // the connection is lost
    let other = write_tmp(
        &tmp,
        "other",
        &signed(elf, 0x0003_0000, fw_image::BOARD_SIM, 0),
    );
    let o = sim.ctl(&["flash", &other]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("in progress"), "{err}");
    let up_s = up_path.to_string_lossy().into_owned();
    let o = sim.ctl(&["flash", &up_s]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("resumed the interrupted download at byte 4032"),
        "{err}"
    );
    let (_, _, slots) = state(&sim);
    assert_eq!(slots[1], ("pending".to_string(), build_of(&up)));

    // Activation: the device resets into the new image and reports it.
    let r = sim.ctl_json(&["flash", &up_s, "--activate"]);
    assert_eq!(r["running"]["version"], "0.2.0");
    assert_eq!(r["running"]["build_id"], build_of(&up));
    let (v, b, slots) = state(&sim);
    assert_eq!((v.as_str(), b), ("0.2.0", build_of(&up)));
    assert_eq!(slots[0].0, "valid");
    assert_eq!(slots[1].0, "active");

    // 0.2.0 demands a rollback floor of 0.2.0, and having run, raised the device's to it:
    // 0.1.0 is refused, and --allow-downgrade does not lower the floor.
    let base_s = firmware_image().0.to_string_lossy().into_owned();
    for extra in [&[][..], &["--allow-downgrade", "--activate"][..]] {
        let mut args = vec!["flash", base_s.as_str()];
        args.extend_from_slice(extra);
        let o = sim.ctl(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("rollback floor"), "{err}");
        assert_eq!(state(&sim).1, build_of(&up));
    }

    // An image that verifies but never reports READY (here: a program that exits at once) is
    // rolled back to the image that ran before, and its slot is marked bad.
    let never = signed(
        &read(std::path::Path::new("/bin/true")),
        0x0003_0000,
        fw_image::BOARD_SIM,
        0,
    );
    let never_f = write_tmp(&tmp, "never", &never);
    let o = sim.ctl(&["flash", &never_f, "--activate"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("rolled back"), "{err}");
    let (_, b, slots) = state(&sim);
    assert_eq!(b, build_of(&up));
    assert!(slots.iter().any(|s| s.0 == "bad"), "{slots:?}");
}

/// Power cut (SIGKILL of the device model) at chunk boundaries of a download, after its
/// commit, and during the reset into the new slot: after a restart the device always boots a
/// verified image — the old one unless the new one was committed — and never a half-written
/// slot.
#[test]
fn power_loss_during_a_flash_or_the_slot_switch_boots_a_valid_image() {
    let base = read(&firmware_image().0);
    let up = read(upgrade());
    let chunks = up.len().div_ceil(host_driver::update::CHUNK);
    let cuts = [1, chunks / 3, 2 * chunks / 3, chunks - 1, chunks];
    for cut in cuts {
        let mut sim = Sim::start();
        let a = Accel::open(&host_driver::DeviceAddr::Socket(sim.sock.clone())).unwrap();
        let mut n = 0;
        let mut killed = false;
        let r = runtime().block_on(a.flash(&up, false, &mut |done, _| {
            if done > 0 {
                n += 1;
            }
            if n == cut && !killed {
                killed = true;
                sim.kill_and_restart();
            }
        }));
        assert!(
            r.is_err(),
            "cut at chunk {cut}: the download fails with its device"
        );
        let (v, b, slots) = state(&sim);
        assert_eq!(
            (v.as_str(), b),
            ("0.1.0", build_of(&base)),
            "cut at chunk {cut}"
        );
        assert!(
            slots[1].0 == "empty" || slots[1].0 == "bad",
            "cut at chunk {cut}: {slots:?}"
        );
    }
    // After the commit, before any reset: the committed image boots at power-up.
    let mut sim = Sim::start();
    let up_s = upgrade().to_string_lossy().into_owned();
    sim.ctl_json(&["flash", &up_s]);
    sim.kill_and_restart();
    let (v, b, _) = state(&sim);
    assert_eq!(
        (v.as_str(), b),
        ("0.2.0", build_of(&up)),
        "committed, then power cut"
    );
    // During the switch: the reset into the new slot cut at a spread of moments.
    for delay_ms in [0u64, 2, 5, 10, 20, 40] {
        let mut sim = Sim::start();
        sim.ctl_json(&["flash", &up_s]);
        let mut reset = std::process::Command::new(accelvirt_tests::bin("accelctl"))
            .arg("-d")
            .arg(&sim.sock)
            .arg("fw-reset")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        sim.kill_and_restart();
        let _ = reset.wait();
        let (_, b, slots) = state(&sim);
        assert!(
            b == build_of(&up) || b == build_of(&base),
            "switch cut at {delay_ms} ms: runs {b}"
        );
        let running = slots.iter().filter(|s| s.0 == "active").count();
        assert_eq!(running, 1, "switch cut at {delay_ms} ms: {slots:?}");
    }
}

/// What the README says of VFs across an update: a flash does not touch them (they keep
/// running on the old image); activation resets the device, which destroys every VF, so
/// `--activate` is refused while VFs exist, and `fw-reset` takes them down.
#[test]
fn vfs_live_through_a_flash_and_go_with_the_reset() {
    let sim = Sim::start();
    sim.ctl_json(&["create-vf", "--count", "4"]);
    let before = sim.ctl_json(&["vf", "list"]);
    let up_s = upgrade().to_string_lossy().into_owned();
    sim.ctl_json(&["flash", &up_s]);
    assert_eq!(
        sim.ctl_json(&["vf", "list"]),
        before,
        "VFs untouched by a flash"
    );
    let o = sim.ctl(&["flash", &up_s, "--activate"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("destroy"), "{err}");
    assert!(!err.contains("  "), "one message, no runs of spaces: {err}");
    assert_eq!(sim.ctl_json(&["vf", "list"]), before);
    // fw-reset is refused the same way, unless --force, which says what it destroyed.
    let o = sim.ctl(&["fw-reset"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("4 now") && err.contains("--force"), "{err}");
    assert_eq!(sim.ctl_json(&["vf", "list"]), before);
    let o = sim.ctl(&["fw-reset", "--force", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("destroyed 4 VFs"));
    assert_eq!(r["version"], "0.2.0");
    let i = info(&sim);
    assert_eq!(i["vfs_in_use"], 0);
    assert_eq!(i["vfs_enabled"], 0);
}

/// `accelctl logs` decodes the running firmware's log ring with the ELF of the image it runs
/// (found by build id and version), after an update too; `--follow` shows lines as they come.
#[test]
fn logs_decode_with_the_running_image_and_follow() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let sim = Sim::start();
    let images = image_target_dir().join("fw");
    let logs = |args: &[&str]| {
        let mut c = std::process::Command::new(accelvirt_tests::bin("accelctl"));
        c.arg("-d")
            .arg(&sim.sock)
            .arg("logs")
            .args(args)
            .env("ACCEL_FW_IMAGES", &images)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };
    let o = logs(&[]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("INFO  accelvirt firmware image starting"),
        "{text}"
    );
    assert!(
        text.contains("firmware 0.1.0 ready: 16 engines, 8192 granules"),
        "the version as a version: {text}"
    );
    // A reset boots the firmware again: the log marks where each boot starts.
    sim.ctl_json(&["fw-reset"]);
    let o = logs(&[]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.matches("-- firmware boot --").count(), 2, "{text}");

    let mut follow = logs(&["--follow"]).spawn().unwrap();
    let mut lines = std::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    sim.ctl_json(&["create-vf", "--count", "3"]);
    let seen = lines
        .by_ref()
        .take(20)
        .map(|l| l.unwrap())
        .any(|l| l.ends_with("created 3 VFs"));
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(seen, "--follow shows the new line");

    // After an update the log decodes with the new image's table.
    sim.ctl_json(&["destroy-vf", "--all"]);
    let up_s = upgrade().to_string_lossy().into_owned();
    sim.ctl_json(&["flash", &up_s, "--activate"]);
    let o = logs(&["--json"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let last: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        last.iter().any(|l| l["message"]
            .as_str()
            .unwrap()
            .starts_with("firmware 0.2.0 ready")),
        "{last:?}"
    );
    // An image that is not the running one is refused, not misread.
    let base_s = firmware_image().0.to_string_lossy().into_owned();
    let o = logs(&["--image", &base_s]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not an image of the running firmware"));
    // Nor is the running image's header with too little behind it (a cut-off copy).
    let cut = write_tmp(&tmp, "cut.img", &read(upgrade())[..100]);
    let o = logs(&["--image", &cut]).output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A device model whose flash is empty and that has no image to install says how to get one;
/// a damaged flash is named, not booted.
#[test]
fn an_empty_flash_without_an_image_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let run = |flash: &std::path::Path| {
        std::process::Command::new(accelvirt_tests::bin("accel-sim"))
            .arg("--socket")
            .arg(dir.path().join("a.sock"))
            .arg("--flash")
            .arg(flash)
            .env("ACCEL_FW_IMAGE", dir.path().join("missing.img"))
            .env("ACCEL_FW_KEY", &firmware_image().1)
            .output()
            .unwrap()
    };
    let o = run(&dir.path().join("a.flash"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("cargo xtask image"), "{err}");
    let damaged = dir.path().join("damaged.flash");
    std::fs::write(&damaged, b"not a flash this device wrote").unwrap();
    let o = run(&damaged);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("OTP page is damaged"), "{err}");
}

/// A firmware core that dies under a running device (killed here) leaves the device halted
/// and saying so, not silently deaf; a reset boots it again.
#[test]
fn a_dead_firmware_core_halts_the_device_until_a_reset() {
    let sim = Sim::start();
    sim.ctl_json(&["create-vf", "--count", "2"]);
    let children =
        std::fs::read_to_string(format!("/proc/{}/task/{}/children", sim.pid(), sim.pid()))
            .unwrap_or_default();
    // The core is a child of the boot stage's thread; find it among all the tasks' children.
    let mut core = None;
    for t in std::fs::read_dir(format!("/proc/{}/task", sim.pid())).unwrap() {
        let p = t.unwrap().path().join("children");
        for pid in std::fs::read_to_string(p)
            .unwrap_or_default()
            .split_whitespace()
        {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "accel-fw" {
                core = Some(pid.parse::<i32>().unwrap());
            }
        }
    }
    let core = core.unwrap_or_else(|| panic!("no accel-fw child ({children})"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(core),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t = std::time::Instant::now();
    // Every command says so (exit 6, the fault named), quickly: nothing waits for a core
    // that is not there.
    loop {
        let t0 = std::time::Instant::now();
        let o = sim.ctl(&["create-vf", "--count", "1"]);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        if o.status.code() == Some(6) {
            assert!(err.contains("watchdog"), "{err}");
            assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the device never said so: {err}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = sim.ctl_json(&["fw-reset"]);
    assert_eq!(r["version"], "0.1.0");
    let i = info(&sim);
    assert_eq!(i["health"], "ok");
    assert_eq!(i["vfs_in_use"], 0);
}
