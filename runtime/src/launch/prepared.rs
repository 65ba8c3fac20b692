//! The plan made ready for the forked roles: everything a child would otherwise allocate, open or parse (the
//! namespaces to join, C strings, capability sets, rlimits, the rootfs as a detached tree) is done in the caller,
//! so a bad plan fails the launch before any fork, and the children only make syscalls.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use super::protocol::LaunchError;
use super::{CapabilitySets, LaunchPlan, Stdio};
use crate::cgroups::ViewEntry;
use crate::rootfs::setup::CgroupEntry;
use crate::sys;

/// Capability sets parsed in the caller, so a bad name fails the launch before any fork.
pub(super) struct Caps {
    pub bounding: caps::CapsHashSet,
    pub effective: caps::CapsHashSet,
    pub permitted: caps::CapsHashSet,
    pub inheritable: caps::CapsHashSet,
    pub ambient: caps::CapsHashSet,
}

fn parse_caps(sets: &CapabilitySets) -> Result<Caps, LaunchError> {
    let parse = |v: &[String]| -> Result<caps::CapsHashSet, LaunchError> {
        v.iter()
            .map(|n| {
                n.parse::<caps::Capability>().map_err(|_| LaunchError::InvalidPlan(format!("unknown capability {n:?}")))
            })
            .collect()
    };
    Ok(Caps {
        bounding: parse(&sets.bounding)?,
        effective: parse(&sets.effective)?,
        permitted: parse(&sets.permitted)?,
        inheritable: parse(&sets.inheritable)?,
        ambient: parse(&sets.ambient)?,
    })
}

/// The plan with everything a child would otherwise allocate or open computed in the caller.
pub(super) struct Prepared<'a> {
    /// An exec into a running container rather than a new container.
    pub exec: bool,
    pub rlimits: Vec<(nix::sys::resource::Resource, u64, u64)>,
    pub caps: Option<Caps>,
    pub plan: &'a LaunchPlan,
    /// The namespaces to join, the user namespace last.
    pub join: Vec<(CloneFlags, OwnedFd)>,
    pub rootfs: CString,
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    pub stdio: Stdio,
    /// Written `0` by the process that forks init, which moves it into the container's cgroup (see
    /// `cgroups::CgroupJoin`).
    pub cgroup: Vec<BorrowedFd<'a>>,
    /// Init is put in its cgroup from outside once forked (systemd's scope): it waits for the word at its start
    /// gate (`Gate::cgroup_joined`), and unshares the cgroup namespace itself, after, not the intermediate.
    pub cgroup_from_outside: bool,
    /// On a v1 host, what the container's `/sys/fs/cgroup` holds (see `rootfs::setup::mount_one`); None elsewhere.
    pub cgroup_view: Option<Vec<(CString, CgroupEntry)>>,
    /// The mount namespace the container's is copied from, when not the caller's (`launch::copy_mounts_from`);
    /// the rootfs then comes along as a detached tree, attached at `rootfs` in the copy.
    pub mounts_from: Option<BorrowedFd<'static>>,
    pub rootfs_tree: Option<OwnedFd>,
    /// `exec <profile>`, what the process writes to its AppArmor attribute before the exec; None: unconfined.
    pub apparmor_exec: Option<Vec<u8>>,
}

