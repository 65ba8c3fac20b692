//! A container's cgroup: created and removed by the monitor (`ContainerCgroup`), read and updated by reefd.
//!
//! Two drivers, as kubelet knows them. cgroupfs: Reef writes the hierarchy itself. systemd: the container is a
//! transient scope (`<slice>:<prefix>:<name>`, runc's form) that systemd creates over D-Bus; reads go to the same
//! files below the slice. The D-Bus connection is opened for each create or remove and closed at once, so the
//! single-threaded monitor holds no connection (and no thread of zbus's) while it forks containers.

use std::path::Path;

use cgroups_rs::manager::{FsManager, Manager, SystemdManager};

use crate::launch::CgroupPlan;

mod device_filter;
mod error;
mod hierarchies;
mod v1_limits;
mod v2;
pub use error::CgroupError;
pub use hierarchies::{Hierarchies, V1Mount, ViewEntry};
pub use v2::cpu_weight;

/// The plan's hierarchies when reefd sent them, else this process's own.
pub(crate) fn hierarchies_of(plan: &CgroupPlan) -> &Hierarchies {
    plan.hierarchies.as_ref().unwrap_or_else(|| Hierarchies::node())
}

pub(crate) fn hierarchy_of(plan: &CgroupPlan) -> Box<dyn cgroups_rs::fs::Hierarchy> {
    hierarchies_of(plan).boxed()
}

/// Where the unified hierarchy is mounted on a v2 node.
const UNIFIED_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup's directory when `hierarchies` is v2's unified one.
fn v2_dir(hierarchies: &Hierarchies, path: &str) -> Option<std::path::PathBuf> {
    matches!(hierarchies, Hierarchies::Unified).then(|| Path::new(UNIFIED_ROOT).join(path.trim_start_matches('/')))
}

/// Open descriptors through which a forked process moves itself into a cgroup by writing `0`: the `tasks` file
/// of each v1 hierarchy, `cgroup.procs` on v2.
///
/// Why the process moves itself: on v1, a thread moving itself skips the kernel's global threadgroup lock, whose
/// first writer after a quiet spell waits out an RCU grace period (15–30 ms per container on a 2-core node, which
/// the monitor's `cgroup.procs` writes used to pay). And it joins before it unshares its cgroup namespace, so the
/// container sees its own cgroup as `/`, as under runc.
pub struct CgroupJoin(Vec<std::os::fd::OwnedFd>);

impl CgroupJoin {
    /// For the existing cgroup at `path` (below each hierarchy's root).
    pub fn open(path: &str, hierarchy: Box<dyn cgroups_rs::fs::Hierarchy>) -> Result<CgroupJoin, CgroupError> {
        let files: Vec<std::path::PathBuf> = if hierarchy.v2() {
            vec![hierarchy.root().join(path.trim_start_matches('/')).join("cgroup.procs")]
        } else {
            let cgroup = cgroups_rs::fs::Cgroup::load(hierarchy, path);
            let mut dirs: Vec<std::path::PathBuf> =
                cgroup.subsystems().iter().map(|s| s.to_controller().path().to_path_buf()).collect();
            // Co-mounted controllers (cpu,cpuacct) share one directory: one write moves the thread in both.
            dirs.sort();
            dirs.dedup();
            dirs.into_iter().map(|d| d.join("tasks")).collect()
        };
        let fds = files
            .iter()
            .map(|f| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(f)
                    .map(std::os::fd::OwnedFd::from)
                    .map_err(|source| CgroupError::Io { path: f.clone(), source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CgroupJoin(fds))
    }

    pub fn fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.0.iter().map(|fd| fd.as_fd()).collect()
    }
}

/// A container's cgroup made before its process: under the cgroupfs driver the directories exist and the
/// process joins through `join` as it starts; under systemd the scope is made around the pid afterwards.
pub struct PendingCgroup {
    plan: CgroupPlan,
    join: Option<CgroupJoin>,
}

impl PendingCgroup {
    pub fn new(plan: &CgroupPlan) -> Result<PendingCgroup, CgroupError> {
        let pending = PendingCgroup { plan: plan.clone(), join: None };
        if plan.systemd.is_some() {
            return Ok(pending);
        }
        let cgroup = cgroups_rs::fs::Cgroup::load(hierarchy_of(plan), &plan.path);
        if v2_dir(hierarchies_of(plan), &plan.path).is_some() {
            v2::create(Path::new(UNIFIED_ROOT), &plan.path)?;
        } else {
            // Creating also copies cpuset.cpus and cpuset.mems down on v1, without which nothing may join.
            cgroup.create().map_err(|source| CgroupError::Fs { path: plan.path.clone(), source })?;
        }
        match CgroupJoin::open(&plan.path, hierarchy_of(plan)) {
            Ok(join) => Ok(PendingCgroup { join: Some(join), ..pending }),
            Err(e) => {
                let _ = cgroup.delete();
                Err(e)
            }
        }
    }

