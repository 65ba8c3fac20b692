//! Containers through the CRI: a busybox image pulled from a real registry, run in a pod, its logs, its exit,
//! stop with the SIGKILL fallback, removal, a SIGKILL of reefd in between, and mount propagation.

use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use reef_tests::pod::{
    assert_no_container_left, container_config, create, memory_eater, mounts_under, pod_config, run_pod, setup, sh,
    status, wait_exited,
};
use reef_tests::{cgroup, require_e2e};
use tonic::Code;

#[tokio::test]
async fn a_container_runs_in_its_pod_logs_and_reports_its_exit() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "app");
    let pod = run_pod(&mut rt, &sandbox).await;
    let script = "echo hello; echo oops >&2; hostname; cat /etc/resolv.conf >/dev/null && echo resolv; exit 3";
    let id = create(&mut rt, &pod, &sandbox, container_config(&s, "main", script)).await.expect("CreateContainer");
    let created = status(&mut rt, &id).await.unwrap();
    assert_eq!(created.state, cri::ContainerState::ContainerCreated as i32);
    assert!(created.created_at > 1_700_000_000_000_000_000);

    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("StartContainer");
    let done = wait_exited(&mut rt, &id).await;
    assert_eq!(done.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(done.exit_code, 3);
    assert_eq!(done.reason, "Error");
    assert!(done.started_at >= done.created_at && done.finished_at >= done.started_at);
    let log = std::fs::read_to_string(s.logs.path().join("main.log")).expect("container log");
    assert!(log.contains(" stdout F hello\n"), "{log}");
    assert!(log.contains(" stderr F oops\n"), "{log}");
    assert!(log.contains(" stdout F app-host\n"), "the container shares the pod's hostname: {log}");
    assert!(log.contains(" stdout F resolv\n"), "{log}");

    let listed = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: pod.clone(),
                state: Some(cri::ContainerStateValue { state: cri::ContainerState::ContainerExited as i32 }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 1);

    for _ in 0..2 {
        rt.remove_container(cri::RemoveContainerRequest { container_id: id.clone() }).await.expect("RemoveContainer");
    }
    assert_eq!(status(&mut rt, &id).await.unwrap_err().code(), Code::NotFound);
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

#[tokio::test]
async fn stop_falls_back_to_sigkill_and_pod_removal_takes_its_containers() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "stopper");
    let pod = run_pod(&mut rt, &sandbox).await;
    // PID 1 ignores SIGTERM unless it handles it: only the SIGKILL after the timeout ends it.
    let id = create(&mut rt, &pod, &sandbox, container_config(&s, "sleeper", "exec sleep 300")).await.expect("create");
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("start");
    assert_eq!(status(&mut rt, &id).await.unwrap().state, cri::ContainerState::ContainerRunning as i32);
    let started = Instant::now();
    rt.stop_container(cri::StopContainerRequest { container_id: id.clone(), timeout: 1 }).await.expect("stop");
    assert!(started.elapsed() < Duration::from_secs(5));
    let st = status(&mut rt, &id).await.unwrap();
    assert_eq!((st.state, st.exit_code), (cri::ContainerState::ContainerExited as i32, 137));
    rt.stop_container(cri::StopContainerRequest { container_id: id.clone(), timeout: 1 }).await.expect("stop again");
    rt.stop_container(cri::StopContainerRequest { container_id: "missing".into(), timeout: 1 })
        .await
        .expect("stop missing");

    let err = create(&mut rt, &pod, &sandbox, container_config(&s, "sleeper", "true")).await.expect_err("same name");
    assert_eq!(err.code(), Code::AlreadyExists);
    let mut bad = container_config(&s, "noimage", "true");
    bad.image = Some(cri::ImageSpec { image: "never-pulled:1".into(), ..Default::default() });
    assert_eq!(create(&mut rt, &pod, &sandbox, bad).await.unwrap_err().code(), Code::NotFound);

    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("remove pod");
    assert_eq!(status(&mut rt, &id).await.unwrap_err().code(), Code::NotFound, "the pod's containers went with it");
    assert_eq!(mounts_under(s.reefd.root().parent().unwrap()), 0, "no rootfs or pin left mounted");
}

