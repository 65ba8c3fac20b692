//! Starting a container process natively: no runc, no helper binary.
//!
//! Roles (youki's three, for the same reason), one module each:
//! - the **caller** (this module; the pod monitor's build child) makes a `Gate` and forks the intermediate, or is
//!   the intermediate itself when it has nothing to do afterwards outside the container's namespaces
//!   (`Forker::Caller`); the monitor keeps the start gate and the error pipe;
//! - the **intermediate** (`intermediate`) joins the pod's namespaces by path, unshares the new ones and forks
//!   again, because a new PID namespace only applies to children: its child is PID 1 there. It reports that pid
//!   and exits, so the caller must be a child subreaper (`PR_SET_CHILD_SUBREAPER`) to inherit and reap the
//!   container;
//! - the **init** (`init`) sets up the root filesystem (`rootfs::setup`, `rootfs::devices`), pivots into it,
//!   drops to the container's user (`process`), reports Ready and blocks on the start gate until StartContainer,
//!   then execs the container's command. An **exec** (`exec`, from `spawn_exec`) is forked by an intermediate
//!   that joined a running container, and becomes the container's process the same way.
//!
//! Everything the children need is computed before forking (`LaunchPlan`, then `prepared`), so a failure in the
//! plan is an error in the caller, not in a half-made child. A child that fails writes a typed record (step and
//! errno) on a close-on-exec pipe (`protocol`); a successful exec closes the pipe, which the caller sees as
//! end-of-file.

mod exec;
mod init;
mod intermediate;
mod prepared;
mod process;
mod protocol;

use crate::sys;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::OnceLock;

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Pid, pipe2};

pub use protocol::{LaunchError, Step};

use prepared::Prepared;
use protocol::Pipes;

use crate::mounts::MountPlan;

/// What to run and how, resolved from an OCI spec before any process is forked. Plain data, so it can cross the
/// socket between reefd and the pod monitor.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LaunchPlan {
    /// The container's root filesystem, already assembled (for images, an overlay mounted by the caller).
    pub rootfs: PathBuf,
    pub readonly_rootfs: bool,
    /// Namespaces to create.
    #[serde(with = "crate::mounts::clone_flags")]
    pub new_namespaces: CloneFlags,
    /// Namespaces to join (pod namespaces pinned as files, another container's), in this order.
    #[serde(with = "crate::mounts::join_list")]
    pub join_namespaces: Vec<(CloneFlags, PathBuf)>,
    /// Mounts inside the container (the spec's, /proc and /dev included), in order.
    pub mounts: Vec<MountPlan>,
    pub masked_paths: Vec<String>,
    pub readonly_paths: Vec<String>,
    pub hostname: Option<String>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub no_new_privileges: bool,
    /// The capability sets (names like `CAP_CHOWN`); `None` keeps what the caller has, as root: all of them.
    pub capabilities: Option<CapabilitySets>,
    /// Resource limits as (name like `RLIMIT_NOFILE`, soft, hard).
    #[serde(default)]
    pub rlimits: Vec<(String, u64, u64)>,
    /// The container's cgroup and its limits; the monitor puts init in it before the start gate opens.
    #[serde(default)]
    pub cgroup: Option<CgroupPlan>,
    /// A seccomp BPF program (`sock_filter` entries), installed just before the process becomes the container's.
    #[serde(default)]
    pub seccomp: Option<Vec<u8>>,
    /// Device nodes to create in the container's /dev (the device cgroup rules come with the cgroup plan).
    #[serde(default)]
    pub devices: Vec<DevicePlan>,
    /// The OOM killer's bias for the container. Lowering it needs CAP_SYS_RESOURCE, which some hosts deny even
    /// to root: then the inherited value stays, rather than failing the container.
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    /// Namespaced kernel parameters (`net.ipv4.ip_unprivileged_port_start` = `0`), written from inside the
    /// container's namespaces before /proc/sys turns read-only.
    #[serde(default)]
    pub sysctls: Vec<(String, String)>,
    /// The process gets a terminal: its stdin is a pty slave, which becomes its controlling terminal in a session
    /// of its own.
    #[serde(default)]
    pub terminal: bool,
    /// The AppArmor profile the command runs under (`reef-default`, a Localhost profile's name); `None`:
    /// unconfined. Set for the next execve, after the setup that needs more than the profile allows.
    #[serde(default)]
    pub apparmor_profile: Option<String>,
}

