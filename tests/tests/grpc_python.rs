//! acceld's API and the device plugin's driven from Python's grpcio, with stubs generated
//! from the `.proto` files in the repository by grpc_tools: another implementation of gRPC
//! and protobuf is the judge of both. grpcio and grpcio-tools come from PyPI into a virtual
//! environment under target/, made once and reused.
use accelvirt_tests::{grpc_python as python, grpc_python_stubs, root, Acceld, Sim};
use std::process::Command;

#[test]
fn python_grpcio_drives_the_daemon_with_stubs_from_the_proto() {
    let py = python();
    let stubs = grpc_python_stubs(
        &py,
        &root().join("api").join("proto"),
        "accelvirt/v1/accelvirt.proto",
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

/// Python's grpcio plays the kubelet for the device plugin: it serves the registration
/// socket, and calls the plugin's GetDevicePluginOptions, ListAndWatch, Allocate,
/// GetPreferredAllocation and PreStartContainer with stubs from the device plugin API's
/// `api.proto`.
#[test]
fn python_grpcio_plays_the_kubelet_for_the_device_plugin() {
    use std::io::{BufRead, BufReader};
    let py = python();
    let stubs = grpc_python_stubs(
        &py,
        &root().join("device-plugin").join("proto"),
        "deviceplugin/v1beta1/api.proto",
    );
    let sim = Sim::start();
    let d = Acceld::start(&sim, &[]);
    d.ctl_json(&["create-vf", "--count", "3"]);
    let kdir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..3)
        .map(|v| accel_device_plugin::inventory::vf_id(sim.sock.to_str().unwrap(), v))
        .collect();
    let mut kubelet = Command::new(&py)
        .arg(root().join("tests/py/kubelet.py"))
        .arg(stubs.path())
        .arg(kdir.path())
        .args(&ids)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(kubelet.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "serving", "the Python kubelet did not start");
    let plugin = std::process::Command::new(accelvirt_tests::bin("accel-device-plugin"))
        .arg("--kubelet-dir")
        .arg(kdir.path())
        .arg("--acceld")
        .arg(&d.sock)
        .arg("--pod-resources")
        .arg(kdir.path().join("none.sock"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let st = kubelet.wait_with_output().unwrap();
    let mut plugin = plugin;
    let _ = plugin.kill();
    let plog = plugin.wait_with_output().unwrap();
    assert!(
        st.status.success() && rest.trim() == "ok",
        "the Python kubelet: {rest}{}\nplugin:\n{}",
        String::from_utf8_lossy(&st.stderr),
        String::from_utf8_lossy(&plog.stderr)
    );
}
