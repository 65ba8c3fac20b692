//! One pod's lifecycle through the CRI, each RPC timed: RunPodSandbox, CreateContainer and StartContainer of a
//! busybox `sleep`, then StopContainer, RemoveContainer, StopPodSandbox and RemovePodSandbox.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

pub type Runtime = RuntimeServiceClient<Channel>;

pub const RUN_POD: &str = "RunPodSandbox";
pub const CREATE: &str = "CreateContainer";
pub const START: &str = "StartContainer";
pub const CREATE_START: &str = "Create+StartContainer";
pub const POD_UP: &str = "pod up (run+create+start)";
pub const STOP: &str = "StopContainer";
pub const REMOVE: &str = "RemoveContainer";
pub const STOP_POD: &str = "StopPodSandbox";
pub const REMOVE_POD: &str = "RemovePodSandbox";
pub const POD_DOWN: &str = "pod down (stop+remove all)";
pub const LIFECYCLE: &str = "pod lifecycle (up+down)";

/// Every timed step, in the order the tables show them.
pub const STEPS: &[&str] =
    &[RUN_POD, CREATE, START, CREATE_START, POD_UP, STOP, REMOVE, STOP_POD, REMOVE_POD, POD_DOWN, LIFECYCLE];

#[derive(Clone)]
pub struct Settings {
    pub image: String,
    pub command: Vec<String>,
    pub cgroup_parent: String,
    pub log_dir: String,
    pub host_network: bool,
    pub stop_timeout: i64,
    /// Unique per run, so names never collide with another run on the same runtime.
    pub prefix: String,
}

/// What one step took, by step name.
pub type Timings = Vec<(&'static str, Duration)>;

#[derive(Debug, Clone)]
pub struct RunningPod {
    pub pod: String,
    pub container: String,
}

fn pod_config(s: &Settings, n: usize) -> cri::PodSandboxConfig {
    let name = format!("{}-{n}", s.prefix);
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.clone(),
            uid: format!("uid-{name}"),
            namespace: "reef-bench".into(),
            attempt: 0,
        }),
        // kubelet sends no hostname for a host-network pod (it has the node's UTS namespace).
        hostname: if s.host_network { String::new() } else { format!("p{n}") },
        log_directory: Path::new(&s.log_dir).join(&name).display().to_string(),
        labels: [("reef-bench".to_string(), s.prefix.clone())].into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: s.cgroup_parent.clone(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: if s.host_network { cri::NamespaceMode::Node } else { cri::NamespaceMode::Pod } as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(s: &Settings) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: "sleep".into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: s.image.clone(), ..Default::default() }),
        command: s.command.clone(),
        log_path: "sleep.log".into(),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: if s.host_network { cri::NamespaceMode::Node } else { cri::NamespaceMode::Pod } as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn timed<T, F: Future<Output = Result<T, tonic::Status>>>(
    t: &mut Timings,
    step: &'static str,
    f: F,
) -> anyhow::Result<T> {
    let t0 = Instant::now();
    let r = f.await.with_context(|| step.to_string())?;
    t.push((step, t0.elapsed()));
    Ok(r)
}

/// RunPodSandbox + CreateContainer + StartContainer. On a failure after RunPodSandbox the pod is removed again
/// (untimed), so nothing is left behind.
pub async fn up(rt: &mut Runtime, s: &Settings, n: usize, t: &mut Timings) -> anyhow::Result<RunningPod> {
    let config = pod_config(s, n);
    // kubelet makes the pod's log directory before RunPodSandbox.
    std::fs::create_dir_all(&config.log_directory).with_context(|| format!("create {}", config.log_directory))?;
    let t0 = Instant::now();
    let pod = timed(
        t,
        RUN_POD,
        rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() }),
    )
    .await?
    .into_inner()
    .pod_sandbox_id;
    let rest = async {
        let t1 = Instant::now();
        let container = timed(
            t,
            CREATE,
            rt.create_container(cri::CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config(s)),
                sandbox_config: Some(config.clone()),
            }),
        )
        .await?
        .into_inner()
        .container_id;
        timed(t, START, rt.start_container(cri::StartContainerRequest { container_id: container.clone() })).await?;
        t.push((CREATE_START, t1.elapsed()));
        t.push((POD_UP, t0.elapsed()));
        anyhow::Ok(container)
    }
    .await;
    match rest {
        Ok(container) => Ok(RunningPod { pod, container }),
        Err(e) => {
            remove_pod(rt, &pod).await;
            Err(e)
        }
    }
}

/// StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox.
pub async fn down(rt: &mut Runtime, s: &Settings, p: &RunningPod, t: &mut Timings) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let id = p.container.clone();
    timed(t, STOP, rt.stop_container(cri::StopContainerRequest { container_id: id.clone(), timeout: s.stop_timeout }))
        .await?;
    timed(t, REMOVE, rt.remove_container(cri::RemoveContainerRequest { container_id: id })).await?;
    timed(t, STOP_POD, rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: p.pod.clone() })).await?;
    timed(t, REMOVE_POD, rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: p.pod.clone() })).await?;
    t.push((POD_DOWN, t0.elapsed()));
    Ok(())
}

/// Untimed cleanup: stop and remove a pod (its containers go with it), ignoring errors.
pub async fn remove_pod(rt: &mut Runtime, pod: &str) {
    let _ = rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.into() }).await;
    let _ = rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod.into() }).await;
}

/// Every pod this run made that the runtime still lists, by our label.
pub async fn leftover_pods(rt: &mut Runtime, prefix: &str) -> Vec<String> {
    let filter = cri::PodSandboxFilter {
        label_selector: [("reef-bench".to_string(), prefix.to_string())].into(),
        ..Default::default()
    };
    match rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: Some(filter) }).await {
        Ok(r) => r.into_inner().items.into_iter().map(|p| p.id).collect(),
        Err(_) => Vec::new(),
    }
}
