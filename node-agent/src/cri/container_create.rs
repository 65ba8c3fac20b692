use std::sync::Arc;

use k8s_cri::v1 as cri;

use crate::agent::Agent;
use crate::containers::CreateRequest;
use crate::error::ReefError;

pub async fn handle(
    agent: Arc<Agent>,
    req: cri::CreateContainerRequest,
) -> Result<cri::CreateContainerResponse, ReefError> {
    let config = req.config.ok_or_else(|| ReefError::InvalidArgument("container config is required".into()))?;
    let sandbox = req.sandbox_config.unwrap_or_default();
    let record = crate::blocking::run("create container task", move || {
        let request = CreateRequest { pod_id: &req.pod_sandbox_id, config: &config, sandbox: &sandbox };
        agent.containers.create(&agent.pods, agent.puller.store(), &request)
    })
    .await?;
    tracing::info!(container = %record.id, pod = %record.pod_id, name = %record.name, "container created");
    Ok(cri::CreateContainerResponse { container_id: record.id })
}
