//! CPU, memory, pids-free resource limits and sysctls, from the CRI's LinuxContainerResources.

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use reef_runtime::oci_spec::runtime::{
    LinuxCpuBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxHugepageLimitBuilder,
    LinuxMemoryBuilder, LinuxResources, LinuxResourcesBuilder, Spec,
};

use super::SpecError;

fn invalid(reason: impl Into<String>) -> SpecError {
    SpecError::Invalid { field: "resources", reason: reason.into() }
}

fn device(
    allow: bool,
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> Result<LinuxDeviceCgroup, SpecError> {
    let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).typ(typ).access(access);
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build().map_err(|e| invalid(e.to_string()))
}

/// The device cgroup: nothing but the standard character devices (and creating nodes, which opening still
/// needs the rules for), as containerd and runc allow. Without it, CAP_MKNOD would open the host's disks.
/// Privileged containers get every device.
fn devices(privileged: bool) -> Result<Vec<LinuxDeviceCgroup>, SpecError> {
    use LinuxDeviceType::{A, B, C};
    if privileged {
        return Ok(vec![device(true, A, None, None, "rwm")?]);
    }
    let mut rules = vec![
        device(false, A, None, None, "rwm")?,
        device(true, C, None, None, "m")?,
        device(true, B, None, None, "m")?,
    ];
    for (major, minor) in [
        (1, Some(3)),
        (1, Some(5)),
        (1, Some(7)),
        (1, Some(8)),
        (1, Some(9)),
        (5, Some(0)),
        (5, Some(1)),
        (5, Some(2)),
        (136, None),
    ] {
        rules.push(device(true, C, Some(major), minor, "rwm")?);
    }
    Ok(rules)
}

pub fn to_oci(r: &cri::LinuxContainerResources, privileged: bool) -> Result<LinuxResources, SpecError> {
    let mut cpu = LinuxCpuBuilder::default();
    if r.cpu_shares > 0 {
        cpu = cpu.shares(r.cpu_shares as u64);
    }
    if r.cpu_quota != 0 {
        cpu = cpu.quota(r.cpu_quota);
    }
    if r.cpu_period > 0 {
        cpu = cpu.period(r.cpu_period as u64);
    }
    if !r.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(r.cpuset_cpus.clone());
    }
    if !r.cpuset_mems.is_empty() {
        cpu = cpu.mems(r.cpuset_mems.clone());
    }
    let mut memory = LinuxMemoryBuilder::default();
    if r.memory_limit_in_bytes < 0 {
        return Err(invalid(format!("memory limit {} is negative", r.memory_limit_in_bytes)));
    }
    if r.memory_limit_in_bytes > 0 {
        memory = memory.limit(r.memory_limit_in_bytes);
    }
    if r.memory_swap_limit_in_bytes > 0 {
        if r.memory_swap_limit_in_bytes < r.memory_limit_in_bytes {
            return Err(invalid("memory+swap limit is below the memory limit"));
        }
        memory = memory.swap(r.memory_swap_limit_in_bytes);
    }
    let hugepages = r
        .hugepage_limits
        .iter()
        .map(|h| LinuxHugepageLimitBuilder::default().page_size(h.page_size.clone()).limit(h.limit as i64).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(e.to_string()))?;
    let mut b = LinuxResourcesBuilder::default()
        .cpu(cpu.build().map_err(|e| invalid(e.to_string()))?)
        .memory(memory.build().map_err(|e| invalid(e.to_string()))?)
        .devices(devices(privileged)?);
    // Empty lists stay absent: a host without the hugetlb hierarchy must not fail containers that ask nothing of it.
    if !hugepages.is_empty() {
        b = b.hugepage_limits(hugepages);
    }
    if !r.unified.is_empty() {
        b = b.unified(r.unified.clone().into_iter().collect::<HashMap<_, _>>());
    }
    b.build().map_err(|e| invalid(e.to_string()))
}

