//! User namespaces (hostUsers: false): a pod's containers run as root inside a namespace whose ids map to an
//! unprivileged range of the host, with the image's files idmapped to that root.

use k8s_cri::v1 as cri;
use reef_tests::pod::{
    Runtime, Setup, container_config, create, mounts_under, pod_config, run_pod, setup, sh, wait_exited,
};
use reef_tests::require_e2e;
use tonic::Code;

/// A host range of this test process's own, so parallel runs never share one.
fn host_base() -> u32 {
    1_000_000 + (std::process::id() % 1000) * 65536
}

fn userns(uids: Vec<cri::IdMapping>, gids: Vec<cri::IdMapping>) -> cri::NamespaceOption {
    cri::NamespaceOption {
        pid: cri::NamespaceMode::Container as i32,
        userns_options: Some(cri::UserNamespace { mode: cri::NamespaceMode::Pod as i32, uids, gids }),
        ..Default::default()
    }
}

fn range(container_id: u32, host_id: u32, length: u32) -> cri::IdMapping {
    cri::IdMapping { container_id, host_id, length }
}

fn pod_with_userns(s: &Setup, name: &str, options: cri::NamespaceOption) -> cri::PodSandboxConfig {
    let mut sandbox = pod_config(s, name);
    sandbox.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(options),
            ..Default::default()
        }),
        ..Default::default()
    });
    sandbox
}

fn in_userns(mut c: cri::ContainerConfig, options: &cri::NamespaceOption) -> cri::ContainerConfig {
    c.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options = Some(options.clone());
    c
}

/// Whether reefd says it runs pods in user namespaces: it does not on kernels older than 6.13 (overlay lower
/// layers given as idmapped mount fds), where these tests skip and the refusal of bad maps is still checked.
async fn reefd_offers_user_namespaces(rt: &mut Runtime) -> bool {
    let status = rt.status(cri::StatusRequest { verbose: false }).await.expect("Status").into_inner();
    let offered = status.runtime_handlers.iter().all(|h| h.features.as_ref().is_some_and(|f| f.user_namespaces));
    if !offered {
        eprintln!("skipped: reefd offers no user namespaces on this kernel");
    }
    offered
}

async fn exec(rt: &mut Runtime, id: &str, script: &str) -> String {
    let r = sh(rt, id, script).await;
    format!("{}{}", String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&r.stderr))
}

/// The host pid of the process whose command line is exactly `cmdline` (NULs as spaces).
fn host_pid_of(cmdline: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
        let c = std::fs::read(e.path().join("cmdline")).ok()?;
        (String::from_utf8_lossy(&c).replace('\0', " ").trim() == cmdline).then_some(pid)
    })
}

fn host_uid_of(pid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find(|l| l.starts_with("Uid:")).unwrap_or_default().split_whitespace().nth(1).unwrap_or("").into()
}

#[tokio::test]
async fn a_pod_without_host_users_runs_as_mapped_root_with_its_image_owned_by_that_root() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    if !reefd_offers_user_namespaces(&mut rt).await {
        return;
    }
    let base = host_base();
    let options = userns(vec![range(0, base, 65536)], vec![range(0, base, 65536)]);
    let sandbox = pod_with_userns(&s, "mapped", options.clone());
    let pod = run_pod(&mut rt, &sandbox).await;
    let tag = std::process::id() % 100000 + 1000;
    let app = in_userns(container_config(&s, "app", &format!("exec sleep {tag}")), &options);
    let app = create(&mut rt, &pod, &sandbox, app).await.expect("create app");
    rt.start_container(cri::StartContainerRequest { container_id: app.clone() }).await.expect("start app");

    let maps = exec(&mut rt, &app, "cat /proc/self/uid_map /proc/self/gid_map").await;
    let want = format!("0 {base} 65536");
    let lines: Vec<String> = maps.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(lines, vec![want.clone(), want], "{maps}");
    assert_eq!(exec(&mut rt, &app, "id -u; id -g").await, "0\n0\n");
    let pid = host_pid_of(&format!("sleep {tag}")).expect("the container's process on the host");
    assert_eq!(host_uid_of(pid), base.to_string(), "root inside is the mapped uid on the host");
    let owners = exec(&mut rt, &app, "stat -c '%u:%g %n' /bin/busybox /etc /").await;
    assert!(owners.lines().all(|l| l.starts_with("0:0 ")), "the image's files belong to root inside: {owners}");
    assert_eq!(
        exec(&mut rt, &app, "echo hi > /new && cat /new && stat -c %u /new").await,
        "hi\n0\n",
        "rootfs writable"
    );
    assert_eq!(exec(&mut rt, &app, "echo x >> /bin/busybox-copy && stat -c %u /bin/busybox-copy").await, "0\n");
    let dev = exec(&mut rt, &app, "echo z > /dev/null && head -c 4 /dev/zero | wc -c && ls /sys/class/net").await;
    assert!(dev.starts_with("4\n"), "/dev nodes usable: {dev}");
    assert!(dev.contains("lo"), "/sys shows the pod's network: {dev}");

    // A second container is in the same user namespace (and the pod's network namespace is owned by it).
    let sidecar = in_userns(container_config(&s, "sidecar", "readlink /proc/self/ns/user; id -u"), &options);
    let sidecar = create(&mut rt, &pod, &sandbox, sidecar).await.expect("create sidecar");
    rt.start_container(cri::StartContainerRequest { container_id: sidecar.clone() }).await.expect("start sidecar");
    assert_eq!(wait_exited(&mut rt, &sidecar).await.exit_code, 0);
    let app_ns = exec(&mut rt, &app, "readlink /proc/self/ns/user").await;
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap().to_string_lossy() + "\n", app_ns);
    assert_ne!(std::fs::read_link("/proc/self/ns/user").unwrap().to_string_lossy() + "\n", app_ns, "not the host's");
    let log = std::fs::read_to_string(s.logs.path().join("sidecar.log")).unwrap_or_default();
    assert!(log.contains(app_ns.trim()) && log.contains(" 0\n"), "same user namespace, root there: {log}");

    let verbose = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: true })
        .await
        .expect("status")
        .into_inner();
    assert!(verbose.info.get("info").is_some_and(|i| i.contains(&format!("\"host_id\":{base}"))), "{:?}", verbose.info);
    let features = rt.status(cri::StatusRequest { verbose: false }).await.expect("Status").into_inner();
    assert!(features.runtime_handlers.iter().all(|h| h.features.as_ref().is_some_and(|f| f.user_namespaces)));

    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
    assert_eq!(mounts_under(&s.reefd.root()), 0, "no rootfs left mounted");
    assert_eq!(mounts_under(&s.reefd.socket().parent().unwrap().join("pods")), 0, "no pins left");
}

