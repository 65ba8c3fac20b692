//! Building a container, in a short-lived child of the monitor.
//!
//! Why a child: the code that builds a container (decoding the plan's OCI types, cgroups-rs, systemd's D-Bus
//! client, the launch) is most of the monitor binary. Run in the monitor, its pages would stay mapped in every
//! pod's monitor for the pod's life, once per pod: the kernel maps a binary's text in 64 KiB runs around each
//! page first touched. Run in a forked child, they are mapped in the child only and go with it. The monitor keeps
//! what it needs later: the gate's ends, the container's stdio, the cgroup as plain data.
//!
//! Under cgroupfs (or without a cgroup) this child is also the launch's intermediate (`launch::fork_here`): it
//! makes the cgroup and sets its limits while still in the host's namespaces, joins the cgroup and the pod's
//! namespaces, unshares the new ones and forks init itself. A separate intermediate would cost one more fork, and
//! on a 2-core VM every fork of a process whose memory is live on the other core pays TLB-flush IPIs: measured,
//! that was most of the 2 ms this child first added to a Create. Under systemd, where the scope is made around
//! the pid over D-Bus, and for a pod with a user namespace (whose root has no rights over the host's cgroupfs), an
//! intermediate forks init and this child stays in the host's namespaces.
//!
//! Either way init is reparented to the monitor when this child exits (the monitor is the pod's child subreaper),
//! so the monitor is its parent and reaper as before. The child hands its result over as one line and then lets
//! the monitor run first (`sys::yield_to_waker`): the reply to reefd does not wait for the child's exit.

use std::io::{BufRead, Write};
use std::os::unix::net::UnixStream;

use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};
use serde::{Deserialize, Serialize};

use super::protocol::{ErrorKind, Request, Response};
use crate::cgroups::{CgroupError, ContainerCgroup, PendingCgroup};
use crate::launch::{Forker, Gate, InitEnds, LaunchError, LaunchPlan, Stdio};
use crate::sys;

/// A container built and waiting at its gate.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Made {
    pub pid: i32,
    /// PID 1 of a PID namespace of its own (its exit ends every process of the container).
    pub own_pid_namespace: bool,
    pub cgroup: Option<ContainerCgroup>,
}

/// Why the build child could not make the container, and the cgroup it made when it had joined it itself
/// (`from_here`): a process cannot remove the cgroup it is in, nor (on v2, whose hierarchy systemd mounts with
/// nsdelegate) move itself out of its own cgroup namespace's root. The monitor removes that one once the child
/// is gone.
#[derive(Debug, Serialize, Deserialize)]
struct Failed {
    response: Response,
    leftover: Option<ContainerCgroup>,
}

impl From<Response> for Failed {
    fn from(response: Response) -> Failed {
        Failed { response, leftover: None }
    }
}

/// Forks a child that builds the container the Create request `line` describes, through `gate`, and returns
/// what it made, or the response that says why it could not.
pub(super) fn in_child(line: &str, stdio: Stdio, gate: &Gate, init: InitEnds) -> Result<Made, Response> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| Response::Error {
        kind: ErrorKind::Io,
        errno: e.raw_os_error(),
        message: "socketpair".into(),
    })?;
    if let Err(e) = fork_builder(line, stdio, gate, init, &theirs) {
        return Err(Response::Error { kind: ErrorKind::Launch, errno: Some(e as i32), message: "fork".into() });
    }
    drop(theirs);
    // Up to the newline, not to end-of-file: the socket closes only once the child's exit has torn its memory
    // down, a third of a millisecond the reply need not wait for. The monitor's reaper collects the child.
    let mut out = Vec::new();
    let _ = std::io::BufReader::new(&ours).read_until(b'\n', &mut out);
    match serde_json::from_slice::<Result<Made, Failed>>(&out) {
        Ok(Ok(made)) => Ok(made),
        Ok(Err(Failed { response, leftover })) => {
            if let Some(cgroup) = leftover {
                remove_cgroups(&[(format!("a failed create ({})", cgroup.path()), cgroup)]);
            }
            Err(response)
        }
        Err(_) => Err(Response::error(ErrorKind::Launch, "the process building the container died")),
    }
}

/// Forks the build child, which runs `builder` and never returns here. `init` goes with it: its ends then live
/// in the child and the container only, so the gate's reports end when they are gone.
#[allow(unsafe_code)]
fn fork_builder(line: &str, stdio: Stdio, gate: &Gate, init: InitEnds, out: &UnixStream) -> nix::Result<()> {
    // SAFETY: the monitor is single-threaded, and the child runs only `builder`, which ends in `exit_now`.
    match unsafe { sys::fork() }? {
        ForkResult::Child => builder(line, stdio, gate, init, out),
        ForkResult::Parent { .. } => Ok(()),
    }
}

/// The build child: builds, hands the result over as one line on `out`, exits.
fn builder(line: &str, stdio: Stdio, gate: &Gate, init: InitEnds, out: &UnixStream) -> ! {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build(line, stdio, gate, init)));
    let result = result.unwrap_or_else(|_| Err(Response::error(ErrorKind::Launch, "building panicked").into()));
    let mut bytes = serde_json::to_vec(&result).unwrap_or_default();
    bytes.push(b'\n');
    let _ = (&*out).write_all(&bytes);
    // After the write, not before: an idle-class process on a busy core may wait long for its turn, and the reply
    // waits on this write. Nothing waits on the exit (the monitor's reaper collects it).
    sys::yield_to_waker();
    sys::exit_now(0)
}