#[tokio::test]
async fn running_containers_survive_a_sigkill_of_reefd() {
    require_e2e!();
    let mut s = setup().await;
    let sandbox = pod_config(&s, "durable");
    let (pod, id) = {
        let mut rt = s.reefd.runtime().await;
        let pod = run_pod(&mut rt, &sandbox).await;
        let id = create(
            &mut rt,
            &pod,
            &sandbox,
            container_config(&s, "ticker", "while true; do echo tick; sleep 0.1; done"),
        )
        .await
        .unwrap();
        rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap();
        (pod, id)
    };
    s.reefd.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.reefd.spawn();
    let mut rt = s.reefd.runtime().await;
    assert_eq!(
        status(&mut rt, &id).await.unwrap().state,
        cri::ContainerState::ContainerRunning as i32,
        "still running"
    );
    let ticks = std::fs::read_to_string(s.logs.path().join("ticker.log")).unwrap().matches("tick").count();
    assert!(ticks >= 3, "it kept logging while reefd was down: {ticks}");
    rt.stop_container(cri::StopContainerRequest { container_id: id.clone(), timeout: 0 }).await.unwrap();
    assert_eq!(status(&mut rt, &id).await.unwrap().exit_code, 137);
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

/// Mount points under `dir` in the node's own table, as `mount` on the node lists them.
fn node_mount_points_under(dir: &std::path::Path) -> Vec<String> {
    let node = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    node.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(dir.to_str().unwrap()))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn pins_and_rootfs_mounts_stay_in_reefds_mount_namespace_across_a_restart() {
    require_e2e!();
    let mut s = setup().await;
    let sandbox = pod_config(&s, "quiet-host");
    let state = s.reefd.socket().parent().unwrap().to_path_buf();
    let mut rt = s.reefd.runtime().await;
    let pod = run_pod(&mut rt, &sandbox).await;
    let first = create(&mut rt, &pod, &sandbox, container_config(&s, "first", "exec sleep 300")).await.unwrap();
    rt.start_container(cri::StartContainerRequest { container_id: first.clone() }).await.unwrap();

    // In the node's table: reefd's namespace, and the network pin, which CNI agents may open by path.
    let pod_ns = state.join("pods").join(&pod[..16]).join("ns");
    let own = state.join("ns");
    let node_table = [own.clone(), own.join("mnt"), pod_ns.join("net")].map(|p| p.display().to_string()).to_vec();
    assert_eq!(node_mount_points_under(&state), node_table);
    let reefds = reef_tests::pod::mountinfo();
    let rootfs = state.join("containers").join(&first[..16]).join("rootfs");
    assert!(reefds.contains(&format!(" {} ", rootfs.display())), "reefd's namespace holds the rootfs");
    assert!(reefds.contains(&format!(" {} ", pod_ns.join("uts").display())), "and the other pins");

    s.reefd.kill9();
    s.reefd.spawn();
    let mut rt = s.reefd.runtime().await;
    assert_eq!(node_mount_points_under(&state), node_table, "the restarted reefd entered the same namespace");
    let second = create(&mut rt, &pod, &sandbox, container_config(&s, "second", "echo joined")).await.unwrap();
    rt.start_container(cri::StartContainerRequest { container_id: second.clone() }).await.unwrap();
    assert_eq!(wait_exited(&mut rt, &second).await.exit_code, 0, "a new container still finds the pod's pins");
    assert_eq!(sh(&mut rt, &first, "echo alive").await.stdout, b"alive\n", "the old one kept its rootfs");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
    assert_eq!(mounts_under(&state), 0, "its pins and rootfs went with the pod");
}

#[tokio::test]
async fn objects_half_made_when_reefd_died_are_cleaned_at_the_next_start() {
    require_e2e!();
    let mut s = setup().await;
    let sandbox = pod_config(&s, "orphan");
    let (pod, container) = {
        let mut rt = s.reefd.runtime().await;
        let pod = run_pod(&mut rt, &sandbox).await;
        let c = create(&mut rt, &pod, &sandbox, container_config(&s, "half", "true")).await.unwrap();
        (pod, c)
    };
    // A crash just before the records were saved leaves exactly this: everything made, no record.
    std::fs::remove_file(s.reefd.root().join(format!("pods/{pod}.json"))).unwrap();
    std::fs::remove_file(s.reefd.root().join(format!("containers/records/{container}.json"))).unwrap();
    s.reefd.kill9();
    s.reefd.spawn();
    let state = s.reefd.socket().parent().unwrap().to_path_buf();
    assert!(!state.join("pods").join(&pod[..16]).exists(), "the pod's dir, pins and monitor are gone");
    assert!(!state.join("containers").join(&container[..16]).exists(), "the container's rootfs is gone");
    assert!(!s.reefd.root().join("containers").join(&container).exists());
    assert_eq!(mounts_under(&state), 0, "nothing stays mounted");
    let cgroup = cgroup::dir("memory", &s.reefd.container_cgroup(&s.reefd.cgroup_parent(), &container));
    let deadline = Instant::now() + Duration::from_secs(5);
    while cgroup.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!cgroup.exists(), "the half-made container's cgroup is gone: {}", cgroup.display());
    let mut rt = s.reefd.runtime().await;
    assert!(
        rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await.unwrap().into_inner().items.is_empty()
    );
}

