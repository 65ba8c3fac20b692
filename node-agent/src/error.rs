//! reefd's error type and the one place where errors become gRPC statuses.

use reef_images::{ErrorKind, ImageError};
use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum ReefError {
    #[error("{0}")]
    InvalidArgument(String),

    #[error("pull image {image:?}")]
    Pull {
        image: String,
        #[source]
        source: ImageError,
    },

    #[error("image {image:?}")]
    Image {
        image: String,
        #[source]
        source: ImageError,
    },

    #[error("pod network")]
    Network(#[source] reef_netplug::NetError),

    #[error("{0}")]
    AlreadyExists(String),

    #[error("{0}")]
    NotFound(String),

    #[error("{0}")]
    FailedPrecondition(String),

    #[error("{0}")]
    DeadlineExceeded(String),

    /// The pod's monitor could not be reached: it is gone with its pod, or the node rebooted.
    #[error("the pod's monitor is unreachable")]
    MonitorUnreachable(#[source] reef_runtime::monitor::client::ClientError),

    /// The monitor was reached, and the call broke off or came back garbled.
    #[error("the pod's monitor")]
    MonitorCall(#[source] reef_runtime::monitor::client::ClientError),

    /// A step of the runtime failed; `context` says which, the runtime's error why (errno and path kept).
    #[error("{context}")]
    Runtime {
        context: String,
        #[source]
        source: reef_runtime::RuntimeError,
    },

    /// The runtime tried and the operation failed (an exec that could not run, a setup step refused).
    #[error("{0}")]
    Failed(String),

    #[error("{0}")]
    Unavailable(String),

    #[error("{0}")]
    ResourceExhausted(String),

    #[error("{0} is not implemented yet")]
    Unimplemented(&'static str),

    #[error("{0}")]
    Internal(String),
}

impl ReefError {
    pub fn code(&self) -> Code {
        match self {
            ReefError::InvalidArgument(_) => Code::InvalidArgument,
            ReefError::Pull { source, .. } | ReefError::Image { source, .. } => match source.kind() {
                ErrorKind::InvalidArgument => Code::InvalidArgument,
                ErrorKind::NotFound => Code::NotFound,
                ErrorKind::Unauthenticated => Code::Unauthenticated,
                ErrorKind::PermissionDenied => Code::PermissionDenied,
                ErrorKind::BadContent => Code::FailedPrecondition,
                ErrorKind::DataLoss => Code::DataLoss,
                ErrorKind::Unavailable => Code::Unavailable,
                ErrorKind::ResourceExhausted => Code::ResourceExhausted,
                ErrorKind::Cancelled => Code::Cancelled,
                ErrorKind::Internal => Code::Internal,
            },
            ReefError::Network(e) => match e.kind() {
                reef_netplug::ErrorKind::InvalidArgument => Code::InvalidArgument,
                reef_netplug::ErrorKind::Conflict => Code::AlreadyExists,
                reef_netplug::ErrorKind::Exhausted => Code::ResourceExhausted,
                reef_netplug::ErrorKind::NotReady => Code::FailedPrecondition,
                reef_netplug::ErrorKind::Internal => Code::Internal,
            },
            ReefError::AlreadyExists(_) => Code::AlreadyExists,
            ReefError::NotFound(_) => Code::NotFound,
            ReefError::FailedPrecondition(_) => Code::FailedPrecondition,
            ReefError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ReefError::Failed(_) | ReefError::MonitorCall(_) => Code::Unknown,
            ReefError::MonitorUnreachable(_) => Code::FailedPrecondition,
            ReefError::Runtime { source, .. } => runtime_code(source),
            ReefError::Unavailable(_) => Code::Unavailable,
            ReefError::Unimplemented(_) => Code::Unimplemented,
            ReefError::ResourceExhausted(_) => Code::ResourceExhausted,
            ReefError::Internal(_) => Code::Internal,
        }
    }
}

impl From<crate::spec::SpecError> for ReefError {
    fn from(e: crate::spec::SpecError) -> Self {
        use reef_runtime::apparmor::AppArmorError;
        match e {
            crate::spec::SpecError::Unsupported(_) => ReefError::FailedPrecondition(e.to_string()),
            // The node cannot apply the profile: no AppArmor, or Reef's default profile would not load.
            crate::spec::SpecError::AppArmor(
                AppArmorError::NotEnabled { .. } | AppArmorError::ReadProfiles(_) | AppArmorError::LoadDefault(_),
            ) => ReefError::FailedPrecondition(e.to_string()),
            _ => ReefError::InvalidArgument(e.to_string()),
        }
    }
}

/// The runtime's failures, classified once: what the request asked for wrongly is InvalidArgument, what the
/// runtime cannot do FailedPrecondition, a step that was tried and failed Unknown (as a failed launch is in
/// containerd), and trouble with reefd's own files Internal.
fn runtime_code(e: &reef_runtime::RuntimeError) -> Code {
    use reef_runtime::RuntimeError as R;
    use reef_runtime::plan::PlanError;
    use reef_runtime::users::UserError;
    match e {
        R::Plan(PlanError::Seccomp(_) | PlanError::Invalid(_)) => Code::InvalidArgument,
        R::Plan(PlanError::Missing(_) | PlanError::Unsupported(_)) => Code::FailedPrecondition,
        R::User(UserError::Read { .. }) => Code::Internal,
        R::User(_) | R::Sysctl(_) | R::Seccomp(_) => Code::InvalidArgument,
        R::MonitorClient(reef_runtime::monitor::client::ClientError::Connect { .. }) => Code::FailedPrecondition,
        R::Launch(_) | R::Cgroup(_) | R::MonitorClient(_) => Code::Unknown,
        R::Log(_) | R::Rootfs(_) | R::Pin(_) | R::MountNs(_) | R::Monitor(_) | R::Io { .. } => Code::Internal,
    }
}

/// Wraps a runtime failure with what reefd was doing: `.map_err(runtime("mount the rootfs"))`.
pub fn runtime<E: Into<reef_runtime::RuntimeError>>(context: impl Into<String>) -> impl FnOnce(E) -> ReefError {
    let context = context.into();
    move |e| ReefError::Runtime { context, source: e.into() }
}

/// An I/O failure of reefd's own (a record, a directory), named by what it was doing.
pub fn internal(what: &str) -> impl Fn(std::io::Error) -> ReefError + '_ {
    move |e| ReefError::Internal(format!("{what}: {e}"))
}

/// The whole cause chain on one line: kubelet shows only the status message, so it must carry everything.
pub use reef_runtime::error_chain as chain;

impl From<ReefError> for tonic::Status {
    fn from(e: ReefError) -> Self {
        tonic::Status::new(e.code(), chain(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_failures_name_the_image_and_the_cause() {
        let e = ReefError::Pull {
            image: "docker.io/library/nope:latest".into(),
            source: ImageError::RemoteNotFound { registry: "docker.io".into(), detail: "manifest unknown".into() },
        };
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("docker.io/library/nope:latest"));
        assert!(status.message().contains("manifest unknown"));
    }

    #[test]
    fn runtime_failures_are_classified_once_and_keep_their_context_and_cause() {
        use reef_runtime::users::UserError;
        let user = runtime::<UserError>("image busybox")(UserError::NoSuchUser("app".into()));
        assert_eq!(user.code(), Code::InvalidArgument);
        let status = tonic::Status::from(user);
        assert_eq!(status.message(), "image busybox: no user \"app\" in the image's /etc/passwd");
        let read = runtime::<UserError>("image busybox")(UserError::Read {
            path: "/etc/passwd",
            errno: nix::errno::Errno::EIO,
        });
        assert_eq!(read.code(), Code::Internal);
        let plan = runtime::<reef_runtime::plan::PlanError>("plan")(reef_runtime::plan::PlanError::Missing("root"));
        assert_eq!(plan.code(), Code::FailedPrecondition);
    }

    #[test]
    fn hostile_layers_are_failed_preconditions_and_digest_mismatches_data_loss() {
        let hostile = ReefError::Pull {
            image: "x".into(),
            source: ImageError::UnsafeLayerEntry { entry: "../x".into(), reason: "escapes".into() },
        };
        assert_eq!(hostile.code(), Code::FailedPrecondition);
        let mismatch = ReefError::Pull {
            image: "x".into(),
            source: ImageError::DigestMismatch { what: "l".into(), expected: "a".into(), actual: "b".into() },
        };
        assert_eq!(mismatch.code(), Code::DataLoss);
    }
}