impl<'a> Prepared<'a> {
    /// `cgroup`: the files the container's first process writes itself into; `exec`: for `spawn_exec`.
    pub fn new(
        plan: &'a LaunchPlan,
        stdio: Stdio,
        cgroup: Vec<BorrowedFd<'a>>,
        exec: bool,
    ) -> Result<Self, LaunchError> {
        let join = open_namespaces(plan)?;
        if plan.args.is_empty() {
            return Err(LaunchError::InvalidPlan("no command to run".into()));
        }
        let rootfs = CString::new(plan.rootfs.as_os_str().as_encoded_bytes())
            .map_err(|_| LaunchError::InvalidPlan("rootfs path has a NUL byte".into()))?;
        let caps = plan.capabilities.as_ref().map(parse_caps).transpose()?;
        let (mounts_from, rootfs_tree) = copy_source(plan, &rootfs);
        let rlimits = plan
            .rlimits
            .iter()
            .map(|(name, soft, hard)| resource_of(name).map(|r| (r, *soft, *hard)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Prepared {
            exec,
            rlimits,
            caps,
            plan,
            join,
            rootfs,
            args: cstrings("args", &plan.args)?,
            env: cstrings("env", &plan.env)?,
            stdio,
            cgroup,
            cgroup_from_outside: !exec && plan.cgroup.as_ref().is_some_and(|c| c.systemd.is_some()),
            cgroup_view: cgroup_view(plan),
            mounts_from,
            rootfs_tree,
            apparmor_exec: plan.apparmor_profile.as_ref().map(|name| format!("exec {name}").into_bytes()),
        })
    }
}

/// The namespaces the plan joins, opened by path, in the order they are joined.
fn open_namespaces(plan: &LaunchPlan) -> Result<Vec<(CloneFlags, OwnedFd)>, LaunchError> {
    let mut join = Vec::new();
    for (flag, path) in &plan.join_namespaces {
        let fd = nix::fcntl::open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| LaunchError::InvalidPlan(format!("namespace {}: {e}", path.display())))?;
        join.push((*flag, fd));
    }
    // The user namespace last: until then the intermediate is host root, with rights over every namespace
    // (the monitor's shared PID namespace belongs to the host's user namespace, and setns into it from the
    // pod's would be refused). Joined last, it still owns the mount, PID and cgroup namespaces unshared next.
    join.sort_by_key(|(flag, _)| *flag == CloneFlags::CLONE_NEWUSER);
    Ok(join)
}

/// The mount namespace to copy the container's from and the rootfs as a detached tree to carry into the copy,
/// when `launch::copy_mounts_from` set one and the container gets a mount namespace of its own.
fn copy_source(plan: &LaunchPlan, rootfs: &CString) -> (Option<BorrowedFd<'static>>, Option<OwnedFd>) {
    match super::COPY_MOUNTS_FROM.get() {
        Some(ns) if plan.new_namespaces.contains(CloneFlags::CLONE_NEWNS) => match sys::clone_tree(rootfs) {
            Ok(tree) => (Some(ns.as_fd()), Some(tree)),
            // No open_tree (before 5.2), or no rootfs (which the launch then reports): the copy is made of
            // the caller's namespace, as without `copy_mounts_from`.
            Err(_) => (None, None),
        },
        _ => (None, None),
    }
}

/// The container's v1 view, from the hierarchies reefd found (no look at the host per container); None when the
/// container mounts no cgroup filesystem, has no cgroup, or the host runs v2.
fn cgroup_view(plan: &LaunchPlan) -> Option<Vec<(CString, CgroupEntry)>> {
    let cgroup = plan.cgroup.as_ref()?;
    if !plan.mounts.iter().any(|m| m.fstype == "cgroup") {
        return None;
    }
    let cstr = |s: &[u8]| CString::new(s).ok();
    let view = crate::cgroups::hierarchies_of(cgroup).v1_view(&cgroup.path)?;
    Some(
        view.into_iter()
            .filter_map(|(name, entry)| {
                let entry = match entry {
                    ViewEntry::Own(dir) => CgroupEntry::Bind(cstr(dir.as_os_str().as_encoded_bytes())?),
                    ViewEntry::Alias(to) => CgroupEntry::Symlink(cstr(to.as_bytes())?),
                };
                Some((cstr(name.as_bytes())?, entry))
            })
            .collect(),
    )
}

fn cstrings(field: &str, v: &[String]) -> Result<Vec<CString>, LaunchError> {
    v.iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| LaunchError::InvalidPlan(format!("{field} has a NUL byte"))))
        .collect()
}

fn resource_of(name: &str) -> Result<nix::sys::resource::Resource, LaunchError> {
    use nix::sys::resource::Resource as R;
    Ok(match name {
        "RLIMIT_AS" => R::RLIMIT_AS,
        "RLIMIT_CORE" => R::RLIMIT_CORE,
        "RLIMIT_CPU" => R::RLIMIT_CPU,
        "RLIMIT_DATA" => R::RLIMIT_DATA,
        "RLIMIT_FSIZE" => R::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => R::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => R::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => R::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => R::RLIMIT_NICE,
        "RLIMIT_NOFILE" => R::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => R::RLIMIT_NPROC,
        "RLIMIT_RSS" => R::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => R::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => R::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => R::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => R::RLIMIT_STACK,
        other => return Err(LaunchError::InvalidPlan(format!("unknown rlimit {other:?}"))),
    })
}
