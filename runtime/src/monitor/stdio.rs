//! The monitor's stdio side: containers' output pumped into their CRI logs and to attach clients, attach clients'
//! input written to containers' stdin, neither ever waited for.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::SystemTime;

use super::{Container, Monitor, attach};
use crate::logging::Stream;

impl Monitor {
    /// Output the container wrote: up to `PUMP_BUDGET` per round, so that a container writing as fast as the
    /// monitor reads cannot keep the pod's loop from its other containers and clients.
    pub(super) fn pump(&mut self, id: &str, stream: Stream) {
        let Some(c) = self.containers.get_mut(id) else { return };
        drain(c, &mut self.attachers, id, stream, PUMP_BUDGET);
    }
}

/// What one poll round reads of one pipe at most.
const PUMP_BUDGET: usize = 128 << 10;

/// Reads up to `budget` bytes of a container's `stream`, or until its pipe is empty, into its log and to its
/// attach clients. A pipe that ended or failed is closed.
pub(super) fn drain(c: &mut Container, attachers: &mut [attach::Attacher], id: &str, stream: Stream, budget: usize) {
    let pipe = match stream {
        Stream::Stdout => &mut c.stdout,
        Stream::Stderr => &mut c.stderr,
    };
    let Some(f) = pipe.as_mut() else { return };
    let mut buf = [0u8; 32 * 1024];
    let mut read = 0;
    while read < budget {
        match f.read(&mut buf) {
            Ok(0) => {
                *pipe = None;
                return;
            }
            Ok(n) => {
                read += n;
                if let Err(e) = c.log.write(stream, &buf[..n], SystemTime::now()) {
                    // The log is kubelet's to rotate or lose; the container keeps running either way.
                    let _ = writeln!(std::io::stderr(), "reef-monitor: {e}");
                }
                deliver(attachers, id, stream, &buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                *pipe = None;
                return;
            }
        }
    }
}

/// Copies output to the container's attach clients; one too far behind is marked to go.
pub(super) fn deliver(attachers: &mut [attach::Attacher], id: &str, stream: Stream, data: &[u8]) {
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
    pub(super) fn serve_attacher(&mut self, i: usize) -> bool {
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
    pub(super) fn write_stdin(&mut self, id: &str, data: &[u8]) {
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
