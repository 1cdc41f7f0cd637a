//! The profiles file: named VF shapes, and how many VFs of each shape every device carries.
//!
//! ```json
//! {
//!   "profiles": {
//!     "4e-4g": { "engines": 4, "memory": "4G", "queues": 16 },
//!     "2e-1g": { "engines": 2, "memory": "1G", "queues": 8, "vectors": 16 }
//!   },
//!   "devices": {
//!     "*":            [ { "profile": "4e-4g", "count": 2 }, { "profile": "2e-1g", "count": 4 } ],
//!     "0000:3b:00.0": [ { "profile": "4e-4g", "count": 4 } ]
//!   }
//! }
//! ```
//!
//! A VF whose engines, memory and queues (and vectors, where the profile names them) are a
//! profile's is advertised as `accelvirt.io/vf-<profile>`; any other VF as `accelvirt.io/vf`.
//! A device named under `devices` (or covered by `"*"`) is carved to that list; one that is
//! not keeps whatever layout acceld holds.

use accelvirt_api::v1;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Longest profile name: `vf-` and the name make the resource's name part, at most 63
/// characters, and a socket name of the kubelet's directory.
pub const MAX_NAME: usize = 40;
/// Most VFs a device's list may ask for (the PCIe SR-IOV capability's own limit is far
/// above any board's).
pub const MAX_VFS: u32 = 256;

/// What is wrong with a profiles file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// It cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// It is not the format above.
    #[error("{0}")]
    Invalid(String),
}

/// One profile as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    engines: u32,
    memory: String,
    queues: u32,
    #[serde(default)]
    vectors: Option<u32>,
    #[serde(default)]
    weight: Option<u32>,
}

/// How many VFs of a profile a device carries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Share {
    /// The profile's name.
    pub profile: String,
    /// How many VFs.
    pub count: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    profiles: BTreeMap<String, Written>,
    #[serde(default)]
    devices: BTreeMap<String, Vec<Share>>,
}

/// A VF shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Engines.
    pub engines: u32,
    /// Device memory, bytes.
    pub memory: u64,
    /// Queues.
    pub queues: u32,
    /// MSI-X vectors; `None`: the firmware's default, and any count matches.
    pub vectors: Option<u32>,
    /// Scheduler weight; `None`: the firmware's default.
    pub weight: Option<u32>,
}

impl Shape {
    /// Whether `vf` (of a device whose granule is `1 << shift` bytes) has this shape.
    pub fn matches(&self, vf: &v1::VfInfo, shift: u32) -> bool {
        vf.engine_mask.count_ones() == self.engines
            && vf.mem_granules.checked_shl(shift) == Some(self.memory)
            && vf.queue_count == self.queues
            && self.vectors.is_none_or(|v| v == vf.vector_count)
    }

    /// The acceld request that makes VFs of this shape.
    pub fn spec(&self, shift: u32) -> Result<v1::VfSpec, Error> {
        let g = 1u64 << shift;
        if self.memory == 0 || !self.memory.is_multiple_of(g) {
            return Err(Error::Invalid(format!(
                "memory {} is not a whole number of the device's {g}-byte granules",
                self.memory
            )));
        }
        Ok(v1::VfSpec {
            engines: Some(self.engines),
            mem_granules: Some(self.memory >> shift),
            queues: Some(self.queues),
            vectors: self.vectors,
            weight: self.weight,
        })
    }
}

/// A checked profiles file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profiles {
    /// Shapes by profile name.
    pub shapes: BTreeMap<String, Shape>,
    /// Lists by device name; `"*"` covers every device not named.
    pub devices: BTreeMap<String, Vec<Share>>,
}

impl Profiles {
    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<Profiles, Error> {
        let b = std::fs::read(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&b).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
    }

