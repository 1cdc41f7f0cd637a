//! `cargo xtask` as a new user meets it: the README's main job runs to the end in a
//! directory of its own and leaves nothing behind, writes no terminal codes into a pipe;
//! `--help` helps and a wrong argument is refused before anything is built; two versions
//! built from one tree have two build ids.
use accelvirt_tests::{firmware_image, image_target_dir, root};
use std::process::Command;

fn xtask(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO"))
        .current_dir(root())
        .arg("xtask")
        .args(args)
        .env("CARGO_TARGET_DIR", image_target_dir())
        .output()
        .expect("run cargo xtask")
}

#[test]
fn help_helps_and_a_wrong_argument_runs_nothing() {
    for task in ["demo", "image"] {
        let o = xtask(&[task, "--help"]);
        assert!(o.status.success(), "{task} --help");
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.starts_with(&format!("usage: cargo xtask {task}")),
            "{text}"
        );
        let o = xtask(&[task, "--bogus"]);
        assert!(!o.status.success(), "{task} --bogus");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("unknown argument --bogus"), "{err}");
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("=="),
            "{task} --bogus started its work"
        );
    }
}

/// `xtask vm --help` says what a guest needs before accelctl drives a function in it.
#[test]
fn vm_help_says_to_bind_the_function_to_vfio_pci() {
    let o = xtask(&["vm", "--help"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("vfio-pci/new_id") && text.contains("1fac a0c1"),
        "{text}"
    );
}

#[test]
fn two_versions_from_one_tree_have_two_build_ids() {
    let dir = tempfile::tempdir().unwrap();
    let next = dir.path().join("next.img");
    accelvirt_tests::build_image(&next, &["--version", "0.1.1"]);
    let id = |p: &std::path::Path| {
        let b = std::fs::read(p).unwrap();
        fw_image::header(&b).unwrap().build_id.get()
    };
    assert_ne!(id(&firmware_image().0), id(&next));
}

#[test]
fn the_demo_runs_to_the_end_and_leaves_nothing_behind() {
    let runtime = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["xtask", "demo"])
        .env("CARGO_TARGET_DIR", image_target_dir())
        .env("ACCEL_RUNTIME_DIR", runtime.path())
        .output()
        .expect("run cargo xtask demo");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("demo complete"), "{out}");
    assert!(
        out.contains(&runtime.path().display().to_string()),
        "the demo worked in the runtime directory it was given: {out}"
    );
    assert!(!out.contains('\x1b'), "no terminal codes in a pipe");
    assert!(!out.contains("/../"), "paths are clean");
    let left: Vec<_> = std::fs::read_dir(runtime.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
