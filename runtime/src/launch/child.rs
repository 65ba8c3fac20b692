//! What runs in the forked children. Each function ends in exec or exit: errors go to the caller as a report,
//! never as a return value, since there is nobody to return to.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{ForkResult, Gid, Uid};

use super::protocol::{LaunchError, Step, send_failed, send_failed_at, send_pid, send_ready};
use super::{LaunchPlan, Stdio};
use crate::cgroups::ViewEntry;
use crate::mounts::MountPlan;
use crate::sys;

/// The plan with everything a child would otherwise allocate or open computed in the caller.
/// Capability sets parsed in the caller, so a bad name fails the launch before any fork.
struct Caps {
    bounding: caps::CapsHashSet,
    effective: caps::CapsHashSet,
    permitted: caps::CapsHashSet,
    inheritable: caps::CapsHashSet,
    ambient: caps::CapsHashSet,
}

fn parse_caps(sets: &super::CapabilitySets) -> Result<Caps, LaunchError> {
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

pub struct Prepared<'a> {
    /// An exec into a running container rather than a new container.
    pub exec: bool,
    rlimits: Vec<(nix::sys::resource::Resource, u64, u64)>,
    caps: Option<Caps>,
    plan: &'a LaunchPlan,
    join: Vec<(CloneFlags, OwnedFd)>,
    rootfs: CString,
    args: Vec<CString>,
    env: Vec<CString>,
    stdio: Stdio,
    /// Written `0` by the intermediate, which moves it into the container's cgroup (see `cgroups::CgroupJoin`).
    pub cgroup: Vec<i32>,
    /// On a v1 host, what the container's `/sys/fs/cgroup` holds (see `mount_cgroup_v1_view`); None elsewhere.
    cgroup_view: Option<Vec<(CString, CgroupEntry)>>,
    /// The mount namespace the container's is copied from, when not the caller's (`launch::copy_mounts_from`);
    /// the rootfs then comes along as a detached tree, attached at `rootfs` in the copy.
    mounts_from: Option<i32>,
    rootfs_tree: Option<OwnedFd>,
}

