use std::sync::Arc;

use k8s_cri::v1 as cri;

use crate::agent::Agent;
use crate::error::ReefError;
use crate::streaming::Pending;

/// PortForward: a single-use URL on the streaming server; the ports come with each stream (or, over WebSocket,
/// in the URL's query), as in kubelet.
pub async fn handle(agent: Arc<Agent>, req: cri::PortForwardRequest) -> Result<cri::PortForwardResponse, ReefError> {
    if req.pod_sandbox_id.is_empty() {
        return Err(ReefError::InvalidArgument("missing required pod_sandbox_id".into()));
    }
    if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
        return Err(ReefError::InvalidArgument(format!("invalid port {p}: must be between 1 and 65535")));
    }
    let pod = agent
        .pods
        .get(&req.pod_sandbox_id)
        .ok_or_else(|| ReefError::NotFound(format!("pod sandbox {:?} not found", req.pod_sandbox_id)))?;
    if pod.state != crate::pods::PodState::Ready {
        return Err(ReefError::FailedPrecondition(format!("pod sandbox {} is not ready", pod.id)));
    }
    let url = agent.streaming.url(Pending::PortForward { pod_id: pod.id })?;
    Ok(cri::PortForwardResponse { url })
}
