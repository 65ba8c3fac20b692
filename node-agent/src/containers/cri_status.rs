//! The CRI's view of a container (ContainerStatus) and of a pod and its containers at an instant (the snapshot a
//! GetContainerEvents event carries). Here, with the manager, rather than in `cri/`: events are published by the
//! manager as its containers change.

use std::sync::Arc;

use k8s_cri::v1 as cri;

use super::{ContainerRecord, Containers, Observed};
use crate::pods::Pods;

/// The CRI state, timestamps (ns), exit code and reason of an observed container.
pub fn cri_state(c: &ContainerRecord, observed: &Observed) -> (i32, i64, i64, i32, String) {
    use cri::ContainerState as S;
    match observed {
        Observed::Created => (S::ContainerCreated as i32, 0, 0, 0, String::new()),
        Observed::Running { started_at } => (S::ContainerRunning as i32, *started_at, 0, 0, String::new()),
        Observed::Exited { started_at, exit } => {
            let reason = if exit.oom_killed {
                "OOMKilled"
            } else if exit.code == 0 {
                "Completed"
            } else {
                "Error"
            };
            (S::ContainerExited as i32, *started_at, exit.finished_at, exit.code, reason.to_string())
        }
        Observed::Unknown => (S::ContainerUnknown as i32, 0, 0, 0, format!("the monitor of pod {} is gone", c.pod_id)),
    }
}

/// The CRI status of a container as observed now; its resources are what its cgroup holds now.
pub fn status_of(containers: &Containers, c: &ContainerRecord, observed: &Observed) -> cri::ContainerStatus {
    let (state, started_at, finished_at, exit_code, reason) = cri_state(c, observed);
    // What the container was created with, with the limits its cgroup holds now on top (they change with
    // UpdateContainerResources).
    let mut resources = c
        .plan()
        .and_then(|p| p.cgroup.as_ref())
        .map(|g| cri::ContainerResources { linux: Some(linux_resources(&g.resources)), ..Default::default() });
    if let (Some(linux), Some(now)) = (
        resources.as_mut().and_then(|r| r.linux.as_mut()),
        containers.cgroup_path(c).and_then(|p| reef_runtime::cgroups::limits(&p)),
    ) {
        linux.memory_limit_in_bytes = now.memory_limit.map(|m| m as i64).unwrap_or_default();
        // On v2 the cgroup holds a weight, which cannot give back the exact shares: the shares asked are in force
        // when they map to it.
        let asked = reef_runtime::cgroups::cpu_weight(linux.cpu_shares.max(0) as u64);
        if now.cpu_weight.is_none_or(|w| w != asked) {
            linux.cpu_shares = now.cpu_shares.map(|s| s as i64).unwrap_or(linux.cpu_shares);
        }
        linux.cpu_quota = now.cpu_quota.unwrap_or_default();
        linux.cpu_period = now.cpu_period.map(|p| p as i64).unwrap_or(linux.cpu_period);
    }
    cri::ContainerStatus {
        id: c.id.clone(),
        metadata: Some(cri::ContainerMetadata { name: c.name.clone(), attempt: c.attempt }),
        state,
        created_at: c.created_at,
        started_at,
        finished_at,
        exit_code,
        image: Some(cri::ImageSpec { image: c.image.clone(), ..Default::default() }),
        image_ref: c.image_ref.clone(),
        image_id: c.image_id.clone(),
        reason,
        labels: c.labels.clone().into_iter().collect(),
        annotations: c.annotations.clone().into_iter().collect(),
        mounts: c
            .mounts
            .iter()
            .map(|m| cri::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.clone(),
                readonly: m.readonly,
                propagation: m.propagation,
                ..Default::default()
            })
            .collect(),
        log_path: c.log_path.clone(),
        user: c.plan().map(|p| cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: p.uid.into(),
                gid: p.gid.into(),
                supplemental_groups: p.additional_gids.iter().map(|g| i64::from(*g)).collect(),
            }),
        }),
        resources,
        ..Default::default()
    }
}

/// The limits the container was created with (or last updated to), in the CRI's form.
fn linux_resources(r: &reef_runtime::oci_spec::runtime::LinuxResources) -> cri::LinuxContainerResources {
    let cpu = r.cpu().clone().unwrap_or_default();
    let memory = r.memory().unwrap_or_default();
    cri::LinuxContainerResources {
        cpu_period: cpu.period().unwrap_or_default() as i64,
        cpu_quota: cpu.quota().unwrap_or_default(),
        cpu_shares: cpu.shares().unwrap_or_default() as i64,
        memory_limit_in_bytes: memory.limit().unwrap_or_default(),
        memory_swap_limit_in_bytes: memory.swap().unwrap_or_default(),
        cpuset_cpus: cpu.cpus().clone().unwrap_or_default(),
        cpuset_mems: cpu.mems().clone().unwrap_or_default(),
        unified: r.unified().clone().unwrap_or_default().into_iter().collect(),
        ..Default::default()
    }
}

/// Blocking: asks the pod's monitor for each container's state.
pub fn snapshot(
    pods: &Pods,
    containers: &Containers,
    pod_id: &str,
    container_id: &str,
    kind: cri::ContainerEventType,
) -> Arc<cri::ContainerEventResponse> {
    Arc::new(cri::ContainerEventResponse {
        container_id: container_id.to_string(),
        container_event_type: kind as i32,
        created_at: reef_runtime::clock::now_nanos(),
        pod_sandbox_status: pods.get(pod_id).map(|p| crate::pods::cri_status::status_of(&p)),
        containers_statuses: containers
            .of_pod(pod_id)
            .iter()
            .map(|c| status_of(containers, c, &containers.observe(pods, c)))
            .collect(),
    })
}