/// An entry of the container's v1 `/sys/fs/cgroup` (`cgroups::Hierarchies::v1_view`), ready for the child.
enum CgroupEntry {
    Symlink(CString),
    Bind(CString),
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

impl<'a> Prepared<'a> {
    pub fn new(plan: &'a LaunchPlan, stdio: Stdio) -> Result<Prepared<'a>, LaunchError> {
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
        if plan.args.is_empty() {
            return Err(LaunchError::InvalidPlan("no command to run".into()));
        }
        let rootfs = CString::new(plan.rootfs.as_os_str().as_encoded_bytes())
            .map_err(|_| LaunchError::InvalidPlan("rootfs path has a NUL byte".into()))?;
        let caps = plan.capabilities.as_ref().map(parse_caps).transpose()?;
        let (mounts_from, rootfs_tree) = match super::COPY_MOUNTS_FROM.get() {
            Some(ns) if plan.new_namespaces.contains(CloneFlags::CLONE_NEWNS) => match sys::clone_tree(&rootfs) {
                Ok(tree) => (Some(ns.as_raw_fd()), Some(tree)),
                // No open_tree (before 5.2), or no rootfs (which the launch then reports): the copy is made of
                // the caller's namespace, as without `copy_mounts_from`.
                Err(_) => (None, None),
            },
            _ => (None, None),
        };
        let rlimits = plan
            .rlimits
            .iter()
            .map(|(name, soft, hard)| resource_of(name).map(|r| (r, *soft, *hard)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Prepared {
            exec: false,
            rlimits,
            caps,
            plan,
            join,
            rootfs,
            args: cstrings("args", &plan.args)?,
            env: cstrings("env", &plan.env)?,
            stdio,
            cgroup: Vec::new(),
            cgroup_view: cgroup_view(plan),
            mounts_from,
            rootfs_tree,
        })
    }
}

fn fail(reports: i32, step: Step, errno: Errno) -> ! {
    send_failed(reports, step, errno);
    sys::exit_now(1)
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

/// Raising a hard limit needs CAP_SYS_RESOURCE, which some hosts deny even to root: the limit is then clamped to
/// what the process may have, not a reason to fail the container.
fn set_rlimit(resource: nix::sys::resource::Resource, soft: u64, hard: u64) {
    if nix::sys::resource::setrlimit(resource, soft, hard).is_ok() {
        return;
    }
    if let Ok((_, current_hard)) = nix::sys::resource::getrlimit(resource) {
        let _ = nix::sys::resource::setrlimit(resource, soft.min(current_hard), hard.min(current_hard));
    }
}

/// caps reports errors as text; the errno is what crosses the pipe.
fn caps_errno(_e: &caps::errors::CapsError) -> Errno {
    let errno = Errno::last();
    if errno as i32 == 0 { Errno::EPERM } else { errno }
}

fn check<T>(reports: i32, step: Step, r: nix::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => fail(reports, step, e),
    }
}

pub fn intermediate(p: &Prepared<'_>, reports: i32, start: i32, pid_out: i32) -> ! {
    let mut keep = vec![reports, start, pid_out, p.stdio.stdin, p.stdio.stdout, p.stdio.stderr];
    keep.extend(p.join.iter().map(|(_, fd)| fd.as_raw_fd()));
    keep.extend(&p.cgroup);
    keep.extend(p.mounts_from);
    keep.extend(p.rootfs_tree.as_ref().map(|t| t.as_raw_fd()));
    sys::close_fds_except(&keep);
    if let Err((step, e)) = enter(p) {
        fail(reports, step, e)
    }
    if p.exec {
        match sys::fork_sibling() {
            Ok(None) => exec_child(p, reports),
            Ok(Some(child)) => {
                send_pid(pid_out, child);
                sys::exit_now(0)
            }
            Err(e) => fail(reports, Step::ForkInit, e),
        }
    }
    match fork_init(p, reports, start) {
        Ok(child) => {
            // No lowering to the idle class here, unlike the build child: the caller waits for this exit
            // (waitpid), and an idle-class process on a busy core may wait long for its turn.
            send_pid(pid_out, child);
            sys::exit_now(0)
        }
        Err(e) => fail(reports, Step::ForkInit, e),
    }
}

/// What the process that forks init does first: into the container's cgroup, into the pod's namespaces, the new
/// ones unshared (a new PID namespace takes effect for init, its next child). The intermediate does it, or the
/// monitor's build child in its place (`launch::fork_here`), which exits once init is ready.
pub fn enter(p: &Prepared<'_>) -> Result<(), (Step, Errno)> {
    // First, so the cgroup namespace unshared below is rooted at the container's own cgroup.
    for fd in &p.cgroup {
        nix::unistd::write(sys::borrow(*fd), b"0").map_err(|e| (Step::JoinCgroup, e))?;
    }
    // Before the pod's user namespace, while still host root: the node's namespace belongs to the host's.
    if let Some(ns) = p.mounts_from {
        nix::sched::setns(sys::borrow(ns), CloneFlags::CLONE_NEWNS).map_err(|e| (Step::JoinNamespace, e))?;
    }
    for (flag, fd) in &p.join {
        nix::sched::setns(fd, *flag).map_err(|e| (Step::JoinNamespace, e))?;
    }
    if p.join.iter().any(|(flag, _)| *flag == CloneFlags::CLONE_NEWUSER) {
        // Host root is unmapped in the pod's user namespace: anything it created (devpts's ptmx, a copy-up)
        // would fail with EOVERFLOW. The namespace's own root it becomes instead, capabilities kept.
        let (gid, uid) = (Gid::from_raw(0), Uid::from_raw(0));
        nix::unistd::setresgid(gid, gid, gid).map_err(|e| (Step::Setgid, e))?;
        nix::unistd::setresuid(uid, uid, uid).map_err(|e| (Step::Setuid, e))?;
    }
    nix::sched::unshare(p.plan.new_namespaces).map_err(|e| (Step::Unshare, e))
}

/// Forks the container's init from a process that has `enter`ed; returns its pid.
pub fn fork_init(p: &Prepared<'_>, reports: i32, start: i32) -> Result<nix::unistd::Pid, Errno> {
    match sys::fork()? {
        ForkResult::Child => init(p, reports, start),
        ForkResult::Parent { child } => Ok(child),
    }
}

fn init(p: &Prepared<'_>, reports: i32, start: i32) -> ! {
    let plan = p.plan;
    check(reports, Step::Stdio, set_stdio(p.stdio));
    if plan.terminal {
        // The pty slave on stdin becomes the controlling terminal of the container's own session.
        check(reports, Step::Stdio, nix::unistd::setsid().map(|_| ()));
        check(reports, Step::Stdio, sys::set_controlling_terminal(0));
    }
    let mut keep = vec![reports, start];
    keep.extend(p.rootfs_tree.as_ref().map(|t| t.as_raw_fd()));
    sys::close_fds_except(&keep);
    let none: Option<&str> = None;
    let shared = clone_shared_binds(plan, reports);
    // Slave, not private: unmounts on the host still reach the container, nothing of the container leaks out.
    // First: the rootfs attached below must not propagate back to the namespace this one was copied from.
    check(reports, Step::MakeRootPrivate, mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_SLAVE, none));
    let rootfs = p.rootfs.as_c_str();
    match &p.rootfs_tree {
        Some(tree) => check(reports, Step::BindRootfs, sys::attach_tree(tree, rootfs)),
        None => check(
            reports,
            Step::BindRootfs,
            mount(Some(rootfs), rootfs, none, MsFlags::MS_BIND | MsFlags::MS_REC, none),
        ),
    }
    let root = check(
        reports,
        Step::BindRootfs,
        nix::fcntl::open(p.rootfs.as_c_str(), OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()),
    );
    let mut dev_is_tmpfs = false;
    for (i, m) in plan.mounts.iter().enumerate() {
        let tree = shared.get(i).and_then(Option::as_ref);
        if let Err(e) = mount_one(&root, m, tree, p.cgroup_view.as_deref()) {
            send_failed_at(reports, Step::Mount, e, i as u32);
            sys::exit_now(1);
        }
        dev_is_tmpfs |= m.destination == "/dev" && m.fstype == "tmpfs";
    }
    if dev_is_tmpfs {
        check(reports, Step::CreateDevices, create_devices(&root));
    }
    for (i, d) in plan.devices.iter().enumerate() {
        if let Err(e) = create_device(&root, d) {
            send_failed_at(reports, Step::Device, e, i as u32);
            sys::exit_now(1);
        }
    }
    check(reports, Step::PivotRoot, pivot(&root));
    drop(root);
    if plan.readonly_rootfs {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        check(reports, Step::ReadonlyRootfs, mount(none, "/", none, flags, none));
    }
    for (i, (key, value)) in plan.sysctls.iter().enumerate() {
        if let Err(e) = write_sysctl(key, value) {
            send_failed_at(reports, Step::Sysctl, e, i as u32);
            sys::exit_now(1);
        }
    }
    for (i, path) in plan.masked_paths.iter().enumerate() {
        if let Err(e) = mask(path) {
            send_failed_at(reports, Step::MaskPath, e, i as u32);
            sys::exit_now(1);
        }
    }
    for (i, path) in plan.readonly_paths.iter().enumerate() {
        if let Err(e) = make_readonly(path) {
            send_failed_at(reports, Step::ReadonlyPath, e, i as u32);
            sys::exit_now(1);
        }
    }
    if let Some(name) = &plan.hostname {
        check(reports, Step::Hostname, nix::unistd::sethostname(name));
    }
    if let Some(adj) = plan.oom_score_adj {
        set_oom_score_adj(adj);
    }
    if let Some(program) = &plan.seccomp {
        check(reports, Step::Seccomp, sys::install_seccomp(program));
    }
    become_container_process(p, reports);
    send_ready(reports);
    let mut gate = [0u8; 1];
    match nix::unistd::read(sys::borrow(start), &mut gate) {
        Ok(1) => {}
        // The gate was closed without opening: the container was removed before it started.
        _ => sys::exit_now(0),
    }
    exec(p, reports)
}

/// The sources of the plan's bidirectional binds (`MountPlan::is_shared_bind`), cloned while this namespace's
/// mounts are still peers of those of the namespace it was copied from (the node's), by index in `plan.mounts`.
///
/// Why before `/` turns slave: a bind made afterwards copies a slave, and becomes a slave itself: the host's new
/// mounts under it reach the container, but the container's never reach the host, which the CRI's Bidirectional
/// asks for. A clone taken now joins the host mount's peer group, and stays in it once attached inside the
/// rootfs. (In a pod's user namespace the copy of the node's mounts is all slaves already, so such a bind only
/// receives; kubelet allows Bidirectional only to privileged containers, which such pods cannot have.)
fn clone_shared_binds(plan: &LaunchPlan, reports: i32) -> Vec<Option<OwnedFd>> {
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
            Err(e) => {
                send_failed_at(reports, Step::Mount, e, i as u32);
                sys::exit_now(1);
            }
        }
    }
    trees
}

