//! Containers: an overlay root filesystem from the image's layers, an OCI spec from the CRI config, and a process
//! run by the pod's monitor. The monitor owns the process and its exit; this side owns the record and the files.
//!
//! ```text
//! CreateContainer ──► Created ──StartContainer──► Running ──(exit / StopContainer)──► Exited ──RemoveContainer──► (gone)
//! ```
//! State is never cached here: it is asked of the monitor, or read from the exit record the monitor wrote when
//! the monitor is gone, so it is right after any restart of reefd.

mod devices;
mod events;
pub mod exits;
mod image_holds;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use reef_images::store::Store;
use reef_runtime::monitor::client::MonitorClient;
use reef_runtime::monitor::protocol::{ContainerState, ErrorKind, ExitRecord, Request, Response, Status};
use reef_runtime::mountpoints::{self, MountpointLayers};
use reef_runtime::rootfs::{self, Overlay};
use reef_runtime::userns::IdMappings;
use serde::{Deserialize, Serialize};

use self::events::Phase;
use self::exits::ExitWatch;
use crate::error::ReefError;
use crate::events::Events;
use crate::pods::{PodState, Pods};
use crate::records::{Names, Records};
use crate::spec::{self, PodNamespaces, SpecInput};

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

fn internal(what: &str) -> impl Fn(std::io::Error) -> ReefError + '_ {
    move |e| ReefError::Internal(format!("{what}: {e}"))
}

fn short(id: &str) -> &str {
    &id[..id.len().min(16)]
}

fn monitor_call(pods: &Pods, pod_id: &str, request: &Request) -> Result<Response, ReefError> {
    let socket = pods.pod_dir(pod_id).join(reef_runtime::monitor::SOCKET);
    let mut client = MonitorClient::connect(&socket).map_err(|e| ReefError::Failed(crate::error::chain(&e)))?;
    client.call(request).map_err(|e| ReefError::Failed(crate::error::chain(&e)))
}