    /// What the launched process writes itself into; empty when it is put in from outside.
    pub fn join_fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        self.join.as_ref().map(CgroupJoin::fds).unwrap_or_default()
    }

    /// Removes what `new` made, after a launch that failed.
    pub fn abandon(self) {
        if self.plan.systemd.is_some() {
            return;
        }
        if let Some(dir) = v2_dir(hierarchies_of(&self.plan), &self.plan.path) {
            let _ = v2::remove(Path::new(UNIFIED_ROOT), &dir);
        } else {
            let _ = remove_dirs(&cgroups_rs::fs::Cgroup::load(hierarchy_of(&self.plan), &self.plan.path));
        }
    }

    /// Whether the limits wait for the container's pid: under systemd, the scope is made around it.
    pub fn needs_pid(&self) -> bool {
        self.plan.systemd.is_some()
    }

    /// Once `pid` runs (and, under cgroupfs, has joined): under systemd, starts the scope around it with the
    /// limits, and returns once the process is in; under cgroupfs, applies the limits.
    pub fn finish(self, pid: i32) -> Result<ContainerCgroup, CgroupError> {
        let plan = &self.plan;
        let Some(unit) = &plan.systemd else { return self.limit() };
        let what = |source| CgroupError::Manager { path: plan.path.clone(), source: Box::new(source) };
        let mut manager = SystemdManager::new(unit).map_err(what)?;
        // Before the unit exists, `set` only gathers the properties: the scope then starts with its limits, and
        // the container never runs a moment without them.
        manager.set(&plan.resources).map_err(what)?;
        manager.add_proc(cgroups_rs::CgroupPid { pid: pid as u64 }).map_err(what)?;
        let made = self.made();
        let rest = wait_until_in(pid, &plan.path).and_then(|()| set_beyond_systemd(&made, &plan.resources));
        if let Err(e) = rest {
            let _ = manager.destroy();
            return Err(e);
        }
        // systemd's properties carry no device rules: on v2 they are Reef's own filter on the scope's cgroup.
        if let (Some(dir), Some(devices)) = (v2_dir(hierarchies_of(plan), &plan.path), plan.resources.devices())
            && let Err(e) = device_filter::attach(&dir, devices)
        {
            let _ = manager.destroy();
            return Err(e);
        }
        Ok(made)
    }

    /// Under cgroupfs, the limits, before or after a process joins.
    pub fn limit(&self) -> Result<ContainerCgroup, CgroupError> {
        let plan = &self.plan;
        let what = |source| CgroupError::Manager { path: plan.path.clone(), source: Box::new(source) };
        if let Some(dir) = v2_dir(hierarchies_of(plan), &plan.path) {
            let limited = v2::apply(&dir, &plan.resources)
                .and_then(|()| plan.resources.devices().as_ref().map_or(Ok(()), |d| device_filter::attach(&dir, d)));
            if let Err(e) = limited {
                let _ = v2::remove(Path::new(UNIFIED_ROOT), &dir);
                return Err(e);
            }
            return Ok(self.made());
        }
        let hierarchy = hierarchy_of(plan);
        if v1_limits::handles(&plan.resources) {
            let cgroup = cgroups_rs::fs::Cgroup::load(hierarchy, &plan.path);
            if let Err(e) = v1_limits::apply(&cgroup, &plan.resources) {
                let _ = remove_dirs(&cgroup);
                return Err(e);
            }
            return Ok(self.made());
        }
        let mut fs = FsManager::new(&plan.path).map_err(what)?;
        if let Err(e) = fs.set(&plan.resources) {
            let _ = fs.destroy();
            return Err(what(e));
        }
        Ok(self.made())
    }

    fn made(&self) -> ContainerCgroup {
        ContainerCgroup {
            path: self.plan.path.clone(),
            systemd: self.plan.systemd.clone(),
            hierarchies: hierarchies_of(&self.plan).clone(),
        }
    }
}

