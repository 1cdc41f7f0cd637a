//! Serving each resource's plugin on the kubelet's socket directory, and registering it.
//!
//! The kubelet deletes every socket in its device-plugins directory when it starts, and
//! makes its own `kubelet.sock` anew: a plugin must then serve again and register again.
//! Each resource's task looks at both every [`TICK`], as the published plugins watch the
//! directory: its own socket gone means serve again; a different `kubelet.sock` means
//! register again.

use crate::plugin::Plugin;
use crate::proto::v1beta1 as k;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// How often the directory is looked at.
pub const TICK: Duration = Duration::from_millis(100);

/// The socket a resource's plugin serves on: `accelvirt-vf.sock`, `accelvirt-vf-4e-4g.sock`.
pub fn socket_name(resource: &str) -> String {
    format!(
        "accelvirt-{}.sock",
        resource.rsplit('/').next().unwrap_or(resource)
    )
}

/// How long one registration may take (a kubelet that accepts and never answers is tried
/// again, not waited on for ever).
pub const REGISTER: Duration = Duration::from_secs(5);

/// Registers `resource`, served on `endpoint` (a name in the directory), with the kubelet.
pub async fn register(kubelet: &Path, resource: &str, endpoint: &str) -> Result<(), String> {
    tokio::time::timeout(REGISTER, register_once(kubelet, resource, endpoint))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{}: no answer to registering {resource} in {REGISTER:?}",
                kubelet.display()
            ))
        })
}

async fn register_once(kubelet: &Path, resource: &str, endpoint: &str) -> Result<(), String> {
    let ch = crate::unix_channel(kubelet)
        .await
        .map_err(|e| format!("{}: {e}", kubelet.display()))?;
    k::registration_client::RegistrationClient::new(ch)
        .register(k::RegisterRequest {
            version: crate::API_VERSION.into(),
            endpoint: endpoint.into(),
            resource_name: resource.into(),
            options: Some(crate::plugin::options()),
        })
        .await
        .map_err(|s| format!("the kubelet refused {resource}: {}", s.message()))?;
    Ok(())
}

/// Identity of a file: a new file at the same path is a different one (an inode number
/// may be reused at once, so its change time counts too, to the nanosecond).
fn identity(p: &Path) -> Option<(u64, u64, i64, i64)> {
    std::fs::symlink_metadata(p)
        .ok()
        .map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

/// Serves one resource until `stop`, registering it whenever the kubelet (re)appears.
pub async fn serve_resource(dir: PathBuf, plugin: Plugin, mut stop: oneshot::Receiver<()>) {
    let name = socket_name(&plugin.resource);
    let path = dir.join(&name);
    let kubelet = dir.join(crate::KUBELET_SOCKET);
    let mut said = String::new();
    loop {
        let _ = std::fs::remove_file(&path);
        let listener = match tokio::net::UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) => {
                let m = format!("{}: {e}", path.display());
                if m != said {
                    crate::log!("cannot serve {}: {m}; trying again", plugin.resource);
                    said = m;
                }
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        // Only the kubelet (root) has any business here.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        let ours = identity(&path);
        let (down_tx, down_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .max_concurrent_streams(Some(64))
                .add_service(k::device_plugin_server::DevicePluginServer::new(
                    plugin.clone(),
                ))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    async {
                        let _ = down_rx.await;
                    },
                ),
        );
        let mut registered = None;
        let stopped = loop {
            if identity(&path) != ours {
                crate::log!(
                    "{}: {} was removed (the kubelet restarted): serving again",
                    plugin.resource,
                    path.display()
                );
                break false;
            }
            let now = identity(&kubelet);
            if now.is_some() && now != registered {
                match register(&kubelet, &plugin.resource, &name).await {
                    Ok(()) => {
                        crate::log!(
                            "{}: registered with the kubelet ({})",
                            plugin.resource,
                            path.display()
                        );
                        registered = now;
                        said.clear();
                    }
                    Err(e) => {
                        if e != said {
                            crate::log!("{}: {e}; trying again", plugin.resource);
                            said = e;
                        }
                    }
                }
            }
            tokio::select! {
                _ = &mut stop => break true,
                _ = tokio::time::sleep(TICK) => {}
            }
        };
        // A ListAndWatch stream never ends by itself (the kubelet keeps it open): a short
        // grace for calls in flight, then the connections are dropped.
        let _ = down_tx.send(());
        let abort = server.abort_handle();
        if tokio::time::timeout(Duration::from_millis(200), server)
            .await
            .is_err()
        {
            abort.abort();
        }
        if stopped {
            if identity(&path) == ours {
                let _ = std::fs::remove_file(&path);
            }
            return;
        }
    }
}

/// The resources served now, each with its task.
#[derive(Debug)]
pub struct Servers {
    dir: PathBuf,
    running: BTreeMap<String, (oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Servers {
    /// None yet, in `dir`.
    pub fn new(dir: PathBuf) -> Servers {
        Servers {
            dir,
            running: BTreeMap::new(),
        }
    }

    /// Serves exactly `resources` (starting and stopping plugins to match).
    pub async fn set(
        &mut self,
        resources: &[String],
        snapshot: &watch::Receiver<std::sync::Arc<crate::inventory::Snapshot>>,
        allocations: &std::sync::Arc<crate::pods::Allocations>,
    ) {
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|r| !resources.contains(r))
            .cloned()
            .collect();
        for r in gone {
            if let Some((stop, task)) = self.running.remove(&r) {
                crate::log!("{r}: no longer in the profiles: its plugin stops");
                let _ = stop.send(());
                let _ = task.await;
            }
        }
        for r in resources {
            if !self.running.contains_key(r) {
                let (tx, rx) = oneshot::channel();
                let plugin = Plugin {
                    resource: r.clone(),
                    snapshot: snapshot.clone(),
                    allocations: allocations.clone(),
                };
                let task = tokio::spawn(serve_resource(self.dir.clone(), plugin, rx));
                self.running.insert(r.clone(), (tx, task));
            }
        }
    }

    /// Stops every plugin (their sockets removed).
    pub async fn stop(&mut self) {
        for (_, (stop, task)) in std::mem::take(&mut self.running) {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
}
