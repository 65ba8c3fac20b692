//! Attach: clients (reefd, for the CRI's Attach) that join a running container's own stdio.
//!
//! A connection asks `{"op":"attach",...}`, gets the usual JSON reply, and from then on carries binary frames:
//! `[kind: u8][length: u32 big-endian][payload]`. The monitor sends stdout (1) and stderr (2) as the container
//! writes them (log lines are still written) and, when the container has exited and its output is drained, an
//! exit frame (3), then closes. The client sends stdin (0; an empty one closes stdin when the container was
//! created with stdin_once) and terminal sizes (4: rows and columns as two big-endian u16).
//!
//! The monitor never blocks on a client: output is queued per client up to `MAX_QUEUED` (256 KiB), and a client that falls
//! further behind is disconnected (the container and its log are never slowed down by a watcher).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::fcntl::OFlag;

use crate::launch::Stdio;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const EXIT: u8 = 3;
pub const RESIZE: u8 = 4;

/// Output queued for one client beyond this drops the client (a quarter of the monitor's memory budget: reefd
/// reads its socket promptly, so only a stuck relay ever gets near it).
pub const MAX_QUEUED: usize = 256 << 10;
/// The largest frame a client may send.
pub const MAX_FRAME: usize = 64 << 10;

pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + payload.len());
    f.push(kind);
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A client sent a frame over `MAX_FRAME`.
#[derive(Debug, PartialEq, Eq)]
pub struct FrameTooLarge;

/// Takes the complete frames off the front of `buf`.
pub fn parse_frames(buf: &mut Vec<u8>) -> Result<Vec<(u8, Vec<u8>)>, FrameTooLarge> {
    let mut frames = Vec::new();
    let mut pos = 0;
    while buf.len() - pos >= 5 {
        let len = u32::from_be_bytes([buf[pos + 1], buf[pos + 2], buf[pos + 3], buf[pos + 4]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameTooLarge);
        }
        if buf.len() - pos < 5 + len {
            break;
        }
        frames.push((buf[pos], buf[pos + 5..pos + 5 + len].to_vec()));
        pos += 5 + len;
    }
    buf.drain(..pos);
    Ok(frames)
}

pub struct Attacher {
    pub container: String,
    pub stream: UnixStream,
    /// Whether this client writes the container's stdin.
    pub stdin: bool,
    pub out: Vec<u8>,
    pub inbuf: Vec<u8>,
    /// The exit frame is queued: close once `out` is written.
    pub closing: bool,
}

impl Attacher {
    pub fn new(container: String, stream: UnixStream, stdin: bool) -> Attacher {
        let _ = stream.set_nonblocking(true);
        Attacher { container, stream, stdin, out: Vec::new(), inbuf: Vec::new(), closing: false }
    }

    /// Queues a frame; false when the client is too far behind and must go.
    pub fn queue(&mut self, kind: u8, payload: &[u8]) -> bool {
        if self.out.len() + payload.len() > MAX_QUEUED {
            return false;
        }
        self.out.extend(frame(kind, payload));
        true
    }

    /// Writes what the socket takes; false when the client is gone or done.
    pub fn flush(&mut self) -> bool {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return false,
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        !self.closing
    }

    /// Reads what arrived; `None` when the client is gone (or broke the protocol).
    pub fn read(&mut self) -> Option<Vec<(u8, Vec<u8>)>> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => None,
            Ok(n) => {
                self.inbuf.extend_from_slice(&chunk[..n]);
                parse_frames(&mut self.inbuf).ok()
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(Vec::new()),
            Err(_) => None,
        }
    }
}

/// The container's side and the monitor's side of its stdio.
pub struct ContainerIo {
    pub stdio: Stdio,
    /// What the container gets; closed by the monitor once it launched.
    pub theirs: Vec<OwnedFd>,
    pub stdout: File,
    pub stderr: Option<File>,
    /// Where the container's stdin is written: a pipe, or the pty master.
    pub stdin: Option<File>,
    /// The pty master, for terminal sizes.
    pub tty: Option<File>,
}

fn nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map(|_| ())
}

/// Pipes, or a pty whose slave becomes the container's stdin, stdout and stderr (and controlling terminal).
pub fn container_io(terminal: bool, stdin: bool) -> nix::Result<ContainerIo> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    if terminal {
        let pty = nix::pty::openpty(None, None)?;
        for fd in [&pty.master, &pty.slave] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        }
        nonblocking(&pty.master)?;
        let slave: RawFd = pty.slave.as_raw_fd();
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(5)));
        let input = if stdin { Some(File::from(dup(&pty.master)?)) } else { None };
        let tty = File::from(dup(&pty.master)?);
        return Ok(ContainerIo {
            stdio: Stdio { stdin: slave, stdout: slave, stderr: slave },
            theirs: vec![pty.slave],
            stdout: File::from(pty.master),
            stderr: None,
            stdin: input,
            tty: Some(tty),
        });
    }
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (stdin_theirs, stdin_ours) = if stdin {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        nonblocking(&w)?;
        (r, Some(File::from(w)))
    } else {
        (nix::fcntl::open("/dev/null", OFlag::O_RDONLY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())?, None)
    };
    nonblocking(&out_r)?;
    nonblocking(&err_r)?;
    Ok(ContainerIo {
        stdio: Stdio { stdin: stdin_theirs.as_raw_fd(), stdout: out_w.as_raw_fd(), stderr: err_w.as_raw_fd() },
        theirs: vec![stdin_theirs, out_w, err_w],
        stdout: File::from(out_r),
        stderr: Some(File::from(err_r)),
        stdin: stdin_ours,
        tty: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_taken_whole_and_oversized_ones_refused() {
        let mut buf = [frame(STDIN, b"abc"), frame(RESIZE, &[0, 24, 0, 80])].concat();
        buf.extend_from_slice(&frame(STDIN, b"partial")[..4]);
        let frames = parse_frames(&mut buf).unwrap();
        assert_eq!(frames, vec![(STDIN, b"abc".to_vec()), (RESIZE, vec![0, 24, 0, 80])]);
        assert_eq!(buf.len(), 4);
        let mut big = vec![STDIN];
        big.extend_from_slice(&((MAX_FRAME as u32) + 1).to_be_bytes());
        assert!(parse_frames(&mut big).is_err());
    }
}
