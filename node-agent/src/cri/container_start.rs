use std::sync::Arc;

use k8s_cri::v1 as cri;

use crate::agent::Agent;
use crate::error::ReefError;

pub async fn handle(
    agent: Arc<Agent>,
    req: cri::StartContainerRequest,
) -> Result<cri::StartContainerResponse, ReefError> {
    crate::blocking::run("start container task", move || agent.containers.start(&agent.pods, &req.container_id))
        .await?;
    Ok(cri::StartContainerResponse {})
}
