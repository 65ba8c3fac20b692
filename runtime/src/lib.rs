//! Reef's native container runtime: an OCI runtime spec in, a running container out.
//! Knows nothing of gRPC or the CRI; node-agent maps CRI requests to OCI specs and calls in here.
//!
//! Split by kernel concern (as youki's libcontainer is): `launch` (forking a container into its namespaces, root
//! filesystem and user, behind a start gate), `mounts` (OCI mount options to mount(2) flags), `rootfs` (overlay
//! root filesystems), `mountpoints` (the shared layer of mount points above an image) and `logging` (the CRI log
//! format the pod monitor writes).

#![deny(unsafe_code)]

pub mod apparmor;
pub mod cgroups;
pub mod clock;
pub mod error;
pub mod launch;
pub mod logging;
pub mod monitor;
pub mod mount_ns;
pub mod mountpoints;
pub mod mounts;
pub mod pin;
pub mod plan;
pub mod rootfs;
pub mod seccomp;
mod sys;
pub mod sysctl;
pub mod userns;
pub mod users;

/// The spec crate this runtime is built against; callers use this one so versions cannot mix.
pub use oci_spec;

pub use error::{Result, RuntimeError};

/// An error and its causes on one line, for messages that cross a process boundary.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
