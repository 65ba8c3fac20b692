//! CreateContainer as a pipeline of named steps. Each step that makes something registers its undo with one
//! `Rollback` right after, so a failure at any later step takes back exactly what was made, in reverse order:
//!
//! ```text
//! check the pod → validate → hold the image → reserve the name → mount the rootfs → resolve the user
//!   → build the spec → plan → ready the log → create in the monitor → save the record
//! ```
//!
//! Until the record is saved and put in the map nothing of the container is visible; the image hold lasts until
//! then too, so RemoveImage cannot take the layers from under it (see `image_holds`).

use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use reef_images::manifest::ContainerConfig as ImageConfig;
use reef_images::store::{ImageRecord, Store};
use reef_runtime::launch::LaunchPlan;
use reef_runtime::monitor::protocol::{Request, Status};
use reef_runtime::mountpoints;
use reef_runtime::rootfs::{self, Overlay};

use super::events::Phase;
use super::{ContainerRecord, Containers, MountRecord, monitor_call, ok_state, security_context};
use crate::error::{ReefError, internal};
use crate::pods::{PodRecord, PodState, Pods};
use crate::rollback::Rollback;
use crate::spec::{self, PodNamespaces, SpecInput};

/// What CreateContainer was asked.
pub struct CreateRequest<'a> {
    pub pod_id: &'a str,
    pub config: &'a cri::ContainerConfig,
    pub sandbox: &'a cri::PodSandboxConfig,
}

impl Containers {
    /// Blocking: mounts and talks to the monitor.
    pub fn create(&self, pods: &Pods, store: &Store, req: &CreateRequest<'_>) -> Result<ContainerRecord, ReefError> {
        let config = req.config;
        let pod = ready_pod(pods, req.pod_id)?;
        let meta = validate(config, req.sandbox)?;
        let image_name = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        // Held until the container's record is in the map, where RemoveImage sees it.
        let (image, _hold) = self
            .image_holds
            .resolve(store, &image_name)
            .ok_or_else(|| ReefError::NotFound(format!("image {image_name:?} not found: pull it first")))?;
        let image_config = image_config(store, &image_name, &image)?;
        let id = self.new_id();

        let mut undo = Rollback::new();
        let reserved_name = self.reserve_name(&mut undo, &meta, &pod, &id)?;
        let mut with_pod_files = config.clone();
        add_pod_files(&mut with_pod_files, &pods.pod_dir(&pod.id));
        let overlay = self.mount_rootfs(&mut undo, store, &image, &pod, &with_pod_files, &id)?;
        let user = resolve_user(&overlay, config, &image_config, &image_name)?;
        let spec = self.build_spec(pods, &pod, &with_pod_files, req.sandbox, &image_config, &overlay, &user, &id)?;
        let plan = plan(&spec)?;
        let log = ready_log(&pod, config)?;
        if let Err(e) = self.create_in_monitor(&mut undo, pods, &pod, &id, &plan, log, config) {
            // reef-default may have been unloaded since it was found (aa-teardown, say): the next container that
            // asks for it looks again, and loads it again.
            if plan.apparmor_profile.as_deref() == Some(reef_runtime::apparmor::DEFAULT_PROFILE) {
                reef_runtime::apparmor::recheck_default_profile();
            }
            return Err(e);
        }

        let record = ContainerRecord {
            id: id.clone(),
            pod_id: pod.id.clone(),
            name: meta.name.clone(),
            attempt: meta.attempt,
            image: image_name,
            image_id: image.id.clone(),
            image_ref: image.repo_digests.first().cloned().unwrap_or_else(|| image.id.clone()),
            labels: config.labels.clone().into_iter().collect(),
            annotations: config.annotations.clone().into_iter().collect(),
            log_path: log_path(&pod, config),
            created_at: reef_runtime::clock::now_nanos(),
            mounts: config.mounts.iter().map(MountRecord::from).collect(),
            stop_signal: spec::stop_signal(&image_config),
            reserved_name,
            plan: Some(plan),
        };
        self.records.save(&id, &record).map_err(internal("save container record"))?;
        undo.disarm();
        self.map.write().unwrap_or_else(|p| p.into_inner()).insert(id, record.clone());
        self.advance(pods, &record, Phase::Created);
        Ok(record)
    }

