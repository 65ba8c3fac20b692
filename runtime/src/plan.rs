//! From an OCI runtime spec to a launch plan: the seam between node-agent (which speaks CRI and builds specs)
//! and the native launcher. Whatever the launcher cannot honour yet is refused here, loudly, rather than
//! silently run with less confinement than the spec asks for.

use std::path::PathBuf;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::launch::LaunchPlan;
use crate::mounts::MountPlan;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("spec has no {0}")]
    Missing(&'static str),
    #[error("spec asks for {0}, which this runtime does not support yet")]
    Unsupported(String),
    #[error("{0}")]
    Seccomp(String),
    #[error("spec has {0}")]
    Invalid(String),
}

/// `..` has no place in a plan's paths: a mount source that climbs out of the host directory it names, or a
/// destination, masked path or cgroup that climbs out of the rootfs or the container's cgroup, is a hostile
/// request, whatever later resolution would make of it (kubelet itself refuses such host paths).
fn refuse_climbing(what: &str, path: &str) -> Result<(), PlanError> {
    if path.split('/').any(|c| c == "..") {
        return Err(PlanError::Invalid(format!("{what} {path:?} with a '..' component")));
    }
    Ok(())
}

/// (uid_t)-1 and (gid_t)-1 mean "leave unchanged" to setresuid, setresgid and chown: the process would keep the
/// launcher's root.
fn refuse_unchanged_id(what: &str, id: u32) -> Result<(), PlanError> {
    if id == crate::users::UNCHANGED_ID {
        return Err(PlanError::Invalid(format!("{what} {id}, which the kernel reads as \"unchanged\"")));
    }
    Ok(())
}

/// What the spec asks that no container may have, checked once here for every caller.
fn validate(spec: &Spec) -> Result<(), PlanError> {
    if let Some(process) = spec.process() {
        if let Some(profile) = process.apparmor_profile() {
            crate::apparmor::check_name(profile)
                .map_err(|_| PlanError::Invalid(format!("an unusable AppArmor profile name {profile:?}")))?;
        }
        let user = process.user();
        refuse_unchanged_id("uid", user.uid())?;
        refuse_unchanged_id("gid", user.gid())?;
        for gid in user.additional_gids().iter().flatten() {
            refuse_unchanged_id("supplementary gid", *gid)?;
        }
    }
    for m in spec.mounts().iter().flatten() {
        let destination = m.destination().display().to_string();
        if !destination.starts_with('/') {
            return Err(PlanError::Invalid(format!("mount destination {destination:?}, not an absolute path")));
        }
        refuse_climbing("mount destination", &destination)?;
        if let Some(source) = m.source() {
            refuse_climbing("mount source", &source.display().to_string())?;
        }
    }
    if let Some(linux) = spec.linux() {
        for p in linux.masked_paths().iter().flatten().chain(linux.readonly_paths().iter().flatten()) {
            refuse_climbing("masked or read-only path", p)?;
        }
        if let Some(cgroup) = linux.cgroups_path() {
            refuse_climbing("cgroup path", &cgroup.display().to_string())?;
        }
        for d in linux.devices().iter().flatten() {
            refuse_climbing("device path", &d.path().display().to_string())?;
            refuse_unchanged_id("device uid", d.uid().unwrap_or(0))?;
            refuse_unchanged_id("device gid", d.gid().unwrap_or(0))?;
        }
    }
    Ok(())
}

fn clone_flag(t: LinuxNamespaceType) -> Result<CloneFlags, PlanError> {
    Ok(match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        other => return Err(PlanError::Unsupported(format!("a {other:?} namespace"))),
    })
}

/// A cgroupfs path (`kubepods/pod1/reef-x`), or runc's systemd form (`<slice>:<prefix>:<name>`).
fn cgroup_plan(path: &str, linux: &oci_spec::runtime::Linux) -> Result<crate::launch::CgroupPlan, PlanError> {
    let resources = linux.resources().clone().unwrap_or_default();
    // Found once per reefd: the monitor, which makes the cgroup, need not look again.
    let hierarchies = Some(crate::cgroups::Hierarchies::node().clone());
    if cgroups_rs::manager::is_systemd_cgroup(path) {
        let parts: Vec<&str> = path.split(':').collect();
        let (unit, fs_path) = crate::cgroups::systemd_paths(parts[0], parts[1], parts[2])
            .map_err(|e| PlanError::Unsupported(e.to_string()))?;
        return Ok(crate::launch::CgroupPlan { path: fs_path, systemd: Some(unit), resources, hierarchies });
    }
    Ok(crate::launch::CgroupPlan {
        path: path.trim_start_matches('/').to_string(),
        systemd: None,
        resources,
        hierarchies,
    })
}

