//! The pod lifecycle: pinned namespaces, a monitor per pod, idempotent stop and remove, names, restarts.

use k8s_cri::v1 as cri;
use reef_tests::pod::mounts_under;
use reef_tests::reefd::Reefd;
use reef_tests::require_e2e;
use tonic::Code;

fn config(name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: "/tmp".into(),
        labels: [("app".to_string(), name.to_string())].into(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["svc.cluster.local".into()],
            options: vec![],
        }),
        ..Default::default()
    }
}

async fn run(reefd: &Reefd, name: &str) -> Result<String, tonic::Status> {
    reefd
        .runtime()
        .await
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config(name)), runtime_handler: String::new() })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

async fn status(reefd: &Reefd, id: &str) -> Result<cri::PodSandboxStatus, tonic::Status> {
    reefd
        .runtime()
        .await
        .pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false })
        .await
        .map(|r| r.into_inner().status.expect("status"))
}

fn pod_dir(reefd: &Reefd, id: &str) -> std::path::PathBuf {
    reefd.socket().parent().expect("state dir").join("pods").join(&id[..16])
}

#[tokio::test]
async fn a_pod_runs_with_pinned_namespaces_and_is_stopped_and_removed_idempotently() {
    require_e2e!();
    let reefd = Reefd::start("");
    let id = run(&reefd, "web").await.expect("RunPodSandbox");
    let s = status(&reefd, &id).await.expect("status");
    assert_eq!(s.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(s.metadata.as_ref().map(|m| m.name.as_str()), Some("web"));
    assert!(s.created_at > 1_700_000_000_000_000_000, "nanoseconds");
    let dir = pod_dir(&reefd, &id);
    for ns in ["net", "ipc", "uts"] {
        assert!(dir.join("ns").join(ns).exists(), "{ns} is pinned");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("resolv.conf")).unwrap(),
        "search svc.cluster.local\nnameserver 10.96.0.10\n"
    );
    // The UTS pin is in reefd's own mount namespace; only the network pin is in the node's.
    let reefds_mounts = reefd.socket().parent().unwrap().join("ns/mnt");
    let uts = std::process::Command::new("nsenter")
        .arg(format!("--mount={}", reefds_mounts.display()))
        .arg("nsenter")
        .arg(format!("--uts={}", dir.join("ns/uts").display()))
        .arg("hostname")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&uts.stdout).trim(), "web-host");
    assert!(dir.join("monitor.sock").exists(), "the pod has its monitor");

    let mut rt = reefd.runtime().await;
    let by_label = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(by_label.len(), 1);
    let other_label = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                label_selector: [("app".to_string(), "db".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(other_label.is_empty());

    for _ in 0..2 {
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await.expect("StopPodSandbox");
    }
    assert_eq!(status(&reefd, &id).await.unwrap().state, cri::PodSandboxState::SandboxNotready as i32);
    let ready_only = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                state: Some(cri::PodSandboxStateValue { state: cri::PodSandboxState::SandboxReady as i32 }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(ready_only.is_empty());

    for _ in 0..2 {
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id.clone() })
            .await
            .expect("RemovePodSandbox");
    }
    assert_eq!(status(&reefd, &id).await.unwrap_err().code(), Code::NotFound);
    assert!(!dir.exists(), "the pod's state dir is gone");
    assert_eq!(mounts_under(reefd.root().parent().unwrap()), 0, "no pins left");
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: "never-existed".into() })
        .await
        .expect("stop of a missing pod");
}

#[tokio::test]
async fn a_second_pod_with_the_same_metadata_is_refused_naming_the_holder() {
    require_e2e!();
    let reefd = Reefd::start("");
    let id = run(&reefd, "dup").await.expect("first");
    let err = run(&reefd, "dup").await.expect_err("second");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(err.message().contains(&id), "{}", err.message());
    reefd.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id }).await.unwrap();
    let again = run(&reefd, "dup").await.expect("the name is free again");
    reefd.runtime().await.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: again }).await.unwrap();
}

#[tokio::test]
async fn pods_survive_a_sigkill_of_reefd() {
    require_e2e!();
    let mut reefd = Reefd::start("");
    let id = run(&reefd, "survivor").await.expect("run");
    reefd.restart();
    assert_eq!(
        status(&reefd, &id).await.expect("status after restart").state,
        cri::PodSandboxState::SandboxReady as i32
    );
    assert_eq!(run(&reefd, "survivor").await.expect_err("the name is still held").code(), Code::AlreadyExists);
    reefd
        .runtime()
        .await
        .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id.clone() })
        .await
        .unwrap();
    assert!(!pod_dir(&reefd, &id).exists());
}

#[tokio::test]
async fn bad_pod_configs_are_invalid_arguments() {
    require_e2e!();
    let reefd = Reefd::start("");
    let mut rt = reefd.runtime().await;
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: None, runtime_handler: String::new() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut no_uid = config("x");
    no_uid.metadata.as_mut().unwrap().uid.clear();
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(no_uid), runtime_handler: String::new() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config("y")), runtime_handler: "kata".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await.unwrap().into_inner().items.is_empty(),
        "nothing half-made"
    );
}

#[tokio::test]
async fn many_pods_started_at_once_all_come_up() {
    require_e2e!();
    let reefd = Reefd::start("");
    // Rounds of pods started at the same time, so that namespace pinning runs on several threads at once.
    for round in 0..3 {
        let names: Vec<String> = (0..12).map(|i| format!("crowd-{round}-{i}")).collect();
        let runs: Vec<_> = names.iter().map(|n| run(&reefd, n)).collect();
        let all = tokio::time::timeout(std::time::Duration::from_secs(60), futures::future::join_all(runs))
            .await
            .expect("every RunPodSandbox returns");
        let mut rt = reefd.runtime().await;
        for id in all {
            let id = id.expect("RunPodSandbox");
            assert_eq!(status(&reefd, &id).await.unwrap().state, cri::PodSandboxState::SandboxReady as i32);
            rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id }).await.unwrap();
        }
    }
}

/// Every mount point below `dir` in the node's table, reefd's own namespace pin included.
fn all_mounts_under(dir: &std::path::Path) -> Vec<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dir = dir.to_string_lossy().into_owned();
    mountinfo.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(&dir)).map(String::from).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reefd_stopped_with_no_pod_left_takes_back_its_mount_namespace_pin_and_one_with_pods_keeps_it() {
    require_e2e!();
    let mut reefd = Reefd::start("");
    let state = reefd.socket().parent().unwrap().to_path_buf();
    let id = run(&reefd, "kept").await.expect("RunPodSandbox");
    let stopped = tokio::task::block_in_place(|| reefd.stop()).expect("reefd exit status");
    assert!(stopped.success(), "{stopped:?}");
    let pinned = all_mounts_under(&state);
    assert!(
        pinned.iter().any(|m| m.ends_with("/ns/mnt")),
        "a pod is left: the pin stays for the next start: {pinned:?}"
    );

    reefd.spawn();
    assert_eq!(
        status(&reefd, &id).await.expect("the pod, found again").state,
        cri::PodSandboxState::SandboxReady as i32
    );
    let mut rt = reefd.runtime().await;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id }).await.expect("RemovePodSandbox");
    let stopped = tokio::task::block_in_place(|| reefd.stop()).expect("reefd exit status");
    assert!(stopped.success(), "{stopped:?}");
    assert_eq!(all_mounts_under(&state), Vec::<String>::new(), "no pod left: nothing of reefd stays mounted");

    // The next start makes a namespace again, and serves.
    reefd.spawn();
    run(&reefd, "again").await.expect("RunPodSandbox after the pin was released");
}