    fn new_id(&self) -> String {
        loop {
            let id = crate::records::new_id();
            if !self.rootfs_dir(&id).exists() {
                return id;
            }
        }
    }

    fn reserve_name<'a>(
        &'a self,
        undo: &mut Rollback<'a>,
        meta: &cri::ContainerMetadata,
        pod: &PodRecord,
        id: &str,
    ) -> Result<String, ReefError> {
        let reserved = format!("{}_{}_{}_{}_{}", meta.name, pod.name, pod.namespace, pod.uid, meta.attempt);
        self.names.reserve(&reserved, id).map_err(|holder| {
            ReefError::AlreadyExists(format!("container name {reserved:?} is reserved for {holder}"))
        })?;
        let (names, name) = (&self.names, reserved.clone());
        undo.push("reserve the name", move || names.release(&name));
        Ok(reserved)
    }

    /// The overlay of the image's layers (and the mount-point layer) with the container's upper dir.
    fn mount_rootfs<'a>(
        &'a self,
        undo: &mut Rollback<'a>,
        store: &Store,
        image: &ImageRecord,
        pod: &PodRecord,
        config: &cri::ContainerConfig,
        id: &str,
    ) -> Result<Overlay, ReefError> {
        let mut overlay = Overlay {
            layers: self
                .layers_with_mountpoints(image.layers.iter().map(|l| store.layer_path(&l.chain_id)).collect(), config),
            upper: self.upper_dir(id).join("upper"),
            work: self.upper_dir(id).join("work"),
            target: self.rootfs_dir(id),
            readonly: false,
            idmap: rootfs_idmap(pod, config)?,
        };
        // The extra layer must not cost an image that is near mount(2)'s one-page limit its containers.
        if overlay.layers.len() > image.layers.len()
            && matches!(overlay.options(), Err(rootfs::RootfsError::TooManyLayers(_)))
        {
            overlay.layers.pop();
        }
        // Registered first: a mount that fails half-way may still have made the directories.
        let id_ = id.to_string();
        undo.push("mount the rootfs", move || self.remove_files(&id_));
        overlay.mount().map_err(crate::error::runtime("mount the container's rootfs"))?;
        Ok(overlay)
    }

    /// The image's layers with the mount-point layer on top when the image allows it. Without it the container
    /// still works, only slower to create, so a failure to make it is logged, not returned.
    fn layers_with_mountpoints(&self, mut layers: Vec<PathBuf>, config: &cri::ContainerConfig) -> Vec<PathBuf> {
        let etc_files: Vec<&str> = mountpoints::ETC_FILES
            .into_iter()
            .filter(|f| {
                config.mounts.iter().any(|m| {
                    m.container_path.strip_prefix("/etc/") == Some(f)
                        && std::fs::metadata(&m.host_path).is_ok_and(|md| md.is_file())
                })
            })
            .collect();
        match self.mountpoints.layer_for(&layers, &etc_files) {
            Ok(Some(layer)) => layers.push(layer),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot make the mount-point layer; creating mount points per container")
            }
        }
        layers
    }

    #[allow(clippy::too_many_arguments)]
    fn build_spec(
        &self,
        pods: &Pods,
        pod: &PodRecord,
        config: &cri::ContainerConfig,
        sandbox: &cri::PodSandboxConfig,
        image_config: &ImageConfig,
        overlay: &Overlay,
        user: &reef_runtime::users::ResolvedUser,
        id: &str,
    ) -> Result<reef_runtime::oci_spec::runtime::Spec, ReefError> {
        let pod_ns = PodNamespaces {
            network: pod.pinned.network.clone(),
            ipc: pod.pinned.ipc.clone(),
            uts: pod.pinned.uts.clone(),
            pid: self.pid_namespace_to_join(pods, pod, config)?,
            user: pod.pinned.user.clone(),
        };
        let seccomp = spec::seccomp::filter(&security_context(config), |path| std::fs::read(path))?;
        let apparmor = spec::security::apparmor_profile(&security_context(config), &spec::security::NodeAppArmor)?;
        Ok(spec::build(&SpecInput {
            container: config,
            sandbox,
            image: image_config,
            pod: &pod_ns,
            rootfs: overlay.target.clone(),
            cgroup_path: spec::cgroup_path(self.systemd_cgroups, &pod.cgroup_parent, &self.default_cgroup_parent, id)?,
            user,
            available_capabilities: &self.available_capabilities,
            devices: &super::devices::lookup(&config.devices)?,
            seccomp: &seccomp,
            apparmor: apparmor.as_deref(),
        })?)
    }

    /// The PID namespace a container joins: the pod's shared one (mode POD), or a running container's of the
    /// same pod (mode TARGET, as ephemeral debug containers ask); `None` for a namespace of its own or the host's.
    fn pid_namespace_to_join(
        &self,
        pods: &Pods,
        pod: &PodRecord,
        config: &cri::ContainerConfig,
    ) -> Result<Option<PathBuf>, ReefError> {
        let options = security_context(config).namespace_options.unwrap_or_default();
        match cri::NamespaceMode::try_from(options.pid) {
            Ok(cri::NamespaceMode::Pod) => pod.pinned.pid.clone().map(Some).ok_or_else(|| {
                ReefError::FailedPrecondition(format!(
                    "pod sandbox {} has no shared PID namespace: it was not run with pid mode POD",
                    pod.id
                ))
            }),
            Ok(cri::NamespaceMode::Target) => {
                let target = self.get(&options.target_id).filter(|t| t.pod_id == pod.id).ok_or_else(|| {
                    ReefError::NotFound(format!(
                        "target container {:?} not found in pod sandbox {}",
                        options.target_id, pod.id
                    ))
                })?;
                let state = ok_state(monitor_call(pods, &pod.id, &Request::State { id: target.id.clone() })?)?;
                match state {
                    Some(s) if s.status == Status::Running => Ok(Some(format!("/proc/{}/ns/pid", s.pid).into())),
                    _ => Err(ReefError::FailedPrecondition(format!(
                        "target container {} is not running: its PID namespace cannot be joined",
                        target.id
                    ))),
                }
            }
            _ => Ok(None),
        }
    }

    /// The monitor builds the container behind its start gate; from here on it holds the process.
    #[allow(clippy::too_many_arguments)]
    fn create_in_monitor<'a>(
        &self,
        undo: &mut Rollback<'a>,
        pods: &'a Pods,
        pod: &PodRecord,
        id: &str,
        plan: &LaunchPlan,
        log: Log,
        config: &cri::ContainerConfig,
    ) -> Result<(), ReefError> {
        let create = Request::Create {
            id: id.to_string(),
            plan: plan.clone(),
            log_dir: log.dir,
            log_path: log.path,
            stdin: config.stdin,
            stdin_once: config.stdin_once,
        };
        ok_state(monitor_call(pods, &pod.id, &create)?)?;
        let (pod_id, id) = (pod.id.clone(), id.to_string());
        undo.push("create in the monitor", move || {
            let _ = monitor_call(pods, &pod_id, &Request::Forget { id });
        });
        Ok(())
    }
}

