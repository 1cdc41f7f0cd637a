//! # accel-device-plugin: acceld's VFs, advertised to the kubelet
//!
//! A Kubernetes device plugin (the kubelet's device plugin API v1beta1, [`proto`]) that is
//! one more client of acceld: it never opens a device. It reads each device's VFs and
//! health from the daemon ([`state`]), follows the daemon's events so health reaches the
//! kubelet as it changes ([`health`]), names each VF once for good ([`inventory`]), serves
//! one plugin per resource (`accelvirt.io/vf`, `accelvirt.io/vf-<profile>`) on the kubelet's
//! socket directory and registers it again whenever the kubelet restarts ([`kubelet`],
//! [`plugin`]), tells the kubelet what a container needs to reach its VFs ([`allocate`]) and
//! which VFs it would rather give ([`preferred`]), and re-carves a device through acceld
//! when the profiles file changes, unless a VF of it is in use ([`profiles`], [`pods`]).
#![forbid(unsafe_code)]

pub mod allocate;
pub mod events;
pub mod health;
pub mod inventory;
pub mod kubelet;
pub mod plugin;
pub mod pods;
pub mod preferred;
pub mod profiles;
pub mod state;

/// The generated protocol code.
pub mod proto {
    /// The kubelet's device plugin API (`api.proto`, package `v1beta1`).
    #[allow(missing_docs, missing_debug_implementations, clippy::all)]
    pub mod v1beta1 {
        tonic::include_proto!("v1beta1");
    }
    /// The kubelet's pod resources API (package `v1`): which devices running containers hold.
    #[allow(missing_docs, missing_debug_implementations, clippy::all)]
    pub mod podresources {
        tonic::include_proto!("v1");
    }
}

/// The API version the plugin registers with.
pub const API_VERSION: &str = "v1beta1";
/// The vendor domain of every resource name.
pub const DOMAIN: &str = "accelvirt.io";
/// The resource every VF that matches no profile is advertised as.
pub const GENERIC: &str = "accelvirt.io/vf";
/// Remote VFs (imported from another host by `accel-remote import`).
pub const REMOTE: &str = "accelvirt.io/vf-remote";
/// The kubelet's device plugin directory.
pub const KUBELET_DIR: &str = "/var/lib/kubelet/device-plugins";
/// The kubelet's registration socket, in that directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// The kubelet's pod resources socket.
pub const POD_RESOURCES: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";

/// Logs a line on stderr (the journal, or the pod's log).
#[macro_export]
macro_rules! log {
    ($($t:tt)*) => { eprintln!("accel-device-plugin: {}", format_args!($($t)*)) };
}

/// A tonic channel to a UNIX socket (":authority" is "localhost", as the kubelet's own
/// clients send).
pub async fn unix_channel(
    path: &std::path::Path,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let e = tonic::transport::Endpoint::from_static("http://localhost")
        .connect_timeout(std::time::Duration::from_secs(2));
    host_driver::daemon::unix_channel(e, path).await
}