/// The mount namespace every container's is copied from, when it is not the caller's own: the node's, for a pod
/// monitor in reefd's namespace (`mount_ns`), whose pins and rootfs mounts a container has no use for.
static COPY_MOUNTS_FROM: OnceLock<OwnedFd> = OnceLock::new();

/// Sets, once per process, the mount namespace (`ns`, an nsfs descriptor) containers' mount namespaces are
/// copied from. The rootfs, mounted in the caller's namespace, is carried over as a detached tree.
pub fn copy_mounts_from(ns: OwnedFd) {
    let _ = COPY_MOUNTS_FROM.set(ns);
}

/// As `copy_mounts_from`, with the namespace inherited as descriptor `fd` (from reefd, which starts the monitor).
pub fn copy_mounts_from_inherited(fd: RawFd) -> nix::Result<()> {
    copy_mounts_from(sys::take_inherited(fd)?);
    Ok(())
}

/// A device node inside the container, as the OCI spec's `linux.devices` describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DevicePlan {
    pub path: String,
    /// `c` (character) or `b` (block).
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CgroupPlan {
    /// Relative to the cgroup root of each hierarchy, e.g. `kubepods/besteffort/pod<uid>/reef-<id>`.
    pub path: String,
    /// Under the systemd driver, the transient scope systemd creates at `path` (`<slice>:reef:<id>`).
    #[serde(default)]
    pub systemd: Option<String>,
    pub resources: oci_spec::runtime::LinuxResources,
    /// Where the hierarchies are mounted, found once by reefd, so the monitor need not look (see
    /// `cgroups::Hierarchies`). Absent in plans of older reefds: the monitor then looks itself.
    #[serde(default)]
    pub hierarchies: Option<crate::cgroups::Hierarchies>,
}

/// The five capability sets of the container's process.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CapabilitySets {
    pub bounding: Vec<String>,
    pub effective: Vec<String>,
    pub permitted: Vec<String>,
    pub inheritable: Vec<String>,
    pub ambient: Vec<String>,
}

