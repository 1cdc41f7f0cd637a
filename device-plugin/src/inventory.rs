//! What the plugin advertises: every VF with its stable ID, resource, health, NUMA node and
//! how a container reaches it.
//!
//! IDs are made from the device's name as acceld knows it (a PCI address, or a device-model
//! socket) and the VF's number, so the same VF has the same ID across plugin, daemon and node
//! restarts, and the kubelet's checkpoint of which pod holds which ID stays true.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How a container reaches a VF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A PCI function bound to vfio-pci: `/dev/vfio/<group>`.
    Pci {
        /// `dddd:bb:dd.f`.
        address: String,
        /// Its IOMMU group.
        iommu_group: Option<u32>,
        /// The VF token the kernel asks of a VF user when the PF is bound to vfio-pci.
        vf_token: Option<String>,
        /// The driver it is bound to, if any.
        driver: Option<String>,
    },
    /// A vfio-user socket (the device model's VFs, and imported remote VFs).
    Socket(PathBuf),
}

impl Endpoint {
    /// Why a container could not use this VF as it stands, if it could not: a PCI VF is
    /// handed over as its `/dev/vfio` group, so it must be vfio-pci's and in a group.
    pub fn problem(&self) -> Option<String> {
        match self {
            Endpoint::Pci {
                address,
                iommu_group,
                driver,
                ..
            } => {
                if driver.as_deref() != Some("vfio-pci") {
                    return Some(format!(
                        "{address} is bound to {}, not vfio-pci",
                        driver.as_deref().unwrap_or("no driver")
                    ));
                }
                iommu_group
                    .is_none()
                    .then(|| format!("{address} is in no IOMMU group"))
            }
            Endpoint::Socket(_) => None,
        }
    }
}

/// One advertised VF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vf {
    /// The kubelet's device ID.
    pub id: String,
    /// `accelvirt.io/vf`, `accelvirt.io/vf-<profile>` or `accelvirt.io/vf-remote`.
    pub resource: String,
    /// The acceld device it belongs to (for a remote VF, its exporter).
    pub device: String,
    /// Its number on that device.
    pub vf: u32,
    /// `None` when healthy, else why not.
    pub unhealthy: Option<String>,
    /// Its NUMA node, where the platform says.
    pub numa: Option<i64>,
    /// How to reach it.
    pub endpoint: Endpoint,
}

/// Everything advertised, by ID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The VFs.
    pub vfs: BTreeMap<String, Vf>,
    /// Whether acceld could be asked (the list is its last answer otherwise).
    pub acceld_reachable: bool,
}

impl Snapshot {
    /// The VFs of one resource, by ID.
    pub fn resource<'a>(&'a self, r: &'a str) -> impl Iterator<Item = &'a Vf> + 'a {
        self.vfs.values().filter(move |v| v.resource == r)
    }

    /// The kubelet's device list for one resource.
    pub fn devices(&self, r: &str) -> Vec<crate::proto::v1beta1::Device> {
        use crate::proto::v1beta1 as k;
        self.resource(r)
            .map(|v| k::Device {
                id: v.id.clone(),
                health: if v.unhealthy.is_none() {
                    "Healthy"
                } else {
                    "Unhealthy"
                }
                .into(),
                topology: v.numa.map(|n| k::TopologyInfo {
                    nodes: vec![k::NumaNode { id: n }],
                }),
            })
            .collect()
    }
}

/// A short, stable tag for a device name: a PCI address with its colons made dashes
/// (`0000-3b-00.0`), or a socket's file stem and a hash of its whole path.
pub fn device_tag(name: &str) -> String {
    if is_pci_address(name) {
        return name.replace(':', "-");
    }
    let stem: String = Path::new(name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .take(24)
        .collect();
    format!("{stem}-{:08x}", fnv1a(name.as_bytes()))
}

/// The ID of VF `vf` of device `name`: at most 63 characters, as the kubelet wants.
pub fn vf_id(name: &str, vf: u32) -> String {
    format!("{}{vf}", vf_id_prefix(name))
}

/// What every VF ID of device `name` starts with (and no other device's does).
pub fn vf_id_prefix(name: &str) -> String {
    format!("{}-vf", device_tag(name))
}

/// The ID of a VF imported from `exporter` (its VF `vf` there).
pub fn remote_id(exporter: &str, vf: u32) -> String {
    let host: String = exporter
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(24)
        .collect();
    format!("remote-{host}-{:08x}-vf{vf}", fnv1a(exporter.as_bytes()))
}

/// Whether `s` is `dddd:bb:dd.f`.
pub fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

/// The NUMA node sysfs gives a PCI function (`None` where it says -1 or nothing).
pub fn numa_node(sysfs: &Path, address: &str) -> Option<i64> {
    let p = sysfs
        .join("bus/pci/devices")
        .join(address)
        .join("numa_node");
    std::fs::read_to_string(p)
        .ok()?
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
}

/// 32-bit FNV-1a: stable across builds and platforms (std's hasher is not).
fn fnv1a(b: &[u8]) -> u32 {
    b.iter().fold(0x811c_9dc5u32, |h, &c| {
        (h ^ u32::from(c)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_short_and_distinct() {
        assert_eq!(vf_id("0000:3b:00.0", 3), "0000-3b-00.0-vf3");
        let a = vf_id("/run/accelvirt/accel0.sock", 0);
        assert_eq!(a, vf_id("/run/accelvirt/accel0.sock", 0));
        assert!(a.starts_with("accel0-"), "{a}");
        assert_ne!(a, vf_id("/tmp/other/accel0.sock", 0));
        let long = format!("/{}/{}.sock", "d".repeat(200), "x".repeat(200));
        assert!(vf_id(&long, 255).len() <= 63);
        let r = remote_id("host-a.example:7700", 12);
        assert!(
            r.len() <= 63 && r.starts_with("remote-host-a-example-7700-"),
            "{r}"
        );
        // The known value: a hash that moved would change every node's IDs.
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
    }

    #[test]
    fn a_pci_vf_is_usable_only_bound_to_vfio_pci_in_a_group() {
        let pci = |driver: Option<&str>, iommu_group| Endpoint::Pci {
            address: "0000:3b:00.1".into(),
            iommu_group,
            vf_token: None,
            driver: driver.map(str::to_string),
        };
        assert_eq!(pci(Some("vfio-pci"), Some(4)).problem(), None);
        assert!(pci(None, Some(4)).problem().unwrap().contains("no driver"));
        assert!(pci(Some("accel"), Some(4))
            .problem()
            .unwrap()
            .contains("accel"));
        assert!(pci(Some("vfio-pci"), None)
            .problem()
            .unwrap()
            .contains("IOMMU"));
        assert_eq!(Endpoint::Socket("/s".into()).problem(), None);
    }

    #[test]
    fn pci_addresses_and_numa_nodes_from_sysfs() {
        assert!(is_pci_address("0000:3b:00.0"));
        assert!(!is_pci_address("/tmp/x.sock"));
        assert!(!is_pci_address("0000:3b:00:0"));
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("bus/pci/devices/0000:3b:00.1");
        std::fs::create_dir_all(&f).unwrap();
        std::fs::write(f.join("numa_node"), "1\n").unwrap();
        assert_eq!(numa_node(d.path(), "0000:3b:00.1"), Some(1));
        std::fs::write(f.join("numa_node"), "-1\n").unwrap();
        assert_eq!(numa_node(d.path(), "0000:3b:00.1"), None);
        assert_eq!(numa_node(d.path(), "0000:3b:00.2"), None);
    }
}
