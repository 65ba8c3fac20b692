//! What makes a forked process the container's own, for init and for every exec alike: its stdio, limits,
//! groups, user, capabilities, working directory and no_new_privs, and the exec of its command. Runs in forked
//! children: failures are reported on the pipe (`protocol::fail`), never returned.

use std::ffi::{CStr, CString};
use std::os::fd::{BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

use super::Stdio;
use super::prepared::{Caps, Prepared};
use super::protocol::{Step, check, fail, send_failed};
use crate::sys;

/// Puts the container's streams on 0, 1 and 2. dup2 clears close-on-exec on the copies, and the originals are
/// close-on-exec, so the command sees exactly these three.
pub(super) fn set_stdio(stdio: Stdio) -> nix::Result<()> {
    if stdio.stdin != 0 {
        nix::unistd::dup2_stdin(inherited(stdio.stdin))?;
    }
    if stdio.stdout != 1 {
        nix::unistd::dup2_stdout(inherited(stdio.stdout))?;
    }
    if stdio.stderr != 2 {
        nix::unistd::dup2_stderr(inherited(stdio.stderr))?;
    }
    Ok(())
}

/// One of the container's stdio descriptors (`Stdio`), which this forked child holds as its parent did.
#[allow(unsafe_code)]
fn inherited(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: `Stdio` names descriptors the caller keeps open until the launch returns (the monitor closes its
    // copies only then), and this child holds its own copies from the fork until it execs or exits; the borrow
    // lives only for the dup2 that follows.
    unsafe { sys::borrow(fd) }
}

/// Closes every descriptor of this forked child but `keep`, so the container inherits nothing its parent held.
#[allow(unsafe_code)]
pub(super) fn close_all_but(keep: &[RawFd]) {
    // SAFETY: only the launch's forked roles call this, and each ends in exec or `exit_now` without dropping
    // anything its parent owned: no owner closes, and nothing uses, a descriptor closed here.
    unsafe { sys::close_fds_except(keep) }
}

/// Limits, groups, user, capabilities, working directory and no_new_privs: what makes a process the container's
/// own, for init and for every exec into the container alike.
pub(super) fn become_container_process(p: &Prepared<'_>, reports: BorrowedFd<'_>) {
    let plan = p.plan;
    for (resource, soft, hard) in &p.rlimits {
        set_rlimit(*resource, *soft, *hard);
    }
    if let Some(c) = &p.caps {
        shrink_bounding_set(c, reports);
    }
    let groups: Vec<Gid> = plan.additional_gids.iter().map(|g| Gid::from_raw(*g)).collect();
    check(reports, Step::Setgroups, nix::unistd::setgroups(&groups));
    let (gid, uid) = (Gid::from_raw(plan.gid), Uid::from_raw(plan.uid));
    check(reports, Step::Setgid, nix::unistd::setresgid(gid, gid, gid));
    check(reports, Step::Setuid, nix::unistd::setresuid(uid, uid, uid));
    if let Some(c) = &p.caps {
        set_capabilities(c, reports);
    }
    // After dropping to the user, so that the user's own permissions decide, as in runc.
    check(reports, Step::Chdir, nix::unistd::chdir(plan.cwd.as_str()));
    if plan.no_new_privileges {
        check(reports, Step::NoNewPrivileges, nix::sys::prctl::set_no_new_privs());
    }
}

/// The bounding set can only shrink while we still hold CAP_SETPCAP, i.e. before leaving root.
fn shrink_bounding_set(c: &Caps, reports: BorrowedFd<'_>) {
    for cap in caps::all().difference(&c.bounding) {
        if let Err(e) = caps::drop(None, caps::CapSet::Bounding, *cap) {
            fail(reports, Step::Capabilities, caps_errno(&e));
        }
    }
    // Keep the permitted set across the switch to a non-root uid, which would otherwise clear it.
    check(reports, Step::Capabilities, nix::sys::prctl::set_keepcaps(true));
}

/// The effective, inheritable, permitted and ambient sets, once the process has its user.
fn set_capabilities(c: &Caps, reports: BorrowedFd<'_>) {
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

/// Names the AppArmor profile (`label`: `exec <profile>`) the next execve enters. The file must be procfs's: a
/// container allowed to mount could have put a file of its own over /proc, and the write would then confine
/// nothing (runc's CVE-2019-16884).
pub(super) fn set_apparmor_exec(label: &[u8]) -> nix::Result<()> {
    let flags = OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
    let fd = match nix::fcntl::open(c"/proc/thread-self/attr/apparmor/exec", flags, Mode::empty()) {
        // Kernels before 5.8 have only the attribute every LSM shares.
        Err(Errno::ENOENT) => nix::fcntl::open(c"/proc/self/attr/exec", flags, Mode::empty())?,
        other => other?,
    };
    if nix::sys::statfs::fstatfs(&fd)?.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(Errno::EXDEV);
    }
    super::protocol::write_all(&fd, label)
}

/// execvpe against the container's PATH (from its environment), inside its filesystem.
pub(super) fn execvpe(p: &Prepared<'_>, reports: BorrowedFd<'_>) -> ! {
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
