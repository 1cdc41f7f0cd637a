//! The VF token of a PF bound to vfio-pci. The kernel asks every user of such a PF's VFs for
//! the token the PF's user set (`vf_token=` when the device is opened; QEMU's `vf-token=`), so
//! it must outlive the accelctl that enabled SR-IOV: it is kept in a root-only file per PF
//! and reused for every later enable, which keeps running VMMs' tokens valid.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::PathBuf;

/// Where tokens (and the management locks) live on a host.
pub const RUN_DIR: &str = "/run/accelvirt";

/// One directory of `<pf>.vf-token` files.
#[derive(Debug, Clone)]
pub struct TokenStore {
    dir: PathBuf,
}

impl TokenStore {
    /// The host's store, in [`RUN_DIR`].
    pub fn system() -> Self {
        Self::at(RUN_DIR)
    }

    /// A store in `dir` (tests).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        TokenStore { dir: dir.into() }
    }

    fn path(&self, pf: &str) -> PathBuf {
        self.dir.join(format!("{pf}.vf-token"))
    }

    /// The PF's token, if one was set (a file that does not hold a UUID counts as none).
    pub fn load(&self, pf: &str) -> Option<String> {
        let s = std::fs::read_to_string(self.path(pf)).ok()?;
        let t = s.trim();
        is_uuid(t).then(|| t.to_string())
    }

    /// The PF's token, made (random, v4) and stored first if there is none yet.
    pub fn load_or_create(&self, pf: &str) -> Result<String> {
        if let Some(t) = self.load(pf) {
            return Ok(t);
        }
        let t = super::vfio::new_vf_token();
        let io = |e: std::io::Error| Error::Kernel {
            what: format!("store the VF token in {}", self.path(pf).display()),
            source: e,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let tmp = self
            .dir
            .join(format!(".{pf}.vf-token.{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        writeln!(f, "{t}").map_err(io)?;
        std::fs::rename(&tmp, self.path(pf)).map_err(io)?;
        Ok(t)
    }
}

use std::os::unix::fs::OpenOptionsExt;

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_made_once_kept_private_and_reused() {
        let d = tempfile::tempdir().unwrap();
        let s = TokenStore::at(d.path().join("run"));
        assert_eq!(s.load("0000:3b:00.0"), None);
        let t = s.load_or_create("0000:3b:00.0").unwrap();
        assert!(is_uuid(&t), "{t}");
        assert_eq!(s.load_or_create("0000:3b:00.0").unwrap(), t, "reused");
        assert_eq!(s.load("0000:3b:00.0").as_deref(), Some(t.as_str()));
        let md = std::fs::metadata(d.path().join("run/0000:3b:00.0.vf-token")).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o777,
            0o600
        );
        assert_eq!(s.load("0000:3b:00.1"), None, "per PF");
        std::fs::write(d.path().join("run/0000:3b:00.1.vf-token"), "garbage").unwrap();
        assert_eq!(s.load("0000:3b:00.1"), None, "not a UUID: none");
    }
}
