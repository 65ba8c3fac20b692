//! Reef's native container runtime: an OCI runtime spec in, a running container out.
//! Knows nothing of gRPC or the CRI; node-agent maps CRI requests to OCI specs and calls in here.
//!
//! Split by kernel concern (as youki's libcontainer is): `cgroups` (v1 and v2 through cgroups-rs), `seccomp`
//! (RuntimeDefault and profile files compiled to BPF), `logging` (the CRI log format the pod monitor writes).

#![deny(unsafe_code)]

pub mod cgroups;
pub mod error;
pub mod logging;
pub mod seccomp;

/// The spec crate this runtime is built against; callers use this one so versions cannot mix.
pub use oci_spec;

pub use error::{Result, RuntimeError};
