//! The binary as a node's init system runs it: a broken profiles file stops it before it
//! advertises anything, and SIGTERM ends it cleanly even with no kubelet and no acceld yet.
//! (Being an integration test of this package also makes `cargo test --workspace` build the
//! binary the end-to-end tests in `tests/` drive.)
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_accel-device-plugin");

#[test]
fn a_broken_profiles_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let profiles = dir.path().join("profiles.json");
    // A device share naming a profile the file does not define.
    std::fs::write(
        &profiles,
        r#"{"profiles":{"2e-1g":{"engines":2,"memory":"1G","queues":4}},
            "devices":{"*":[{"profile":"4e-4g","count":2}]}}"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--kubelet-dir")
        .arg(dir.path())
        .arg("--acceld")
        .arg(dir.path().join("acceld.sock"))
        .arg("--profiles")
        .arg(&profiles)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("4e-4g"),
        "the error names the unknown profile: {err}"
    );
    // Nothing was served: no plugin socket appeared in the kubelet's directory.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".sock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn sigterm_stops_it_without_a_kubelet_or_acceld() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .arg("--kubelet-dir")
        .arg(dir.path())
        .arg("--acceld")
        .arg(dir.path().join("acceld.sock"))
        .arg("--pod-resources")
        .arg(dir.path().join("pod-resources.sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "it waits for acceld, it does not exit"
    );
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let t = Instant::now();
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
}
