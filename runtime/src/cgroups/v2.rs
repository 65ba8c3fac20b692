//! A container's cgroup on cgroup v2, through the unified hierarchy's files, as runc's fs2 driver writes and
//! reads them. Not through cgroups-rs's FsManager, which on v2 writes every device rule to a devices controller
//! v2 lacks (so every create failed), writes swappiness into `memory.swap.max`, refuses a memory limit below the
//! current usage (the kernel reclaims instead), ignores `unified` keys, reads CPU usage from a cpuacct v2 lacks
//! and throttled time from a key v2 names otherwise; and parses mountinfo twice per handle (see `v1_limits`).
//!
//! Every function takes the cgroup's directory, so the same code runs on a node's /sys/fs/cgroup and, in tests,
//! on any cgroup2 mount or plain directory.

use std::io::ErrorKind;
use std::path::Path;

use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxResources};

use super::{CgroupError, Limits, Usage};

/// Controllers a container's limits need, enabled for the children of each of its ancestors (runc enables all
/// the parent has; these are what the CRI can ask for).
const WANTED: [&str; 6] = ["cpu", "cpuset", "io", "memory", "pids", "hugetlb"];

/// Makes the cgroup at `path` below `root` (a cgroup2 mount) and each missing ancestor, enabling for the children
/// of each ancestor the wanted controllers it has. A controller that cannot be enabled (a parent that holds
/// processes itself, which v2 forbids for a parent with controllers) is not an error here: a limit that needs it
/// then fails naming its controller.
pub fn create(root: &Path, path: &str) -> Result<(), CgroupError> {
    let mut dir = root.to_path_buf();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        enable_for_children(&dir);
        dir.push(part);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(source) => return Err(CgroupError::Io { path: dir, source }),
        }
    }
    Ok(())
}

fn enable_for_children(dir: &Path) {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    let missing: Vec<String> = WANTED
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c) && !enabled.split_whitespace().any(|e| e == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return;
    }
    let control = dir.join("cgroup.subtree_control");
    // All at once, as one write; if the kernel refuses one, each on its own so the others still get enabled.
    if std::fs::write(&control, missing.join(" ")).is_err() {
        for c in &missing {
            let _ = std::fs::write(&control, c);
        }
    }
}

/// Removes the cgroup directory `dir`, moving any process still in it to the hierarchy's root `root` first (as on
/// v1). rmdir is retried for a while: a container whose init has just failed and is still exiting keeps its cgroup
/// busy for a moment (runc retries the same way), longer on a loaded node.
pub fn remove(root: &Path, dir: &Path) -> Result<(), CgroupError> {
    let mut pause = std::time::Duration::from_millis(5);
    for attempt in 0.. {
        for pid in read(dir, "cgroup.procs").unwrap_or_default().lines() {
            let _ = std::fs::write(root.join("cgroup.procs"), pid.trim());
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) && attempt < 10 => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            Err(source) => return Err(CgroupError::Io { path: dir.to_path_buf(), source }),
        }
    }
    Ok(())
}

/// Writes the limits `r` asks for into the cgroup directory `dir`. Device rules are not files on v2: see
/// `device_filter`.
pub fn apply(dir: &Path, r: &LinuxResources) -> Result<(), CgroupError> {
    if let Some(cpu) = r.cpu() {
        set_cpu(dir, cpu)?;
    }
    if let Some(memory) = r.memory() {
        set_memory(dir, memory)?;
    }
    if let Some(pids) = r.pids() {
        write(dir, "pids", "pids.max", &max_or(pids.limit()))?;
    }
    if let Some(limits) = r.hugepage_limits() {
        // Page sizes the node lacks are skipped, as on v1 (FsManager does the same), and so is the whole of it
        // on a node without the hugetlb controller.
        if controllers(dir).iter().any(|c| c == "hugetlb") {
            for l in limits {
                let file = format!("hugetlb.{}.max", l.page_size());
                if dir.join(&file).exists() {
                    write(dir, "hugetlb", &file, &l.limit().to_string())?;
                }
            }
        }
    }
    if r.block_io().is_some() || r.network().is_some() {
        return Err(invalid(dir, "block IO and network class limits are not supported on cgroup v2"));
    }
    // Last, so a key names what it sets over anything above, as runc orders them.
    if let Some(unified) = r.unified() {
        let mut keys: Vec<_> = unified.iter().collect();
        keys.sort();
        for (key, value) in keys {
            if key.is_empty() || key.contains('/') || key.starts_with('.') {
                return Err(invalid(dir, format!("unified key {key:?} is not a file of the cgroup")));
            }
            let controller = key.split('.').next().unwrap_or_default();
            write(dir, controller, key, value)?;
        }
    }
    Ok(())
}

