//! PID namespaces through the CRI: a pod sharing one among its containers (shareProcessNamespace), with a tiny init
//! as its PID 1 and no pause image; a container of its own; and an ephemeral-style container joining another's.

use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use reef_tests::pod::{Runtime, Setup, container_config, create, pod_config, run_pod, setup, sh, status, wait_exited};
use reef_tests::require_e2e;
use tonic::Code;

fn with_pid(mut c: cri::ContainerConfig, mode: cri::NamespaceMode, target: &str) -> cri::ContainerConfig {
    let ns = c.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options.as_mut().unwrap();
    ns.pid = mode as i32;
    ns.target_id = target.to_string();
    c
}

/// A pod whose pid mode is `mode` (CRI's default, 0, is POD: kubelet sends CONTAINER unless shareProcessNamespace).
fn pod_with_pid(s: &Setup, name: &str, mode: cri::NamespaceMode) -> cri::PodSandboxConfig {
    let mut sandbox = pod_config(s, name);
    sandbox.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption { pid: mode as i32, ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    });
    sandbox
}

async fn start(rt: &mut Runtime, id: &str) {
    rt.start_container(cri::StartContainerRequest { container_id: id.into() }).await.expect("StartContainer");
}

async fn exec(rt: &mut Runtime, id: &str, script: &str) -> String {
    String::from_utf8_lossy(&sh(rt, id, script).await.stdout).into_owned()
}

/// PID 1's name as `id` sees it, once it is `want` or two seconds have passed: a shell that `exec`s its command
/// is PID 1 under its own name for a moment after StartContainer returns.
async fn pid1_becomes(rt: &mut Runtime, id: &str, want: &str) -> String {
    let mut seen = String::new();
    for _ in 0..100 {
        seen = exec(rt, id, "cat /proc/1/comm").await.trim().to_string();
        if seen == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

/// Every process of the container's PID namespace, as `comm` names and command lines.
const LIST_PROCESSES: &str = "for p in /proc/[0-9]*; do echo \"$(cat $p/comm) $(tr '\\0' ' ' < $p/cmdline)\"; done";

/// Live processes (zombies aside: once their monitor is gone, the host's init reaps them when it will) in `ns`.
fn host_processes_in_pid_namespace(ns: &str) -> usize {
    let alive = |stat: String| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with(['Z', 'X']));
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter(|e| std::fs::read_link(e.path().join("ns/pid")).is_ok_and(|l| l.to_string_lossy() == ns))
        .filter(|e| std::fs::read_to_string(e.path().join("stat")).is_ok_and(alive))
        .count()
}

/// Waits up to two seconds for the namespace to empty: SIGKILL is delivered asynchronously.
async fn wait_pid_namespace_empty(ns: &str) -> usize {
    for _ in 0..100 {
        if host_processes_in_pid_namespace(ns) == 0 {
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    host_processes_in_pid_namespace(ns)
}

#[tokio::test]
async fn containers_of_a_pod_sharing_its_pid_namespace_see_each_other_under_a_confined_init() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_with_pid(&s, "shared", cri::NamespaceMode::Pod);
    let pod = run_pod(&mut rt, &sandbox).await;
    let server = create(
        &mut rt,
        &pod,
        &sandbox,
        with_pid(container_config(&s, "server", "exec sleep 300"), cri::NamespaceMode::Pod, ""),
    )
    .await
    .expect("create server");
    let sidecar = create(
        &mut rt,
        &pod,
        &sandbox,
        with_pid(container_config(&s, "sidecar", "exec sleep 301"), cri::NamespaceMode::Pod, ""),
    )
    .await
    .expect("create sidecar");
    start(&mut rt, &server).await;
    start(&mut rt, &sidecar).await;

    let seen = exec(&mut rt, &sidecar, LIST_PROCESSES).await;
    assert!(seen.lines().any(|l| l.contains("sleep 300")), "the sidecar sees the server: {seen}");
    assert!(seen.lines().any(|l| l.contains("sleep 301")), "and itself: {seen}");
    assert_eq!(exec(&mut rt, &sidecar, "cat /proc/1/comm").await.trim(), "reef-pod-init", "PID 1 is the pod's init");
    let init_view = exec(&mut rt, &sidecar, "ls /proc/1/root/ 2>&1; grep CapEff /proc/1/status").await;
    assert!(
        !init_view.contains("etc") && !init_view.contains("bin"),
        "nothing of the host behind the init: {init_view}"
    );
    assert!(init_view.contains("CapEff:\t0000000000000000"), "the init holds no capability: {init_view}");

    // A container of the shared namespace that exits leaves nothing behind: what it started goes with it.
    let leaver = create(
        &mut rt,
        &pod,
        &sandbox,
        with_pid(container_config(&s, "leaver", "sleep 302 & exit 3"), cri::NamespaceMode::Pod, ""),
    )
    .await
    .expect("create leaver");
    start(&mut rt, &leaver).await;
    assert_eq!(wait_exited(&mut rt, &leaver).await.exit_code, 3);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = exec(&mut rt, &server, LIST_PROCESSES).await;
    assert!(!after.contains("sleep 302"), "the leaver's background process was killed with it: {after}");

    // A container that asks for a namespace of its own is PID 1 there.
    let loner = create(
        &mut rt,
        &pod,
        &sandbox,
        with_pid(container_config(&s, "loner", "exec sleep 300"), cri::NamespaceMode::Container, ""),
    )
    .await
    .expect("create loner");
    start(&mut rt, &loner).await;
    assert_eq!(pid1_becomes(&mut rt, &loner, "sleep").await, "sleep");

    let ns = exec(&mut rt, &server, "readlink /proc/self/ns/pid").await.trim().to_string();
    assert!(ns.starts_with("pid:["), "{ns}");
    assert!(host_processes_in_pid_namespace(&ns) >= 3, "init, server and sidecar share it");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
    assert_eq!(wait_pid_namespace_empty(&ns).await, 0, "the pod's init and containers are gone with the pod");
}

#[tokio::test]
async fn a_container_can_join_another_containers_pid_namespace_as_a_debug_container_does() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_with_pid(&s, "debugged", cri::NamespaceMode::Container);
    let pod = run_pod(&mut rt, &sandbox).await;
    let app = create(&mut rt, &pod, &sandbox, container_config(&s, "app", "exec sleep 300")).await.expect("create");
    let early = with_pid(container_config(&s, "early", "true"), cri::NamespaceMode::Target, &app);
    let err = create(&mut rt, &pod, &sandbox, early).await.expect_err("the target is not running yet");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    start(&mut rt, &app).await;

    let debug = with_pid(container_config(&s, "debug", "exec sleep 303"), cri::NamespaceMode::Target, &app);
    let debug = create(&mut rt, &pod, &sandbox, debug).await.expect("create debug");
    start(&mut rt, &debug).await;
    assert_eq!(pid1_becomes(&mut rt, &debug, "sleep").await, "sleep", "the app is PID 1 for the debugger");
    assert!(exec(&mut rt, &debug, LIST_PROCESSES).await.contains("sleep 300"));

    let missing = with_pid(container_config(&s, "lost", "true"), cri::NamespaceMode::Target, "no-such-container");
    assert_eq!(create(&mut rt, &pod, &sandbox, missing).await.unwrap_err().code(), Code::NotFound);
    let unshared = with_pid(container_config(&s, "pod-mode", "true"), cri::NamespaceMode::Pod, "");
    let err = create(&mut rt, &pod, &sandbox, unshared).await.expect_err("the pod has no shared PID namespace");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

/// The pid of the process whose command line names `needle` (the test's own monitor, found by its pod dir).
fn pid_with_cmdline(needle: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline).contains(needle).then_some(pid)
    })
}

