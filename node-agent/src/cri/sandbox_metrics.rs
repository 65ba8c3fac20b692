//! ListPodSandboxMetrics: for each ready pod, each container's metrics (metric_descriptors.rs) from its cgroup,
//! read now (so every timestamp is 0, which the CRI defines as "gathered live").

use std::sync::Arc;

use k8s_cri::v1 as cri;

use super::metric_descriptors::{METRICS, Source};
use crate::agent::Agent;
use crate::containers::ContainerRecord;
use crate::error::ReefError;
use crate::pods::{PodRecord, PodState};

fn container_metrics(agent: &Agent, pod: &PodRecord, c: &ContainerRecord) -> Option<cri::ContainerMetrics> {
    let path = agent.containers.cgroup_path(c)?;
    let source = Source {
        usage: reef_runtime::cgroups::usage(&path)?,
        limits: reef_runtime::cgroups::limits(&path).unwrap_or_default(),
    };
    let labels = vec![pod.name.clone(), pod.namespace.clone(), c.name.clone(), c.id.clone(), c.image.clone()];
    Some(cri::ContainerMetrics {
        container_id: c.id.clone(),
        metrics: METRICS
            .iter()
            .map(|m| cri::Metric {
                name: m.name.to_string(),
                timestamp: 0,
                metric_type: m.kind as i32,
                label_values: labels.clone(),
                value: Some(cri::UInt64Value { value: (m.value)(&source) }),
            })
            .collect(),
    })
}

pub async fn handle(
    agent: Arc<Agent>,
    _req: cri::ListPodSandboxMetricsRequest,
) -> Result<cri::ListPodSandboxMetricsResponse, ReefError> {
    let pod_metrics = crate::blocking::value("metrics task", move || {
        agent
            .pods
            .list()
            .iter()
            .filter(|p| p.state == PodState::Ready)
            .map(|pod| cri::PodSandboxMetrics {
                pod_sandbox_id: pod.id.clone(),
                metrics: vec![],
                container_metrics: agent
                    .containers
                    .of_pod(&pod.id)
                    .iter()
                    .filter_map(|c| container_metrics(&agent, pod, c))
                    .collect(),
            })
            .collect()
    })
    .await?;
    Ok(cri::ListPodSandboxMetricsResponse { pod_metrics })
}
