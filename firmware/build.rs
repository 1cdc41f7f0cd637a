//! Links the freestanding image with the board's memory layout and defmt's symbol table.
//! Host builds (tests, the device model) are untouched.
fn main() {
    println!("cargo:rerun-if-changed=board.ld");
    println!("cargo:rerun-if-env-changed=ACCEL_FW_BUILD_ID");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        println!("cargo:rustc-link-search={dir}");
        println!("cargo:rustc-link-arg-bins=-Tboard.ld");
        println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
        println!("cargo:rustc-link-arg-bins=--no-pie");
    }
}
