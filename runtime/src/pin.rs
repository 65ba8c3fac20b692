//! A pod's namespaces without a pause process: a short-lived child unshares them, and each is pinned by
//! bind-mounting its nsfs file onto a file in the pod's state directory (CRI-O's pinns idea). The namespaces
//! then live as long as the pins, whatever happens to processes, and containers join them by path.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags, mount};
use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};

use crate::sys;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("pin namespaces: {step}")]
    Sys {
        step: &'static str,
        #[source]
        errno: nix::errno::Errno,
    },
    #[error("pin namespaces: the helper process failed at {0}")]
    Helper(&'static str),
    #[error("pin namespaces: write the user namespace's id maps")]
    IdMaps(#[source] std::io::Error),
}

/// Which namespaces the pod gets of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNamespaceSet {
    pub network: bool,
    pub ipc: bool,
    pub uts: bool,
    /// A user namespace with these maps (validated by the caller), made first so that the others are owned by it.
    pub user: Option<crate::userns::IdMappings>,
}

/// Pinned namespace files, by kind; `None` where the pod uses the host's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pinned {
    pub network: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub user: Option<PathBuf>,
}

fn sys_err(step: &'static str) -> impl Fn(nix::errno::Errno) -> PinError {
    move |errno| PinError::Sys { step, errno }
}

const KINDS: [(&str, CloneFlags); 4] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("net", CloneFlags::CLONE_NEWNET),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
];

/// Creates the pod's namespaces and pins them under `dir` (`dir/net`, `dir/ipc`, `dir/uts`). The new UTS namespace
/// gets `hostname`; the new network namespace has `lo` up. With a user namespace (`dir/user`), the helper
/// unshares it alone first, waits for this process to write its maps, then unshares the others inside it, so
/// they are owned by it and the pod's root can administer them. On failure nothing stays pinned.
pub fn pin(dir: &Path, set: &PodNamespaceSet, hostname: &str) -> Result<Pinned, PinError> {
    let wanted: Vec<(&str, CloneFlags)> = KINDS
        .into_iter()
        .filter(|(name, _)| match *name {
            "user" => set.user.is_some(),
            "net" => set.network,
            "ipc" => set.ipc,
            _ => set.uts,
        })
        .collect();
    if wanted.is_empty() {
        return Ok(Pinned::default());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| PinError::Sys { step: "create dir", errno: crate::error::io_errno(&e) })?;
    let flags = wanted.iter().fold(CloneFlags::empty(), |acc, (_, f)| acc | *f) - CloneFlags::CLONE_NEWUSER;
    let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_err("pipe"))?;
    let (hold_r, hold_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys_err("pipe"))?;
    let child = fork_helper(set, flags, hostname, &ready_w, &hold_r).map_err(sys_err("fork"))?;
    drop(ready_w);
    drop(hold_r);
    let mut code = [0u8; 1];
    let mut outcome = nix::unistd::read(&ready_r, &mut code);
    if let (Some(maps), Ok(1), 0) = (&set.user, &outcome, code[0]) {
        if let Err(e) = maps.write(child.as_raw()) {
            drop(hold_w);
            let _ = waitpid(child, None);
            unpin(dir);
            return Err(PinError::IdMaps(e));
        }
        let _ = nix::unistd::write(&hold_w, &[0]);
        outcome = nix::unistd::read(&ready_r, &mut code);
    }
    let result = match (outcome, code[0]) {
        (Ok(1), 0) => pin_files(dir, &wanted, child.as_raw()),
        (Ok(1), 1) => Err(PinError::Helper("unshare")),
        (Ok(1), 2) => Err(PinError::Helper("sethostname")),
        (Ok(1), 4) => Err(PinError::Helper("unshare user namespace")),
        (Ok(1), _) => Err(PinError::Helper("loopback up")),
        _ => Err(PinError::Helper("start")),
    };
    let _ = nix::unistd::write(&hold_w, &[0]);
    drop(hold_w);
    let _ = waitpid(child, None);
    if result.is_err() {
        unpin(dir);
    }
    result
}

/// Forks the helper, which runs `helper` and never returns here; returns its pid.
#[allow(unsafe_code)]
fn fork_helper(
    set: &PodNamespaceSet,
    flags: CloneFlags,
    hostname: &str,
    ready_w: &OwnedFd,
    hold_r: &OwnedFd,
) -> nix::Result<Pid> {
    // SAFETY: reefd forks this from one of its threads: the child only makes syscalls and allocates through
    // glibc's malloc, which its fork handlers leave usable, and it ends in `exit_now`.
    match unsafe { sys::fork() }? {
        ForkResult::Child => helper(set, flags, hostname, ready_w, hold_r),
        ForkResult::Parent { child } => Ok(child),
    }
}