    /// Checks a file's bytes.
    pub fn parse(b: &[u8]) -> Result<Profiles, Error> {
        let f: File = serde_json::from_slice(b).map_err(|e| Error::Invalid(e.to_string()))?;
        let mut shapes = BTreeMap::new();
        for (name, w) in &f.profiles {
            check_name(name)?;
            let memory = host_driver::spec::parse_size(&w.memory)
                .map_err(|e| Error::Invalid(format!("profile {name}: {e}")))?;
            if w.engines == 0 || w.queues == 0 || memory == 0 {
                return Err(Error::Invalid(format!(
                    "profile {name}: engines, memory and queues must all be more than 0"
                )));
            }
            if w.weight.is_some_and(|x| !(1..=1000).contains(&x)) {
                return Err(Error::Invalid(format!(
                    "profile {name}: weight is 1..=1000"
                )));
            }
            let s = Shape {
                engines: w.engines,
                memory,
                queues: w.queues,
                vectors: w.vectors,
                weight: w.weight,
            };
            // Two profiles of one shape would make a VF's resource a guess.
            if let Some((other, _)) = shapes.iter().find(|(_, x)| **x == s) {
                return Err(Error::Invalid(format!(
                    "profiles {other} and {name} have the same shape"
                )));
            }
            shapes.insert(name.clone(), s);
        }
        for (dev, list) in &f.devices {
            let mut total = 0u32;
            for s in list {
                if !shapes.contains_key(&s.profile) {
                    return Err(Error::Invalid(format!(
                        "device {dev}: no profile named {}",
                        s.profile
                    )));
                }
                if s.count == 0 {
                    return Err(Error::Invalid(format!(
                        "device {dev}: count 0 of {}",
                        s.profile
                    )));
                }
                total = total.saturating_add(s.count);
            }
            if total > MAX_VFS {
                return Err(Error::Invalid(format!(
                    "device {dev}: {total} VFs (at most {MAX_VFS})"
                )));
            }
        }
        Ok(Profiles {
            shapes,
            devices: f.devices,
        })
    }

    /// The list device `name` is carved to, if the file says.
    pub fn for_device(&self, name: &str) -> Option<&[Share]> {
        self.devices
            .get(name)
            .or_else(|| self.devices.get("*"))
            .map(Vec::as_slice)
    }

    /// The profile `vf` matches, if any.
    pub fn profile_of(&self, vf: &v1::VfInfo, shift: u32) -> Option<&str> {
        self.shapes
            .iter()
            .find(|(_, s)| s.matches(vf, shift))
            .map(|(n, _)| n.as_str())
    }

    /// The resource a VF is advertised as.
    pub fn resource_of(&self, vf: &v1::VfInfo, shift: u32) -> String {
        self.profile_of(vf, shift)
            .map_or_else(|| crate::GENERIC.to_string(), resource_name)
    }

    /// Every resource this file can advertise, the generic one first.
    pub fn resources(&self) -> Vec<String> {
        std::iter::once(crate::GENERIC.to_string())
            .chain(self.shapes.keys().map(|n| resource_name(n)))
            .collect()
    }

    /// Whether a device's VFs are what `list` asks for, as a multiset of shapes.
    pub fn carved_as(&self, list: &[Share], vfs: &[v1::VfInfo], shift: u32) -> bool {
        let mut want: BTreeMap<&str, u32> = BTreeMap::new();
        for s in list {
            *want.entry(s.profile.as_str()).or_default() += s.count;
        }
        let mut have: BTreeMap<&str, u32> = BTreeMap::new();
        for v in vfs.iter().filter(|v| v.state != 0) {
            match self.profile_of(v, shift) {
                Some(p) => *have.entry(p).or_default() += 1,
                None => return false,
            }
        }
        want == have
    }
}

/// `accelvirt.io/vf-<profile>`.
pub fn resource_name(profile: &str) -> String {
    format!("{}/vf-{profile}", crate::DOMAIN)
}

