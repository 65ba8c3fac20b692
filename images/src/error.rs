//! The one error type of the image store. Every variant names the step that failed and keeps its cause;
//! node-agent turns `kind()` into a gRPC code in one place.

use std::path::PathBuf;

/// What kind of failure this is, for callers that map errors to protocol codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    Unauthenticated,
    PermissionDenied,
    /// The remote content is unusable: malformed manifest, unsupported media type, hostile layer.
    BadContent,
    /// A digest did not match its content.
    DataLoss,
    Unavailable,
    ResourceExhausted,
    /// The caller stopped the operation.
    Cancelled,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("image {0:?} not found")]
    ImageNotFound(String),

    #[error("not found in registry {registry}: {detail}")]
    RemoteNotFound { registry: String, detail: String },

    #[error("registry {registry} requires valid credentials (unauthorized)")]
    Unauthorized { registry: String },

    #[error("access denied by registry {registry}")]
    Denied { registry: String },

    #[error("registry {registry} unreachable: {reason}")]
    Unreachable { registry: String, reason: String },

    #[error("registry {registry} failed: {reason}")]
    Registry { registry: String, reason: String },

    #[error("malformed manifest: {reason}")]
    MalformedManifest { reason: String },

    #[error("no image for platform {platform} in the index")]
    NoMatchingPlatform { platform: String },

    #[error("unsupported media type {media_type:?}")]
    UnsupportedMediaType { media_type: String },

    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch { what: String, expected: String, actual: String },

    #[error("unsafe layer entry {entry:?}: {reason}")]
    UnsafeLayerEntry { entry: String, reason: String },

    #[error("bad layer archive: {reason}")]
    BadArchive { reason: String },

    #[error("no space left on device while writing {path}")]
    DiskFull { path: PathBuf },

    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("metadata store")]
    Metadata(#[from] redb::Error),

    /// A blocking task of the store's died (panicked) before it finished.
    #[error("{0} stopped: its thread panicked")]
    Panicked(&'static str),

    /// Stopped: the caller cancelled the pull. A layer stopped because another failed says this too, but the
    /// pull then reports the other layer's cause.
    #[error("cancelled")]
    Cancelled,

    #[error("invalid registry configuration: {0}")]
    Config(String),
}

impl ImageError {
    pub fn kind(&self) -> ErrorKind {
        use ImageError::*;
        match self {
            InvalidReference { .. } => ErrorKind::InvalidArgument,
            ImageNotFound(_) | RemoteNotFound { .. } => ErrorKind::NotFound,
            Unauthorized { .. } => ErrorKind::Unauthenticated,
            Denied { .. } => ErrorKind::PermissionDenied,
            Unreachable { .. } => ErrorKind::Unavailable,
            Registry { .. } => ErrorKind::Unavailable,
            MalformedManifest { .. }
            | NoMatchingPlatform { .. }
            | UnsupportedMediaType { .. }
            | UnsafeLayerEntry { .. }
            | BadArchive { .. } => ErrorKind::BadContent,
            DigestMismatch { .. } => ErrorKind::DataLoss,
            DiskFull { .. } => ErrorKind::ResourceExhausted,
            Io { source, .. } if source.raw_os_error() == Some(nix::libc::ENOSPC) => ErrorKind::ResourceExhausted,
            Io { .. } | Metadata(_) | Panicked(_) => ErrorKind::Internal,
            Config(_) => ErrorKind::InvalidArgument,
            Cancelled => ErrorKind::Cancelled,
        }
    }

    /// An I/O error with the path it concerns; ENOSPC becomes `DiskFull` so callers see the cause at once.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(nix::libc::ENOSPC) {
            return ImageError::DiskFull { path };
        }
        ImageError::Io { op, path, source }
    }
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;
