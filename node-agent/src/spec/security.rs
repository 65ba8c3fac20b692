//! Capabilities, masked and read-only paths, no_new_privs: the default confinement and its CRI overrides.

use std::collections::HashSet;
use std::str::FromStr;

use k8s_cri::v1 as cri;
use reef_runtime::oci_spec::runtime::{Capabilities, Capability, LinuxCapabilitiesBuilder, Spec};

use super::SpecError;

/// What a container gets without asking (containerd's and docker's default set).
const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

const ALL_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

fn parse(name: &str) -> Result<Capability, SpecError> {
    let bare = name.trim().to_ascii_uppercase();
    let bare = bare.strip_prefix("CAP_").unwrap_or(&bare);
    Capability::from_str(bare)
        .map_err(|_| SpecError::Invalid { field: "capabilities", reason: format!("unknown capability {name:?}") })
}

fn set(names: &[&str]) -> Capabilities {
    names.iter().filter_map(|n| parse(n).ok()).collect()
}

/// Privileged: everything. Otherwise the default set; "ALL" in add grants every capability, "ALL" in drop
/// starts from none; then the named additions, then the named drops. "Everything" is every capability the runtime
/// itself holds (`available`, names like `CAP_CHOWN`; empty means all): a host may withhold some even from root.
pub fn with_capabilities(
    spec: &mut Spec,
    sc: &cri::LinuxContainerSecurityContext,
    available: &[String],
) -> Result<(), SpecError> {
    let requested = sc.capabilities.clone().unwrap_or_default();
    let is_all = |v: &[String]| v.iter().any(|c| c.eq_ignore_ascii_case("ALL"));
    let mut caps: HashSet<Capability> = if sc.privileged || is_all(&requested.add_capabilities) {
        let everything = set(ALL_CAPS);
        if available.is_empty() {
            everything
        } else {
            let held: HashSet<Capability> = available.iter().filter_map(|n| parse(n).ok()).collect();
            everything.intersection(&held).copied().collect()
        }
    } else if is_all(&requested.drop_capabilities) {
        HashSet::new()
    } else {
        set(DEFAULT_CAPS)
    };
    if !sc.privileged {
        for c in requested.add_capabilities.iter().filter(|c| !c.eq_ignore_ascii_case("ALL")) {
            caps.insert(parse(c)?);
        }
        for c in requested.drop_capabilities.iter().filter(|c| !c.eq_ignore_ascii_case("ALL")) {
            caps.remove(&parse(c)?);
        }
    }
    let linux_caps = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()
        .map_err(|e| SpecError::Invalid { field: "capabilities", reason: e.to_string() })?;
    spec.process_mut().get_or_insert_with(Default::default).set_capabilities(Some(linux_caps));
    Ok(())
}

/// The defaults hide host information in /proc and /sys; kubelet may replace the lists (procMount: Unmasked sends
/// empty ones), and privileged containers see everything.
pub fn with_paths(spec: &mut Spec, sc: &cri::LinuxContainerSecurityContext) {
    let Some(linux) = spec.linux_mut() else { return };
    if sc.privileged {
        linux.set_masked_paths(Some(vec![]));
        linux.set_readonly_paths(Some(vec![]));
        return;
    }
    if !sc.masked_paths.is_empty() {
        linux.set_masked_paths(Some(sc.masked_paths.clone()));
    }
    if !sc.readonly_paths.is_empty() {
        linux.set_readonly_paths(Some(sc.readonly_paths.clone()));
    }
}

pub fn with_no_new_privs(spec: &mut Spec, sc: &cri::LinuxContainerSecurityContext) {
    spec.process_mut().get_or_insert_with(Default::default).set_no_new_privileges(Some(sc.no_new_privs));
}

