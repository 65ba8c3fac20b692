//! The init of a pod that shares one PID namespace among its containers (shareProcessNamespace).
//!
//! A PID namespace dies with its PID 1, and a pinned one whose init is gone refuses new processes, so pinning
//! alone (as for net, ipc and uts) cannot keep it: something must live in it as PID 1. That is this tiny init,
//! forked by the monitor (no exec, no image: a pause container without the container). It reaps the orphans the
//! kernel hands it and nothing else; the containers' main processes are still reaped by the monitor, their
//! subreaper one namespace up.
//!
//! It is confined before it waits, since every container of the pod sees it as PID 1: its root becomes an
//! empty directory (`/proc/1/root` shows nothing of the host), it drops every capability and makes itself
//! non-dumpable, so no container can ptrace it or open its files through /proc.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use crate::sys;

/// The pod's PID namespace, pinned at `ns_dir/pid`: its init's pid, in the monitor's namespace.
#[derive(Debug, Clone)]
pub struct PodPidNamespace {
    pub init: Pid,
}

/// Forks the pod's init into a new PID namespace and pins that namespace at `ns_dir/pid`. The caller (the
/// monitor, a child subreaper) inherits the init once the intermediate exits, and must reap it.
///
/// With `user` (the pod's user namespace, pinned), the PID namespace is made inside it, so that it owns it: a
/// container's init may mount a fresh /proc only when the user namespace it is root of owns its PID namespace,
/// and a PID namespace owned by the host's would make every container of such a pod fail at its /proc mount.
pub fn spawn(ns_dir: &Path, empty_root: &Path, user: Option<&Path>) -> Result<PodPidNamespace, Errno> {
    std::fs::create_dir_all(ns_dir).map_err(|e| crate::error::io_errno(&e))?;
    std::fs::create_dir_all(empty_root).map_err(|e| crate::error::io_errno(&e))?;
    let user = user.map(|p| nix::fcntl::open(p, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())).transpose()?;
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()).ok();
    let (pid_r, pid_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let intermediate = fork_intermediate(empty_root, user.as_ref(), null, &pid_w)?;
    drop(pid_w);
    drop(user);
    let mut buf = [0u8; 4];
    let read = nix::unistd::read(&pid_r, &mut buf);
    let _ = waitpid(intermediate, None);
    let init = match read {
        Ok(4) => Pid::from_raw(i32::from_ne_bytes(buf)),
        _ => return Err(Errno::ECHILD),
    };
    let pin = ns_dir.join("pid");
    let pinned = std::fs::File::create(&pin).map_err(|e| crate::error::io_errno(&e)).and_then(|_| {
        let source = format!("/proc/{init}/ns/pid");
        nix::mount::mount(Some(source.as_str()), &pin, None::<&str>, MsFlags::MS_BIND, None::<&str>)
    });
    if let Err(e) = pinned {
        let _ = nix::sys::signal::kill(init, Signal::SIGKILL);
        let _ = waitpid(init, None);
        let _ = std::fs::remove_file(&pin);
        return Err(e);
    }
    Ok(PodPidNamespace { init })
}

/// Forks the intermediate, which runs `intermediate` and never returns here; returns its pid.
#[allow(unsafe_code)]
fn fork_intermediate(
    empty_root: &Path,
    user: Option<&OwnedFd>,
    null: Option<OwnedFd>,
    pid_w: &OwnedFd,
) -> nix::Result<Pid> {
    // SAFETY: the monitor is single-threaded, and the child runs only `intermediate`, which ends in `exit_now`.
    match unsafe { sys::fork() }? {
        ForkResult::Child => intermediate(empty_root, user, null, pid_w),
        ForkResult::Parent { child } => Ok(child),
    }
}

/// Confines itself, unshares the PID namespace (inside the pod's user namespace `user`, when it has one) and forks
/// its init, whose pid goes to `pid_w`.
fn intermediate(empty_root: &Path, user: Option<&OwnedFd>, null: Option<OwnedFd>, pid_w: &OwnedFd) -> ! {
    // Confined first, while still host root: inside the pod's user namespace the state directory's parents may
    // not be searchable (they are owned by the host's root, which is unmapped there).
    let confined = nix::unistd::chroot(empty_root).and_then(|_| nix::unistd::chdir("/"));
    if confined.is_err() || user.is_some_and(|u| become_its_root(u).is_err()) {
        sys::exit_now(1);
    }
    if nix::sched::unshare(CloneFlags::CLONE_NEWPID).is_err() {
        sys::exit_now(1);
    }
    match fork_init(null) {
        Ok(child) => {
            let _ = nix::unistd::write(pid_w, &child.as_raw().to_ne_bytes());
            sys::exit_now(0)
        }
        Err(_) => sys::exit_now(1),
    }
}

/// Forks PID 1 of the new namespace, which runs `run_init` and never returns.
#[allow(unsafe_code)]
fn fork_init(null: Option<OwnedFd>) -> nix::Result<Pid> {
    // SAFETY: the intermediate is single-threaded, and the child runs only `run_init`, which never returns.
    match unsafe { sys::fork() }? {
        ForkResult::Child => run_init(null),
        ForkResult::Parent { child } => Ok(child),
    }
}

/// Joins the user namespace `user` and becomes its root (host root is unmapped there), as a container's
/// intermediate does.
fn become_its_root(user: &OwnedFd) -> nix::Result<()> {
    nix::sched::setns(user, CloneFlags::CLONE_NEWUSER)?;
    let (gid, uid) = (nix::unistd::Gid::from_raw(0), nix::unistd::Uid::from_raw(0));
    nix::unistd::setresgid(gid, gid, gid)?;
    nix::unistd::setresuid(uid, uid, uid)
}

/// PID 1 of the pod, already in its empty root: confine, then reap forever. Never returns; only SIGKILL from the
/// monitor ends it.
fn run_init(null: Option<OwnedFd>) -> ! {
    close_all_but(null.as_ref());
    if let Some(null) = &null {
        let _ = nix::unistd::dup2_stdin(null);
        let _ = nix::unistd::dup2_stdout(null);
        let _ = nix::unistd::dup2_stderr(null);
    }
    drop(null);
    let _ = nix::unistd::setsid();
    let _ = nix::sys::prctl::set_name(c"reef-pod-init");
    let confined = nix::sys::prctl::set_dumpable(false).and_then(|_| drop_all_capabilities());
    if confined.is_err() {
        sys::exit_now(1);
    }
    // SIGCHLD stays blocked and is taken with sigwait: no handler, nothing else can interrupt the loop.
    let mut mask = SigSet::all();
    mask.remove(Signal::SIGKILL);
    mask.remove(Signal::SIGSTOP);
    let _ = mask.thread_block();
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    loop {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = chld.wait();
    }
}

/// Closes every descriptor the init inherited from the monitor but `null`: containers see its /proc entries.
#[allow(unsafe_code)]
fn close_all_but(null: Option<&OwnedFd>) {
    let keep: Vec<i32> = null.iter().map(|n| n.as_raw_fd()).collect();
    // SAFETY: the init never returns and never drops what the monitor owned: no owner closes, and nothing uses,
    // a descriptor closed here.
    unsafe { sys::close_fds_except(&keep) }
}

fn drop_all_capabilities() -> nix::Result<()> {
    let fail = |_| Errno::EPERM;
    for cap in caps::all() {
        caps::drop(None, caps::CapSet::Bounding, cap).map_err(fail)?;
    }
    for set in [caps::CapSet::Effective, caps::CapSet::Permitted, caps::CapSet::Inheritable] {
        caps::clear(None, set).map_err(fail)?;
    }
    Ok(())
}
