//! Pod networking: bridge, veth, IPAM, SNAT and hostPort over netlink. Knows nothing of gRPC or the CRI.
//! Filled in by the networking work (issue 4).
