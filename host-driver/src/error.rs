//! Typed errors. Each says what happened and, where there is one, what to do.

use shared_abi::mailbox::Status;
use std::path::PathBuf;

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the driver can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device address is neither a PCI address nor a socket path.
    #[error("'{0}' is not a device: give a PCI address (0000:01:00.0) or a vfio-user socket path")]
    BadAddress(String),
    /// Nothing answers at a socket path.
    #[error("cannot connect to {path}: {source}{hint}", path = path.display(), hint = connect_hint(path))]
    Connect {
        /// Socket.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The transport failed (socket closed, device gone).
    #[error("device connection lost: {0}")]
    Io(#[source] std::io::Error),
    /// The device model answered a vfio-user request with an error.
    #[error("the device refused {what}: {errno}")]
    Remote {
        /// What was asked.
        what: &'static str,
        /// errno from the server.
        errno: nix::errno::Errno,
    },
    /// The vfio-user peer broke the protocol.
    #[error("vfio-user protocol error: {0}")]
    Protocol(String),
    /// The device is not ours or not ready.
    #[error("{0}")]
    NotOurDevice(String),
    /// The device (its firmware, or the device model's socket) did not answer in time.
    #[error("no answer to {what} within {ms} ms: the device is busy or hung (check `accelctl -d DEV info`; it may need a reset)")]
    Timeout {
        /// Command.
        what: &'static str,
        /// Timeout.
        ms: u64,
    },
    /// The device's firmware has faulted (DEV_STATUS.FAULT or HALTED) and answers nothing.
    #[error("the device's firmware has faulted ({}, fault code {code}) and answers no commands; reset the device (a PF reset or FLR, or power cycle) and check its firmware", fault_name(*code))]
    FirmwareFaulted {
        /// `pf::FAULT_CODE`.
        code: u32,
    },
    /// Another process is changing the device, or did change it in a way that conflicts.
    #[error("{0}")]
    Conflict(String),
    /// Another host process holds the mailbox.
    #[error(
        "the device's mailbox is held by another process (token {0:#x}); retry when it is done"
    )]
    MailboxBusy(u32),
    /// The firmware refused a command.
    #[error("{op}: {}{}", status.describe(), hint(*status))]
    Firmware {
        /// Command.
        op: &'static str,
        /// Status.
        status: Status,
    },
    /// The firmware's response was malformed.
    /// The device refused a firmware image.
    #[error("the device refused the image: {0}")]
    ImageRejected(&'static str),
    #[error("malformed firmware response: {0}")]
    BadResponse(&'static str),
    /// Kernel sysfs / VFIO.
    #[error("{what}: {source}")]
    Kernel {
        /// What was attempted.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A request the user made does not make sense.
    #[error("{0}")]
    Invalid(String),
    /// acceld does not let this user manage its devices.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// acceld answered with an error: its message, and the exit code accelctl would have
    /// had going to the device itself.
    #[error("{message}")]
    Daemon {
        /// Exit code.
        code: u8,
        /// What failed, as the daemon said it.
        message: String,
    },
}

/// What to try when nothing answers at `path`, from what the path is.
fn connect_hint(path: &std::path::Path) -> String {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => {
            " (a directory: give the device model's socket in it, such as accel0.sock)".into()
        }
        Ok(m) if !m.file_type().is_socket() => {
            " (not a socket: give the device model's .sock, not its flash or another file)".into()
        }
        _ => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let vf = name.strip_suffix(".sock").and_then(|s| {
                let (stem, n) = s.rsplit_once("-vf")?;
                n.parse::<u16>().ok().map(|n| (stem.to_string(), n))
            });
            match vf {
                Some((stem, n)) => format!(
                    " (VF {n}'s socket: it exists while its PF's device model runs with VF {n} \
                     created; start that with: accel-sim --socket {}, then accelctl create-vf)",
                    path.with_file_name(format!("{stem}.sock")).display()
                ),
                None => format!(
                    " (is accel-sim running? start it with: accel-sim --socket {})",
                    path.display()
                ),
            }
        }
    }
}

fn hint(s: Status) -> &'static str {
    match s {
        Status::OutOfResources => {
            " (see free resources with `accelctl -d DEV info`; destroy VFs or ask for less)"
        }
        Status::Fragmented => {
            " (free memory exists but not in one piece; destroy and recreate VFs to compact)"
        }
        Status::InvalidVf => " (list VFs with `accelctl -d DEV vf list`)",
        Status::TooManyVfs => {
            " (the device supports at most TotalVFs VFs; see `accelctl -d DEV info`)"
        }
        Status::UnsupportedVersion => {
            " (host and firmware ABI differ: update accelctl or the firmware)"
        }
        _ => "",
    }
}

impl Error {
    /// Process exit code for accelctl (documented in its --help).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::BadAddress(_) | Error::Invalid(_) => 2,
            Error::Connect { .. } | Error::NotOurDevice(_) | Error::Kernel { .. } => 3,
            // A VF that does not exist is "no such device", whoever noticed.
            Error::Firmware {
                status: Status::InvalidVf,
                ..
            } => 3,
            Error::Timeout { .. } | Error::MailboxBusy(_) | Error::Conflict(_) => 4,
            Error::Io(_) | Error::Remote { .. } | Error::Protocol(_) | Error::BadResponse(_) => 5,
            Error::Firmware { .. } | Error::ImageRejected(_) => 1,
            Error::FirmwareFaulted { .. } => 6,
            Error::PermissionDenied(_) => 7,
            Error::Daemon { code, .. } => *code,
        }
    }

    /// The firmware status, if this is a firmware refusal.
    pub fn status(&self) -> Option<Status> {
        match self {
            Error::Firmware { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A firmware fault code's name, for messages.
pub fn fault_name(code: u32) -> &'static str {
    use shared_abi::mailbox::FaultCode;
    match FaultCode::from_wire(code) {
        Some(FaultCode::None) => "no fault code",
        Some(FaultCode::Panic) => "firmware panic",
        Some(FaultCode::BadBoard) => "invalid board description",
        Some(FaultCode::Inconsistent) => "register banks disagree with the firmware's books",
        Some(FaultCode::Watchdog) => "watchdog expired",
        Some(FaultCode::ScrubTimeout) => "memory scrubber timed out",
        None => "unknown fault",
    }
}
