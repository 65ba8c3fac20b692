//! The per-pod monitor: one small process per pod that outlives reefd.
//!
//! It is the child subreaper of the pod's containers, so their exits come to it whatever happens to reefd; it
//! holds their stdout and stderr pipes and writes the CRI log lines; it records each exit (code, signal, time)
//! in a file before anyone asks, so a reefd that starts again reads the truth from disk. It is single-threaded
//! and runs one poll loop without an async runtime: it has little to do, and must stay small (a budget of
//! 1 MiB private memory per pod). It is also the only place that calls waitpid for the pod (one reaper).
//!
//! Files in its directory: `monitor.sock` (requests), `<id>.started` and `<id>.exit` (JSON, written atomically).

pub mod attach;
mod build;
pub mod client;
mod oom;
mod pod_init;
pub mod protocol;
mod reaper;
mod server;
mod stdio;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::Pid;
use protocol::{ContainerState, ExitRecord, Status};

use crate::launch::Launched;
use crate::logging::{LogWriter, Stream};

pub const SOCKET: &str = "monitor.sock";

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("monitor setup: {step}")]
    Setup {
        step: &'static str,
        #[source]
        errno: nix::errno::Errno,
    },
    #[error("monitor socket {path}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

struct Container {
    pid: Pid,
    cgroup: Option<crate::cgroups::ContainerCgroup>,
    launched: Option<Launched>,
    stdout: Option<File>,
    stderr: Option<File>,
    log: LogWriter,
    started_at: Option<i64>,
    exit: Option<ExitRecord>,
    /// The exit status arrived; the record is written once the pipes are drained, so no line comes after it.
    pending_exit: Option<(i32, Option<i32>)>,
    /// Its cgroup counted an OOM kill, as seen while it could still be read (`oom`).
    oom_killed: bool,
    /// PID 1 of a namespace of its own: its exit takes every process of the container with it. In the pod's
    /// shared namespace nothing does that, so the monitor kills what is left in the container's cgroup.
    own_pid_namespace: bool,
    /// Where attach clients' input goes (a pipe, or the pty master), and what could not be written yet.
    stdin: Option<File>,
    stdin_once: bool,
    stdin_pending: Vec<u8>,
    /// The pty master of a container with a terminal, for its size.
    tty: Option<File>,
}

/// Input for a container's stdin waits here up to this much; beyond it, attach clients are not read.
const STDIN_PENDING: usize = 64 << 10;

/// A request connection. Non-blocking, like everything the loop waits on: a client that sends half a request or
/// does not read its answers holds only its own connection, never the pod's loop.
struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// The request line read so far.
    line: Vec<u8>,
    /// Answers the client has not taken yet.
    out: Vec<u8>,
}

/// A request line longer than this (a Create's plan is a few KiB) ends its connection.
const MAX_REQUEST: usize = 16 << 20;
/// Answers a client leaves unread beyond this end its connection.
const MAX_UNREAD: usize = 1 << 20;

impl Conn {
    fn new(stream: UnixStream) -> std::io::Result<Conn> {
        stream.set_nonblocking(true)?;
        let writer = stream.try_clone()?;
        Ok(Conn { reader: BufReader::new(stream), writer, line: Vec::new(), out: Vec::new() })
    }

    /// Writes what the socket takes of the answers; false when the client is gone or too far behind.
    fn flush(&mut self) -> bool {
        while !self.out.is_empty() {
            match (&self.writer).write(&self.out) {
                Ok(0) => return false,
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.out.len() <= MAX_UNREAD
    }
}

pub struct Monitor {
    dir: PathBuf,
    listener: UnixListener,
    signals: SignalFd,
    conns: Vec<Conn>,
    attachers: Vec<attach::Attacher>,
    containers: HashMap<String, Container>,
    shutdown: bool,
    /// PID 1 of the pod's shared PID namespace, when the pod has one.
    pod_init: Option<pod_init::PodPidNamespace>,
    /// The containers' `memory.events`, watched for OOM kills.
    oom: oom::OomWatch,
}

/// Writes `value` as JSON to `path` atomically: readers see the old file or the new one, never half of one.
fn write_atomic<T: serde::Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Writes the record `<dir>/<id>.<ext>` (`write_atomic`). A failure is logged, not returned: the container's state
/// is still the monitor's to tell while it runs, but reefd finds no record on disk after it, and must be told why.
fn write_record<T: serde::Serialize>(dir: &Path, id: &str, ext: &str, value: &T) {
    let path = dir.join(format!("{id}.{ext}"));
    if let Err(e) = write_atomic(&path, value) {
        let _ = writeln!(std::io::stderr(), "reef-monitor: write {}: {e}", path.display());
    }
}

impl Monitor {
    /// Becomes the pod's subreaper, starts listening on `<dir>/monitor.sock`.
    pub fn new(dir: &Path) -> Result<Monitor, MonitorError> {
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|errno| MonitorError::Setup { step: "become subreaper", errno })?;
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block().map_err(|errno| MonitorError::Setup { step: "block SIGCHLD", errno })?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|errno| MonitorError::Setup { step: "signalfd", errno })?;
        let path = dir.join(SOCKET);
        let _ = std::fs::remove_file(&path);
        let listener =
            UnixListener::bind(&path).map_err(|source| MonitorError::Socket { path: path.clone(), source })?;
        listener.set_nonblocking(true).map_err(|source| MonitorError::Socket { path, source })?;
        Ok(Monitor {
            dir: dir.to_path_buf(),
            listener,
            signals,
            conns: Vec::new(),
            attachers: Vec::new(),
            containers: HashMap::new(),
            shutdown: false,
            pod_init: None,
            oom: oom::OomWatch::default(),
        })
    }

