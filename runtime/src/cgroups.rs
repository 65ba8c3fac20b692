//! Reading and updating a container's cgroup from outside it (reefd's side; the monitor creates and removes it).

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
