//! Which namespaces a container creates and which it joins, from the CRI's NamespaceOption modes.

use std::path::PathBuf;

use k8s_cri::v1 as cri;
use reef_runtime::oci_spec::runtime::{LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, Spec};
use reef_runtime::userns::{IdMapping, IdMappings};

use super::SpecError;

/// The pod's namespaces as files to join (pinned bind mounts, or the pod init's /proc entries for pid).
#[derive(Debug, Clone, Default)]
pub struct PodNamespaces {
    pub network: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub pid: Option<PathBuf>,
    /// The pod's user namespace (hostUsers: false), pinned with its maps.
    pub user: Option<PathBuf>,
}

fn ns(typ: LinuxNamespaceType, path: Option<PathBuf>) -> Option<LinuxNamespace> {
    let mut b = LinuxNamespaceBuilder::default().typ(typ);
    if let Some(p) = path {
        b = b.path(p);
    }
    b.build().ok()
}

/// NODE: the host's (no entry at all); POD: join the pod's; CONTAINER: a new one. TARGET (pid only) joins
/// another container's, which the caller passes as the pod pid path.
pub fn with_namespaces(spec: &mut Spec, sc: &cri::LinuxContainerSecurityContext, pod: &PodNamespaces) {
    let opts = sc.namespace_options.clone().unwrap_or_default();
    let mode = |m: i32| cri::NamespaceMode::try_from(m).unwrap_or(cri::NamespaceMode::Pod);
    let mut list = vec![ns(LinuxNamespaceType::Mount, None), ns(LinuxNamespaceType::Cgroup, None)];
    let join_or_new = |typ, m, path: &Option<PathBuf>| match m {
        cri::NamespaceMode::Node => None,
        cri::NamespaceMode::Container => ns(typ, None),
        cri::NamespaceMode::Pod | cri::NamespaceMode::Target => ns(typ, path.clone()),
    };
    // The pod's net, ipc and uts namespaces are pinned unless the pod uses the host's: joining "the pod's" then
    // means the host's, not a new one.
    let pods_or_host = |m: cri::NamespaceMode, path: &Option<PathBuf>| match m {
        cri::NamespaceMode::Pod if path.is_none() => cri::NamespaceMode::Node,
        m => m,
    };
    let network = pods_or_host(mode(opts.network), &pod.network);
    list.push(join_or_new(LinuxNamespaceType::Network, network, &pod.network));
    list.push(join_or_new(LinuxNamespaceType::Ipc, pods_or_host(mode(opts.ipc), &pod.ipc), &pod.ipc));
    // A host-network pod also has the host's hostname, as kubelet expects.
    let uts_mode = if network == cri::NamespaceMode::Node { cri::NamespaceMode::Node } else { cri::NamespaceMode::Pod };
    list.push(join_or_new(LinuxNamespaceType::Uts, uts_mode, &pod.uts));
    list.push(join_or_new(LinuxNamespaceType::Pid, mode(opts.pid), &pod.pid));
    if let Some(user) = &pod.user {
        list.push(ns(LinuxNamespaceType::User, Some(user.clone())));
    }
    if let Some(linux) = spec.linux_mut() {
        linux.set_namespaces(Some(list.into_iter().flatten().collect()));
    }
}

