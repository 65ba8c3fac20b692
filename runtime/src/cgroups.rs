//! Reading and updating a container's cgroup from outside it (reefd's side; the monitor creates and removes it).

use std::path::Path;

use cgroups_rs::manager::{FsManager, Manager};

/// What the CRI's stats report, from the container's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_ns: u64,
    pub memory_usage: u64,
    /// Usage less inactive file pages, floored at zero: what kubelet evicts on, as cadvisor computes it.
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// Page cache, file pages mapped, swap in use, and how often the memory limit was hit (v1 only).
    pub memory_cache: u64,
    pub memory_mapped_file: u64,
    pub memory_swap: u64,
    pub memory_failcnt: u64,
    /// The memory limit; `None` when there is none.
    pub memory_limit: Option<u64>,
    /// Tasks (threads) in the cgroup now, as the pids controller counts them: what `docker stats` shows as PIDS.
    pub pids: u64,
    /// Processes (thread groups) in the cgroup now.
    pub processes: u64,
    /// CFS bandwidth: enforcement periods elapsed, periods throttled, time throttled.
    pub cpu_periods: u64,
    pub cpu_throttled_periods: u64,
    pub cpu_throttled_ns: u64,
}

/// Limits "unlimited" is written as: v1 reports a page-rounded i64::MAX, v2 "max" (which reads as -1 or 0 here).
const UNLIMITED: i64 = 1 << 62;

fn limit(value: i64) -> Option<u64> {
    (value > 0 && value < UNLIMITED).then_some(value as u64)
}

/// `None` when the cgroup cannot be read (the container is gone).
pub fn usage(path: &str) -> Option<Usage> {
    let manager = FsManager::new(path).ok()?;
    if !manager.exists() {
        return None;
    }
    let stats = manager.stats();
    let memory = stats.memory;
    let usage = memory.memory.as_ref().map(|m| m.usage).unwrap_or_default();
    let inactive_file = if memory.total_inactive_file > 0 { memory.total_inactive_file } else { memory.inactive_file };
    Some(Usage {
        cpu_ns: stats.cpu.cpu_acct.map(|c| c.total_usage).unwrap_or_default(),
        memory_usage: usage,
        working_set: usage.saturating_sub(inactive_file),
        rss: if memory.total_rss > 0 { memory.total_rss } else { memory.rss },
        page_faults: if memory.total_pgfault > 0 { memory.total_pgfault } else { memory.pgfault },
        major_page_faults: if memory.total_pgmajfault > 0 { memory.total_pgmajfault } else { memory.pgmajfault },
        memory_cache: if memory.total_cache > 0 { memory.total_cache } else { memory.cache },
        memory_mapped_file: if memory.total_mapped_file > 0 { memory.total_mapped_file } else { memory.mapped_file },
        memory_swap: if memory.total_swap > 0 { memory.total_swap } else { memory.swap },
        memory_failcnt: memory.memory.as_ref().map(|m| m.fail_cnt).unwrap_or_default(),
        memory_limit: memory.memory.as_ref().and_then(|m| limit(m.limit)),
        pids: stats.pids.current,
        processes: processes(path),
        cpu_periods: stats.cpu.cpu_throttling.as_ref().map(|t| t.periods).unwrap_or_default(),
        cpu_throttled_periods: stats.cpu.cpu_throttling.as_ref().map(|t| t.throttled_periods).unwrap_or_default(),
        cpu_throttled_ns: stats.cpu.cpu_throttling.as_ref().map(|t| t.throttled_time).unwrap_or_default(),
    })
}

/// Lines of the cgroup's `cgroup.procs`, from the pids hierarchy on v1 or the unified one on v2.
fn processes(path: &str) -> u64 {
    let path = path.trim_start_matches('/');
    ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
        .iter()
        .find_map(|root| std::fs::read_to_string(Path::new(root).join(path).join("cgroup.procs")).ok())
        .map(|procs| procs.lines().filter(|l| !l.trim().is_empty()).count() as u64)
        .unwrap_or_default()
}

/// The CPU and memory limits a container's cgroup has now (after any UpdateContainerResources).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_limit: Option<u64>,
    pub cpu_shares: Option<u64>,
    /// CFS quota and period in microseconds; no quota means no CPU limit.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
}

/// `None` when the cgroup is gone.
pub fn limits(path: &str) -> Option<Limits> {
    use cgroups_rs::fs::cpu::CpuController;
    use cgroups_rs::fs::memory::MemController;
    use cgroups_rs::fs::{Cgroup, hierarchies};
    let manager = FsManager::new(path).ok()?;
    if !manager.exists() {
        return None;
    }
    let cgroup = Cgroup::load(hierarchies::auto(), path);
    let cpu: Option<&CpuController> = cgroup.controller_of();
    let memory: Option<&MemController> = cgroup.controller_of();
    Some(Limits {
        memory_limit: memory.and_then(|m| limit(m.memory_stat().limit_in_bytes)),
        cpu_shares: cpu.and_then(|c| c.shares().ok()),
        cpu_quota: cpu.and_then(|c| c.cfs_quota().ok()).filter(|q| *q > 0),
        cpu_period: cpu.and_then(|c| c.cfs_period().ok()),
    })
}

/// UpdateContainerResources: applies new limits to a running container's cgroup.
pub fn update(path: &str, resources: &oci_spec::runtime::LinuxResources) -> Result<(), String> {
    let mut manager = FsManager::new(path).map_err(|e| format!("cgroup {path}: {e}"))?;
    if !manager.exists() {
        return Err(format!("cgroup {path} does not exist"));
    }
    manager.set(resources).map_err(|e| format!("cgroup {path}: {e}"))
}
