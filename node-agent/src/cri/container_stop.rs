use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1 as cri;

use crate::agent::Agent;
use crate::error::ReefError;

/// The stop signal, SIGKILL after `timeout` seconds; a stopped or missing container is fine.
pub async fn handle(
    agent: Arc<Agent>,
    req: cri::StopContainerRequest,
) -> Result<cri::StopContainerResponse, ReefError> {
    let timeout = Duration::from_secs(req.timeout.max(0) as u64);
    crate::blocking::run("stop container task", move || agent.containers.stop(&agent.pods, &req.container_id, timeout))
        .await?;
    Ok(cri::StopContainerResponse {})
}
