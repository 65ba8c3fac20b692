//! Which seccomp filter a container gets: none (Unconfined, and privileged containers), Reef's RuntimeDefault, or
//! a Localhost profile file from the node, in OCI's JSON form (docker's `archMap` accepted too).

use k8s_cri::v1 as cri;
use reef_runtime::oci_spec::runtime::{LinuxSeccomp, Spec};

use super::SpecError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seccomp {
    Unconfined,
    RuntimeDefault,
    /// The profile file's absolute path on the node.
    Localhost(String),
}

fn invalid(reason: impl Into<String>) -> SpecError {
    SpecError::Invalid { field: "seccomp", reason: reason.into() }
}

/// From the CRI's SecurityProfile, or from the deprecated `seccomp_profile_path` older kubelets send
/// (`runtime/default`, `docker/default`, `unconfined`, `localhost/<path>`). Neither set means Unconfined, as
/// kubelet means it without SeccompDefault.
// The deprecated field is read on purpose: kubelets before 1.25 still send only it.
#[allow(deprecated)]
pub fn choice(sc: &cri::LinuxContainerSecurityContext) -> Result<Seccomp, SpecError> {
    if sc.privileged {
        return Ok(Seccomp::Unconfined);
    }
    use cri::security_profile::ProfileType;
    let chosen = match &sc.seccomp {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Seccomp::RuntimeDefault,
            Ok(ProfileType::Unconfined) => Seccomp::Unconfined,
            Ok(ProfileType::Localhost) => Seccomp::Localhost(p.localhost_ref.clone()),
            Err(_) => return Err(invalid(format!("unknown profile type {}", p.profile_type))),
        },
        None => match sc.seccomp_profile_path.as_str() {
            "" | "unconfined" => Seccomp::Unconfined,
            "runtime/default" | "docker/default" => Seccomp::RuntimeDefault,
            other => match other.strip_prefix("localhost/") {
                Some(path) => Seccomp::Localhost(path.to_string()),
                None => return Err(invalid(format!("unknown profile {other:?}"))),
            },
        },
    };
    if let Seccomp::Localhost(path) = &chosen
        && !path.starts_with('/')
    {
        return Err(invalid(format!("a Localhost profile needs an absolute path, not {path:?}")));
    }
    Ok(chosen)
}

/// The filter a container gets, a Localhost profile already read and parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Unconfined,
    RuntimeDefault,
    Profile(LinuxSeccomp),
}

/// The container's filter. `read` fetches a Localhost profile's file (the node's filesystem is the caller's, so
/// this stays pure).
pub fn filter(
    sc: &cri::LinuxContainerSecurityContext,
    read: impl FnOnce(&str) -> std::io::Result<Vec<u8>>,
) -> Result<Filter, SpecError> {
    Ok(match choice(sc)? {
        Seccomp::Unconfined => Filter::Unconfined,
        Seccomp::RuntimeDefault => Filter::RuntimeDefault,
        Seccomp::Localhost(path) => {
            let bytes =
                read(&path).map_err(|e| invalid(format!("cannot read the Localhost seccomp profile {path}: {e}")))?;
            Filter::Profile(parse_profile(&path, &bytes)?)
        }
    })
}

/// A profile goes into the spec as it is; RuntimeDefault is named by an annotation, and the launch plan carries
/// its program compiled for the container's capabilities (`reef_runtime::seccomp::RUNTIME_DEFAULT_ANNOTATION`).
pub fn with_seccomp(spec: &mut Spec, filter: &Filter) {
    match filter {
        Filter::Unconfined => {}
        Filter::Profile(profile) => {
            if let Some(linux) = spec.linux_mut() {
                linux.set_seccomp(Some(profile.clone()));
            }
        }
        Filter::RuntimeDefault => {
            let annotations = spec.annotations_mut().get_or_insert_with(Default::default);
            annotations.insert(
                reef_runtime::seccomp::RUNTIME_DEFAULT_ANNOTATION.into(),
                reef_runtime::seccomp::RUNTIME_DEFAULT_VALUE.into(),
            );
        }
    }
}

