//! Who may manage the devices: root, and members of the daemon's group (`--group`,
//! `accelvirt` by default). The peer's credentials come from the socket (SO_PEERCRED, taken
//! by the kernel when the peer connected: a client cannot claim another's), its supplementary
//! groups from its process, as the kernel holds them now.

use std::path::Path;

/// A connected peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Process id (0 if the kernel gave none).
    pub pid: i32,
}

/// The access rule: the group whose members may manage.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Group name, as configured.
    pub group: String,
    /// Its id, if the group exists (a group that does not exist admits only root).
    pub gid: Option<u32>,
}

impl Policy {
    /// Looks `group` up in the system's group database.
    pub fn new(group: &str) -> Self {
        let gid = nix::unistd::Group::from_name(group)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw());
        Policy {
            group: group.to_string(),
            gid,
        }
    }

    /// Whether `peer`, with supplementary `groups`, may manage; `Err` says why not, for the
    /// caller to read.
    pub fn check(&self, peer: &Peer, groups: &[u32]) -> Result<(), String> {
        if peer.uid == 0 {
            return Ok(());
        }
        let Some(gid) = self.gid else {
            return Err(format!(
                "uid {} is not root, and acceld's group '{}' does not exist: only root may manage \
                 the devices",
                peer.uid, self.group
            ));
        };
        if peer.gid == gid || groups.contains(&gid) {
            return Ok(());
        }
        Err(format!(
            "uid {} is neither root nor in the group '{}' that may manage accelvirt devices \
             (add the user with `usermod -aG {} USER`, then log in again)",
            peer.uid, self.group, self.group
        ))
    }
}

/// The supplementary groups of the peer's process (its `/proc` status), read when it
/// connects; empty if the process is gone, or if the process with that pid is no longer the
/// one that connected (its effective uid differs: the pid was reused).
pub fn supplementary_groups(peer: &Peer) -> Vec<u32> {
    if peer.pid <= 0 {
        return Vec::new();
    }
    groups_in(
        &Path::new("/proc").join(peer.pid.to_string()).join("status"),
        peer.uid,
    )
}

fn groups_in(status: &Path, euid: u32) -> Vec<u32> {
    let Ok(s) = std::fs::read_to_string(status) else {
        return Vec::new();
    };
    // Uid: real, effective, saved, filesystem.
    let uid_matches = s
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().nth(1)?.parse::<u32>().ok())
        == Some(euid);
    if !uid_matches {
        return Vec::new();
    }
    s.lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Who is at the other end of a connection, as taken when it connected.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The socket's peer credentials.
    pub peer: Option<Peer>,
    /// The peer's supplementary groups.
    pub groups: Vec<u32>,
}

impl Caller {
    /// The caller at the other end of `s`.
    pub fn of(s: &tokio::net::UnixStream) -> Self {
        let peer = s.peer_cred().ok().map(|c| Peer {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid().unwrap_or(0),
        });
        let groups = peer.as_ref().map(supplementary_groups).unwrap_or_default();
        Caller { peer, groups }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_group_members_only() {
        let p = Policy {
            group: "accelvirt".into(),
            gid: Some(4242),
        };
        let peer = |uid, gid| Peer { uid, gid, pid: 0 };
        assert!(p.check(&peer(0, 0), &[]).is_ok());
        assert!(p.check(&peer(1000, 4242), &[]).is_ok());
        assert!(p.check(&peer(1000, 1000), &[7, 4242]).is_ok());
        let e = p.check(&peer(1000, 1000), &[7]).unwrap_err();
        assert!(e.contains("accelvirt"), "{e}");
        let none = Policy {
            group: "nosuchgroup".into(),
            gid: None,
        };
        assert!(none.check(&peer(1000, 4242), &[4242]).is_err());
        assert!(none.check(&peer(0, 0), &[]).is_ok());
    }

    #[test]
    fn supplementary_groups_come_from_the_process() {
        let me = Peer {
            uid: nix::unistd::geteuid().as_raw(),
            gid: 0,
            pid: std::process::id() as i32,
        };
        let want: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        let mut got = supplementary_groups(&me);
        got.sort();
        let mut want = want;
        want.sort();
        want.dedup();
        assert_eq!(got, want);
        // A pid now held by a process of another user: its groups are not the caller's.
        let reused = Peer {
            uid: me.uid + 1,
            ..me
        };
        assert!(supplementary_groups(&reused).is_empty());
        assert!(supplementary_groups(&Peer { pid: -1, ..me }).is_empty());
    }
}
