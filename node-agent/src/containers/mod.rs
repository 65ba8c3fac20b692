//! Containers: an overlay root filesystem from the image's layers, an OCI spec from the CRI config, and a process
//! run by the pod's monitor. The monitor owns the process and its exit; this side owns the record and the files.
//!
//! ```text
//! CreateContainer ──► Created ──StartContainer──► Running ──(exit / StopContainer)──► Exited ──RemoveContainer──► (gone)
//! ```
//! State is never cached here: it is asked of the monitor, or read from the exit record the monitor wrote when
//! the monitor is gone, so it is right after any restart of reefd.

mod create;
pub mod cri_status;
mod devices;
mod events;
mod exec;
pub mod exits;
mod image_holds;

pub use create::CreateRequest;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use reef_images::store::Store;
use reef_runtime::monitor::client::MonitorClient;
use reef_runtime::monitor::protocol::{ContainerState, ErrorKind, ExitRecord, Request, Response, Status};
use reef_runtime::mountpoints::MountpointLayers;
use reef_runtime::rootfs;
use serde::{Deserialize, Serialize};

use self::events::Phase;
use self::exits::ExitWatch;
use crate::error::{ReefError, internal};
use crate::events::Events;
use crate::pods::Pods;
use crate::records::{Names, Records};
use crate::spec;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    pub name: String,
    pub attempt: u32,
    /// The image as the CRI named it, its id and the reference it was pulled by.
    pub image: String,
    pub image_id: String,
    pub image_ref: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub log_path: String,
    pub created_at: i64,
    pub mounts: Vec<MountRecord>,
    pub stop_signal: i32,
    reserved_name: String,
    /// How the container's process was set up; execs into it run the same way.
    #[serde(default)]
    plan: Option<reef_runtime::launch::LaunchPlan>,
}

impl ContainerRecord {
    #[cfg(test)]
    pub fn for_tests(id: &str, pod_id: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            pod_id: pod_id.into(),
            name: "c".into(),
            attempt: 0,
            image: String::new(),
            image_id: String::new(),
            image_ref: String::new(),
            labels: Default::default(),
            annotations: Default::default(),
            log_path: String::new(),
            created_at: 0,
            mounts: vec![],
            stop_signal: 15,
            reserved_name: String::new(),
            plan: None,
        }
    }

    /// The container was created with a terminal (its monitor holds a pty for it).
    pub fn has_terminal(&self) -> bool {
        self.plan.as_ref().is_some_and(|p| p.terminal)
    }

    /// How the process was set up (user, limits, namespaces); `None` for records older than plans.
    pub fn plan(&self) -> Option<&reef_runtime::launch::LaunchPlan> {
        self.plan.as_ref()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountRecord {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    pub propagation: i32,
}

/// What a container is now, from the monitor or from the exit record on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Created,
    Running {
        started_at: i64,
    },
    Exited {
        started_at: i64,
        exit: ExitRecord,
    },
    /// Neither the monitor nor the disk says (the monitor died before the container exited).
    Unknown,
}

pub struct Containers {
    default_cgroup_parent: String,
    /// kubelet's systemd cgroup driver: parents are slices and containers transient scopes.
    systemd_cgroups: bool,
    /// What this process may hand on: read once, it does not change.
    available_capabilities: Vec<String>,
    root_dir: PathBuf,
    state_dir: PathBuf,
    records: Records,
    names: Names,
    map: RwLock<HashMap<String, ContainerRecord>>,
    events: Arc<Events>,
    /// What was last published for each container (events.rs).
    phases: Mutex<HashMap<String, Phase>>,
    /// One lock per pod, held while its events are built and sent: they go out in order.
    event_order: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    exit_watch: ExitWatch,
    /// When this reefd loaded the records (ns): exits after it are this reefd's to publish.
    opened_at: i64,
    /// The shared layer of mount points above each image's layers (see `reef_runtime::mountpoints`).
    mountpoints: MountpointLayers,
    /// Images held by containers being created, which RemoveImage must not take from under them.
    image_holds: image_holds::ImageHolds,
    /// Held while a record is changed or deleted, so an UpdateContainerResources cannot bring back a record that
    /// RemoveContainer deleted, nor two updates cross.
    record_changes: Mutex<()>,
}

