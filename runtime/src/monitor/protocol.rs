//! The monitor's socket protocol: one JSON request per line, one JSON response per line. Errors carry a kind and
//! the errno, not only text, so reefd maps them to gRPC codes without parsing messages.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::launch::LaunchPlan;

// Requests are decoded one at a time and never stored, so the size of the Create variant costs nothing.
//
// The plan's type is a parameter so that the monitor can decode a Create without its plan (`PlanHead`): the plan
// is decoded, and the container built, in a short-lived child of the monitor (see `monitor::build`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request<P = LaunchPlan> {
    /// Sets a container up behind its start gate, its output going to `log_path`.
    Create {
        id: String,
        plan: P,
        log_path: PathBuf,
        /// The pod's log directory: `log_path` is opened below it and never outside (see `logging`).
        #[serde(default)]
        log_dir: Option<PathBuf>,
        /// The container's stdin is a pipe (or its pty) that attach clients write; otherwise /dev/null.
        #[serde(default)]
        stdin: bool,
        /// Close the container's stdin when the first attach client that wrote it leaves.
        #[serde(default)]
        stdin_once: bool,
    },
    /// Turns this connection into an attach stream (see `monitor::attach`) once answered.
    Attach {
        id: String,
        stdin: bool,
    },
    Start {
        id: String,
    },
    Signal {
        id: String,
        signal: i32,
    },
    State {
        id: String,
    },
    /// Continue the log in a new file at the same path (kubelet rotated it).
    ReopenLog {
        id: String,
    },
    /// Drop an exited container's bookkeeping.
    Forget {
        id: String,
    },
    /// Exit once no container is running.
    Shutdown,
}

/// What the monitor itself reads of a Create's plan: only what it needs before the plan's own child takes over.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PlanHead {
    #[serde(default)]
    pub terminal: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Created,
    Running,
    Exited,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The CRI's exit code: 128 + signal for a signal death.
    pub code: i32,
    pub signal: Option<i32>,
    /// Unix time in nanoseconds.
    pub finished_at: i64,
    /// The kernel's OOM killer ended a process of the container (its cgroup counted an OOM kill).
    #[serde(default)]
    pub oom_killed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub pid: i32,
    pub status: Status,
    pub started_at: Option<i64>,
    pub exit: Option<ExitRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    InvalidState,
    Launch,
    Io,
    BadRequest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok { state: Option<ContainerState> },
    Error { kind: ErrorKind, errno: Option<i32>, message: String },
}

impl Response {
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response::Error { kind, errno: None, message: message.into() }
    }
}
