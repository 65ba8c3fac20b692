//! reefd's own mount namespace: where the pods' namespace pins and the containers' rootfs overlays are mounted,
//! instead of the node's mount namespace.
//!
//! Why: every new container's mount namespace starts as a copy of the one its builder is in, and the copy (then
//! its teardown at pivot_root) costs about 2 µs per mount (`bench/mntns-copy.sh`). Each pod adds four or five
//! mounts (its pins, its containers' rootfs), so with the node's table holding them, every Create paid for all
//! the pods already running: 1.7 ms more at 100 pods. Kept in a namespace of reefd's, they cost nothing there: a
//! container's builder copies the node's table, which holds only the node's own mounts and kubelet's volumes, as
//! it would under containerd. The node's table (what `mount` and systemd see) also stops growing with pods.
//!
//! The namespace is a slave of the node's (the node's new mounts still reach reefd; none of reefd's leave) and is
//! pinned by bind-mounting its nsfs file onto `<state_dir>/ns/mnt` in the node's namespace, so it outlives reefd:
//! a restarted reefd enters the same one and finds every pin and rootfs where it left them. Pod monitors, which
//! reefd starts, live in it too, and keep the node's namespace as a descriptor reefd hands them
//! (`launch::copy_mounts_from`).
//!
//! The network namespace pins stay in the node's namespace (`in_node`): tools and CNI agents outside reefd
//! open a pod's network namespace by the path the CNI plugins were given, as under containerd and CRI-O.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{OnceLock, mpsc};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::ForkResult;

use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum MountNsError {
    #[error("reefd's mount namespace {path}: {step}")]
    Sys {
        step: &'static str,
        path: std::path::PathBuf,
        #[source]
        errno: Errno,
    },
}

/// The pin, under the state dir (`ns/` as in a pod's directory).
pub const PIN: &str = "ns/mnt";

/// The node's mount namespace, once this process has left it for reefd's (`enter_own`).
static NODE: OnceLock<OwnedFd> = OnceLock::new();

/// Moves the calling process into reefd's mount namespace pinned at `pin`, or, if there is none (a first start,
/// or the first after a reboot) and `may_make()` says so, into a new one it pins there. Returns the node's mount
/// namespace, the one the caller was in, as a descriptor without close-on-exec, open for the life of the
/// process: the pod monitors reefd starts inherit it. `None`: no namespace was made, the caller stays in the
/// node's.
///
/// Must run before the process has a second thread: a mount namespace is entered per thread, and the kernel
/// refuses it to a thread that shares its filesystem context. On an error the caller is still in the node's
/// namespace (or back in it), and can run there as before.
pub fn enter_own(pin: &Path, may_make: impl FnOnce() -> bool) -> Result<Option<RawFd>, MountNsError> {
    let Some(node) = enter(pin, may_make)? else { return Ok(None) };
    let fd = node.as_raw_fd();
    let _ = NODE.set(node);
    Ok(Some(fd))
}

/// The node's mount namespace, when this process is in reefd's own, apart from it.
pub fn node() -> Option<std::os::fd::BorrowedFd<'static>> {
    NODE.get().map(|n| n.as_fd())
}

/// Takes back the pin of reefd's own namespace (`enter_own`), at a clean stop with no pod left: unpinned, the
/// namespace goes with this process, and the node's mount table no longer holds `<state>/ns` and `<state>/ns/mnt`
/// after reefd is gone. The next start makes a new one. Nothing to do for a process that did not enter its own.
pub fn release(pin: &Path) -> Result<(), MountNsError> {
    if node().is_none() {
        return Ok(());
    }
    let owned = pin.to_path_buf();
    in_node(move || {
        nix::mount::umount2(&owned, nix::mount::MntFlags::MNT_DETACH)?;
        // The pin's directory was bound onto itself to be private (`enter`): that bind goes too.
        if let Some(dir) = owned.parent() {
            nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH)?;
        }
        // The pin file itself, left plain by the unmount.
        let _ = std::fs::remove_file(&owned);
        Ok(())
    })
    .map_err(|errno| MountNsError::Sys { step: "release the pin", path: pin.to_path_buf(), errno })
}

type Job = Box<dyn FnOnce() -> nix::Result<()> + Send>;

/// The thread that runs `in_node`'s jobs, started at the first.
static NODE_THREAD: OnceLock<mpsc::Sender<(Job, mpsc::SyncSender<nix::Result<()>>)>> = OnceLock::new();