fn short(id: &str) -> &str {
    &id[..id.len().min(16)]
}

fn monitor_call(pods: &Pods, pod_id: &str, request: &Request) -> Result<Response, ReefError> {
    let socket = pods.pod_dir(pod_id).join(reef_runtime::monitor::SOCKET);
    let mut client = MonitorClient::connect(&socket).map_err(ReefError::MonitorUnreachable)?;
    client.call(request).map_err(ReefError::MonitorCall)
}

pub(crate) fn ok_state(response: Response) -> Result<Option<ContainerState>, ReefError> {
    match response {
        Response::Ok { state } => Ok(state),
        Response::Error { kind: ErrorKind::NotFound, message, .. } => Err(ReefError::NotFound(message)),
        Response::Error { kind: ErrorKind::AlreadyExists, message, .. } => Err(ReefError::AlreadyExists(message)),
        Response::Error { kind: ErrorKind::InvalidState, message, .. } => Err(ReefError::FailedPrecondition(message)),
        Response::Error { message, .. } => Err(ReefError::Failed(message)),
    }
}

impl Containers {
    pub fn open(
        root_dir: &Path,
        state_dir: &Path,
        default_cgroup_parent: &str,
        systemd_cgroups: bool,
        events: Arc<Events>,
    ) -> std::io::Result<Containers> {
        let records = Records::open(&root_dir.join("containers/records"))?;
        let names = Names::default();
        let mut map = HashMap::new();
        for c in records.load_all::<ContainerRecord>() {
            let _ = names.reserve(&c.reserved_name, &c.id);
            map.insert(c.id.clone(), c);
        }
        let containers = Containers {
            default_cgroup_parent: default_cgroup_parent.to_string(),
            systemd_cgroups,
            available_capabilities: reef_runtime::launch::available_capabilities(),
            root_dir: root_dir.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            records,
            names,
            map: RwLock::new(map),
            events,
            phases: Mutex::default(),
            event_order: Mutex::default(),
            exit_watch: ExitWatch::new(),
            opened_at: reef_runtime::clock::now_nanos(),
            mountpoints: MountpointLayers::open(&root_dir.join("mountpoints"))?,
            image_holds: Default::default(),
            record_changes: Mutex::new(()),
        };
        containers.sweep_orphans();
        Ok(containers)
    }

    /// Starts watching a pod's directory for its containers' exits (RunPodSandbox, and each pod at startup).
    pub fn watch_pod(&self, pods: &Pods, pod_id: &str) {
        self.exit_watch.watch(&pods.pod_dir(pod_id));
    }

    pub fn exit_watch(&self) -> &ExitWatch {
        &self.exit_watch
    }

    fn upper_dir(&self, id: &str) -> PathBuf {
        self.root_dir.join("containers").join(id)
    }

    fn rootfs_dir(&self, id: &str) -> PathBuf {
        self.state_dir.join("containers").join(short(id)).join("rootfs")
    }

    pub fn get(&self, id: &str) -> Option<ContainerRecord> {
        crate::records::find(&self.map.read().unwrap_or_else(|p| p.into_inner()), id).cloned()
    }

    pub fn list(&self) -> Vec<ContainerRecord> {
        let mut v: Vec<ContainerRecord> =
            self.map.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        v.sort_by_key(|c| c.created_at);
        v
    }

    pub fn of_pod(&self, pod_id: &str) -> Vec<ContainerRecord> {
        self.list().into_iter().filter(|c| c.pod_id == pod_id).collect()
    }

    /// The container's state now. Asks the monitor; falls back to the exit record on disk.
    pub fn observe(&self, pods: &Pods, c: &ContainerRecord) -> Observed {
        match monitor_call(pods, &c.pod_id, &Request::State { id: c.id.clone() }).and_then(ok_state) {
            Ok(Some(s)) => match (s.status, s.exit) {
                (Status::Created, _) => Observed::Created,
                (Status::Running, _) => Observed::Running { started_at: s.started_at.unwrap_or_default() },
                (Status::Exited, Some(exit)) => Observed::Exited { started_at: s.started_at.unwrap_or_default(), exit },
                (Status::Exited, None) => Observed::Unknown,
            },
            _ => {
                let dir = pods.pod_dir(&c.pod_id);
                let read = |ext: &str| std::fs::read(dir.join(format!("{}.{ext}", c.id))).ok();
                let started_at = read("started").and_then(|b| serde_json::from_slice::<i64>(&b).ok());
                match (read("exit").and_then(|b| serde_json::from_slice::<ExitRecord>(&b).ok()), started_at) {
                    (Some(exit), s) => Observed::Exited { started_at: s.unwrap_or_default(), exit },
                    _ => Observed::Unknown,
                }
            }
        }
    }