    /// Gives the pod a PID namespace shared by its containers, pinned at `<dir>/ns/pid`, with an init of its own;
    /// owned by the pod's user namespace `user` (its pin), when the pod has one.
    pub fn share_pid_namespace(&mut self, user: Option<&Path>) -> Result<(), MonitorError> {
        let ns = pod_init::spawn(&self.dir.join("ns"), &self.dir.join("init-root"), user)
            .map_err(|errno| MonitorError::Setup { step: "start the pod's PID namespace init", errno })?;
        self.pod_init = Some(ns);
        Ok(())
    }

    /// Serves until a Shutdown request finds no container running.
    pub fn run(&mut self) {
        loop {
            if self.shutdown && self.containers.values().all(|c| c.exit.is_some() || c.launched.is_some()) {
                self.release_all();
                return;
            }
            self.poll_once();
        }
    }

    fn poll_once(&mut self) {
        let (sources, ready) = {
            let (sources, mut fds) = self.poll_set();
            if poll(&mut fds, PollTimeout::NONE).is_err() {
                return;
            }
            let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
            (sources, ready)
        };
        let mut closed_conns = Vec::new();
        let mut gone_attachers = Vec::new();
        for (src, ready) in sources.into_iter().zip(ready) {
            if !ready {
                continue;
            }
            match src {
                Src::Listener => self.accept(),
                Src::Signals => self.reap(),
                Src::Conn(i) => {
                    if !self.serve_conn(i) {
                        closed_conns.push(i);
                    }
                }
                Src::Pipe(id, stream) => self.pump(&id, stream),
                Src::Attacher(i) => {
                    if !self.serve_attacher(i) {
                        gone_attachers.push(i);
                    }
                }
                Src::Stdin(id) => self.write_stdin(&id, &[]),
                Src::Oom => self.note_oom_kills(),
            }
        }
        for i in closed_conns.into_iter().rev() {
            self.conns.remove(i);
        }
        self.finish_exits();
        self.retire_attachers(gone_attachers);
    }

    /// What the loop waits on, with which poll entry is what. Rebuilt each round; pods hold a handful of fds.
    fn poll_set(&self) -> (Vec<Src>, Vec<PollFd<'_>>) {
        let mut sources = vec![Src::Listener, Src::Signals];
        let mut fds: Vec<PollFd<'_>> = vec![
            PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(fd) = self.oom.fd() {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            sources.push(Src::Oom);
        }
        for (i, c) in self.conns.iter().enumerate() {
            let flags = if c.out.is_empty() { PollFlags::POLLIN } else { PollFlags::POLLIN | PollFlags::POLLOUT };
            fds.push(PollFd::new(c.writer.as_fd(), flags));
            sources.push(Src::Conn(i));
        }
        for (i, a) in self.attachers.iter().enumerate() {
            let full = self.containers.get(&a.container).is_none_or(|c| c.stdin_pending.len() >= STDIN_PENDING);
            let mut flags = if full { PollFlags::empty() } else { PollFlags::POLLIN };
            if !a.out.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(a.stream.as_fd(), flags));
            sources.push(Src::Attacher(i));
        }
        for (id, c) in &self.containers {
            if let Some(stdin) = c.stdin.as_ref().filter(|_| !c.stdin_pending.is_empty()) {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLOUT));
                sources.push(Src::Stdin(id.clone()));
            }
            for (pipe, stream) in [(&c.stdout, Stream::Stdout), (&c.stderr, Stream::Stderr)] {
                if let Some(f) = pipe {
                    fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                    sources.push(Src::Pipe(id.clone(), stream));
                }
            }
        }
        (sources, fds)
    }

    /// Drops attach clients that are gone, and those whose container exited once their exit frame is written; the
    /// last writer of a stdin_once container's stdin takes it with it.
    fn retire_attachers(&mut self, mut gone: Vec<usize>) {
        for (i, a) in self.attachers.iter_mut().enumerate() {
            if a.closing && !a.flush() && !gone.contains(&i) {
                gone.push(i);
            }
        }
        gone.sort_unstable();
        for i in gone.into_iter().rev() {
            let a = self.attachers.remove(i);
            if a.stdin
                && let Some(c) = self.containers.get_mut(&a.container)
                && c.stdin_once
                && c.tty.is_none()
            {
                c.stdin = None;
            }
        }
    }
}

/// An entry of the poll set.
enum Src {
    Listener,
    Signals,
    Conn(usize),
    Pipe(String, Stream),
    Attacher(usize),
    Stdin(String),
    Oom,
}

fn state_of(c: &Container) -> ContainerState {
    let status = match (&c.exit, &c.launched) {
        (Some(_), _) => Status::Exited,
        (None, Some(_)) => Status::Created,
        (None, None) => Status::Running,
    };
    ContainerState { pid: c.pid.as_raw(), status, started_at: c.started_at, exit: c.exit.clone() }
}
