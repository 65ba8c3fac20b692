//! What a container's init does to its root filesystem before it pivots into it, and to its paths after: each
//! mount onto a destination resolved inside the rootfs (`openat2` with `RESOLVE_IN_ROOT`, so a symlink in the
//! image cannot move a mount outside it), the container's view of the cgroup hierarchies, the pivot, masked and
//! read-only paths. Runs in the forked init (`launch::init`): every function returns the errno for init to
//! report, and allocates only what the kernel calls need.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag};

use crate::launch::LaunchPlan;
use crate::mounts::MountPlan;
use crate::sys;

/// An entry of the container's v1 `/sys/fs/cgroup` (`cgroups::Hierarchies::v1_view`), ready for the child.
pub(crate) enum CgroupEntry {
    Symlink(CString),
    Bind(CString),
}

/// The sources of the plan's bidirectional binds (`MountPlan::is_shared_bind`), cloned while this namespace's
/// mounts are still peers of those of the namespace it was copied from (the node's), by index in `plan.mounts`;
/// a failure names the mount's index.
///
/// Why before `/` turns slave: a bind made afterwards copies a slave, and becomes a slave itself: the host's new
/// mounts under it reach the container, but the container's never reach the host, which the CRI's Bidirectional
/// asks for. A clone taken now joins the host mount's peer group, and stays in it once attached inside the
/// rootfs. (In a pod's user namespace the copy of the node's mounts is all slaves already, so such a bind only
/// receives; kubelet allows Bidirectional only to privileged containers, which such pods cannot have.)
pub(crate) fn clone_shared_binds(plan: &LaunchPlan) -> Result<Vec<Option<OwnedFd>>, (usize, Errno)> {
    let mut trees = Vec::with_capacity(plan.mounts.len());
    for (i, m) in plan.mounts.iter().enumerate() {
        if !m.is_shared_bind() {
            trees.push(None);
            continue;
        }
        let cloned = CString::new(m.source.as_bytes())
            .map_err(|_| Errno::EINVAL)
            .and_then(|source| sys::clone_mount(&source, m.flags.contains(MsFlags::MS_REC)));
        match cloned {
            Ok(tree) => trees.push(Some(tree)),
            Err(e) => return Err((i, e)),
        }
    }
    Ok(trees)
}

/// Mounts one entry onto its destination resolved inside the root, so a symlink in the image cannot move a
/// mount (a host bind mount, say) outside the container's filesystem.
pub(crate) fn mount_one(
    root: &OwnedFd,
    m: &MountPlan,
    tree: Option<&OwnedFd>,
    cgroup_view: Option<&[(CString, CgroupEntry)]>,
) -> nix::Result<()> {
    if m.fstype == "cgroup" {
        return match cgroup_view {
            Some(view) => mount_cgroup_v1_view(root, m, view),
            None => mount_cgroup(root, m),
        };
    }
    let source_is_file = m.is_bind() && std::fs::metadata(&m.source).is_ok_and(|md| !md.is_dir());
    let target = ensure_target(root, &m.destination, source_is_file)?;
    let target_path = format!("/proc/self/fd/{}", target.as_raw_fd());
    let none: Option<&str> = None;
    let data = (!m.data.is_empty()).then_some(m.data.as_str());
    let first = if m.is_bind() { m.flags & (MsFlags::MS_BIND | MsFlags::MS_REC) } else { m.flags };
    let mounted = match tree {
        Some(tree) => sys::attach_tree_at(tree, &target),
        None => mount(Some(m.source.as_str()), target_path.as_str(), Some(m.fstype.as_str()), first, data),
    };
    match mounted {
        // A fresh sysfs needs the network namespace's owner: in a user namespace that does not own it, the
        // host's /sys goes in read-only instead, as runc does.
        Err(Errno::EPERM) if m.fstype == "sysfs" => {
            mount(Some("/sys"), target_path.as_str(), none, MsFlags::MS_BIND | MsFlags::MS_REC, none)?;
            let mounted = resolve_in_root(root, &m.destination, OFlag::O_PATH)?;
            return sys::make_tree_readonly(&mounted);
        }
        other => other?,
    }
    if m.needs_remount() || !m.propagation.is_empty() || m.recursive_readonly {
        // The old fd names the directory under the new mount; remounts and propagation need the mount itself.
        let mounted = resolve_in_root(root, &m.destination, OFlag::O_PATH)?;
        let mounted_path = format!("/proc/self/fd/{}", mounted.as_raw_fd());
        if m.needs_remount() {
            mount(none, mounted_path.as_str(), none, m.flags | MsFlags::MS_REMOUNT, none)?;
        }
        if !m.propagation.is_empty() {
            mount(none, mounted_path.as_str(), none, m.propagation, none)?;
        }
        if m.recursive_readonly {
            sys::make_tree_readonly(&mounted)?;
        }
    }
    Ok(())
}