#[tokio::test]
async fn resource_limits_land_in_the_container_cgroup_which_goes_with_it() {
    require_e2e!();
    let v2 = cgroup::v2();
    let s = setup().await;
    // A kubelet-style pod parent below the test's own, which goes with the test's reefd.
    let pod_parent = s.reefd.pod_cgroup_parent("pod1");
    let mut rt = s.reefd.runtime().await;
    let mut sandbox = pod_config(&s, "limited");
    sandbox.linux = Some(cri::LinuxPodSandboxConfig { cgroup_parent: pod_parent.clone(), ..Default::default() });
    let pod = run_pod(&mut rt, &sandbox).await;
    let mut config = container_config(&s, "capped", "exec sleep 300");
    config.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        // No swap, as kubelet asks it: memory+swap equal to memory.
        memory_swap_limit_in_bytes: 64 << 20,
        cpu_shares: 512,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        cpuset_cpus: "0".into(),
        // Keys of the unified hierarchy exist on v2 only; kubelet sends them only there.
        unified: if v2 {
            [("pids.max".to_string(), "100".to_string()), ("memory.high".to_string(), (48u64 << 20).to_string())]
                .into_iter()
                .collect()
        } else {
            Default::default()
        },
        ..Default::default()
    });
    let id = create(&mut rt, &pod, &sandbox, config).await.expect("create");
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("start");
    let path = s.reefd.container_cgroup(&pod_parent, &id);
    let read = |ctrl: &str, file: &str| cgroup::read(ctrl, &path, file);
    assert_eq!(cgroup::memory_limit(&path), (64u64 << 20).to_string());
    let (shares_file, shares) = cgroup::cpu_share_file(512);
    assert_eq!(read("cpu", shares_file), shares);
    assert_eq!(cgroup::cpu_quota(&path), "50000");
    assert_eq!(read("cpuset", "cpuset.cpus"), "0");
    if v2 {
        assert_eq!(read("cpu", "cpu.max"), "50000 100000");
        assert_eq!(read("memory", "memory.swap.max"), "0", "swap is v2's own limit: memory+swap less memory");
        assert_eq!(read("pids", "pids.max"), "100", "a unified key");
        assert_eq!(read("memory", "memory.high"), (48u64 << 20).to_string(), "a unified key");
    } else {
        assert_eq!(read("memory", "memory.memsw.limit_in_bytes"), (64u64 << 20).to_string());
        let devices = read("devices", "devices.list");
        assert!(
            !devices.contains("a *:* rwm") && devices.contains("c 1:3 rwm"),
            "default deny, /dev/null allowed: {devices}"
        );
    }
    assert!(!read("memory", "cgroup.procs").is_empty(), "the container's process is in its cgroup");
    let exec = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: id.clone(),
            cmd: vec!["cat".into(), "/proc/self/cgroup".into()],
            timeout: 10,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    let seen = String::from_utf8_lossy(&exec.stdout).to_string();
    assert!(!seen.is_empty() && seen.lines().all(|l| l.ends_with(":/")), "the container's cgroup is its / : {seen}");
    // Its /sys/fs/cgroup holds its own cgroup (of each hierarchy on v1), read-only, and nothing of the node's others.
    let memory_file = if v2 { "memory.max" } else { "memory/memory.limit_in_bytes" };
    let own_dir = if v2 { "" } else { "memory" };
    let view = sh(
        &mut rt,
        &id,
        &format!(
            "cat /sys/fs/cgroup/{memory_file}; ls /sys/fs/cgroup/{own_dir} | grep -c '^reef-'; \
             touch /sys/fs/cgroup/{own_dir}/x 2>/dev/null || echo read-only; ls /sys/fs/cgroup | grep -c unified"
        ),
    )
    .await;
    let view = String::from_utf8_lossy(&view.stdout).to_string();
    assert_eq!(view.lines().collect::<Vec<_>>(), [&(64u64 << 20).to_string(), "0", "read-only", "0"], "{view}");
    let (mut exec_rt, sleeper_id) = (rt.clone(), id.clone());
    let sleeper = tokio::spawn(async move {
        let cmd = vec!["sleep".into(), "3".into()];
        exec_rt.exec_sync(cri::ExecSyncRequest { container_id: sleeper_id, cmd, timeout: 10 }).await
    });
    let mut procs = 0;
    for _ in 0..100 {
        procs = read("memory", "cgroup.procs").lines().count();
        if procs >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(procs >= 2, "an exec runs in the container's cgroup, as under runc");
    sleeper.await.expect("join").expect("ExecSync sleep");

    let stats = rt
        .container_stats(cri::ContainerStatsRequest { container_id: id.clone() })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let memory = stats.memory.unwrap();
    assert!(memory.usage_bytes.unwrap().value > 0 && memory.working_set_bytes.is_some(), "{memory:?}");
    let cpu = stats.cpu.unwrap();
    assert!(cpu.timestamp > 0);
    assert!(cpu.usage_core_nano_seconds.is_some_and(|u| u.value > 0), "CPU time is counted: {cpu:?}");
    let listed =
        rt.list_container_stats(cri::ListContainerStatsRequest { filter: None }).await.unwrap().into_inner().stats;
    assert_eq!(listed.len(), 1);
    let metrics = rt
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics;
    let metric = |name: &str| {
        metrics
            .iter()
            .flat_map(|p| &p.container_metrics)
            .flat_map(|c| &c.metrics)
            .find(|m| m.name == name)
            .and_then(|m| m.value.as_ref())
            .map(|v| v.value)
    };
    assert_eq!(metric("container_spec_memory_limit_bytes"), Some(64 << 20));
    assert_eq!(metric("container_spec_cpu_quota"), Some(50_000));
    assert!(metric("container_memory_usage_bytes").is_some_and(|m| m > 0));

    let update = cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 128 << 20,
            memory_swap_limit_in_bytes: 128 << 20,
            cpu_shares: 256,
            ..Default::default()
        }),
        ..Default::default()
    };
    rt.update_container_resources(update).await.expect("UpdateContainerResources");
    assert_eq!(cgroup::memory_limit(&path), (128u64 << 20).to_string());
    let (shares_file, shares) = cgroup::cpu_share_file(256);
    assert_eq!(read("cpu", shares_file), shares);
    let now = status(&mut rt, &id).await.unwrap().resources.and_then(|r| r.linux).expect("resources in the status");
    assert_eq!((now.memory_limit_in_bytes, now.cpu_shares), (128 << 20, 256), "the status reports the update");
    rt.remove_container(cri::RemoveContainerRequest { container_id: id.clone() }).await.expect("remove");
    assert!(!cgroup::dir("memory", &path).exists(), "the cgroup goes with the container");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

