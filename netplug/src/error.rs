//! netplug's one error type. `kind()` classifies it for callers (node-agent maps kinds to gRPC codes).

use std::path::PathBuf;

use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid port mapping {0}")]
    InvalidPortMapping(String),

    #[error("host port {port} is already taken by pod {holder}")]
    HostPortTaken { port: String, holder: String },

    #[error("no free address left in {0}")]
    Exhausted(String),

    #[error("network config: {0}")]
    Config(String),

    #[error("{step}")]
    Netlink {
        step: String,
        #[source]
        errno: Errno,
    },

    #[error("build nftables rules: {0}")]
    NftBuild(String),

    #[error("nftables table {table}")]
    Nft {
        table: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("CNI {command} of {plugin}: {message}")]
    Cni { command: &'static str, plugin: String, message: String },

    #[error("pod network is not ready: {0}")]
    NotReady(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    /// The resource asked for is held by someone else (a host port).
    Conflict,
    Exhausted,
    NotReady,
    Internal,
}

impl NetError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            NetError::InvalidPortMapping(_) => ErrorKind::InvalidArgument,
            NetError::HostPortTaken { .. } => ErrorKind::Conflict,
            NetError::Exhausted(_) => ErrorKind::Exhausted,
            NetError::NotReady(_) => ErrorKind::NotReady,
            _ => ErrorKind::Internal,
        }
    }

    pub(crate) fn netlink(step: impl Into<String>) -> impl FnOnce(Errno) -> NetError {
        let step = step.into();
        move |errno| NetError::Netlink { step, errno }
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> NetError {
        let path = path.into();
        move |source| NetError::Io { what, path, source }
    }
}
