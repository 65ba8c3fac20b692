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
mod pod_init;
pub mod protocol;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use protocol::{ContainerState, ErrorKind, ExitRecord, PlanHead, Request, Response, Status};

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

struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
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
}

use crate::clock::now_nanos;

/// Writes `value` as JSON to `path` atomically: readers see the old file or the new one, never half of one.
fn write_atomic<T: serde::Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
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
        // Index map: which poll entry is what. Rebuilt each round; pods hold a handful of fds.
        enum Src {
            Listener,
            Signals,
            Conn(usize),
            Pipe(String, Stream),
            Attacher(usize),
            Stdin(String),
        }
        let mut sources = vec![Src::Listener, Src::Signals];
        let mut fds: Vec<PollFd<'_>> = vec![
            PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
        ];
        for (i, c) in self.conns.iter().enumerate() {
            fds.push(PollFd::new(c.writer.as_fd(), PollFlags::POLLIN));
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
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            return;
        }
        let ready: Vec<bool> = fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
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
            }
        }
        for i in closed_conns.into_iter().rev() {
            self.conns.remove(i);
        }
        self.finish_exits();
        // Attachers whose container exited get their exit frame written, then go.
        for (i, a) in self.attachers.iter_mut().enumerate() {
            if a.closing && !a.flush() && !gone_attachers.contains(&i) {
                gone_attachers.push(i);
            }
        }
        gone_attachers.sort_unstable();
        for i in gone_attachers.into_iter().rev() {
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

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            let _ = stream.set_nonblocking(false);
            if let Ok(writer) = stream.try_clone() {
                self.conns.push(Conn { reader: BufReader::new(stream), writer });
            }
        }
    }

    /// Handles one request line; false when the connection is gone.
    fn serve_conn(&mut self, i: usize) -> bool {
        let mut line = String::new();
        match self.conns[i].reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        let response = match serde_json::from_str::<Request<PlanHead>>(&line) {
            Ok(Request::Attach { id, stdin }) => match self.containers.get(&id) {
                None => Response::error(ErrorKind::NotFound, format!("container {id} not found")),
                // A created container may be attached before it starts (docker run -it does), so nothing is missed.
                Some(c) if c.exit.is_some() || c.pending_exit.is_some() => {
                    Response::error(ErrorKind::InvalidState, format!("container {id} is not running"))
                }
                Some(_) => {
                    let mut out = serde_json::to_vec(&Response::Ok { state: None }).unwrap_or_default();
                    out.push(b'\n');
                    if self.conns[i].writer.write_all(&out).is_err() {
                        return false;
                    }
                    let stream = match self.conns[i].writer.try_clone() {
                        Ok(s) => s,
                        Err(_) => return false,
                    };
                    self.attachers.push(attach::Attacher::new(id, stream, stdin));
                    // The request connection is now the attach stream; the JSON side of it is done.
                    return false;
                }
            },
            Ok(Request::Create { id, plan, log_path, log_dir, stdin, stdin_once }) => {
                let log = crate::logging::Target::new(log_dir, log_path);
                self.create(id, &line, plan.terminal, &log, stdin, stdin_once)
            }
            Ok(req) => self.handle(req),
            Err(e) => Response::error(ErrorKind::BadRequest, e.to_string()),
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_default();
        out.push(b'\n');
        self.conns[i].writer.write_all(&out).is_ok()
    }

    fn handle(&mut self, req: Request<PlanHead>) -> Response {
        match req {
            Request::Create { .. } => Response::error(ErrorKind::BadRequest, "create is answered on its own"),
            Request::Attach { .. } => Response::error(ErrorKind::BadRequest, "attach is answered on its connection"),
            Request::Start { id } => self.start(&id),
            Request::Signal { id, signal } => match self.containers.get(&id) {
                None => Response::error(ErrorKind::NotFound, format!("container {id} not found")),
                Some(c) if c.exit.is_some() || c.pending_exit.is_some() => Response::Ok { state: Some(state_of(c)) },
                Some(c) => {
                    let sig = Signal::try_from(signal).ok();
                    match nix::sys::signal::kill(c.pid, sig) {
                        Ok(()) | Err(nix::errno::Errno::ESRCH) => Response::Ok { state: Some(state_of(c)) },
                        Err(e) => Response::Error {
                            kind: ErrorKind::Io,
                            errno: Some(e as i32),
                            message: format!("signal {id}"),
                        },
                    }
                }
            },
            Request::State { id } => match self.containers.get(&id) {
                Some(c) => Response::Ok { state: Some(state_of(c)) },
                None => Response::error(ErrorKind::NotFound, format!("container {id} not found")),
            },
            Request::ReopenLog { id } => match self.containers.get_mut(&id) {
                Some(c) => match c.log.reopen() {
                    Ok(()) => Response::Ok { state: None },
                    Err(e) => Response::error(ErrorKind::Io, e.to_string()),
                },
                None => Response::error(ErrorKind::NotFound, format!("container {id} not found")),
            },
            Request::Forget { id } => {
                if self.containers.get(&id).is_some_and(|c| c.exit.is_none() && c.launched.is_none()) {
                    return Response::error(ErrorKind::InvalidState, format!("container {id} is still running"));
                }
                self.attachers.retain(|a| a.container != id);
                // A created container that never started: closing its gate makes its init exit; reap it below.
                if let Some(mut c) = self.containers.remove(&id) {
                    if c.launched.is_some() && c.exit.is_none() {
                        drop(c.launched.take());
                        let _ = waitpid(c.pid, None);
                    }
                    if let Some(cgroup) = c.cgroup.take() {
                        build::remove_cgroups(&[(id.clone(), cgroup)]);
                    }
                }
                for ext in ["started", "exit"] {
                    let _ = std::fs::remove_file(self.dir.join(format!("{id}.{ext}")));
                }
                Response::Ok { state: None }
            }
            Request::Shutdown => {
                // Whatever still runs belongs to a pod being torn down: it goes with the monitor.
                for c in self.containers.values().filter(|c| c.exit.is_none() && c.launched.is_none()) {
                    let _ = nix::sys::signal::kill(c.pid, Signal::SIGKILL);
                }
                self.shutdown = true;
                Response::Ok { state: None }
            }
        }
    }

    /// Sets a container up behind its start gate. The monitor makes what it keeps (the log, the container's
    /// stdio, the gate's pipes); a child of its own decodes the plan from the request `line` and builds the
    /// container (see `build`).
    fn create(
        &mut self,
        id: String,
        line: &str,
        terminal: bool,
        log_target: &crate::logging::Target,
        stdin: bool,
        stdin_once: bool,
    ) -> Response {
        let log_path = log_target.path();
        if self.containers.contains_key(&id) {
            return Response::error(ErrorKind::AlreadyExists, format!("container {id} exists"));
        }
        // A failed Create takes back the log file it made, empty: one kubelet made, or an earlier attempt wrote
        // to, stays.
        let new_log = !log_path.exists();
        let failed = |response: Response| {
            if new_log {
                let _ = std::fs::remove_file(log_path);
            }
            response
        };
        let log = match LogWriter::open_target(log_target.clone(), crate::logging::DEFAULT_MAX_LINE) {
            Ok(l) => l,
            Err(e) => return failed(Response::error(ErrorKind::Io, crate::error_chain(&e))),
        };
        let io = match attach::container_io(terminal, stdin) {
            Ok(io) => io,
            Err(e) => {
                let message = "create stdio".into();
                return failed(Response::Error { kind: ErrorKind::Io, errno: Some(e as i32), message });
            }
        };
        let (gate, init_ends) = match crate::launch::gate() {
            Ok(g) => g,
            Err(e) => return failed(Response::error(ErrorKind::Launch, crate::error_chain(&e))),
        };
        let made = match build::in_child(line, io.stdio, &gate, init_ends) {
            Ok(made) => made,
            // A container that was made but failed after (its limits): closing the gate ends it; reap() collects it.
            Err(response) => return failed(response),
        };
        // Only the container keeps the write ends: their closing is how its output ends.
        drop(io.theirs);
        let pid = Pid::from_raw(made.pid);
        let c = Container {
            pid,
            cgroup: made.cgroup,
            launched: Some(gate.launched(pid)),
            stdout: Some(io.stdout),
            stderr: io.stderr,
            stdin: io.stdin,
            stdin_once,
            stdin_pending: Vec::new(),
            tty: io.tty,
            log,
            started_at: None,
            exit: None,
            pending_exit: None,
            own_pid_namespace: made.own_pid_namespace,
        };
        let state = state_of(&c);
        self.containers.insert(id, c);
        Response::Ok { state: Some(state) }
    }

    fn start(&mut self, id: &str) -> Response {
        let Some(c) = self.containers.get_mut(id) else {
            return Response::error(ErrorKind::NotFound, format!("container {id} not found"));
        };
        let Some(mut launched) = c.launched.take() else {
            return Response::error(ErrorKind::InvalidState, format!("container {id} was already started"));
        };
        let started_at = now_nanos();
        if let Err(e) = launched.start() {
            let errno = match &e {
                crate::launch::LaunchError::Child { errno, .. } => Some(*errno as i32),
                _ => None,
            };
            return Response::Error { kind: ErrorKind::Launch, errno, message: crate::error_chain(&e) };
        }
        c.started_at = Some(started_at);
        let _ = write_atomic(&self.dir.join(format!("{id}.started")), &started_at);
        Response::Ok { state: Some(state_of(c)) }
    }

    fn pump(&mut self, id: &str, stream: Stream) {
        let Some(c) = self.containers.get_mut(id) else { return };
        let pipe = match stream {
            Stream::Stdout => &mut c.stdout,
            Stream::Stderr => &mut c.stderr,
        };
        let Some(f) = pipe.as_mut() else { return };
        let mut buf = [0u8; 32 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) => {
                    *pipe = None;
                    return;
                }
                Ok(n) => {
                    if let Err(e) = c.log.write(stream, &buf[..n], SystemTime::now()) {
                        // The log is kubelet's to rotate or lose; the container keeps running either way.
                        let _ = writeln!(std::io::stderr(), "reef-monitor: {e}");
                    }
                    deliver(&mut self.attachers, id, stream, &buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    *pipe = None;
                    return;
                }
            }
        }
    }

    /// The one reaper of the pod: every exited child is collected here and matched to its container by pid.
    fn reap(&mut self) {
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
    fn finish_exits(&mut self) {
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
}

/// Copies output to the container's attach clients; one too far behind is marked to go.
fn deliver(attachers: &mut [attach::Attacher], id: &str, stream: Stream, data: &[u8]) {
    let kind = match stream {
        Stream::Stdout => attach::STDOUT,
        Stream::Stderr => attach::STDERR,
    };
    for a in attachers.iter_mut().filter(|a| a.container == id && !a.closing) {
        if !a.queue(kind, data) {
            // Dropped, not waited for: a slow watcher must not hold the container or its log back.
            a.out.clear();
            a.closing = true;
        }
    }
}

impl Monitor {
    /// Reads an attach client's frames and writes what it can; false when it is gone.
    fn serve_attacher(&mut self, i: usize) -> bool {
        let a = &mut self.attachers[i];
        if !a.out.is_empty() && !a.flush() {
            return false;
        }
        let Some(frames) = a.read() else { return false };
        let (id, may_write) = (a.container.clone(), a.stdin);
        for (kind, payload) in frames {
            match kind {
                attach::STDIN if may_write && payload.is_empty() => {
                    if let Some(c) = self.containers.get_mut(&id)
                        && c.stdin_once
                        && c.tty.is_none()
                    {
                        c.stdin = None;
                    }
                }
                attach::STDIN if may_write => self.write_stdin(&id, &payload),
                attach::RESIZE if payload.len() == 4 => {
                    let rows = u16::from_be_bytes([payload[0], payload[1]]);
                    let cols = u16::from_be_bytes([payload[2], payload[3]]);
                    if let Some(tty) = self.containers.get(&id).and_then(|c| c.tty.as_ref()) {
                        let _ = crate::launch::set_window_size(tty.as_fd(), rows, cols);
                    }
                }
                _ => {}
            }
        }
        true
    }

    /// Appends `data` to the container's stdin and writes what the pipe takes without blocking.
    fn write_stdin(&mut self, id: &str, data: &[u8]) {
        let Some(c) = self.containers.get_mut(id) else { return };
        let Some(stdin) = c.stdin.as_mut() else { return };
        c.stdin_pending.extend_from_slice(data);
        while !c.stdin_pending.is_empty() {
            match stdin.write(&c.stdin_pending) {
                Ok(n) if n > 0 => {
                    c.stdin_pending.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                _ => {
                    // The container closed its stdin (or exited): input has nowhere to go.
                    c.stdin_pending.clear();
                    c.stdin = None;
                    return;
                }
            }
        }
    }
}

impl Monitor {
    /// Before exiting: close the gates of containers never started (their inits exit), reap them, and remove every
    /// cgroup this monitor created, so a pod torn down with containers still listed leaves no cgroup behind.
    fn release_all(&mut self) {
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

fn state_of(c: &Container) -> ContainerState {
    let status = match (&c.exit, &c.launched) {
        (Some(_), _) => Status::Exited,
        (None, Some(_)) => Status::Created,
        (None, None) => Status::Running,
    };
    ContainerState { pid: c.pid.as_raw(), status, started_at: c.started_at, exit: c.exit.clone() }
}
