//! PodSandboxStats and ListPodSandboxStats: the pod's containers' stats, and their sums for the pod.

use std::sync::Arc;

use k8s_cri::v1 as cri;

use super::container_stats::stats_and_usage;
use crate::agent::Agent;
use crate::error::ReefError;
use crate::pods::PodRecord;
use crate::pods::cri_status::metadata;

fn pod_stats(agent: &Agent, pod: &PodRecord) -> cri::PodSandboxStats {
    let (containers, usages): (Vec<cri::ContainerStats>, Vec<_>) =
        agent.containers.of_pod(&pod.id).iter().map(|c| stats_and_usage(agent, c)).unzip();
    // The pod's tasks, as the pids controller counts them (kubelet's pod PID accounting).
    let process_count = usages.iter().map(|u| u.pids).sum();
    let sum = |f: &dyn Fn(&cri::ContainerStats) -> Option<u64>| -> Option<cri::UInt64Value> {
        Some(cri::UInt64Value { value: containers.iter().filter_map(f).sum() })
    };
    let now = reef_runtime::clock::now_nanos();
    let memory = |pick: fn(&cri::MemoryUsage) -> &Option<cri::UInt64Value>| {
        move |c: &cri::ContainerStats| c.memory.as_ref().and_then(|m| pick(m).as_ref()).map(|v| v.value)
    };
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: pod.id.clone(),
            metadata: Some(metadata(pod)),
            labels: pod.labels.clone().into_iter().collect(),
            annotations: pod.annotations.clone().into_iter().collect(),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: Some(cri::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: sum(&|c| {
                    c.cpu.as_ref().and_then(|u| u.usage_core_nano_seconds.as_ref()).map(|v| v.value)
                }),
                usage_nano_cores: None,
            }),
            memory: Some(cri::MemoryUsage {
                timestamp: now,
                working_set_bytes: sum(&memory(|m| &m.working_set_bytes)),
                usage_bytes: sum(&memory(|m| &m.usage_bytes)),
                rss_bytes: sum(&memory(|m| &m.rss_bytes)),
                page_faults: sum(&memory(|m| &m.page_faults)),
                major_page_faults: sum(&memory(|m| &m.major_page_faults)),
                available_bytes: None,
            }),
            network: None,
            process: Some(cri::ProcessUsage {
                timestamp: now,
                process_count: Some(cri::UInt64Value { value: process_count }),
            }),
            containers,
        }),
        windows: None,
    }
}

pub async fn one(
    agent: Arc<Agent>,
    req: cri::PodSandboxStatsRequest,
) -> Result<cri::PodSandboxStatsResponse, ReefError> {
    let pod = agent
        .pods
        .get(&req.pod_sandbox_id)
        .ok_or_else(|| ReefError::NotFound(format!("pod sandbox {:?} not found", req.pod_sandbox_id)))?;
    let stats = crate::blocking::value("stats task", move || pod_stats(&agent, &pod)).await?;
    Ok(cri::PodSandboxStatsResponse { stats: Some(stats) })
}

pub async fn list(
    agent: Arc<Agent>,
    req: cri::ListPodSandboxStatsRequest,
) -> Result<cri::ListPodSandboxStatsResponse, ReefError> {
    let selector = super::filter::Selector::from(&req.filter.unwrap_or_default());
    let stats = crate::blocking::value("stats task", move || {
        agent.pods.list().iter().filter(|p| selector.pod(p)).map(|p| pod_stats(&agent, p)).collect()
    })
    .await?;
    Ok(cri::ListPodSandboxStatsResponse { stats })
}