/// The helper: unshares the pod's namespaces (the user namespace first, alone, and waits for its maps), reports
/// on `ready_w` (one byte per outcome: 0 ready, else the failed step's number), and holds the namespaces until
/// the parent has pinned them (a byte, or the end of `hold_r`).
fn helper(set: &PodNamespaceSet, flags: CloneFlags, hostname: &str, ready_w: &OwnedFd, hold_r: &OwnedFd) -> ! {
    close_all_but(&[ready_w.as_raw_fd(), hold_r.as_raw_fd()]);
    let report = |code: u8| {
        let _ = nix::unistd::write(ready_w, &[code]);
    };
    let fail = |code: u8| -> ! {
        report(code);
        sys::exit_now(1)
    };
    if set.user.is_some() {
        if nix::sched::unshare(CloneFlags::CLONE_NEWUSER).is_err() {
            fail(4);
        }
        report(0);
        // The parent writes the maps, then says go on (a closed pipe means it gave up).
        let mut b = [0u8; 1];
        if !matches!(nix::unistd::read(hold_r, &mut b), Ok(1)) {
            sys::exit_now(1);
        }
    }
    if nix::sched::unshare(flags).is_err() {
        fail(1);
    }
    if set.uts && nix::unistd::sethostname(hostname).is_err() {
        fail(2);
    }
    if set.network && sys::loopback_up().is_err() {
        fail(3);
    }
    report(0);
    // Stay until the parent has pinned everything (it writes a byte, or closes the hold pipe).
    let mut b = [0u8; 1];
    let _ = nix::unistd::read(hold_r, &mut b);
    sys::exit_now(0)
}

/// In the helper: reefd pins pods on several threads at once, and a helper that kept another pod's hold pipe open
/// (fds are inherited at fork whatever O_CLOEXEC says) would keep that helper from seeing EOF; two helpers holding
/// each other's pipes would wait forever. The socket lock goes too: a killed reefd's successor must not find it
/// held by an orphaned helper.
#[allow(unsafe_code)]
fn close_all_but(keep: &[i32]) {
    // SAFETY: the helper ends in `exit_now` without dropping anything its parent owned, so no owner closes, and
    // nothing uses, the descriptors closed here.
    unsafe { sys::close_fds_except(keep) }
}

/// Pins the helper's namespaces (`pid`) here, and the network one in the node's namespace too.
fn pin_files(dir: &Path, wanted: &[(&str, CloneFlags)], pid: i32) -> Result<Pinned, PinError> {
    let mut pinned = Pinned::default();
    for (name, _) in wanted {
        let target = dir.join(name);
        std::fs::File::create(&target)
            .map_err(|e| PinError::Sys { step: "create pin file", errno: crate::error::io_errno(&e) })?;
        let source = format!("/proc/{pid}/ns/{name}");
        bind(&source, &target).map_err(sys_err("bind-mount namespace"))?;
        // Where tools and CNI agents outside reefd open it by its path (`mount_ns`).
        if *name == "net" && crate::mount_ns::node().is_some() {
            let in_node = target.clone();
            crate::mount_ns::in_node(move || bind(&source, &in_node))
                .map_err(sys_err("bind-mount namespace in the node's mount namespace"))?;
        }
        match *name {
            "user" => pinned.user = Some(target),
            "net" => pinned.network = Some(target),
            "ipc" => pinned.ipc = Some(target),
            _ => pinned.uts = Some(target),
        }
    }
    Ok(pinned)
}

fn bind(source: &str, target: &Path) -> nix::Result<()> {
    mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
}

/// Releases the pins in `dir` (the namespaces die with their last user). Idempotent: pins already gone are fine.
pub fn unpin(dir: &Path) {
    // The pod's shared PID namespace, pinned by its monitor. A monitor that died (killed, OOM) left the pod's init
    // running with nobody to stop it: it goes here, and the kernel takes whatever else is in the namespace.
    kill_pid_namespace(&dir.join("pid"));
    release(dir, &["user", "net", "ipc", "uts", "pid"]);
}

