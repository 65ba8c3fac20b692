use std::sync::Arc;

use k8s_cri::v1 as cri;

use crate::agent::Agent;
use crate::error::ReefError;

/// Removing a pod that is not there succeeds (critest checks it).
pub async fn handle(
    agent: Arc<Agent>,
    req: cri::RemovePodSandboxRequest,
) -> Result<cri::RemovePodSandboxResponse, ReefError> {
    if req.pod_sandbox_id.is_empty() {
        return Err(ReefError::InvalidArgument("pod sandbox id is required".into()));
    }
    tokio::task::spawn_blocking(move || {
        if let Some(pod) = agent.pods.get(&req.pod_sandbox_id) {
            for c in agent.containers.of_pod(&pod.id) {
                agent.containers.remove(&agent.pods, &c.id)?;
            }
        }
        agent.pods.remove(&req.pod_sandbox_id)
    })
    .await
    .map_err(|e| ReefError::Internal(format!("remove pod task: {e}")))??;
    Ok(cri::RemovePodSandboxResponse {})
}
