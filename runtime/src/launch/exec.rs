//! The exec role: a command run in a running container (`spawn_exec`). The intermediate has joined all of the
//! container's namespaces and its cgroup; this process, a sibling of the caller, who waits for it, leads its own
//! process group so that a timeout can kill everything it started.

use std::os::fd::{AsRawFd, BorrowedFd};

use super::prepared::Prepared;
use super::process::{become_container_process, close_all_but, execvpe, set_apparmor_exec, set_stdio};
use super::protocol::{Step, check};
use crate::sys;

pub(super) fn run(p: &Prepared<'_>, reports: BorrowedFd<'_>) -> ! {
    // Before seccomp, which a profile may make refuse rt_sigaction.
    sys::reset_signals();
    check(reports, Step::Stdio, set_stdio(p.stdio));
    close_all_but(&[reports.as_raw_fd()]);
    let _ = nix::unistd::setsid();
    if p.plan.terminal {
        // A new session has no controlling terminal; the pty slave on stdin becomes this session's.
        check(reports, Step::Stdio, sys::set_controlling_terminal(0));
    }
    // The container's profile for every process in it, as runc gives an exec its container's.
    if let Some(label) = &p.apparmor_exec {
        check(reports, Step::AppArmor, set_apparmor_exec(label));
    }
    if let Some(program) = &p.plan.seccomp {
        check(reports, Step::Seccomp, sys::install_seccomp(program));
    }
    become_container_process(p, reports);
    execvpe(p, reports)
}
