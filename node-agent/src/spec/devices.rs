//! Devices the CRI maps into a container: a node in its /dev and a device cgroup rule allowing what kubelet says.

use reef_runtime::oci_spec::runtime::{LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, Spec};

use super::SpecError;

/// A device on the node, looked up by the caller (`stat` of the host path), to appear at `container_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    pub container_path: String,
    pub block: bool,
    pub major: i64,
    pub minor: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Device cgroup access: some of `r`, `w`, `m`.
    pub permissions: String,
}

fn invalid(reason: String) -> SpecError {
    SpecError::Invalid { field: "devices", reason }
}

/// Adds the nodes and their cgroup rules. After `resources::with_resources`, whose deny-all rule must come first.
pub fn with_devices(spec: &mut Spec, devices: &[HostDevice]) -> Result<(), SpecError> {
    let Some(linux) = spec.linux_mut() else { return Ok(()) };
    let mut nodes = linux.devices().clone().unwrap_or_default();
    let mut rules = linux.resources().as_ref().and_then(|r| r.devices().clone()).unwrap_or_default();
    for d in devices {
        if !d.container_path.starts_with('/') {
            return Err(invalid(format!("container path {:?} is not absolute", d.container_path)));
        }
        let permissions = if d.permissions.is_empty() { "rwm".to_string() } else { d.permissions.clone() };
        if !permissions.chars().all(|c| "rwm".contains(c)) {
            return Err(invalid(format!("permissions {permissions:?} are not made of r, w and m")));
        }
        let typ = if d.block { LinuxDeviceType::B } else { LinuxDeviceType::C };
        nodes.push(
            LinuxDeviceBuilder::default()
                .path(d.container_path.clone())
                .typ(typ)
                .major(d.major)
                .minor(d.minor)
                .file_mode(d.mode)
                .uid(d.uid)
                .gid(d.gid)
                .build()
                .map_err(|e| invalid(e.to_string()))?,
        );
        rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(typ)
                .major(d.major)
                .minor(d.minor)
                .access(permissions)
                .build()
                .map_err(|e| invalid(e.to_string()))?,
        );
    }
    linux.set_devices(Some(nodes).filter(|n| !n.is_empty()));
    if let Some(resources) = linux.resources_mut() {
        resources.set_devices(Some(rules));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::fixture::build_with;

    fn null_at(path: &str, permissions: &str) -> HostDevice {
        HostDevice {
            container_path: path.into(),
            block: false,
            major: 1,
            minor: 3,
            mode: 0o666,
            uid: 0,
            gid: 0,
            permissions: permissions.into(),
        }
    }

    #[test]
    fn a_device_gets_a_node_and_a_rule_after_the_default_deny() {
        let mut spec = build_with(|_, _, _| {}).unwrap();
        with_devices(&mut spec, &[null_at("/dev/mynull", "rw")]).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(linux.devices().as_ref().unwrap()[0].path().to_str(), Some("/dev/mynull"));
        let rules = linux.resources().as_ref().unwrap().devices().clone().unwrap();
        assert!(!rules[0].allow(), "deny-all first");
        let last = rules.last().unwrap();
        assert_eq!((last.major(), last.minor(), last.access().as_deref()), (Some(1), Some(3), Some("rw")));
    }

    #[test]
    fn bad_paths_and_permissions_are_refused() {
        let mut spec = build_with(|_, _, _| {}).unwrap();
        assert!(with_devices(&mut spec, &[null_at("dev/x", "rw")]).is_err());
        assert!(with_devices(&mut spec, &[null_at("/dev/x", "rwx")]).is_err());
    }
}