/// SIGKILLs every process in the PID namespace pinned at `pin` (found by the namespace's inode under /proc).
fn kill_pid_namespace(pin: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(ns) = std::fs::metadata(pin) else { return };
    // An unmounted pin is an empty regular file on the state dir's filesystem, not a namespace.
    if ns.dev() == std::fs::metadata(pin.parent().unwrap_or(Path::new("/"))).map(|m| m.dev()).unwrap_or_default() {
        return;
    }
    let wanted = format!("pid:[{}]", ns.ino());
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if std::fs::read_link(entry.path().join("ns/pid")).is_ok_and(|l| l.as_os_str() == wanted.as_str()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Releases one pin (`net`, `ipc` or `uts`): StopPodSandbox lets the network go before the pod is removed.
pub fn unpin_one(dir: &Path, name: &str) {
    release(dir, &[name]);
}

fn release(dir: &Path, names: &[&str]) {
    let targets: Vec<PathBuf> = names.iter().map(|n| dir.join(n)).collect();
    // Until none is left: where the node's mounts are shared, its network pin also propagates into reefd's
    // namespace, stacked with reefd's own bind of the same file.
    let unmount = |targets: &[PathBuf]| {
        for target in targets {
            for _ in 0..4 {
                if nix::mount::umount2(target, MntFlags::MNT_DETACH).is_err() {
                    break;
                }
            }
        }
        Ok(())
    };
    // The node's first: the network pin is there, and so is every pin of a reefd that had no namespace of its
    // own.
    if crate::mount_ns::node().is_some() {
        let in_node = targets.clone();
        let _ = crate::mount_ns::in_node(move || unmount(&in_node));
    }
    let _ = unmount(&targets);
    for target in &targets {
        let _ = std::fs::remove_file(target);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    use super::*;

    #[test]
    fn a_pod_gets_pinned_namespaces_with_its_hostname_and_lo_up() {
        if std::env::var("REEF_E2E").as_deref() != Ok("1") || !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs REEF_E2E=1 and root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ns = dir.path().join("ns");
        let pinned = pin(&ns, &PodNamespaceSet { network: true, ipc: true, uts: true, user: None }, "pod-a").unwrap();
        struct Unpin<'a>(&'a Path);
        impl Drop for Unpin<'_> {
            fn drop(&mut self) {
                unpin(self.0);
            }
        }
        let _guard = Unpin(&ns);
        let net = pinned.network.clone().unwrap();
        assert_ne!(
            std::fs::metadata(&net).unwrap().ino(),
            std::fs::metadata("/proc/self/ns/net").unwrap().ino(),
            "a new network namespace"
        );
        let uts = Command::new("nsenter")
            .arg(format!("--uts={}", pinned.uts.clone().unwrap().display()))
            .arg("hostname")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&uts.stdout).trim(), "pod-a");
        let lo = Command::new("nsenter")
            .arg(format!("--net={}", net.display()))
            .args(["ip", "-o", "link", "show", "lo"])
            .output()
            .unwrap();
        let lo = String::from_utf8_lossy(&lo.stdout);
        assert!(lo.contains("LOOPBACK,UP"), "lo is up in the pod: {lo}");
        let host_links = Command::new("nsenter")
            .arg(format!("--net={}", net.display()))
            .args(["ip", "-o", "link"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&host_links.stdout).lines().count(),
            1,
            "only lo: the host's links are not there"
        );
        unpin(&ns);
        unpin(&ns);
        assert!(!net.exists());
        assert!(!std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(ns.to_str().unwrap()));
    }

    #[test]
    fn a_user_namespace_is_pinned_with_its_maps_and_owns_the_others_and_bad_maps_leave_nothing() {
        if std::env::var("REEF_E2E").as_deref() != Ok("1") || !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs REEF_E2E=1 and root");
            return;
        }
        use crate::userns::{IdMapping, IdMappings};
        let dir = tempfile::tempdir().unwrap();
        let ns = dir.path().join("ns");
        let base = 3_000_000 + std::process::id() % 1000 * 65536;
        let map = vec![IdMapping { container_id: 0, host_id: base, size: 65536 }];
        let set = PodNamespaceSet {
            network: true,
            ipc: true,
            uts: true,
            user: Some(IdMappings { uids: map.clone(), gids: map }),
        };
        let pinned = pin(&ns, &set, "userns-pod").unwrap();
        struct Unpin<'a>(&'a Path);
        impl Drop for Unpin<'_> {
            fn drop(&mut self) {
                unpin(self.0);
            }
        }
        let _guard = Unpin(&ns);
        let user = pinned.user.clone().unwrap();
        let maps = Command::new("nsenter")
            .arg(format!("--user={}", user.display()))
            .args(["cat", "/proc/self/uid_map"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&maps.stdout).split_whitespace().collect::<Vec<_>>(),
            ["0", &base.to_string(), "65536"]
        );
        // CAP_NET_ADMIN counts in the user namespace that owns the network namespace: the pod's root, inside the
        // pod's user namespace, can bring a link down only because that namespace owns the pod's network.
        let admin = Command::new("nsenter")
            .arg(format!("--user={}", user.display()))
            .arg(format!("--net={}", pinned.network.clone().unwrap().display()))
            .args(["ip", "link", "set", "lo", "down"])
            .status()
            .unwrap();
        assert!(admin.success(), "the pod's root administers the pod's network namespace");
        unpin(&ns);
        assert!(!user.exists());

        // Maps the kernel refuses (overlapping, which the caller's validation would have caught): nothing stays.
        let overlapping = vec![
            IdMapping { container_id: 0, host_id: base, size: 10 },
            IdMapping { container_id: 5, host_id: base + 100, size: 10 },
        ];
        let bad = PodNamespaceSet { user: Some(IdMappings { uids: overlapping.clone(), gids: overlapping }), ..set };
        assert!(matches!(pin(&ns, &bad, "x"), Err(PinError::IdMaps(_))));
        assert!(!std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(ns.to_str().unwrap()));
    }

    #[test]
    fn host_namespaces_pin_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(pin(&dir.path().join("ns"), &PodNamespaceSet::default(), "x").unwrap(), Pinned::default());
    }
}