fn set_cpu(dir: &Path, cpu: &LinuxCpu) -> Result<(), CgroupError> {
    if let Some(cpus) = cpu.cpus() {
        write(dir, "cpuset", "cpuset.cpus", cpus)?;
    }
    if let Some(mems) = cpu.mems() {
        write(dir, "cpuset", "cpuset.mems", mems)?;
    }
    if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
        write(dir, "cpu", "cpu.weight", &cpu_weight(shares).to_string())?;
    }
    if cpu.quota().is_some() || cpu.period().is_some() {
        // One file holds both: what is not asked for stays as it is.
        let now = read(dir, "cpu.max").unwrap_or_else(|| "max 100000".into());
        let mut fields = now.split_whitespace();
        let (now_quota, now_period) = (fields.next().unwrap_or("max"), fields.next().unwrap_or("100000"));
        let quota = match cpu.quota() {
            Some(q) if q > 0 => q.to_string(),
            Some(_) => "max".to_string(),
            None => now_quota.to_string(),
        };
        let period = cpu.period().filter(|p| *p > 0).map(|p| p.to_string()).unwrap_or_else(|| now_period.to_string());
        write(dir, "cpu", "cpu.max", &format!("{quota} {period}"))?;
    }
    if cpu.realtime_runtime().is_some() || cpu.realtime_period().is_some() {
        return Err(invalid(dir, "realtime CPU limits do not exist on cgroup v2"));
    }
    Ok(())
}

/// memory.max, memory.swap.max (swap alone: OCI's swap is memory and swap together) and memory.low, as runc's
/// fs2 writes them. Swappiness and the OOM killer switch have no v2 file, and are left, as runc leaves them.
fn set_memory(dir: &Path, memory: &LinuxMemory) -> Result<(), CgroupError> {
    let limit = memory.limit().unwrap_or(0);
    let swap = swap_alone(memory.swap().unwrap_or(0), limit).map_err(|what| invalid(dir, what))?;
    if let Some(swap) = swap {
        match write(dir, "memory", "memory.swap.max", &swap) {
            // A kernel without swap accounting has no such file: "no swap" and "any swap" both hold there.
            Err(CgroupError::Io { source, .. })
                if source.kind() == ErrorKind::NotFound && (swap == "max" || swap == "0") => {}
            other => other?,
        }
    }
    if limit != 0 {
        write(dir, "memory", "memory.max", &max_or(limit))?;
    }
    if let Some(low) = memory.reservation().filter(|r| *r != 0) {
        write(dir, "memory", "memory.low", &max_or(low))?;
    }
    Ok(())
}

/// What memory.swap.max gets for OCI's memory+swap `memswap` next to `limit` (0: not asked, -1: no limit);
/// `None` when nothing is to be written.
fn swap_alone(memswap: i64, limit: i64) -> Result<Option<String>, String> {
    Ok(match (memswap, limit) {
        // "No memory limit" means no swap limit either, unless swap is asked for on its own.
        (0, -1) | (-1, _) => Some("max".into()),
        (0, _) => None,
        (s, -1) => Some(s.to_string()),
        (_, 0) => return Err("a memory+swap limit needs a memory limit on cgroup v2".into()),
        (s, l) if s < l => return Err(format!("memory+swap limit {s} is below the memory limit {l}")),
        (s, l) => Some((s - l).to_string()),
    })
}

