//! An exec session: a command run in a running container (as ExecSync does), its stdio wired to the client's
//! streams, with a pty when asked. The exec is reefd's child in a session of its own; a client that goes away
//! takes the whole session with it (SIGKILL), so nothing it started is left running.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::fdio::Fd;
use super::remotecommand::{Options, Outcome, Session};
use crate::agent::Agent;
use crate::error::{ReefError, internal};

/// After the command exits, output still in flight gets this long to reach the client (something the command
/// left running in the background may hold the pipes open forever).
const DRAIN: Duration = Duration::from_secs(2);

pub struct ExecRequest {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub opts: Options,
}

pub async fn run(agent: Arc<Agent>, req: ExecRequest, mut session: Session) {
    let outcome = match exec(agent, &req, &mut session).await {
        Ok(code) => Outcome::Exited { code, cmd: req.cmd.clone() },
        Err(e) => {
            tracing::warn!(container = %req.container_id, error = %crate::error::chain(&e), "exec failed");
            Outcome::from(e)
        }
    };
    session.finish(outcome).await;
}

/// The process side of the exec's stdio: what reefd keeps, and what the exec gets.
struct Stdio {
    ours_in: Option<OwnedFd>,
    ours_out: Option<OwnedFd>,
    ours_err: Option<OwnedFd>,
    /// The pty master, when there is a terminal (it is also `ours_in`/`ours_out`, duplicated).
    tty: Option<OwnedFd>,
    theirs: Vec<OwnedFd>,
    fds: reef_runtime::launch::Stdio,
}

fn stdio(opts: Options) -> nix::Result<Stdio> {
    use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
    let null = || nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty());
    if opts.tty {
        let pty = nix::pty::openpty(None, None)?;
        for fd in [&pty.master, &pty.slave] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        }
        let slave = pty.slave.as_raw_fd();
        return Ok(Stdio {
            ours_in: opts.stdin.then(|| pty.master.try_clone()).transpose().map_err(errno)?,
            ours_out: Some(pty.master.try_clone().map_err(errno)?),
            ours_err: None,
            tty: Some(pty.master),
            theirs: vec![pty.slave],
            fds: reef_runtime::launch::Stdio { stdin: slave, stdout: slave, stderr: slave },
        });
    }
    let mut theirs = Vec::new();
    let mut pipe_or_null = |wanted: bool, reading: bool| -> nix::Result<(Option<OwnedFd>, i32)> {
        if !wanted {
            let n = null()?;
            let raw = n.as_raw_fd();
            theirs.push(n);
            return Ok((None, raw));
        }
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        // `reading`: the exec reads this one (stdin), so reefd keeps the write end.
        let (ours, their) = if reading { (w, r) } else { (r, w) };
        let raw = their.as_raw_fd();
        theirs.push(their);
        Ok((Some(ours), raw))
    };
    let (ours_in, stdin) = pipe_or_null(opts.stdin, true)?;
    let (ours_out, stdout) = pipe_or_null(opts.stdout, false)?;
    let (ours_err, stderr) = pipe_or_null(opts.stderr, false)?;
    Ok(Stdio {
        ours_in,
        ours_out,
        ours_err,
        tty: None,
        theirs,
        fds: reef_runtime::launch::Stdio { stdin, stdout, stderr },
    })
}

