//! Which VFs are in use: the kubelet's pod resources API lists the device IDs each running
//! container holds. Where it cannot be asked, every VF the plugin has handed out since it
//! started counts as in use (the kubelet never says when a pod lets go of one).

use crate::proto::podresources as pr;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The VFs this plugin has allocated since it started.
#[derive(Debug, Default)]
pub struct Allocations {
    ids: Mutex<BTreeSet<String>>,
}

impl Allocations {
    /// Records an Allocate.
    pub fn record<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        let mut g = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        g.extend(ids.into_iter().cloned());
    }

    /// Every ID ever allocated.
    pub fn all(&self) -> BTreeSet<String> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// In use, and how the plugin knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InUse {
    /// Device IDs.
    pub ids: BTreeSet<String>,
    /// `None` from the pod resources API, else why the plugin fell back on its own record.
    pub fallback: Option<String>,
}

/// Asks the kubelet which of our resources' devices running containers hold.
#[derive(Debug, Clone)]
pub struct PodResources {
    /// The kubelet's pod resources socket.
    pub socket: PathBuf,
}

impl PodResources {
    /// The IDs of `resources` held now, or the plugin's own record where the kubelet
    /// cannot say.
    pub async fn in_use(&self, resources: &BTreeSet<String>, own: &Allocations) -> InUse {
        match tokio::time::timeout(Duration::from_secs(3), list(&self.socket, resources)).await {
            Ok(Ok(ids)) => InUse {
                ids,
                fallback: None,
            },
            Ok(Err(e)) => InUse {
                ids: own.all(),
                fallback: Some(e),
            },
            Err(_) => InUse {
                ids: own.all(),
                fallback: Some(format!("{}: no answer in 3 s", self.socket.display())),
            },
        }
    }
}

async fn list(socket: &Path, resources: &BTreeSet<String>) -> Result<BTreeSet<String>, String> {
    let ch = crate::unix_channel(socket)
        .await
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let r = pr::pod_resources_lister_client::PodResourcesListerClient::new(ch)
        .list(pr::ListPodResourcesRequest {})
        .await
        .map_err(|e| format!("{}: {}", socket.display(), e.message()))?
        .into_inner();
    Ok(r.pod_resources
        .iter()
        .flat_map(|p| &p.containers)
        .flat_map(|c| &c.devices)
        // Any resource of ours, not only the ones the profiles name now: a VF a pod holds
        // as a profile since removed from the file is still in use.
        .filter(|d| {
            resources.contains(&d.resource_name)
                || d.resource_name
                    .strip_prefix(crate::DOMAIN)
                    .is_some_and(|r| r.starts_with('/'))
        })
        .flat_map(|d| d.device_ids.iter().cloned())
        .collect())
}
