//! Hostile and malformed CRI requests: each is refused with a precise code and a message that names what was
//! wrong, and leaves nothing behind (no record, rootfs, upper dir, cgroup, log file, pod directory or veth).

use k8s_cri::v1 as cri;
use reef_tests::image::{Compression, ImageBuilder, busybox_layer};
use reef_tests::pod::{
    Runtime, Setup, assert_no_container_left, container_config, create, pod_config, run_pod, setup, wait_exited,
};
use reef_tests::push::push_image;
use reef_tests::require_e2e;
use serde_json::json;
use tonic::Code;

/// Nothing of a refused RunPodSandbox exists: no listed pod, no pod directory, no pin.
async fn assert_no_pod_left(s: &Setup, rt: &mut Runtime, before: usize) {
    let listed = rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await.unwrap().into_inner();
    assert_eq!(listed.items.len(), before, "{:?}", listed.items);
    let state = s.reefd.socket().parent().map(|p| p.join("pods")).unwrap();
    let dirs = std::fs::read_dir(&state).map(|d| d.count()).unwrap_or(0);
    assert_eq!(dirs, before, "pod directories under {}", state.display());
}

fn refused(err: &tonic::Status, code: Code, names: &[&str]) {
    assert_eq!(err.code(), code, "{err:?}");
    for n in names {
        assert!(err.message().contains(n), "the message names {n:?}: {}", err.message());
    }
}

fn sc(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerSecurityContext {
    c.linux.as_mut().unwrap().security_context.get_or_insert_with(Default::default)
}

#[tokio::test]
async fn a_container_asked_to_run_as_the_unchanged_id_or_a_group_alone_is_refused() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "ids");
    let pod = run_pod(&mut rt, &sandbox).await;

    let mut c = container_config(&s, "max-uid", "id");
    sc(&mut c).run_as_user = Some(cri::Int64Value { value: 4294967295 });
    refused(
        &create(&mut rt, &pod, &sandbox, c).await.unwrap_err(),
        Code::InvalidArgument,
        &["run_as_user", "4294967295"],
    );

    let mut c = container_config(&s, "max-group", "id");
    sc(&mut c).run_as_user = Some(cri::Int64Value { value: 1000 });
    sc(&mut c).supplemental_groups = vec![4294967295];
    refused(&create(&mut rt, &pod, &sandbox, c).await.unwrap_err(), Code::InvalidArgument, &["supplemental_groups"]);

    // critest: "runtime should return error if RunAsGroup is set without RunAsUser".
    let mut c = container_config(&s, "group-alone", "id");
    sc(&mut c).run_as_group = Some(cri::Int64Value { value: 1000 });
    refused(&create(&mut rt, &pod, &sandbox, c).await.unwrap_err(), Code::InvalidArgument, &["run_as_group"]);

    // An image whose USER is the unchanged id would run as root just the same.
    let image = ImageBuilder::new()
        .layer(busybox_layer(), Compression::Gzip)
        .config(json!({"Cmd": ["id"], "User": "4294967295"}))
        .build();
    push_image(&s.registry.addr(), "maxuser", "1", &image, None);
    let name = format!("{}/maxuser:1", s.registry.addr());
    reef_tests::cri::pull(&mut s.reefd.images().await, &name).await.expect("pull");
    let mut c = container_config(&s, "image-max", "id");
    c.image = Some(cri::ImageSpec { image: name, ..Default::default() });
    refused(&create(&mut rt, &pod, &sandbox, c).await.unwrap_err(), Code::InvalidArgument, &["4294967295"]);

    for log in ["max-uid.log", "max-group.log", "group-alone.log", "image-max.log"] {
        assert_no_container_left(&s, &mut rt, log).await;
    }
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

