//! ContainerStats, ListContainerStats and UpdateContainerResources: the container's cgroup, read or written.

use std::sync::Arc;

use k8s_cri::v1 as cri;

use crate::agent::Agent;
use crate::containers::ContainerRecord;
use crate::error::ReefError;
use reef_runtime::cgroups::Usage;

pub(crate) fn stats_of(agent: &Agent, c: &ContainerRecord) -> cri::ContainerStats {
    stats_and_usage(agent, c).0
}

/// The CRI stats and the cgroup figures they came from (pod stats need more of them than the CRI carries).
pub(crate) fn stats_and_usage(agent: &Agent, c: &ContainerRecord) -> (cri::ContainerStats, Usage) {
    let now = reef_runtime::clock::now_nanos();
    let usage = agent.containers.cgroup_path(c).and_then(|p| reef_runtime::cgroups::usage(&p)).unwrap_or_default();
    let value = |v: u64| Some(cri::UInt64Value { value: v });
    let stats = cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: c.id.clone(),
            metadata: Some(cri::ContainerMetadata { name: c.name.clone(), attempt: c.attempt }),
            labels: c.labels.clone().into_iter().collect(),
            annotations: c.annotations.clone().into_iter().collect(),
        }),
        cpu: Some(cri::CpuUsage {
            timestamp: now,
            usage_core_nano_seconds: value(usage.cpu_ns),
            usage_nano_cores: None,
        }),
        memory: Some(cri::MemoryUsage {
            timestamp: now,
            working_set_bytes: value(usage.working_set),
            available_bytes: None,
            usage_bytes: value(usage.memory_usage),
            rss_bytes: value(usage.rss),
            page_faults: value(usage.page_faults),
            major_page_faults: value(usage.major_page_faults),
        }),
        writable_layer: None,
        swap: None,
    };
    (stats, usage)
}

pub async fn one(agent: Arc<Agent>, req: cri::ContainerStatsRequest) -> Result<cri::ContainerStatsResponse, ReefError> {
    let c = agent
        .containers
        .get(&req.container_id)
        .ok_or_else(|| ReefError::NotFound(format!("container {:?} not found", req.container_id)))?;
    let stats = crate::blocking::value("stats task", move || stats_of(&agent, &c)).await?;
    Ok(cri::ContainerStatsResponse { stats: Some(stats) })
}

pub async fn list(
    agent: Arc<Agent>,
    req: cri::ListContainerStatsRequest,
) -> Result<cri::ListContainerStatsResponse, ReefError> {
    let selector = super::filter::Selector::from(&req.filter.unwrap_or_default());
    let stats = crate::blocking::value("stats task", move || {
        agent.containers.list().iter().filter(|c| selector.container(c)).map(|c| stats_of(&agent, c)).collect()
    })
    .await?;
    Ok(cri::ListContainerStatsResponse { stats })
}

pub async fn update(
    agent: Arc<Agent>,
    req: cri::UpdateContainerResourcesRequest,
) -> Result<cri::UpdateContainerResourcesResponse, ReefError> {
    let resources = req.linux.ok_or_else(|| ReefError::InvalidArgument("linux resources are required".into()))?;
    crate::blocking::run("update task", move || agent.containers.update_resources(&req.container_id, &resources))
        .await?;
    Ok(cri::UpdateContainerResourcesResponse {})
}