fn ready_pod(pods: &Pods, pod_id: &str) -> Result<PodRecord, ReefError> {
    let pod = pods.get(pod_id).ok_or_else(|| ReefError::NotFound(format!("pod sandbox {pod_id:?} not found")))?;
    if pod.state != PodState::Ready {
        return Err(ReefError::FailedPrecondition(format!("pod sandbox {} is not ready", pod.id)));
    }
    Ok(pod)
}

fn validate(
    config: &cri::ContainerConfig,
    sandbox: &cri::PodSandboxConfig,
) -> Result<cri::ContainerMetadata, ReefError> {
    let meta =
        config.metadata.clone().ok_or_else(|| ReefError::InvalidArgument("container metadata is required".into()))?;
    if meta.name.is_empty() {
        return Err(ReefError::InvalidArgument("container name is required".into()));
    }
    crate::validate::container(config, sandbox)?;
    Ok(meta)
}

/// The config says who the container runs as (kubelet checks runAsNonRoot against ImageStatus's user): an
/// unreadable one must not silently become root with no entrypoint. Only a missing `config` section means the
/// defaults.
fn image_config(store: &Store, name: &str, image: &ImageRecord) -> Result<ImageConfig, ReefError> {
    let bytes = store
        .read_blob(&image.id)
        .map_err(|e| ReefError::FailedPrecondition(format!("image {name}: cannot read its config: {e}")))?;
    let parsed = serde_json::from_slice::<reef_images::manifest::ImageConfig>(&bytes)
        .map_err(|e| ReefError::FailedPrecondition(format!("image {name}: its config is not valid JSON: {e}")))?;
    Ok(parsed.config.unwrap_or_default())
}

