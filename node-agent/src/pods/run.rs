//! RunPodSandbox as a pipeline of named steps, each registering its undo with one `Rollback`, so a failure at any
//! step takes back exactly what was made, in reverse order:
//!
//! ```text
//! validate → reserve the name → pin the namespaces → set up the network → write the pod's files
//!   → start the monitor → save the record
//! ```
//!
//! The pod becomes visible only when its record is saved, after every part of it exists.

use std::path::Path;

use k8s_cri::v1 as cri;
use reef_netplug::PodSpec;
use reef_runtime::pin::{self, PodNamespaceSet};
use reef_runtime::userns::IdMappings;

use super::{PinnedPaths, PodRecord, PodState, Pods, PortMapping, net_ports};
use crate::error::{ReefError, internal};
use crate::rollback::Rollback;

impl Pods {
    /// Blocking: forks, mounts and starts a process. Call from a blocking thread.
    pub fn run(&self, config: &cri::PodSandboxConfig, runtime_handler: &str) -> Result<PodRecord, ReefError> {
        let (meta, options, userns) = validate(config, runtime_handler)?;
        let id = self.new_id();
        let mut pod = PodRecord {
            id: id.clone(),
            name: meta.name,
            uid: meta.uid,
            namespace: meta.namespace,
            attempt: meta.attempt,
            state: PodState::Ready,
            created_at: reef_runtime::clock::now_nanos(),
            hostname: config.hostname.clone(),
            log_directory: config.log_directory.clone(),
            runtime_handler: runtime_handler.to_string(),
            labels: config.labels.clone().into_iter().collect(),
            annotations: config.annotations.clone().into_iter().collect(),
            network_mode: options.network,
            pid_mode: options.pid,
            ipc_mode: options.ipc,
            pinned: PinnedPaths::default(),
            port_mappings: config.port_mappings.iter().map(PortMapping::from).collect(),
            cgroup_parent: config.linux.as_ref().map(|l| l.cgroup_parent.clone()).unwrap_or_default(),
            ips: vec![],
            userns: userns.clone(),
        };
        let host_network = options.network == cri::NamespaceMode::Node as i32;
        let share_pid = options.pid == cri::NamespaceMode::Pod as i32;
        let dir = self.pod_dir(&id);

        let mut undo = Rollback::new();
        self.reserve_name(&mut undo, &pod)?;
        pod.pinned = self.pin_namespaces(&mut undo, &dir, &options, userns, &pod.hostname)?;
        pod.ips = self.set_up_network(&mut undo, &pod)?;
        super::files::write_pod_files(&dir, config, host_network, &pod.ips).map_err(internal("write pod files"))?;
        self.start_monitor(&dir, share_pid, pod.pinned.user.as_deref())?;
        if share_pid {
            pod.pinned.pid = Some(dir.join("ns/pid"));
        }
        self.records.save(&id, &pod).map_err(internal("save pod record"))?;
        undo.disarm();
        self.pods.write().unwrap_or_else(|p| p.into_inner()).insert(id, pod.clone());
        Ok(pod)
    }

    fn new_id(&self) -> String {
        loop {
            let id = crate::records::new_id();
            if !self.pod_dir(&id).exists() {
                return id;
            }
        }
    }

