//! Generates the kubelet's device plugin API (v1beta1) and its pod resources API (v1), both
//! sides of each (the plugin serves DevicePlugin and calls Registration and
//! PodResourcesLister; the tests play the kubelet), with protox: no `protoc` to install.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/deviceplugin/v1beta1/api.proto",
        "proto/podresources/v1/api.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
