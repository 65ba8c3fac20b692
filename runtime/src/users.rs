//! Users and groups as the image knows them: a name or uid (from the CRI or the image's `User`) resolved to
//! uid, gid and supplementary groups against the container's own /etc/passwd and /etc/group.
//!
//! The files are read through `openat2(RESOLVE_IN_ROOT)` below the container's root, so an image whose
//! /etc/passwd is a symlink to the host's (or `../../etc/shadow`) reads its own tree, never the node's; and only
//! their first MiB, so a hostile image cannot make reefd read forever.

use std::io::Read;
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};

/// A user as asked for: by number or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    Id(u32),
    Name(String),
}

/// What to resolve, from the CRI security context and the image's `User` (`user[:group]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRequest {
    pub user: Who,
    pub group: Option<Who>,
    /// Groups asked for on top (the pod's supplemental groups and fsGroup).
    pub supplemental: Vec<u32>,
    /// Also the groups /etc/group lists the user in (Kubernetes' Merge policy; Strict leaves them out).
    pub merge_image_groups: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// The process's supplementary groups: the primary gid first, then the rest without repeats.
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("no user {0:?} in the image's /etc/passwd")]
    NoSuchUser(String),
    #[error("no group {0:?} in the image's /etc/group")]
    NoSuchGroup(String),
    #[error("read the image's {path}: {errno}")]
    Read { path: &'static str, errno: nix::errno::Errno },
    /// 4294967295 is `(uid_t)-1`, which setresuid and setgroups take as "leave unchanged": a process asked to run
    /// as it would stay root.
    #[error("{what} {id} is out of range: ids go up to 4294967294")]
    IdOutOfRange { what: &'static str, id: u32 },
}

/// The id the kernel reads as "unchanged" (`(uid_t)-1`); no process may be asked to run as it.
pub const UNCHANGED_ID: u32 = u32::MAX;

const LIMIT: u64 = 1 << 20;

/// Reads `path` (absolute, inside the container) below `root`, or `None` if it is not there.
fn read_in_root(root: &Path, path: &'static str) -> Result<Option<String>, UserError> {
    let err = |errno| UserError::Read { path, errno };
    let dir =
        nix::fcntl::open(root, OFlag::O_DIRECTORY | OFlag::O_PATH | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
            .map_err(err)?;
    let how = OpenHow::new().flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC).resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let fd = match openat2(&dir, path.trim_start_matches('/'), how) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(LIMIT)
        .read_to_string(&mut text)
        .map_err(|e| err(nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO))))?;
    Ok(Some(text))
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 4).then_some(())?;
        Some(PasswdEntry { name: f[0], uid: f[2].parse().ok()?, gid: f[3].parse().ok()? })
    })
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 3).then_some(())?;
        let members = f.get(3).map(|m| m.split(',').filter(|s| !s.is_empty()).collect()).unwrap_or_default();
        Some(GroupEntry { name: f[0], gid: f[2].parse().ok()?, members })
    })
}

/// Resolves the request from the files' contents (`None`: the image has no such file).
pub fn resolve_with(req: &UserRequest, passwd: Option<&str>, group: Option<&str>) -> Result<ResolvedUser, UserError> {
    let passwd = passwd.unwrap_or_default();
    let groups = group.unwrap_or_default();
    let (uid, mut gid, name) = match &req.user {
        Who::Name(n) => {
            let e = passwd_entries(passwd).find(|e| e.name == n).ok_or_else(|| UserError::NoSuchUser(n.clone()))?;
            (e.uid, e.gid, Some(e.name.to_string()))
        }
        // A uid the image does not list still runs, in group 0, as with docker and containerd.
        Who::Id(id) => match passwd_entries(passwd).find(|e| e.uid == *id) {
            Some(e) => (e.uid, e.gid, Some(e.name.to_string())),
            None => (*id, 0, None),
        },
    };
    match &req.group {
        Some(Who::Id(g)) => gid = *g,
        Some(Who::Name(n)) => {
            gid = group_entries(groups).find(|e| e.name == n).ok_or_else(|| UserError::NoSuchGroup(n.clone()))?.gid;
        }
        None => {}
    }
    let mut additional = vec![gid];
    if req.merge_image_groups
        && let Some(name) = &name
    {
        additional.extend(group_entries(groups).filter(|e| e.members.contains(&name.as_str())).map(|e| e.gid));
    }
    additional.extend(&req.supplemental);
    let mut seen = std::collections::HashSet::new();
    additional.retain(|g| seen.insert(*g));
    let out_of_range = |what, id| (id == UNCHANGED_ID).then_some(UserError::IdOutOfRange { what, id });
    if let Some(e) = out_of_range("uid", uid)
        .or_else(|| out_of_range("gid", gid))
        .or_else(|| additional.iter().find_map(|g| out_of_range("supplementary gid", *g)))
    {
        return Err(e);
    }
    Ok(ResolvedUser { uid, gid, additional_gids: additional })
}