pub fn plan_from_spec(spec: &Spec) -> Result<LaunchPlan, PlanError> {
    let root = spec.root().as_ref().ok_or(PlanError::Missing("root"))?;
    let process = spec.process().as_ref().ok_or(PlanError::Missing("process"))?;
    let args = process.args().clone().filter(|a| !a.is_empty()).ok_or(PlanError::Missing("process.args"))?;
    let linux = spec.linux().as_ref().ok_or(PlanError::Missing("linux"))?;
    validate(spec)?;
    // Compiled here, in the caller, so a bad profile fails the create before anything is forked.
    let profile = linux
        .seccomp()
        .as_ref()
        .map(crate::seccomp::compile_profile_cached)
        .transpose()
        .map_err(|e| PlanError::Seccomp(e.to_string()))?
        .map(|p| p.to_vec());
    let (new_namespaces, join_namespaces) = namespaces(linux)?;
    // Only a UTS namespace of the container's own takes the hostname; a joined one belongs to the pod.
    let hostname = if new_namespaces.contains(CloneFlags::CLONE_NEWUTS) { spec.hostname().clone() } else { None };
    let capabilities = process.capabilities().as_ref().map(capability_sets);
    let seccomp = match profile {
        None => runtime_default_seccomp(spec, capabilities.as_ref())?,
        profile => profile,
    };
    let user = process.user();
    Ok(LaunchPlan {
        rootfs: root.path().clone(),
        readonly_rootfs: root.readonly().unwrap_or(false),
        new_namespaces,
        join_namespaces,
        mounts: mounts(spec),
        masked_paths: linux.masked_paths().clone().unwrap_or_default(),
        readonly_paths: linux.readonly_paths().clone().unwrap_or_default(),
        hostname,
        args,
        env: process.env().clone().unwrap_or_default(),
        cwd: process.cwd().display().to_string(),
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        seccomp,
        devices: devices(linux),
        oom_score_adj: process.oom_score_adj(),
        // The monitor gives such a container a pty; an exec sets its own.
        terminal: process.terminal().unwrap_or(false),
        sysctls: {
            let mut v: Vec<(String, String)> = linux.sysctl().clone().unwrap_or_default().into_iter().collect();
            v.sort();
            v
        },
        cgroup: linux.cgroups_path().as_ref().map(|p| cgroup_plan(&p.display().to_string(), linux)).transpose()?,
        rlimits: rlimits(process),
        capabilities,
        apparmor_profile: process.apparmor_profile().clone(),
    })
}

/// The namespaces to make and those to join (by path), in the spec's order.
fn namespaces(linux: &oci_spec::runtime::Linux) -> Result<(CloneFlags, Vec<(CloneFlags, PathBuf)>), PlanError> {
    let mut new_namespaces = CloneFlags::empty();
    let mut join_namespaces: Vec<(CloneFlags, PathBuf)> = Vec::new();
    for ns in linux.namespaces().iter().flatten() {
        let flag = clone_flag(ns.typ())?;
        match ns.path() {
            Some(p) => join_namespaces.push((flag, p.clone())),
            // A user namespace needs its maps written from outside: only the pod's, pinned with them, is joined.
            None if flag == CloneFlags::CLONE_NEWUSER => {
                return Err(PlanError::Unsupported("a user namespace of the container's own".into()));
            }
            None => new_namespaces |= flag,
        }
    }
    Ok((new_namespaces, join_namespaces))
}

fn mounts(spec: &Spec) -> Vec<MountPlan> {
    spec.mounts()
        .iter()
        .flatten()
        .map(|m| {
            MountPlan::from_oci(
                &m.destination().display().to_string(),
                m.typ().as_deref().unwrap_or("none"),
                &m.source().as_ref().map(|s| s.display().to_string()).unwrap_or_else(|| "none".into()),
                m.options().as_deref().unwrap_or_default(),
            )
        })
        .collect()
}

fn capability_sets(c: &oci_spec::runtime::LinuxCapabilities) -> crate::launch::CapabilitySets {
    let names = |set: &Option<oci_spec::runtime::Capabilities>| -> Vec<String> {
        let mut v: Vec<String> = set.iter().flatten().map(|cap| format!("CAP_{cap}")).collect();
        v.sort();
        v
    };
    crate::launch::CapabilitySets {
        bounding: names(c.bounding()),
        effective: names(c.effective()),
        permitted: names(c.permitted()),
        inheritable: names(c.inheritable()),
        ambient: names(c.ambient()),
    }
}

