//! What a RunPodSandbox or CreateContainer request must satisfy before anything is made for it. Each refusal
//! names the field and the bound, so a client sees what to change; nothing of a refused request exists yet.
//!
//! Most rules are about the request alone. A few ask the node (does this sysctl, hugepage size, host path
//! exist?): those answers are facts a request cannot change, and checking them here turns a failure deep in the
//! launch into an InvalidArgument that names the culprit.

use std::path::{Component, Path};

use k8s_cri::v1 as cri;
use reef_runtime::sysctl::{self, Namespace};

use crate::error::ReefError;

/// Kubernetes' own limits: object names, namespaces and uids are DNS subdomains at most (253 bytes); a label or
/// annotation key is an optional DNS-subdomain prefix and a name of at most 63; all annotations of an object
/// together at most 256 KiB. A label value may be 63 bytes on an object, but kubelet puts object names in CRI
/// labels (`io.kubernetes.pod.name` is the pod's name, up to 253 bytes): a CRI label value is held to that.
const MAX_NAME: usize = 253;
const MAX_KEY_NAME: usize = 63;
const MAX_LABEL_VALUE: usize = MAX_NAME;
const MAX_ANNOTATIONS: usize = 256 * 1024;
/// sethostname(2) takes at most HOST_NAME_MAX bytes.
const MAX_HOSTNAME: usize = 64;
/// Below this a container cannot even be started: its first process is charged for the pages it touches while
/// it sets itself up, and the kernel kills it before it reaches the command. Docker refuses the same bound.
pub const MIN_MEMORY: i64 = 6 << 20;

fn invalid(field: &str, reason: impl std::fmt::Display) -> ReefError {
    ReefError::InvalidArgument(format!("invalid {field}: {reason}"))
}

fn name(field: &str, value: &str) -> Result<(), ReefError> {
    if value.len() > MAX_NAME {
        return Err(invalid(field, format!("{} bytes long, at most {MAX_NAME} allowed", value.len())));
    }
    Ok(())
}

fn key(field: &str, key: &str) -> Result<(), ReefError> {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    if name.is_empty() || name.len() > MAX_KEY_NAME {
        return Err(invalid(field, format!("key {key:?}: the name part must be 1 to {MAX_KEY_NAME} bytes")));
    }
    if prefix.len() > MAX_NAME || (key.contains('/') && prefix.is_empty()) {
        return Err(invalid(field, format!("key {key:?}: the prefix must be 1 to {MAX_NAME} bytes")));
    }
    Ok(())
}

fn labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> Result<(), ReefError> {
    for (k, v) in labels {
        key("labels", k)?;
        if v.len() > MAX_LABEL_VALUE {
            return Err(invalid("labels", format!("value of {k:?} is {} bytes, at most {MAX_LABEL_VALUE}", v.len())));
        }
    }
    Ok(())
}

fn annotations<'a>(annotations: impl IntoIterator<Item = (&'a String, &'a String)>) -> Result<(), ReefError> {
    let mut total = 0;
    for (k, v) in annotations {
        key("annotations", k)?;
        total += k.len() + v.len();
    }
    if total > MAX_ANNOTATIONS {
        return Err(invalid("annotations", format!("{total} bytes in all, at most {MAX_ANNOTATIONS}")));
    }
    Ok(())
}