#[tokio::test]
async fn a_create_that_fails_inside_the_container_leaves_no_cgroup_rootfs_record_or_log() {
    require_e2e!();
    let s = setup().await;
    let pod_parent = s.reefd.pod_cgroup_parent("pod1");
    let mut rt = s.reefd.runtime().await;
    let mut sandbox = pod_config(&s, "failing");
    sandbox.linux = Some(cri::LinuxPodSandboxConfig { cgroup_parent: pod_parent.clone(), ..Default::default() });
    let pod = run_pod(&mut rt, &sandbox).await;
    // The bind mount fails inside the new container, after its cgroup is made, limited and joined: its
    // destination lies below a file of the image.
    let mut config = container_config(&s, "unmountable", "exec sleep 300");
    config.mounts = vec![cri::Mount {
        container_path: "/bin/busybox/data".into(),
        host_path: s.logs.path().display().to_string(),
        ..Default::default()
    }];
    config.linux.as_mut().unwrap().resources =
        Some(cri::LinuxContainerResources { memory_limit_in_bytes: 64 << 20, ..Default::default() });
    let err = create(&mut rt, &pod, &sandbox, config).await.unwrap_err();
    assert!(err.message().contains("/data"), "the error names the mount: {}", err.message());

    let pod_cgroup = |ctrl: &str| cgroup::dir(ctrl, pod_parent.trim_start_matches('/'));
    let controllers: &[&str] = if cgroup::v2() { &["unified"] } else { &["memory", "pids", "devices", "freezer"] };
    for &ctrl in controllers {
        let left: Vec<_> = std::fs::read_dir(pod_cgroup(ctrl))
            .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("reef-")).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "no container cgroup left in {ctrl}: {left:?}");
    }
    assert_no_container_left(&s, &mut rt, "unmountable.log").await;

    // The name was given back: the same container without the mount is made.
    let id = create(&mut rt, &pod, &sandbox, container_config(&s, "unmountable", "exec sleep 300")).await;
    assert!(id.is_ok(), "{id:?}");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

#[tokio::test]
async fn exec_sync_runs_in_the_container_and_its_timeout_always_holds() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "probed");
    let pod = run_pod(&mut rt, &sandbox).await;
    let id = create(&mut rt, &pod, &sandbox, container_config(&s, "server", "exec sleep 300")).await.unwrap();
    let exec = |cmd: &[&str], timeout: i64| cri::ExecSyncRequest {
        container_id: id.clone(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    };
    let not_running = rt.exec_sync(exec(&["true"], 5)).await.unwrap_err();
    assert_eq!(not_running.code(), Code::FailedPrecondition, "a created container cannot be exec'd into");
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap();

    let out =
        rt.exec_sync(exec(&["sh", "-c", "hostname; echo err >&2; exit 4"], 5)).await.expect("ExecSync").into_inner();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "probed-host\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(out.exit_code, 4);

    // A child that keeps the pipes open must not hold the call past its timeout.
    let started = Instant::now();
    let err = rt.exec_sync(exec(&["sh", "-c", "sleep 30 & sleep 30"], 1)).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3), "returned after {:?}", started.elapsed());

    let missing = rt.exec_sync(exec(&["no-such-tool"], 5)).await.unwrap_err();
    assert!(missing.message().contains("Exec"), "{missing:?}");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

