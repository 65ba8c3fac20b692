//! ExecSync and the exec plan: a command run in a running container the way its process was set up (same
//! namespaces, user, capabilities, seccomp), its output collected with a cap and a deadline that always holds.

use std::time::{Duration, Instant};

use reef_runtime::monitor::protocol::{Request, Status};

use super::{Containers, internal, monitor_call, ok_state};
use crate::error::ReefError;
use crate::pods::Pods;

impl Containers {
    /// How to run `cmd` in the running container `id`: its launch plan with `cmd` as the arguments, and its init's
    /// pid, whose namespaces the exec joins.
    pub fn exec_target(
        &self,
        pods: &Pods,
        id: &str,
        cmd: &[String],
    ) -> Result<(reef_runtime::launch::LaunchPlan, nix::unistd::Pid), ReefError> {
        let c = self.get(id).ok_or_else(|| ReefError::NotFound(format!("container {id:?} not found")))?;
        if cmd.is_empty() {
            return Err(ReefError::InvalidArgument("exec needs a command".into()));
        }
        let state = ok_state(monitor_call(pods, &c.pod_id, &Request::State { id: c.id.clone() })?)?;
        let Some(state) = state.filter(|s| s.status == Status::Running) else {
            return Err(ReefError::FailedPrecondition(format!("container {} is not running", c.id)));
        };
        let mut plan = c
            .plan
            .clone()
            .ok_or_else(|| ReefError::FailedPrecondition(format!("container {} has no exec plan", c.id)))?;
        plan.args = cmd.to_vec();
        Ok((plan, nix::unistd::Pid::from_raw(state.pid)))
    }

    /// Runs `cmd` in the running container and collects its output (each stream capped at `max_output`). When
    /// `timeout` passes, the exec's whole process group is killed and the call returns at once, even if something
    /// it started still holds the pipes.
    pub fn exec_sync(
        &self,
        pods: &Pods,
        id: &str,
        cmd: &[String],
        timeout: Option<Duration>,
        max_output: usize,
    ) -> Result<(Vec<u8>, Vec<u8>, i32), ReefError> {
        use std::os::fd::AsRawFd;
        let (plan, target) = self.exec_target(pods, id, cmd)?;
        let c = self.get(id).ok_or_else(|| ReefError::NotFound(format!("container {id:?} not found")))?;
        let pipe =
            || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ReefError::Internal(format!("pipe: {e}")));
        let ((out_r, out_w), (err_r, err_w)) = (pipe()?, pipe()?);
        let null = std::fs::File::open("/dev/null").map_err(internal("open /dev/null"))?;
        let stdio = reef_runtime::launch::Stdio {
            stdin: null.as_raw_fd(),
            stdout: out_w.as_raw_fd(),
            stderr: err_w.as_raw_fd(),
        };
        let pid = reef_runtime::launch::spawn_exec(&plan, target, stdio)
            .map_err(crate::error::runtime(format!("start the exec in container {}", c.id)))?;
        drop((out_w, err_w, null));
        let deadline = timeout.map(|t| Instant::now() + t);
        let (stdout, stderr, timed_out) = collect_output(out_r, err_r, deadline, max_output);
        if timed_out {
            // The exec leads its own process group: this reaches everything it started.
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(-pid.as_raw()), nix::sys::signal::Signal::SIGKILL);
            let _ = reef_runtime::launch::wait(pid);
            return Err(ReefError::DeadlineExceeded(format!(
                "command {cmd:?} in container {} timed out after {:?}",
                c.id,
                timeout.unwrap_or_default()
            )));
        }
        let exit = reef_runtime::launch::wait(pid).map_err(|e| ReefError::Internal(format!("wait for exec: {e}")))?;
        Ok((stdout, stderr, exit.code()))
    }
}

/// Reads both pipes until both end or the deadline passes; returns what was read and whether time ran out.
fn collect_output(
    out: std::os::fd::OwnedFd,
    err: std::os::fd::OwnedFd,
    deadline: Option<Instant>,
    max: usize,
) -> (Vec<u8>, Vec<u8>, bool) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::io::Read;
    use std::os::fd::AsFd;
    let mut files = [Some(std::fs::File::from(out)), Some(std::fs::File::from(err))];
    let mut bufs = [Vec::new(), Vec::new()];
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let open: Vec<usize> = (0..2).filter(|i| files[*i].is_some()).collect();
        if open.is_empty() {
            return (std::mem::take(&mut bufs[0]), std::mem::take(&mut bufs[1]), false);
        }
        let wait = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return (std::mem::take(&mut bufs[0]), std::mem::take(&mut bufs[1]), true);
                }
                PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = open
                .iter()
                .filter_map(|i| files[*i].as_ref())
                .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
                .collect();
            if poll(&mut fds, wait).is_err() {
                continue;
            }
            fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect()
        };
        for (slot, is_ready) in open.into_iter().zip(ready) {
            if !is_ready {
                continue;
            }
            let n = files[slot].as_mut().map(|f| f.read(&mut chunk).unwrap_or(0)).unwrap_or(0);
            if n == 0 {
                files[slot] = None;
            } else {
                let room = max.saturating_sub(bufs[slot].len());
                bufs[slot].extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}