fn ok_state(response: Response) -> Result<Option<ContainerState>, ReefError> {
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
            opened_at: reef_images::pull::now_nanos(),
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

    /// Blocking: mounts and talks to the monitor.
    pub fn create(
        &self,
        pods: &Pods,
        store: &Store,
        pod_id: &str,
        config: &cri::ContainerConfig,
        sandbox: &cri::PodSandboxConfig,
    ) -> Result<ContainerRecord, ReefError> {
        let pod = pods.get(pod_id).ok_or_else(|| ReefError::NotFound(format!("pod sandbox {pod_id:?} not found")))?;
        if pod.state != PodState::Ready {
            return Err(ReefError::FailedPrecondition(format!("pod sandbox {} is not ready", pod.id)));
        }
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| ReefError::InvalidArgument("container metadata is required".into()))?;
        if meta.name.is_empty() {
            return Err(ReefError::InvalidArgument("container name is required".into()));
        }
        crate::validate::container(config, sandbox)?;
        let image_name = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        // Held until the container's record is in the map, where RemoveImage sees it.
        let (image, _hold) = self
            .image_holds
            .resolve(store, &image_name)
            .ok_or_else(|| ReefError::NotFound(format!("image {image_name:?} not found: pull it first")))?;
        // The config says who the container runs as (kubelet checks runAsNonRoot against ImageStatus's user): an
        // unreadable one must not silently become root with no entrypoint. Only a missing `config` section
        // means the defaults.
        let image_config = store
            .read_blob(&image.id)
            .map_err(|e| ReefError::FailedPrecondition(format!("image {image_name}: cannot read its config: {e}")))
            .and_then(|b| {
                serde_json::from_slice::<reef_images::manifest::ImageConfig>(&b).map_err(|e| {
                    ReefError::FailedPrecondition(format!("image {image_name}: its config is not valid JSON: {e}"))
                })
            })?
            .config
            .unwrap_or_default();
        let id = loop {
            let id = crate::records::new_id();
            if !self.rootfs_dir(&id).exists() {
                break id;
            }
        };
        let reserved_name = format!("{}_{}_{}_{}_{}", meta.name, pod.name, pod.namespace, pod.uid, meta.attempt);
        self.names.reserve(&reserved_name, &id).map_err(|holder| {
            ReefError::AlreadyExists(format!("container name {reserved_name:?} is reserved for {holder}"))
        })?;
        let log_path = if pod.log_directory.is_empty() || config.log_path.is_empty() {
            String::new()
        } else {
            Path::new(&pod.log_directory).join(&config.log_path).display().to_string()
        };
        let record = ContainerRecord {
            id: id.clone(),
            pod_id: pod.id.clone(),
            name: meta.name.clone(),
            attempt: meta.attempt,
            image: image_name.clone(),
            image_id: image.id.clone(),
            image_ref: image.repo_digests.first().cloned().unwrap_or_else(|| image.id.clone()),
            labels: config.labels.clone().into_iter().collect(),
            annotations: config.annotations.clone().into_iter().collect(),
            log_path: log_path.clone(),
            created_at: reef_images::pull::now_nanos(),
            mounts: config
                .mounts
                .iter()
                .map(|m| MountRecord {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                    readonly: m.readonly,
                    propagation: m.propagation,
                })
                .collect(),
            stop_signal: stop_signal(config, &image_config),
            reserved_name,
            plan: None,
        };
        let mut record = record;
        let mut created_in_monitor = false;
        let result = (|| {
            let mut with_pod_files = config.clone();
            add_pod_files(&mut with_pod_files, &pods.pod_dir(&pod.id));
            let mut overlay = Overlay {
                layers: self.layers_with_mountpoints(
                    image.layers.iter().map(|l| store.layer_path(&l.chain_id)).collect(),
                    &with_pod_files,
                ),
                upper: self.upper_dir(&id).join("upper"),
                work: self.upper_dir(&id).join("work"),
                target: self.rootfs_dir(&id),
                readonly: false,
                idmap: self.rootfs_idmap(&pod, config)?,
            };
            // The extra layer must not cost an image that is near mount(2)'s one-page limit its containers.
            if overlay.layers.len() > image.layers.len()
                && matches!(overlay.options(), Err(rootfs::RootfsError::TooManyLayers(_)))
            {
                overlay.layers.pop();
            }
            overlay.mount().map_err(|e| ReefError::Internal(crate::error::chain(&e)))?;
            let pod_ns = PodNamespaces {
                network: pod.pinned.network.clone(),
                ipc: pod.pinned.ipc.clone(),
                uts: pod.pinned.uts.clone(),
                pid: self.pid_namespace_to_join(pods, &pod, config)?,
                user: pod.pinned.user.clone(),
            };
            let request = spec::user_request(&security_context(config), &image_config)
                .map_err(|e| ReefError::InvalidArgument(e.to_string()))?;
            let user = reef_runtime::users::resolve(&overlay.target, &request).map_err(|e| match e {
                reef_runtime::users::UserError::Read { .. } => ReefError::Internal(e.to_string()),
                e => ReefError::InvalidArgument(format!("image {image_name}: {e}")),
            })?;
            let spec = spec::build(&SpecInput {
                container: &with_pod_files,
                sandbox,
                image: &image_config,
                pod: &pod_ns,
                rootfs: overlay.target.clone(),
                cgroup_path: if self.systemd_cgroups {
                    systemd_cgroup_path(&pod.cgroup_parent, &self.default_cgroup_parent, &id)
                } else {
                    cgroup_path(&pod.cgroup_parent, &self.default_cgroup_parent, &id)
                },
                user: &user,
                available_capabilities: &self.available_capabilities,
                devices: &devices::lookup(&config.devices)?,
            })
            .map_err(|e| ReefError::InvalidArgument(e.to_string()))?;
            let mut spec = spec;
            let sc = security_context(config);
            refuse_apparmor_profile(&sc)?;
            let seccomp = spec::seccomp::choice(&sc).map_err(|e| ReefError::InvalidArgument(e.to_string()))?;
            if let spec::seccomp::Seccomp::Localhost(path) = &seccomp {
                let bytes = std::fs::read(path).map_err(|e| {
                    ReefError::InvalidArgument(format!("cannot read the Localhost seccomp profile {path}: {e}"))
                })?;
                let profile = spec::seccomp::parse_profile(path, &bytes)
                    .map_err(|e| ReefError::InvalidArgument(e.to_string()))?;
                if let Some(linux) = spec.linux_mut() {
                    linux.set_seccomp(Some(profile));
                }
            }
            let plan = reef_runtime::plan::plan_from_spec(&spec).map_err(|e| match e {
                reef_runtime::plan::PlanError::Seccomp(m) => ReefError::InvalidArgument(m),
                e @ reef_runtime::plan::PlanError::UnchangedId { .. } => ReefError::InvalidArgument(e.to_string()),
                e => ReefError::FailedPrecondition(e.to_string()),
            })?;
            let mut plan = plan;
            if seccomp == spec::seccomp::Seccomp::RuntimeDefault {
                let caps = plan.capabilities.as_ref().map(|c| c.bounding.clone()).unwrap_or_default();
                let program = reef_runtime::seccomp::runtime_default_cached(&caps)
                    .map_err(|e| ReefError::Internal(crate::error::chain(&e)))?;
                plan.seccomp = Some(program.to_vec());
            }
            record.plan = Some(plan.clone());
            let (log, log_dir) = if log_path.is_empty() {
                (PathBuf::from("/dev/null"), None)
            } else {
                // kubelet makes the pod's directory; the container's own below it (`name/`) is ours, made without
                // leaving the pod's directory, where the monitor then opens the file the same way (see `logging`).
                let dir = PathBuf::from(&pod.log_directory);
                std::fs::create_dir_all(&dir).map_err(internal("create the pod's log directory"))?;
                reef_runtime::logging::prepare_beneath(&dir, Path::new(&config.log_path)).map_err(|e| {
                    ReefError::InvalidArgument(format!(
                        "log_path {:?} does not stay below the pod's log directory {}: {e}",
                        config.log_path, pod.log_directory
                    ))
                })?;
                (PathBuf::from(&log_path), Some(dir))
            };
            let create = Request::Create {
                id: id.clone(),
                plan,
                log_dir,
                log_path: log,
                stdin: config.stdin,
                stdin_once: config.stdin_once,
            };
            ok_state(monitor_call(pods, &pod.id, &create)?)?;
            created_in_monitor = true;
            self.records.save(&id, &record).map_err(internal("save container record"))
        })();
        if let Err(e) = result {
            if created_in_monitor {
                let _ = monitor_call(pods, &pod.id, &Request::Forget { id: id.clone() });
            }
            self.remove_files(&id);
            self.names.release(&record.reserved_name);
            return Err(e);
        }
        self.map.write().unwrap_or_else(|p| p.into_inner()).insert(id, record.clone());
        self.advance(pods, &record, Phase::Created);
        Ok(record)
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

    /// How to run `cmd` in the running container `id`: its launch plan with `cmd` as the arguments, and its init's
    /// pid, whose namespaces the exec joins.
    pub fn exec_target(
        &self,
        pods: &Pods,
        id: &str,
        cmd: &[String],
    ) -> Result<(reef_runtime::launch::LaunchPlan, nix::unistd::Pid), ReefError> {
        let c = self.get(id).ok_or_else(|| ReefError::NotFound(format!("container {id:?} not found")))?;
        if cmd.is_empty() {
            return Err(ReefError::InvalidArgument("exec needs a command".into()));
        }
        let state = ok_state(monitor_call(pods, &c.pod_id, &Request::State { id: c.id.clone() })?)?;
        let Some(state) = state.filter(|s| s.status == Status::Running) else {
            return Err(ReefError::FailedPrecondition(format!("container {} is not running", c.id)));
        };
        let mut plan = c
            .plan
            .clone()
            .ok_or_else(|| ReefError::FailedPrecondition(format!("container {} has no exec plan", c.id)))?;
        plan.args = cmd.to_vec();
        Ok((plan, nix::unistd::Pid::from_raw(state.pid)))
    }

    /// Runs `cmd` in the running container and collects its output (each stream capped at `max_output`). When
    /// `timeout` passes, the exec's whole process group is killed and the call returns at once, even if something
    /// it started still holds the pipes.
    pub fn exec_sync(
        &self,
        pods: &Pods,
        id: &str,
        cmd: &[String],
        timeout: Option<Duration>,
        max_output: usize,
    ) -> Result<(Vec<u8>, Vec<u8>, i32), ReefError> {
        use std::os::fd::AsRawFd;
        let (plan, target) = self.exec_target(pods, id, cmd)?;
        let c = self.get(id).ok_or_else(|| ReefError::NotFound(format!("container {id:?} not found")))?;
        let pipe =
            || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ReefError::Internal(format!("pipe: {e}")));
        let ((out_r, out_w), (err_r, err_w)) = (pipe()?, pipe()?);
        let null = std::fs::File::open("/dev/null").map_err(internal("open /dev/null"))?;
        let stdio = reef_runtime::launch::Stdio {
            stdin: null.as_raw_fd(),
            stdout: out_w.as_raw_fd(),
            stderr: err_w.as_raw_fd(),
        };
        let pid = reef_runtime::launch::spawn_exec(&plan, target, stdio)
            .map_err(|e| ReefError::Failed(crate::error::chain(&e)))?;
        drop((out_w, err_w, null));
        let deadline = timeout.map(|t| Instant::now() + t);
        let (stdout, stderr, timed_out) = collect_output(out_r, err_r, deadline, max_output);
        if timed_out {
            // The exec leads its own process group: this reaches everything it started.
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(-pid.as_raw()), nix::sys::signal::Signal::SIGKILL);
            let _ = reef_runtime::launch::wait(pid);
            return Err(ReefError::DeadlineExceeded(format!(
                "command {cmd:?} in container {} timed out after {:?}",
                c.id,
                timeout.unwrap_or_default()
            )));
        }
        let exit = reef_runtime::launch::wait(pid).map_err(|e| ReefError::Internal(format!("wait for exec: {e}")))?;
        Ok((stdout, stderr, exit.code()))
    }

    /// The PID namespace a container joins: the pod's shared one (mode POD), or a running container's of the
    /// same pod (mode TARGET, as ephemeral debug containers ask); `None` for a namespace of its own or the host's.
    fn pid_namespace_to_join(
        &self,
        pods: &Pods,
        pod: &crate::pods::PodRecord,
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

    /// The container's cgroup path, if it has one.
    pub fn cgroup_path(&self, c: &ContainerRecord) -> Option<String> {
        c.plan.as_ref().and_then(|p| p.cgroup.as_ref()).map(|g| g.path.clone())
    }

    /// New CPU and memory limits for a running container.
    pub fn update_resources(&self, id: &str, r: &cri::LinuxContainerResources) -> Result<(), ReefError> {
        let _changing = self.record_changes.lock().unwrap_or_else(|p| p.into_inner());
        let c = self.get(id).ok_or_else(|| ReefError::NotFound(format!("container {id:?} not found")))?;
        let path = self
            .cgroup_path(&c)
            .ok_or_else(|| ReefError::FailedPrecondition(format!("container {} has no cgroup", c.id)))?;
        crate::validate::update(r)?;
        let mut resources = spec::resources_for_update(r).map_err(|e| ReefError::InvalidArgument(e.to_string()))?;
        // Device rules are set once at creation; an update only changes limits.
        resources.set_devices(None);
        reef_runtime::cgroups::update(&path, &resources).map_err(ReefError::Failed)?;
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
        match monitor_call(pods, &c.pod_id, &Request::Forget { id: c.id.clone() }) {
            // A monitor already gone (pod removed, node rebooted) has nothing left to forget.
            Ok(_) | Err(ReefError::Failed(_)) => {}
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
            .remove_unless_used(store, name, in_use, || store.remove(name))
            .map_err(|user| {
                ReefError::FailedPrecondition(format!("image {name:?} is in use by {user}: remove the container first"))
            })?
            .map_err(|source| ReefError::Image { image: name.to_string(), source })
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

/// Reads both pipes until both end or the deadline passes; returns what was read and whether time ran out.
fn collect_output(
    out: std::os::fd::OwnedFd,
    err: std::os::fd::OwnedFd,
    deadline: Option<Instant>,
    max: usize,
) -> (Vec<u8>, Vec<u8>, bool) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::io::Read;
    use std::os::fd::AsFd;
    let mut files = [Some(std::fs::File::from(out)), Some(std::fs::File::from(err))];
    let mut bufs = [Vec::new(), Vec::new()];
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let open: Vec<usize> = (0..2).filter(|i| files[*i].is_some()).collect();
        if open.is_empty() {
            return (std::mem::take(&mut bufs[0]), std::mem::take(&mut bufs[1]), false);
        }
        let wait = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return (std::mem::take(&mut bufs[0]), std::mem::take(&mut bufs[1]), true);
                }
                PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = open
                .iter()
                .filter_map(|i| files[*i].as_ref())
                .map(|f| PollFd::new(f.as_fd(), PollFlags::POLLIN))
                .collect();
            if poll(&mut fds, wait).is_err() {
                continue;
            }
            fds.iter().map(|f| f.revents().is_some_and(|r| !r.is_empty())).collect()
        };
        for (slot, is_ready) in open.into_iter().zip(ready) {
            if !is_ready {
                continue;
            }
            let n = files[slot].as_mut().map(|f| f.read(&mut chunk).unwrap_or(0)).unwrap_or(0);
            if n == 0 {
                files[slot] = None;
            } else {
                let room = max.saturating_sub(bufs[slot].len());
                bufs[slot].extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

/// The container's cgroup under the pod's (cgroupfs layout: kubelet's parent is a path). Pods without a parent
/// share the configured one (`reef/`), as docker's containers share `docker/`.
fn cgroup_path(parent: &str, default: &str, id: &str) -> String {
    let parent = parent.trim_matches('/');
    let parent = if parent.is_empty() { default.trim_matches('/') } else { parent };
    format!("{parent}/reef-{id}")
}

impl Containers {
    /// A pod with its own user namespace has all its containers in it, with image layers idmapped to its root.
    /// A container that asks for the pod's user namespace in a pod without one is refused.
    fn rootfs_idmap(
        &self,
        pod: &crate::pods::PodRecord,
        config: &cri::ContainerConfig,
    ) -> Result<Option<rootfs::Idmap>, ReefError> {
        let asked = user_namespace(&security_context(config).namespace_options.clone().unwrap_or_default())?;
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
}

/// runc's systemd form, `<slice>:reef:<id>`: a scope of the container's own under the pod's slice. Pods without a
/// parent go under the configured one when it is a slice, else `system.slice`.
fn systemd_cgroup_path(parent: &str, default: &str, id: &str) -> String {
    let slice = [parent, default].into_iter().find(|p| p.ends_with(".slice")).unwrap_or("system.slice");
    format!("{slice}:reef:{id}")
}

/// A pod's own user namespace (hostUsers: false): mode POD with its uid and gid maps, checked here so a bad map
/// is an InvalidArgument before anything is made. NODE (or nothing) is the host's; CONTAINER and TARGET are not
/// something kubelet asks for, and are refused rather than run in the host's.
pub fn user_namespace(options: &cri::NamespaceOption) -> Result<Option<IdMappings>, ReefError> {
    let Some(u) = &options.userns_options else { return Ok(None) };
    if u.mode == cri::NamespaceMode::Node as i32 {
        return Ok(None);
    }
    if u.mode != cri::NamespaceMode::Pod as i32 {
        return Err(ReefError::InvalidArgument(format!(
            "user namespace mode {:?} is not supported; use POD (hostUsers: false) or NODE",
            cri::NamespaceMode::try_from(u.mode).map(|m| m.as_str_name()).unwrap_or("unknown")
        )));
    }
    let convert = |v: &[cri::IdMapping]| -> Vec<reef_runtime::userns::IdMapping> {
        v.iter()
            .map(|m| reef_runtime::userns::IdMapping {
                container_id: m.container_id,
                host_id: m.host_id,
                size: m.length,
            })
            .collect()
    };
    let maps = IdMappings { uids: convert(&u.uids), gids: convert(&u.gids) };
    maps.validate().map_err(ReefError::InvalidArgument)?;
    Ok(Some(maps))
}

/// AppArmor: Reef loads no profile, so a Localhost profile (a named profile the pod relies on) is refused, and
/// RuntimeDefault and Unconfined run without one (this node's kernel may not have AppArmor at all).
fn refuse_apparmor_profile(sc: &cri::LinuxContainerSecurityContext) -> Result<(), ReefError> {
    #[allow(deprecated)]
    let legacy = sc.apparmor_profile.starts_with("localhost/");
    let localhost =
        sc.apparmor.as_ref().is_some_and(|p| p.profile_type == cri::security_profile::ProfileType::Localhost as i32);
    if localhost || legacy {
        return Err(ReefError::FailedPrecondition(
            "AppArmor Localhost profiles are not supported by this runtime; use RuntimeDefault or Unconfined".into(),
        ));
    }
    Ok(())
}

fn security_context(config: &cri::ContainerConfig) -> cri::LinuxContainerSecurityContext {
    config.linux.as_ref().and_then(|l| l.security_context.clone()).unwrap_or_default()
}

/// The image's stop signal (SIGTERM when it names none or one this host lacks).
fn stop_signal(_config: &cri::ContainerConfig, image: &reef_images::manifest::ContainerConfig) -> i32 {
    image
        .stop_signal
        .as_deref()
        .and_then(|s| {
            let name = if s.starts_with("SIG") { s.to_string() } else { format!("SIG{s}") };
            name.parse::<nix::sys::signal::Signal>()
                .ok()
                .or_else(|| s.parse::<i32>().ok().and_then(|n| nix::sys::signal::Signal::try_from(n).ok()))
        })
        .unwrap_or(nix::sys::signal::Signal::SIGTERM) as i32
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_cgroups_go_under_the_pod_s_parent_in_either_driver_s_form() {
        assert_eq!(cgroup_path("/kubepods/besteffort/pod1/", "reef", "c1"), "kubepods/besteffort/pod1/reef-c1");
        assert_eq!(cgroup_path("", "reef", "c1"), "reef/reef-c1");
        assert_eq!(systemd_cgroup_path("kubepods-pod1.slice", "reef", "c1"), "kubepods-pod1.slice:reef:c1");
        assert_eq!(systemd_cgroup_path("", "reef.slice", "c1"), "reef.slice:reef:c1");
        assert_eq!(systemd_cgroup_path("", "reef", "c1"), "system.slice:reef:c1");
    }

    #[test]
    fn user_namespace_maps_are_checked_and_apparmor_localhost_profiles_refused() {
        let userns = |mode: cri::NamespaceMode| cri::NamespaceOption {
            userns_options: Some(cri::UserNamespace { mode: mode as i32, ..Default::default() }),
            ..Default::default()
        };
        assert!(user_namespace(&userns(cri::NamespaceMode::Pod)).is_err(), "a POD user namespace needs maps");
        assert!(user_namespace(&userns(cri::NamespaceMode::Container)).is_err());
        assert_eq!(user_namespace(&userns(cri::NamespaceMode::Node)).unwrap(), None);
        assert_eq!(user_namespace(&cri::NamespaceOption::default()).unwrap(), None);
        let map = vec![cri::IdMapping { host_id: 100000, container_id: 0, length: 65536 }];
        let good = cri::NamespaceOption {
            userns_options: Some(cri::UserNamespace {
                mode: cri::NamespaceMode::Pod as i32,
                uids: map.clone(),
                gids: map,
            }),
            ..Default::default()
        };
        assert_eq!(user_namespace(&good).unwrap().unwrap().host_uid(0), Some(100000));
        let profile = |t: cri::security_profile::ProfileType| cri::LinuxContainerSecurityContext {
            apparmor: Some(cri::SecurityProfile { profile_type: t as i32, localhost_ref: "p".into() }),
            ..Default::default()
        };
        assert!(refuse_apparmor_profile(&profile(cri::security_profile::ProfileType::Localhost)).is_err());
        assert!(refuse_apparmor_profile(&profile(cri::security_profile::ProfileType::RuntimeDefault)).is_ok());
    }
}