#[tokio::test]
async fn reopening_the_log_after_rotation_loses_no_line() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "rotated");
    let pod = run_pod(&mut rt, &sandbox).await;
    let script = "i=0; while [ $i -lt 400 ]; do echo line$i; i=$((i+1)); sleep 0.005; done";
    let id = create(&mut rt, &pod, &sandbox, container_config(&s, "writer", script)).await.unwrap();
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = s.logs.path().join("writer.log");
    std::fs::rename(&log, s.logs.path().join("writer.log.1")).unwrap();
    rt.reopen_container_log(cri::ReopenContainerLogRequest { container_id: id.clone() })
        .await
        .expect("ReopenContainerLog");
    wait_exited(&mut rt, &id).await;
    let mut all = std::fs::read_to_string(s.logs.path().join("writer.log.1")).unwrap();
    all.push_str(&std::fs::read_to_string(&log).expect("a new log file at the same path"));
    let lines: Vec<&str> = all.lines().map(|l| l.rsplit(' ').next().unwrap_or_default()).collect();
    let expected: Vec<String> = (0..400).map(|i| format!("line{i}")).collect();
    assert_eq!(lines, expected, "every line once, in order, across the rotation");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

#[tokio::test]
async fn a_container_opens_only_the_devices_it_was_given_not_even_a_node_it_made_itself() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "devices");
    let pod = run_pod(&mut rt, &sandbox).await;
    let id = create(&mut rt, &pod, &sandbox, container_config(&s, "probe", "exec sleep 300")).await.unwrap();
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap();
    // Making nodes is allowed (as under runc), opening them is not: /dev/mem's numbers and a disk's. The device
    // cgroup on v1, the eBPF filter on v2.
    let script = "head -c1 /dev/zero | wc -c; \
                  mknod /dev/mem-like c 1 1 && echo made; head -c1 /dev/mem-like >/dev/null 2>/tmp/err || cat /tmp/err; \
                  mknod /dev/disk-like b 8 0 && echo made; head -c1 /dev/disk-like >/dev/null 2>/tmp/err || cat /tmp/err";
    let out = sh(&mut rt, &id, script).await;
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(lines[0].trim(), "1", "a standard device opens: {out}");
    assert_eq!([lines[1], lines[3]], ["made", "made"], "{out}");
    assert!(lines[2].contains("Operation not permitted"), "a char device not given: {out}");
    assert!(lines[4].contains("Operation not permitted"), "a block device not given: {out}");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

#[tokio::test]
async fn a_container_killed_for_memory_reports_oomkilled() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "hungry");
    let pod = run_pod(&mut rt, &sandbox).await;
    let id = create(&mut rt, &pod, &sandbox, memory_eater(&s, "eater")).await.unwrap();
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap();
    let st = wait_exited(&mut rt, &id).await;
    let cgroup = s.reefd.container_cgroup(&s.reefd.cgroup_parent(), &id);
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32, "still running: {}", cgroup_processes(&cgroup));
    assert_eq!(st.reason, "OOMKilled", "exit code {}", st.exit_code);
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

/// What runs in a container's cgroup (v2, or v1's memory hierarchy), with each process's state and where it
/// waits, and the cgroup's memory events: why a container did not end when it should have.
fn cgroup_processes(cgroup: &str) -> String {
    let dirs = [format!("/sys/fs/cgroup/{cgroup}"), format!("/sys/fs/cgroup/memory/{cgroup}")];
    let Some(dir) = dirs.iter().find(|d| std::path::Path::new(d).join("cgroup.procs").exists()) else {
        return format!("no cgroup {cgroup}");
    };
    let read = |p: String| std::fs::read_to_string(p).unwrap_or_default().trim().to_string();
    let mut out = format!("{dir}: memory.events [{}]", read(format!("{dir}/memory.events")).replace('\n', ", "));
    for pid in read(format!("{dir}/cgroup.procs")).lines() {
        let stat = read(format!("/proc/{pid}/stat"));
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next().unwrap_or('?')).unwrap_or('?');
        out.push_str(&format!(
            "\n  {pid} {} state {state} wchan {} {}",
            read(format!("/proc/{pid}/comm")),
            read(format!("/proc/{pid}/wchan")),
            read(format!("/proc/{pid}/stack")).lines().take(6).collect::<Vec<_>>().join(" < "),
        ));
    }
    out
}

