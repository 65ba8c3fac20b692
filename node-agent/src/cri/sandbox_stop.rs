use std::sync::Arc;

use k8s_cri::v1 as cri;

use crate::agent::Agent;
use crate::error::ReefError;

/// Stopping a pod that is already stopped, or gone, succeeds: kubelet retries stops.
pub async fn handle(
    agent: Arc<Agent>,
    req: cri::StopPodSandboxRequest,
) -> Result<cri::StopPodSandboxResponse, ReefError> {
    if req.pod_sandbox_id.is_empty() {
        return Err(ReefError::InvalidArgument("pod sandbox id is required".into()));
    }
    tokio::task::spawn_blocking(move || agent.pods.stop(&req.pod_sandbox_id))
        .await
        .map_err(|e| ReefError::Internal(format!("stop pod task: {e}")))??;
    Ok(cri::StopPodSandboxResponse {})
}
