//! # accelvirt management API
//!
//! `accelvirt.v1`, generated from `proto/accelvirt/v1/accelvirt.proto`: what `acceld` serves
//! on its UNIX socket and `accelctl` (or any gRPC client: the `.proto` is the contract) calls.
//! Beside the generated code, the conversions between its messages and the firmware's
//! structures in `shared-abi`, both ways, so that a VF read through the daemon is the same
//! value as one read from the device.
#![forbid(unsafe_code)]

pub mod convert;

/// The generated messages, client and server.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod v1 {
    tonic::include_proto!("accelvirt.v1");
}

/// Metadata key carrying accelctl's exit code for an error status.
pub const EXIT_CODE_KEY: &str = "accelvirt-exit-code";

/// Exit code for a caller the daemon does not let manage its devices.
pub const EXIT_PERMISSION_DENIED: u8 = 7;

/// Where acceld listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/accelvirt/acceld.sock";
