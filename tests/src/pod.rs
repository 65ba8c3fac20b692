//! A test's pods and containers: a registry with busybox pulled into the test's own reefd, and short CRI calls
//! for the pod and container lifecycle, so each test reads as the behaviour it checks.

use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::cri::pull;
use crate::image::{Compression, ImageBuilder, busybox_layer};
use crate::push::push_image;
use crate::reefd::Reefd;
use crate::registry::Registry;

pub type Runtime = RuntimeServiceClient<Channel>;

/// A reefd with busybox pulled from the test's registry, and a directory for the pods' logs.
pub struct Setup {
    pub reefd: Reefd,
    pub registry: Registry,
    pub image: String,
    pub logs: tempfile::TempDir,
}

pub async fn setup() -> Setup {
    let registry = Registry::start();
    let image = ImageBuilder::new().layer(busybox_layer(), Compression::Gzip).build();
    push_image(&registry.addr(), "busybox", "1", &image, None);
    let reefd = Reefd::start(&format!("[registry]\ninsecure = [\"{}\"]\n", registry.addr()));
    let name = format!("{}/busybox:1", registry.addr());
    pull(&mut reefd.images().await, &name).await.expect("pull busybox");
    Setup { reefd, registry, image: name, logs: tempfile::tempdir().expect("log dir") }
}

pub fn pod_config(s: &Setup, name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: s.logs.path().display().to_string(),
        ..Default::default()
    }
}

pub fn container_config(s: &Setup, name: &str, script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: s.image.clone(), ..Default::default() }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}.log"),
        labels: [("c".to_string(), name.to_string())].into(),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    pid: cri::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container that eats memory past a 16 MiB limit: tail keeps a line-less stream whole in memory.
pub fn memory_eater(s: &Setup, name: &str) -> cri::ContainerConfig {
    let mut config = container_config(s, name, "head -c 200000000 /dev/zero | tail");
    config.linux.as_mut().expect("linux config").resources =
        Some(cri::LinuxContainerResources { memory_limit_in_bytes: 16 << 20, ..Default::default() });
    config
}

/// Nothing of a refused or failed CreateContainer exists: no record, upper dir, rootfs mount, listed container,
/// or log file `log` in the test's log directory.
pub async fn assert_no_container_left(s: &Setup, rt: &mut Runtime, log: &str) {
    let containers = s.reefd.root().join("containers");
    let upper: Vec<_> = std::fs::read_dir(&containers)
        .map(|d| d.flatten().map(|e| e.file_name()).filter(|n| n != "records").collect())
        .unwrap_or_default();
    assert!(upper.is_empty(), "no upper dir left: {upper:?}");
    let records = std::fs::read_dir(containers.join("records")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(records, 0, "no container record left");
    assert_eq!(mounts_under(&s.reefd.root()), 0, "no rootfs left mounted");
    assert!(!s.logs.path().join(log).exists(), "no log file {log} left");
    let listed = rt.list_containers(cri::ListContainersRequest { filter: None }).await.expect("list").into_inner();
    assert!(listed.containers.is_empty(), "{:?}", listed.containers);
}

pub async fn run_pod(rt: &mut Runtime, config: &cri::PodSandboxConfig) -> String {
    rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id
}

pub async fn create(
    rt: &mut Runtime,
    pod: &str,
    sandbox: &cri::PodSandboxConfig,
    c: cri::ContainerConfig,
) -> Result<String, tonic::Status> {
    rt.create_container(cri::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(c),
        sandbox_config: Some(sandbox.clone()),
    })
    .await
    .map(|r| r.into_inner().container_id)
}

pub async fn status(rt: &mut Runtime, id: &str) -> Result<cri::ContainerStatus, tonic::Status> {
    rt.container_status(cri::ContainerStatusRequest { container_id: id.into(), verbose: false })
        .await
        .map(|r| r.into_inner().status.expect("status"))
}

pub async fn wait_exited(rt: &mut Runtime, id: &str) -> cri::ContainerStatus {
    // Generous: in the emulated guest of the node lane, with the other tests running beside it, a container that
    // takes 2 s here may take 15.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let s = status(rt, id).await.expect("status");
        if s.state == cri::ContainerState::ContainerExited as i32 || Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `sh -c script` in the container through ExecSync (10 s timeout).
pub async fn sh(rt: &mut Runtime, id: &str, script: &str) -> cri::ExecSyncResponse {
    rt.exec_sync(cri::ExecSyncRequest {
        container_id: id.into(),
        cmd: vec!["sh".into(), "-c".into(), script.into()],
        timeout: 10,
    })
    .await
    .expect("ExecSync")
    .into_inner()
}

/// Every mount table a test's reefd may have left something in: the node's, then that of each reefd mount
/// namespace pinned on this machine (`<state>/ns/mnt`), where reefd keeps pod pins and container rootfs mounts.
pub fn mountinfo() -> String {
    let node = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut all = node.clone();
    for pin in node.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| is_reefd_mount_namespace(m)) {
        let inside = std::process::Command::new("nsenter")
            .arg(format!("--mount={pin}"))
            .args(["cat", "/proc/self/mountinfo"])
            .output();
        if let Ok(out) = inside {
            all.push_str(&String::from_utf8_lossy(&out.stdout));
        }
    }
    all
}

fn is_reefd_mount_namespace(mount_point: &str) -> bool {
    mount_point.ends_with("/ns/mnt")
}

/// reefd's namespace pin, or the private mount of its directory (`<state>/ns`; pods' `ns` dirs are not mounts).
fn is_reefds_own(mount_point: &str) -> bool {
    is_reefd_mount_namespace(mount_point) || (mount_point.ends_with("/ns") && !mount_point.contains("/pods/"))
}

/// Mounts under `dir`, in the node's table or a reefd's: what a pod or container may have left behind. reefd's
/// own namespace pin is not: it lives as long as the state dir.
pub fn mounts_under(dir: &std::path::Path) -> usize {
    let dir = dir.to_str().unwrap_or("?");
    mountinfo().lines().filter(|l| l.contains(dir) && !l.split(' ').nth(4).is_some_and(is_reefds_own)).count()
}
