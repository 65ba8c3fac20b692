//! Reef's own gRPC API: what the CRI does not carry and rctl or an orchestrator needs.
//! Generated at build time from `proto/reef/v1/*.proto`.

pub mod v1 {
    tonic::include_proto!("reef.v1");
}
