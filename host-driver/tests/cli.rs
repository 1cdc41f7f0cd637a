//! accelctl's surface without a device: help with examples and exit codes, usage errors with
//! exit code 2, a missing device with exit code 3. (Device tests live in the `tests` crate.)
use std::process::Command;

fn accelctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_accelctl"))
        .args(args)
        .env_remove("ACCEL_DEVICE")
        .output()
        .unwrap()
}

#[test]
fn help_shows_examples_and_exit_codes() {
    let o = accelctl(&["--help"]);
    assert!(o.status.success());
    let h = String::from_utf8_lossy(&o.stdout);
    for s in [
        "create-vf --count 4",
        "destroy-vf --all",
        "Exit codes:",
        "4  busy",
        "6  the device's firmware has faulted",
        "vfio-user socket",
    ] {
        assert!(h.contains(s), "help lacks '{s}'");
    }
}

#[test]
fn usage_errors_exit_2_and_say_what_to_do() {
    let o = accelctl(&["info"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("use -d DEV or ACCEL_DEVICE"));
    let o = accelctl(&["-d", "not-a-device", "info"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("give a PCI address"));
    let o = accelctl(&["-d", "x.sock", "create-vf"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "clap's own usage errors use 2 as well"
    );
}

#[test]
fn a_missing_device_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let o = accelctl(&["-d", sock.to_str().unwrap(), "info"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("accel-sim --socket"));
    let o = accelctl(&["-d", "0000:ff:1f.7", "info"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn list_with_nothing_around_is_empty_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = accelctl(&[
        "list",
        "--json",
        "--runtime-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(j["devices"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["transport"] != "vfio-user"));
}
