//! The CRI's view of a pod (PodSandboxStatus), from its record.

use k8s_cri::v1 as cri;

use super::{PodRecord, PodState};

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
