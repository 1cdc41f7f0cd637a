//! What a container is given for its VFs.
//!
//! - A PCI VF (kernel VFIO): the device nodes `/dev/vfio/vfio` and `/dev/vfio/<group>`, and
//!   `PCI_RESOURCE_<RESOURCE>` with the VFs' PCI addresses, comma-separated: the variable
//!   KubeVirt's virt-launcher reads for a host device whose resource an external provider
//!   advertises (`PCI_RESOURCE_` and the resource name upper-cased, `.` and `/` made `_`).
//! - A vfio-user VF (the device model's, or an imported remote VF): its socket mounted at
//!   `/var/run/accelvirt/vfio-user/<id>.sock`, and `VFIO_USER_RESOURCE_<RESOURCE>` naming
//!   the mounted sockets, comma-separated.
//! - Either way `ACCEL_DEVICE` names the first VF, which is where `accelctl` and the job
//!   library look: a pod (not a VM) runs jobs on it with no configuration. Where that VF's
//!   PF is bound to vfio-pci (acceld's, over kernel VFIO), the kernel asks every user of a
//!   VF for the PF's VF token: `ACCEL_VF_TOKEN` carries it, and `accelctl run` reads it.

use crate::inventory::{Endpoint, Vf};
use crate::proto::v1beta1 as k;

/// Where a vfio-user VF's socket appears in the container.
pub const SOCKET_DIR: &str = "/var/run/accelvirt/vfio-user";

/// `PREFIX_` and the resource name as KubeVirt spells it in environment variables.
pub fn env_name(prefix: &str, resource: &str) -> String {
    format!(
        "{prefix}_{}",
        resource.to_ascii_uppercase().replace(['/', '.'], "_")
    )
}

/// The container's share for these VFs of `resource`.
pub fn container(resource: &str, vfs: &[&Vf]) -> k::ContainerAllocateResponse {
    let mut r = k::ContainerAllocateResponse::default();
    let mut pci = Vec::new();
    let mut sockets = Vec::new();
    let mut first = None;
    for v in vfs {
        match &v.endpoint {
            Endpoint::Pci {
                address,
                iommu_group,
                vf_token,
                ..
            } => {
                if let Some(g) = iommu_group {
                    let node = format!("/dev/vfio/{g}");
                    if !r.devices.iter().any(|d| d.host_path == node) {
                        r.devices.push(dev(&node));
                    }
                }
                pci.push(address.clone());
                if first.is_none() {
                    first = Some(address.clone());
                    if let Some(t) = vf_token {
                        r.envs.insert("ACCEL_VF_TOKEN".into(), t.clone());
                    }
                }
            }
            Endpoint::Socket(host) => {
                let inside = format!("{SOCKET_DIR}/{}.sock", v.id);
                r.mounts.push(k::Mount {
                    container_path: inside.clone(),
                    host_path: host.display().to_string(),
                    read_only: false,
                });
                first.get_or_insert_with(|| inside.clone());
                sockets.push(inside);
            }
        }
    }
    if !pci.is_empty() {
        // The container runtime makes the group nodes; the container also needs the
        // container node to open them.
        r.devices.insert(0, dev("/dev/vfio/vfio"));
        r.envs
            .insert(env_name("PCI_RESOURCE", resource), pci.join(","));
    }
    if !sockets.is_empty() {
        r.envs
            .insert(env_name("VFIO_USER_RESOURCE", resource), sockets.join(","));
    }
    if let Some(f) = first {
        r.envs.insert("ACCEL_DEVICE".into(), f);
    }
    r
}

fn dev(path: &str) -> k::DeviceSpec {
    k::DeviceSpec {
        container_path: path.into(),
        host_path: path.into(),
        permissions: "rw".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn vf(id: &str, endpoint: Endpoint) -> Vf {
        Vf {
            id: id.into(),
            resource: crate::GENERIC.into(),
            device: "d".into(),
            vf: 0,
            unhealthy: None,
            numa: None,
            endpoint,
        }
    }

    #[test]
    fn kubevirt_gets_pci_resource_and_the_vfio_nodes() {
        assert_eq!(
            env_name("PCI_RESOURCE", "accelvirt.io/vf-4e-4g"),
            "PCI_RESOURCE_ACCELVIRT_IO_VF-4E-4G"
        );
        let a = vf(
            "a",
            Endpoint::Pci {
                address: "0000:3b:00.1".into(),
                iommu_group: Some(41),
                vf_token: Some("9b5c7f4e-3c1a-4d7e-8f21-6a0b2c9d1e53".into()),
                driver: Some("vfio-pci".into()),
            },
        );
        let b = vf(
            "b",
            Endpoint::Pci {
                address: "0000:3b:00.2".into(),
                iommu_group: Some(42),
                vf_token: None,
                driver: Some("vfio-pci".into()),
            },
        );
        let r = container(crate::GENERIC, &[&a, &b]);
        assert_eq!(
            r.envs["PCI_RESOURCE_ACCELVIRT_IO_VF"],
            "0000:3b:00.1,0000:3b:00.2"
        );
        assert_eq!(r.envs["ACCEL_DEVICE"], "0000:3b:00.1");
        // The token of ACCEL_DEVICE's VF (its PF is vfio-pci's), for `accelctl run`.
        assert_eq!(
            r.envs["ACCEL_VF_TOKEN"],
            "9b5c7f4e-3c1a-4d7e-8f21-6a0b2c9d1e53"
        );
        let nodes: Vec<_> = r.devices.iter().map(|d| d.host_path.as_str()).collect();
        assert_eq!(nodes, ["/dev/vfio/vfio", "/dev/vfio/41", "/dev/vfio/42"]);
        assert!(r.devices.iter().all(|d| d.permissions == "rw"));
        assert!(r.mounts.is_empty());
    }

    #[test]
    fn a_vfio_user_vf_is_a_mounted_socket() {
        let a = vf(
            "s-vf0",
            Endpoint::Socket(PathBuf::from("/run/x/accel0-vf0.sock")),
        );
        let r = container(crate::GENERIC, &[&a]);
        assert_eq!(r.mounts.len(), 1);
        assert_eq!(r.mounts[0].host_path, "/run/x/accel0-vf0.sock");
        assert_eq!(
            r.mounts[0].container_path,
            "/var/run/accelvirt/vfio-user/s-vf0.sock"
        );
        assert_eq!(
            r.envs["VFIO_USER_RESOURCE_ACCELVIRT_IO_VF"],
            "/var/run/accelvirt/vfio-user/s-vf0.sock"
        );
        assert_eq!(r.envs["ACCEL_DEVICE"], r.mounts[0].container_path);
        assert!(r.devices.is_empty());
    }
}