/// A Localhost profile's contents as an OCI seccomp section. Docker's conditional entries (`includes`,
/// `excludes`) are refused: dropping their conditions would allow more than the profile means.
pub fn parse_profile(path: &str, bytes: &[u8]) -> Result<LinuxSeccomp, SpecError> {
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("profile {path}: {e}")))?;
    let conditional = value["syscalls"]
        .as_array()
        .is_some_and(|list| list.iter().any(|s| s.get("includes").is_some() || s.get("excludes").is_some()));
    if conditional {
        return Err(invalid(format!(
            "profile {path}: docker's conditional entries (includes/excludes) are not supported; write them out"
        )));
    }
    if value.get("architectures").is_none()
        && let Some(map) = value.get("archMap").and_then(|m| m.as_array()).cloned()
    {
        let arches: Vec<serde_json::Value> = map
            .iter()
            .flat_map(|m| {
                let main = m.get("architecture").cloned();
                let subs = m.get("subArchitectures").and_then(|s| s.as_array()).cloned().unwrap_or_default();
                main.into_iter().chain(subs)
            })
            .collect();
        value["architectures"] = serde_json::Value::Array(arches);
    }
    if let Some(obj) = value.as_object_mut() {
        obj.remove("archMap");
    }
    serde_json::from_value(value).map_err(|e| invalid(format!("profile {path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(deprecated)]
    fn sc(
        profile: Option<(cri::security_profile::ProfileType, &str)>,
        path: &str,
    ) -> cri::LinuxContainerSecurityContext {
        cri::LinuxContainerSecurityContext {
            seccomp: profile.map(|(t, r)| cri::SecurityProfile { profile_type: t as i32, localhost_ref: r.into() }),
            seccomp_profile_path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_profile_comes_from_the_security_profile_or_the_deprecated_path() {
        use cri::security_profile::ProfileType as T;
        assert_eq!(choice(&sc(Some((T::RuntimeDefault, "")), "")).unwrap(), Seccomp::RuntimeDefault);
        assert_eq!(choice(&sc(Some((T::Localhost, "/p.json")), "")).unwrap(), Seccomp::Localhost("/p.json".into()));
        assert_eq!(choice(&sc(None, "")).unwrap(), Seccomp::Unconfined);
        assert_eq!(choice(&sc(None, "docker/default")).unwrap(), Seccomp::RuntimeDefault);
        assert_eq!(choice(&sc(None, "localhost//etc/p.json")).unwrap(), Seccomp::Localhost("/etc/p.json".into()));
        assert!(choice(&sc(Some((T::Localhost, "relative.json")), "")).is_err());
        assert!(choice(&sc(None, "bogus")).is_err());
        let mut privileged = sc(Some((T::RuntimeDefault, "")), "");
        privileged.privileged = true;
        assert_eq!(choice(&privileged).unwrap(), Seccomp::Unconfined);
    }

    #[test]
    fn runtime_default_is_chosen_in_the_spec_and_carried_out_in_the_plan() {
        use cri::security_profile::ProfileType as T;
        let no_file = |_: &str| -> std::io::Result<Vec<u8>> { Err(std::io::ErrorKind::NotFound.into()) };
        let chosen = filter(&sc(Some((T::RuntimeDefault, "")), ""), no_file).unwrap();
        let spec = crate::spec::fixture::build_with_seccomp(&chosen).unwrap();
        assert!(spec.linux().as_ref().unwrap().seccomp().is_none(), "no profile of a few hundred rules");
        let plan = reef_runtime::plan::plan_from_spec(&spec).unwrap();
        assert!(plan.seccomp.is_some_and(|p| !p.is_empty()), "the plan carries RuntimeDefault's program");
        let unconfined = crate::spec::fixture::build_with_seccomp(&Filter::Unconfined).unwrap();
        assert!(reef_runtime::plan::plan_from_spec(&unconfined).unwrap().seccomp.is_none());
        let err = filter(&sc(Some((T::Localhost, "/nope.json")), ""), no_file).unwrap_err();
        assert!(err.to_string().contains("/nope.json"), "{err}");
    }

    #[test]
    fn profiles_parse_in_oci_form_and_docker_arch_maps_and_refuse_conditions() {
        let oci = br#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
                       "syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#;
        assert_eq!(parse_profile("/p", oci).unwrap().syscalls().as_ref().unwrap().len(), 1);
        let docker = br#"{"defaultAction":"SCMP_ACT_ERRNO",
            "archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86","SCMP_ARCH_X32"]}],
            "syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#;
        assert_eq!(parse_profile("/p", docker).unwrap().architectures().as_ref().unwrap().len(), 3);
        let conditional = br#"{"defaultAction":"SCMP_ACT_ERRNO",
            "syscalls":[{"names":["bpf"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}}]}"#;
        assert!(parse_profile("/p", conditional).is_err());
        assert!(parse_profile("/p", b"not json").is_err());
        assert!(parse_profile("/p", br#"{"defaultAction":"SCMP_ACT_BOGUS"}"#).is_err());
    }
}