/// Resolves the request against the container's root filesystem (mounted at `root`).
pub fn resolve(root: &Path, req: &UserRequest) -> Result<ResolvedUser, UserError> {
    let needs_passwd = matches!(req.user, Who::Name(_)) || req.group.is_none() || req.merge_image_groups;
    let passwd = if needs_passwd { read_in_root(root, "/etc/passwd")? } else { None };
    let needs_group = matches!(req.group, Some(Who::Name(_))) || req.merge_image_groups;
    let group = if needs_group { read_in_root(root, "/etc/group")? } else { None };
    resolve_with(req, passwd.as_deref(), group.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\nbroken line\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,app\nappg:x:1001:\nextra:x:2000:app\n";

    fn req(user: Who, group: Option<Who>, supplemental: &[u32], merge: bool) -> UserRequest {
        UserRequest { user, group, supplemental: supplemental.to_vec(), merge_image_groups: merge }
    }

    #[test]
    fn names_and_ids_resolve_to_the_image_s_primary_group_and_memberships() {
        let r = resolve_with(&req(Who::Name("app".into()), None, &[3000], true), Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!(r, ResolvedUser { uid: 1000, gid: 1001, additional_gids: vec![1001, 10, 2000, 3000] });
        let by_id = resolve_with(&req(Who::Id(1000), None, &[], true), Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!(by_id.gid, 1001);
        let strict = resolve_with(&req(Who::Id(1000), None, &[3000], false), Some(PASSWD), Some(GROUP)).unwrap();
        assert_eq!(strict.additional_gids, vec![1001, 3000], "Strict: no groups from /etc/group");
    }

    #[test]
    fn unknown_uids_run_in_group_zero_and_unknown_names_are_errors() {
        let r = resolve_with(&req(Who::Id(4242), None, &[], true), Some(PASSWD), None).unwrap();
        assert_eq!((r.uid, r.gid), (4242, 0));
        assert_eq!(
            resolve_with(&req(Who::Name("ghost".into()), None, &[], true), Some(PASSWD), Some(GROUP)),
            Err(UserError::NoSuchUser("ghost".into()))
        );
        assert_eq!(
            resolve_with(&req(Who::Id(0), Some(Who::Name("nope".into())), &[], true), None, Some(GROUP)),
            Err(UserError::NoSuchGroup("nope".into()))
        );
        let g = resolve_with(&req(Who::Id(0), Some(Who::Name("wheel".into())), &[], false), None, Some(GROUP)).unwrap();
        assert_eq!(g.gid, 10);
    }

    #[test]
    fn the_unchanged_id_is_refused_wherever_it_comes_from() {
        let passwd = "max:x:4294967295:0::/:/bin/sh\n";
        for (r, what) in [
            (req(Who::Id(UNCHANGED_ID), None, &[], false), "uid"),
            (req(Who::Name("max".into()), None, &[], false), "uid"),
            (req(Who::Id(0), Some(Who::Id(UNCHANGED_ID)), &[], false), "gid"),
            (req(Who::Id(0), None, &[UNCHANGED_ID], false), "supplementary gid"),
        ] {
            assert_eq!(
                resolve_with(&r, Some(passwd), None),
                Err(UserError::IdOutOfRange { what, id: UNCHANGED_ID }),
                "{r:?}"
            );
        }
    }

    #[test]
    fn the_files_are_read_inside_the_root_even_through_hostile_symlinks() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        // An absolute symlink would reach the host's file outside RESOLVE_IN_ROOT; inside, it names the image's own.
        std::os::unix::fs::symlink("/../../../../etc/group", root.path().join("etc/passwd")).unwrap();
        std::fs::write(root.path().join("etc/group"), "not a passwd line\n").unwrap();
        let r = resolve(root.path(), &req(Who::Name("root".into()), None, &[], false));
        assert!(r.is_err(), "the host's root entry must not be found through the symlink: {r:?}");
    }
}
