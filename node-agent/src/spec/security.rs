//! Capabilities, masked and read-only paths, no_new_privs and the AppArmor profile: the default confinement and its
//! CRI overrides.

use std::collections::HashSet;
use std::str::FromStr;

use k8s_cri::v1 as cri;
use reef_runtime::apparmor::AppArmorError;
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

/// The AppArmor profile a container asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppArmor {
    Unconfined,
    RuntimeDefault,
    /// A profile the node's operator loaded, by name.
    Localhost(String),
}

const LOCALHOST_PREFIX: &str = "localhost/";

fn invalid_apparmor(reason: String) -> SpecError {
    SpecError::Invalid { field: "apparmor", reason }
}

/// From the CRI's `apparmor` field, or else the deprecated `apparmor_profile` string (`runtime/default`,
/// `unconfined`, `localhost/<name>`) that kubelets send alongside it or, before 1.30, alone; the field wins when
/// both are set, as in containerd and CRI-O. Neither set means RuntimeDefault: a container that names no profile
/// gets the runtime's default where AppArmor is on (kubernetes#51746). A privileged container runs unconfined
/// unless it names a Localhost profile.
// The deprecated field is read on purpose: older kubelets send only it.
#[allow(deprecated)]
pub fn apparmor_choice(sc: &cri::LinuxContainerSecurityContext) -> Result<AppArmor, SpecError> {
    use cri::security_profile::ProfileType;
    let chosen = match &sc.apparmor {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => AppArmor::RuntimeDefault,
            Ok(ProfileType::Unconfined) => AppArmor::Unconfined,
            // kubelet sends the bare name; the `localhost/` form (critest's) is taken too, as containerd does.
            Ok(ProfileType::Localhost) => AppArmor::Localhost(
                p.localhost_ref.strip_prefix(LOCALHOST_PREFIX).unwrap_or(&p.localhost_ref).to_string(),
            ),
            Err(_) => return Err(invalid_apparmor(format!("unknown profile type {}", p.profile_type))),
        },
        None => match sc.apparmor_profile.as_str() {
            "" | "runtime/default" => AppArmor::RuntimeDefault,
            "unconfined" => AppArmor::Unconfined,
            other => match other.strip_prefix(LOCALHOST_PREFIX) {
                Some(name) => AppArmor::Localhost(name.to_string()),
                None => return Err(invalid_apparmor(format!("unknown profile {other:?}"))),
            },
        },
    };
    Ok(match chosen {
        AppArmor::Localhost(name) if name.is_empty() => {
            return Err(invalid_apparmor("a Localhost profile needs a name".into()));
        }
        AppArmor::RuntimeDefault if sc.privileged => AppArmor::Unconfined,
        other => other,
    })
}

/// What the node's AppArmor offers, behind a trait so the choice is tested without a kernel (`NodeAppArmor` asks
/// the real one).
pub trait AppArmorHost {
    /// RuntimeDefault's profile, loaded if need be; `None` where AppArmor is off.
    fn default_profile(&self) -> Result<Option<String>, AppArmorError>;
    /// Fails unless the kernel enforces AppArmor and holds the profile `name`.
    fn check_loaded(&self, name: &str) -> Result<(), AppArmorError>;
}

/// This node's kernel (`reef_runtime::apparmor`). Blocking: the first RuntimeDefault container may run
/// apparmor_parser.
pub struct NodeAppArmor;

impl AppArmorHost for NodeAppArmor {
    fn default_profile(&self) -> Result<Option<String>, AppArmorError> {
        Ok(reef_runtime::apparmor::default_profile()?.map(str::to_string))
    }

    fn check_loaded(&self, name: &str) -> Result<(), AppArmorError> {
        reef_runtime::apparmor::check_loaded(name)
    }
}

/// The profile the container's processes run under, `None` for unconfined. RuntimeDefault where AppArmor is off
/// runs unconfined; a Localhost profile there, or one the kernel does not hold, is refused here, at create, with
/// its name.
pub fn apparmor_profile(
    sc: &cri::LinuxContainerSecurityContext,
    host: &impl AppArmorHost,
) -> Result<Option<String>, SpecError> {
    Ok(match apparmor_choice(sc)? {
        AppArmor::Unconfined => None,
        AppArmor::RuntimeDefault => host.default_profile()?,
        AppArmor::Localhost(name) => {
            host.check_loaded(&name)?;
            Some(name)
        }
    })
}

