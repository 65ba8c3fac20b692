//! The container's cgroup under either cgroup driver (`REEF_TEST_CGROUP_DRIVER`): kubelet's cgroup parents, the
//! container's own view of its cgroup, and, under systemd, limits that are the scope's properties.

use k8s_cri::v1 as cri;
use reef_tests::pod::{Setup, container_config, create, pod_config, run_pod, setup, sh};
use reef_tests::reefd::CgroupDriver;
use reef_tests::require_e2e;
use tonic::Code;

/// The node's cgroup v2 tree, when that is what the node runs.
fn unified() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// A pod whose cgroup parent is the one kubelet would send for the driver, below the test's own.
fn pod_with_parent(s: &Setup, name: &str) -> cri::PodSandboxConfig {
    let mut sandbox = pod_config(s, name);
    sandbox.linux =
        Some(cri::LinuxPodSandboxConfig { cgroup_parent: s.reefd.pod_cgroup_parent(name), ..Default::default() });
    sandbox
}

fn capped(s: &Setup, name: &str, memory: i64) -> cri::ContainerConfig {
    let mut config = container_config(s, name, "exec sleep 300");
    config.linux.as_mut().expect("linux").resources = Some(cri::LinuxContainerResources {
        memory_limit_in_bytes: memory,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        ..Default::default()
    });
    config
}

fn systemctl_show(unit: &str, property: &str) -> String {
    let out = std::process::Command::new("systemctl")
        .args(["show", unit, "-p", property, "--value"])
        .output()
        .expect("run systemctl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn a_container_sees_its_own_cgroup_as_root_with_its_limits_below_a_kubelet_style_parent() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_with_parent(&s, "rooted");
    let pod = run_pod(&mut rt, &sandbox).await;
    let id = create(&mut rt, &pod, &sandbox, capped(&s, "capped", 64 << 20)).await.expect("create");
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("start");

    let cgroup = s.reefd.container_cgroup(&s.reefd.pod_cgroup_parent("rooted"), &id);
    let limit_file = if unified() {
        format!("/sys/fs/cgroup/{cgroup}/memory.max")
    } else {
        format!("/sys/fs/cgroup/memory/{cgroup}/memory.limit_in_bytes")
    };
    let on_node = std::fs::read_to_string(&limit_file).unwrap_or_else(|e| panic!("{limit_file}: {e}"));
    assert_eq!(on_node.trim(), (64u64 << 20).to_string(), "{limit_file}");
    let procs_file = std::path::Path::new(&limit_file).with_file_name("cgroup.procs");
    assert!(!std::fs::read_to_string(&procs_file).unwrap_or_default().trim().is_empty(), "init is in {cgroup}");

    // Inside: its own cgroup is `/`, and its limit is what /sys/fs/cgroup shows.
    let inside =
        if unified() { "cat /sys/fs/cgroup/memory.max" } else { "cat /sys/fs/cgroup/memory/memory.limit_in_bytes" };
    let out = sh(&mut rt, &id, &format!("cat /proc/self/cgroup; echo limit=$({inside})")).await;
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    let cgroups: Vec<&str> = out.lines().filter(|l| !l.starts_with("limit=")).collect();
    assert!(!cgroups.is_empty() && cgroups.iter().all(|l| l.ends_with(":/")), "the container's cgroup is its /: {out}");
    assert!(out.contains(&format!("limit={}", 64u64 << 20)), "{out}");
    if unified() {
        assert!(cgroups.contains(&"0::/"), "{out}");
    }
    if s.reefd.driver == CgroupDriver::Systemd {
        let unit = format!("reef-{id}.scope");
        assert_eq!(systemctl_show(&unit, "ActiveState"), "active", "{unit} is systemd's");
        let pod_slice = format!("{}-rooted.slice", s.reefd.cgroup_parent().trim_end_matches(".slice"));
        assert_eq!(systemctl_show(&unit, "Slice"), pod_slice);
    }
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("remove pod");
    assert!(!std::path::Path::new(&limit_file).exists(), "the cgroup goes with the pod: {limit_file}");
}

#[tokio::test]
async fn updated_limits_are_the_scope_s_properties_and_a_daemon_reload_keeps_them() {
    require_e2e!();
    if CgroupDriver::from_env() != CgroupDriver::Systemd || !unified() {
        eprintln!("skipped: for the systemd cgroup driver on cgroup v2 (REEF_TEST_CGROUP_DRIVER=systemd)");
        return;
    }
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_with_parent(&s, "updated");
    let pod = run_pod(&mut rt, &sandbox).await;
    let id = create(&mut rt, &pod, &sandbox, capped(&s, "grown", 64 << 20)).await.expect("create");
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("start");
    let unit = format!("reef-{id}.scope");
    assert_eq!(systemctl_show(&unit, "MemoryMax"), (64u64 << 20).to_string(), "the scope started with its limit");

    let update = cri::UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 128 << 20,
            cpu_quota: 20_000,
            cpu_period: 100_000,
            cpu_shares: 512,
            ..Default::default()
        }),
        ..Default::default()
    };
    rt.update_container_resources(update).await.expect("UpdateContainerResources");
    let dir = format!("/sys/fs/cgroup/{}", s.reefd.container_cgroup(&s.reefd.pod_cgroup_parent("updated"), &id));
    let read = |file: &str| std::fs::read_to_string(format!("{dir}/{file}")).unwrap_or_default().trim().to_string();
    for when in ["after the update", "after a daemon-reload"] {
        assert_eq!(systemctl_show(&unit, "MemoryMax"), (128u64 << 20).to_string(), "{when}");
        assert_eq!(systemctl_show(&unit, "CPUQuotaPerSecUSec"), "200ms", "{when}");
        assert_eq!(read("memory.max"), (128u64 << 20).to_string(), "{when}");
        assert_eq!(read("cpu.max"), "20000 100000", "{when}");
        let weight = read("cpu.weight");
        assert!(weight != "100" && !weight.is_empty(), "shares 512 is not the default weight {when}: {weight}");
        let reload = std::process::Command::new("systemctl").arg("daemon-reload").status().expect("daemon-reload");
        assert!(reload.success());
    }
    let status = rt
        .container_status(cri::ContainerStatusRequest { container_id: id.clone(), verbose: false })
        .await
        .expect("status")
        .into_inner()
        .status
        .expect("status");
    let limits = status.resources.and_then(|r| r.linux).expect("resources");
    assert_eq!(limits.memory_limit_in_bytes, 128 << 20);
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("remove pod");
}

#[tokio::test]
async fn a_cgroup_parent_that_names_no_slice_is_refused_under_systemd_when_the_pod_is_run() {
    require_e2e!();
    if CgroupDriver::from_env() != CgroupDriver::Systemd {
        eprintln!("skipped: for the systemd cgroup driver (REEF_TEST_CGROUP_DRIVER=systemd)");
        return;
    }
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let mut sandbox = pod_config(&s, "cgroupfs-parent");
    sandbox.linux =
        Some(cri::LinuxPodSandboxConfig { cgroup_parent: "/kubepods/burstable/pod1".into(), ..Default::default() });
    let err = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(sandbox), runtime_handler: String::new() })
        .await
        .expect_err("a cgroupfs parent under the systemd driver");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("not a systemd slice"), "{}", err.message());
}
