//! Pods: pinned namespaces, the pod's files (resolv.conf, hosts, hostname), its monitor, and its record.
//!
//! ```text
//! RunPodSandbox ──► Ready ──StopPodSandbox──► NotReady ──RemovePodSandbox──► (gone)
//! ```
//! A pod becomes visible only when its record is saved, after every part of it exists; a failed run undoes what
//! it made in reverse order. After a reboot (the volatile state dir is empty) or a dead monitor, a pod loads
//! as NotReady, and Stop/Remove clean up whatever is left.

pub mod cri_status;
mod files;
mod run;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use k8s_cri::v1 as cri;
use reef_runtime::monitor::client::MonitorClient;
use reef_runtime::monitor::protocol::Request;
use reef_runtime::pin;
use serde::{Deserialize, Serialize};

use reef_netplug::Network;

use crate::error::{ReefError, internal};
use crate::records::{Names, Records};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodState {
    Ready,
    NotReady,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub name: String,
    pub uid: String,
    pub namespace: String,
    pub attempt: u32,
    pub state: PodState,
    pub created_at: i64,
    pub hostname: String,
    pub log_directory: String,
    pub runtime_handler: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// CRI NamespaceMode values for network, pid and ipc.
    pub network_mode: i32,
    pub pid_mode: i32,
    pub ipc_mode: i32,
    pub pinned: PinnedPaths,
    pub port_mappings: Vec<PortMapping>,
    pub cgroup_parent: String,
    /// The pod's addresses, primary first; empty for host-network pods and once the pod is stopped.
    #[serde(default)]
    pub ips: Vec<String>,
    /// The maps of the pod's own user namespace (hostUsers: false).
    #[serde(default)]
    pub userns: Option<reef_runtime::userns::IdMappings>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PinnedPaths {
    pub network: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// The pod's shared PID namespace (pid mode POD), pinned by its monitor, whose init lives in it.
    #[serde(default)]
    pub pid: Option<PathBuf>,
    #[serde(default)]
    pub user: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortMapping {
    pub protocol: i32,
    pub container_port: i32,
    pub host_port: i32,
    pub host_ip: String,
}

impl PodRecord {
    fn reserved_name(&self) -> String {
        format!("{}_{}_{}_{}", self.name, self.namespace, self.uid, self.attempt)
    }
}

pub struct Pods {
    state_dir: PathBuf,
    monitor_bin: PathBuf,
    /// reefd's descriptor of the node's mount namespace (`reef_runtime::mount_ns`), which monitors inherit.
    node_mounts: Option<i32>,
    records: Records,
    names: Names,
    pods: RwLock<HashMap<String, PodRecord>>,
    pub network: Network,
}

/// The CRI port mappings as netplug takes them; an unknown protocol is refused.
fn net_ports(mappings: &[PortMapping]) -> Result<Vec<reef_netplug::PortMapping>, ReefError> {
    mappings
        .iter()
        .map(|m| {
            let protocol = match cri::Protocol::try_from(m.protocol) {
                Ok(cri::Protocol::Tcp) => reef_netplug::Protocol::Tcp,
                Ok(cri::Protocol::Udp) => reef_netplug::Protocol::Udp,
                Ok(cri::Protocol::Sctp) => reef_netplug::Protocol::Sctp,
                Err(_) => return Err(ReefError::InvalidArgument(format!("unknown port protocol {}", m.protocol))),
            };
            Ok(reef_netplug::PortMapping {
                protocol,
                container_port: m.container_port,
                host_port: m.host_port,
                host_ip: m.host_ip.clone(),
            })
        })
        .collect()
}

/// A pod's volatile directory. Named by the id's first 16 hex digits: the monitor's socket lives inside, and unix
/// socket paths must fit in 108 bytes.
fn pod_dir(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("pods").join(&id[..id.len().min(16)])
}

/// Whether any pod monitor under `state_dir` answers on its socket. Asked at start when reefd has no mount
/// namespace of its own yet: monitors already running then live in the node's, and build their containers from the
/// rootfs mounts they see there.
pub fn live_monitors(state_dir: &Path) -> bool {
    let Ok(pods) = std::fs::read_dir(state_dir.join("pods")) else { return false };
    pods.flatten()
        .any(|pod| std::os::unix::net::UnixStream::connect(pod.path().join(reef_runtime::monitor::SOCKET)).is_ok())
}

impl Pods {
    /// Loads every pod record and re-reserves their names; pods whose monitor is gone load as NotReady. Then the
    /// network is reconciled: only Ready pods keep one, everything else of it (veths, leases, rules) goes.
    pub fn open(
        root_dir: &Path,
        state_dir: &Path,
        monitor_bin: PathBuf,
        node_mounts: Option<i32>,
        network: Network,
    ) -> std::io::Result<Pods> {
        let records = Records::open(&root_dir.join("pods"))?;
        let names = Names::default();
        let mut pods = HashMap::new();
        for mut pod in records.load_all::<PodRecord>() {
            let _ = names.reserve(&pod.reserved_name(), &pod.id);
            let pod_dir = pod_dir(state_dir, &pod.id);
            if pod.state == PodState::Ready
                && MonitorClient::connect(&pod_dir.join(reef_runtime::monitor::SOCKET)).is_err()
            {
                tracing::warn!(pod = %pod.id, "pod monitor is gone (reboot or crash): the pod is NotReady");
                pod.state = PodState::NotReady;
                pod.ips.clear();
                let _ = records.save(&pod.id, &pod);
            }
            pods.insert(pod.id.clone(), pod);
        }
        let ready: Vec<String> =
            pods.values().filter(|p: &&PodRecord| p.state == PodState::Ready).map(|p| p.id.clone()).collect();
        network.reconcile(&|id| ready.iter().any(|r| r == id));
        let pods = Pods {
            state_dir: state_dir.to_path_buf(),
            monitor_bin,
            node_mounts,
            records,
            names,
            pods: RwLock::new(pods),
            network,
        };
        pods.sweep_orphans();
        Ok(pods)
    }

    pub fn pod_dir(&self, id: &str) -> PathBuf {
        pod_dir(&self.state_dir, id)
    }

    pub fn get(&self, id: &str) -> Option<PodRecord> {
        crate::records::find(&self.pods.read().unwrap_or_else(|p| p.into_inner()), id).cloned()
    }

    pub fn list(&self) -> Vec<PodRecord> {
        let mut v: Vec<PodRecord> = self.pods.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        v.sort_by_key(|p| p.created_at);
        v
    }

    /// Stops the pod: its network goes, then its network namespace; the record stays NotReady. Idempotent;
    /// returns the pod when this call is the one that stopped it.
    pub fn stop(&self, id: &str) -> Result<Option<PodRecord>, ReefError> {
        let Some(mut pod) = self.get(id) else { return Ok(None) };
        // The network goes before the namespace it lives in (CNI DEL wants the namespace while it still exists).
        self.network.teardown(&pod.id).map_err(ReefError::Network)?;
        pin::unpin_one(&self.pod_dir(&pod.id).join("ns"), "net");
        if pod.state == PodState::NotReady && pod.ips.is_empty() {
            return Ok(None);
        }
        let was_ready = pod.state == PodState::Ready;
        pod.state = PodState::NotReady;
        pod.ips.clear();
        self.records.save(&pod.id, &pod).map_err(internal("save pod record"))?;
        self.pods.write().unwrap_or_else(|p| p.into_inner()).insert(pod.id.clone(), pod.clone());
        Ok(was_ready.then_some(pod))
    }

    /// Removes everything of the pod. A pod that is not there is fine.
    pub fn remove(&self, id: &str) -> Result<(), ReefError> {
        let Some(pod) = self.get(id) else { return Ok(()) };
        self.network.teardown(&pod.id).map_err(ReefError::Network)?;
        self.teardown(&pod.id);
        self.records.delete(&pod.id).map_err(internal("delete pod record"))?;
        self.names.release(&pod.reserved_name());
        self.pods.write().unwrap_or_else(|p| p.into_inner()).remove(&pod.id);
        Ok(())
    }

    /// A reefd killed in the middle of RunPodSandbox leaves a pod directory (pins, maybe a monitor) and no record:
    /// it is torn down here, before anything is served.
    fn sweep_orphans(&self) {
        let known: Vec<PathBuf> = self.list().iter().map(|p| self.pod_dir(&p.id)).collect();
        let Ok(entries) = std::fs::read_dir(self.state_dir.join("pods")) else { return };
        for entry in entries.flatten() {
            let dir = entry.path();
            if !known.contains(&dir) {
                tracing::info!(dir = %dir.display(), "removing a pod that was never completed");
                self.teardown_dir(&dir);
            }
        }
    }

    /// Undoes a pod's parts, each step tolerating that it was never done.
    fn teardown(&self, id: &str) {
        self.teardown_dir(&self.pod_dir(id));
    }

    fn teardown_dir(&self, dir: &Path) {
        if let Ok(mut client) = MonitorClient::connect(&dir.join(reef_runtime::monitor::SOCKET)) {
            let _ = client.call(&Request::Shutdown);
        }
        pin::unpin(&dir.join("ns"));
        if let Err(e) = std::fs::remove_dir_all(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the pod's state dir");
        }
    }
}
