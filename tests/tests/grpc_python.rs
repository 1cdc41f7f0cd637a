//! acceld's API driven from Python's grpcio, with stubs generated from the `.proto` in the
//! repository by grpc_tools: another implementation of gRPC and protobuf is the judge of the
//! API. grpcio and grpcio-tools come from PyPI into a virtual environment under target/,
//! made once and reused.
use accelvirt_tests::{root, Acceld, Sim};
use std::path::PathBuf;
use std::process::Command;

/// The virtual environment's python, with grpcio and grpcio-tools installed.
fn python() -> PathBuf {
    let venv = root().join("target").join("py-grpc");
    let py = venv.join("bin").join("python");
    let stamp = venv.join(".installed");
    if stamp.exists() {
        return py;
    }
    let run = |c: &mut Command, what: &str| {
        let o = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            o.status.success(),
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    };
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv (python3 with venv is needed)",
    );
    run(
        Command::new(&py).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "grpcio>=1.60",
            "grpcio-tools>=1.60",
        ]),
        "pip install grpcio grpcio-tools (from PyPI)",
    );
    std::fs::write(&stamp, b"").unwrap();
    py
}

#[test]
fn python_grpcio_drives_the_daemon_with_stubs_from_the_proto() {
    let py = python();
    let stubs = tempfile::tempdir().unwrap();
    let proto = root().join("api").join("proto");
    let o = Command::new(&py)
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto)
        .arg(format!("--python_out={}", stubs.path().display()))
        .arg(format!("--grpc_python_out={}", stubs.path().display()))
        .arg(proto.join("accelvirt/v1/accelvirt.proto"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "protoc: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let sim = Sim::start();
    let d = Acceld::start(&sim, &[]);
    let o = Command::new(&py)
        .arg(root().join("tests/py/acceld_client.py"))
        .arg(stubs.path())
        .arg(&d.sock)
        .arg(&sim.sock)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "the Python client: {}{}\nacceld:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        d.log()
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "ok");
}