fn check_name(n: &str) -> Result<(), Error> {
    let ok = !n.is_empty()
        && n.len() <= MAX_NAME
        && n.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
        && n != "remote";
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "profile name {n:?}: 1 to {MAX_NAME} of a-z, 0-9 and '-', not at either end, not \"remote\""
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{
      "profiles": {
        "4e-4g": { "engines": 4, "memory": "4G", "queues": 16 },
        "2e-1g": { "engines": 2, "memory": "1G", "queues": 8, "vectors": 16 }
      },
      "devices": { "*": [ { "profile": "4e-4g", "count": 2 }, { "profile": "2e-1g", "count": 1 } ] }
    }"#;

    fn vf(engines: u32, granules: u64, queues: u32, vectors: u32) -> v1::VfInfo {
        v1::VfInfo {
            state: 2,
            engine_mask: (1 << engines) - 1,
            mem_granules: granules,
            queue_count: queues,
            vector_count: vectors,
            ..Default::default()
        }
    }

    #[test]
    fn vfs_are_matched_to_profiles_by_shape() {
        let p = Profiles::parse(FILE.as_bytes()).unwrap();
        // 2 MiB granules (shift 21): 4 GiB = 2048 granules.
        assert_eq!(p.profile_of(&vf(4, 2048, 16, 99), 21), Some("4e-4g"));
        assert_eq!(p.profile_of(&vf(2, 512, 8, 16), 21), Some("2e-1g"));
        assert_eq!(p.profile_of(&vf(2, 512, 8, 32), 21), None, "vectors named");
        assert_eq!(p.resource_of(&vf(1, 1, 1, 1), 21), crate::GENERIC);
        assert_eq!(
            p.resource_of(&vf(4, 2048, 16, 1), 21),
            "accelvirt.io/vf-4e-4g"
        );
        let layout = [vf(4, 2048, 16, 8), vf(2, 512, 8, 16), vf(4, 2048, 16, 8)];
        let list = p.for_device("any").unwrap();
        assert!(p.carved_as(list, &layout, 21));
        assert!(!p.carved_as(list, &layout[..2], 21));
        assert!(!p.carved_as(list, &[vf(4, 2048, 16, 8), vf(1, 1, 1, 1)], 21));
        assert_eq!(
            p.resources(),
            [
                "accelvirt.io/vf",
                "accelvirt.io/vf-2e-1g",
                "accelvirt.io/vf-4e-4g"
            ]
        );
        let s = p.shapes["4e-4g"].spec(21).unwrap();
        assert_eq!(s.mem_granules, Some(2048));
        assert!(p.shapes["4e-4g"].spec(33).is_err());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        for (text, why) in [
            ("{", "EOF"),
            (
                r#"{"profiles":{"A":{"engines":1,"memory":"1G","queues":1}}}"#,
                "profile name",
            ),
            (
                r#"{"profiles":{"remote":{"engines":1,"memory":"1G","queues":1}}}"#,
                "profile name",
            ),
            (
                r#"{"profiles":{"a":{"engines":0,"memory":"1G","queues":1}}}"#,
                "more than 0",
            ),
            (
                r#"{"profiles":{"a":{"engines":1,"memory":"1Q","queues":1}}}"#,
                "unit",
            ),
            (
                r#"{"profiles":{"a":{"engines":1,"memory":"1G","queues":1,"x":1}}}"#,
                "unknown field",
            ),
            (
                r#"{"profiles":{"a":{"engines":1,"memory":"1G","queues":1},"b":{"engines":1,"memory":"1024M","queues":1}}}"#,
                "same shape",
            ),
            (
                r#"{"devices":{"*":[{"profile":"a","count":1}]}}"#,
                "no profile named a",
            ),
            (
                r#"{"profiles":{"a":{"engines":1,"memory":"1G","queues":1}},"devices":{"*":[{"profile":"a","count":0}]}}"#,
                "count 0",
            ),
            (
                r#"{"profiles":{"a":{"engines":1,"memory":"1G","queues":1}},"devices":{"*":[{"profile":"a","count":300}]}}"#,
                "at most",
            ),
        ] {
            let e = Profiles::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
        assert_eq!(Profiles::parse(b"{}").unwrap(), Profiles::default());
    }
}
