//! ListMetricDescriptors: the cadvisor-named metrics ListPodSandboxMetrics reports, with their label keys.
//! kubelet (PodAndContainerStatsFromCRI) reads these once and turns each reported metric into a Prometheus one,
//! so every metric carries exactly the label values its descriptor names, in order.

use k8s_cri::v1 as cri;
use reef_runtime::cgroups::{Limits, Usage};

use crate::error::ReefError;

/// Label keys of every container metric, as containerd names them.
pub const LABEL_KEYS: [&str; 5] = ["pod", "namespace", "container", "id", "image"];

pub struct Source {
    pub usage: Usage,
    pub limits: Limits,
}

pub struct MetricDef {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: cri::MetricType,
    pub value: fn(&Source) -> u64,
}

const fn gauge(name: &'static str, help: &'static str, value: fn(&Source) -> u64) -> MetricDef {
    MetricDef { name, help, kind: cri::MetricType::Gauge, value }
}

const fn counter(name: &'static str, help: &'static str, value: fn(&Source) -> u64) -> MetricDef {
    MetricDef { name, help, kind: cri::MetricType::Counter, value }
}

/// Values are whole numbers (the CRI carries uint64): CPU seconds are truncated, as containerd reports them;
/// ContainerStats carries nanoseconds for whoever needs better.
pub const METRICS: &[MetricDef] = &[
    counter("container_cpu_usage_seconds_total", "Cumulative CPU time consumed in seconds.", |s| {
        s.usage.cpu_ns / 1_000_000_000
    }),
    counter("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", |s| {
        s.usage.cpu_periods
    }),
    counter("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", |s| {
        s.usage.cpu_throttled_periods
    }),
    counter(
        "container_cpu_cfs_throttled_seconds_total",
        "Total time duration the container has been throttled.",
        |s| s.usage.cpu_throttled_ns / 1_000_000_000,
    ),
    gauge(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        |s| s.usage.memory_usage,
    ),
    gauge("container_memory_working_set_bytes", "Current working set in bytes.", |s| s.usage.working_set),
    gauge("container_memory_rss", "Size of RSS in bytes.", |s| s.usage.rss),
    gauge("container_memory_cache", "Number of bytes of page cache memory.", |s| s.usage.memory_cache),
    gauge("container_memory_mapped_file", "Size of memory mapped files in bytes.", |s| s.usage.memory_mapped_file),
    gauge("container_memory_swap", "Container swap usage in bytes.", |s| s.usage.memory_swap),
    counter("container_memory_failcnt", "Number of memory usage hits limits.", |s| s.usage.memory_failcnt),
    counter("container_memory_page_faults_total", "Cumulative count of page faults.", |s| s.usage.page_faults),
    counter("container_memory_major_page_faults_total", "Cumulative count of major page faults.", |s| {
        s.usage.major_page_faults
    }),
    gauge("container_processes", "Number of processes running inside the container.", |s| s.usage.processes),
    gauge("container_threads", "Number of threads running inside the container.", |s| s.usage.pids),
    gauge("container_spec_memory_limit_bytes", "Memory limit for the container (0: none).", |s| {
        s.limits.memory_limit.unwrap_or_default()
    }),
    gauge("container_spec_cpu_shares", "CPU share of the container.", |s| s.limits.cpu_shares.unwrap_or_default()),
    gauge("container_spec_cpu_quota", "CPU quota of the container in microseconds (0: none).", |s| {
        s.limits.cpu_quota.map(|q| q as u64).unwrap_or_default()
    }),
    gauge("container_spec_cpu_period", "CPU period of the container in microseconds.", |s| {
        s.limits.cpu_period.unwrap_or_default()
    }),
];

pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    METRICS
        .iter()
        .map(|m| cri::MetricDescriptor {
            name: m.name.to_string(),
            help: m.help.to_string(),
            label_keys: LABEL_KEYS.iter().map(|k| k.to_string()).collect(),
        })
        .collect()
}

pub async fn handle(_req: cri::ListMetricDescriptorsRequest) -> Result<cri::ListMetricDescriptorsResponse, ReefError> {
    Ok(cri::ListMetricDescriptorsResponse { descriptors: descriptors() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_cadvisor_shaped() {
        let mut names: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), METRICS.len());
        assert!(names.iter().all(|n| n.starts_with("container_")));
        for must in ["container_cpu_usage_seconds_total", "container_memory_working_set_bytes", "container_memory_rss"]
        {
            assert!(names.contains(&must), "{must}");
        }
        assert!(METRICS.iter().filter(|m| m.name.ends_with("_total")).all(|m| m.kind == cri::MetricType::Counter));
    }
}