    fn reserve_name<'a>(&'a self, undo: &mut Rollback<'a>, pod: &PodRecord) -> Result<(), ReefError> {
        let name = pod.reserved_name();
        self.names
            .reserve(&name, &pod.id)
            .map_err(|holder| ReefError::AlreadyExists(format!("pod name {name:?} is reserved for {holder}")))?;
        undo.push("reserve the name", move || self.names.release(&name));
        Ok(())
    }

    /// The pod's directory and its pinned namespaces. The undo takes down the whole directory: pins, files and a
    /// monitor that may have started.
    fn pin_namespaces<'a>(
        &'a self,
        undo: &mut Rollback<'a>,
        dir: &Path,
        options: &cri::NamespaceOption,
        userns: Option<IdMappings>,
        hostname: &str,
    ) -> Result<PinnedPaths, ReefError> {
        let dir_ = dir.to_path_buf();
        undo.push("pin the namespaces", move || self.teardown_dir(&dir_));
        std::fs::create_dir_all(dir).map_err(internal("create pod dir"))?;
        let host_network = options.network == cri::NamespaceMode::Node as i32;
        let set = PodNamespaceSet {
            network: !host_network,
            ipc: options.ipc != cri::NamespaceMode::Node as i32,
            uts: !host_network,
            user: userns,
        };
        let pinned =
            pin::pin(&dir.join("ns"), &set, hostname).map_err(crate::error::runtime("pin the pod's namespaces"))?;
        Ok(PinnedPaths { network: pinned.network, ipc: pinned.ipc, uts: pinned.uts, pid: None, user: pinned.user })
    }

    /// The pod's addresses; none for a host-network pod. The undo is registered before the setup: netplug records
    /// its intent first, and a setup that fails half-way may have made a veth or taken an address.
    fn set_up_network<'a>(&'a self, undo: &mut Rollback<'a>, pod: &PodRecord) -> Result<Vec<String>, ReefError> {
        let Some(netns) = &pod.pinned.network else { return Ok(vec![]) };
        let ports = net_ports(&pod.port_mappings)?;
        let id = pod.id.clone();
        undo.push("set up the network", move || {
            if let Err(e) = self.network.teardown(&id) {
                tracing::warn!(pod = %id, error = %crate::error::chain(&e), "cannot undo the network of a failed pod");
            }
        });
        let spec =
            PodSpec { id: &pod.id, name: &pod.name, namespace: &pod.namespace, uid: &pod.uid, netns, ports: &ports };
        Ok(self.network.setup(&spec).map_err(ReefError::Network)?.iter().map(|ip| ip.to_string()).collect())
    }

    /// The pod's monitor, which daemonizes: this waits only for it to be serving. Undone with the pod's
    /// directory (`pin_namespaces`), whose teardown shuts a monitor down.
    fn start_monitor(&self, dir: &Path, share_pid: bool, userns: Option<&Path>) -> Result<(), ReefError> {
        let mut monitor = std::process::Command::new(&self.monitor_bin);
        monitor.arg(dir);
        if share_pid {
            monitor.arg("--share-pid-namespace");
            if let Some(user) = userns {
                monitor.arg("--user-namespace").arg(user);
            }
        }
        if let Some(fd) = self.node_mounts {
            monitor.arg("--node-mounts").arg(fd.to_string());
        }
        let status = monitor
            .status()
            .map_err(|e| ReefError::Internal(format!("start pod monitor {}: {e}", self.monitor_bin.display())))?;
        if !status.success() {
            return Err(ReefError::Internal(format!(
                "pod monitor failed to start ({status}); see {}",
                dir.join("monitor.log").display()
            )));
        }
        Ok(())
    }
}

/// Everything about the request, checked before anything is made.
fn validate(
    config: &cri::PodSandboxConfig,
    runtime_handler: &str,
) -> Result<(cri::PodSandboxMetadata, cri::NamespaceOption, Option<IdMappings>), ReefError> {
    let meta = config.metadata.clone().ok_or_else(|| ReefError::InvalidArgument("pod metadata is required".into()))?;
    if meta.name.is_empty() || meta.namespace.is_empty() || meta.uid.is_empty() {
        return Err(ReefError::InvalidArgument("pod metadata needs a name, a namespace and a uid".into()));
    }
    crate::validate::pod(config)?;
    if !runtime_handler.is_empty() {
        return Err(ReefError::InvalidArgument(format!("unknown runtime handler {runtime_handler:?}")));
    }
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let userns = crate::spec::user_namespace(&options)?;
    if userns.is_some() && !reef_runtime::userns::kernel_supports_pod_user_namespaces() {
        return Err(ReefError::FailedPrecondition(
            "user namespaces (hostUsers: false) need Linux 6.13 or later on this node".into(),
        ));
    }
    Ok((meta, options, userns))
}

impl From<&cri::PortMapping> for PortMapping {
    fn from(p: &cri::PortMapping) -> Self {
        PortMapping {
            protocol: p.protocol,
            container_port: p.container_port,
            host_port: p.host_port,
            host_ip: p.host_ip.clone(),
        }
    }
}
