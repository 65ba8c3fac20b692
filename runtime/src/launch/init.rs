//! The init role: the container's first process, PID 1 of its new PID namespace. It builds the container's
//! view of the rootfs (`rootfs::setup` and `rootfs::devices`), pivots into it, sets the rest of what the plan asks
//! (sysctls, masked and read-only paths, hostname, the AppArmor profile for the exec, seccomp), becomes the container's process, reports Ready and
//! waits at the start gate, then execs the command.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MsFlags, mount};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;

use super::prepared::Prepared;
use super::process::{become_container_process, close_all_but, execvpe, set_apparmor_exec, set_stdio};
use super::protocol::{Pipes, Step, check, each, fail_at, send_ready};
use crate::rootfs::{devices, setup};
use crate::sys;

pub(super) fn run(p: &Prepared<'_>, pipes: Pipes<'_>) -> ! {
    let reports = pipes.reports;
    // Before seccomp, which a profile may make refuse rt_sigaction.
    sys::reset_signals();
    if p.cgroup_from_outside {
        wait_for_cgroup(p, pipes);
    }
    check(reports, Step::Stdio, set_stdio(p.stdio));
    if p.plan.terminal {
        // The pty slave on stdin becomes the controlling terminal of the container's own session.
        check(reports, Step::Stdio, nix::unistd::setsid().map(|_| ()));
        check(reports, Step::Stdio, sys::set_controlling_terminal(0));
    }
    let mut keep = vec![reports.as_raw_fd()];
    keep.extend(pipes.start.map(|s| s.as_raw_fd()));
    keep.extend(p.rootfs_tree.as_ref().map(|t| t.as_raw_fd()));
    close_all_but(&keep);
    let root = assemble_rootfs(p, pipes);
    check(reports, Step::PivotRoot, setup::pivot(&root));
    drop(root);
    finish_rootfs(p, pipes);
    if let Some(name) = &p.plan.hostname {
        check(reports, Step::Hostname, nix::unistd::sethostname(name));
    }
    if let Some(adj) = p.plan.oom_score_adj {
        set_oom_score_adj(adj);
    }
    // Before seccomp (whose filter could refuse the write) and no_new_privs, as runc orders them; it takes
    // effect only at the exec, so the setup below still runs unconfined.
    if let Some(label) = &p.apparmor_exec {
        check(reports, Step::AppArmor, set_apparmor_exec(label));
    }
    if let Some(program) = &p.plan.seccomp {
        check(reports, Step::Seccomp, sys::install_seccomp(program));
    }
    become_container_process(p, reports);
    send_ready(reports);
    let mut gate = [0u8; 1];
    match pipes.start.map(|start| nix::unistd::read(start, &mut gate)) {
        Some(Ok(1)) => {}
        // The gate was closed without opening: the container was removed before it started.
        _ => sys::exit_now(0),
    }
    execvpe(p, reports)
}

/// Under systemd init is moved into its scope from outside, after the fork: it waits for the word that the scope
/// holds it (a first byte at the start gate, `Gate::cgroup_joined`), so that nothing it does is accounted
/// elsewhere, then unshares its cgroup namespace, which is rooted where it is now: the container sees its own
/// scope as `/`, its limits in `/sys/fs/cgroup`.
fn wait_for_cgroup(p: &Prepared<'_>, pipes: Pipes<'_>) {
    let mut word = [0u8; 1];
    loop {
        match pipes.start.map(|start| nix::unistd::read(start, &mut word)) {
            Some(Ok(1)) => break,
            Some(Err(Errno::EINTR)) => continue,
            // The gate was closed without a word: the scope could not be made, and the caller says why.
            _ => sys::exit_now(0),
        }
    }
    if p.plan.new_namespaces.contains(CloneFlags::CLONE_NEWCGROUP) {
        check(pipes.reports, Step::Unshare, nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP));
    }
}

/// Attaches the rootfs in this (new) mount namespace and mounts the plan's mounts and devices in it; returns the
/// rootfs, opened, to pivot into.
fn assemble_rootfs(p: &Prepared<'_>, pipes: Pipes<'_>) -> OwnedFd {
    let (plan, reports) = (p.plan, pipes.reports);
    let none: Option<&str> = None;
    let shared = match setup::clone_shared_binds(plan) {
        Ok(trees) => trees,
        Err((i, e)) => fail_at(reports, Step::Mount, e, i),
    };
    // Slave, not private: unmounts on the host still reach the container, nothing of the container leaks out.
    // First: the rootfs attached below must not propagate back to the namespace this one was copied from.
    check(reports, Step::MakeRootPrivate, mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_SLAVE, none));
    let rootfs = p.rootfs.as_c_str();
    let attached = match &p.rootfs_tree {
        Some(tree) => sys::attach_tree(tree, rootfs),
        None => mount(Some(rootfs), rootfs, none, MsFlags::MS_BIND | MsFlags::MS_REC, none),
    };
    check(reports, Step::BindRootfs, attached);
    let flags = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let root = check(reports, Step::BindRootfs, nix::fcntl::open(rootfs, flags, Mode::empty()));
    let view = p.cgroup_view.as_deref();
    each(reports, Step::Mount, plan.mounts.len(), |i| {
        let tree = shared.get(i).and_then(Option::as_ref);
        setup::mount_one(&root, &plan.mounts[i], tree, view)
    });
    if plan.mounts.iter().any(|m| m.destination == "/dev" && m.fstype == "tmpfs") {
        check(reports, Step::CreateDevices, devices::create_devices(&root));
    }
    each(reports, Step::Device, plan.devices.len(), |i| devices::create_device(&root, &plan.devices[i]));
    root
}

/// After the pivot: the read-only root, sysctls (before /proc/sys turns read-only), masked and read-only paths.
fn finish_rootfs(p: &Prepared<'_>, pipes: Pipes<'_>) {
    let (plan, reports) = (p.plan, pipes.reports);
    if plan.readonly_rootfs {
        let none: Option<&str> = None;
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        check(reports, Step::ReadonlyRootfs, mount(none, "/", none, flags, none));
    }
    each(reports, Step::Sysctl, plan.sysctls.len(), |i| write_sysctl(&plan.sysctls[i].0, &plan.sysctls[i].1));
    each(reports, Step::MaskPath, plan.masked_paths.len(), |i| setup::mask(&plan.masked_paths[i]));
    each(reports, Step::ReadonlyPath, plan.readonly_paths.len(), |i| setup::make_readonly(&plan.readonly_paths[i]));
}

/// Only names that stay below /proc/sys reach it (`sysctl::path`); which ones a pod may set was checked before.
fn write_sysctl(key: &str, value: &str) -> nix::Result<()> {
    let path = crate::sysctl::path(key).ok_or(Errno::EINVAL)?;
    std::fs::write(&path, value).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32)))
}

/// Raising always works; lowering may be refused (no CAP_SYS_RESOURCE): the inherited value then stays.
fn set_oom_score_adj(adj: i32) {
    let _ = std::fs::write("/proc/self/oom_score_adj", adj.to_string());
}
