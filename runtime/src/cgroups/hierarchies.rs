//! Where the node's cgroup hierarchies are mounted: found once per node by reefd and handed to each monitor in the
//! container's plan, so neither parses `/proc/self/mountinfo` on the spawn path.
//!
//! cgroups-rs finds hierarchies by parsing mountinfo on every handle it makes (several times per container). In
//! reefd's and the monitors' mount namespace that file lists every pod's pinned namespaces and every container's
//! rootfs, so each parse grew with the pods already running (0.1 ms at 0 pods, 0.35 ms at 40, per parse). The
//! hierarchies themselves are mounted at boot and never move while a node runs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cgroups_rs::fs::{self, Controllers, Subsystem};

/// The node's cgroup layout: one unified hierarchy (v2), or v1 controllers, each where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Hierarchies {
    Unified,
    V1(Vec<V1Mount>),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct V1Mount {
    /// The controller's name as cgroups-rs spells it (`memory`, `cpu`, `name=systemd`).
    pub controller: String,
    /// Where its hierarchy is mounted, e.g. `/sys/fs/cgroup/memory`.
    pub point: PathBuf,
    /// The root of the mount inside the hierarchy (`/` unless this is a nested cgroup namespace).
    pub root: PathBuf,
}

/// cgroups-rs's order: blkio before memory, so writeback accounting pairs them correctly on join.
const V1_ORDER: [Controllers; 14] = [
    Controllers::BlkIo,
    Controllers::Mem,
    Controllers::Pids,
    Controllers::CpuSet,
    Controllers::CpuAcct,
    Controllers::Cpu,
    Controllers::Devices,
    Controllers::Freezer,
    Controllers::NetCls,
    Controllers::PerfEvent,
    Controllers::NetPrio,
    Controllers::HugeTlb,
    Controllers::Rdma,
    Controllers::Systemd,
];

impl Hierarchies {
    /// This node's, found on first use.
    pub fn node() -> &'static Hierarchies {
        static FOUND: OnceLock<Hierarchies> = OnceLock::new();
        FOUND.get_or_init(|| {
            if fs::hierarchies::is_cgroup2_unified_mode() {
                return Hierarchies::Unified;
            }
            let v1 = fs::hierarchies::V1::new();
            Hierarchies::V1(
                V1_ORDER
                    .into_iter()
                    .filter_map(|c| {
                        let controller = c.to_string();
                        v1.get_mount_point(c).map(|(point, root)| V1Mount { controller, point, root })
                    })
                    .collect(),
            )
        })
    }

    /// What a container whose cgroup is at `path` sees in its `/sys/fs/cgroup` on v1, as runc lays it out: each
    /// hierarchy's directory (named as on the host, `cpu,cpuacct` for co-mounted ones) holding the container's own
    /// cgroup of it, and an alias per co-mounted controller (`cpu -> cpu,cpuacct`). None on v2, where the
    /// container mounts cgroup2 itself. cgroup2's `unified` dir of a hybrid host is not a v1 hierarchy, and the
    /// container has no cgroup there, so it is left out.
    pub fn v1_view(&self, path: &str) -> Option<Vec<(String, ViewEntry)>> {
        let Hierarchies::V1(mounts) = self else {
            return None;
        };
        let mut view: Vec<(String, ViewEntry)> = Vec::new();
        for m in mounts {
            let Some(dir) = m.point.file_name().map(|n| n.to_string_lossy().into_owned()) else { continue };
            if !view.iter().any(|(name, _)| *name == dir) {
                view.push((dir.clone(), ViewEntry::Own(m.point.join(path.trim_start_matches('/')))));
            }
            let alias = &m.controller;
            if *alias != dir && dir.split(',').any(|c| c == alias) && !view.iter().any(|(name, _)| name == alias) {
                view.push((alias.clone(), ViewEntry::Alias(dir)));
            }
        }
        Some(view)
    }

    /// The file listing the processes of the cgroup at `path`: `cgroup.procs` on v2; on v1 the `tasks` of the
    /// memory hierarchy (every container has a memory cgroup), else of the first one.
    pub fn procs_file(&self, path: &str) -> PathBuf {
        let path = path.trim_start_matches('/');
        match self {
            Hierarchies::Unified => Path::new("/sys/fs/cgroup").join(path).join("cgroup.procs"),
            Hierarchies::V1(mounts) => {
                let point = mounts.iter().find(|m| m.controller == "memory").or(mounts.first()).map(|m| &m.point);
                point.map(|p| p.join(path).join("tasks")).unwrap_or_default()
            }
        }
    }

    /// The file where the kernel counts OOM kills (`oom_kill N`) of the cgroup at `path`: `memory.events` on v2,
    /// `memory.oom_control` of the memory hierarchy, wherever it is mounted, on v1 (None without one).
    pub fn oom_file(&self, path: &str) -> Option<PathBuf> {
        let path = path.trim_start_matches('/');
        match self {
            Hierarchies::Unified => Some(Path::new("/sys/fs/cgroup").join(path).join("memory.events")),
            Hierarchies::V1(mounts) => {
                mounts.iter().find(|m| m.controller == "memory").map(|m| m.point.join(path).join("memory.oom_control"))
            }
        }
    }

    /// A cgroups-rs hierarchy that answers from this layout instead of parsing mountinfo.
    pub fn boxed(&self) -> Box<dyn fs::Hierarchy> {
        match self {
            Hierarchies::Unified => Box::new(fs::hierarchies::V2::new()),
            Hierarchies::V1(mounts) => Box::new(Known(mounts.clone())),
        }
    }
}

