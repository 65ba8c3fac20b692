//! The container's mounts: the standard kernel filesystems, then the CRI's host mounts ordered parents first.

use k8s_cri::v1 as cri;
use reef_runtime::oci_spec::runtime::{Mount, MountBuilder, Spec};

use super::SpecError;

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(|e| SpecError::Invalid { field: "mounts", reason: e.to_string() })
}

/// What every container gets (containerd's defaults). Privileged containers get /sys and cgroups writable.
fn defaults(privileged: bool) -> Result<Vec<Mount>, SpecError> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        )?,
        mount("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"])?,
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        mount("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", sys_mode])?,
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &["nosuid", "noexec", "nodev", "relatime", sys_mode])?,
    ])
}

fn depth(path: &str) -> usize {
    path.split('/').filter(|c| !c.is_empty()).count()
}

pub fn with_mounts(spec: &mut Spec, cri_mounts: &[cri::Mount], privileged: bool) -> Result<(), SpecError> {
    let mut user: Vec<&cri::Mount> = cri_mounts.iter().collect();
    for m in &user {
        if !m.container_path.starts_with('/') {
            return Err(SpecError::Invalid {
                field: "mounts",
                reason: format!("container path {:?} is not absolute", m.container_path),
            });
        }
        if m.host_path.is_empty() {
            return Err(SpecError::Invalid {
                field: "mounts",
                reason: format!("mount at {:?} has no host path", m.container_path),
            });
        }
    }
    // Parents before children, or a later parent mount would hide its child (stable, so equal depths keep
    // kubelet's order).
    user.sort_by_key(|m| depth(&m.container_path));
    let mut mounts: Vec<Mount> = defaults(privileged)?
        .into_iter()
        .filter(|d| !user.iter().any(|u| d.destination().to_str() == Some(u.container_path.trim_end_matches('/'))))
        .collect();
    for m in user {
        let propagation =
            match cri::MountPropagation::try_from(m.propagation).unwrap_or(cri::MountPropagation::PropagationPrivate) {
                cri::MountPropagation::PropagationPrivate => "rprivate",
                cri::MountPropagation::PropagationHostToContainer => "rslave",
                cri::MountPropagation::PropagationBidirectional => "rshared",
            };
        if m.recursive_read_only && (!m.readonly || propagation != "rprivate") {
            // kubelet's own rule: submounts can only be made read-only for a private, read-only mount.
            return Err(SpecError::Invalid {
                field: "mounts",
                reason: format!(
                    "recursive read-only mount at {:?} must be read-only with private propagation",
                    m.container_path
                ),
            });
        }
        let rw = if m.recursive_read_only {
            "rro"
        } else if m.readonly {
            "ro"
        } else {
            "rw"
        };
        mounts.push(mount(&m.container_path, "bind", &m.host_path, &["rbind", propagation, rw])?);
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1 as cri;

    use crate::spec::SpecError;
    use crate::spec::fixture::build_with;

    fn host(container: &str, host: &str, readonly: bool, propagation: cri::MountPropagation) -> cri::Mount {
        cri::Mount {
            container_path: container.into(),
            host_path: host.into(),
            readonly,
            propagation: propagation as i32,
            ..Default::default()
        }
    }

    #[test]
    fn host_mounts_come_after_defaults_parents_first_with_their_options() {
        let spec = build_with(|c, _, _| {
            c.mounts = vec![
                host("/data/sub", "/h/sub", true, cri::MountPropagation::PropagationHostToContainer),
                host("/data", "/h/data", false, cri::MountPropagation::PropagationBidirectional),
                host("/dev/shm", "/run/pod/shm", false, cri::MountPropagation::PropagationPrivate),
            ]
        })
        .unwrap();
        let mounts = spec.mounts().clone().unwrap();
        let dests: Vec<String> = mounts.iter().map(|m| m.destination().display().to_string()).collect();
        assert_eq!(
            dests,
            ["/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/data", "/data/sub", "/dev/shm"]
        );
        let sub = mounts.iter().find(|m| m.destination().to_str() == Some("/data/sub")).unwrap();
        assert_eq!(sub.options().clone().unwrap(), ["rbind", "rslave", "ro"]);
        let data = mounts.iter().find(|m| m.destination().to_str() == Some("/data")).unwrap();
        assert_eq!(data.options().clone().unwrap(), ["rbind", "rshared", "rw"]);
    }

    #[test]
    fn sys_is_read_only_unless_privileged() {
        let opts = |privileged: bool| {
            let spec = build_with(|c, _, _| {
                c.linux.as_mut().unwrap().security_context.as_mut().unwrap().privileged = privileged
            })
            .unwrap();
            let mounts = spec.mounts().clone().unwrap();
            mounts.iter().find(|m| m.destination().to_str() == Some("/sys")).unwrap().options().clone().unwrap()
        };
        assert!(opts(false).contains(&"ro".to_string()));
        assert!(opts(true).contains(&"rw".to_string()));
    }

    #[test]
    fn relative_or_sourceless_mounts_are_invalid() {
        let err =
            build_with(|c, _, _| c.mounts = vec![host("data", "/h", false, cri::MountPropagation::PropagationPrivate)])
                .unwrap_err();
        assert!(matches!(err, SpecError::Invalid { field: "mounts", .. }));
        let err =
            build_with(|c, _, _| c.mounts = vec![host("/data", "", false, cri::MountPropagation::PropagationPrivate)])
                .unwrap_err();
        assert!(matches!(err, SpecError::Invalid { field: "mounts", .. }));
    }
}