#[tokio::test]
async fn log_paths_stay_in_the_pod_s_log_directory_even_through_symlinks_inside_it() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "logs");
    let pod = run_pod(&mut rt, &sandbox).await;
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), s.logs.path().join("evil")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("x.log"), s.logs.path().join("link.log")).unwrap();

    for path in ["../escape.log", "/tmp/reef-absolute.log", "evil/0.log", "link.log"] {
        let mut c = container_config(&s, "escaper", "echo escaped");
        c.log_path = path.into();
        let err = create(&mut rt, &pod, &sandbox, c).await.unwrap_err();
        refused(&err, Code::InvalidArgument, &["log_path", path]);
    }
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing written outside");
    assert!(!std::path::Path::new("/tmp/reef-absolute.log").exists());
    assert!(!s.logs.path().parent().unwrap().join("escape.log").exists());
    assert_no_container_left(&s, &mut rt, "escaper.log").await;

    // kubelet's own shape, `name/attempt.log`, works: the directory below the pod's is made.
    let mut c = container_config(&s, "nested", "echo fine");
    c.log_path = "nested/0.log".into();
    let id = create(&mut rt, &pod, &sandbox, c).await.expect("create");
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap();
    assert_eq!(wait_exited(&mut rt, &id).await.exit_code, 0);
    let log = std::fs::read_to_string(s.logs.path().join("nested/0.log")).unwrap();
    assert!(log.ends_with(" stdout F fine\n"), "{log}");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

#[tokio::test]
async fn sysctls_that_are_not_the_pod_s_own_or_do_not_exist_are_refused_by_name() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let with = |name: &str, key: &str, host_network: bool| {
        let mut p = pod_config(&s, name);
        p.linux = Some(cri::LinuxPodSandboxConfig {
            sysctls: [(key.to_string(), "1".to_string())].into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    network: if host_network { cri::NamespaceMode::Node } else { cri::NamespaceMode::Pod } as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    };
    let run = |rt: &mut Runtime, config: cri::PodSandboxConfig| {
        let mut rt = rt.clone();
        async move {
            rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() })
                .await
                .unwrap_err()
        }
    };
    let host_ip_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    for (name, key, host_network, why) in [
        ("node-wide", "kernel.panic", false, "not namespaced"),
        ("host-net", "net.ipv4.ip_forward", true, "network"),
        ("unknown", "net.ipv4.no_such_knob", false, "does not exist"),
        ("climber", "../../../etc/x", false, "not a valid name"),
    ] {
        let err = run(&mut rt, with(name, key, host_network)).await;
        refused(&err, Code::InvalidArgument, &[key, why]);
    }
    assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(), host_ip_forward);
    assert_no_pod_left(&s, &mut rt, 0).await;

    // The pod's own IPC namespace takes an IPC sysctl.
    let pod = run_pod(&mut rt, &with("ipc", "kernel.shm_rmid_forced", false)).await;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

