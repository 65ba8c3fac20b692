use std::collections::HashMap;
use std::sync::Arc;

use k8s_cri::v1 as cri;

use super::container_status;
use crate::agent::Agent;
use crate::error::ReefError;
use crate::pods::{PodRecord, PodState};

pub fn to_cri_state(state: PodState) -> i32 {
    match state {
        PodState::Ready => cri::PodSandboxState::SandboxReady as i32,
        PodState::NotReady => cri::PodSandboxState::SandboxNotready as i32,
    }
}

pub fn metadata(p: &PodRecord) -> cri::PodSandboxMetadata {
    cri::PodSandboxMetadata {
        name: p.name.clone(),
        uid: p.uid.clone(),
        namespace: p.namespace.clone(),
        attempt: p.attempt,
    }
}

/// The CRI status of a pod from its record.
pub fn status_of(pod: &PodRecord) -> cri::PodSandboxStatus {
    cri::PodSandboxStatus {
        id: pod.id.clone(),
        metadata: Some(metadata(pod)),
        state: to_cri_state(pod.state),
        created_at: pod.created_at,
        network: Some(cri::PodSandboxNetworkStatus {
            ip: pod.ips.first().cloned().unwrap_or_default(),
            additional_ips: pod.ips.iter().skip(1).map(|ip| cri::PodIp { ip: ip.clone() }).collect(),
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(cri::NamespaceOption {
                    network: pod.network_mode,
                    pid: pod.pid_mode,
                    ipc: pod.ipc_mode,
                    ..Default::default()
                }),
            }),
        }),
        labels: pod.labels.clone().into_iter().collect(),
        annotations: pod.annotations.clone().into_iter().collect(),
        runtime_handler: pod.runtime_handler.clone(),
    }
}

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
