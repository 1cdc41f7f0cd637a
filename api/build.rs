//! Generates the accelvirt.v1 messages and service from the `.proto` in this crate, with
//! protox (a protobuf compiler in Rust: no `protoc` to install).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/accelvirt/v1/accelvirt.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