/// The capabilities a container can be given from here (the bounding set of this process, which the monitor
/// inherits): "all of them" for a privileged container means these, as containerd means its own current set.
pub fn available_capabilities() -> Vec<String> {
    let mut v: Vec<String> = caps::read(None, caps::CapSet::Bounding)
        .map(|set| set.into_iter().map(|c| c.to_string()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// A container process set up and waiting at the start gate.
pub struct Launched {
    pid: Pid,
    start: Option<OwnedFd>,
    reports: OwnedFd,
}

impl Launched {
    /// The container's init, as seen from the caller's PID namespace.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Opens the start gate. Returns once the command was exec'd, or with why it could not be.
    pub fn start(&mut self) -> Result<(), LaunchError> {
        let gate = self.start.take().ok_or(LaunchError::AlreadyStarted)?;
        protocol::write_all(&gate, &[1]).map_err(|e| LaunchError::Protocol { step: Step::WaitStart, errno: e })?;
        drop(gate);
        match protocol::read_report(&self.reports)? {
            None => Ok(()),
            Some(protocol::Report::Failed { step, errno, .. }) => Err(LaunchError::Child { step, detail: None, errno }),
            Some(protocol::Report::Ready) => Err(LaunchError::Unexpected("a second Ready")),
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        // Closing an unopened gate makes init exit instead of waiting forever: a created container that is
        // dropped without starting must not linger.
        self.start.take();
    }
}

/// The container's standard streams, as fds of the caller (dup'ed onto 0, 1 and 2 in the container).
#[derive(Debug, Clone, Copy)]
pub struct Stdio {
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
}

impl Stdio {
    /// The caller's own streams.
    pub fn inherit() -> Stdio {
        Stdio { stdin: 0, stdout: 1, stderr: 2 }
    }
}

/// The caller's ends of the pipes to a container's init: the start gate it opens, and the reports it reads (Ready,
/// a failure, or end-of-file once the command exec'd). Made before the container, with `InitEnds`, the other ends.
///
/// The gate is the one way to start a container: `Gate::new`, then `Gate::fork` with the init's ends, then
/// `Gate::wait_ready` and `Gate::launched`. The steps are apart so that a caller can hand the fork to a
/// short-lived child process and keep the gate: the pod monitor does, so the code that builds a container never
/// runs in the long-lived monitor and never stays resident there.
pub struct Gate {
    start: OwnedFd,
    reports: OwnedFd,
}

/// Init's ends of the same pipes, given up by whoever forks the container.
pub struct InitEnds {
    start: OwnedFd,
    reports: OwnedFd,
}

/// Which process forks init (see `Gate::fork`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forker {
    /// A fresh intermediate, forked by the caller, joins the cgroup and namespaces, unshares, forks init and
    /// exits; the caller stays where it was. The caller must be a child subreaper, or init will be reparented
    /// away from it, unless it exits once init is ready (the monitor's build child), leaving init to its own.
    Intermediate,
    /// The caller does the intermediate's work itself: one fork fewer on the way to a container, one address space
    /// fewer copied. For a process that only waits for init to be ready and exits (the monitor's build child):
    /// whatever it does after, it does inside the container's namespaces and cgroup.
    Caller,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), LaunchError> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| LaunchError::Protocol { step: Step::Pipe, errno: e })
}

impl Gate {
    pub fn new() -> Result<(Gate, InitEnds), LaunchError> {
        let (reports_rx, reports_tx) = pipe()?;
        let (start_rx, start_tx) = pipe()?;
        Ok((Gate { start: start_tx, reports: reports_rx }, InitEnds { start: start_rx, reports: reports_tx }))
    }

    /// Forks the container `plan` describes, with `init` as its ends of this gate, its first process writing
    /// itself into a cgroup through `cgroup` (from `cgroups::PendingCgroup::join_fds`) before it unshares
    /// anything. Returns its init's pid (in the caller's PID namespace) as soon as it is known, while init still
    /// sets itself up: what the caller does before `wait_ready` (the cgroup's limits, in the monitor's build child)
    /// overlaps with init's mounts, on another core.
    pub fn fork(
        &self,
        plan: &LaunchPlan,
        stdio: Stdio,
        cgroup: &[BorrowedFd<'_>],
        forker: Forker,
        init: InitEnds,
    ) -> Result<Pid, LaunchError> {
        let prepared = Prepared::new(plan, stdio, cgroup.to_vec(), false)?;
        if forker == Forker::Caller {
            return fork_here(&prepared, init);
        }
        match via_intermediate(&prepared, init.reports, Some(init.start))? {
            Some(pid) => Ok(pid),
            None => Err(match protocol::read_report(&self.reports)? {
                Some(protocol::Report::Failed { step, errno, index }) => child_error(plan, step, errno, index),
                _ => LaunchError::Unexpected("the intermediate process exited without a pid"),
            }),
        }
    }

    /// Returns once init (`pid`, forked by `fork` from `plan`) is ready at the gate, or says why it failed. A
    /// failed init is reaped by its subreaper: here when the caller is one, else by the monitor's reaper.
    pub fn wait_ready(&self, plan: &LaunchPlan, pid: Pid) -> Result<(), LaunchError> {
        match protocol::read_report(&self.reports)? {
            Some(protocol::Report::Ready) => Ok(()),
            Some(protocol::Report::Failed { step, errno, index }) => {
                let _ = waitpid(pid, None);
                Err(child_error(plan, step, errno, index))
            }
            None => {
                let _ = waitpid(pid, None);
                Err(LaunchError::Unexpected("init exited before it was ready"))
            }
        }
    }

    /// Tells init, forked by `fork` from a plan whose cgroup is put in from outside (under systemd, the scope
    /// made around its pid), that the cgroup now holds it. Init waits for this before anything else, then
    /// unshares its cgroup namespace: rooted at its own scope, not at whatever cgroup it was forked in.
    pub fn cgroup_joined(&self) -> Result<(), LaunchError> {
        protocol::write_all(&self.start, &[1]).map_err(|e| LaunchError::Protocol { step: Step::JoinCgroup, errno: e })
    }

    /// The container launched through this gate as `pid`, waiting for `Launched::start`.
    pub fn launched(self, pid: Pid) -> Launched {
        Launched { pid, start: Some(self.start), reports: self.reports }
    }
}

/// `Forker::Caller`: this process joins and unshares, then forks init.
fn fork_here(p: &Prepared<'_>, init: InitEnds) -> Result<Pid, LaunchError> {
    intermediate::enter(p).map_err(|(step, errno)| child_error(p.plan, step, errno, 0))?;
    let pipes = Pipes { reports: init.reports.as_fd(), start: Some(init.start.as_fd()) };
    let pid = intermediate::fork_init(p, pipes).map_err(|errno| LaunchError::Child {
        step: Step::ForkInit,
        detail: None,
        errno,
    })?;
    // Only init may hold its ends: the reports read end-of-file when it execs or dies.
    drop(init);
    Ok(pid)
}

/// Forks an intermediate that hands `reports` (and `start`) on to the process it forks, which alone keeps them.
/// Returns that process's pid as the intermediate reported it, once the intermediate is reaped; `None` when it
/// exited without one (why is on `reports`).
fn via_intermediate(p: &Prepared<'_>, reports: OwnedFd, start: Option<OwnedFd>) -> Result<Option<Pid>, LaunchError> {
    let (pid_rx, pid_tx) = pipe()?;
    let pipes = Pipes { reports: reports.as_fd(), start: start.as_ref().map(|s| s.as_fd()) };
    let intermediate = intermediate::fork(p, pipes, pid_tx.as_fd())
        .map_err(|errno| LaunchError::Protocol { step: Step::Fork, errno })?;
    // The reports read end-of-file when the forked process execs or dies, once these copies are gone.
    drop((reports, start, pid_tx));
    let pid = protocol::read_pid(&pid_rx);
    // The intermediate exits right after reporting; reap it so it leaves no zombie.
    let _ = waitpid(intermediate, None);
    Ok(pid.ok().flatten())
}

fn child_error(plan: &LaunchPlan, step: Step, errno: nix::errno::Errno, index: u32) -> LaunchError {
    let detail = match step {
        Step::Mount => plan.mounts.get(index as usize).map(|m| format!("{} on {}", m.fstype, m.destination)),
        Step::MaskPath => plan.masked_paths.get(index as usize).cloned(),
        Step::Sysctl => plan.sysctls.get(index as usize).map(|(k, v)| format!("{k}={v}")),
        Step::ReadonlyPath => plan.readonly_paths.get(index as usize).cloned(),
        Step::Device => plan.devices.get(index as usize).map(|d| d.path.clone()),
        Step::AppArmor => plan.apparmor_profile.as_ref().map(|p| format!("profile {p}")),
        _ => None,
    };
    LaunchError::Child { step, detail, errno }
}

/// Runs `plan.args` inside the running container whose init is `target` (as ExecSync and exec do): in all its
/// namespaces, as its user, with its capabilities, in a process group of its own. Returns the process's pid once
/// it exec'd; the caller is its parent and must reap it.
pub fn spawn_exec(plan: &LaunchPlan, target: Pid, stdio: Stdio) -> Result<Pid, LaunchError> {
    let joined = exec_plan(plan, target);
    let (reports_rx, reports_tx) = pipe()?;
    // Into the container's cgroup too, so its memory and pids count against the container, as under runc.
    let cgroup = plan
        .cgroup
        .as_ref()
        .map(|c| crate::cgroups::CgroupJoin::open(&c.path, crate::cgroups::hierarchy_of(c)))
        .transpose()?;
    let prepared = Prepared::new(&joined, stdio, cgroup.as_ref().map(|c| c.fds()).unwrap_or_default(), true)?;
    let pid = via_intermediate(&prepared, reports_tx, None)?;
    match protocol::read_report(&reports_rx)? {
        None => pid.ok_or(LaunchError::Unexpected("the exec's intermediate process exited without a pid")),
        Some(protocol::Report::Failed { step, errno, index }) => {
            if let Some(pid) = pid {
                let _ = waitpid(pid, None);
            }
            Err(child_error(&joined, step, errno, index))
        }
        Some(protocol::Report::Ready) => Err(LaunchError::Unexpected("an exec reported Ready")),
    }
}

/// `plan` for an exec into its running container (init `target`): all of the container's namespaces joined, none
/// made, nothing mounted.
fn exec_plan(plan: &LaunchPlan, target: Pid) -> LaunchPlan {
    let mut joined = plan.clone();
    joined.new_namespaces = CloneFlags::empty();
    joined.mounts.clear();
    // Mount last: the others are opened by path under /proc, which the mount namespace change would hide.
    // A container in the pod's user namespace: the exec joins it too (last, see `prepared::open_namespaces`).
    let user = plan.join_namespaces.iter().any(|(f, _)| *f == CloneFlags::CLONE_NEWUSER);
    joined.join_namespaces = ["ipc", "uts", "net", "pid", "cgroup", "mnt", "user"]
        .iter()
        .filter(|ns| user || **ns != "user")
        .map(|ns| {
            let flag = match *ns {
                "ipc" => CloneFlags::CLONE_NEWIPC,
                "uts" => CloneFlags::CLONE_NEWUTS,
                "net" => CloneFlags::CLONE_NEWNET,
                "pid" => CloneFlags::CLONE_NEWPID,
                "cgroup" => CloneFlags::CLONE_NEWCGROUP,
                "user" => CloneFlags::CLONE_NEWUSER,
                _ => CloneFlags::CLONE_NEWNS,
            };
            (flag, PathBuf::from(format!("/proc/{target}/ns/{ns}")))
        })
        .collect();
    joined
}

/// A pidfd for `pid` (a child of the caller): readable once the process exits, so an async caller can wait for it
/// without a thread, then reap it with `waitpid`.
pub fn pidfd(pid: Pid) -> nix::Result<OwnedFd> {
    sys::pidfd_open(pid)
}

/// Sets the size of the terminal whose master (or slave) is `fd`; the foreground process group gets SIGWINCH.
pub fn set_window_size(fd: std::os::fd::BorrowedFd<'_>, rows: u16, cols: u16) -> nix::Result<()> {
    sys::set_window_size(fd, rows, cols)
}

/// Exit of a container process, as the CRI needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The CRI's single exit code: a signal death is 128 + the signal, as shells report it.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

/// Waits for a container's init (the caller's job as its subreaper).
pub fn wait(pid: Pid) -> nix::Result<Exit> {
    loop {
        match waitpid(pid, None)? {
            WaitStatus::Exited(_, code) => return Ok(Exit::Code(code)),
            WaitStatus::Signaled(_, sig, _) => return Ok(Exit::Signal(sig as i32)),
            _ => continue,
        }
    }
}