/// In the child: the plan, the cgroup, the launch, the limits.
fn build(line: &str, stdio: Stdio, gate: &Gate, init: InitEnds) -> Result<Made, Failed> {
    let plan = match serde_json::from_str::<Request>(line) {
        Ok(Request::Create { plan, .. }) => plan,
        Ok(_) => return Err(Response::error(ErrorKind::BadRequest, "not a create request").into()),
        Err(e) => return Err(Response::error(ErrorKind::BadRequest, e.to_string()).into()),
    };
    let pending = plan.cgroup.as_ref().map(PendingCgroup::new).transpose().map_err(cgroup_error)?;
    // In a pod's user namespace this process would lose its rights over the host's cgroupfs, which a failed
    // launch still needs to remove the cgroup.
    let joins_user_namespace = plan.join_namespaces.iter().any(|(flag, _)| *flag == CloneFlags::CLONE_NEWUSER);
    let (pid, cgroup, joined) = match pending {
        Some(p) if p.needs_pid() || joins_user_namespace => {
            let (pid, cgroup) = through_intermediate(&plan, stdio, gate, init, p)?;
            (pid, cgroup, false)
        }
        pending => {
            let (pid, cgroup) = from_here(&plan, stdio, gate, init, pending)?;
            (pid, cgroup, true)
        }
    };
    if let Err(e) = gate.wait_ready(&plan, pid) {
        if joined {
            return Err(Failed { response: launch_error(&e), leftover: cgroup });
        }
        if let Some(c) = &cgroup {
            let _ = c.destroy();
        }
        return Err(launch_error(&e).into());
    }
    Ok(Made { pid: pid.as_raw(), own_pid_namespace: plan.new_namespaces.contains(CloneFlags::CLONE_NEWPID), cgroup })
}

/// Under systemd the scope is made around the pid: an intermediate forks init, and this process stays in the
/// host's namespaces to talk to systemd; init waits at its gate until the scope holds it (`Gate::cgroup_joined`).
fn through_intermediate(
    plan: &LaunchPlan,
    stdio: Stdio,
    gate: &Gate,
    init: InitEnds,
    pending: PendingCgroup,
) -> Result<(Pid, Option<ContainerCgroup>), Failed> {
    let forked = gate.fork(plan, stdio, &pending.join_fds(), Forker::Intermediate, init);
    let pid = match forked {
        Ok(pid) => pid,
        Err(e) => {
            pending.abandon();
            return Err(launch_error(&e).into());
        }
    };
    // On an error here init finds its gate closed (the monitor drops it) and exits.
    let cgroup = pending.finish(pid.as_raw()).map_err(cgroup_error)?;
    if cgroup.is_systemd()
        && let Err(e) = gate.cgroup_joined()
    {
        let _ = cgroup.destroy();
        return Err(launch_error(&e).into());
    }
    Ok((pid, Some(cgroup)))
}

/// Else the limits go on first, while this process is still in the host's namespaces, and it forks init itself:
/// still before init runs anything of its own, so everything it ever runs is accounted and limited. Its device
/// nodes are made under the device rules, which allow mknod. Once it has tried to fork, this process may be in
/// the container's cgroup: a failure hands the cgroup back for the monitor to remove.
fn from_here(
    plan: &LaunchPlan,
    stdio: Stdio,
    gate: &Gate,
    init: InitEnds,
    pending: Option<PendingCgroup>,
) -> Result<(Pid, Option<ContainerCgroup>), Failed> {
    let cgroup = pending.as_ref().map(PendingCgroup::limit).transpose().map_err(cgroup_error)?;
    let join = pending.as_ref().map(PendingCgroup::join_fds).unwrap_or_default();
    // `pending` holds the descriptors `join` names until init is forked.
    let forked = gate.fork(plan, stdio, &join, Forker::Caller, init);
    drop(join);
    drop(pending);
    match forked {
        Ok(pid) => Ok((pid, cgroup)),
        Err(e) => Err(Failed { response: launch_error(&e), leftover: cgroup }),
    }
}

fn cgroup_error(e: CgroupError) -> Failed {
    let message = crate::error_chain(&e);
    Response::Error { kind: ErrorKind::Launch, errno: e.errno().map(|e| e as i32), message }.into()
}

fn launch_error(e: &LaunchError) -> Response {
    let errno = match e {
        LaunchError::Child { errno, .. } | LaunchError::Protocol { errno, .. } => Some(*errno as i32),
        _ => None,
    };
    Response::Error { kind: ErrorKind::Launch, errno, message: crate::error_chain(e) }
}

/// Removes containers' cgroups, in a child for the same reason as `in_child`: the handles are cgroups-rs's (and,
/// under systemd, D-Bus's). Failures go to the monitor's log; the removal is not retried.
pub(super) fn remove_cgroups(cgroups: &[(String, ContainerCgroup)]) {
    if cgroups.is_empty() {
        return;
    }
    match fork_remover(cgroups) {
        Ok(child) => {
            let _ = waitpid(child, None);
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "reef-monitor: fork to remove cgroups: {e}");
        }
    }
}

/// Forks the child that removes `cgroups` and exits; returns its pid.
#[allow(unsafe_code)]
fn fork_remover(cgroups: &[(String, ContainerCgroup)]) -> nix::Result<Pid> {
    // SAFETY: the monitor is single-threaded, and the child only removes the cgroups and ends in `exit_now`.
    match unsafe { sys::fork() }? {
        ForkResult::Child => {
            let _ = std::panic::catch_unwind(|| {
                for (id, cgroup) in cgroups {
                    if let Err(e) = cgroup.destroy() {
                        let e = crate::error_chain(&e);
                        let _ = writeln!(std::io::stderr(), "reef-monitor: remove the cgroup of {id}: {e}");
                    }
                }
            });
            sys::exit_now(0)
        }
        ForkResult::Parent { child } => Ok(child),
    }
}