pub fn with_resources(spec: &mut Spec, r: &cri::LinuxContainerResources, privileged: bool) -> Result<(), SpecError> {
    let resources = to_oci(r, privileged)?;
    if let Some(linux) = spec.linux_mut() {
        linux.set_resources(Some(resources));
    }
    if let Some(p) = spec.process_mut() {
        // This host refuses to lower oom_score_adj (no CAP_SYS_RESOURCE); the runtime clamps, the spec keeps the ask.
        p.set_oom_score_adj(Some(r.oom_score_adj as i32));
    }
    Ok(())
}

pub fn with_sysctls(spec: &mut Spec, sysctls: &HashMap<String, String>) {
    if sysctls.is_empty() {
        return;
    }
    if let Some(linux) = spec.linux_mut() {
        linux.set_sysctl(Some(sysctls.clone()));
    }
}

/// The container's cgroup, in the form of kubelet's cgroup driver. cgroupfs: a path under the pod's parent, or the
/// configured one (`reef/`) for pods without one, as docker's containers share `docker/`. systemd: runc's
/// `<slice>:reef:<id>`, a scope of the container's own under the pod's slice (`pod_slice`), else the configured
/// parent's when it names one, else `system.slice`.
pub fn cgroup_path(systemd: bool, parent: &str, default: &str, id: &str) -> Result<String, SpecError> {
    if systemd {
        let slice = match pod_slice(parent)? {
            Some(slice) => slice,
            None => pod_slice(default).ok().flatten().unwrap_or("system.slice"),
        };
        return Ok(format!("{slice}:reef:{id}"));
    }
    let parent = parent.trim_matches('/');
    let parent = if parent.is_empty() { default.trim_matches('/') } else { parent };
    Ok(format!("{parent}/reef-{id}"))
}

