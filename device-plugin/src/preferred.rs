//! Which VFs the plugin would rather the kubelet gave a container: all on one device if
//! any device can give them, else all on one NUMA node, packing the fewest devices; never a
//! device split when another holds the whole request, so larger devices stay whole for
//! larger requests (best fit).

use crate::inventory::Vf;
use std::collections::BTreeMap;

/// `size` IDs from `available` that include `must`. IDs the plugin does not know are
/// taken last (the kubelet's list is the truth about what is free).
pub fn choose(
    vfs: &BTreeMap<String, Vf>,
    available: &[String],
    must: &[String],
    size: usize,
) -> Vec<String> {
    let mut out: Vec<String> = must.iter().take(size).cloned().collect();
    if out.len() >= size {
        return out;
    }
    let free: Vec<&String> = available.iter().filter(|id| !out.contains(id)).collect();
    let need = size - out.len();
    // Groups by (NUMA node, device), known VFs only, in ID order.
    let mut by_dev: BTreeMap<(Option<i64>, &str), Vec<&String>> = BTreeMap::new();
    for id in &free {
        if let Some(v) = vfs.get(id.as_str()) {
            by_dev
                .entry((v.numa, v.device.as_str()))
                .or_default()
                .push(id);
        }
    }
    let must_dev = must
        .iter()
        .find_map(|id| vfs.get(id))
        .map(|v| (v.numa, v.device.as_str()));
    // 1. The must-include device, if it has room for the rest.
    // 2. The device with the fewest free VFs that still has room (best fit).
    let one = must_dev
        .filter(|k| by_dev.get(k).is_some_and(|g| g.len() >= need))
        .or_else(|| {
            by_dev
                .iter()
                .filter(|(_, g)| g.len() >= need)
                .min_by_key(|(k, g)| (g.len(), *k))
                .map(|(k, _)| *k)
        });
    if let Some(k) = one {
        out.extend(by_dev[&k].iter().take(need).map(|s| (*s).clone()));
        return out;
    }
    // 3. One NUMA node (the must-include one's first), its largest devices first.
    let mut nodes: BTreeMap<Option<i64>, usize> = BTreeMap::new();
    for ((n, _), g) in &by_dev {
        *nodes.entry(*n).or_default() += g.len();
    }
    let node = must_dev
        .map(|(n, _)| n)
        .filter(|n| nodes.get(n).is_some_and(|c| *c >= need))
        .or_else(|| {
            nodes
                .iter()
                .filter(|(_, c)| **c >= need)
                .min_by_key(|(n, c)| (**c, **n))
                .map(|(n, _)| *n)
        });
    type Group<'a> = (&'a (Option<i64>, &'a str), &'a Vec<&'a String>);
    let mut groups: Vec<Group> = by_dev
        .iter()
        .filter(|((n, _), _)| node.is_none_or(|x| x == *n))
        .collect();
    groups.sort_by_key(|(k, g)| (std::cmp::Reverse(g.len()), **k));
    for (_, g) in groups {
        for id in g {
            if out.len() < size {
                out.push((*id).clone());
            }
        }
    }
    // 4. Whatever is left, in the kubelet's order.
    for id in free {
        if out.len() >= size {
            break;
        }
        if !out.contains(id) {
            out.push(id.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Endpoint;

    fn inv(spec: &[(&str, Option<i64>, u32)]) -> (BTreeMap<String, Vf>, Vec<String>) {
        let mut m = BTreeMap::new();
        let mut ids = Vec::new();
        for (dev, numa, n) in spec {
            for i in 0..*n {
                let id = format!("{dev}-vf{i}");
                ids.push(id.clone());
                m.insert(
                    id.clone(),
                    Vf {
                        id,
                        resource: crate::GENERIC.into(),
                        device: dev.to_string(),
                        vf: i,
                        unhealthy: None,
                        numa: *numa,
                        endpoint: Endpoint::Socket("/x".into()),
                    },
                );
            }
        }
        (m, ids)
    }

    fn devices(m: &BTreeMap<String, Vf>, ids: &[String]) -> Vec<String> {
        let mut d: Vec<String> = ids.iter().map(|i| m[i].device.clone()).collect();
        d.dedup();
        d
    }

    #[test]
    fn one_device_when_one_can_give_them_all_best_fit() {
        let (m, ids) = inv(&[("a", Some(0), 8), ("b", Some(0), 4), ("c", Some(1), 2)]);
        let got = choose(&m, &ids, &[], 4);
        assert_eq!(got.len(), 4);
        assert_eq!(devices(&m, &got), ["b"], "b fits exactly; a stays whole");
        assert_eq!(devices(&m, &choose(&m, &ids, &[], 1)), ["c"]);
        assert_eq!(devices(&m, &choose(&m, &ids, &[], 6)), ["a"]);
        // Must-include on a, with room: the rest come from a too.
        let got = choose(&m, &ids, &["a-vf3".into()], 3);
        assert_eq!(got[0], "a-vf3");
        assert_eq!(devices(&m, &got), ["a"]);
    }

    #[test]
    fn one_numa_node_when_no_device_can() {
        let (m, ids) = inv(&[("a", Some(0), 3), ("b", Some(0), 3), ("c", Some(1), 4)]);
        let got = choose(&m, &ids, &[], 5);
        assert_eq!(got.len(), 5);
        assert!(got.iter().all(|i| m[i].numa == Some(0)), "{got:?}");
        // More than any node has: still the size asked, from everywhere.
        let got = choose(&m, &ids, &[], 9);
        assert_eq!(got.len(), 9);
        let mut uniq = got.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 9, "no ID twice");
        // IDs the plugin does not know still count.
        let mut more = ids.clone();
        more.push("stranger".into());
        assert_eq!(choose(&m, &more, &[], 11).len(), 11);
    }
}