/// A path made only of names: no root, no `..`, so joined to a directory it stays below it.
fn stays_below(path: &str) -> bool {
    !path.is_empty() && Path::new(path).components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// The namespaces a pod has of its own, as RunPodSandbox makes them: UTS follows the network namespace.
fn private_namespaces(sandbox: &cri::PodSandboxConfig) -> impl Fn(Namespace) -> bool {
    let options = sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default();
    let node = cri::NamespaceMode::Node as i32;
    move |ns| match ns {
        Namespace::Network | Namespace::Uts => options.network != node,
        Namespace::Ipc => options.ipc != node,
    }
}

fn sysctls(sandbox: &cri::PodSandboxConfig) -> Result<(), ReefError> {
    let private = private_namespaces(sandbox);
    let mut keys: Vec<&String> = sandbox.linux.iter().flat_map(|l| l.sysctls.keys()).collect();
    keys.sort();
    for k in keys {
        sysctl::check(k, &private).map_err(|e| invalid("sysctls", e))?;
    }
    Ok(())
}

/// RunPodSandbox.
pub fn pod(config: &cri::PodSandboxConfig) -> Result<(), ReefError> {
    if let Some(meta) = &config.metadata {
        name("metadata.name", &meta.name)?;
        name("metadata.namespace", &meta.namespace)?;
        name("metadata.uid", &meta.uid)?;
    }
    if config.hostname.len() > MAX_HOSTNAME {
        return Err(invalid("hostname", format!("{} bytes long, at most {MAX_HOSTNAME}", config.hostname.len())));
    }
    if !config.log_directory.is_empty() && !config.log_directory.starts_with('/') {
        return Err(invalid("log_directory", format!("{:?} is not absolute", config.log_directory)));
    }
    labels(&config.labels)?;
    annotations(&config.annotations)?;
    // Reef runs no process as the pod's own user, but a client that sends the unchanged id means something
    // wrong, and later code may come to use it: the same bounds as a container's.
    if let Some(sc) = config.linux.as_ref().and_then(|l| l.security_context.as_ref()) {
        for (field, v) in [("run_as_user", &sc.run_as_user), ("run_as_group", &sc.run_as_group)] {
            if let Some(v) = v {
                id(field, v.value)?;
            }
        }
        for g in &sc.supplemental_groups {
            id("supplemental_groups", *g)?;
        }
    }
    let parent = config.linux.as_ref().map(|l| l.cgroup_parent.as_str()).unwrap_or_default();
    if Path::new(parent).components().any(|c| c == Component::ParentDir) {
        return Err(invalid("cgroup_parent", format!("{parent:?} climbs out with '..'")));
    }
    sysctls(config)
}

/// CreateContainer: the container's own config, and the sandbox config it is created with.
pub fn container(config: &cri::ContainerConfig, sandbox: &cri::PodSandboxConfig) -> Result<(), ReefError> {
    if let Some(meta) = &config.metadata {
        name("metadata.name", &meta.name)?;
    }
    labels(&config.labels)?;
    annotations(&config.annotations)?;
    if !config.log_path.is_empty() && !stays_below(&config.log_path) {
        return Err(invalid(
            "log_path",
            format!("{:?} must be relative to the pod's log directory, without '..'", config.log_path),
        ));
    }
    let linux = config.linux.clone().unwrap_or_default();
    security(&linux.security_context.unwrap_or_default())?;
    resources(&linux.resources.unwrap_or_default())?;
    mounts(&config.mounts)?;
    sysctls(sandbox)
}

/// An id the kernel takes for what it says: 0 to 4294967294 (4294967295 is `(uid_t)-1`, "leave unchanged").
fn id(field: &str, value: i64) -> Result<(), ReefError> {
    if !(0..reef_runtime::users::UNCHANGED_ID as i64).contains(&value) {
        return Err(invalid(field, format!("{value} is out of range 0..=4294967294")));
    }
    Ok(())
}

fn security(sc: &cri::LinuxContainerSecurityContext) -> Result<(), ReefError> {
    if let Some(u) = &sc.run_as_user {
        id("run_as_user", u.value)?;
    }
    if let Some(g) = &sc.run_as_group {
        id("run_as_group", g.value)?;
        // A group alone would pair with whatever user the image names, which the pod never asked for.
        if sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
            return Err(invalid("run_as_group", "set without run_as_user or run_as_username"));
        }
    }
    for g in &sc.supplemental_groups {
        id("supplemental_groups", *g)?;
    }
    Ok(())
}

/// A cpuset list: `0-3,8,10-11`.
fn cpuset(field: &str, list: &str) -> Result<(), ReefError> {
    if list.is_empty() {
        return Ok(());
    }
    for part in list.split(',') {
        let (a, b) = part.trim().split_once('-').unwrap_or((part.trim(), part.trim()));
        match (a.parse::<u32>(), b.parse::<u32>()) {
            (Ok(a), Ok(b)) if a <= b => {}
            _ => return Err(invalid(field, format!("{list:?} is not a list like 0-3,8"))),
        }
    }
    Ok(())
}

