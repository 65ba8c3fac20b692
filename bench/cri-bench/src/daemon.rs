//! The runtime under test, started by us as a child subreaper: whatever it daemonizes (pod monitors, shims) is
//! reparented to us, so its memory is found by descent from our PID and everything is killed by PID at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

pub struct Daemon {
    pub pid: i32,
    exited: Arc<Mutex<Option<WaitStatus>>>,
}

/// Makes orphaned descendants ours to reap and to find.
pub fn become_subreaper() -> anyhow::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).context("PR_SET_CHILD_SUBREAPER")
}

impl Daemon {
    /// Starts `cmd` with its output in `log`, and reaps every child of ours (the daemon included) on a thread.
    pub fn spawn(cmd: &[String], log: &Path) -> anyhow::Result<Daemon> {
        let (bin, args) = cmd.split_first().context("no daemon command")?;
        let out = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {bin}"))?;
        let pid = child.id() as i32;
        // The reaper thread below waits for it; std's Child is never waited on (dropping it does not kill).
        drop(child);
        let exited = Arc::new(Mutex::new(None));
        let seen = exited.clone();
        std::thread::spawn(move || {
            loop {
                match waitpid(None, Some(WaitPidFlag::__WALL)) {
                    Ok(status) => {
                        if status.pid() == Some(Pid::from_raw(pid)) {
                            *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
                        }
                    }
                    // No child right now: more may come (reparented orphans).
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        Ok(Daemon { pid, exited })
    }

    pub fn exit_status(&self) -> Option<WaitStatus> {
        *self.exited.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `socket` accepts connections, failing early if the daemon exits.
    pub fn wait_for_socket(&self, socket: &Path, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                bail!("the daemon exited at start: {status:?}");
            }
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("{} did not accept connections within {timeout:?}", socket.display())
    }

    /// SIGTERM, SIGKILL after `grace`, then SIGKILL for every descendant still alive (shims, monitors,
    /// containers that the daemon left): all of them are ours.
    pub fn stop(&self, grace: Duration) {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while self.exit_status().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.exit_status().is_none() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
        let me = std::process::id() as i32;
        for _ in 0..100 {
            let left = crate::procs::descendants(me);
            if left.is_empty() {
                return;
            }
            for p in left {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}
