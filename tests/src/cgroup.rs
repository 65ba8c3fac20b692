//! A container's cgroup files on either cgroup version, picked by what the node has (v2 when
//! `/sys/fs/cgroup/cgroup.controllers` exists), so a test checks v1's files on a v1 node and v2's on a v2 one.

use std::path::{Path, PathBuf};

/// Whether the node runs the unified hierarchy (cgroup v2) alone.
pub fn v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The directory of the cgroup at `path` (below the hierarchy roots) for `controller`: on v1, in that
/// controller's hierarchy (`cpu` is `cpu,cpuacct` where the two are mounted together); on v2, the one directory.
pub fn dir(controller: &str, path: &str) -> PathBuf {
    let path = path.trim_start_matches('/');
    if v2() {
        return Path::new("/sys/fs/cgroup").join(path);
    }
    let hierarchy = match controller {
        "cpu" if Path::new("/sys/fs/cgroup/cpu,cpuacct").exists() => "cpu,cpuacct",
        other => other,
    };
    Path::new("/sys/fs/cgroup").join(hierarchy).join(path)
}

/// A file of it, trimmed; empty when it cannot be read.
pub fn read(controller: &str, path: &str, file: &str) -> String {
    std::fs::read_to_string(dir(controller, path).join(file)).unwrap_or_default().trim().to_string()
}

/// The memory limit in force, in bytes as the kernel shows it (`memory.limit_in_bytes`, `memory.max`).
pub fn memory_limit(path: &str) -> String {
    read("memory", path, if v2() { "memory.max" } else { "memory.limit_in_bytes" })
}

/// The CFS quota in microseconds (`cpu.cfs_quota_us`, the first field of `cpu.max`; `max` reads as -1).
pub fn cpu_quota(path: &str) -> String {
    if !v2() {
        return read("cpu", path, "cpu.cfs_quota_us");
    }
    let max = read("cpu", path, "cpu.max");
    match max.split_whitespace().next() {
        Some("max") => "-1".into(),
        Some(q) => q.into(),
        None => String::new(),
    }
}

/// What CPU shares become in the cgroup: the shares themselves on v1, the weight runc maps them to on v2.
pub fn cpu_share_file(shares: u64) -> (&'static str, String) {
    if v2() {
        let weight = if shares <= 2 { 1 } else { (1 + ((shares - 2) * 9999) / 262_142).min(10_000) };
        ("cpu.weight", weight.to_string())
    } else {
        ("cpu.shares", shares.to_string())
    }
}
