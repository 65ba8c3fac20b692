//! The runtime's error type. Each module has its own enum naming its steps; this one gathers them so callers
//! match on one type. Causes are kept as `source` (errno included), never flattened into strings.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Log(#[from] crate::logging::LogError),

    #[error(transparent)]
    Launch(#[from] crate::launch::LaunchError),

    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),

    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),

    #[error(transparent)]
    Pin(#[from] crate::pin::PinError),

    #[error(transparent)]
    MountNs(#[from] crate::mount_ns::MountNsError),

    #[error(transparent)]
    Monitor(#[from] crate::monitor::MonitorError),

    /// reefd's side of a pod monitor's socket.
    #[error(transparent)]
    MonitorClient(#[from] crate::monitor::client::ClientError),

    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),

    #[error(transparent)]
    User(#[from] crate::users::UserError),

    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),

    #[error(transparent)]
    Sysctl(#[from] crate::sysctl::SysctlError),

    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// The errno of an I/O error, for steps reported as errnos (EIO where the error carries none).
pub(crate) fn io_errno(e: &std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(nix::errno::Errno::EIO as i32))
}