/// cgroup v1's CPU shares ([2, 262144], 1024 by default) as v2's weight ([1, 10000], 100 by default), by the
/// linear map runc, crun and the kernel's own documentation use.
pub fn cpu_weight(shares: u64) -> u64 {
    match shares {
        0 => 0,
        1..=2 => 1,
        262_144.. => 10_000,
        s => 1 + ((s - 2) * 9999) / 262_142,
    }
}

/// The least shares that map to `weight`, as cadvisor reports shares on v2 (rounded up, so they map back to the
/// same weight). Not always the shares that were asked: the map loses precision.
pub fn cpu_shares(weight: u64) -> u64 {
    2 + (weight.saturating_sub(1) * 262_142).div_ceil(9999)
}

fn max_or(value: i64) -> String {
    if value > 0 { value.to_string() } else { "max".into() }
}

fn invalid(dir: &Path, what: impl Into<String>) -> CgroupError {
    CgroupError::Invalid { path: dir.display().to_string(), what: what.into() }
}

fn controllers(dir: &Path) -> Vec<String> {
    read(dir, "cgroup.controllers").unwrap_or_default().split_whitespace().map(String::from).collect()
}

/// Writes `value` to `file`; a file missing because its controller is not enabled in this cgroup says so.
fn write(dir: &Path, controller: &str, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    // Never created: a cgroup's files are the kernel's, and one that is missing is an error.
    let written = std::fs::OpenOptions::new().write(true).truncate(true).open(&path).and_then(|mut f| {
        use std::io::Write;
        f.write_all(value.as_bytes())
    });
    match written {
        Ok(()) => Ok(()),
        Err(e)
            if e.kind() == ErrorKind::NotFound && dir.exists() && !controllers(dir).iter().any(|c| c == controller) =>
        {
            Err(CgroupError::NotEnabled { path: dir.display().to_string(), controller: controller.to_string() })
        }
        Err(source) => Err(CgroupError::Io { path, source }),
    }
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok().map(|s| s.trim().to_string())
}

/// `key value` lines (cpu.stat, memory.stat, memory.events): the value of `key`, 0 when absent.
fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_default()
}

fn number(dir: &Path, file: &str) -> u64 {
    read(dir, file).and_then(|v| v.parse().ok()).unwrap_or_default()
}

/// What the CRI's stats report, from the v2 files cadvisor reads; `None` when the cgroup is gone.
pub fn usage(dir: &Path) -> Option<Usage> {
    if !dir.is_dir() {
        return None;
    }
    let cpu = read(dir, "cpu.stat").unwrap_or_default();
    let memory = read(dir, "memory.stat").unwrap_or_default();
    let memory_usage = number(dir, "memory.current");
    let processes = read(dir, "cgroup.procs").map(|p| p.lines().filter(|l| !l.trim().is_empty()).count());
    Some(Usage {
        cpu_ns: keyed(&cpu, "usage_usec") * 1000,
        memory_usage,
        working_set: memory_usage.saturating_sub(keyed(&memory, "inactive_file")),
        rss: keyed(&memory, "anon"),
        page_faults: keyed(&memory, "pgfault"),
        major_page_faults: keyed(&memory, "pgmajfault"),
        memory_cache: keyed(&memory, "file"),
        memory_mapped_file: keyed(&memory, "file_mapped"),
        memory_swap: number(dir, "memory.swap.current"),
        // How often usage reached memory.max, as runc reports failcnt on v2.
        memory_failcnt: keyed(&read(dir, "memory.events").unwrap_or_default(), "max"),
        memory_limit: read(dir, "memory.max").and_then(|m| m.parse().ok()),
        pids: number(dir, "pids.current"),
        processes: processes.unwrap_or_default() as u64,
        cpu_periods: keyed(&cpu, "nr_periods"),
        cpu_throttled_periods: keyed(&cpu, "nr_throttled"),
        cpu_throttled_ns: keyed(&cpu, "throttled_usec") * 1000,
    })
}

