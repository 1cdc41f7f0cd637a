//! # vm-harness: a real guest for every user-facing path
//!
//! Boots a Debian Linux 6.1 guest under QEMU with TCG (no KVM needed), an emulated Intel IOMMU,
//! guest RAM shared through a memfd, and one `vfio-user-pci` device per socket given, so the
//! guest's PCI core, `lspci` and `vfio-pci` meet our device model as they would silicon. The
//! guest runs a shell script from a busybox initramfs and powers off; the harness returns the
//! script's exit status, the serial log and whatever QEMU printed.
//!
//! Everything comes from Debian's package registry, fetched with `apt-get` under private state
//! directories (nothing is installed on the machine) and cached between runs:
//! - [`assets`]: QEMU ≥ 10.1 and its libraries from the unstable suite, run through their own
//!   dynamic loader; the kernel, its vfio modules, busybox-static and pciutils from bookworm.
//! - [`initramfs`]: the guest's root file system, written as a newc cpio archive.
//! - [`qemu`]: the boot itself.
#![forbid(unsafe_code)]

pub mod assets;
pub mod initramfs;
pub mod qemu;

pub use assets::Assets;
pub use qemu::{vfio_user_device, Guest, Outcome};

/// Why the harness could not give an answer about the guest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command the harness runs failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// The command.
        what: String,
        /// Its status and the end of its output.
        detail: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A package or file the harness needs is not where Debian puts it.
    #[error("{0}")]
    Missing(String),
    /// The guest did not power off within the time allowed.
    #[error("the guest did not finish within {secs} s; serial log so far:\n{serial}")]
    Timeout {
        /// The limit.
        secs: u64,
        /// What the guest printed.
        serial: String,
    },
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs a command to completion; an error carries its status and the tail of its output.
pub(crate) fn run(what: &str, cmd: &mut std::process::Command) -> Result<String> {
    let out = cmd.output().map_err(|e| Error::Command {
        what: what.to_string(),
        detail: e.to_string(),
    })?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(8).collect();
        return Err(Error::Command {
            what: what.to_string(),
            detail: format!(
                "{}: {}",
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ),
        });
    }
    Ok(text)
}
