//! CRI ContainerConfig + PodSandboxConfig + image config → OCI runtime spec.
//!
//! Every CRI concern is one small function that edits the spec (`process::with_args`, `security::with_capabilities`,
//! …), and `build` lists them in the order precedence needs: defaults, then the process, then mounts, then
//! security, then privileged overrides. The functions are pure: no filesystem, no clock, so each rule has a test.

pub mod devices;
mod mounts;
mod namespaces;
mod process;
mod resources;
pub mod seccomp;
pub mod security;

use std::path::PathBuf;

use k8s_cri::v1 as cri;
use reef_images::manifest::ContainerConfig as ImageConfig;
use reef_runtime::oci_spec::runtime::Spec;

pub use namespaces::{PodNamespaces, user_namespace};
pub use process::{stop_signal, user_request};
pub use resources::{cgroup_path, pod_slice};

/// The OCI form of CRI resources, for UpdateContainerResources.
pub fn resources_for_update(
    r: &cri::LinuxContainerResources,
) -> Result<reef_runtime::oci_spec::runtime::LinuxResources, SpecError> {
    resources::to_oci(r, false)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("no command to run: neither the container nor its image names one")]
    NoCommand,
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// Well-formed, but not something this runtime can do.
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    AppArmor(#[from] reef_runtime::apparmor::AppArmorError),
}

/// Everything `build` reads. A struct, not a list of parameters: the inputs keep growing.
pub struct SpecInput<'a> {
    pub container: &'a cri::ContainerConfig,
    pub sandbox: &'a cri::PodSandboxConfig,
    pub image: &'a ImageConfig,
    /// The pod's pinned namespaces, joined according to the NamespaceOption modes.
    pub pod: &'a PodNamespaces,
    /// The container's root filesystem (the mounted overlay).
    pub rootfs: PathBuf,
    /// The container's cgroup, relative to each hierarchy's root.
    pub cgroup_path: String,
    /// Who the process runs as, resolved against the image's /etc/passwd and /etc/group (`user_request`).
    pub user: &'a reef_runtime::users::ResolvedUser,
    /// The node's devices to map in, looked up by the caller.
    pub devices: &'a [devices::HostDevice],
    /// The capabilities the runtime holds (`CAP_*`), which bound what privileged can mean; empty: all.
    pub available_capabilities: &'a [String],
    /// The seccomp filter (`seccomp::filter`, which reads a Localhost profile).
    pub seccomp: &'a seccomp::Filter,
    /// The AppArmor profile (`security::apparmor_profile`, which asks the node's kernel); None: unconfined.
    pub apparmor: Option<&'a str>,
}

pub fn build(input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    let mut spec = Spec::default();
    let security = input.container.linux.as_ref().and_then(|l| l.security_context.clone()).unwrap_or_default();
    spec.set_root(Some(
        reef_runtime::oci_spec::runtime::RootBuilder::default()
            .path(input.rootfs.clone())
            .readonly(security.readonly_rootfs)
            .build()
            .map_err(|e| SpecError::Invalid { field: "root", reason: e.to_string() })?,
    ));
    spec.set_hostname(Some(input.sandbox.hostname.clone()).filter(|h| !h.is_empty()));
    process::with_args(&mut spec, input.container, input.image)?;
    process::with_env(&mut spec, input.container, input.image);
    process::with_cwd(&mut spec, input.container, input.image);
    process::with_tty(&mut spec, input.container);
    process::with_user(&mut spec, input.user);
    mounts::with_mounts(&mut spec, &input.container.mounts, security.privileged)?;
    namespaces::with_namespaces(&mut spec, &security, input.pod);
    security::with_capabilities(&mut spec, &security, input.available_capabilities)?;
    security::with_paths(&mut spec, &security);
    security::with_no_new_privs(&mut spec, &security);
    security::with_apparmor(&mut spec, input.apparmor);
    // Always: the device rules come with the resources, whether kubelet set any limit or not.
    let requested = input.container.linux.as_ref().and_then(|l| l.resources.clone()).unwrap_or_default();
    resources::with_resources(&mut spec, &requested, security.privileged)?;
    devices::with_devices(&mut spec, input.devices)?;
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(Some(input.cgroup_path.clone().into()));
    }
    resources::with_sysctls(&mut spec, &input.sandbox.linux.as_ref().map(|l| l.sysctls.clone()).unwrap_or_default());
    let mut annotations = input.container.annotations.clone().into_iter().collect::<std::collections::HashMap<_, _>>();
    annotations.insert("io.kubernetes.cri.container-type".into(), "container".into());
    spec.set_annotations(Some(annotations));
    seccomp::with_seccomp(&mut spec, input.seccomp);
    Ok(spec)
}