    pub fn start(&self, pods: &Pods, id: &str) -> Result<(), ReefError> {
        let c = self.get(id).ok_or_else(|| ReefError::NotFound(format!("container {id:?} not found")))?;
        ok_state(monitor_call(pods, &c.pod_id, &Request::Start { id: c.id.clone() })?)?;
        self.advance(pods, &c, Phase::Started);
        Ok(())
    }

    /// The stop signal, then SIGKILL once `timeout` has passed. A stopped or missing container is fine.
    pub fn stop(&self, pods: &Pods, id: &str, timeout: Duration) -> Result<(), ReefError> {
        let Some(c) = self.get(id) else { return Ok(()) };
        // Only a running process has anything to stop; a created one stays created, as in containerd.
        let observed = self.observe(pods, &c);
        if !matches!(observed, Observed::Running { .. }) {
            // It may have exited a moment ago: once StopContainer returns, its Stopped is out.
            if self.exit_unpublished(&c, &observed) {
                self.advance(pods, &c, Phase::Stopped);
            }
            return Ok(());
        }
        let signal = |sig: i32| {
            monitor_call(pods, &c.pod_id, &Request::Signal { id: c.id.clone(), signal: sig }).and_then(ok_state)
        };
        if !timeout.is_zero() {
            signal(c.stop_signal)?;
            if self.wait_exit(pods, &c, timeout) {
                self.advance(pods, &c, Phase::Stopped);
                return Ok(());
            }
        }
        signal(nix::sys::signal::Signal::SIGKILL as i32)?;
        if self.wait_exit(pods, &c, Duration::from_secs(10)) {
            self.advance(pods, &c, Phase::Stopped);
            Ok(())
        } else {
            Err(ReefError::Failed(format!("container {} did not exit after SIGKILL", c.id)))
        }
    }