/// Moves any thread left out to the root (rmdir refuses a populated cgroup) and removes the directories.
fn remove_dirs(cgroup: &cgroups_rs::fs::Cgroup) -> Result<(), CgroupError> {
    if !cgroup.exists() {
        return Ok(());
    }
    for pid in cgroup.tasks() {
        let _ = cgroup.remove_task(pid);
    }
    cgroup.delete().map_err(|source| CgroupError::Fs { path: cgroup.path().to_string(), source })
}

/// The cgroup of a running container, as the monitor keeps it: plain data, so it crosses from the short-lived
/// process that made it to the monitor, and a handle is built only when the cgroup is removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerCgroup {
    path: String,
    /// The systemd unit path (`slice:prefix:name`) when systemd manages it.
    systemd: Option<String>,
    hierarchies: Hierarchies,
}

impl ContainerCgroup {
    /// Relative to each hierarchy's root, as in the plan.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether systemd made it (a scope), rather than Reef.
    pub fn is_systemd(&self) -> bool {
        self.systemd.is_some()
    }

    /// Processes still in it, from the file the kernel lists them in.
    pub fn pids(&self) -> Vec<i32> {
        std::fs::read_to_string(self.hierarchies.procs_file(&self.path))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Whether the kernel's OOM killer ended a process of it, from the hierarchies it was made in.
    pub fn oom_killed(&self) -> bool {
        self.hierarchies.oom_file(&self.path).is_some_and(|f| oom_kills_in(&f))
    }

    /// The file to watch (inotify) for OOM kills as they happen: v2's `memory.events`, which the kernel notifies.
    /// Under systemd the scope, and the file with it, is gone soon after its last process: what it counted must
    /// be read before (see `monitor::oom`). v1's `memory.oom_control` is not notified this way; v1 cgroups stay
    /// until Reef removes them.
    pub fn oom_watch_file(&self) -> Option<std::path::PathBuf> {
        match self.hierarchies {
            Hierarchies::Unified => self.hierarchies.oom_file(&self.path),
            Hierarchies::V1(_) => None,
        }
    }

    /// Removes it (stops the scope under systemd). Its processes must be gone.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        let what = |source| CgroupError::Manager { path: self.path.clone(), source: Box::new(source) };
        if let Some(unit) = &self.systemd {
            return SystemdManager::new(unit).and_then(|mut m| m.destroy()).map_err(what);
        }
        if let Some(dir) = v2_dir(&self.hierarchies, &self.path) {
            return v2::remove(Path::new(UNIFIED_ROOT), &dir);
        }
        let hierarchy = self.hierarchies.boxed();
        remove_dirs(&cgroups_rs::fs::Cgroup::load(hierarchy, &self.path))
    }
}

/// Whether `file` (`memory.events` or `memory.oom_control`) counts an OOM kill.
fn oom_kills_in(file: &Path) -> bool {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .any(|l| l.strip_prefix("oom_kill ").and_then(|n| n.trim().parse::<u64>().ok()).is_some_and(|n| n > 0))
}

/// Where the systemd driver puts a container: the unit path handed to systemd and the cgroup path below each
/// hierarchy's root, from kubelet's parent slice (`kubepods-besteffort-pod<uid>.slice`).
pub fn systemd_paths(parent_slice: &str, prefix: &str, name: &str) -> Result<(String, String), CgroupError> {
    let slice = if parent_slice.is_empty() { "system.slice" } else { parent_slice };
    if !is_slice_name(slice) {
        return Err(CgroupError::NotASlice(slice.into()));
    }
    let dir = cgroups_rs::systemd::utils::expand_slice(slice).map_err(|_| CgroupError::NotASlice(slice.into()))?;
    let unit = format!("{prefix}-{name}.scope");
    let path = if dir.is_empty() { unit } else { format!("{dir}/{unit}") };
    Ok((format!("{slice}:{prefix}:{name}"), path))
}

