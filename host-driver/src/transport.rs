//! How the driver reaches a PF: one trait, two transports (kernel VFIO, vfio-user).

use crate::error::{Error, Result};
use std::path::PathBuf;

/// Where a device is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceAddr {
    /// A PCI function, `DDDD:BB:DD.F`, driven through the kernel's VFIO.
    Pci(String),
    /// A vfio-user socket (e.g. `accel-sim`).
    Socket(PathBuf),
}

impl DeviceAddr {
    /// Parses a PCI address (with or without the domain) or a socket path.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(addr) = parse_pci(s) {
            return Ok(DeviceAddr::Pci(addr));
        }
        if s.contains('/') || s.ends_with(".sock") || std::path::Path::new(s).exists() {
            return Ok(DeviceAddr::Socket(PathBuf::from(s)));
        }
        Err(Error::BadAddress(s.to_string()))
    }
}

/// One spelling per device: a PCI address with its domain, a socket path resolved (its
/// directory, where the socket itself may not exist yet); anything else as it is. Two names
/// of one device (`3b:00.0` and `0000:3b:00.0`, a symlinked path) spell the same.
pub fn canonical_name(name: &str) -> String {
    match DeviceAddr::parse(name) {
        Ok(DeviceAddr::Pci(a)) => a,
        Ok(DeviceAddr::Socket(p)) => {
            let resolved = std::fs::canonicalize(&p).ok().or_else(|| {
                let dir = std::fs::canonicalize(p.parent()?).ok()?;
                Some(dir.join(p.file_name()?))
            });
            resolved.unwrap_or(p).to_string_lossy().into_owned()
        }
        Err(_) => name.to_string(),
    }
}

/// Normalizes `BB:DD.F` or `DDDD:BB:DD.F` to `DDDD:BB:DD.F`.
pub fn parse_pci(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (dom, bus, devfn) = match parts.as_slice() {
        [b, df] => ("0000", *b, *df),
        [d, b, df] => (*d, *b, *df),
        _ => return None,
    };
    let (dev, func) = devfn.split_once('.')?;
    let hex = |x: &str, n: usize| {
        x.len() <= n && !x.is_empty() && x.chars().all(|c| c.is_ascii_hexdigit())
    };
    if !(hex(dom, 4)
        && hex(bus, 2)
        && hex(dev, 2)
        && func.len() == 1
        && func.chars().all(|c| ('0'..='7').contains(&c)))
    {
        return None;
    }
    let d = u32::from_str_radix(dev, 16).ok()?;
    if d > 0x1f {
        return None;
    }
    Some(format!(
        "{:04x}:{:02x}:{:02x}.{}",
        u32::from_str_radix(dom, 16).ok()?,
        u32::from_str_radix(bus, 16).ok()?,
        d,
        func
    ))
}

/// How a VM gets a VF.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VfEndpoint {
    /// A PCI function bound (or to be bound) to vfio-pci.
    Pci {
        /// PCI address.
        address: String,
        /// IOMMU group.
        iommu_group: Option<u32>,
        /// Bound driver.
        driver: Option<String>,
        /// The VF token a VMM must present (the PF is bound to vfio-pci), if one is set.
        vf_token: Option<String>,
    },
    /// A vfio-user socket.
    Socket {
        /// Path.
        path: PathBuf,
    },
}

