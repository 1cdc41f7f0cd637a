//! Which importer may have which exported VF, and that each has at most one at a time: the
//! exporter's side of isolation across hosts. An importer is known by the name its verified
//! certificate carries ([`crate::tls::peer_identity`]); the exporter's configuration maps
//! names to the VFs (as the exporter numbers what it exports) each may import.
use crate::wire::refuse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Why an importer was turned away: a [`refuse`] code and the words for it.
pub type Refusal = (u32, String);

/// The exporter's map of importer names to VFs, and which VFs are taken.
#[derive(Debug)]
pub struct Admission {
    exported: u32,
    allow: BTreeMap<String, BTreeSet<u32>>,
    taken: Arc<Mutex<BTreeSet<u32>>>,
}

/// A VF given to one importer: it is free again when this is dropped (the link ended and the
/// session was given up).
#[derive(Debug)]
pub struct Lease {
    vf: u32,
    taken: Arc<Mutex<BTreeSet<u32>>>,
}

impl Lease {
    /// The VF.
    pub fn vf(&self) -> u32 {
        self.vf
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.taken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.vf);
    }
}

impl Admission {
    /// Whether `who` may have `vf` at all (a session it resumes holds its lease already).
    pub fn allowed(&self, who: Option<&str>, vf: u32) -> Result<(), Refusal> {
        let who = who.ok_or((
            refuse::NOT_ALLOWED,
            "the certificate carries no name to look up".to_string(),
        ))?;
        if vf >= self.exported {
            return Err((refuse::NO_SUCH_VF, format!("VF {vf} is not exported here")));
        }
        if !self.allow.get(who).is_some_and(|s| s.contains(&vf)) {
            return Err((refuse::NOT_ALLOWED, format!("{who} may not import VF {vf}")));
        }
        Ok(())
    }

    /// `exported` VFs (numbered from 0), and for each importer name the VFs it may have.
    /// An entry naming a VF that is not exported is refused here, not at connect time.
    pub fn new(exported: u32, allow: BTreeMap<String, BTreeSet<u32>>) -> Result<Self, String> {
        for (name, vfs) in &allow {
            if let Some(v) = vfs.iter().find(|v| **v >= exported) {
                return Err(format!(
                    "{name} is allowed VF {v}, but only {exported} VF{} exported",
                    if exported == 1 { " is" } else { "s are" }
                ));
            }
        }
        Ok(Admission {
            exported,
            allow,
            taken: Arc::default(),
        })
    }

    /// Parses `NAME=VF[,VF...]` entries (as `--allow` gives them).
    pub fn parse_allow(entries: &[String]) -> Result<BTreeMap<String, BTreeSet<u32>>, String> {
        let mut m: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        for e in entries {
            let (name, vfs) = e
                .split_once('=')
                .filter(|(n, v)| !n.is_empty() && !v.is_empty())
                .ok_or_else(|| format!("--allow {e:?}: write NAME=VF[,VF...]"))?;
            for v in vfs.split(',') {
                let v = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("--allow {e:?}: {v:?} is not a VF number"))?;
                m.entry(name.to_string()).or_default().insert(v);
            }
        }
        Ok(m)
    }

    /// An importer named `who` (None: its certificate names nobody) asks for `vf`.
    pub fn admit(&self, who: Option<&str>, vf: u32) -> Result<Lease, Refusal> {
        self.allowed(who, vf)?;
        let mut t = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        if !t.insert(vf) {
            return Err((
                refuse::BUSY,
                format!("VF {vf} is imported by another importer"),
            ));
        }
        Ok(Lease {
            vf,
            taken: self.taken.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission() -> Admission {
        let allow = Admission::parse_allow(&["tenant-a=0,1".into(), "tenant-b=1".into()]).unwrap();
        Admission::new(3, allow).unwrap()
    }

    #[test]
    fn an_importer_gets_only_its_vfs_and_each_vf_one_importer_at_a_time() {
        let a = admission();
        let lease = a.admit(Some("tenant-a"), 1).unwrap();
        assert_eq!(lease.vf(), 1);
        // The same VF, asked again (by another importer, or a second link): busy.
        assert_eq!(a.admit(Some("tenant-b"), 1).unwrap_err().0, refuse::BUSY);
        assert_eq!(a.admit(Some("tenant-a"), 1).unwrap_err().0, refuse::BUSY);
        // Not its VF; not a VF at all; no name.
        assert_eq!(
            a.admit(Some("tenant-b"), 0).unwrap_err().0,
            refuse::NOT_ALLOWED
        );
        assert_eq!(
            a.admit(Some("tenant-a"), 2).unwrap_err().0,
            refuse::NOT_ALLOWED
        );
        assert_eq!(
            a.admit(Some("tenant-a"), 7).unwrap_err().0,
            refuse::NO_SUCH_VF
        );
        assert_eq!(
            a.admit(Some("stranger"), 0).unwrap_err().0,
            refuse::NOT_ALLOWED
        );
        assert_eq!(a.admit(None, 0).unwrap_err().0, refuse::NOT_ALLOWED);
        // Given back, it is free for the next.
        drop(lease);
        assert_eq!(a.admit(Some("tenant-b"), 1).unwrap().vf(), 1);
    }

    #[test]
    fn a_bad_allow_list_is_refused_with_its_entry() {
        for bad in ["tenant", "=1", "tenant=", "tenant=x", "tenant=1,-2"] {
            let e = Admission::parse_allow(&[bad.to_string()]).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        let allow = Admission::parse_allow(&["tenant-a=3".into()]).unwrap();
        assert!(Admission::new(3, allow).unwrap_err().contains("VF 3"));
    }
}
