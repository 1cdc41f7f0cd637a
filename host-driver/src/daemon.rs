//! acceld's API from this side: the client accelctl uses when a daemon owns the device, and
//! the conversions of this crate's types (errors, hand-offs, flash slots) to and from their
//! `accelvirt.v1` messages, which the daemon uses to answer.

use crate::accel::VfHandoff;
use crate::error::{Error, Result};
use crate::transport::VfEndpoint;
use crate::update::Slot;
use accelvirt_api::v1;
use accelvirt_api::v1::accelvirt_client::AccelvirtClient;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;

/// An error as the daemon answers it: the gRPC code for programs, accelctl's exit code in
/// metadata for accelctl, the message as accelctl would print it.
pub fn error_status(e: &Error) -> tonic::Status {
    use tonic::Code;
    let exit = e.exit_code();
    let code = match exit {
        1 => Code::FailedPrecondition,
        2 => Code::InvalidArgument,
        3 => Code::NotFound,
        4 => Code::Aborted,
        5 => Code::Unavailable,
        6 => Code::FailedPrecondition,
        7 => Code::PermissionDenied,
        _ => Code::Internal,
    };
    let mut s = tonic::Status::new(code, e.to_string());
    if let Ok(v) = exit.to_string().parse() {
        s.metadata_mut().insert(accelvirt_api::EXIT_CODE_KEY, v);
    }
    s
}

/// The daemon's answer as an error with accelctl's exit code.
pub fn status_error(s: &tonic::Status) -> Error {
    let code = s
        .metadata()
        .get(accelvirt_api::EXIT_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u8>().ok());
    match (s.code(), code) {
        (tonic::Code::PermissionDenied, _) => Error::PermissionDenied(s.message().to_string()),
        (_, Some(code)) => Error::Daemon {
            code,
            message: s.message().to_string(),
        },
        // Not one of ours (the transport's): the connection to the daemon failed.
        (tonic::Code::Unavailable, None) => Error::Daemon {
            code: 5,
            message: format!("acceld is not answering: {}", s.message()),
        },
        _ => Error::Daemon {
            code: 5,
            message: format!("acceld: {}", s.message()),
        },
    }
}

/// A hand-off as its message.
pub fn handoff_msg(h: &VfHandoff) -> v1::Handoff {
    let kind = match &h.endpoint {
        VfEndpoint::Pci {
            address,
            iommu_group,
            driver,
            vf_token,
        } => v1::vf_endpoint::Kind::Pci(v1::PciEndpoint {
            address: address.clone(),
            iommu_group: *iommu_group,
            driver: driver.clone(),
            vf_token: vf_token.clone(),
        }),
        VfEndpoint::Socket { path } => v1::vf_endpoint::Kind::Socket(v1::SocketEndpoint {
            path: path.to_string_lossy().into_owned(),
        }),
    };
    v1::Handoff {
        vf: h.vf.into(),
        endpoint: Some(v1::VfEndpoint { kind: Some(kind) }),
        qemu: h.qemu.clone(),
        cloud_hypervisor: h.cloud_hypervisor.clone(),
    }
}

/// The message as a hand-off.
pub fn handoff_from(m: &v1::Handoff) -> Result<VfHandoff> {
    let bad = || Error::Protocol("acceld sent a hand-off without an endpoint".into());
    let endpoint = match m
        .endpoint
        .as_ref()
        .and_then(|e| e.kind.as_ref())
        .ok_or_else(bad)?
    {
        v1::vf_endpoint::Kind::Pci(p) => VfEndpoint::Pci {
            address: p.address.clone(),
            iommu_group: p.iommu_group,
            driver: p.driver.clone(),
            vf_token: p.vf_token.clone(),
        },
        v1::vf_endpoint::Kind::Socket(s) => VfEndpoint::Socket {
            path: PathBuf::from(&s.path),
        },
    };
    Ok(VfHandoff {
        vf: u16::try_from(m.vf).map_err(|_| Error::Protocol("VF index out of range".into()))?,
        endpoint,
        qemu: m.qemu.clone(),
        cloud_hypervisor: m.cloud_hypervisor.clone(),
    })
}

/// A flash slot as its message.
pub fn slot_msg(s: &Slot) -> v1::FlashSlot {
    v1::FlashSlot {
        name: s.name.into(),
        state: s.state.into(),
        fw_version: s.version,
        build_id: s.build_id,
        size: s.size,
    }
}

/// The message as a flash slot (names and states are the few this crate knows).
pub fn slot_from(m: &v1::FlashSlot) -> Result<Slot> {
    let name = ["A", "B"]
        .into_iter()
        .find(|n| *n == m.name)
        .ok_or_else(|| Error::Protocol(format!("unknown flash slot {:?}", m.name)))?;
    let state = ["active", "pending", "valid", "bad", "empty"]
        .into_iter()
        .find(|n| *n == m.state)
        .ok_or_else(|| Error::Protocol(format!("unknown slot state {:?}", m.state)))?;
    Ok(Slot {
        name,
        state,
        version: m.fw_version,
        build_id: m.build_id,
        size: m.size,
    })
}

