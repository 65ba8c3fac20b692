//! The monitor as the pod's one reaper: every exited child is collected here and matched to its container; an
//! exit is recorded (`<id>.exit`, with whether the cgroup saw an OOM kill) once the container's output is read.

use std::io::{Read, Write};
use std::path::Path;
use std::time::SystemTime;

use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::protocol::ExitRecord;
use super::stdio::deliver;
use super::{Monitor, attach, build, write_atomic};
use crate::clock::now_nanos;
use crate::logging::Stream;

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
        }
    }

    /// Records exits whose output has been read to the end.
    pub(super) fn finish_exits(&mut self) {
        let finished_at = now_nanos();
        for (id, c) in self.containers.iter_mut() {
            let Some((code, signal)) = c.pending_exit else { continue };
            // Grandchildren may keep the pipes open; the exit does not wait for them beyond what is buffered.
            for stream in [Stream::Stdout, Stream::Stderr] {
                let pipe = match stream {
                    Stream::Stdout => &mut c.stdout,
                    Stream::Stderr => &mut c.stderr,
                };
                if let Some(f) = pipe.as_mut() {
                    let mut buf = [0u8; 32 * 1024];
                    while let Ok(n) = f.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        let _ = c.log.write(stream, &buf[..n], SystemTime::now());
                        deliver(&mut self.attachers, id, stream, &buf[..n]);
                    }
                }
            }
            let _ = c.log.flush_partial(SystemTime::now());
            if !c.own_pid_namespace {
                kill_leftovers(c.cgroup.as_ref());
            }
            let oom_killed = c.cgroup.as_ref().is_some_and(|g| oom_kills(g.path()));
            let record = ExitRecord { code, signal, finished_at, oom_killed };
            let _ = write_atomic(&self.dir.join(format!("{id}.exit")), &record);
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

/// Whether the container's cgroup saw an OOM kill: `oom_kill` in memory.events (v2) or memory.oom_control (v1).
fn oom_kills(path: &str) -> bool {
    let v2 = Path::new("/sys/fs/cgroup").join(path).join("memory.events");
    let v1 = Path::new("/sys/fs/cgroup/memory").join(path).join("memory.oom_control");
    [v2, v1].iter().any(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .any(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok()).is_some_and(|n| n > 0))
    })
}