/// The slice a pod's cgroup parent names under the systemd driver; `None` for no parent.
///
/// kubelet sends its slices as a path (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`,
/// systemd's own expansion of the last name), critest a bare `/test.slice`: as containerd and CRI-O do, the last
/// element is the slice, and systemd places it where its name says. The rest of the path is not checked against
/// that expansion, as neither of them checks it; a last element that is no slice name (a cgroupfs path, from a
/// kubelet whose driver is cgroupfs) is refused, rather than the container quietly put elsewhere.
pub fn pod_slice(parent: &str) -> Result<Option<&str>, SpecError> {
    let parent = parent.trim_end_matches('/');
    if parent.is_empty() {
        return Ok(None);
    }
    let last = parent.rsplit('/').next().unwrap_or(parent);
    if reef_runtime::cgroups::is_slice_name(last) {
        return Ok(Some(last));
    }
    Err(SpecError::Invalid {
        field: "cgroup_parent",
        reason: format!(
            "{parent:?} is not a systemd slice (the systemd cgroup driver wants a name like kubepods-pod1.slice, \
             or a path ending in one)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1 as cri;

    use crate::spec::SpecError;
    use crate::spec::fixture::build_with;

    fn with(r: cri::LinuxContainerResources) -> Result<reef_runtime::oci_spec::runtime::Spec, SpecError> {
        build_with(move |c, _, _| c.linux.as_mut().unwrap().resources = Some(r))
    }

    #[test]
    fn cpu_and_memory_limits_map_one_to_one() {
        let spec = with(cri::LinuxContainerResources {
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 128 << 20,
            cpuset_cpus: "0".into(),
            oom_score_adj: 1000,
            ..Default::default()
        })
        .unwrap();
        let r = spec.linux().as_ref().unwrap().resources().clone().unwrap();
        let cpu = r.cpu().clone().unwrap();
        assert_eq!((cpu.shares(), cpu.quota(), cpu.period()), (Some(512), Some(50_000), Some(100_000)));
        assert_eq!(cpu.cpus().as_deref(), Some("0"));
        let mem = (*r.memory()).unwrap();
        assert_eq!((mem.limit(), mem.swap()), (Some(64 << 20), Some(128 << 20)));
        assert_eq!(spec.process().as_ref().unwrap().oom_score_adj(), Some(1000));
    }

    #[test]
    fn devices_are_denied_but_the_standard_ones_unless_privileged() {
        let spec = build_with(|_, _, _| {}).unwrap();
        let rules = spec.linux().as_ref().unwrap().resources().clone().unwrap().devices().clone().unwrap();
        assert!(!rules[0].allow(), "deny first");
        assert!(rules.iter().any(|d| d.allow() && d.major() == Some(1) && d.minor() == Some(3)), "/dev/null");
        assert!(!rules.iter().any(|d| d.allow() && d.major().is_none() && d.access().as_deref() == Some("rwm")));
        let privileged =
            build_with(|c, _, _| c.linux.as_mut().unwrap().security_context.as_mut().unwrap().privileged = true)
                .unwrap();
        let rules = privileged.linux().as_ref().unwrap().resources().clone().unwrap().devices().clone().unwrap();
        assert!(rules[0].allow());
    }

    #[test]
    fn impossible_memory_settings_are_invalid() {
        let err = with(cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            memory_swap_limit_in_bytes: 1 << 20,
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, SpecError::Invalid { field: "resources", .. }));
        assert!(with(cri::LinuxContainerResources { memory_limit_in_bytes: -5, ..Default::default() }).is_err());
    }

    #[test]
    fn pod_sysctls_reach_the_spec() {
        let spec = build_with(|_, s, _| {
            s.linux = Some(cri::LinuxPodSandboxConfig {
                sysctls: [("net.ipv4.ip_unprivileged_port_start".to_string(), "0".to_string())].into(),
                ..Default::default()
            })
        })
        .unwrap();
        assert_eq!(
            spec.linux().as_ref().unwrap().sysctl().as_ref().unwrap()["net.ipv4.ip_unprivileged_port_start"],
            "0"
        );
    }

    #[test]
    fn container_cgroups_go_under_the_pod_s_parent_in_either_driver_s_form() {
        use super::cgroup_path;
        let path = |systemd, parent, default| cgroup_path(systemd, parent, default, "c1").unwrap();
        assert_eq!(path(false, "/kubepods/besteffort/pod1/", "reef"), "kubepods/besteffort/pod1/reef-c1");
        assert_eq!(path(false, "", "reef"), "reef/reef-c1");
        assert_eq!(path(true, "kubepods-pod1.slice", "reef"), "kubepods-pod1.slice:reef:c1");
        assert_eq!(path(true, "", "reef.slice"), "reef.slice:reef:c1");
        assert_eq!(path(true, "", "reef"), "system.slice:reef:c1");
    }

    #[test]
    fn a_systemd_cgroup_parent_given_as_a_path_names_its_last_slice() {
        use super::{cgroup_path, pod_slice};
        let kubelet = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b.slice";
        assert_eq!(cgroup_path(true, kubelet, "reef", "c1").unwrap(), "kubepods-burstable-pod0a1b.slice:reef:c1");
        assert_eq!(cgroup_path(true, "/test.slice", "reef", "c1").unwrap(), "test.slice:reef:c1");
        assert_eq!(cgroup_path(true, "/test.slice/", "reef", "c1").unwrap(), "test.slice:reef:c1");
        assert_eq!(cgroup_path(true, "", "/reef.slice", "c1").unwrap(), "reef.slice:reef:c1");
        assert_eq!(pod_slice("").unwrap(), None);
        for bad in ["/kubepods/burstable/pod1", "kubepods", "/a.slice/.slice", "/x/a--b.slice", "/x/-a.slice"] {
            let err = pod_slice(bad).unwrap_err().to_string();
            assert!(err.contains("not a systemd slice"), "{bad}: {err}");
        }
    }
}