#[cfg(test)]
pub(crate) mod fixture {
    use super::*;

    /// A container, a sandbox and an image as kubelet would send them; each test changes one thing.
    pub fn input_parts() -> (cri::ContainerConfig, cri::PodSandboxConfig, ImageConfig, PodNamespaces) {
        let container = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: "app".into(), attempt: 0 }),
            image: Some(cri::ImageSpec { image: "busybox".into(), ..Default::default() }),
            envs: vec![cri::KeyValue { key: "FOO".into(), value: "container".into() }],
            linux: Some(cri::LinuxContainerConfig { security_context: Some(Default::default()), ..Default::default() }),
            ..Default::default()
        };
        let sandbox = cri::PodSandboxConfig { hostname: "pod-host".into(), ..Default::default() };
        let image = ImageConfig {
            env: Some(vec!["PATH=/usr/bin:/bin".into(), "FOO=image".into()]),
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["default-arg".into()]),
            working_dir: Some("/srv".into()),
            ..Default::default()
        };
        let pod = PodNamespaces {
            network: Some("/run/reef/pods/p/ns/net".into()),
            ipc: Some("/run/reef/pods/p/ns/ipc".into()),
            uts: Some("/run/reef/pods/p/ns/uts".into()),
            pid: Some("/proc/42/ns/pid".into()),
            user: None,
        };
        (container, sandbox, image, pod)
    }

    pub fn build_with(
        tweak: impl FnOnce(&mut cri::ContainerConfig, &mut cri::PodSandboxConfig, &mut ImageConfig),
    ) -> Result<Spec, SpecError> {
        build_full(tweak, &seccomp::Filter::Unconfined)
    }

    pub fn build_with_seccomp(filter: &seccomp::Filter) -> Result<Spec, SpecError> {
        build_full(|_, _, _| {}, filter)
    }

    fn build_full(
        tweak: impl FnOnce(&mut cri::ContainerConfig, &mut cri::PodSandboxConfig, &mut ImageConfig),
        filter: &seccomp::Filter,
    ) -> Result<Spec, SpecError> {
        let (mut c, mut s, mut i, pod) = input_parts();
        tweak(&mut c, &mut s, &mut i);
        build(&SpecInput {
            container: &c,
            sandbox: &s,
            image: &i,
            pod: &pod,
            rootfs: "/run/reef/c/rootfs".into(),
            cgroup_path: "kubepods/pod1/reef-c".into(),
            user: &Default::default(),
            available_capabilities: &[],
            devices: &[],
            seccomp: filter,
            apparmor: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::build_with;

    #[test]
    fn the_default_container_gets_the_pod_hostname_and_kubelet_annotations() {
        let spec = build_with(|_, _, _| {}).unwrap();
        assert_eq!(spec.hostname().as_deref(), Some("pod-host"));
        assert_eq!(spec.root().as_ref().unwrap().path().to_str(), Some("/run/reef/c/rootfs"));
        assert_eq!(spec.annotations().as_ref().unwrap()["io.kubernetes.cri.container-type"], "container");
    }

    #[test]
    fn a_read_only_rootfs_is_marked_on_the_root() {
        let spec = build_with(|c, _, _| {
            c.linux.as_mut().unwrap().security_context.as_mut().unwrap().readonly_rootfs = true;
        })
        .unwrap();
        assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    }
}