/// A pod with its own user namespace has all its containers in it, with image layers idmapped to its root.
/// A container that asks for the pod's user namespace in a pod without one is refused.
fn rootfs_idmap(pod: &PodRecord, config: &cri::ContainerConfig) -> Result<Option<rootfs::Idmap>, ReefError> {
    let asked = spec::user_namespace(&security_context(config).namespace_options.clone().unwrap_or_default())?;
    let (Some(maps), Some(userns)) = (&pod.userns, &pod.pinned.user) else {
        if asked.is_some() {
            return Err(ReefError::InvalidArgument(format!(
                "the container asks for the pod's user namespace, but pod {} has none (hostUsers: true)",
                pod.id
            )));
        }
        return Ok(None);
    };
    let (Some(root_uid), Some(root_gid)) = (maps.host_uid(0), maps.host_gid(0)) else {
        return Err(ReefError::InvalidArgument(
            "the pod's user namespace maps no root (container id 0): its rootfs would belong to nobody".into(),
        ));
    };
    Ok(Some(rootfs::Idmap { userns: userns.clone(), root_uid, root_gid }))
}

/// Who the process runs as, resolved in the image's own /etc/passwd and /etc/group.
fn resolve_user(
    overlay: &Overlay,
    config: &cri::ContainerConfig,
    image_config: &ImageConfig,
    image_name: &str,
) -> Result<reef_runtime::users::ResolvedUser, ReefError> {
    let request = spec::user_request(&security_context(config), image_config)?;
    reef_runtime::users::resolve(&overlay.target, &request)
        .map_err(crate::error::runtime(format!("image {image_name}")))
}

fn plan(spec: &reef_runtime::oci_spec::runtime::Spec) -> Result<LaunchPlan, ReefError> {
    reef_runtime::plan::plan_from_spec(spec).map_err(crate::error::runtime("plan the container"))
}

/// Where the container's output goes: its log file, opened below the pod's log directory, or nowhere.
struct Log {
    path: PathBuf,
    dir: Option<PathBuf>,
}

fn log_path(pod: &PodRecord, config: &cri::ContainerConfig) -> String {
    if pod.log_directory.is_empty() || config.log_path.is_empty() {
        return String::new();
    }
    Path::new(&pod.log_directory).join(&config.log_path).display().to_string()
}

/// kubelet makes the pod's directory; the container's own below it (`name/`) is ours, made without leaving the
/// pod's directory, where the monitor then opens the file the same way (see `reef_runtime::logging`).
fn ready_log(pod: &PodRecord, config: &cri::ContainerConfig) -> Result<Log, ReefError> {
    let path = log_path(pod, config);
    if path.is_empty() {
        return Ok(Log { path: PathBuf::from("/dev/null"), dir: None });
    }
    let dir = PathBuf::from(&pod.log_directory);
    std::fs::create_dir_all(&dir).map_err(internal("create the pod's log directory"))?;
    reef_runtime::logging::prepare_beneath(&dir, Path::new(&config.log_path)).map_err(|e| {
        ReefError::InvalidArgument(format!(
            "log_path {:?} does not stay below the pod's log directory {}: {e}",
            config.log_path, pod.log_directory
        ))
    })?;
    Ok(Log { path: PathBuf::from(path), dir: Some(dir) })
}

/// The pod's resolv.conf, hosts and hostname, unless kubelet mounts its own there.
fn add_pod_files(config: &mut cri::ContainerConfig, pod_dir: &Path) {
    for (file, target) in [("resolv.conf", "/etc/resolv.conf"), ("hostname", "/etc/hostname"), ("hosts", "/etc/hosts")]
    {
        if !config.mounts.iter().any(|m| m.container_path == target) {
            config.mounts.push(cri::Mount {
                container_path: target.into(),
                host_path: pod_dir.join(file).display().to_string(),
                readonly: false,
                ..Default::default()
            });
        }
    }
}

impl From<&cri::Mount> for MountRecord {
    fn from(m: &cri::Mount) -> Self {
        MountRecord {
            container_path: m.container_path.clone(),
            host_path: m.host_path.clone(),
            readonly: m.readonly,
            propagation: m.propagation,
        }
    }
}
