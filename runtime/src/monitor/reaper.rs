//! The monitor as the pod's one reaper: every exited child is collected here and matched to its container; an
//! exit is recorded (`<id>.exit`, with whether the cgroup saw an OOM kill, as watched by `oom` or read at the
//! exit) once the container's output is read.

use std::io::Write;
use std::time::SystemTime;

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::protocol::ExitRecord;
use super::stdio::drain;
use super::{Monitor, attach, build, write_record};
use crate::clock::now_nanos;
use crate::logging::Stream;

/// What a container's pipes still hold when its exit is recorded is read up to this much, per pipe: a pipe's
/// buffer four times over, enough for what the container wrote before it died.
const EXIT_DRAIN: usize = 256 << 10;

impl Monitor {
    /// The one reaper of the pod: every exited child is collected here and matched to its container by pid.
    pub(super) fn reap(&mut self) {
        while self.signals.read_signal().ok().flatten().is_some() {}
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.exited(pid, code, None),
                Ok(WaitStatus::Signaled(pid, sig, _)) => self.exited(pid, 128 + sig as i32, Some(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    fn exited(&mut self, pid: Pid, code: i32, signal: Option<i32>) {
        if self.pod_init.as_ref().is_some_and(|ns| ns.init == pid) {
            // The kernel has killed everything in the namespace with it; the containers' exits follow.
            let _ = writeln!(std::io::stderr(), "reef-monitor: the pod's PID namespace init exited ({code})");
            self.pod_init = None;
            return;
        }
        if let Some(c) = self.containers.values_mut().find(|c| c.pid == pid && c.exit.is_none()) {
            c.pending_exit = Some((code, signal));
            // At once, before the pipes are drained: under systemd the cgroup goes soon after its last process.
            c.oom_killed |= c.cgroup.as_ref().is_some_and(|g| g.oom_killed());
        }
    }

    /// Reads the `memory.events` the kernel notified: an OOM kill is latched while the file is still there.
    pub(super) fn note_oom_kills(&mut self) {
        for id in self.oom.changed() {
            if let Some(c) = self.containers.get_mut(&id).filter(|c| c.exit.is_none()) {
                c.oom_killed |= c.cgroup.as_ref().is_some_and(|g| g.oom_killed());
            }
        }
    }

    /// Records exits: what the container left running in the pod's shared PID namespace is killed first, then
    /// what is still buffered in its pipes is read, a bounded amount (a process that keeps them open, killed or
    /// not in the container's cgroup, must not hold the pod's loop), and no log line comes after the record.
    pub(super) fn finish_exits(&mut self) {
        let finished_at = now_nanos();
        for (id, c) in self.containers.iter_mut() {
            let Some((code, signal)) = c.pending_exit else { continue };
            if !c.own_pid_namespace {
                kill_leftovers(c.cgroup.as_ref());
            }
            for stream in [Stream::Stdout, Stream::Stderr] {
                drain(c, &mut self.attachers, id, stream, EXIT_DRAIN);
            }
            let _ = c.log.flush_partial(SystemTime::now());
            let oom_killed = c.oom_killed || c.cgroup.as_ref().is_some_and(|g| g.oom_killed());
            let record = ExitRecord { code, signal, finished_at, oom_killed };
            write_record(&self.dir, id, "exit", &record);
            c.exit = Some(record);
            c.pending_exit = None;
            for a in self.attachers.iter_mut().filter(|a| &a.container == id) {
                a.queue(attach::EXIT, &code.to_be_bytes());
                a.closing = true;
            }
        }
    }

    /// Before exiting: close the gates of containers never started (their inits exit), reap them, and remove every
    /// cgroup this monitor created, so a pod torn down with containers still listed leaves no cgroup behind.
    pub(super) fn release_all(&mut self) {
        let mut cgroups = Vec::new();
        for (id, mut c) in self.containers.drain() {
            if c.launched.take().is_some() {
                let _ = waitpid(c.pid, None);
            }
            if let Some(cgroup) = c.cgroup.take() {
                cgroups.push((id, cgroup));
            }
        }
        build::remove_cgroups(&cgroups);
        if let Some(ns) = self.pod_init.take() {
            let _ = nix::sys::signal::kill(ns.init, Signal::SIGKILL);
            let _ = waitpid(ns.init, None);
        }
    }
}

/// Kills what a container whose main process exited left running in its cgroup (their parent, the pod's init,
/// reaps them), so a container in the pod's shared PID namespace ends whole, as it would in its own.
fn kill_leftovers(cgroup: Option<&crate::cgroups::ContainerCgroup>) {
    let Some(cgroup) = cgroup else { return };
    // A process may fork while we kill; a few rounds catch the children of the last.
    for _ in 0..3 {
        let pids = cgroup.pids();
        if pids.is_empty() {
            return;
        }
        for p in pids {
            let _ = nix::sys::signal::kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
}