/// The limits in force, from memory.max, cpu.weight and cpu.max; `None` when the cgroup is gone.
pub fn limits(dir: &Path) -> Option<Limits> {
    if !dir.is_dir() {
        return None;
    }
    let cpu_max = read(dir, "cpu.max");
    let mut fields = cpu_max.as_deref().unwrap_or_default().split_whitespace();
    let (quota, period) = (fields.next(), fields.next());
    let weight = read(dir, "cpu.weight").and_then(|w| w.parse().ok());
    Some(Limits {
        memory_limit: read(dir, "memory.max").and_then(|m| m.parse().ok()),
        cpu_shares: weight.map(cpu_shares),
        cpu_weight: weight,
        cpu_quota: quota.and_then(|q| q.parse().ok()).filter(|q| *q > 0),
        cpu_period: period.and_then(|p| p.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder};

    /// A directory laid out as a v2 cgroup with `controllers` enabled: the files the kernel would show.
    fn cgroup(controllers: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let files = [
            ("cgroup.controllers", controllers),
            ("cpu.weight", "100"),
            ("cpu.max", "max 100000"),
            ("cpuset.cpus", ""),
            ("memory.max", "max"),
            ("memory.swap.max", "max"),
            ("memory.low", "0"),
            ("pids.max", "max"),
            ("memory.high", "max"),
        ];
        for (file, content) in files {
            let controller = file.split('.').next().unwrap();
            if file.starts_with("cgroup.") || controllers.split_whitespace().any(|c| c == controller) {
                std::fs::write(dir.path().join(file), content).unwrap();
            }
        }
        dir
    }

    fn file(dir: &tempfile::TempDir, name: &str) -> String {
        std::fs::read_to_string(dir.path().join(name)).unwrap()
    }

    #[test]
    fn what_kubelet_asks_lands_in_the_v2_files() {
        let dir = cgroup("cpuset cpu memory pids");
        let r = LinuxResourcesBuilder::default()
            .cpu(LinuxCpuBuilder::default().shares(512u64).quota(50_000).period(100_000u64).cpus("0").build().unwrap())
            .memory(LinuxMemoryBuilder::default().limit(64 << 20).swap(64 << 20).build().unwrap())
            .pids(LinuxPidsBuilder::default().limit(100).build().unwrap())
            .unified(
                [("memory.high".to_string(), "50331648".to_string())]
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            )
            .build()
            .unwrap();
        apply(dir.path(), &r).unwrap();
        assert_eq!(file(&dir, "cpu.weight"), "20");
        assert_eq!(file(&dir, "cpu.max"), "50000 100000");
        assert_eq!(file(&dir, "cpuset.cpus"), "0");
        assert_eq!(file(&dir, "memory.max"), (64u64 << 20).to_string());
        assert_eq!(file(&dir, "memory.swap.max"), "0", "memory+swap equal to memory: no swap");
        assert_eq!(file(&dir, "pids.max"), "100");
        assert_eq!(file(&dir, "memory.high"), "50331648");
        let limits = limits(dir.path()).unwrap();
        assert_eq!(limits.memory_limit, Some(64 << 20));
        assert_eq!((limits.cpu_quota, limits.cpu_period, limits.cpu_weight), (Some(50_000), Some(100_000), Some(20)));
    }

    #[test]
    fn an_update_of_the_period_alone_keeps_the_quota_and_no_quota_is_max() {
        let dir = cgroup("cpu");
        std::fs::write(dir.path().join("cpu.max"), "20000 100000").unwrap();
        let only_period = LinuxCpuBuilder::default().period(50_000u64).build().unwrap();
        set_cpu(dir.path(), &only_period).unwrap();
        assert_eq!(file(&dir, "cpu.max"), "20000 50000");
        set_cpu(dir.path(), &LinuxCpuBuilder::default().quota(-1).build().unwrap()).unwrap();
        assert_eq!(file(&dir, "cpu.max"), "max 50000");
        assert_eq!(limits(dir.path()).unwrap().cpu_quota, None);
    }

    #[test]
    fn a_limit_whose_controller_is_not_enabled_names_it() {
        let dir = cgroup("memory");
        let r = LinuxResourcesBuilder::default()
            .cpu(LinuxCpuBuilder::default().shares(512u64).build().unwrap())
            .build()
            .unwrap();
        let err = apply(dir.path(), &r).unwrap_err();
        assert!(matches!(&err, CgroupError::NotEnabled { controller, .. } if controller == "cpu"), "{err:?}");
        let bad = LinuxResourcesBuilder::default()
            .unified([("../x".to_string(), "1".to_string())].into_iter().collect::<std::collections::HashMap<_, _>>())
            .build()
            .unwrap();
        assert!(matches!(apply(dir.path(), &bad), Err(CgroupError::Invalid { .. })));
    }

    #[test]
    fn swap_is_written_alone_and_only_when_asked() {
        assert_eq!(swap_alone(0, 64), Ok(None));
        assert_eq!(swap_alone(96, 64), Ok(Some("32".into())));
        assert_eq!(swap_alone(-1, 64), Ok(Some("max".into())));
        assert_eq!(swap_alone(0, -1), Ok(Some("max".into())));
        assert!(swap_alone(32, 64).is_err());
        assert!(swap_alone(32, 0).is_err());
        let dir = cgroup("cpu");
        let memory = LinuxMemoryBuilder::default().limit(-1).build().unwrap();
        let err = set_memory(dir.path(), &memory).unwrap_err();
        assert!(matches!(&err, CgroupError::NotEnabled { controller, .. } if controller == "memory"), "{err:?}");
    }

    #[test]
    fn shares_map_to_weights_as_runc_maps_them() {
        assert_eq!([2, 1024, 512, 262_144, 1_000_000].map(cpu_weight), [1, 39, 20, 10_000, 10_000]);
        for weight in [1, 20, 39, 100, 9999, 10_000] {
            assert_eq!(cpu_weight(cpu_shares(weight)), weight, "a weight read back as shares maps to itself");
        }
    }

    #[test]
    fn stats_are_read_from_the_v2_files() {
        let dir = cgroup("cpu memory pids");
        let w = |f: &str, c: &str| std::fs::write(dir.path().join(f), c).unwrap();
        w("cpu.stat", "usage_usec 1500\nuser_usec 1000\nnr_periods 7\nnr_throttled 2\nthrottled_usec 30\n");
        w("memory.current", "1000000\n");
        w("memory.stat", "anon 600000\nfile 300000\nfile_mapped 4096\ninactive_file 200000\npgfault 9\npgmajfault 1\n");
        w("memory.swap.current", "0\n");
        w("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
        w("memory.max", "67108864\n");
        w("pids.current", "3\n");
        w("cgroup.procs", "10\n11\n");
        let u = usage(dir.path()).unwrap();
        assert_eq!((u.cpu_ns, u.cpu_periods, u.cpu_throttled_periods, u.cpu_throttled_ns), (1_500_000, 7, 2, 30_000));
        assert_eq!((u.memory_usage, u.working_set, u.rss, u.memory_cache), (1_000_000, 800_000, 600_000, 300_000));
        assert_eq!((u.memory_mapped_file, u.page_faults, u.major_page_faults), (4096, 9, 1));
        assert_eq!((u.memory_failcnt, u.memory_limit, u.pids, u.processes), (3, Some(67_108_864), 3, 2));
        assert_eq!(usage(&dir.path().join("gone")), None);
    }

    #[test]
    fn a_cgroup_is_removed_with_a_process_still_in_it_moved_out_first() {
        let root = Path::new("/sys/fs/cgroup/unified");
        let is_cgroup2 =
            nix::sys::statfs::statfs(root).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
        if !is_cgroup2 || !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root and this host's cgroup2 mount at {}", root.display());
            return;
        }
        let path = format!("reef-v2-remove-test-{}/c1", std::process::id());
        create(root, &path).unwrap();
        let dir = root.join(&path);
        let mut sleeper = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
        std::fs::write(dir.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
        let removed = remove(root, &dir);
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        let parent = dir.parent().unwrap().to_path_buf();
        let _ = remove(root, &parent);
        removed.unwrap();
        assert!(!dir.exists() && !parent.exists());
    }
}