#[tokio::test]
async fn a_shared_pid_namespace_goes_with_its_pod_even_when_the_monitor_was_killed() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_with_pid(&s, "orphaned", cri::NamespaceMode::Pod);
    let pod = run_pod(&mut rt, &sandbox).await;
    let c = create(
        &mut rt,
        &pod,
        &sandbox,
        with_pid(container_config(&s, "c", "exec sleep 300"), cri::NamespaceMode::Pod, ""),
    )
    .await
    .expect("create");
    start(&mut rt, &c).await;
    let ns = exec(&mut rt, &c, "readlink /proc/self/ns/pid").await.trim().to_string();
    let pod_dir = s.reefd.socket().parent().unwrap().join("pods").join(&pod[..16]);
    // The monitor is this test's (its reefd started it): found by its own pod dir, killed by pid.
    let monitor = pid_with_cmdline(&format!("{}\0", pod_dir.display())).expect("the pod's monitor");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(monitor), nix::sys::signal::Signal::SIGKILL).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(host_processes_in_pid_namespace(&ns) >= 2, "the init and the container outlive their monitor");
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.expect("StopPodSandbox");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
    assert_eq!(wait_pid_namespace_empty(&ns).await, 0, "nothing of the pod survives its removal");
}

#[tokio::test]
async fn a_container_whose_orphan_floods_its_output_exits_and_the_pod_keeps_answering() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_with_pid(&s, "flooded", cri::NamespaceMode::Pod);
    let pod = run_pod(&mut rt, &sandbox).await;
    let shared = |name: &str, script: &str| with_pid(container_config(&s, name, script), cri::NamespaceMode::Pod, "");
    let quiet = create(&mut rt, &pod, &sandbox, shared("quiet", "exec sleep 300")).await.expect("create quiet");
    // `yes` writes faster than the monitor can log, and outlives the container's main process in the pod's
    // namespace, holding its stdout open.
    let chatty = create(&mut rt, &pod, &sandbox, shared("chatty", "yes spam & sleep 0.3; exit 5")).await;
    let chatty = chatty.expect("create chatty");
    start(&mut rt, &quiet).await;
    start(&mut rt, &chatty).await;

    let exited = wait_exited(&mut rt, &chatty).await;
    assert_eq!(exited.exit_code, 5, "the exit is recorded though an orphan still writes: {exited:?}");
    let asked = Instant::now();
    let other = status(&mut rt, &quiet).await.expect("status of the pod's other container");
    assert!(asked.elapsed() < Duration::from_secs(2), "answered in {:?}", asked.elapsed());
    assert_eq!(other.state, cri::ContainerState::ContainerRunning as i32);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = exec(&mut rt, &quiet, LIST_PROCESSES).await;
    assert!(!after.contains("yes spam"), "the orphan went with its container: {after}");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}
