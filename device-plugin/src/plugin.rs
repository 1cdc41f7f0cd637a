//! One resource's DevicePlugin service, as the kubelet calls it.

use crate::inventory::Snapshot;
use crate::pods::Allocations;
use crate::proto::v1beta1 as k;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Devices one Allocate may name (the kubelet asks for what a pod requests; a node has at
/// most a few hundred VFs).
pub const MAX_IDS: usize = 1024;

/// The service for one resource.
#[derive(Debug, Clone)]
pub struct Plugin {
    /// `accelvirt.io/...`.
    pub resource: String,
    /// What is advertised now.
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// What has been handed out.
    pub allocations: Arc<Allocations>,
}

/// The options the plugin registers with.
pub fn options() -> k::DevicePluginOptions {
    k::DevicePluginOptions {
        pre_start_required: false,
        get_preferred_allocation_available: true,
    }
}

#[tonic::async_trait]
impl k::device_plugin_server::DevicePlugin for Plugin {
    async fn get_device_plugin_options(
        &self,
        _: Request<k::Empty>,
    ) -> Result<Response<k::DevicePluginOptions>, Status> {
        Ok(Response::new(options()))
    }

    type ListAndWatchStream = ReceiverStream<Result<k::ListAndWatchResponse, Status>>;

    async fn list_and_watch(
        &self,
        _: Request<k::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        let mut rx = self.snapshot.clone();
        let resource = self.resource.clone();
        let (tx, out) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let list = rx.borrow_and_update().devices(&resource);
                // Only a change is sent: health flapping elsewhere costs this stream nothing.
                if last.as_ref() != Some(&list) {
                    let msg = k::ListAndWatchResponse {
                        devices: list.clone(),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                    last = Some(list);
                }
                tokio::select! {
                    c = rx.changed() => if c.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }

    async fn get_preferred_allocation(
        &self,
        req: Request<k::PreferredAllocationRequest>,
    ) -> Result<Response<k::PreferredAllocationResponse>, Status> {
        let snap = self.snapshot.borrow().clone();
        let mut out = Vec::new();
        for c in &req.get_ref().container_requests {
            if c.available_device_i_ds.len() > MAX_IDS || c.must_include_device_i_ds.len() > MAX_IDS
            {
                return Err(Status::invalid_argument("too many device IDs"));
            }
            let size = usize::try_from(c.allocation_size)
                .map_err(|_| Status::invalid_argument("negative allocation size"))?
                .min(c.available_device_i_ds.len() + c.must_include_device_i_ds.len());
            out.push(k::ContainerPreferredAllocationResponse {
                device_i_ds: crate::preferred::choose(
                    &snap.vfs,
                    &c.available_device_i_ds,
                    &c.must_include_device_i_ds,
                    size,
                ),
            });
        }
        Ok(Response::new(k::PreferredAllocationResponse {
            container_responses: out,
        }))
    }

    async fn allocate(
        &self,
        req: Request<k::AllocateRequest>,
    ) -> Result<Response<k::AllocateResponse>, Status> {
        let containers = &req.get_ref().container_requests;
        if containers.len() > MAX_IDS || containers.iter().any(|c| c.devices_ids.len() > MAX_IDS) {
            return Err(Status::invalid_argument(
                "too many containers or device IDs",
            ));
        }
        // Recorded before the look at their health: a re-carve or a resource move that
        // holds these VFs back after that look finds them in use (the kubelet's own record
        // of them comes only after this answer). Only IDs advertised are kept: the record
        // stays as small as the node's VFs.
        let known = self.snapshot.borrow().clone();
        for c in containers {
            self.allocations.record(
                c.devices_ids
                    .iter()
                    .filter(|id| known.vfs.contains_key(*id)),
            );
        }
        let snap = self.snapshot.borrow().clone();
        let mut out = Vec::new();
        for c in containers {
            let mut vfs = Vec::new();
            for id in &c.devices_ids {
                // One that appeared between the two looks was not recorded: not given.
                let v = snap
                    .vfs
                    .get(id)
                    .filter(|v| v.resource == self.resource && known.vfs.contains_key(id))
                    .ok_or_else(|| {
                        Status::not_found(format!("{id}: no such {} device", self.resource))
                    })?;
                if let Some(why) = &v.unhealthy {
                    // The kubelet allocates healthy devices only; one that turned since is
                    // refused, and the list it already has says so.
                    return Err(Status::failed_precondition(format!("{id}: {why}")));
                }
                if vfs.iter().any(|x: &&crate::inventory::Vf| x.id == *id) {
                    return Err(Status::invalid_argument(format!("{id} named twice")));
                }
                vfs.push(v);
            }
            out.push(crate::allocate::container(&self.resource, &vfs));
        }
        for c in containers {
            crate::log!("{}: allocated {}", self.resource, c.devices_ids.join(", "));
        }
        Ok(Response::new(k::AllocateResponse {
            container_responses: out,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<k::PreStartContainerRequest>,
    ) -> Result<Response<k::PreStartContainerResponse>, Status> {
        // Not asked for (pre_start_required is false): vfio-pci resets a VF when its VM opens
        // it, and acceld resets nothing on the kubelet's behalf.
        Ok(Response::new(k::PreStartContainerResponse {}))
    }
}
