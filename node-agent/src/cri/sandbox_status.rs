use std::collections::HashMap;
use std::sync::Arc;

use k8s_cri::v1 as cri;

use crate::agent::Agent;
use crate::containers::cri_status as container_status;
use crate::error::ReefError;
use crate::pods::cri_status::status_of;

/// With the pod, the status of each of its containers and when they were taken: kubelet's evented PLEG reads
/// the pod's containers from here instead of listing them (as CRI-O and containerd answer it).
pub async fn handle(
    agent: Arc<Agent>,
    req: cri::PodSandboxStatusRequest,
) -> Result<cri::PodSandboxStatusResponse, ReefError> {
    let pod = agent
        .pods
        .get(&req.pod_sandbox_id)
        .ok_or_else(|| ReefError::NotFound(format!("pod sandbox {:?} not found", req.pod_sandbox_id)))?;
    let status = status_of(&pod);
    let mut info = HashMap::new();
    if req.verbose {
        info.insert("info".to_string(), serde_json::to_string(&pod).unwrap_or_default());
    }
    let timestamp = reef_runtime::clock::now_nanos();
    let pod_id = pod.id.clone();
    let containers_statuses = crate::blocking::value("pod status task", move || {
        let containers = &agent.containers;
        containers
            .of_pod(&pod_id)
            .iter()
            .map(|c| container_status::status_of(containers, c, &containers.observe(&agent.pods, c)))
            .collect()
    })
    .await?;
    Ok(cri::PodSandboxStatusResponse { status: Some(status), info, containers_statuses, timestamp })
}
