use std::sync::Arc;

use k8s_cri::v1 as cri;

use super::container_events::{pod_event, publish_pod};
use crate::agent::Agent;
use crate::error::ReefError;
use crate::events::Action;

/// Removing a pod that is not there succeeds (critest checks it).
pub async fn handle(
    agent: Arc<Agent>,
    req: cri::RemovePodSandboxRequest,
) -> Result<cri::RemovePodSandboxResponse, ReefError> {
    if req.pod_sandbox_id.is_empty() {
        return Err(ReefError::InvalidArgument("pod sandbox id is required".into()));
    }
    crate::blocking::run("remove pod task", move || {
        let Some(pod) = agent.pods.get(&req.pod_sandbox_id) else { return Ok::<(), ReefError>(()) };
        for c in agent.containers.of_pod(&pod.id) {
            agent.containers.remove(&agent.pods, &c.id)?;
        }
        // Stopped first if it still ran: kubelet sees a pod die before it is deleted.
        if let Some(stopped) = agent.pods.stop(&pod.id)? {
            publish_pod(&agent, &stopped, Action::Stopped);
        }
        // Built while the record still exists: kubelet drops events that carry no pod status.
        let pod = agent.pods.get(&pod.id).unwrap_or(pod);
        let order = agent.containers.event_order(&pod.id);
        let _ordered = order.lock().unwrap_or_else(|p| p.into_inner());
        let deleted = pod_event(&agent, &pod, Action::Deleted, agent.events.wants_cri());
        agent.pods.remove(&pod.id)?;
        agent.events.publish(|_| Some(deleted));
        agent.containers.forget_event_order(&pod.id);
        Ok(())
    })
    .await?;
    Ok(cri::RemovePodSandboxResponse {})
}