#[tokio::test]
async fn bad_mappings_are_invalid_arguments_and_leave_nothing() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let base = host_base();
    let bad = [
        ("empty", userns(vec![], vec![range(0, base, 10)])),
        ("zero", userns(vec![range(0, base, 0)], vec![range(0, base, 10)])),
        ("overlap", userns(vec![range(0, base, 10), range(5, base + 100, 10)], vec![range(0, base, 10)])),
        ("too-far", userns(vec![range(0, u32::MAX - 5, 10)], vec![range(0, base, 10)])),
        // critest's "runtime should fail if container ID 0 is not mapped": the pod's root must have a host id.
        ("root-unmapped", userns(vec![range(1, base, 100000)], vec![range(1, base, 100000)])),
        ("root-gid-unmapped", userns(vec![range(0, base, 10)], vec![range(1, base, 10)])),
        // And "if more than one mapping provided": two ranges for container id 0.
        ("two-roots", userns(vec![range(0, base, 100000), range(0, base + 200000, 100000)], vec![range(0, base, 10)])),
    ];
    for (name, options) in bad {
        let err = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(pod_with_userns(&s, name, options)),
                runtime_handler: String::new(),
            })
            .await
            .expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(err.message().contains("mapping"), "{name}: the message says what is wrong: {}", err.message());
        if name.starts_with("root") {
            assert!(err.message().contains("container id 0"), "{name}: names the unmapped root: {}", err.message());
        }
    }
    let pods = rt.list_pod_sandbox(cri::ListPodSandboxRequest::default()).await.expect("list").into_inner().items;
    assert!(pods.is_empty(), "no half-made pod: {pods:?}");
    let dir = s.reefd.socket().parent().unwrap().join("pods");
    assert_eq!(mounts_under(&dir), 0);
    assert_eq!(std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0), 0, "no pod dir left");

    // A container asking for the pod's user namespace in a pod that has none is refused, not run as host root.
    let sandbox = pod_config(&s, "host-users");
    let pod = run_pod(&mut rt, &sandbox).await;
    let options = userns(vec![range(0, base, 65536)], vec![range(0, base, 65536)]);
    let c = in_userns(container_config(&s, "wants-userns", "true"), &options);
    assert_eq!(create(&mut rt, &pod, &sandbox, c).await.unwrap_err().code(), Code::InvalidArgument);
    // And one without any runs in the host's user namespace, as before.
    let plain = create(&mut rt, &pod, &sandbox, container_config(&s, "plain", "readlink /proc/self/ns/user"))
        .await
        .expect("create plain");
    rt.start_container(cri::StartContainerRequest { container_id: plain.clone() }).await.expect("start");
    assert_eq!(wait_exited(&mut rt, &plain).await.exit_code, 0);
    let log = std::fs::read_to_string(s.logs.path().join("plain.log")).unwrap_or_default();
    let host = std::fs::read_link("/proc/self/ns/user").unwrap().to_string_lossy().into_owned();
    assert!(log.contains(&host), "{log} vs {host}");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