/// An entry of a container's v1 `/sys/fs/cgroup` (see `Hierarchies::v1_view`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewEntry {
    /// The container's own directory in a hierarchy, bound in read-only.
    Own(PathBuf),
    /// A symlink to the hierarchy's directory, for a controller mounted together with others.
    Alias(String),
}

#[derive(Debug, Clone)]
struct Known(Vec<V1Mount>);

impl fs::Hierarchy for Known {
    fn subsystems(&self) -> Vec<Subsystem> {
        self.0.iter().filter_map(|m| subsystem(&m.controller, m.point.clone(), m.root.clone())).collect()
    }

    fn root(&self) -> PathBuf {
        self.0
            .first()
            .and_then(|m| m.point.parent())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"))
    }

    fn root_control_group(&self) -> fs::Cgroup {
        fs::Cgroup::load(Box::new(self.clone()), "")
    }

    fn parent_control_group(&self, path: &str) -> fs::Cgroup {
        let parent = Path::new(path).parent().map(Path::to_path_buf).unwrap_or_default();
        fs::Cgroup::load(Box::new(self.clone()), parent)
    }

    fn v2(&self) -> bool {
        false
    }
}

fn subsystem(controller: &str, point: PathBuf, root: PathBuf) -> Option<Subsystem> {
    use cgroups_rs::fs::*;
    Some(match controller {
        "blkio" => Subsystem::BlkIo(blkio::BlkIoController::new(point, root, false)),
        "memory" => Subsystem::Mem(memory::MemController::new(point, root, false)),
        "pids" => Subsystem::Pid(pid::PidController::new(point, root, false)),
        "cpuset" => Subsystem::CpuSet(cpuset::CpuSetController::new(point, root, false)),
        "cpuacct" => Subsystem::CpuAcct(cpuacct::CpuAcctController::new(point, root)),
        "cpu" => Subsystem::Cpu(cpu::CpuController::new(point, root, false)),
        "devices" => Subsystem::Devices(devices::DevicesController::new(point, root)),
        "freezer" => Subsystem::Freezer(freezer::FreezerController::new(point, root, false)),
        "net_cls" => Subsystem::NetCls(net_cls::NetClsController::new(point, root)),
        "perf_event" => Subsystem::PerfEvent(perf_event::PerfEventController::new(point, root)),
        "net_prio" => Subsystem::NetPrio(net_prio::NetPrioController::new(point, root)),
        "hugetlb" => Subsystem::HugeTlb(hugetlb::HugeTlbController::new(point, root, false)),
        "rdma" => Subsystem::Rdma(rdma::RdmaController::new(point, root)),
        "name=systemd" | "systemd" => Subsystem::Systemd(systemd::SystemdController::new(point, root, false)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_v1_layout_yields_the_same_controllers_and_paths_as_cgroups_rs_parsing_mountinfo() {
        let Hierarchies::V1(_) = Hierarchies::node() else {
            eprintln!("skipped: this host runs cgroup v2");
            return;
        };
        let parsed = fs::Cgroup::load(fs::hierarchies::auto(), "reef/x");
        let known = fs::Cgroup::load(Hierarchies::node().boxed(), "reef/x");
        let paths = |c: &fs::Cgroup| -> Vec<(String, PathBuf)> {
            c.subsystems().iter().map(|s| (s.controller_name(), s.to_controller().path().to_path_buf())).collect()
        };
        assert_eq!(paths(&known), paths(&parsed));
        assert!(!paths(&known).is_empty());
    }

    #[test]
    fn a_container_s_v1_view_holds_its_own_cgroup_of_each_hierarchy_and_aliases_for_co_mounted_controllers() {
        let mount = |controller: &str, dir: &str| V1Mount {
            controller: controller.into(),
            point: PathBuf::from("/sys/fs/cgroup").join(dir),
            root: "/".into(),
        };
        let v1 = Hierarchies::V1(vec![
            mount("memory", "memory"),
            mount("cpuacct", "cpu,cpuacct"),
            mount("cpu", "cpu,cpuacct"),
            mount("name=systemd", "systemd"),
        ]);
        let own = |dir: &str| ViewEntry::Own(PathBuf::from("/sys/fs/cgroup").join(dir).join("kubepods/reef-c1"));
        assert_eq!(
            v1.v1_view("/kubepods/reef-c1").unwrap(),
            vec![
                ("memory".to_string(), own("memory")),
                ("cpu,cpuacct".to_string(), own("cpu,cpuacct")),
                ("cpuacct".to_string(), ViewEntry::Alias("cpu,cpuacct".into())),
                ("cpu".to_string(), ViewEntry::Alias("cpu,cpuacct".into())),
                ("systemd".to_string(), own("systemd")),
            ]
        );
        assert_eq!(Hierarchies::Unified.v1_view("x"), None);
    }

    #[test]
    fn a_cgroup_s_processes_are_read_from_cgroup_procs_on_v2_and_from_the_memory_hierarchy_s_tasks_on_v1() {
        let mount = |controller: &str| V1Mount {
            controller: controller.into(),
            point: PathBuf::from("/sys/fs/cgroup").join(controller),
            root: "/".into(),
        };
        let v1 = Hierarchies::V1(vec![mount("blkio"), mount("memory"), mount("pids")]);
        assert_eq!(v1.procs_file("/kubepods/reef-c1"), PathBuf::from("/sys/fs/cgroup/memory/kubepods/reef-c1/tasks"));
        let no_memory = Hierarchies::V1(vec![mount("pids")]);
        assert_eq!(no_memory.procs_file("a/b"), PathBuf::from("/sys/fs/cgroup/pids/a/b/tasks"));
        assert_eq!(Hierarchies::Unified.procs_file("/a/b"), PathBuf::from("/sys/fs/cgroup/a/b/cgroup.procs"));
    }

    #[test]
    fn oom_kills_are_read_from_the_memory_hierarchy_where_it_is_mounted() {
        let v1 = Hierarchies::V1(vec![V1Mount {
            controller: "memory".into(),
            point: "/run/cg/mem".into(),
            root: "/".into(),
        }]);
        assert_eq!(v1.oom_file("/kubepods/c1"), Some(PathBuf::from("/run/cg/mem/kubepods/c1/memory.oom_control")));
        assert_eq!(Hierarchies::V1(vec![]).oom_file("c1"), None);
        assert_eq!(Hierarchies::Unified.oom_file("/a/c1"), Some(PathBuf::from("/sys/fs/cgroup/a/c1/memory.events")));
    }

    #[test]
    fn the_layout_travels_in_a_plan_as_plain_data() {
        let v1 = Hierarchies::V1(vec![V1Mount {
            controller: "memory".into(),
            point: "/sys/fs/cgroup/memory".into(),
            root: "/".into(),
        }]);
        for h in [Hierarchies::Unified, v1] {
            let json = serde_json::to_string(&h).unwrap();
            assert_eq!(serde_json::from_str::<Hierarchies>(&json).unwrap(), h);
        }
        let known = Hierarchies::V1(vec![V1Mount {
            controller: "memory".into(),
            point: "/sys/fs/cgroup/memory".into(),
            root: "/".into(),
        }]);
        let cg = fs::Cgroup::load(known.boxed(), "kubepods/pod1/reef-c1");
        let dirs: Vec<PathBuf> = cg.subsystems().iter().map(|s| s.to_controller().path().to_path_buf()).collect();
        assert_eq!(dirs, vec![PathBuf::from("/sys/fs/cgroup/memory/kubepods/pod1/reef-c1")]);
    }
}
