use std::sync::Arc;

use k8s_cri::v1 as cri;

use crate::agent::Agent;
use crate::error::ReefError;

/// Removes a container, killing it if it still runs; a missing container is fine.
pub async fn handle(
    agent: Arc<Agent>,
    req: cri::RemoveContainerRequest,
) -> Result<cri::RemoveContainerResponse, ReefError> {
    crate::blocking::run("remove container task", move || agent.containers.remove(&agent.pods, &req.container_id))
        .await?;
    Ok(cri::RemoveContainerResponse {})
}
