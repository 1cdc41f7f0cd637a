//! Which VFs are in use: the kubelet's pod resources API lists the device IDs each running
//! container holds. Where it cannot be asked, every VF the plugin has handed out since it
//! started counts as in use (the kubelet never says when a pod lets go of one).

use crate::proto::podresources as pr;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long after this plugin's Allocate a VF counts as in use whatever the kubelet says:
/// the kubelet records a device as a pod's only once the plugin's Allocate has answered.
pub const RECENT: Duration = Duration::from_secs(5);

/// The VFs this plugin has allocated since it started, and when last.
#[derive(Debug, Default)]
pub struct Allocations {
    ids: Mutex<BTreeMap<String, Instant>>,
}

impl Allocations {
    /// Records an Allocate.
    pub fn record<'a>(&self, ids: impl IntoIterator<Item = &'a String>) {
        let now = Instant::now();
        let mut g = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        g.extend(ids.into_iter().map(|id| (id.clone(), now)));
    }

    /// Every ID ever allocated.
    pub fn all(&self) -> BTreeSet<String> {
        let g = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        g.keys().cloned().collect()
    }

    /// The IDs allocated within `within`.
    pub fn recent(&self, within: Duration) -> BTreeSet<String> {
        let g = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        g.iter()
            .filter(|(_, t)| t.elapsed() < within)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// In use, and how the plugin knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InUse {
    /// Device IDs, each with the resource it is held as (`None` from the plugin's own
    /// record, which does not say).
    pub ids: BTreeMap<String, Option<String>>,
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
    /// The IDs of our resources held now, or the plugin's own record where the kubelet
    /// cannot say.
    pub async fn in_use(&self, own: &Allocations) -> InUse {
        match tokio::time::timeout(Duration::from_secs(3), list(&self.socket)).await {
            Ok(Ok(mut ids)) => {
                // Allocated just now, perhaps not yet the kubelet's record.
                for id in own.recent(RECENT) {
                    ids.entry(id).or_insert(None);
                }
                InUse {
                    ids,
                    fallback: None,
                }
            }
            Ok(Err(e)) => InUse {
                ids: own.all().into_iter().map(|id| (id, None)).collect(),
                fallback: Some(e),
            },
            Err(_) => InUse {
                ids: own.all().into_iter().map(|id| (id, None)).collect(),
                fallback: Some(format!("{}: no answer in 3 s", self.socket.display())),
            },
        }
    }
}

async fn list(socket: &Path) -> Result<BTreeMap<String, Option<String>>, String> {
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
            d.resource_name
                .strip_prefix(crate::DOMAIN)
                .is_some_and(|r| r.starts_with('/'))
        })
        .flat_map(|d| {
            d.device_ids
                .iter()
                .map(|id| (id.clone(), Some(d.resource_name.clone())))
        })
        .collect())
}
