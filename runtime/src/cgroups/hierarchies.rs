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

    /// A cgroups-rs hierarchy that answers from this layout instead of parsing mountinfo.
    pub fn boxed(&self) -> Box<dyn fs::Hierarchy> {
        match self {
            Hierarchies::Unified => Box::new(fs::hierarchies::V2::new()),
            Hierarchies::V1(mounts) => Box::new(Known(mounts.clone())),
        }
    }
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