/// `2MB`, `1GB`, `64KB` → kB, as the kernel names its hugepage sizes.
fn hugepage_kb(size: &str) -> Option<u64> {
    let split = size.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = size.split_at(split);
    let n: u64 = n.parse().ok()?;
    let factor = match unit {
        "KB" | "kB" => 1,
        "MB" => 1 << 10,
        "GB" => 1 << 20,
        _ => return None,
    };
    n.checked_mul(factor)
}

fn resources(r: &cri::LinuxContainerResources) -> Result<(), ReefError> {
    // CRI: 0 means unset, -1 (quota) unlimited.
    if r.cpu_quota < -1 || (0 < r.cpu_quota && r.cpu_quota < 1000) {
        return Err(invalid("cpu_quota", format!("{} µs: -1, 0 or at least 1000 µs", r.cpu_quota)));
    }
    if r.cpu_period != 0 && !(1000..=1_000_000).contains(&r.cpu_period) {
        return Err(invalid("cpu_period", format!("{} µs is outside 1000..=1000000 µs", r.cpu_period)));
    }
    if r.cpu_shares < 0 {
        return Err(invalid("cpu_shares", format!("{} is negative", r.cpu_shares)));
    }
    if r.memory_limit_in_bytes < 0 {
        return Err(invalid("memory_limit_in_bytes", format!("{} is negative", r.memory_limit_in_bytes)));
    }
    if 0 < r.memory_limit_in_bytes && r.memory_limit_in_bytes < MIN_MEMORY {
        return Err(invalid(
            "memory_limit_in_bytes",
            format!(
                "{} bytes is below the {} MiB a container needs to start",
                r.memory_limit_in_bytes,
                MIN_MEMORY >> 20
            ),
        ));
    }
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return Err(invalid("oom_score_adj", format!("{} is outside -1000..=1000", r.oom_score_adj)));
    }
    cpuset("cpuset_cpus", &r.cpuset_cpus)?;
    cpuset("cpuset_mems", &r.cpuset_mems)?;
    for h in &r.hugepage_limits {
        let kb = hugepage_kb(&h.page_size)
            .ok_or_else(|| invalid("hugepage_limits", format!("page size {:?} is not like 2MB or 1GB", h.page_size)))?;
        if !Path::new(&format!("/sys/kernel/mm/hugepages/hugepages-{kb}kB")).is_dir() {
            return Err(invalid("hugepage_limits", format!("this node has no {} hugepages", h.page_size)));
        }
    }
    Ok(())
}

/// Host paths are kubelet's to make (DirectoryOrCreate): the runtime never creates one, so a missing path is the
/// request's mistake, told before anything is mounted.
fn mounts(mounts: &[cri::Mount]) -> Result<(), ReefError> {
    for m in mounts {
        if !m.host_path.is_empty() && !Path::new(&m.host_path).exists() {
            return Err(invalid(
                "mounts",
                format!("host path {:?} (for {:?}) does not exist", m.host_path, m.container_path),
            ));
        }
    }
    Ok(())
}