/// RuntimeDefault, when the spec's annotation asks for it and it has no profile of its own.
fn runtime_default_seccomp(
    spec: &Spec,
    capabilities: Option<&crate::launch::CapabilitySets>,
) -> Result<Option<Vec<u8>>, PlanError> {
    let runtime_default = spec.annotations().as_ref().and_then(|a| a.get(crate::seccomp::RUNTIME_DEFAULT_ANNOTATION))
        == Some(&crate::seccomp::RUNTIME_DEFAULT_VALUE.to_string());
    if !runtime_default {
        return Ok(None);
    }
    let bounding = capabilities.map(|c| c.bounding.as_slice()).unwrap_or_default();
    let program = crate::seccomp::runtime_default_cached(bounding).map_err(|e| PlanError::Seccomp(e.to_string()))?;
    Ok(Some(program.to_vec()))
}

fn devices(linux: &oci_spec::runtime::Linux) -> Vec<crate::launch::DevicePlan> {
    linux
        .devices()
        .iter()
        .flatten()
        .map(|d| crate::launch::DevicePlan {
            path: d.path().display().to_string(),
            kind: if d.typ() == oci_spec::runtime::LinuxDeviceType::B { 'b' } else { 'c' },
            major: d.major(),
            minor: d.minor(),
            mode: d.file_mode().unwrap_or(0o666),
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        })
        .collect()
}

