//! Native container runtime: OCI spec in, running container out. Knows nothing of gRPC or the CRI.
//! Filled in by the pods-and-containers work (issue 3).