/// Limits, groups, user, capabilities, working directory and no_new_privs: what makes a process the container's
/// own, for init and for every exec into the container alike.
fn become_container_process(p: &Prepared<'_>, reports: i32) {
    let plan = p.plan;
    for (resource, soft, hard) in &p.rlimits {
        set_rlimit(*resource, *soft, *hard);
    }
    // The bounding set can only shrink while we still hold CAP_SETPCAP, i.e. before leaving root.
    if let Some(c) = &p.caps {
        for cap in caps::all().difference(&c.bounding) {
            if let Err(e) = caps::drop(None, caps::CapSet::Bounding, *cap) {
                fail(reports, Step::Capabilities, caps_errno(&e));
            }
        }
        // Keep the permitted set across the switch to a non-root uid, which would otherwise clear it.
        check(reports, Step::Capabilities, nix::sys::prctl::set_keepcaps(true));
    }
    let groups: Vec<Gid> = plan.additional_gids.iter().map(|g| Gid::from_raw(*g)).collect();
    check(reports, Step::Setgroups, nix::unistd::setgroups(&groups));
    let (gid, uid) = (Gid::from_raw(plan.gid), Uid::from_raw(plan.uid));
    check(reports, Step::Setgid, nix::unistd::setresgid(gid, gid, gid));
    check(reports, Step::Setuid, nix::unistd::setresuid(uid, uid, uid));
    if let Some(c) = &p.caps {
        // Effective first: each capset must keep effective within permitted, and root starts with all of both.
        let steps = [
            (caps::CapSet::Effective, &c.effective),
            (caps::CapSet::Inheritable, &c.inheritable),
            (caps::CapSet::Permitted, &c.permitted),
        ];
        for (set, value) in steps {
            if let Err(e) = caps::set(None, set, value) {
                fail(reports, Step::Capabilities, caps_errno(&e));
            }
        }
        // Ambient capabilities must be permitted and inheritable; setting the others first makes that so.
        if let Err(e) = caps::set(None, caps::CapSet::Ambient, &c.ambient) {
            fail(reports, Step::Capabilities, caps_errno(&e));
        }
        check(reports, Step::Capabilities, nix::sys::prctl::set_keepcaps(false));
    }
    // After dropping to the user, so that the user's own permissions decide, as in runc.
    check(reports, Step::Chdir, nix::unistd::chdir(plan.cwd.as_str()));
    if plan.no_new_privileges {
        check(reports, Step::NoNewPrivileges, nix::sys::prctl::set_no_new_privs());
    }
}