#[tokio::test]
async fn pod_sysctls_apply_in_the_pod_namespaces_and_hostile_keys_are_refused() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let mut sandbox = pod_config(&s, "tuned");
    sandbox.linux = Some(cri::LinuxPodSandboxConfig {
        sysctls: [("net.ipv4.ip_unprivileged_port_start".to_string(), "0".to_string())].into(),
        ..Default::default()
    });
    let pod = run_pod(&mut rt, &sandbox).await;
    let id = create(
        &mut rt,
        &pod,
        &sandbox,
        container_config(&s, "reader", "cat /proc/sys/net/ipv4/ip_unprivileged_port_start"),
    )
    .await
    .unwrap();
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap();
    assert_eq!(wait_exited(&mut rt, &id).await.exit_code, 0);
    let log = std::fs::read_to_string(s.logs.path().join("reader.log")).unwrap();
    assert!(log.ends_with(" stdout F 0\n"), "{log}");
    let host = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    assert_ne!(host.trim(), "0", "the host's value is untouched");

    // CreateContainer checks the sandbox config it is given too (hardening.rs has RunPodSandbox's refusals).
    let mut hostile = sandbox.clone();
    hostile.linux.as_mut().unwrap().sysctls = [("../../../etc/x".to_string(), "1".to_string())].into();
    let err = create(&mut rt, &pod, &hostile, container_config(&s, "r2", "true")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("../../../etc/x"), "{err:?}");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

#[tokio::test]
async fn twenty_pods_survive_a_sigkill_of_reefd_with_states_logs_and_exit_codes_intact() {
    require_e2e!();
    let mut s = setup().await;
    let mut pods = Vec::new();
    {
        let mut rt = s.reefd.runtime().await;
        for i in 0..20 {
            let sandbox = pod_config(&s, &format!("p{i}"));
            let pod = run_pod(&mut rt, &sandbox).await;
            // Even pods tick forever; odd ones exit with their number while reefd is down.
            let script = if i % 2 == 0 {
                "while true; do echo tick; sleep 0.05; done".to_string()
            } else {
                format!("sleep 1; echo bye; exit {i}")
            };
            let c =
                create(&mut rt, &pod, &sandbox, container_config(&s, &format!("c{i}"), &script)).await.expect("create");
            rt.start_container(cri::StartContainerRequest { container_id: c.clone() }).await.expect("start");
            pods.push((i, pod, c));
        }
    }
    s.reefd.kill9();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.reefd.spawn();
    let mut rt = s.reefd.runtime().await;
    let listed = rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await.unwrap().into_inner().items;
    assert_eq!(listed.len(), 20, "every pod is still listed");
    for (i, pod, c) in &pods {
        assert!(listed.iter().any(|p| &p.id == pod && p.state == cri::PodSandboxState::SandboxReady as i32));
        let st = status(&mut rt, c).await.expect("status after restart");
        if i % 2 == 0 {
            assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32, "c{i} still runs");
            let log = std::fs::read_to_string(s.logs.path().join(format!("c{i}.log"))).unwrap();
            assert!(log.matches("tick").count() >= 10, "c{i} kept logging while reefd was down");
        } else {
            assert_eq!(
                (st.state, st.exit_code),
                (cri::ContainerState::ContainerExited as i32, *i),
                "c{i} exited meanwhile"
            );
            let log = std::fs::read_to_string(s.logs.path().join(format!("c{i}.log"))).unwrap();
            assert!(log.contains(" stdout F bye\n"), "{log}");
        }
    }
    for (_, pod, _) in pods {
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
    }
}

#[tokio::test]
async fn an_image_in_use_by_a_container_cannot_be_removed_until_the_container_goes() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "user");
    let pod = run_pod(&mut rt, &sandbox).await;
    let id = create(&mut rt, &pod, &sandbox, container_config(&s, "c", "true")).await.unwrap();
    let mut images = s.reefd.images().await;
    let err = images
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec { image: s.image.clone(), ..Default::default() }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains(&id), "{}", err.message());
    rt.remove_container(cri::RemoveContainerRequest { container_id: id }).await.unwrap();
    images
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec { image: s.image.clone(), ..Default::default() }),
        })
        .await
        .expect("free to go now");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

