//! `accel-remote` as a user meets it: its subcommands documented, bad arguments refused with
//! a message (the end-to-end tests between namespaces are in `tests/tests/remote.rs`, which
//! also need this binary built).
use std::process::Command;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_accel-remote"))
        .args(args)
        .output()
        .expect("run accel-remote")
}

#[test]
fn subcommands_are_documented_and_bad_arguments_refused() {
    let o = run(&["--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for c in ["export", "import", "stats"] {
        assert!(help.contains(c), "{help}");
    }
    let o = run(&["import", "--vf", "0"]);
    assert!(!o.status.success(), "import without --connect ran");
    let o = run(&["stats", "--runtime-dir", "/nonexistent-accelvirt", "--json"]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[]");
}