/// Where accelctl looks for the daemon: `--acceld PATH`, else `$ACCELD_SOCKET`, else the
/// default socket if it exists. `None`: go to the device directly.
pub fn socket(given: Option<&Path>) -> Option<(PathBuf, bool)> {
    if let Some(p) = given {
        return Some((p.to_path_buf(), true));
    }
    if let Some(p) = std::env::var_os("ACCELD_SOCKET").filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(p), true));
    }
    let d = Path::new(accelvirt_api::DEFAULT_SOCKET);
    d.exists().then(|| (d.to_path_buf(), false))
}

/// A connection to acceld.
#[derive(Debug, Clone)]
pub struct Client {
    /// The generated client.
    pub api: AccelvirtClient<Channel>,
    /// The socket.
    pub path: PathBuf,
}

impl Client {
    /// Connects to the daemon at `path` (a UNIX socket).
    pub async fn connect(path: &Path) -> Result<Self> {
        // A daemon whose accept queue is full (many clients at once) answers a moment later.
        let mut wait = std::time::Duration::from_millis(1);
        loop {
            match Self::connect_once(path).await {
                Err(Error::Connect { source, .. })
                    if source.kind() == std::io::ErrorKind::WouldBlock
                        && wait < std::time::Duration::from_millis(500) =>
                {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                r => return r,
            }
        }
    }

    async fn connect_once(path: &Path) -> Result<Self> {
        // The URI is a placeholder: the connector reaches the socket.
        let ch = unix_channel(
            tonic::transport::Endpoint::from_static("http://acceld"),
            path,
        )
        .await
        .map_err(|e| {
            // The socket's own error, wherever it is in the chain.
            let mut cause = std::error::Error::source(&e);
            let mut found = None;
            while let Some(c) = cause {
                if let Some(io) = c.downcast_ref::<std::io::Error>() {
                    found = Some(std::io::Error::new(io.kind(), io.to_string()));
                    break;
                }
                cause = c.source();
            }
            let io = found.unwrap_or_else(|| std::io::Error::other(e.to_string()));
            if io.kind() == std::io::ErrorKind::PermissionDenied {
                return Error::PermissionDenied(format!(
                    "cannot connect to acceld at {}: {io}",
                    path.display()
                ));
            }
            Error::Connect {
                path: path.to_path_buf(),
                source: io,
            }
        })?;
        Ok(Client {
            api: AccelvirtClient::new(ch).max_decoding_message_size(64 << 20),
            path: path.to_path_buf(),
        })
    }
}

/// A daemon reply's payload, or its error as accelctl's.
pub fn reply<T>(r: std::result::Result<tonic::Response<T>, tonic::Status>) -> Result<T> {
    r.map(|r| r.into_inner()).map_err(|s| status_error(&s))
}

/// Where acceld says its VF `vf` of `device` ("" when it owns one device) is, for opening it
/// for jobs: what a remote VF's exporter serves when given an acceld VF id.
pub async fn vf_target(acceld: &Path, device: &str, vf: u16) -> Result<crate::vf::Target> {
    let c = Client::connect(acceld).await?;
    let r = reply(
        c.api
            .clone()
            .get_vf(v1::VfRequest {
                device: device.to_string(),
                vf: vf.into(),
            })
            .await,
    )?;
    let h = r
        .handoff
        .as_ref()
        .ok_or_else(|| Error::Protocol("acceld sent a VF without its hand-off".into()))?;
    Ok(crate::vf::Target::of(handoff_from(h)?.endpoint))
}

/// A gRPC channel over the UNIX socket at `path`, with `endpoint`'s settings (its URI is a
/// placeholder that names the `:authority`).
pub async fn unix_channel(
    endpoint: tonic::transport::Endpoint,
    path: &Path,
) -> std::result::Result<tonic::transport::Channel, tonic::transport::Error> {
    let p = path.to_path_buf();
    endpoint
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let p = p.clone();
            async move {
                let s = tokio::net::UnixStream::connect(&p).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_exit_codes_and_messages_across_the_daemon() {
        use shared_abi::mailbox::Status as S;
        let cases = [
            Error::Invalid("--count 0".into()),
            Error::Firmware {
                op: "CREATE_VFS",
                status: S::OutOfResources,
            },
            Error::Firmware {
                op: "QUERY_VF",
                status: S::InvalidVf,
            },
            Error::Conflict("busy".into()),
            Error::FirmwareFaulted { code: 4 },
            Error::Timeout { what: "x", ms: 5 },
            Error::PermissionDenied("no".into()),
        ];
        for e in cases {
            let back = status_error(&error_status(&e));
            assert_eq!(back.exit_code(), e.exit_code(), "{e}");
            if !matches!(e, Error::PermissionDenied(_)) {
                assert_eq!(back.to_string(), e.to_string());
            }
        }
    }

    #[test]
    fn handoffs_and_slots_round_trip() {
        let h = crate::accel::handoff(
            3,
            VfEndpoint::Pci {
                address: "0000:3b:00.4".into(),
                iommu_group: Some(7),
                driver: None,
                vf_token: Some("t".into()),
            },
        );
        let b = handoff_from(&handoff_msg(&h)).unwrap();
        assert_eq!(b.endpoint, h.endpoint);
        assert_eq!(
            (b.vf, b.qemu, b.cloud_hypervisor),
            (h.vf, h.qemu, h.cloud_hypervisor)
        );
        let s = Slot {
            name: "B",
            state: "pending",
            version: 0x0102_0003,
            build_id: 9,
            size: 100,
        };
        assert_eq!(slot_from(&slot_msg(&s)).unwrap(), s);
    }
}
