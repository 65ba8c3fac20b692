//! The records children send back. Fixed-size and plain (kind, step, errno) so a child writes one with a single
//! write(2) and no allocation, and the caller gets a typed error rather than a string.

use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::unistd::Pid;

/// The step of container setup a child was at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    Pipe = 1,
    Fork,
    Stdio,
    JoinNamespace,
    Unshare,
    ForkInit,
    MakeRootPrivate,
    BindRootfs,
    Mount,
    CreateDevices,
    PivotRoot,
    Sysctl,
    MaskPath,
    ReadonlyPath,
    ReadonlyRootfs,
    Hostname,
    Setgroups,
    Setgid,
    Setuid,
    Capabilities,
    Seccomp,
    Chdir,
    NoNewPrivileges,
    WaitStart,
    Exec,
    Device,
    OomScoreAdj,
    JoinCgroup,
    AppArmor,
    Unknown,
}

impl Step {
    const ALL: [Step; 29] = [
        Step::Pipe,
        Step::Fork,
        Step::Stdio,
        Step::JoinNamespace,
        Step::Unshare,
        Step::ForkInit,
        Step::MakeRootPrivate,
        Step::BindRootfs,
        Step::Mount,
        Step::CreateDevices,
        Step::PivotRoot,
        Step::Sysctl,
        Step::MaskPath,
        Step::ReadonlyPath,
        Step::ReadonlyRootfs,
        Step::Hostname,
        Step::Setgroups,
        Step::Setgid,
        Step::Setuid,
        Step::Capabilities,
        Step::Seccomp,
        Step::Chdir,
        Step::NoNewPrivileges,
        Step::WaitStart,
        Step::Exec,
        Step::Device,
        Step::OomScoreAdj,
        Step::JoinCgroup,
        Step::AppArmor,
    ];

    fn from_u32(v: u32) -> Step {
        Self::ALL.into_iter().find(|s| *s as u32 == v).unwrap_or(Step::Unknown)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("container setup failed at {step:?}{}", detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Child {
        step: Step,
        /// Which item of the step (the mount's destination, say), when the step has several.
        detail: Option<String>,
        #[source]
        errno: Errno,
    },
    #[error("launch protocol failed at {step:?}")]
    Protocol {
        step: Step,
        #[source]
        errno: Errno,
    },
    #[error("invalid launch plan: {0}")]
    InvalidPlan(String),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error("the container was already started")]
    AlreadyStarted,
    #[error("launch protocol: {0}")]
    Unexpected(&'static str),
}

pub enum Report {
    Ready,
    Failed { step: Step, errno: Errno, index: u32 },
}

const READY: u32 = 1;
const FAILED: u32 = 2;

/// The pipe ends a forked role reports on, and the start gate init waits at (none for an exec).
#[derive(Clone, Copy)]
pub struct Pipes<'a> {
    pub reports: BorrowedFd<'a>,
    pub start: Option<BorrowedFd<'a>>,
}

/// In a child: one record, one write.
pub fn send_failed(fd: BorrowedFd<'_>, step: Step, errno: Errno) {
    send_failed_at(fd, step, errno, u32::MAX);
}

/// As `send_failed`, naming the item of the step (a mount's index) that failed.
pub fn send_failed_at(fd: BorrowedFd<'_>, step: Step, errno: Errno, index: u32) {
    let mut rec = [0u8; 16];
    rec[..4].copy_from_slice(&FAILED.to_ne_bytes());
    rec[4..8].copy_from_slice(&(step as u32).to_ne_bytes());
    rec[8..12].copy_from_slice(&(errno as i32).to_ne_bytes());
    rec[12..].copy_from_slice(&index.to_ne_bytes());
    raw_write(fd, &rec);
}

pub fn send_ready(fd: BorrowedFd<'_>) {
    let mut rec = [0u8; 16];
    rec[..4].copy_from_slice(&READY.to_ne_bytes());
    raw_write(fd, &rec);
}

pub fn send_pid(fd: BorrowedFd<'_>, pid: Pid) {
    raw_write(fd, &pid.as_raw().to_ne_bytes());
}

fn raw_write(fd: BorrowedFd<'_>, data: &[u8]) {
    // A short or failed write can only lose the report, which the reader then sees as end-of-file.
    let _ = nix::unistd::write(fd, data);
}

/// In a child: reports the failure and exits, since there is nobody to return an error to.
pub fn fail(reports: BorrowedFd<'_>, step: Step, errno: Errno) -> ! {
    send_failed(reports, step, errno);
    crate::sys::exit_now(1)
}

/// In a child: the value, or the failure reported (and the child gone).
pub fn check<T>(reports: BorrowedFd<'_>, step: Step, r: nix::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => fail(reports, step, e),
    }
}

/// In a child: `f` for each of `count` items of a step, the first failure reported with its item's index (which
/// the caller turns into the item's name, see `launch::child_error`).
pub fn each(reports: BorrowedFd<'_>, step: Step, count: usize, mut f: impl FnMut(usize) -> nix::Result<()>) {
    for i in 0..count {
        if let Err(e) = f(i) {
            fail_at(reports, step, e, i);
        }
    }
}

/// As `fail`, naming the item of the step that failed by its index.
pub fn fail_at(reports: BorrowedFd<'_>, step: Step, errno: Errno, index: usize) -> ! {
    send_failed_at(reports, step, errno, index as u32);
    crate::sys::exit_now(1)
}

pub fn write_all(fd: &impl AsFd, data: &[u8]) -> Result<(), Errno> {
    let mut off = 0;
    while off < data.len() {
        match nix::unistd::write(fd, &data[off..]) {
            Ok(n) => off += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_exact(fd: &impl AsFd, buf: &mut [u8]) -> Result<bool, Errno> {
    let mut off = 0;
    while off < buf.len() {
        match nix::unistd::read(fd, &mut buf[off..]) {
            Ok(0) => return if off == 0 { Ok(false) } else { Err(Errno::EPIPE) },
            Ok(n) => off += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The next report, or `None` at end-of-file (a successful exec, or a child gone without a word).
pub fn read_report(fd: &impl AsFd) -> Result<Option<Report>, LaunchError> {
    let mut rec = [0u8; 16];
    let got = read_exact(fd, &mut rec).map_err(|e| LaunchError::Protocol { step: Step::Unknown, errno: e })?;
    if !got {
        return Ok(None);
    }
    let word = |i: usize| u32::from_ne_bytes([rec[i], rec[i + 1], rec[i + 2], rec[i + 3]]);
    Ok(Some(match word(0) {
        READY => Report::Ready,
        _ => Report::Failed { step: Step::from_u32(word(4)), errno: Errno::from_raw(word(8) as i32), index: word(12) },
    }))
}

pub fn read_pid(fd: &impl AsFd) -> Result<Option<Pid>, Errno> {
    let mut buf = [0u8; 4];
    Ok(read_exact(fd, &mut buf)?.then(|| Pid::from_raw(i32::from_ne_bytes(buf))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_survives_the_pipe() {
        for step in Step::ALL {
            assert_eq!(Step::from_u32(step as u32), step);
        }
        assert_eq!(Step::ALL.len(), Step::Unknown as usize - 1, "ALL lists every step");
    }
}