/// As (`RLIMIT_NOFILE`, soft, hard).
fn rlimits(process: &oci_spec::runtime::Process) -> Vec<(String, u64, u64)> {
    process
        .rlimits()
        .iter()
        .flatten()
        .map(|r| {
            let name = format!("{:?}", r.typ()).trim_start_matches("Rlimit").to_ascii_uppercase();
            (format!("RLIMIT_{name}"), r.soft(), r.hard())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{LinuxNamespaceBuilder, ProcessBuilder, RootBuilder, Spec};

    use super::*;

    fn spec(namespaces: Vec<(LinuxNamespaceType, Option<&str>)>) -> Spec {
        let mut spec = Spec::default();
        spec.set_root(Some(RootBuilder::default().path("/r").readonly(true).build().unwrap()));
        spec.set_hostname(Some("h".into()));
        let mut process = ProcessBuilder::default().args(vec!["sh".to_string()]).cwd("/w").build().unwrap();
        // The builder's defaults include capabilities and rlimits, which the launcher does not apply yet.
        process.set_capabilities(None);
        process.set_rlimits(None);
        spec.set_process(Some(process));
        let list = namespaces
            .into_iter()
            .map(|(t, p)| {
                let b = LinuxNamespaceBuilder::default().typ(t);
                match p {
                    Some(p) => b.path(p).build().unwrap(),
                    None => b.build().unwrap(),
                }
            })
            .collect();
        spec.linux_mut().as_mut().unwrap().set_namespaces(Some(list));
        spec
    }

    #[test]
    fn new_and_joined_namespaces_are_told_apart() {
        let p = plan_from_spec(&spec(vec![
            (LinuxNamespaceType::Mount, None),
            (LinuxNamespaceType::Pid, None),
            (LinuxNamespaceType::Network, Some("/run/reef/p/ns/net")),
            (LinuxNamespaceType::Uts, Some("/run/reef/p/ns/uts")),
        ]))
        .unwrap();
        assert_eq!(p.new_namespaces, CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID);
        assert_eq!(p.join_namespaces.len(), 2);
        assert_eq!(p.hostname, None, "a joined UTS namespace keeps the pod's hostname");
        assert!(p.readonly_rootfs);
        assert_eq!((p.args.as_slice(), p.cwd.as_str()), (&["sh".to_string()][..], "/w"));
        assert!(!p.masked_paths.is_empty(), "the spec's default masked paths carry over");
        assert!(p.mounts.iter().any(|m| m.destination == "/proc" && m.fstype == "proc"));
    }

    #[test]
    fn capability_names_take_the_kernel_spelling() {
        let mut s = spec(vec![]);
        let caps = Spec::default().process().as_ref().unwrap().capabilities().clone();
        s.process_mut().as_mut().unwrap().set_capabilities(caps);
        let sets = plan_from_spec(&s).unwrap().capabilities.unwrap();
        assert!(sets.bounding.contains(&"CAP_KILL".to_string()), "{sets:?}");
        for name in sets.bounding.iter().chain(&sets.effective) {
            assert!(name.parse::<caps::Capability>().is_ok(), "{name} is a capability the launcher can parse");
        }
    }

    #[test]
    fn cgroup_paths_in_runc_s_systemd_form_become_a_scope_below_the_slice() {
        let mut s = spec(vec![]);
        s.linux_mut().as_mut().unwrap().set_cgroups_path(Some("kubepods-pod1.slice:reef:abc".into()));
        let cgroup = plan_from_spec(&s).unwrap().cgroup.unwrap();
        assert_eq!(cgroup.systemd.as_deref(), Some("kubepods-pod1.slice:reef:abc"));
        assert_eq!(cgroup.path, "kubepods.slice/kubepods-pod1.slice/reef-abc.scope");
        s.linux_mut().as_mut().unwrap().set_cgroups_path(Some("/kubepods/pod1/reef-abc".into()));
        let cgroup = plan_from_spec(&s).unwrap().cgroup.unwrap();
        assert_eq!((cgroup.path.as_str(), cgroup.systemd), ("kubepods/pod1/reef-abc", None));
    }

    #[test]
    fn a_new_uts_namespace_takes_the_hostname() {
        let p = plan_from_spec(&spec(vec![(LinuxNamespaceType::Uts, None)])).unwrap();
        assert_eq!(p.hostname.as_deref(), Some("h"));
    }

    #[test]
    fn unsupported_namespaces_and_missing_parts_are_refused() {
        assert!(matches!(
            plan_from_spec(&spec(vec![(LinuxNamespaceType::User, None)])),
            Err(PlanError::Unsupported(_))
        ));
        let mut s = spec(vec![]);
        s.set_process(None);
        assert_eq!(plan_from_spec(&s).unwrap_err(), PlanError::Missing("process"));
        let mut limited = spec(vec![]);
        limited
            .process_mut()
            .as_mut()
            .unwrap()
            .set_rlimits(Spec::default().process().as_ref().unwrap().rlimits().clone());
        assert_eq!(plan_from_spec(&limited).unwrap().rlimits, vec![("RLIMIT_NOFILE".to_string(), 1024, 1024)]);
    }

    fn with_bind(source: &str, destination: &str) -> Spec {
        let mut s = spec(vec![]);
        let bind = oci_spec::runtime::MountBuilder::default()
            .destination(destination)
            .typ("bind")
            .source(source)
            .options(vec!["rbind".to_string()])
            .build()
            .unwrap();
        s.set_mounts(Some(vec![bind]));
        s
    }

    // Found by fuzz/ (cri_spec): a CRI mount's host path `/mnt/..` (and a destination `/../sysm`) reached the plan.
    #[test]
    fn mounts_whose_source_or_destination_climbs_with_dotdot_are_refused() {
        assert!(plan_from_spec(&with_bind("/var/lib/data", "/data")).is_ok());
        assert!(plan_from_spec(&with_bind("/var/lib/x..y/data", "/data..")).is_ok(), "only whole components");
        for (source, destination) in [("/mnt/..", "/data"), ("/h", "/data/../../etc"), ("/h", "data")] {
            assert!(
                matches!(plan_from_spec(&with_bind(source, destination)), Err(PlanError::Invalid(_))),
                "{source} on {destination}"
            );
        }
    }

    // Seen writing fuzz/'s cri_spec invariant: run_as_user 4294967295 became uid (uid_t)-1, which setresuid reads
    // as "unchanged": the container would have kept root.
    #[test]
    fn uid_and_gid_minus_one_are_refused_rather_than_left_as_root() {
        for (uid, gid, groups) in [(u32::MAX, 0, vec![]), (0, u32::MAX, vec![]), (1000, 1000, vec![1000, u32::MAX])] {
            let mut s = spec(vec![]);
            let user = s.process_mut().as_mut().unwrap().user_mut();
            user.set_uid(uid);
            user.set_gid(gid);
            user.set_additional_gids(Some(groups));
            assert!(matches!(plan_from_spec(&s), Err(PlanError::Invalid(_))), "{uid}:{gid}");
        }
    }

    #[test]
    fn masked_paths_and_cgroups_that_climb_are_refused() {
        let mut s = spec(vec![]);
        s.linux_mut().as_mut().unwrap().set_masked_paths(Some(vec!["/proc/../../etc".into()]));
        assert!(matches!(plan_from_spec(&s), Err(PlanError::Invalid(_))));
        let mut s = spec(vec![]);
        s.linux_mut().as_mut().unwrap().set_cgroups_path(Some("kubepods/../../escape/reef-c".into()));
        assert!(matches!(plan_from_spec(&s), Err(PlanError::Invalid(_))));
    }
}