/// A pod's own user namespace (hostUsers: false): mode POD with its uid and gid maps, checked here so a bad map
/// is an InvalidArgument before anything is made. NODE (or nothing) is the host's; CONTAINER and TARGET are not
/// something kubelet asks for, and are refused rather than run in the host's.
pub fn user_namespace(options: &cri::NamespaceOption) -> Result<Option<IdMappings>, SpecError> {
    let invalid = |reason: String| SpecError::Invalid { field: "userns_options", reason };
    let Some(u) = &options.userns_options else { return Ok(None) };
    if u.mode == cri::NamespaceMode::Node as i32 {
        return Ok(None);
    }
    if u.mode != cri::NamespaceMode::Pod as i32 {
        return Err(invalid(format!(
            "user namespace mode {:?} is not supported; use POD (hostUsers: false) or NODE",
            cri::NamespaceMode::try_from(u.mode).map(|m| m.as_str_name()).unwrap_or("unknown")
        )));
    }
    let convert = |v: &[cri::IdMapping]| -> Vec<IdMapping> {
        v.iter().map(|m| IdMapping { container_id: m.container_id, host_id: m.host_id, size: m.length }).collect()
    };
    let maps = IdMappings { uids: convert(&u.uids), gids: convert(&u.gids) };
    maps.validate().map_err(invalid)?;
    Ok(Some(maps))
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1 as cri;
    use reef_runtime::oci_spec::runtime::LinuxNamespaceType as T;

    use super::user_namespace;
    use crate::spec::fixture::build_with;

    fn namespaces(net: cri::NamespaceMode, pid: cri::NamespaceMode) -> Vec<(T, Option<String>)> {
        let spec = build_with(|c, _, _| {
            c.linux.as_mut().unwrap().security_context.as_mut().unwrap().namespace_options =
                Some(cri::NamespaceOption {
                    network: net as i32,
                    pid: pid as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                });
        })
        .unwrap();
        spec.linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .clone()
            .unwrap()
            .iter()
            .map(|n| (n.typ(), n.path().as_ref().map(|p| p.display().to_string())))
            .collect()
    }

    #[test]
    fn pod_mode_joins_the_pinned_namespaces_and_container_mode_makes_new_ones() {
        let ns = namespaces(cri::NamespaceMode::Pod, cri::NamespaceMode::Container);
        assert!(ns.contains(&(T::Network, Some("/run/reef/pods/p/ns/net".into()))));
        assert!(ns.contains(&(T::Uts, Some("/run/reef/pods/p/ns/uts".into()))));
        assert!(ns.contains(&(T::Pid, None)), "a private pid namespace");
        assert!(ns.contains(&(T::Mount, None)));
    }

    #[test]
    fn node_mode_uses_the_hosts_and_host_network_brings_host_uts() {
        let ns = namespaces(cri::NamespaceMode::Node, cri::NamespaceMode::Node);
        let types: Vec<T> = ns.iter().map(|n| n.0).collect();
        assert!(!types.contains(&T::Network) && !types.contains(&T::Pid) && !types.contains(&T::Uts), "{types:?}");
        let shared = namespaces(cri::NamespaceMode::Pod, cri::NamespaceMode::Pod);
        assert!(shared.contains(&(T::Pid, Some("/proc/42/ns/pid".into()))));
    }

    #[test]
    fn joining_a_host_network_pod_means_the_host_s_network() {
        let mut spec = reef_runtime::oci_spec::runtime::Spec::default();
        let sc = cri::LinuxContainerSecurityContext::default();
        let host_pod = super::PodNamespaces { ipc: Some("/run/reef/p/ns/ipc".into()), ..Default::default() };
        super::with_namespaces(&mut spec, &sc, &host_pod);
        let types: Vec<T> =
            spec.linux().as_ref().unwrap().namespaces().clone().unwrap().iter().map(|n| n.typ()).collect();
        assert!(!types.contains(&T::Network) && !types.contains(&T::Uts), "{types:?}");
        assert!(types.contains(&T::Ipc), "{types:?}");
    }

    #[test]
    fn a_pod_with_a_user_namespace_has_its_containers_join_it_and_others_do_not() {
        let join = |pod: &super::PodNamespaces| {
            let mut spec = reef_runtime::oci_spec::runtime::Spec::default();
            super::with_namespaces(&mut spec, &cri::LinuxContainerSecurityContext::default(), pod);
            let list = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
            list.iter().find(|n| n.typ() == T::User).map(|n| n.path().clone())
        };
        let user = super::PodNamespaces { user: Some("/run/reef/p/ns/user".into()), ..Default::default() };
        assert_eq!(join(&user), Some(Some("/run/reef/p/ns/user".into())), "joined by path, never made new");
        assert_eq!(join(&super::PodNamespaces::default()), None, "the host's");
    }

    #[test]
    fn user_namespace_maps_are_checked() {
        let userns = |mode: cri::NamespaceMode| cri::NamespaceOption {
            userns_options: Some(cri::UserNamespace { mode: mode as i32, ..Default::default() }),
            ..Default::default()
        };
        assert!(user_namespace(&userns(cri::NamespaceMode::Pod)).is_err(), "a POD user namespace needs maps");
        assert!(user_namespace(&userns(cri::NamespaceMode::Container)).is_err());
        assert_eq!(user_namespace(&userns(cri::NamespaceMode::Node)).unwrap(), None);
        assert_eq!(user_namespace(&cri::NamespaceOption::default()).unwrap(), None);
        let map = vec![cri::IdMapping { host_id: 100000, container_id: 0, length: 65536 }];
        let good = cri::NamespaceOption {
            userns_options: Some(cri::UserNamespace {
                mode: cri::NamespaceMode::Pod as i32,
                uids: map.clone(),
                gids: map,
            }),
            ..Default::default()
        };
        assert_eq!(user_namespace(&good).unwrap().unwrap().host_uid(0), Some(100000));
    }
}
