//! The runtime's processes and their memory: the daemon, found by its PID, and its descendants, never processes
//! found by name across the system. With the daemon started by `reef-bench` (a child subreaper), the per-pod
//! processes that daemonize (reef-monitor, containerd-shim-runc-v2) are reparented to us and stay descendants.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What a process is to the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Per-pod runtime processes in the host PID namespace: reef-monitor, containerd-shim-runc-v2.
    Helper,
    /// Any other process inside a pod's PID namespaces: containerd's pause, Reef's pod init of a shared PID
    /// namespace.
    Sandbox,
    /// The benchmark's own workload (its command line is the container's command): not runtime memory.
    Workload,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Mem {
    pub count: usize,
    /// Bytes.
    pub rss: u64,
    pub pss: u64,
    /// Private_Clean + Private_Dirty: what the processes alone pay for.
    pub private: u64,
}

impl Mem {
    fn add(&mut self, other: &Mem) {
        self.count += other.count;
        self.rss += other.rss;
        self.pss += other.pss;
        self.private += other.private;
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    pub label: String,
    pub pods: usize,
    pub daemon: Mem,
    pub helper: Mem,
    pub sandbox: Mem,
    pub workload: Mem,
}

impl Snapshot {
    /// Daemon, per-pod helpers and sandbox processes: the runtime's whole cost, without the workload.
    pub fn runtime(&self) -> Mem {
        let mut m = self.daemon;
        m.add(&self.helper);
        m.add(&self.sandbox);
        m
    }
}

fn parent_map() -> HashMap<i32, Vec<i32>> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return children };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // The command name may hold spaces and parentheses: the fields start after the last ')'.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        if state == "Z" {
            continue;
        }
        if let Some(ppid) = fields.next().and_then(|p| p.parse::<i32>().ok()) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    children
}

/// Every live descendant of `root`, `root` excluded.
pub fn descendants(root: i32) -> Vec<i32> {
    let children = parent_map();
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(c);
            stack.push(c);
        }
    }
    out
}

fn ns(pid: i32, kind: &str) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok()
}

fn cmdline(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// RSS, PSS and private bytes of one process from smaps_rollup; None once it is gone (or a kernel thread).
pub fn memory(pid: i32) -> Option<Mem> {
    let text = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("smaps_rollup")).ok()?;
    let mut m = Mem { count: 1, ..Mem::default() };
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(kb)) = (it.next(), it.next().and_then(|v| v.parse::<u64>().ok())) else { continue };
        match key {
            "Rss:" => m.rss = kb * 1024,
            "Pss:" => m.pss = kb * 1024,
            "Private_Clean:" | "Private_Dirty:" => m.private += kb * 1024,
            _ => {}
        }
    }
    Some(m)
}

/// The memory of the daemon and everything below `tree_root` (ourselves when we started the daemon, else the
/// daemon), sorted by role; `workload` is the containers' command line.
pub fn snapshot(label: &str, pods: usize, daemon: i32, tree_root: i32, workload: &[String]) -> Snapshot {
    let own_pid_ns = ns(std::process::id() as i32, "pid");
    let mut s = Snapshot { label: label.to_string(), pods, ..Snapshot::default() };
    let mut pids = descendants(tree_root);
    if tree_root != daemon {
        pids.retain(|&p| p != daemon);
    }
    if let Some(m) = memory(daemon) {
        s.daemon.add(&m);
    }
    for pid in pids {
        let Some(m) = memory(pid) else { continue };
        let role = if ns(pid, "pid") == own_pid_ns {
            Role::Helper
        } else if cmdline(pid) == workload {
            Role::Workload
        } else {
            Role::Sandbox
        };
        match role {
            Role::Helper => s.helper.add(&m),
            Role::Sandbox => s.sandbox.add(&m),
            Role::Workload => s.workload.add(&m),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_memory_is_read_from_smaps_rollup() {
        let m = memory(std::process::id() as i32).expect("smaps_rollup");
        assert!(m.rss > 0 && m.pss > 0 && m.pss <= m.rss && m.private <= m.rss, "{m:?}");
    }

    #[test]
    fn a_child_is_a_descendant() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().expect("sleep");
        assert!(descendants(std::process::id() as i32).contains(&(child.id() as i32)));
        let _ = child.kill();
        let _ = child.wait();
    }
}
