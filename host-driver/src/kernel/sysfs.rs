//! The sysfs side of SR-IOV and driver binding, rooted anywhere (tests use a fake tree).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// A sysfs tree.
#[derive(Clone, Debug)]
pub struct Sysfs {
    root: PathBuf,
    /// Every write, in order (a plain file keeps only the last, unlike sysfs attributes).
    #[cfg(test)]
    writes: std::sync::Arc<std::sync::Mutex<Vec<(PathBuf, String)>>>,
}

impl Default for Sysfs {
    fn default() -> Self {
        Self::at("/sys")
    }
}

fn kerr(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Kernel { what, source }
}

impl Sysfs {
    /// A tree rooted at `root` (normally `/sys`).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Sysfs {
            root: root.into(),
            #[cfg(test)]
            writes: Default::default(),
        }
    }

    /// `bus/pci/devices/ADDR`.
    pub fn device_dir(&self, addr: &str) -> PathBuf {
        self.root.join("bus/pci/devices").join(addr)
    }

    fn read(&self, p: &Path) -> Result<String> {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .map_err(kerr(format!("read {}", p.display())))
    }

    fn write(&self, p: &Path, v: &str) -> Result<()> {
        #[cfg(test)]
        self.writes
            .lock()
            .unwrap()
            .push((p.to_path_buf(), v.to_string()));
        std::fs::write(p, v).map_err(kerr(format!("write '{v}' to {}", p.display())))
    }

    fn hex(&self, p: &Path) -> Result<u16> {
        let s = self.read(p)?;
        u16::from_str_radix(s.trim_start_matches("0x"), 16)
            .map_err(|_| Error::NotOurDevice(format!("{} holds '{s}', not a hex ID", p.display())))
    }

    /// Vendor and device ID.
    pub fn ids(&self, addr: &str) -> Result<(u16, u16)> {
        let d = self.device_dir(addr);
        if !d.exists() {
            return Err(Error::NotOurDevice(format!(
                "no PCI device {addr} (see lspci -D)"
            )));
        }
        Ok((self.hex(&d.join("vendor"))?, self.hex(&d.join("device"))?))
    }

    /// Every PF with our IDs.
    pub fn find_pfs(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(self.root.join("bus/pci/devices")) else {
            return Vec::new();
        };
        let mut v: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|a| {
                self.ids(a).ok()
                    == Some((shared_abi::pci::VENDOR_ID, shared_abi::pci::PF_DEVICE_ID))
            })
            .collect();
        v.sort();
        v
    }

    /// Bound driver name.
    pub fn driver(&self, addr: &str) -> Option<String> {
        let l = std::fs::read_link(self.device_dir(addr).join("driver")).ok()?;
        l.file_name().map(|n| n.to_string_lossy().into_owned())
    }

    /// IOMMU group number.
    pub fn iommu_group(&self, addr: &str) -> Result<Option<u32>> {
        match std::fs::read_link(self.device_dir(addr).join("iommu_group")) {
            Ok(l) => Ok(l.file_name().and_then(|n| n.to_string_lossy().parse().ok())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(kerr(format!("read the IOMMU group of {addr}"))(e)),
        }
    }

    /// Fails clearly where the PF's SR-IOV capability is not visible: the kernel makes the
    /// `sriov_*` files only for a function that shows one, and VMMs hide it from guests.
    fn sriov_visible(&self, addr: &str) -> Result<()> {
        if self.device_dir(addr).join("sriov_totalvfs").exists() {
            return Ok(());
        }
        Err(Error::NotOurDevice(format!(
            "{addr} shows no SR-IOV capability here, so no VFs can be enabled from this system. \
             Inside a VM this is expected: VMMs (QEMU's vfio-pci among them) hide SR-IOV from \
             guests. Create VFs on the host that owns the PF (accelctl create-vf there) and give \
             this VM a VF instead"
        )))
    }

    /// TotalVFs.
    pub fn total_vfs(&self, addr: &str) -> Result<u16> {
        self.sriov_visible(addr)?;
        self.read(&self.device_dir(addr).join("sriov_totalvfs"))?
            .parse()
            .map_err(|_| Error::NotOurDevice(format!("{addr}: unreadable sriov_totalvfs")))
    }

    /// Current NumVFs.
    pub fn num_vfs(&self, addr: &str) -> Result<u16> {
        self.sriov_visible(addr)?;
        self.read(&self.device_dir(addr).join("sriov_numvfs"))?
            .parse()
            .map_err(|_| Error::NotOurDevice(format!("{addr}: unreadable sriov_numvfs")))
    }

    /// Sets NumVFs. The kernel refuses to change a nonzero value to another nonzero value,
    /// so a change goes through 0.
    pub fn set_num_vfs(&self, addr: &str, n: u16) -> Result<()> {
        let total = self.total_vfs(addr)?;
        if n > total {
            return Err(Error::Invalid(format!(
                "{addr} supports at most {total} VFs"
            )));
        }
        let p = self.device_dir(addr).join("sriov_numvfs");
        let cur = self.num_vfs(addr)?;
        if cur == n {
            return Ok(());
        }
        if cur != 0 && n != 0 {
            self.write(&p, "0")?;
        }
        self.write(&p, &n.to_string())
    }

    /// PCI address of VF `v` (the `virtfnN` link).
    pub fn vf_address(&self, pf: &str, v: u16) -> Result<String> {
        let link = self.device_dir(pf).join(format!("virtfn{v}"));
        let t = std::fs::read_link(&link).map_err(kerr(format!("read {}", link.display())))?;
        t.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::NotOurDevice(format!("{} points nowhere", link.display())))
    }

    /// Binds a function to vfio-pci: `driver_override`, unbind from the current driver, probe.
    pub fn bind_vfio(&self, addr: &str) -> Result<()> {
        let d = self.device_dir(addr);
        self.write(&d.join("driver_override"), "vfio-pci")?;
        if let Some(cur) = self.driver(addr) {
            if cur == "vfio-pci" {
                return Ok(());
            }
            self.write(&d.join("driver/unbind"), addr)?;
        }
        self.write(&self.root.join("bus/pci/drivers_probe"), addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake sysfs with one PF (2 VFs possible) bound to vfio-pci and one foreign device.
    fn tree() -> (tempfile::TempDir, Sysfs) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        let r = root.as_path();
        let dev = |a: &str, v: &str, d: &str| {
            let p = r.join("bus/pci/devices").join(a);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("vendor"), format!("{v}\n")).unwrap();
            std::fs::write(p.join("device"), format!("{d}\n")).unwrap();
            std::fs::write(p.join("driver_override"), "(null)\n").unwrap();
            p
        };
        let pf = dev("0000:3b:00.0", "0x1fac", "0xa0c0");
        dev("0000:00:1f.0", "0x8086", "0x1234");
        std::fs::write(pf.join("sriov_totalvfs"), "64\n").unwrap();
        std::fs::write(pf.join("sriov_numvfs"), "0\n").unwrap();
        std::fs::create_dir_all(r.join("kernel/iommu_groups/17")).unwrap();
        symlink(r.join("kernel/iommu_groups/17"), pf.join("iommu_group")).unwrap();
        std::fs::create_dir_all(r.join("bus/pci/drivers/vfio-pci")).unwrap();
        std::fs::create_dir_all(r.join("bus/pci/drivers/accel")).unwrap();
        std::fs::write(r.join("bus/pci/drivers/accel/unbind"), "").unwrap();
        symlink(r.join("bus/pci/drivers/vfio-pci"), pf.join("driver")).unwrap();
        std::fs::write(r.join("bus/pci/drivers_probe"), "").unwrap();
        let vf = dev("0000:3b:00.1", "0x1fac", "0xa0c1");
        symlink(&vf, pf.join("virtfn0")).unwrap();
        symlink(r.join("bus/pci/drivers/accel"), vf.join("driver")).unwrap();
        (t, Sysfs::at(r))
    }

    #[test]
    fn finds_our_pfs_only() {
        let (_t, s) = tree();
        assert_eq!(s.find_pfs(), vec!["0000:3b:00.0".to_string()]);
        assert_eq!(s.ids("0000:3b:00.0").unwrap(), (0x1fac, 0xa0c0));
        assert!(matches!(s.ids("0000:99:00.0"), Err(Error::NotOurDevice(_))));
        assert_eq!(s.driver("0000:3b:00.0").as_deref(), Some("vfio-pci"));
        assert_eq!(s.iommu_group("0000:3b:00.0").unwrap(), Some(17));
        assert_eq!(s.iommu_group("0000:3b:00.1").unwrap(), None);
    }

    #[test]
    fn sriov_numvfs_goes_through_zero() {
        let (t, s) = tree();
        let p = t.path().join("bus/pci/devices/0000:3b:00.0/sriov_numvfs");
        let written = |s: &Sysfs| -> Vec<String> {
            let w = s.writes.lock().unwrap();
            w.iter()
                .filter(|(f, _)| *f == p)
                .map(|(_, v)| v.clone())
                .collect()
        };
        s.set_num_vfs("0000:3b:00.0", 4).unwrap();
        assert_eq!(written(&s), ["4"], "0 → 4 directly");
        assert_eq!(s.num_vfs("0000:3b:00.0").unwrap(), 4);
        // The kernel refuses a nonzero → nonzero change: 4 → 8 must pass through 0.
        s.set_num_vfs("0000:3b:00.0", 8).unwrap();
        assert_eq!(written(&s), ["4", "0", "8"]);
        // Unchanged: nothing written. More than TotalVFs: refused, nothing written.
        s.set_num_vfs("0000:3b:00.0", 8).unwrap();
        assert!(matches!(
            s.set_num_vfs("0000:3b:00.0", 65),
            Err(Error::Invalid(_))
        ));
        assert_eq!(written(&s), ["4", "0", "8"]);
        s.set_num_vfs("0000:3b:00.0", 0).unwrap();
        assert_eq!(written(&s), ["4", "0", "8", "0"]);
    }

    #[test]
    fn a_pf_without_visible_sriov_says_what_to_do() {
        let (t, s) = tree();
        let d = t.path().join("bus/pci/devices/0000:3b:00.0");
        std::fs::remove_file(d.join("sriov_totalvfs")).unwrap();
        std::fs::remove_file(d.join("sriov_numvfs")).unwrap();
        for e in [
            s.num_vfs("0000:3b:00.0").unwrap_err(),
            s.set_num_vfs("0000:3b:00.0", 1).unwrap_err(),
        ] {
            assert!(matches!(e, Error::NotOurDevice(_)), "{e}");
            let m = e.to_string();
            assert!(
                m.contains("no SR-IOV capability") && m.contains("on the host that owns the PF"),
                "{m}"
            );
        }
    }

    #[test]
    fn vf_address_and_binding() {
        let (t, s) = tree();
        assert_eq!(s.vf_address("0000:3b:00.0", 0).unwrap(), "0000:3b:00.1");
        assert!(s.vf_address("0000:3b:00.0", 1).is_err());
        s.bind_vfio("0000:3b:00.1").unwrap();
        let d = t.path().join("bus/pci/devices/0000:3b:00.1");
        assert_eq!(
            std::fs::read_to_string(d.join("driver_override")).unwrap(),
            "vfio-pci"
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("bus/pci/drivers/accel/unbind")).unwrap(),
            "0000:3b:00.1"
        );
        assert_eq!(
            std::fs::read_to_string(t.path().join("bus/pci/drivers_probe")).unwrap(),
            "0000:3b:00.1"
        );
        // Already on vfio-pci: only the override is (re)written.
        std::fs::write(t.path().join("bus/pci/drivers_probe"), "").unwrap();
        s.bind_vfio("0000:3b:00.0").unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path().join("bus/pci/drivers_probe")).unwrap(),
            ""
        );
    }
}