#[tokio::test]
async fn nonsensical_resources_name_the_field_and_a_too_small_memory_limit_is_refused() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "res");
    let pod = run_pod(&mut rt, &sandbox).await;
    let with = |name: &str, r: cri::LinuxContainerResources| {
        let mut c = container_config(&s, name, "echo started");
        c.linux.as_mut().unwrap().resources = Some(r);
        c
    };
    let cases = [
        ("cpu_quota", cri::LinuxContainerResources { cpu_quota: 500, ..Default::default() }),
        ("cpu_quota", cri::LinuxContainerResources { cpu_quota: -2, ..Default::default() }),
        ("cpu_period", cri::LinuxContainerResources { cpu_period: 10, ..Default::default() }),
        ("cpu_shares", cri::LinuxContainerResources { cpu_shares: -5, ..Default::default() }),
        ("cpuset_cpus", cri::LinuxContainerResources { cpuset_cpus: "0-x".into(), ..Default::default() }),
        ("memory_limit_in_bytes", cri::LinuxContainerResources { memory_limit_in_bytes: 1, ..Default::default() }),
        (
            "hugepage_limits",
            cri::LinuxContainerResources {
                hugepage_limits: vec![cri::HugepageLimit { page_size: "3MB".into(), limit: 1 << 20 }],
                ..Default::default()
            },
        ),
    ];
    for (field, r) in cases {
        let err = create(&mut rt, &pod, &sandbox, with("bad", r)).await.unwrap_err();
        refused(&err, Code::InvalidArgument, &[field]);
    }
    assert_no_container_left(&s, &mut rt, "bad.log").await;

    // The smallest limit allowed starts a container.
    let small = cri::LinuxContainerResources { memory_limit_in_bytes: 6 << 20, ..Default::default() };
    let id = create(&mut rt, &pod, &sandbox, with("small", small)).await.expect("create at the smallest limit");
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap();
    assert_eq!(wait_exited(&mut rt, &id).await.exit_code, 0);

    // An update is held to the same bounds.
    let err = rt
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: id,
            linux: Some(cri::LinuxContainerResources { cpu_period: 5, ..Default::default() }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    refused(&err, Code::InvalidArgument, &["cpu_period"]);
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

#[tokio::test]
async fn names_labels_and_annotations_over_kubernetes_limits_are_refused() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let huge = "n".repeat(64 * 1024);
    let mut p = pod_config(&s, "x");
    p.metadata.as_mut().unwrap().name = huge.clone();
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(p), runtime_handler: String::new() })
        .await
        .unwrap_err();
    refused(&err, Code::InvalidArgument, &["metadata.name", "65536 bytes"]);
    let mut p = pod_config(&s, "labelled");
    p.labels.insert("k".into(), "v".repeat(254));
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(p), runtime_handler: String::new() })
        .await
        .unwrap_err();
    refused(&err, Code::InvalidArgument, &["labels"]);
    assert_no_pod_left(&s, &mut rt, 0).await;

    let sandbox = pod_config(&s, "names");
    let pod = run_pod(&mut rt, &sandbox).await;
    let mut c = container_config(&s, "c", "true");
    c.metadata.as_mut().unwrap().name = huge;
    refused(&create(&mut rt, &pod, &sandbox, c).await.unwrap_err(), Code::InvalidArgument, &["metadata.name"]);
    let mut c = container_config(&s, "annotated", "true");
    c.annotations.insert("a".into(), "v".repeat(257 * 1024));
    refused(&create(&mut rt, &pod, &sandbox, c).await.unwrap_err(), Code::InvalidArgument, &["annotations"]);
    assert_no_container_left(&s, &mut rt, "annotated.log").await;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

#[tokio::test]
async fn a_bind_mount_of_a_missing_host_path_is_refused_naming_the_path() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "binds");
    let pod = run_pod(&mut rt, &sandbox).await;
    let missing = s.logs.path().join("no-such-dir").display().to_string();
    let mut c = container_config(&s, "binder", "true");
    c.mounts = vec![cri::Mount { container_path: "/data".into(), host_path: missing.clone(), ..Default::default() }];
    refused(&create(&mut rt, &pod, &sandbox, c).await.unwrap_err(), Code::InvalidArgument, &[&missing]);
    assert!(!std::path::Path::new(&missing).exists(), "the runtime never makes a host path");
    assert_no_container_left(&s, &mut rt, "binder.log").await;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