/// An exec into a running container: the intermediate has joined all of the container's namespaces; this
/// process (a sibling of the caller, who waits for it) leads its own process group so a timeout can kill
/// everything it started.
fn exec_child(p: &Prepared<'_>, reports: i32) -> ! {
    check(reports, Step::Stdio, set_stdio(p.stdio));
    sys::close_fds_except(&[reports]);
    let _ = nix::unistd::setsid();
    if p.plan.terminal {
        // A new session has no controlling terminal; the pty slave on stdin becomes this session's.
        check(reports, Step::Stdio, sys::set_controlling_terminal(0));
    }
    if let Some(program) = &p.plan.seccomp {
        check(reports, Step::Seccomp, sys::install_seccomp(program));
    }
    become_container_process(p, reports);
    exec(p, reports)
}

/// Only names that stay below /proc/sys reach it (`sysctl::path`); which ones a pod may set was checked before.
fn write_sysctl(key: &str, value: &str) -> nix::Result<()> {
    let path = crate::sysctl::path(key).ok_or(Errno::EINVAL)?;
    std::fs::write(&path, value).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32)))
}

/// Puts the container's streams on 0, 1 and 2. dup2 clears close-on-exec on the copies, and the originals are
/// close-on-exec, so the command sees exactly these three.
fn set_stdio(stdio: Stdio) -> nix::Result<()> {
    if stdio.stdin != 0 {
        nix::unistd::dup2_stdin(sys::borrow(stdio.stdin))?;
    }
    if stdio.stdout != 1 {
        nix::unistd::dup2_stdout(sys::borrow(stdio.stdout))?;
    }
    if stdio.stderr != 2 {
        nix::unistd::dup2_stderr(sys::borrow(stdio.stderr))?;
    }
    Ok(())
}