    fn wait_exit(&self, pods: &Pods, c: &ContainerRecord, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        // A killed process is usually gone within a millisecond or two: poll fast first, then back off, so that
        // StopContainer does not wait a whole fixed interval for an exit that already happened.
        let mut pause = Duration::from_millis(1);
        loop {
            if !matches!(self.observe(pods, c), Observed::Running { .. }) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// The container's cgroup path, if it has one.
    pub fn cgroup_path(&self, c: &ContainerRecord) -> Option<String> {
        c.plan.as_ref().and_then(|p| p.cgroup.as_ref()).map(|g| g.path.clone())
    }

    /// New CPU and memory limits for a running container.
    pub fn update_resources(&self, id: &str, r: &cri::LinuxContainerResources) -> Result<(), ReefError> {
        let _changing = self.record_changes.lock().unwrap_or_else(|p| p.into_inner());
        let c = self.get(id).ok_or_else(|| ReefError::NotFound(format!("container {id:?} not found")))?;
        let cgroup = c
            .plan
            .as_ref()
            .and_then(|p| p.cgroup.as_ref())
            .ok_or_else(|| ReefError::FailedPrecondition(format!("container {} has no cgroup", c.id)))?;
        let (path, unit) = (cgroup.path.clone(), cgroup.systemd.clone());
        crate::validate::update(r)?;
        let mut resources = spec::resources_for_update(r).map_err(|e| ReefError::InvalidArgument(e.to_string()))?;
        // Device rules are set once at creation; an update only changes limits.
        resources.set_devices(None);
        // On this blocking thread, under systemd, a D-Bus connection opened and closed for the call.
        reef_runtime::cgroups::update(&path, unit.as_deref(), &resources)
            .map_err(crate::error::runtime(format!("update the cgroup of container {}", c.id)))?;
        // ContainerStatus reports the limits in force: keep the record's copy in step (devices stay as created).
        let mut c = c;
        if let Some(cgroup) = c.plan.as_mut().and_then(|p| p.cgroup.as_mut()) {
            let devices = cgroup.resources.devices().clone();
            cgroup.resources = resources;
            cgroup.resources.set_devices(devices);
        }
        self.records.save(&c.id, &c).map_err(internal("save container record"))?;
        self.map.write().unwrap_or_else(|p| p.into_inner()).insert(c.id.clone(), c);
        Ok(())
    }

    pub fn reopen_log(&self, pods: &Pods, id: &str) -> Result<(), ReefError> {
        let c = self.get(id).ok_or_else(|| ReefError::NotFound(format!("container {id:?} not found")))?;
        ok_state(monitor_call(pods, &c.pod_id, &Request::ReopenLog { id: c.id.clone() })?).map(|_| ())
    }

    /// Stops (if needed) and deletes the container. A missing container is fine.
    pub fn remove(&self, pods: &Pods, id: &str) -> Result<(), ReefError> {
        let Some(c) = self.get(id) else { return Ok(()) };
        self.stop(pods, &c.id, Duration::ZERO)?;
        match monitor_call(pods, &c.pod_id, &Request::Forget { id: c.id.clone() }).and_then(ok_state) {
            // A monitor already gone (pod removed, node rebooted) has nothing left to forget; one that no longer
            // knows the container has forgotten it. Any other failure leaves the record for a retry.
            Ok(_) | Err(ReefError::MonitorUnreachable(_)) | Err(ReefError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.remove_files(&c.id);
        {
            let _changing = self.record_changes.lock().unwrap_or_else(|p| p.into_inner());
            self.records.delete(&c.id).map_err(internal("delete container record"))?;
            self.map.write().unwrap_or_else(|p| p.into_inner()).remove(&c.id);
        }
        self.names.release(&c.reserved_name);
        self.deleted(pods, &c);
        Ok(())
    }

    /// RemoveImage: removes `name` unless a container uses its image or one being created holds it.
    pub fn remove_image(&self, store: &Store, name: &str) -> Result<Option<String>, ReefError> {
        let in_use = |image_id: &str| {
            self.list().into_iter().find(|c| c.image_id == image_id).map(|c| format!("container {} ({})", c.id, c.name))
        };
        self.image_holds
            // Only the record goes under the image gate; deleting the layers (slow for a big image) must not hold
            // up every CreateContainer's image lookup.
            .remove_unless_used(store, name, in_use, || store.forget(name))
            .map_err(|user| {
                ReefError::FailedPrecondition(format!("image {name:?} is in use by {user}: remove the container first"))
            })?
            .map_err(|source| ReefError::Image { image: name.to_string(), source })
            .and_then(|removed| {
                if removed.is_some() {
                    store.collect_garbage().map_err(|source| ReefError::Image { image: name.to_string(), source })?;
                }
                Ok(removed)
            })
    }

    /// A reefd killed in the middle of CreateContainer leaves a mounted rootfs and an upper dir with no record:
    /// both go here, before anything is served.
    fn sweep_orphans(&self) {
        let ids: Vec<String> = self.list().into_iter().map(|c| c.id).collect();
        let known_short: Vec<&str> = ids.iter().map(|id| short(id)).collect();
        if let Ok(entries) = std::fs::read_dir(self.state_dir.join("containers")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !known_short.contains(&name.as_str()) {
                    tracing::info!(container = %name, "removing the rootfs of a container that was never completed");
                    let _ = rootfs::unmount(&e.path().join("rootfs"));
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.root_dir.join("containers")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name != "records" && !ids.contains(&name) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }

    fn remove_files(&self, id: &str) {
        let rootfs = self.rootfs_dir(id);
        if let Err(e) = rootfs::unmount(&rootfs) {
            tracing::warn!(container = id, error = %crate::error::chain(&e), "cannot unmount the container's rootfs");
        }
        for dir in [rootfs.parent().map(Path::to_path_buf), Some(self.upper_dir(id))].into_iter().flatten() {
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(container = id, dir = %dir.display(), error = %e, "cannot remove");
            }
        }
    }
}

fn security_context(config: &cri::ContainerConfig) -> cri::LinuxContainerSecurityContext {
    config.linux.as_ref().and_then(|l| l.security_context.clone()).unwrap_or_default()
}