/// Whether `name` is a slice unit's name systemd accepts: unit-name characters only, `.slice` at the end, and
/// dashes only between non-empty parts (each dash is a level of the hierarchy; `-.slice` is the root).
pub fn is_slice_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".slice") else { return false };
    let unit_chars = name.bytes().all(|b| b.is_ascii_alphanumeric() || b":-_.\\".contains(&b));
    unit_chars && name.len() <= 255 && (stem == "-" || (!stem.is_empty() && stem.split('-').all(|p| !p.is_empty())))
}

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
    if let Some(dir) = v2_dir(Hierarchies::node(), path) {
        return v2::usage(&dir);
    }
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
    /// On v2, the weight the shares were mapped to (`cpu_shares` is then read back from it, which loses
    /// precision: compare weights to tell whether asked shares are in force).
    pub cpu_weight: Option<u64>,
    /// CFS quota and period in microseconds; no quota means no CPU limit.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
}

/// `None` when the cgroup is gone.
pub fn limits(path: &str) -> Option<Limits> {
    if let Some(dir) = v2_dir(Hierarchies::node(), path) {
        return v2::limits(&dir);
    }
    use cgroups_rs::fs::Cgroup;
    use cgroups_rs::fs::cpu::CpuController;
    use cgroups_rs::fs::memory::MemController;
    let cgroup = Cgroup::load(Hierarchies::node().boxed(), path);
    if !cgroup.exists() {
        return None;
    }
    let cpu: Option<&CpuController> = cgroup.controller_of();
    let memory: Option<&MemController> = cgroup.controller_of();
    Some(Limits {
        memory_limit: memory.and_then(|m| limit(m.memory_stat().limit_in_bytes)),
        cpu_shares: cpu.and_then(|c| c.shares().ok()),
        cpu_weight: None,
        cpu_quota: cpu.and_then(|c| c.cfs_quota().ok()).filter(|q| *q > 0),
        cpu_period: cpu.and_then(|c| c.cfs_period().ok()),
    })
}

/// UpdateContainerResources: applies new limits to a running container's cgroup. Under systemd (`unit`, the
/// plan's `slice:prefix:name`) they are the scope's properties, set over D-Bus: written to the files alone, systemd
/// would put its own values back at the next `daemon-reload`. Only what systemd has no property for is written.
pub fn update(
    path: &str,
    unit: Option<&str>,
    resources: &oci_spec::runtime::LinuxResources,
) -> Result<(), CgroupError> {
    let what = |source| CgroupError::Manager { path: path.to_string(), source: Box::new(source) };
    let v2 = v2_dir(Hierarchies::node(), path);
    let exists = match &v2 {
        Some(dir) => dir.is_dir(),
        None => FsManager::new(path).map_err(what)?.exists(),
    };
    if !exists {
        return Err(CgroupError::Missing { path: path.to_string() });
    }
    if let Some(unit) = unit {
        SystemdManager::new(unit).and_then(|mut m| m.set(resources)).map_err(what)?;
        let cgroup = ContainerCgroup {
            path: path.to_string(),
            systemd: Some(unit.to_string()),
            hierarchies: Hierarchies::node().clone(),
        };
        return set_beyond_systemd(&cgroup, resources);
    }
    match v2 {
        Some(dir) => v2::apply(&dir, resources),
        None => FsManager::new(path).and_then(|mut m| m.set(resources)).map_err(what),
    }
}