/// Mounts one entry onto its destination resolved inside the root, so a symlink in the image cannot move a
/// mount (a host bind mount, say) outside the container's filesystem.
fn mount_one(
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

fn resolve_in_root(root: &OwnedFd, path: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new().flags(flags | OFlag::O_CLOEXEC).resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let rel = path.trim_start_matches('/');
    openat2(root, if rel.is_empty() { "." } else { rel }, how)
}

/// Opens (creating if missing, like `mkdir -p`) a mount destination inside the root, as an O_PATH fd.
fn ensure_target(root: &OwnedFd, destination: &str, file: bool) -> nix::Result<OwnedFd> {
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

fn create_devices(root: &OwnedFd) -> nix::Result<()> {
    let dev = resolve_in_root(root, "/dev", OFlag::O_DIRECTORY | OFlag::O_RDONLY)?;
    for (name, major, minor) in
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    {
        match nix::sys::stat::mknodat(
            &dev,
            name,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(major, minor),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            // In a user namespace mknod is refused: the host's node is bind-mounted instead, as runc and crun do.
            Err(Errno::EPERM) => {
                bind_host_device(&dev, name)?;
                continue;
            }
            Err(e) => return Err(e),
        }
        // mknod honours the umask; the nodes must be usable by any user.
        nix::sys::stat::fchmodat(
            &dev,
            name,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        match nix::unistd::symlinkat(target, &dev, name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Bind-mounts the host's `/dev/<name>` onto an empty file of that name in the container's /dev (`dev`).
fn bind_host_device(dev: &OwnedFd, name: &str) -> nix::Result<()> {
    match nix::fcntl::openat(
        dev,
        name,
        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o666),
    ) {
        Ok(fd) => drop(fd),
        Err(e) => return Err(e),
    }
    let target = format!("/proc/self/fd/{}/{name}", dev.as_raw_fd());
    let none: Option<&str> = None;
    mount(Some(format!("/dev/{name}").as_str()), target.as_str(), none, MsFlags::MS_BIND, none)
}

/// A device node the spec asks for, created below the root (its parents made as needed) with its owner and mode.
fn create_device(root: &OwnedFd, d: &super::DevicePlan) -> nix::Result<()> {
    let (parent, name) = match d.path.trim_end_matches('/').rsplit_once('/') {
        Some((parent, name)) if !name.is_empty() && name != ".." && name != "." => (parent, name),
        _ => return Err(Errno::EINVAL),
    };
    let dir = if parent.is_empty() {
        resolve_in_root(root, "/", OFlag::O_DIRECTORY | OFlag::O_PATH)?
    } else {
        drop(ensure_target(root, parent, false)?);
        resolve_in_root(root, parent, OFlag::O_DIRECTORY | OFlag::O_PATH)?
    };
    let kind = if d.kind == 'b' { SFlag::S_IFBLK } else { SFlag::S_IFCHR };
    let dev = nix::sys::stat::makedev(d.major as u64, d.minor as u64);
    match nix::sys::stat::mknodat(&dir, name, kind, Mode::from_bits_truncate(d.mode), dev) {
        // A standard node already there (kubelet may map /dev/null onto itself) is replaced by the asked one.
        Err(Errno::EEXIST) => {
            nix::unistd::unlinkat(&dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)?;
            nix::sys::stat::mknodat(&dir, name, kind, Mode::from_bits_truncate(d.mode), dev)?;
        }
        other => other?,
    }
    nix::sys::stat::fchmodat(
        &dir,
        name,
        Mode::from_bits_truncate(d.mode),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )?;
    nix::unistd::fchownat(
        &dir,
        name,
        Some(Uid::from_raw(d.uid)),
        Some(Gid::from_raw(d.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
}

/// Raising always works; lowering may be refused (no CAP_SYS_RESOURCE): the inherited value then stays.
fn set_oom_score_adj(adj: i32) {
    let _ = std::fs::write("/proc/self/oom_score_adj", adj.to_string());
}

/// pivot_root(".", ".") stacks the old root on the new one; detaching it leaves only the container's view.
fn pivot(root: &OwnedFd) -> nix::Result<()> {
    nix::unistd::fchdir(root)?;
    nix::unistd::pivot_root(".", ".")?;
    umount2(".", MntFlags::MNT_DETACH)?;
    nix::unistd::chdir("/")
}

fn mask(path: &str) -> nix::Result<()> {
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

fn make_readonly(path: &str) -> nix::Result<()> {
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

/// execvpe against the container's PATH (from its environment), inside its filesystem.
fn exec(p: &Prepared<'_>, reports: i32) -> ! {
    let (args, env) = (&p.args, &p.env);
    let program = &args[0];
    let candidates: Vec<CString> = if program.as_bytes().contains(&b'/') {
        vec![program.clone()]
    } else {
        let path = env
            .iter()
            .find_map(|e| e.to_bytes().strip_prefix(b"PATH="))
            .unwrap_or(b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        path.split(|&b| b == b':')
            .filter(|d| !d.is_empty())
            .filter_map(|d| CString::new([d, b"/", program.to_bytes()].concat()).ok())
            .collect()
    };
    let mut last = Errno::ENOENT;
    for candidate in &candidates {
        let Err(err) = nix::unistd::execve::<&CStr, &CStr>(
            candidate,
            &args.iter().map(|a| a.as_c_str()).collect::<Vec<_>>(),
            &env.iter().map(|a| a.as_c_str()).collect::<Vec<_>>(),
        );
        // ENOENT means "try the next directory"; anything else (EACCES, ENOEXEC) is the answer.
        last = err;
        if err != Errno::ENOENT {
            break;
        }
    }
    send_failed(reports, Step::Exec, last);
    // 127 is what shells return for a command that cannot be run.
    sys::exit_now(127)
}
