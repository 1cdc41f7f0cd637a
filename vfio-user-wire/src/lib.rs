//! # vfio-user on the wire
//!
//! The one definition of the vfio-user protocol for both ends we ship: the message structs
//! and constants ([`proto`], from QEMU's `docs/interop/vfio-user.rst`) and the framing
//! ([`framing`]: one message with its descriptors in, one out), used by accel-sim's server
//! and by the host driver's client; the mapping both ends access shared words through
//! ([`shared`]); and the naming rule of a VF's socket beside its PF's.
#![deny(unsafe_code)]

pub mod framing;
pub mod proto;
pub mod shared;
mod sys;

use std::path::{Path, PathBuf};

/// Path of VF `v`'s socket beside the PF socket: `accel0.sock` → `accel0-vf3.sock`.
pub fn vf_socket_path(pf: &Path, v: u16) -> PathBuf {
    let name = pf
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".sock").unwrap_or(&name);
    pf.with_file_name(format!("{stem}-vf{v}.sock"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn vf_sockets_sit_beside_the_pf_socket() {
        let p = std::path::Path::new("/run/accel/accel0.sock");
        assert_eq!(
            super::vf_socket_path(p, 3),
            std::path::Path::new("/run/accel/accel0-vf3.sock")
        );
    }
}