/// Runs `f` in the node's mount namespace: on a thread of this process that lives there, when this process is in
/// reefd's own (`enter_own`); else here. A thread rather than a forked child: a fork of reefd and its wait cost
/// 1-2 ms, on every StopPodSandbox and RemovePodSandbox.
pub fn in_node(f: impl FnOnce() -> nix::Result<()> + Send + 'static) -> nix::Result<()> {
    let Some(node) = node() else { return f() };
    let jobs = NODE_THREAD.get_or_init(|| {
        let (jobs, queue) = mpsc::channel::<(Job, mpsc::SyncSender<nix::Result<()>>)>();
        let spawned = std::thread::Builder::new().name("reefd-node-mnt".into()).spawn(move || {
            // Its own filesystem context first: the kernel lets a thread change mount namespace only alone in it.
            let entered = nix::sched::unshare(CloneFlags::CLONE_FS)
                .and_then(|()| nix::sched::setns(node, CloneFlags::CLONE_NEWNS));
            for (job, reply) in queue {
                let _ = reply.send(entered.and_then(|()| job()));
            }
        });
        // Without the thread the queue is dropped, and every job fails below.
        drop(spawned);
        jobs
    });
    let (reply, outcome) = mpsc::sync_channel(1);
    jobs.send((Box::new(f), reply)).map_err(|_| Errno::ESRCH)?;
    outcome.recv().unwrap_or(Err(Errno::ESRCH))
}

fn enter(pin: &Path, may_make: impl FnOnce() -> bool) -> Result<Option<OwnedFd>, MountNsError> {
    let err = |step: &'static str| move |errno: Errno| MountNsError::Sys { step, path: pin.to_path_buf(), errno };
    let node = nix::fcntl::open("/proc/self/ns/mnt", OFlag::O_RDONLY, Mode::empty()).map_err(err("open the node's"))?;
    if let Ok(own) = nix::fcntl::open(pin, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()) {
        match nix::sched::setns(&own, CloneFlags::CLONE_NEWNS) {
            Ok(()) => return Ok(Some(node)),
            // A plain file: a pin from before a reboot, or a first start that died before pinning.
            Err(Errno::EINVAL) => {}
            Err(e) => return Err(err("enter")(e)),
        }
    }
    if !may_make() {
        return Ok(None);
    }
    let none: Option<&str> = None;
    // The pin's directory, a private mount of its own: the kernel will not propagate a mount namespace file, so
    // on a node whose mounts are shared (systemd makes `/` shared) the pin would be refused. Taken back if what
    // follows fails, so that a reefd restarted in a loop does not stack them; only a crash in between leaves one.
    let dir = pin.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| err("create the pin's directory")(crate::error::io_errno(&e)))?;
    nix::mount::mount(Some(dir), dir, none, MsFlags::MS_BIND, none).map_err(err("bind the pin's directory"))?;
    let made = make_and_pin(&node, dir, pin);
    if let Err((step, e)) = made {
        // Unpinned, the namespace would die with this reefd and take every pod's pins with it: back to the node's.
        let _ = nix::sched::setns(node.as_fd(), CloneFlags::CLONE_NEWNS);
        let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
        return Err(err(step)(e));
    }
    Ok(Some(node))
}

/// The steps of `enter` after the pin's directory is bound: the namespace, made and pinned at `pin`.
fn make_and_pin(node: &OwnedFd, dir: &Path, pin: &Path) -> Result<(), (&'static str, Errno)> {
    let none: Option<&str> = None;
    let step = |step: &'static str| move |e: Errno| (step, e);
    nix::mount::mount(none, dir, none, MsFlags::MS_PRIVATE, none).map_err(step("make the pin's directory private"))?;
    // The pin's file, made in the node's namespace, where the pin will be.
    drop(
        nix::fcntl::open(pin, OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::from_bits_truncate(0o600))
            .map_err(step("create the pin file"))?,
    );
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(step("unshare"))?;
    nix::mount::mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_SLAVE, none).map_err(step("make / a slave"))?;
    pin_from(node, pin).map_err(step("pin"))
}

/// Bind-mounts the caller's mount namespace onto `pin`, from the node's namespace `node`: the pin must be in the
/// node's namespace, and a namespace cannot pin itself.
fn pin_from(node: &OwnedFd, pin: &Path) -> nix::Result<()> {
    let ours = format!("/proc/{}/ns/mnt", nix::unistd::getpid());
    let none: Option<&str> = None;
    in_namespace(node, || nix::mount::mount(Some(ours.as_str()), pin, none, MsFlags::MS_BIND, none))
}

/// Runs `f` in a child that enters the mount namespace `ns` first; its errno comes back as the exit code.
#[allow(unsafe_code)]
fn in_namespace(ns: &OwnedFd, f: impl FnOnce() -> nix::Result<()>) -> nix::Result<()> {
    // SAFETY: `f` (a mount of paths made before the fork) only makes syscalls, and allocates, if at all, through
    // glibc's malloc, which its fork handlers leave usable in the child of a threaded reefd; the child ends in
    // `exit_now`.
    match unsafe { sys::fork() }? {
        ForkResult::Child => {
            let done = nix::sched::setns(ns.as_fd(), CloneFlags::CLONE_NEWNS).and_then(|()| f());
            sys::exit_now(match done {
                Ok(()) => 0,
                Err(e) => e as i32,
            })
        }
        ForkResult::Parent { child } => match waitpid(child, None)? {
            WaitStatus::Exited(_, 0) => Ok(()),
            WaitStatus::Exited(_, code) => Err(Errno::from_raw(code)),
            _ => Err(Errno::ECHILD),
        },
    }
}
