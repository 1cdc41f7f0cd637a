//! The desired-state file is always whole: after a full disk (a small tmpfs) and after the
//! writer is killed at random moments, what is on disk is the old state or the new one.
use acceld::state::{load, save, DesiredState, StateError, VfLayout, FORMAT};
use std::path::Path;
use std::time::Duration;

fn layout(n: u16, weight: u16) -> DesiredState {
    DesiredState {
        format: FORMAT,
        device: "/run/accelvirt/accel0.sock".into(),
        vfs: (0..n)
            .map(|vf| VfLayout {
                vf,
                engines: 1,
                mem_granules: 64,
                queues: 4,
                vectors: 4,
                weight,
                vfio_pci: vf % 2 == 1,
            })
            .collect(),
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect()
}

#[test]
fn a_state_round_trips_and_what_is_not_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("accel0.json");
    assert!(load(&p).unwrap().is_none(), "no file: no state");
    let s = layout(4, 100);
    save(&p, &s).unwrap();
    assert_eq!(load(&p).unwrap(), Some(s));
    assert!(leftovers(dir.path()).is_empty());
    // A file from before VFs' binding was recorded: none bound; an unbound VF is written
    // as it was then.
    let old = br#"{"format": 1, "device": "d", "vfs": [{"vf": 0, "engines": 1, "mem_granules": 64, "queues": 4, "vectors": 4, "weight": 100}]}"#;
    std::fs::write(&p, old).unwrap();
    let o = load(&p).unwrap().unwrap();
    assert!(!o.vfs[0].vfio_pci);
    assert!(!serde_json::to_string(&o).unwrap().contains("vfio_pci"));
    std::fs::write(&p, b"{\"format\": 1, \"device\": 3").unwrap();
    assert!(matches!(load(&p), Err(StateError::Corrupt { .. })));
    std::fs::write(&p, b"{\"format\": 9, \"device\": \"x\", \"vfs\": []}").unwrap();
    assert!(matches!(load(&p), Err(StateError::Format { found: 9, .. })));
    let mut twice = layout(2, 100);
    twice.vfs[1].vf = 0;
    std::fs::write(&p, serde_json::to_vec(&twice).unwrap()).unwrap();
    let e = load(&p).unwrap_err();
    assert!(e.to_string().contains("twice"), "{e}");
}

/// A full disk: the save fails with NoSpace, the file holds the state before, and no
/// temporary file is left. Needs root for its own small tmpfs (CI runs as root).
#[test]
fn a_full_disk_leaves_the_state_before() {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").map_or(true, |m| m.uid() != 0) {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    /// The tmpfs, unmounted however the test ends.
    struct Mounted(tempfile::TempDir);
    impl Drop for Mounted {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }
    let dir = Mounted(tempfile::tempdir().unwrap());
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "accelvirt-state-test"])
        .arg(dir.0.path())
        .status()
        .expect("mount(8)");
    assert!(st.success(), "mount a 16 KiB tmpfs");
    let dir = &dir.0;
    let p = dir.path().join("accel0.json");
    let small = layout(2, 100);
    save(&p, &small).unwrap();
    // About 150 bytes a VF, pretty-printed: 200 do not fit in what is left.
    let big = layout(200, 500);
    let e = save(&p, &big).unwrap_err();
    let left = leftovers(dir.path());
    let now = load(&p);
    let _ = std::process::Command::new("umount")
        .arg(dir.path())
        .status();
    assert!(matches!(e, StateError::NoSpace { .. }), "{e}");
    assert_eq!(now.unwrap(), Some(small), "the state before");
    assert!(left.is_empty(), "{left:?}");
}

/// The writer killed (SIGKILL) at spread-out moments while it saves two states in turn: the
/// file always loads, as one of the two.
#[test]
fn a_writer_killed_at_any_moment_leaves_a_whole_file() {
    const CHILD: &str = "ACCELD_STATE_WRITER";
    if let Some(p) = std::env::var_os(CHILD) {
        let p = std::path::PathBuf::from(p);
        let (a, b) = (layout(3, 100), layout(60, 700));
        loop {
            save(&p, &a).unwrap();
            save(&p, &b).unwrap();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("accel0.json");
    let (a, b) = (layout(3, 100), layout(60, 700));
    save(&p, &a).unwrap();
    let me = std::env::current_exe().unwrap();
    for round in 0..40u64 {
        let mut child = std::process::Command::new(&me)
            .args([
                "--exact",
                "a_writer_killed_at_any_moment_leaves_a_whole_file",
                "--nocapture",
            ])
            .env(CHILD, &p)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(2_000 + round * 1_237 % 20_000));
        child.kill().unwrap();
        child.wait().unwrap();
        let got = load(&p).unwrap().expect("a state");
        assert!(
            got == a || got == b,
            "round {round}: a state that was never saved"
        );
        assert!(
            leftovers(dir.path()).is_empty(),
            "load removed the temporary files"
        );
    }
}