async fn exec(agent: Arc<Agent>, req: &ExecRequest, session: &mut Session) -> Result<i32, ReefError> {
    let (id, cmd) = (req.container_id.clone(), req.cmd.clone());
    let a = Arc::clone(&agent);
    let (mut plan, target) =
        crate::blocking::run("exec target", move || a.containers.exec_target(&a.pods, &id, &cmd)).await?;
    plan.terminal = req.opts.tty;
    let io = stdio(req.opts).map_err(|e| internal("set up the exec's stdio")(e.into()))?;
    // A size the client sent before the process starts (rctl's start message, an early resize) is the terminal's
    // from its first instruction on: a shell reading type-ahead must not see a 0x0 terminal.
    let mut early_sizes = Vec::new();
    if let (Some(tty), Some(rx)) = (&io.tty, session.resize.as_mut()) {
        while let Ok(data) = rx.try_recv() {
            early_sizes.extend_from_slice(&data);
        }
        for (rows, cols) in terminal_sizes(&mut early_sizes) {
            if let Err(e) = reef_runtime::launch::set_window_size(std::os::fd::AsFd::as_fd(tty), rows, cols) {
                tracing::debug!(error = %e, "size the exec's terminal");
            }
        }
    }
    let fds = io.fds;
    let pid = crate::blocking::run("start the exec", move || {
        reef_runtime::launch::spawn_exec(&plan, target, fds).map_err(crate::error::runtime("start the exec"))
    })
    .await?;
    drop(io.theirs);
    let exited = reef_runtime::launch::pidfd(pid).map_err(|e| internal("pidfd")(e.into())).and_then(|fd| {
        let fd = super::fdio::register(fd, tokio::io::Interest::READABLE).map_err(internal("watch the exec"));
        if fd.is_err() {
            kill_and_reap(pid);
        }
        fd
    })?;

    let mut pumps = JoinSet::new();
    let mut feeders = JoinSet::new();
    let wrap = |fd: Option<OwnedFd>| fd.map(Fd::new).transpose();
    let fail = |e: std::io::Error| {
        kill_and_reap(pid);
        internal("exec stdio")(e)
    };
    let (ours_in, ours_out, ours_err, tty) = (
        wrap(io.ours_in).map_err(fail)?,
        wrap(io.ours_out).map_err(fail)?,
        wrap(io.ours_err).map_err(fail)?,
        wrap(io.tty).map_err(fail)?,
    );
    if let (Some(fd), Some(outlet)) = (ours_out, session.stdout.take()) {
        pumps.spawn(async move { super::remotecommand::pump(fd, &outlet).await });
    }
    if let (Some(fd), Some(outlet)) = (ours_err, session.stderr.take()) {
        pumps.spawn(async move { super::remotecommand::pump(fd, &outlet).await });
    }
    if let (Some(fd), Some(rx)) = (ours_in, session.stdin.take()) {
        feeders.spawn(pump_in(fd, rx));
    }
    if let (Some(tty), Some(rx)) = (tty, session.resize.take()) {
        feeders.spawn(resize(tty, rx, early_sizes));
    }

    let gone = tokio::select! {
        _ = exited.readable() => false,
        _ = &mut session.gone => true,
    };
    if gone {
        tracing::info!(container = %req.container_id, pid = pid.as_raw(), "exec client went away: killing the exec");
        kill_session(pid);
    }
    let exit = crate::blocking::run("wait for the exec", move || {
        reef_runtime::launch::wait(pid).map_err(|e| internal("wait for the exec")(e.into()))
    })
    .await?;
    feeders.abort_all();
    if gone {
        pumps.abort_all();
        return Ok(exit.code());
    }
    let drained = tokio::time::timeout(DRAIN, async { while pumps.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        pumps.abort_all();
    }
    Ok(exit.code())
}

/// Everything in the exec's session: its process group, and groups a shell with job control made inside it.
/// SIGKILLs the exec's session: its process group at once, then, on a blocking thread (a scan of /proc is no
/// work for an async worker), whatever of the session left the group.
fn kill_session(pid: Pid) {
    let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
    tokio::task::spawn_blocking(move || kill_stragglers(pid));
}

/// `kill_session`, then the exec's leader reaped, for an exec that never got watched.
fn kill_and_reap(pid: Pid) {
    let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
    tokio::task::spawn_blocking(move || {
        kill_stragglers(pid);
        let _ = reef_runtime::launch::wait(pid);
    });
}

fn kill_stragglers(pid: Pid) {
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for e in entries.flatten() {
        let Some(other) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{other}/stat")) else { continue };
        // Fields after the parenthesised command: state ppid pgrp session ...
        let session = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(3)?.parse::<i32>().ok());
        if session == Some(pid.as_raw()) {
            let _ = kill(Pid::from_raw(other), Signal::SIGKILL);
        }
    }
}

/// The client's stdin into the exec; its end closes the exec's stdin (for a pipe: EOF; a pty stays open).
async fn pump_in(fd: Fd, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(data) = rx.recv().await {
        if fd.write_all(&data).await.is_err() {
            return;
        }
    }
}

#[derive(serde::Deserialize)]
struct TerminalSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// Resize events into the pty.
async fn resize(tty: Fd, mut rx: mpsc::Receiver<Bytes>, mut pending: Vec<u8>) {
    while let Some(data) = rx.recv().await {
        pending.extend_from_slice(&data);
        for (rows, cols) in terminal_sizes(&mut pending) {
            if let Err(e) = reef_runtime::launch::set_window_size(tty.borrow(), rows, cols) {
                tracing::debug!(error = %e, "resize the exec's terminal");
            }
        }
    }
}

/// Takes the complete `{"Width":w,"Height":h}` objects off the front of `pending` (a stream of JSON objects that
/// SPDY may split or join across frames) as (rows, columns). Garbage is dropped, and so is an object that grows
/// past 4 KiB without ending.
pub fn terminal_sizes(pending: &mut Vec<u8>) -> Vec<(u16, u16)> {
    let mut sizes = Vec::new();
    let mut stream = serde_json::Deserializer::from_slice(pending).into_iter::<TerminalSize>();
    let mut used = 0;
    loop {
        match stream.next() {
            Some(Ok(size)) => {
                used = stream.byte_offset();
                sizes.push((size.height, size.width));
            }
            Some(Err(e)) if e.is_eof() => break,
            Some(Err(_)) => {
                used = pending.len();
                break;
            }
            None => break,
        }
    }
    pending.drain(..used);
    if pending.len() > 4096 {
        pending.clear();
    }
    sizes
}

fn errno(e: std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_sizes_survive_splits_and_joins() {
        let mut p = br#"{"Width":80,"Height":24}{"Width":100,"#.to_vec();
        assert_eq!(terminal_sizes(&mut p), vec![(24, 80)]);
        p.extend_from_slice(br#""Height":40}"#);
        assert_eq!(terminal_sizes(&mut p), vec![(40, 100)]);
        assert!(p.is_empty());
        let mut junk = b"not json".to_vec();
        assert!(terminal_sizes(&mut junk).is_empty());
        assert!(junk.is_empty());
    }
}