/// AppArmor: Reef loads no profile, so a Localhost profile (a named profile the pod relies on) is refused, and
/// RuntimeDefault and Unconfined run without one (this node's kernel may not have AppArmor at all).
pub fn check_apparmor(sc: &cri::LinuxContainerSecurityContext) -> Result<(), SpecError> {
    #[allow(deprecated)]
    let legacy = sc.apparmor_profile.starts_with("localhost/");
    let localhost =
        sc.apparmor.as_ref().is_some_and(|p| p.profile_type == cri::security_profile::ProfileType::Localhost as i32);
    if localhost || legacy {
        return Err(SpecError::Unsupported(
            "AppArmor Localhost profiles are not supported by this runtime; use RuntimeDefault or Unconfined".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1 as cri;
    use reef_runtime::oci_spec::runtime::Capability;

    use super::check_apparmor;
    use crate::spec::SpecError;
    use crate::spec::fixture::build_with;

    fn caps(tweak: impl FnOnce(&mut cri::LinuxContainerSecurityContext)) -> Result<Vec<Capability>, SpecError> {
        let spec = build_with(|c, _, _| tweak(c.linux.as_mut().unwrap().security_context.as_mut().unwrap()))?;
        let mut v: Vec<Capability> = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .clone()
            .unwrap()
            .into_iter()
            .collect();
        v.sort_by_key(|c| c.to_string());
        Ok(v)
    }

    fn adds(add: &[&str], drop: &[&str]) -> impl FnOnce(&mut cri::LinuxContainerSecurityContext) {
        let c = cri::Capability {
            add_capabilities: add.iter().map(|s| s.to_string()).collect(),
            drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        move |sc| sc.capabilities = Some(c)
    }

    #[test]
    fn the_default_set_is_docker_s_fourteen() {
        let c = caps(|_| {}).unwrap();
        assert_eq!(c.len(), 14);
        assert!(c.contains(&Capability::NetBindService) && !c.contains(&Capability::SysAdmin));
    }

    #[test]
    fn add_and_drop_accept_names_with_or_without_the_prefix_and_all() {
        let c = caps(adds(&["NET_ADMIN", "CAP_SYS_TIME"], &["KILL"])).unwrap();
        assert!(
            c.contains(&Capability::NetAdmin) && c.contains(&Capability::SysTime) && !c.contains(&Capability::Kill)
        );
        assert_eq!(caps(adds(&[], &["ALL"])).unwrap(), vec![]);
        assert_eq!(caps(adds(&["CHOWN"], &["ALL"])).unwrap(), vec![Capability::Chown]);
        assert_eq!(caps(adds(&["ALL"], &["SYS_ADMIN"])).unwrap().len(), 40);
        assert!(matches!(caps(adds(&["NOT_A_CAP"], &[])), Err(SpecError::Invalid { field: "capabilities", .. })));
    }

    #[test]
    fn privileged_gets_everything_and_no_masked_paths() {
        let spec = build_with(|c, _, _| c.linux.as_mut().unwrap().security_context.as_mut().unwrap().privileged = true)
            .unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.masked_paths().as_ref().unwrap().is_empty());
        assert_eq!(caps(|sc| sc.privileged = true).unwrap().len(), 41);
        let mut spec = reef_runtime::oci_spec::runtime::Spec::default();
        let sc = cri::LinuxContainerSecurityContext { privileged: true, ..Default::default() };
        super::with_capabilities(&mut spec, &sc, &["CAP_CHOWN".into(), "CAP_KILL".into()]).unwrap();
        let bounding = spec.process().as_ref().unwrap().capabilities().as_ref().unwrap().bounding().clone().unwrap();
        assert_eq!(bounding.len(), 2, "privileged gets what the runtime holds, not more");
        let default = build_with(|_, _, _| {}).unwrap();
        assert!(
            default.linux().as_ref().unwrap().masked_paths().as_ref().unwrap().contains(&"/proc/kcore".to_string())
        );
    }

    #[test]
    fn no_new_privs_follows_the_request() {
        let spec =
            build_with(|c, _, _| c.linux.as_mut().unwrap().security_context.as_mut().unwrap().no_new_privs = true)
                .unwrap();
        assert_eq!(spec.process().as_ref().unwrap().no_new_privileges(), Some(true));
    }

    #[test]
    fn apparmor_localhost_profiles_are_refused() {
        let profile = |t: cri::security_profile::ProfileType| cri::LinuxContainerSecurityContext {
            apparmor: Some(cri::SecurityProfile { profile_type: t as i32, localhost_ref: "p".into() }),
            ..Default::default()
        };
        assert!(check_apparmor(&profile(cri::security_profile::ProfileType::Localhost)).is_err());
        assert!(check_apparmor(&profile(cri::security_profile::ProfileType::RuntimeDefault)).is_ok());
    }
}