#[tokio::test]
async fn seccomp_runtime_default_unconfined_and_localhost_profiles_filter_the_container_and_its_execs() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "filtered");
    let pod = run_pod(&mut rt, &sandbox).await;
    let script =
        "grep Seccomp: /proc/self/status; unshare -U true && echo userns-allowed || echo userns-refused; sleep 300";
    let with_profile = |name: &str, profile: cri::security_profile::ProfileType| {
        let mut c = container_config(&s, name, script);
        c.linux.as_mut().unwrap().security_context.as_mut().unwrap().seccomp =
            Some(cri::SecurityProfile { profile_type: profile as i32, localhost_ref: String::new() });
        c
    };
    let confined =
        create(&mut rt, &pod, &sandbox, with_profile("confined", cri::security_profile::ProfileType::RuntimeDefault))
            .await
            .expect("create");
    let open = create(&mut rt, &pod, &sandbox, with_profile("open", cri::security_profile::ProfileType::Unconfined))
        .await
        .expect("create");
    for id in [&confined, &open] {
        rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("start");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let confined_log = std::fs::read_to_string(s.logs.path().join("confined.log")).unwrap();
    assert!(confined_log.contains("Seccomp:\t2"), "{confined_log}");
    assert!(confined_log.contains("userns-refused"), "{confined_log}");
    let open_log = std::fs::read_to_string(s.logs.path().join("open.log")).unwrap();
    assert!(open_log.contains("Seccomp:\t0"), "{open_log}");
    assert!(open_log.contains("userns-allowed"), "{open_log}");
    let exec = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: confined.clone(),
            cmd: vec!["grep".into(), "Seccomp:".into(), "/proc/self/status".into()],
            timeout: 5,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&exec.stdout).trim(), "Seccomp:\t2", "execs get the container's filter");

    // A Localhost profile from the node: everything allowed but mkdir, which fails with EPERM.
    let profiles = tempfile::tempdir().unwrap();
    let no_mkdir = profiles.path().join("no-mkdir.json");
    std::fs::write(
        &no_mkdir,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .unwrap();
    let localhost = |name: &str, path: &str| {
        let mut c =
            container_config(&s, name, "mkdir /tmp/made && echo made || echo refused; grep Seccomp: /proc/self/status");
        c.linux.as_mut().unwrap().security_context.as_mut().unwrap().seccomp = Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Localhost as i32,
            localhost_ref: path.into(),
        });
        c
    };
    let local = create(&mut rt, &pod, &sandbox, localhost("local", &no_mkdir.display().to_string())).await.unwrap();
    rt.start_container(cri::StartContainerRequest { container_id: local.clone() }).await.expect("start");
    assert_eq!(wait_exited(&mut rt, &local).await.exit_code, 0);
    let local_log = std::fs::read_to_string(s.logs.path().join("local.log")).unwrap();
    assert!(local_log.contains("refused") && local_log.contains("Seccomp:\t2"), "{local_log}");
    let missing = profiles.path().join("missing.json").display().to_string();
    let err = create(&mut rt, &pod, &sandbox, localhost("missing", &missing)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("missing.json"), "the error names the profile: {}", err.message());
    std::fs::write(profiles.path().join("bad.json"), "{not json").unwrap();
    let bad = profiles.path().join("bad.json").display().to_string();
    assert_eq!(
        create(&mut rt, &pod, &sandbox, localhost("bad", &bad)).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

/// critest's mount propagation layout: `<tmp>/mnt`, a bind of itself made rshared (or rprivate) on the node, with
/// an empty `propagationMnt` in it, and `<tmp>/propagationSrcDir` holding `flagFile`. Dropping it takes every
/// mount under `<tmp>/mnt` with it.
struct PropagationDirs {
    tmp: tempfile::TempDir,
}

impl PropagationDirs {
    fn new(shared: bool) -> PropagationDirs {
        use nix::mount::{MsFlags, mount};
        let tmp = tempfile::tempdir().expect("tempdir");
        let dirs = PropagationDirs { tmp };
        std::fs::create_dir_all(dirs.mount_point()).unwrap();
        std::fs::create_dir_all(dirs.source()).unwrap();
        std::fs::write(dirs.source().join("flagFile"), b"").unwrap();
        let none: Option<&str> = None;
        mount(Some(&dirs.mnt()), &dirs.mnt(), none, MsFlags::MS_BIND | MsFlags::MS_REC, none).expect("bind mnt");
        let propagation = if shared { MsFlags::MS_SHARED } else { MsFlags::MS_PRIVATE };
        mount(none, &dirs.mnt(), none, propagation | MsFlags::MS_REC, none).expect("propagation of mnt");
        dirs
    }

    fn mnt(&self) -> std::path::PathBuf {
        self.tmp.path().join("mnt")
    }

    fn mount_point(&self) -> std::path::PathBuf {
        self.mnt().join("propagationMnt")
    }

    fn source(&self) -> std::path::PathBuf {
        self.tmp.path().join("propagationSrcDir")
    }
}

impl Drop for PropagationDirs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.mnt(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Runs critest's steps for one propagation mode; returns whether a mount made on the node under the volume
/// showed in the container, and whether one made in the container showed on the node.
async fn propagation_both_ways(
    s: &reef_tests::pod::Setup,
    rt: &mut reef_tests::pod::Runtime,
    pod: &str,
    sandbox: &cri::PodSandboxConfig,
    propagation: cri::MountPropagation,
) -> (bool, bool) {
    let dirs = PropagationDirs::new(propagation != cri::MountPropagation::PropagationPrivate);
    let mnt = dirs.mnt().display().to_string();
    let name = format!("{:?}", propagation).to_lowercase();
    let mut c = container_config(s, &name, "exec sleep 300");
    // As critest sends it: no namespace options (the pod's PID namespace), privileged to run `mount`.
    let sc = c.linux.as_mut().unwrap().security_context.as_mut().unwrap();
    sc.namespace_options = None;
    sc.privileged = true;
    c.mounts = vec![cri::Mount {
        container_path: mnt.clone(),
        host_path: mnt.clone(),
        propagation: propagation as i32,
        ..Default::default()
    }];
    let id = create(rt, pod, sandbox, c).await.expect("create");
    let mounts = status(rt, &id).await.unwrap().mounts;
    assert_eq!(mounts.len(), 1);
    assert_eq!((mounts[0].host_path.as_str(), mounts[0].readonly), (mnt.as_str(), false));
    assert_eq!(mounts[0].propagation, propagation as i32, "the status reports the propagation asked for");
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("start");

    let none: Option<&str> = None;
    let flags = nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC;
    nix::mount::mount(Some(&dirs.source()), &dirs.mount_point(), none, flags, none).expect("mount on the node");
    let listed = sh(rt, &id, &format!("ls -A {}", dirs.mount_point().display())).await;
    let host_to_container = String::from_utf8_lossy(&listed.stdout).contains("flagFile");

    let in_container = dirs.mnt().join("containerMntPoint");
    let mounted = sh(rt, &id, &format!("mkdir -p {0} && mount --bind /etc {0}", in_container.display())).await;
    assert_eq!(mounted.exit_code, 0, "mount in the container: {}", String::from_utf8_lossy(&mounted.stderr));
    let container_to_host = std::fs::read_dir(&in_container).map(|d| d.count() > 0).unwrap_or(false);
    rt.remove_container(cri::RemoveContainerRequest { container_id: id }).await.expect("remove");
    (host_to_container, container_to_host)
}

#[tokio::test]
async fn mounts_propagate_as_the_volume_asks_private_host_to_container_or_both_ways() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    // critest's privileged pod: no namespace options, so its containers share one PID namespace.
    let mut sandbox = pod_config(&s, "propagation");
    sandbox.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext { privileged: true, ..Default::default() }),
        ..Default::default()
    });
    let pod = run_pod(&mut rt, &sandbox).await;
    let mut seen = Vec::new();
    for propagation in [
        cri::MountPropagation::PropagationPrivate,
        cri::MountPropagation::PropagationHostToContainer,
        cri::MountPropagation::PropagationBidirectional,
    ] {
        seen.push((propagation, propagation_both_ways(&s, &mut rt, &pod, &sandbox, propagation).await));
    }
    assert_eq!(
        seen,
        [
            (cri::MountPropagation::PropagationPrivate, (false, false)),
            (cri::MountPropagation::PropagationHostToContainer, (true, false)),
            (cri::MountPropagation::PropagationBidirectional, (true, true)),
        ],
        "(node to container, container to node) per mode"
    );
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
    assert_eq!(mounts_under(&s.reefd.root()), 0, "no rootfs left mounted");
}

