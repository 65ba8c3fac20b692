use std::collections::HashMap;
use std::sync::Arc;

use k8s_cri::v1 as cri;

use crate::agent::Agent;
use crate::containers::cri_status::status_of;
use crate::error::ReefError;

pub async fn handle(
    agent: Arc<Agent>,
    req: cri::ContainerStatusRequest,
) -> Result<cri::ContainerStatusResponse, ReefError> {
    let c = agent
        .containers
        .get(&req.container_id)
        .ok_or_else(|| ReefError::NotFound(format!("container {:?} not found", req.container_id)))?;
    let status = {
        let (agent, c) = (Arc::clone(&agent), c.clone());
        crate::blocking::value("container status task", move || {
            status_of(&agent.containers, &c, &agent.containers.observe(&agent.pods, &c))
        })
        .await?
    };
    let mut info = HashMap::new();
    if req.verbose {
        info.insert("info".to_string(), serde_json::to_string(&c).unwrap_or_default());
    }
    Ok(cri::ContainerStatusResponse { status: Some(status), info })
}