#[tokio::test]
async fn an_image_whose_config_cannot_be_read_is_an_error_not_a_root_default() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "cfg");
    let pod = run_pod(&mut rt, &sandbox).await;

    // An image config without a `config` section keeps the defaults: it runs.
    let bare = ImageBuilder::new().layer(busybox_layer(), Compression::Gzip).config(json!(null)).build();
    push_image(&s.registry.addr(), "bare", "1", &bare, None);
    let bare_name = format!("{}/bare:1", s.registry.addr());
    reef_tests::cri::pull(&mut s.reefd.images().await, &bare_name).await.expect("pull");
    let mut c = container_config(&s, "bare", "echo defaults");
    c.image = Some(cri::ImageSpec { image: bare_name, ..Default::default() });
    let id = create(&mut rt, &pod, &sandbox, c).await.expect("an image without a config section runs");
    rt.remove_container(cri::RemoveContainerRequest { container_id: id }).await.unwrap();

    // The busybox image's config, damaged on disk: CreateContainer names the image instead of running it as root.
    let config_digest = reef_tests::cri::status(&mut s.reefd.images().await, &s.image).await.image.unwrap().id;
    let blob = s.reefd.root().join("blobs/sha256").join(config_digest.trim_start_matches("sha256:"));
    std::fs::write(&blob, b"{not json").unwrap();
    let err = create(&mut rt, &pod, &sandbox, container_config(&s, "damaged", "id")).await.unwrap_err();
    refused(&err, Code::FailedPrecondition, &[&s.image, "config"]);
    assert_no_container_left(&s, &mut rt, "damaged.log").await;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

#[tokio::test]
async fn an_update_racing_a_removal_never_brings_the_container_back() {
    require_e2e!();
    let mut s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "racy");
    let pod = run_pod(&mut rt, &sandbox).await;
    for round in 0..10 {
        let name = format!("r{round}");
        let id = create(&mut rt, &pod, &sandbox, container_config(&s, &name, "exec sleep 300")).await.unwrap();
        rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap();
        let updates: Vec<_> = (0..4)
            .map(|i| {
                let (mut rt, id) = (rt.clone(), id.clone());
                tokio::spawn(async move {
                    let r =
                        cri::LinuxContainerResources { memory_limit_in_bytes: (64 + i) << 20, ..Default::default() };
                    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
                        container_id: id,
                        linux: Some(r),
                        ..Default::default()
                    })
                    .await
                })
            })
            .collect();
        rt.remove_container(cri::RemoveContainerRequest { container_id: id.clone() }).await.unwrap();
        for u in updates {
            // Each update came before the removal or found the container gone.
            if let Err(e) = u.await.unwrap() {
                assert!(matches!(e.code(), Code::NotFound | Code::FailedPrecondition | Code::Unknown), "{e:?}");
            }
        }
        let err = reef_tests::pod::status(&mut rt, &id).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "round {round}: the container came back");
    }
    s.reefd.restart();
    let mut rt = s.reefd.runtime().await;
    assert_no_container_left(&s, &mut rt, "r0.log.none").await;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

#[tokio::test]
async fn an_image_is_never_removed_from_under_a_container_being_created() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let mut images = s.reefd.images().await;
    let sandbox = pod_config(&s, "holder");
    let pod = run_pod(&mut rt, &sandbox).await;
    for round in 0..8 {
        reef_tests::cri::pull(&mut images, &s.image).await.expect("pull");
        let created = {
            let (mut rt, pod, sandbox) = (rt.clone(), pod.clone(), sandbox.clone());
            let c = container_config(&s, &format!("c{round}"), "exec sleep 300");
            tokio::spawn(async move { create(&mut rt, &pod, &sandbox, c).await })
        };
        // Let the create get going, then race it.
        tokio::time::sleep(std::time::Duration::from_millis(round)).await;
        let removed = images
            .remove_image(cri::RemoveImageRequest {
                image: Some(cri::ImageSpec { image: s.image.clone(), ..Default::default() }),
            })
            .await;
        match (created.await.unwrap(), removed) {
            (Ok(id), Err(e)) => {
                assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
                // The container's layers are all there: it runs.
                rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap();
                rt.remove_container(cri::RemoveContainerRequest { container_id: id }).await.unwrap();
            }
            (Err(e), Ok(_)) => assert_eq!(e.code(), Code::NotFound, "{e:?}"),
            (created, removed) => panic!("round {round}: created {created:?} and removed {removed:?}"),
        }
    }
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}