/// Waits until `pid` is in the cgroup at `path`: systemd answers StartTransientUnit before its job moves the
/// process, and the container must not unshare its cgroup namespace, or run anything, before it is in.
fn wait_until_in(pid: i32, path: &str) -> Result<(), CgroupError> {
    let want = format!("/{}", path.trim_start_matches('/'));
    let file = std::path::PathBuf::from(format!("/proc/{pid}/cgroup"));
    // Generous: a loaded systemd under emulation takes its time, and giving up fails the container.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut pause = std::time::Duration::from_micros(100);
    loop {
        let listed = std::fs::read_to_string(&file).map_err(|source| CgroupError::Io { path: file.clone(), source })?;
        // `hierarchy-id:controllers:path`; on v2 the one line `0::path`.
        if listed.lines().any(|l| l.splitn(3, ':').nth(2) == Some(want.as_str())) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(CgroupError::Invalid {
                path: path.to_string(),
                what: format!("systemd did not move process {pid} into its scope: {}", listed.trim()),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(10));
    }
}

/// Under systemd, the limits it has no property for: `unified` keys become properties where systemd has one
/// (runc's list), and the rest, with hugetlb's limits, are written to the scope's files (it is delegated).
fn set_beyond_systemd(cgroup: &ContainerCgroup, r: &oci_spec::runtime::LinuxResources) -> Result<(), CgroupError> {
    let Some(unit) = &cgroup.systemd else { return Ok(()) };
    if !matches!(cgroup.hierarchies, Hierarchies::Unified) {
        return Ok(());
    }
    let dir = Path::new("/sys/fs/cgroup").join(cgroup.path.trim_start_matches('/'));
    let write = |file: &str, value: &str| {
        let path = dir.join(file);
        std::fs::write(&path, value).map_err(|source| CgroupError::Io { path, source })
    };
    let mut properties: Vec<cgroups_rs::systemd::Property<'static>> = Vec::new();
    if let Some(unified) = r.unified() {
        for (key, value) in unified {
            match systemd_property(key, value) {
                Some(property) => properties.push(property),
                None => {
                    if key.contains('/') || key.starts_with('.') {
                        return Err(CgroupError::Invalid {
                            path: cgroup.path.clone(),
                            what: format!("unified key {key:?}"),
                        });
                    }
                    write(key, value)?;
                }
            }
        }
    }
    for limit in r.hugepage_limits().iter().flatten() {
        write(&format!("hugetlb.{}.max", limit.page_size()), &limit.limit().to_string())?;
    }
    if properties.is_empty() {
        return Ok(());
    }
    let what = |what: String| CgroupError::Invalid { path: cgroup.path.clone(), what };
    let unit_name = SystemdManager::new(unit).map_err(|e| what(e.to_string()))?.unit().to_string();
    let mut client = cgroups_rs::systemd::SystemdClient::new(&unit_name, vec![]).map_err(|e| what(e.to_string()))?;
    client.set_properties(&properties).map_err(|e| what(format!("set the properties of {unit_name}: {e}")))
}

/// The systemd property a `unified` key maps to, as runc's systemd driver maps them: systemd would otherwise
/// write its own value over the file at the next reload.
fn systemd_property(key: &str, value: &str) -> Option<cgroups_rs::systemd::Property<'static>> {
    let bytes = || -> Option<u64> {
        match value.trim() {
            "max" => Some(u64::MAX),
            v => v.parse().ok(),
        }
    };
    let name = match key {
        "memory.min" => "MemoryMin",
        "memory.low" => "MemoryLow",
        "memory.high" => "MemoryHigh",
        "memory.max" => "MemoryMax",
        "memory.swap.max" => "MemorySwapMax",
        "pids.max" => "TasksMax",
        "cpu.weight" => "CPUWeight",
        _ => return None,
    };
    Some((name, bytes()?.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_that_counted_an_oom_kill_says_so_wherever_its_memory_hierarchy_is_mounted() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("kubepods/c1");
        std::fs::create_dir_all(&own).unwrap();
        let memory = V1Mount { controller: "memory".into(), point: dir.path().to_path_buf(), root: "/".into() };
        let cgroup =
            ContainerCgroup { path: "kubepods/c1".into(), systemd: None, hierarchies: Hierarchies::V1(vec![memory]) };
        std::fs::write(own.join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n").unwrap();
        assert!(!cgroup.oom_killed());
        std::fs::write(own.join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
        assert!(cgroup.oom_killed());
    }

    #[test]
    fn slice_names_are_unit_names_ending_in_slice_with_no_empty_level() {
        for good in ["kubepods.slice", "kubepods-burstable-pod0a_1b.slice", "-.slice", "a.b.slice"] {
            assert!(is_slice_name(good), "{good}");
        }
        for bad in ["kubepods", ".slice", "-a.slice", "a-.slice", "a--b.slice", "a/b.slice", "a b.slice", "a.scope"] {
            assert!(!is_slice_name(bad), "{bad}");
        }
        assert_eq!(systemd_paths("-.slice", "reef", "c").unwrap().1, "reef-c.scope");
        assert!(systemd_paths("/test.slice", "reef", "c").is_err());
    }

    #[test]
    fn systemd_paths_nest_kubelet_slices_like_systemd() {
        let (unit, path) = systemd_paths("kubepods-besteffort-pod1234.slice", "reef", "abc").unwrap();
        assert_eq!(unit, "kubepods-besteffort-pod1234.slice:reef:abc");
        assert_eq!(path, "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice/reef-abc.scope");
        assert_eq!(systemd_paths("", "reef", "x").unwrap().1, "system.slice/reef-x.scope");
        assert!(systemd_paths("kubepods/burstable", "reef", "x").is_err(), "a cgroupfs path is not a slice");
    }
}
