use std::sync::Arc;

use k8s_cri::v1 as cri;

use super::container_exec::{running_container, validate};
use crate::agent::Agent;
use crate::error::ReefError;

/// Attach: checked like Exec; joining the container's own stdio (held by the pod monitor) is not there yet.
pub async fn handle(agent: Arc<Agent>, req: cri::AttachRequest) -> Result<cri::AttachResponse, ReefError> {
    validate(&req.container_id, req.tty, req.stdin, req.stdout, req.stderr)?;
    running_container(&agent, &req.container_id).await?;
    Err(ReefError::Unimplemented("Attach"))
}
