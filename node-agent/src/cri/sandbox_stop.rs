use std::sync::Arc;

use k8s_cri::v1 as cri;

use super::container_events::publish_pod;
use crate::agent::Agent;
use crate::error::ReefError;
use crate::events::Action;

/// Stopping a pod that is already stopped, or gone, succeeds: kubelet retries stops.
pub async fn handle(
    agent: Arc<Agent>,
    req: cri::StopPodSandboxRequest,
) -> Result<cri::StopPodSandboxResponse, ReefError> {
    if req.pod_sandbox_id.is_empty() {
        return Err(ReefError::InvalidArgument("pod sandbox id is required".into()));
    }
    crate::blocking::run("stop pod task", move || {
        // Containers first: a pod is stopped once nothing in it runs.
        if let Some(pod) = agent.pods.get(&req.pod_sandbox_id) {
            for c in agent.containers.of_pod(&pod.id) {
                agent.containers.stop(&agent.pods, &c.id, std::time::Duration::ZERO)?;
            }
        }
        if let Some(pod) = agent.pods.stop(&req.pod_sandbox_id)? {
            publish_pod(&agent, &pod, Action::Stopped);
        }
        Ok::<_, ReefError>(())
    })
    .await?;
    Ok(cri::StopPodSandboxResponse {})
}