/// A "cgroup" mount: cgroup2 where the host runs it; on a v1 host, for a container without a cgroup of its own
/// (a fresh mount of all controllers is refused there: they are already mounted apart), the host's hierarchy
/// bind-mounted read-only. Containers with a cgroup get `mount_cgroup_v1_view` on v1 instead.
fn mount_cgroup(root: &OwnedFd, m: &MountPlan) -> nix::Result<()> {
    let none: Option<&str> = None;
    let target = ensure_target(root, &m.destination, false)?;
    let target_path = format!("/proc/self/fd/{}", target.as_raw_fd());
    let v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
    let flags = m.flags - MsFlags::MS_BIND - MsFlags::MS_REC;
    if v2 {
        return mount(Some("cgroup2"), target_path.as_str(), Some("cgroup2"), flags, none);
    }
    mount(Some("/sys/fs/cgroup"), target_path.as_str(), none, MsFlags::MS_BIND | MsFlags::MS_REC, none)?;
    let mounted = resolve_in_root(root, &m.destination, OFlag::O_PATH)?;
    let mounted_path = format!("/proc/self/fd/{}", mounted.as_raw_fd());
    mount(none, mounted_path.as_str(), none, flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, none)
}

/// A v1 "cgroup" mount as runc makes it: a tmpfs holding, read-only, the container's own directory of each
/// hierarchy (so `/sys/fs/cgroup/memory/memory.limit_in_bytes` is the container's limit) and the host's aliases.
fn mount_cgroup_v1_view(root: &OwnedFd, m: &MountPlan, view: &[(CString, CgroupEntry)]) -> nix::Result<()> {
    let none: Option<&str> = None;
    let target = ensure_target(root, &m.destination, false)?;
    let target_path = format!("/proc/self/fd/{}", target.as_raw_fd());
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("tmpfs"), target_path.as_str(), Some("tmpfs"), base, Some("mode=755"))?;
    let dir = resolve_in_root(root, &m.destination, OFlag::O_DIRECTORY | OFlag::O_RDONLY)?;
    for (name, entry) in view {
        match entry {
            CgroupEntry::Symlink(to) => nix::unistd::symlinkat(to.as_c_str(), &dir, name.as_c_str())?,
            CgroupEntry::Bind(own) => {
                nix::sys::stat::mkdirat(&dir, name.as_c_str(), Mode::from_bits_truncate(0o755))?;
                let at = format!("/proc/self/fd/{}/{}", dir.as_raw_fd(), name.to_string_lossy());
                mount(Some(own.as_c_str()), at.as_str(), none, MsFlags::MS_BIND, none)?;
                let ro = base | MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                mount(none, at.as_str(), none, ro, none)?;
            }
        }
    }
    let mounted = format!("/proc/self/fd/{}", dir.as_raw_fd());
    mount(none, mounted.as_str(), none, base | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY, Some("mode=755"))
}

pub(crate) fn resolve_in_root(root: &OwnedFd, path: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let rel = path.trim_start_matches('/');
    openat2(root, if rel.is_empty() { "." } else { rel }, how)
}

/// Opens (creating if missing, like `mkdir -p`) a mount destination inside the root, as an O_PATH fd.
pub(crate) fn ensure_target(root: &OwnedFd, destination: &str, file: bool) -> nix::Result<OwnedFd> {
    let components: Vec<&str> = destination.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
    let mut prefix = String::new();
    for (i, c) in components.iter().enumerate() {
        let parent = resolve_in_root(root, &prefix, OFlag::O_DIRECTORY | OFlag::O_PATH)?;
        let last = i + 1 == components.len();
        let created = if last && file {
            nix::fcntl::openat(
                &parent,
                *c,
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .map(drop)
        } else {
            nix::sys::stat::mkdirat(&parent, *c, Mode::from_bits_truncate(0o755))
        };
        match created {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
        prefix.push('/');
        prefix.push_str(c);
    }
    resolve_in_root(root, &prefix, OFlag::O_PATH)
}

/// pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only the container's view.
pub(crate) fn pivot(root: &OwnedFd) -> nix::Result<()> {
    nix::unistd::fchdir(root)?;
    nix::unistd::pivot_root(".", ".")?;
    umount2(".", MntFlags::MNT_DETACH)?;
    nix::unistd::chdir("/")
}

pub(crate) fn mask(path: &str) -> nix::Result<()> {
    let none: Option<&str> = None;
    match nix::sys::stat::stat(path) {
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
        Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
            mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, none)
        }
        Ok(_) => mount(Some("/dev/null"), path, none, MsFlags::MS_BIND, none),
    }
}

pub(crate) fn make_readonly(path: &str) -> nix::Result<()> {
    let none: Option<&str> = None;
    match mount(Some(path), path, none, MsFlags::MS_BIND | MsFlags::MS_REC, none) {
        Err(Errno::ENOENT) => return Ok(()),
        other => other?,
    }
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    mount(none, path, none, flags, none)
}