/// OCI's `process.apparmorProfile`, which the launch plan carries to the exec.
pub fn with_apparmor(spec: &mut Spec, profile: Option<&str>) {
    spec.process_mut().get_or_insert_with(Default::default).set_apparmor_profile(profile.map(str::to_string));
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1 as cri;
    use reef_runtime::oci_spec::runtime::Capability;

    use reef_runtime::apparmor::AppArmorError;

    use super::{AppArmor, AppArmorHost, apparmor_choice, apparmor_profile, with_apparmor};
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

    fn apparmor_sc(
        field: Option<(cri::security_profile::ProfileType, &str)>,
        deprecated: &str,
        privileged: bool,
    ) -> cri::LinuxContainerSecurityContext {
        #[allow(deprecated)]
        cri::LinuxContainerSecurityContext {
            apparmor: field.map(|(t, r)| cri::SecurityProfile { profile_type: t as i32, localhost_ref: r.into() }),
            apparmor_profile: deprecated.into(),
            privileged,
            ..Default::default()
        }
    }

    #[test]
    fn the_apparmor_field_wins_over_the_deprecated_string_and_neither_means_runtime_default() {
        use cri::security_profile::ProfileType as T;
        let choice = |f, d: &str| apparmor_choice(&apparmor_sc(f, d, false)).unwrap();
        assert_eq!(choice(None, ""), AppArmor::RuntimeDefault);
        assert_eq!(choice(None, "runtime/default"), AppArmor::RuntimeDefault);
        assert_eq!(choice(None, "unconfined"), AppArmor::Unconfined);
        assert_eq!(choice(None, "localhost/my-profile"), AppArmor::Localhost("my-profile".into()));
        assert_eq!(choice(Some((T::Unconfined, "")), "localhost/other"), AppArmor::Unconfined);
        assert_eq!(choice(Some((T::RuntimeDefault, "")), "unconfined"), AppArmor::RuntimeDefault);
        // critest sends the new field with the old prefix (and a different, missing profile in the old field).
        assert_eq!(
            choice(Some((T::Localhost, "localhost/deny-write")), "localhost/non-existent"),
            AppArmor::Localhost("deny-write".into())
        );
        assert_eq!(choice(Some((T::Localhost, "deny-write")), ""), AppArmor::Localhost("deny-write".into()));
    }

    #[test]
    fn apparmor_requests_that_name_nothing_usable_are_invalid() {
        use cri::security_profile::ProfileType as T;
        let err = |f, d: &str| apparmor_choice(&apparmor_sc(f, d, false)).unwrap_err();
        assert!(matches!(err(None, "docker-default"), SpecError::Invalid { field: "apparmor", .. }));
        assert!(matches!(err(None, "localhost/"), SpecError::Invalid { field: "apparmor", .. }));
        assert!(matches!(err(Some((T::Localhost, "")), ""), SpecError::Invalid { field: "apparmor", .. }));
        let unknown = cri::LinuxContainerSecurityContext {
            apparmor: Some(cri::SecurityProfile { profile_type: 42, localhost_ref: String::new() }),
            ..Default::default()
        };
        assert!(apparmor_choice(&unknown).is_err());
    }

    #[test]
    fn privileged_containers_run_unconfined_unless_they_name_a_localhost_profile() {
        use cri::security_profile::ProfileType as T;
        let choice = |f, d: &str| apparmor_choice(&apparmor_sc(f, d, true)).unwrap();
        assert_eq!(choice(None, ""), AppArmor::Unconfined);
        assert_eq!(choice(Some((T::RuntimeDefault, "")), ""), AppArmor::Unconfined);
        assert_eq!(choice(None, "localhost/p"), AppArmor::Localhost("p".into()));
        assert_eq!(choice(Some((T::Localhost, "p")), ""), AppArmor::Localhost("p".into()));
    }

    /// A node whose AppArmor is on or off, holding the profiles named.
    struct FakeHost {
        enabled: bool,
        loaded: &'static [&'static str],
    }

    impl AppArmorHost for FakeHost {
        fn default_profile(&self) -> Result<Option<String>, AppArmorError> {
            Ok(self.enabled.then(|| "reef-default".to_string()))
        }

        fn check_loaded(&self, name: &str) -> Result<(), AppArmorError> {
            if !self.enabled {
                return Err(AppArmorError::NotEnabled { profile: name.into() });
            }
            if !self.loaded.contains(&name) {
                return Err(AppArmorError::NotLoaded { profile: name.into() });
            }
            Ok(())
        }
    }

    #[test]
    fn without_apparmor_runtime_default_runs_unconfined_and_a_localhost_profile_is_refused_by_name() {
        use cri::security_profile::ProfileType as T;
        let off = FakeHost { enabled: false, loaded: &[] };
        assert_eq!(apparmor_profile(&apparmor_sc(None, "", false), &off).unwrap(), None);
        assert_eq!(apparmor_profile(&apparmor_sc(Some((T::RuntimeDefault, "")), "", false), &off).unwrap(), None);
        let err = apparmor_profile(&apparmor_sc(Some((T::Localhost, "mine")), "", false), &off).unwrap_err();
        assert!(matches!(&err, SpecError::AppArmor(AppArmorError::NotEnabled { .. })), "{err:?}");
        assert!(err.to_string().contains("\"mine\""), "{err}");
    }

    #[test]
    fn with_apparmor_runtime_default_is_reef_s_profile_and_localhost_profiles_must_be_loaded() {
        use cri::security_profile::ProfileType as T;
        let on = FakeHost { enabled: true, loaded: &["mine"] };
        assert_eq!(apparmor_profile(&apparmor_sc(None, "", false), &on).unwrap().as_deref(), Some("reef-default"));
        assert_eq!(apparmor_profile(&apparmor_sc(None, "unconfined", false), &on).unwrap(), None);
        assert_eq!(
            apparmor_profile(&apparmor_sc(Some((T::Localhost, "mine")), "", false), &on).unwrap().as_deref(),
            Some("mine")
        );
        let err = apparmor_profile(&apparmor_sc(None, "localhost/missing", false), &on).unwrap_err();
        assert!(matches!(&err, SpecError::AppArmor(AppArmorError::NotLoaded { .. })), "{err:?}");
        assert!(err.to_string().contains("\"missing\""), "{err}");
    }

    #[test]
    fn the_chosen_profile_lands_in_the_spec_and_the_launch_plan() {
        let spec = build_with(|_, _, _| {}).unwrap();
        assert_eq!(spec.process().as_ref().unwrap().apparmor_profile(), &None);
        let mut spec = spec;
        with_apparmor(&mut spec, Some("reef-default"));
        let plan = reef_runtime::plan::plan_from_spec(&spec).unwrap();
        assert_eq!(plan.apparmor_profile.as_deref(), Some("reef-default"));
    }
}
