//! What the fuzz targets share: the input of `cri_spec` and the invariants a launch plan must keep.

use k8s_cri::v1 as cri;
use reef_runtime::launch::LaunchPlan;

/// One `cri_spec` input: a CreateContainerRequest as kubelet sends it, plus what the node would have found for it
/// (the image's config blob and its /etc/passwd and /etc/group, a Localhost seccomp profile's bytes), all
/// untrusted. Protobuf, so seeds are readable requests (fuzz/seeds.py writes them) and mutations stay near them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SpecCase {
    #[prost(message, optional, tag = "1")]
    pub request: Option<cri::CreateContainerRequest>,
    /// The OCI image config JSON, as the store holds it.
    #[prost(bytes = "vec", tag = "2")]
    pub image_config: Vec<u8>,
    #[prost(string, tag = "3")]
    pub passwd: String,
    #[prost(string, tag = "4")]
    pub group: String,
    #[prost(bytes = "vec", tag = "5")]
    pub seccomp_profile: Vec<u8>,
    #[prost(bool, tag = "6")]
    pub systemd_cgroups: bool,
    #[prost(bool, tag = "7")]
    pub pod_user_namespace: bool,
}

/// A path with a `..` component: inside a plan it can only mean climbing out of where it was meant to stay.
pub fn climbs(path: &str) -> bool {
    path.split('/').any(|c| c == "..")
}

/// What no plan may hold, whatever the request: ids the kernel reads as "leave unchanged" (`(uid_t)-1` keeps
/// the launcher's root), and paths that climb out of the rootfs, the host directory or the cgroup hierarchy.
pub fn check_plan(plan: &LaunchPlan) {
    assert_ne!(plan.uid, u32::MAX, "uid -1 in a plan");
    assert_ne!(plan.gid, u32::MAX, "gid -1 in a plan");
    assert!(!plan.additional_gids.contains(&u32::MAX), "gid -1 in a plan's groups: {:?}", plan.additional_gids);
    for m in &plan.mounts {
        assert!(!climbs(&m.destination), "mount destination {:?} climbs out", m.destination);
        assert!(!climbs(&m.source), "mount source {:?} climbs out", m.source);
        assert!(m.destination.starts_with('/'), "mount destination {:?} is relative", m.destination);
    }
    for p in plan.masked_paths.iter().chain(&plan.readonly_paths) {
        assert!(!climbs(p), "masked or read-only path {p:?} climbs out");
    }
    if let Some(cgroup) = &plan.cgroup {
        assert!(!climbs(&cgroup.path), "cgroup path {:?} climbs out", cgroup.path);
    }
    for d in &plan.devices {
        assert!(!climbs(&d.path), "device path {:?} climbs out", d.path);
    }
}