#[tokio::test]
async fn a_user_namespace_pod_outlives_a_reefd_kill_and_one_half_made_is_cleaned_at_the_next_start() {
    require_e2e!();
    let mut s = setup().await;
    if !reefd_offers_user_namespaces(&mut s.reefd.runtime().await).await {
        return;
    }
    let base = host_base();
    let options = userns(vec![range(0, base, 65536)], vec![range(0, base, 65536)]);
    let kept = pod_with_userns(&s, "kept", options.clone());
    let half = pod_with_userns(&s, "half", options.clone());
    let (kept_pod, app, half_pod, half_container) = {
        let mut rt = s.reefd.runtime().await;
        let kept_pod = run_pod(&mut rt, &kept).await;
        let app = create(&mut rt, &kept_pod, &kept, in_userns(container_config(&s, "app", "exec sleep 300"), &options))
            .await
            .expect("create app");
        rt.start_container(cri::StartContainerRequest { container_id: app.clone() }).await.expect("start");
        let half_pod = run_pod(&mut rt, &half).await;
        let c = create(&mut rt, &half_pod, &half, in_userns(container_config(&s, "c", "true"), &options))
            .await
            .expect("create half");
        (kept_pod, app, half_pod, c)
    };
    // A crash just before the records were saved: the pins, the idmapped rootfs and the monitor exist, no record.
    std::fs::remove_file(s.reefd.root().join(format!("pods/{half_pod}.json"))).unwrap();
    std::fs::remove_file(s.reefd.root().join(format!("containers/records/{half_container}.json"))).unwrap();
    s.reefd.kill9();
    s.reefd.spawn();
    let state = s.reefd.socket().parent().unwrap().to_path_buf();
    assert!(!state.join("pods").join(&half_pod[..16]).exists(), "the half-made pod's pins and dir are gone");
    assert!(!state.join("containers").join(&half_container[..16]).exists(), "and its container's rootfs");
    assert_eq!(mounts_under(&state.join("pods").join(&half_pod[..16])), 0);
    assert_eq!(mounts_under(&state.join("containers").join(&half_container[..16])), 0);

    let mut rt = s.reefd.runtime().await;
    assert_eq!(
        exec(&mut rt, &app, "id -u; cat /proc/self/uid_map").await.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", &base.to_string(), "65536"]
    );
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: kept_pod }).await.expect("remove");
    assert_eq!(mounts_under(&state), 0, "nothing of either pod stays mounted");
}

/// critest's "runtime should support NamespaceMode_POD": the pod and its container ask only for the user
/// namespace, so they also share the pod's PID namespace (mode POD is the default), whose init the monitor
/// starts. That namespace must be owned by the pod's user namespace, or the container's /proc mount is refused.
#[tokio::test]
async fn a_pod_sharing_its_pid_namespace_runs_its_containers_in_its_user_namespace() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    if !reefd_offers_user_namespaces(&mut rt).await {
        return;
    }
    let base = host_base();
    let options = cri::NamespaceOption {
        userns_options: Some(cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: vec![range(0, base, 100000)],
            gids: vec![range(0, base, 100000)],
        }),
        ..Default::default()
    };
    assert_eq!(options.pid, cri::NamespaceMode::Pod as i32, "the default, as critest sends it");
    let sandbox = pod_with_userns(&s, "shared-pid", options.clone());
    let pod = run_pod(&mut rt, &sandbox).await;
    let script = "cat /proc/self/uid_map; cat /proc/1/comm; id -u";
    let first = in_userns(container_config(&s, "uid-map", script), &options);
    let first = create(&mut rt, &pod, &sandbox, first).await.expect("CreateContainer");
    rt.start_container(cri::StartContainerRequest { container_id: first.clone() }).await.expect("start");
    assert_eq!(wait_exited(&mut rt, &first).await.exit_code, 0);
    let log = std::fs::read_to_string(s.logs.path().join("uid-map.log")).unwrap_or_default();
    let messages: Vec<String> = log
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(messages, [format!("0 {base} 100000"), "reef-pod-init".into(), "0".into()], "{log}");

    // A second container and an exec join the same PID namespace, inside the same user namespace.
    let app = in_userns(container_config(&s, "app", "exec sleep 300"), &options);
    let app = create(&mut rt, &pod, &sandbox, app).await.expect("create app");
    rt.start_container(cri::StartContainerRequest { container_id: app.clone() }).await.expect("start app");
    assert_eq!(
        exec(&mut rt, &app, "cat /proc/1/comm; id -u; mount | grep -c ' on /proc type proc'").await,
        "reef-pod-init\n0\n1\n"
    );
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
    assert_eq!(mounts_under(&s.reefd.socket().parent().unwrap().join("pods")), 0, "no pins left");
}