/// Access to one PF: its BAR0 register file, its config space and SR-IOV.
pub trait Transport: Send + Sync {
    /// Reads a BAR0 dword.
    fn read32(&self, off: usize) -> Result<u32>;
    /// Writes a BAR0 dword.
    fn write32(&self, off: usize, v: u32) -> Result<()>;
    /// Writes a handoff word (`shared_abi::ordering`): everything written before it is
    /// visible to the device when it observes it.
    fn publish32(&self, off: usize, v: u32) -> Result<()> {
        shared_abi::ordering::publish();
        self.write32(off, v)
    }
    /// Reads a handoff word (`shared_abi::ordering`): nothing after it is read before it.
    fn observe32(&self, off: usize) -> Result<u32> {
        let v = self.read32(off)?;
        shared_abi::ordering::observe();
        Ok(v)
    }
    /// Swaps `new` into the dword at `off` if it holds `old` (the mailbox lock); whether it
    /// did. Where the word is mapped this is an atomic swap on it; the default, for a trapped
    /// word, is a write the device applies as that swap (a token acquires only a free lock; 0
    /// releases the writer's), read back to see who holds it.
    fn cas32(&self, off: usize, old: u32, new: u32) -> Result<bool> {
        let _ = old;
        trapped_cas32(self, off, new)
    }
    /// Tells the device which token this connection takes the mailbox lock with, so it can
    /// release the lock at once if the connection dies holding it. Transports without
    /// connections rely on the firmware's lease.
    fn register_lock_token(&self, token: u32) -> Result<()> {
        let _ = token;
        Ok(())
    }
    /// Reads BAR0 bytes.
    fn read_bytes(&self, off: usize, buf: &mut [u8]) -> Result<()>;
    /// Writes BAR0 bytes.
    fn write_bytes(&self, off: usize, data: &[u8]) -> Result<()>;
    /// Reads config space.
    fn config_read(&self, off: u64, buf: &mut [u8]) -> Result<()>;
    /// Writes config space.
    fn config_write(&self, off: u64, data: &[u8]) -> Result<()>;
    /// Enabled VFs (NumVFs while VF Enable is set).
    fn num_vfs(&self) -> Result<u16>;
    /// Enables `n` VFs (0 disables SR-IOV).
    fn set_num_vfs(&self, n: u16) -> Result<()>;
    /// Where VF `v` can be picked up by a VMM.
    fn vf_endpoint(&self, v: u16) -> Result<VfEndpoint>;
    /// Binds VF `v` to vfio-pci so a VMM can take it (kernel transport; a vfio-user VF is
    /// already a VMM-ready endpoint).
    fn bind_vf(&self, v: u16) -> Result<()> {
        let _ = v;
        Ok(())
    }
    /// Human-readable name.
    fn describe(&self) -> String;
    /// A file whose advisory lock every management process holds while it changes which VFs
    /// exist (firmware command plus SR-IOV change), so the two steps are one to others.
    fn lock_path(&self) -> std::path::PathBuf;
    /// An eventfd the device signals when the mailbox completes (its MSI-X vector), if this
    /// transport wired one up; the mailbox client then sleeps on it instead of polling.
    fn mailbox_irq(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
    /// An eventfd the device signals when its firmware posts an event (PF vector
    /// `PF_VECTOR_EVENTS`), for the event ring's one consumer (acceld): wired on the first
    /// call where the transport can. Without one the consumer polls `EVQ_PROD`.
    fn events_irq(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
    /// The descriptors that hold the device open, named (kernel VFIO: its container, group
    /// and device), for an owner to keep across its own restart; empty where closing them
    /// does nothing to the device.
    fn held_descriptors(&self) -> Vec<(&'static str, std::os::fd::BorrowedFd<'_>)> {
        Vec::new()
    }
    /// A descriptor of the device's connection, where it has one (vfio-user), for a
    /// long-lived owner to notice at once that the device went away (it reads as closed).
    fn connection_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
    /// Whether the mailbox pages are mapped (a look at them costs nanoseconds, not a
    /// message), so the client may spin on them.
    fn mapped_mailbox(&self) -> bool {
        false
    }
}

/// The swap a device applies to a trapped lock word: write `new` (a token acquires a free
/// lock; 0 releases the writer's), then read back who holds it.
pub fn trapped_cas32(t: &(impl Transport + ?Sized), off: usize, new: u32) -> Result<bool> {
    t.write32(off, new)?;
    Ok(new == 0 || t.read32(off)? == new)
}

/// Finds a standard capability in the list at 0x34 (as the kernel's `pci_find_capability`).
pub fn find_cap(t: &dyn Transport, id: u8) -> Result<Option<u64>> {
    let mut p = [0u8; 1];
    t.config_read(header::CAP_PTR as u64, &mut p)?;
    let mut pos = (p[0] & 0xFC) as u64;
    for _ in 0..48 {
        if pos < 0x40 {
            return Ok(None);
        }
        let mut h = [0u8; 2];
        t.config_read(pos, &mut h)?;
        if h[0] == id {
            return Ok(Some(pos));
        }
        pos = (h[1] & 0xFC) as u64;
    }
    Ok(None)
}

/// Finds a PCIe extended capability (as the kernel's `pci_find_ext_capability` does).
pub fn find_ext_cap(t: &dyn Transport, id: u16) -> Result<Option<u64>> {
    let mut pos = shared_abi::config_space::EXT_CAP_START as u64;
    for _ in 0..(4096 - 256) / 8 {
        let mut h = [0u8; 4];
        t.config_read(pos, &mut h)?;
        let h = u32::from_le_bytes(h);
        if h == 0 || h == u32::MAX {
            return Ok(None);
        }
        if (h & 0xFFFF) as u16 == id {
            return Ok(Some(pos));
        }
        let next = (h >> 20) as u64 & 0xFFC;
        if next < shared_abi::config_space::EXT_CAP_START as u64 {
            return Ok(None);
        }
        pos = next;
    }
    Ok(None)
}

pub use shared_abi::config_space::{cap_id, command, header, msix, pcie, sriov};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            DeviceAddr::parse("01:00.0").unwrap(),
            DeviceAddr::Pci("0000:01:00.0".into())
        );
        assert_eq!(
            DeviceAddr::parse("0000:3b:1f.7").unwrap(),
            DeviceAddr::Pci("0000:3b:1f.7".into())
        );
        assert_eq!(
            DeviceAddr::parse("/run/accel/a.sock").unwrap(),
            DeviceAddr::Socket("/run/accel/a.sock".into())
        );
        assert_eq!(
            DeviceAddr::parse("accel0.sock").unwrap(),
            DeviceAddr::Socket("accel0.sock".into())
        );
        assert!(DeviceAddr::parse("01:20.0").is_err());
        assert!(DeviceAddr::parse("01:00.8").is_err());
        assert!(DeviceAddr::parse("nonsense").is_err());
    }

    #[test]
    fn one_device_has_one_canonical_name() {
        assert_eq!(canonical_name("3b:00.0"), canonical_name("0000:3b:00.0"));
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        // Through a symlinked directory, and before the socket exists.
        assert_eq!(
            canonical_name(dir.path().join("link/accel0.sock").to_str().unwrap()),
            canonical_name(real.join("accel0.sock").to_str().unwrap())
        );
    }
}
