//! A pod's user namespace: its uid and gid mappings, checked before anything is made, and written into a fresh
//! namespace by the parent (a process cannot map more than its own id into a namespace it just made).

use std::fmt::Write as _;

/// One `uid_map`/`gid_map` line: ids `container_id..container_id+size` inside are `host_id..` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct IdMappings {
    pub uids: Vec<IdMapping>,
    pub gids: Vec<IdMapping>,
}

/// The kernel takes at most this many lines per map.
const MAX_LINES: usize = 340;

fn check_one(kind: &str, maps: &[IdMapping]) -> Result<(), String> {
    if maps.is_empty() {
        return Err(format!("user namespace needs at least one {kind} mapping"));
    }
    if maps.len() > MAX_LINES {
        return Err(format!("user namespace has {} {kind} mappings; the kernel takes at most {MAX_LINES}", maps.len()));
    }
    let end = |start: u32, size: u32| start as u64 + size as u64;
    for m in maps {
        if m.size == 0 {
            return Err(format!("{kind} mapping {m:?} has size 0"));
        }
        if end(m.container_id, m.size) > u32::MAX as u64 || end(m.host_id, m.size) > u32::MAX as u64 {
            return Err(format!("{kind} mapping {m:?} goes past the 32-bit id range"));
        }
    }
    // The pod's processes run as its root, the pins are made by it and its image is idmapped to it: without
    // container id 0 mapped, the kernel would take the maps and every one of those steps would fail later.
    if host_of(maps, 0).is_none() {
        return Err(format!(
            "user namespace {kind} mappings must map container id 0 (the pod's root); {maps:?} do not"
        ));
    }
    for (i, a) in maps.iter().enumerate() {
        for b in &maps[i + 1..] {
            let inside = (a.container_id as u64) < end(b.container_id, b.size)
                && (b.container_id as u64) < end(a.container_id, a.size);
            let outside = (a.host_id as u64) < end(b.host_id, b.size) && (b.host_id as u64) < end(a.host_id, a.size);
            if inside || outside {
                return Err(format!("{kind} mappings {a:?} and {b:?} overlap"));
            }
        }
    }
    Ok(())
}

impl IdMappings {
    /// What the kernel would refuse (or accept only to surprise): empty maps, zero sizes, ranges past 2^32,
    /// overlaps inside or outside, container id 0 (root) left unmapped. The message says which mapping is wrong.
    pub fn validate(&self) -> Result<(), String> {
        check_one("uid", &self.uids)?;
        check_one("gid", &self.gids)
    }

    /// The host id that `id` inside maps to, if any (the container's root: the owner of its writable dirs).
    pub fn host_uid(&self, id: u32) -> Option<u32> {
        host_of(&self.uids, id)
    }

    pub fn host_gid(&self, id: u32) -> Option<u32> {
        host_of(&self.gids, id)
    }

    /// Writes the maps of the process `pid`, which has just unshared its user namespace.
    pub fn write(&self, pid: i32) -> std::io::Result<()> {
        std::fs::write(format!("/proc/{pid}/uid_map"), map_text(&self.uids))?;
        std::fs::write(format!("/proc/{pid}/gid_map"), map_text(&self.gids))
    }
}

fn host_of(maps: &[IdMapping], id: u32) -> Option<u32> {
    maps.iter()
        .find(|m| id >= m.container_id && (id - m.container_id) < m.size)
        .map(|m| m.host_id + (id - m.container_id))
}

/// The `/proc/PID/uid_map` text: one `inside outside count` line per mapping.
pub fn map_text(maps: &[IdMapping]) -> String {
    let mut s = String::new();
    for m in maps {
        let _ = writeln!(s, "{} {} {}", m.container_id, m.host_id, m.size);
    }
    s
}

/// Pod user namespaces hand overlay its idmapped lower layers as mount fds (`fsconfig` `lowerdir+`), which
/// Linux has taken only since 6.13: on an older kernel Status says so, and kubelet keeps hostUsers: false pods off
/// the node instead of their failing at CreateContainer.
pub fn kernel_supports_pod_user_namespaces() -> bool {
    nix::sys::utsname::uname().ok().and_then(|u| u.release().to_str().map(release_at_least_6_13)).unwrap_or(false)
}

fn release_at_least_6_13(release: &str) -> bool {
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty());
    let major = parts.next().and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
    (major, minor) >= (6, 13)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(c: u32, h: u32, s: u32) -> IdMapping {
        IdMapping { container_id: c, host_id: h, size: s }
    }

    fn maps(uids: Vec<IdMapping>) -> IdMappings {
        IdMappings { gids: uids.clone(), uids }
    }

    #[test]
    fn good_mappings_pass_and_translate() {
        let good = maps(vec![m(0, 100000, 65536)]);
        assert_eq!(good.validate(), Ok(()));
        assert_eq!(good.host_uid(0), Some(100000));
        assert_eq!(good.host_uid(65536), None);
        assert_eq!(map_text(&good.uids), "0 100000 65536\n");
        assert_eq!(maps(vec![m(0, 1000, 10), m(10, 5000, 10)]).validate(), Ok(()));
    }

    #[test]
    fn bad_mappings_are_refused_with_the_reason() {
        let err = |v: IdMappings| v.validate().unwrap_err();
        assert!(err(maps(vec![])).contains("at least one uid"));
        assert!(err(IdMappings { uids: vec![m(0, 1, 1)], gids: vec![] }).contains("gid"));
        assert!(err(maps(vec![m(0, 1000, 0)])).contains("size 0"));
        assert!(err(maps(vec![m(0, u32::MAX - 5, 10)])).contains("32-bit"));
        assert!(err(maps(vec![m(u32::MAX, 0, 2)])).contains("32-bit"));
        assert!(err(maps(vec![m(0, 1000, 10), m(5, 9000, 10)])).contains("overlap"), "inside");
        assert!(err(maps(vec![m(0, 1000, 10), m(100, 1005, 10)])).contains("overlap"), "on the host");
        assert!(err(maps(vec![m(1, 1000, 100000)])).contains("container id 0"), "root unmapped");
        let gids_without_root = IdMappings { uids: vec![m(0, 1000, 10)], gids: vec![m(1, 1000, 10)] };
        assert!(err(gids_without_root).contains("gid mappings must map container id 0"));
    }

    #[test]
    fn pod_user_namespaces_need_linux_6_13() {
        assert!(release_at_least_6_13("6.18.44-fc-v657"));
        assert!(release_at_least_6_13("6.13.0"));
        assert!(release_at_least_6_13("7.0.1-arch1"));
        assert!(!release_at_least_6_13("6.1.0-27-amd64"));
        assert!(!release_at_least_6_13("5.15.0"));
        assert!(!release_at_least_6_13("garbage"));
    }
}