#[tokio::test]
async fn a_container_starts_with_no_signal_blocked_or_ignored_and_a_reader_gone_ends_its_writer() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "signals");
    let pod = run_pod(&mut rt, &sandbox).await;
    let script =
        "grep -E '^Sig(Blk|Ign)' /proc/self/status; (yes; echo yes=$? >&2) | head -n 1 >/dev/null; exec sleep 300";
    let id = create(&mut rt, &pod, &sandbox, container_config(&s, "plain", script)).await.expect("create");
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("start");
    let log = s.logs.path().join("plain.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    while !seen.contains("yes=") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = std::fs::read_to_string(&log).unwrap_or_default();
    }
    // `yes` dies of SIGPIPE once head is gone, rather than write forever: it does not inherit reefd's SIG_IGN.
    assert!(seen.contains("yes=141"), "128 + SIGPIPE: {seen}");
    assert!(seen.contains("SigBlk:\t0000000000000000"), "nothing blocked (the monitor blocks SIGCHLD): {seen}");
    assert!(seen.contains("SigIgn:\t0000000000000000"), "nothing ignored (reefd ignores SIGPIPE): {seen}");
    // Not through sh, which ignores SIGQUIT itself when it runs a command string.
    let cmd = ["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"].map(String::from).to_vec();
    let exec = rt.exec_sync(cri::ExecSyncRequest { container_id: id.clone(), cmd, timeout: 10 }).await;
    let exec = String::from_utf8_lossy(&exec.expect("ExecSync").into_inner().stdout).to_string();
    assert!(exec.contains("SigBlk:\t0000000000000000") && exec.contains("SigIgn:\t0000000000000000"), "{exec}");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}