/// UpdateContainerResources: the same bounds as at creation.
pub fn update(r: &cri::LinuxContainerResources) -> Result<(), ReefError> {
    resources(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(r: Result<(), ReefError>) -> Option<String> {
        r.err().map(|e| e.to_string())
    }

    fn pod_with(f: impl FnOnce(&mut cri::PodSandboxConfig)) -> cri::PodSandboxConfig {
        let mut p = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "p".into(),
                namespace: "ns".into(),
                uid: "u".into(),
                attempt: 0,
            }),
            log_directory: "/var/log/pods/x".into(),
            ..Default::default()
        };
        f(&mut p);
        p
    }

    fn container_with(f: impl FnOnce(&mut cri::ContainerConfig)) -> cri::ContainerConfig {
        let mut c = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: "c".into(), attempt: 0 }),
            log_path: "c/0.log".into(),
            linux: Some(cri::LinuxContainerConfig::default()),
            ..Default::default()
        };
        f(&mut c);
        c
    }

    fn sc(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerSecurityContext {
        c.linux.as_mut().unwrap().security_context.get_or_insert_with(Default::default)
    }

    fn res(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerResources {
        c.linux.as_mut().unwrap().resources.get_or_insert_with(Default::default)
    }

    fn check(f: impl FnOnce(&mut cri::ContainerConfig)) -> Option<String> {
        code(container(&container_with(f), &pod_with(|_| {})))
    }

    #[test]
    fn kubelet_s_ordinary_requests_pass() {
        assert_eq!(code(pod(&pod_with(|_| {}))), None);
        assert_eq!(check(|_| {}), None);
    }

    #[test]
    fn names_and_labels_over_kubernetes_limits_are_refused() {
        let long = "x".repeat(254);
        let err = code(pod(&pod_with(|p| p.metadata.as_mut().unwrap().name = long.clone()))).unwrap();
        assert!(err.contains("metadata.name") && err.contains("254 bytes"), "{err}");
        assert!(code(pod(&pod_with(|p| p.metadata.as_mut().unwrap().uid = long.clone()))).is_some());
        assert!(check(|c| c.metadata.as_mut().unwrap().name = "y".repeat(64 * 1024)).is_some());
        assert!(check(|c| _ = c.labels.insert("k".into(), "v".repeat(254))).unwrap().contains("labels"));
        let long_pod_name = "p".repeat(200);
        assert_eq!(check(|c| _ = c.labels.insert("io.kubernetes.pod.name".into(), long_pod_name.clone())), None);
        assert!(check(|c| _ = c.labels.insert("k".repeat(64), "v".into())).is_some());
        assert_eq!(check(|c| _ = c.labels.insert(format!("{}/k", "d".repeat(253)), "v".into())), None);
        assert!(check(|c| _ = c.annotations.insert("a".into(), "v".repeat(MAX_ANNOTATIONS))).is_some());
        assert_eq!(check(|c| _ = c.annotations.insert("a".into(), "v".repeat(64 * 1024))), None);
        assert!(code(pod(&pod_with(|p| p.hostname = "h".repeat(65)))).unwrap().contains("hostname"));
    }

    #[test]
    fn log_paths_that_climb_out_of_the_pod_s_directory_are_refused() {
        for bad in ["../x.log", "/etc/passwd", "c/../../x.log"] {
            let err = check(|c| c.log_path = bad.into()).unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(err.contains("log_path"), "{err}");
        }
        assert_eq!(check(|c| c.log_path = "./c/1.log".into()), None);
        assert!(code(pod(&pod_with(|p| p.log_directory = "relative".into()))).is_some());
    }

    #[test]
    fn the_unchanged_id_and_a_group_without_a_user_are_refused() {
        let err = check(|c| sc(c).run_as_user = Some(cri::Int64Value { value: 4294967295 })).unwrap();
        assert!(err.contains("run_as_user") && err.contains("4294967295"), "{err}");
        assert!(check(|c| sc(c).run_as_user = Some(cri::Int64Value { value: 1 << 40 })).is_some());
        assert!(check(|c| sc(c).supplemental_groups = vec![1, 4294967295]).is_some());
        let err = check(|c| sc(c).run_as_group = Some(cri::Int64Value { value: 1000 })).unwrap();
        assert!(err.contains("without run_as_user"), "{err}");
        assert_eq!(
            check(|c| {
                sc(c).run_as_user = Some(cri::Int64Value { value: 1000 });
                sc(c).run_as_group = Some(cri::Int64Value { value: 1000 });
            }),
            None
        );
        assert!(
            check(|c| {
                sc(c).run_as_user = Some(cri::Int64Value { value: 0 });
                sc(c).run_as_group = Some(cri::Int64Value { value: 4294967295 });
            })
            .is_some()
        );
    }

    #[test]
    fn nonsensical_resources_name_the_field_and_the_bound() {
        type Tweak = Box<dyn Fn(&mut cri::LinuxContainerResources)>;
        let cases: [(&str, Tweak); 9] = [
            ("cpu_quota", Box::new(|r| r.cpu_quota = -2)),
            ("cpu_quota", Box::new(|r| r.cpu_quota = 999)),
            ("cpu_period", Box::new(|r| r.cpu_period = 999)),
            ("cpu_period", Box::new(|r| r.cpu_period = 1_000_001)),
            ("cpu_shares", Box::new(|r| r.cpu_shares = -1)),
            ("memory_limit_in_bytes", Box::new(|r| r.memory_limit_in_bytes = 1)),
            ("cpuset_cpus", Box::new(|r| r.cpuset_cpus = "0-".into())),
            ("cpuset_mems", Box::new(|r| r.cpuset_mems = "3-1".into())),
            (
                "hugepage_limits",
                Box::new(|r| r.hugepage_limits = vec![cri::HugepageLimit { page_size: "3MB".into(), limit: 1 }]),
            ),
        ];
        for (field, tweak) in cases {
            let err = check(|c| tweak(res(c))).unwrap_or_else(|| panic!("{field} accepted"));
            assert!(err.contains(field), "{err}");
        }
        assert_eq!(
            check(|c| {
                let r = res(c);
                (r.cpu_quota, r.cpu_period, r.cpu_shares) = (-1, 100_000, 2);
                (r.memory_limit_in_bytes, r.cpuset_cpus) = (16 << 20, "0,0-0".into());
            }),
            None
        );
    }

    #[test]
    fn a_missing_host_path_is_named() {
        let err = check(|c| {
            c.mounts.push(cri::Mount {
                container_path: "/data".into(),
                host_path: "/nonexistent/reef-test".into(),
                ..Default::default()
            })
        })
        .unwrap();
        assert!(err.contains("/nonexistent/reef-test"), "{err}");
    }

    #[test]
    fn sysctls_must_be_namespaced_in_a_namespace_of_the_pod_s_own() {
        let with = |k: &str, network: cri::NamespaceMode| {
            pod_with(|p| {
                p.linux = Some(cri::LinuxPodSandboxConfig {
                    sysctls: [(k.to_string(), "1".to_string())].into(),
                    security_context: Some(cri::LinuxSandboxSecurityContext {
                        namespace_options: Some(cri::NamespaceOption { network: network as i32, ..Default::default() }),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            })
        };
        assert_eq!(code(pod(&with("net.ipv4.ip_unprivileged_port_start", cri::NamespaceMode::Pod))), None);
        let err = code(pod(&with("net.ipv4.ip_forward", cri::NamespaceMode::Node))).unwrap();
        assert!(err.contains("net.ipv4.ip_forward") && err.contains("network"), "{err}");
        assert!(code(pod(&with("kernel.panic", cri::NamespaceMode::Pod))).unwrap().contains("not namespaced"));
        assert!(code(pod(&with("net.ipv4.nope", cri::NamespaceMode::Pod))).unwrap().contains("does not exist"));
        assert!(code(pod(&with("kernel.shm_rmid_forced", cri::NamespaceMode::Pod))).is_none());
    }

    #[test]
    fn a_pod_s_own_ids_are_held_to_the_same_bounds() {
        let err = code(pod(&pod_with(|p| {
            p.linux = Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    run_as_user: Some(cri::Int64Value { value: 4294967295 }),
                    ..Default::default()
                }),
                ..Default::default()
            })
        })))
        .unwrap();
        assert!(err.contains("run_as_user"), "{err}");
    }

    #[test]
    fn cgroup_parents_stay_below_the_hierarchy() {
        let err = code(pod(&pod_with(|p| {
            p.linux =
                Some(cri::LinuxPodSandboxConfig { cgroup_parent: "/kubepods/../../x".into(), ..Default::default() })
        })))
        .unwrap();
        assert!(err.contains("cgroup_parent"), "{err}");
    }
}
