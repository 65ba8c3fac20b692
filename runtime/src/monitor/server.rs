//! The monitor's request side: connections on `monitor.sock`, one JSON request per line (`protocol`), and what
//! each request does to the pod's containers. A Create's plan is decoded and built in a child (`build`).

use std::io::BufRead;

use nix::sys::signal::Signal;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::protocol::{ErrorKind, PlanHead, Request, Response};
use super::{Conn, Container, MAX_REQUEST, Monitor, attach, build, state_of, write_record};
use crate::clock::now_nanos;
use crate::logging::LogWriter;

fn not_found(id: &str) -> Response {
    Response::error(ErrorKind::NotFound, format!("container {id} not found"))
}

impl Monitor {
    pub(super) fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if let Ok(conn) = Conn::new(stream) {
                self.conns.push(conn);
            }
        }
    }

    /// Writes pending answers, reads what the connection sent and answers each whole request line; false when
    /// the connection is gone (or became an attach stream).
    pub(super) fn serve_conn(&mut self, i: usize) -> bool {
        if !self.conns[i].flush() {
            return false;
        }
        loop {
            let conn = &mut self.conns[i];
            match conn.reader.read_until(b'\n', &mut conn.line) {
                Ok(_) if conn.line.last() == Some(&b'\n') => {
                    let line = std::mem::take(&mut conn.line);
                    if !self.answer(i, &line) {
                        return false;
                    }
                }
                // The end of the stream, in the middle of a line or not.
                Ok(_) => return false,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return conn.line.len() <= MAX_REQUEST,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// Answers one request line; false when the connection is done.
    fn answer(&mut self, i: usize, line: &[u8]) -> bool {
        let Ok(line) = std::str::from_utf8(line) else { return false };
        let response = match serde_json::from_str::<Request<PlanHead>>(line) {
            Ok(Request::Attach { id, stdin }) => match self.containers.get(&id) {
                None => not_found(&id),
                // A created container may be attached before it starts (docker run -it does), so nothing is missed.
                Some(c) if c.exit.is_some() || c.pending_exit.is_some() => {
                    Response::error(ErrorKind::InvalidState, format!("container {id} is not running"))
                }
                Some(_) => {
                    self.attach(i, id, stdin);
                    // The request connection is now the attach stream; the JSON side of it is done.
                    return false;
                }
            },
            Ok(Request::Create { id, plan, log_path, log_dir, stdin, stdin_once }) => {
                let log = crate::logging::Target::new(log_dir, log_path);
                self.create(id, line, plan.terminal, &log, stdin, stdin_once)
            }
            Ok(req) => self.handle(req),
            Err(e) => Response::error(ErrorKind::BadRequest, e.to_string()),
        };
        let conn = &mut self.conns[i];
        conn.out.extend(serde_json::to_vec(&response).unwrap_or_default());
        conn.out.push(b'\n');
        conn.flush()
    }

    /// Turns connection `i` into an attach stream of container `id`, its answer the stream's first bytes.
    fn attach(&mut self, i: usize, id: String, stdin: bool) {
        let conn = &mut self.conns[i];
        let Ok(stream) = conn.writer.try_clone() else { return };
        let mut attacher = attach::Attacher::new(id, stream, stdin);
        attacher.out = std::mem::take(&mut conn.out);
        attacher.out.extend(serde_json::to_vec(&Response::Ok { state: None }).unwrap_or_default());
        attacher.out.push(b'\n');
        attacher.flush();
        self.attachers.push(attacher);
    }

    fn handle(&mut self, req: Request<PlanHead>) -> Response {
        match req {
            Request::Create { .. } => Response::error(ErrorKind::BadRequest, "create is answered on its own"),
            Request::Attach { .. } => Response::error(ErrorKind::BadRequest, "attach is answered on its connection"),
            Request::Start { id } => self.start(&id),
            Request::Signal { id, signal } => self.signal(&id, signal),
            Request::State { id } => match self.containers.get(&id) {
                Some(c) => Response::Ok { state: Some(state_of(c)) },
                None => not_found(&id),
            },
            Request::ReopenLog { id } => match self.containers.get_mut(&id) {
                Some(c) => match c.log.reopen() {
                    Ok(()) => Response::Ok { state: None },
                    Err(e) => Response::error(ErrorKind::Io, e.to_string()),
                },
                None => not_found(&id),
            },
            Request::Forget { id } => self.forget(&id),
            Request::Shutdown => self.shutdown(),
        }
    }

    fn signal(&self, id: &str, signal: i32) -> Response {
        match self.containers.get(id) {
            None => not_found(id),
            Some(c) if c.exit.is_some() || c.pending_exit.is_some() => Response::Ok { state: Some(state_of(c)) },
            Some(c) => {
                let sig = Signal::try_from(signal).ok();
                match nix::sys::signal::kill(c.pid, sig) {
                    Ok(()) | Err(nix::errno::Errno::ESRCH) => Response::Ok { state: Some(state_of(c)) },
                    Err(e) => {
                        Response::Error { kind: ErrorKind::Io, errno: Some(e as i32), message: format!("signal {id}") }
                    }
                }
            }
        }
    }

    fn forget(&mut self, id: &str) -> Response {
        if self.containers.get(id).is_some_and(|c| c.exit.is_none() && c.launched.is_none()) {
            return Response::error(ErrorKind::InvalidState, format!("container {id} is still running"));
        }
        self.attachers.retain(|a| a.container != id);
        self.oom.remove(id);
        // A created container that never started: closing its gate makes its init exit; reap it below.
        if let Some(mut c) = self.containers.remove(id) {
            if c.launched.is_some() && c.exit.is_none() {
                drop(c.launched.take());
                let _ = waitpid(c.pid, None);
            }
            if let Some(cgroup) = c.cgroup.take() {
                build::remove_cgroups(&[(id.to_string(), cgroup)]);
            }
        }
        for ext in ["started", "exit"] {
            let _ = std::fs::remove_file(self.dir.join(format!("{id}.{ext}")));
        }
        Response::Ok { state: None }
    }

    fn shutdown(&mut self) -> Response {
        // Whatever still runs belongs to a pod being torn down: it goes with the monitor.
        for c in self.containers.values().filter(|c| c.exit.is_none() && c.launched.is_none()) {
            let _ = nix::sys::signal::kill(c.pid, Signal::SIGKILL);
        }
        self.shutdown = true;
        Response::Ok { state: None }
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
        let (gate, init_ends) = match crate::launch::Gate::new() {
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
            oom_killed: false,
            own_pid_namespace: made.own_pid_namespace,
        };
        let state = state_of(&c);
        if let Some(cgroup) = &c.cgroup {
            self.oom.add(&id, cgroup);
        }
        self.containers.insert(id, c);
        Response::Ok { state: Some(state) }
    }

    fn start(&mut self, id: &str) -> Response {
        let Some(c) = self.containers.get_mut(id) else {
            return not_found(id);
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
        write_record(&self.dir, id, "started", &started_at);
        Response::Ok { state: Some(state_of(c)) }
    }
}
