use std::sync::Arc;

use k8s_cri::v1 as cri;

use super::container_exec::{running_container, validate};
use crate::agent::Agent;
use crate::error::ReefError;
use crate::streaming::Pending;
use crate::streaming::attach::AttachRequest;

/// Attach: a single-use URL on the streaming server, where the client joins the container's own stdio (held by
/// the pod monitor).
pub async fn handle(agent: Arc<Agent>, req: cri::AttachRequest) -> Result<cri::AttachResponse, ReefError> {
    let opts = validate(&req.container_id, req.tty, req.stdin, req.stdout, req.stderr)?;
    let container_id = running_container(&agent, &req.container_id).await?;
    let url = agent.streaming.url(Pending::Attach(AttachRequest { container_id, opts }))?;
    Ok(cri::AttachResponse { url })
}
