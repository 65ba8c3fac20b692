//! The intermediate role: joins the container's cgroup and the pod's namespaces, unshares the new ones and forks
//! the process that runs in them (init, PID 1 of a new PID namespace, which only applies to children; or an
//! exec's process, as a sibling so that the caller is its parent), reports that pid and exits.
//!
//! `enter` and `fork_init` also run in the monitor's build child, in the intermediate's place (`Forker::Caller`).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, Gid, Pid, Uid};

use super::prepared::Prepared;
use super::process::close_all_but;
use super::protocol::{Pipes, Step, fail, send_pid};
use crate::sys;

/// Forks the intermediate, which runs `run` and never returns here; returns its pid.
#[allow(unsafe_code)]
pub(super) fn fork(p: &Prepared<'_>, pipes: Pipes<'_>, pid_out: BorrowedFd<'_>) -> Result<Pid, Errno> {
    // SAFETY: the child runs only `run`, which ends in `exit_now` (or in its own child's exec). Its callers are
    // the monitor's build child (single-threaded) and reefd, whose glibc malloc stays usable after fork.
    match unsafe { sys::fork() }? {
        ForkResult::Child => run(p, pipes, pid_out),
        ForkResult::Parent { child } => Ok(child),
    }
}

fn run(p: &Prepared<'_>, pipes: Pipes<'_>, pid_out: BorrowedFd<'_>) -> ! {
    let mut keep = vec![pipes.reports.as_raw_fd(), pid_out.as_raw_fd(), p.stdio.stdin, p.stdio.stdout, p.stdio.stderr];
    keep.extend(pipes.start.map(|s| s.as_raw_fd()));
    keep.extend(p.join.iter().map(|(_, fd)| fd.as_raw_fd()));
    keep.extend(p.cgroup.iter().map(|fd| fd.as_raw_fd()));
    keep.extend(p.mounts_from.map(|fd| fd.as_raw_fd()));
    keep.extend(p.rootfs_tree.as_ref().map(|t| t.as_raw_fd()));
    close_all_but(&keep);
    if let Err((step, e)) = enter(p) {
        fail(pipes.reports, step, e)
    }
    let forked = if p.exec { fork_exec(p, pipes) } else { fork_init(p, pipes) };
    match forked {
        Ok(child) => {
            // No lowering to the idle class here, unlike the build child: the caller waits for this exit
            // (waitpid), and an idle-class process on a busy core may wait long for its turn.
            send_pid(pid_out, child);
            sys::exit_now(0)
        }
        Err(e) => fail(pipes.reports, Step::ForkInit, e),
    }
}

/// What the process that forks init does first: into the container's cgroup, into the pod's namespaces, the new
/// ones unshared (a new PID namespace takes effect for init, its next child). The intermediate does it, or the
/// monitor's build child in its place (`Forker::Caller`), which exits once init is ready.
pub(super) fn enter(p: &Prepared<'_>) -> Result<(), (Step, Errno)> {
    // First, so the cgroup namespace unshared below is rooted at the container's own cgroup.
    for fd in &p.cgroup {
        nix::unistd::write(fd, b"0").map_err(|e| (Step::JoinCgroup, e))?;
    }
    // Before the pod's user namespace, while still host root: the node's namespace belongs to the host's.
    if let Some(ns) = p.mounts_from {
        nix::sched::setns(ns, CloneFlags::CLONE_NEWNS).map_err(|e| (Step::JoinNamespace, e))?;
    }
    for (flag, fd) in &p.join {
        nix::sched::setns(fd.as_fd(), *flag).map_err(|e| (Step::JoinNamespace, e))?;
    }
    if p.join.iter().any(|(flag, _)| *flag == CloneFlags::CLONE_NEWUSER) {
        // Host root is unmapped in the pod's user namespace: anything it created (devpts's ptmx, a copy-up)
        // would fail with EOVERFLOW. The namespace's own root it becomes instead, capabilities kept.
        let (gid, uid) = (Gid::from_raw(0), Uid::from_raw(0));
        nix::unistd::setresgid(gid, gid, gid).map_err(|e| (Step::Setgid, e))?;
        nix::unistd::setresuid(uid, uid, uid).map_err(|e| (Step::Setuid, e))?;
    }
    let mut new = p.plan.new_namespaces;
    if p.cgroup_from_outside {
        // Init unshares it once its scope holds it (`init::wait_for_cgroup`).
        new.remove(CloneFlags::CLONE_NEWCGROUP);
    }
    nix::sched::unshare(new).map_err(|e| (Step::Unshare, e))
}

/// Forks the container's init from a process that has `enter`ed; returns its pid.
#[allow(unsafe_code)]
pub(super) fn fork_init(p: &Prepared<'_>, pipes: Pipes<'_>) -> Result<Pid, Errno> {
    // SAFETY: the caller is single-threaded (an intermediate, or the monitor's build child) and the child runs
    // only `init::run`, which ends in exec or `exit_now`.
    match unsafe { sys::fork() }? {
        ForkResult::Child => super::init::run(p, pipes),
        ForkResult::Parent { child } => Ok(child),
    }
}

/// Forks an exec's process as a sibling of this intermediate: the caller, its parent, waits for it.
#[allow(unsafe_code)]
fn fork_exec(p: &Prepared<'_>, pipes: Pipes<'_>) -> Result<Pid, Errno> {
    // SAFETY: the intermediate is single-threaded, and the child runs only `exec::run`, which ends in exec or
    // `exit_now`.
    match unsafe { sys::fork_sibling() }? {
        None => super::exec::run(p, pipes.reports),
        Some(child) => Ok(child),
    }
}
