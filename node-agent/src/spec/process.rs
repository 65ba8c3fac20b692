//! The process: command, environment, working directory, terminal, user.

use k8s_cri::v1 as cri;
use reef_images::manifest::ContainerConfig as ImageConfig;
use reef_runtime::oci_spec::runtime::Spec;

use super::SpecError;

fn process(spec: &mut Spec) -> &mut reef_runtime::oci_spec::runtime::Process {
    spec.process_mut().get_or_insert_with(Default::default)
}

/// Kubernetes' rules: `command` replaces the image's entrypoint *and* cmd; `args` alone replace only the cmd.
pub fn with_args(spec: &mut Spec, c: &cri::ContainerConfig, image: &ImageConfig) -> Result<(), SpecError> {
    let entrypoint = image.entrypoint.clone().unwrap_or_default();
    let cmd = image.cmd.clone().unwrap_or_default();
    let args: Vec<String> = match (c.command.is_empty(), c.args.is_empty()) {
        (false, _) => c.command.iter().chain(&c.args).cloned().collect(),
        (true, false) => entrypoint.into_iter().chain(c.args.iter().cloned()).collect(),
        (true, true) => entrypoint.into_iter().chain(cmd).collect(),
    };
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    process(spec).set_args(Some(args));
    Ok(())
}

/// Image variables first, the container's override them by name, order of first appearance kept.
pub fn with_env(spec: &mut Spec, c: &cri::ContainerConfig, image: &ImageConfig) {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(key, _)| key == k) {
        Some(entry) => entry.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for e in image.env.iter().flatten() {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        set(k, v);
    }
    for kv in &c.envs {
        set(&kv.key, &kv.value);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(0, ("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()));
    }
    process(spec).set_env(Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()));
}

pub fn with_cwd(spec: &mut Spec, c: &cri::ContainerConfig, image: &ImageConfig) {
    let cwd = Some(c.working_dir.clone())
        .filter(|d| !d.is_empty())
        .or_else(|| image.working_dir.clone().filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/".into());
    process(spec).set_cwd(cwd.into());
}

pub fn with_tty(spec: &mut Spec, c: &cri::ContainerConfig) {
    process(spec).set_terminal(Some(c.tty));
}

/// Numeric users only here; `run_as_username` and the image's named user need the rootfs's /etc/passwd, which
/// the caller resolves before building (the spec stays pure).
pub fn with_user(spec: &mut Spec, sc: &cri::LinuxContainerSecurityContext) -> Result<(), SpecError> {
    let user = process(spec).user_mut();
    if let Some(uid) = &sc.run_as_user {
        let uid = u32::try_from(uid.value)
            .map_err(|_| SpecError::Invalid { field: "run_as_user", reason: format!("{} is not a uid", uid.value) })?;
        user.set_uid(uid);
    }
    if let Some(gid) = &sc.run_as_group {
        let gid = u32::try_from(gid.value)
            .map_err(|_| SpecError::Invalid { field: "run_as_group", reason: format!("{} is not a gid", gid.value) })?;
        user.set_gid(gid);
    }
    if !sc.supplemental_groups.is_empty() {
        let groups = sc
            .supplemental_groups
            .iter()
            .map(|g| {
                u32::try_from(*g).map_err(|_| SpecError::Invalid {
                    field: "supplemental_groups",
                    reason: format!("{g} is not a gid"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        user.set_additional_gids(Some(groups));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1 as cri;

    use crate::spec::SpecError;
    use crate::spec::fixture::build_with;

    fn args_of(spec: &reef_runtime::oci_spec::runtime::Spec) -> Vec<String> {
        spec.process().as_ref().unwrap().args().clone().unwrap()
    }

    #[test]
    fn command_replaces_entrypoint_and_cmd_args_replace_only_cmd() {
        assert_eq!(args_of(&build_with(|_, _, _| {}).unwrap()), ["/entry", "default-arg"]);
        let spec = build_with(|c, _, _| c.args = vec!["x".into()]).unwrap();
        assert_eq!(args_of(&spec), ["/entry", "x"]);
        let spec = build_with(|c, _, _| {
            c.command = vec!["sh".into()];
            c.args = vec!["-c".into(), "true".into()];
        })
        .unwrap();
        assert_eq!(args_of(&spec), ["sh", "-c", "true"]);
        let err = build_with(|_, _, i| {
            i.entrypoint = None;
            i.cmd = None;
        })
        .unwrap_err();
        assert_eq!(err, SpecError::NoCommand);
    }

    #[test]
    fn container_env_overrides_the_image_by_name() {
        let spec = build_with(|c, _, _| c.envs.push(cri::KeyValue { key: "NEW".into(), value: "a=b".into() })).unwrap();
        let env = spec.process().as_ref().unwrap().env().clone().unwrap();
        assert_eq!(env, ["PATH=/usr/bin:/bin", "FOO=container", "NEW=a=b"]);
        let spec = build_with(|_, _, i| i.env = None).unwrap();
        assert!(spec.process().as_ref().unwrap().env().as_ref().unwrap()[0].starts_with("PATH=/usr/local/sbin"));
    }

    #[test]
    fn working_dir_comes_from_the_container_then_the_image_then_root() {
        let cwd = |s: &reef_runtime::oci_spec::runtime::Spec| s.process().as_ref().unwrap().cwd().display().to_string();
        assert_eq!(cwd(&build_with(|_, _, _| {}).unwrap()), "/srv");
        assert_eq!(cwd(&build_with(|c, _, _| c.working_dir = "/work".into()).unwrap()), "/work");
        assert_eq!(cwd(&build_with(|_, _, i| i.working_dir = None).unwrap()), "/");
    }

    #[test]
    fn users_and_groups_are_numeric_and_checked() {
        let spec = build_with(|c, _, _| {
            let sc = c.linux.as_mut().unwrap().security_context.as_mut().unwrap();
            sc.run_as_user = Some(cri::Int64Value { value: 1000 });
            sc.run_as_group = Some(cri::Int64Value { value: 2000 });
            sc.supplemental_groups = vec![10, 20];
        })
        .unwrap();
        let user = spec.process().as_ref().unwrap().user().clone();
        assert_eq!((user.uid(), user.gid()), (1000, 2000));
        assert_eq!(user.additional_gids().clone().unwrap(), [10, 20]);
        let err = build_with(|c, _, _| {
            c.linux.as_mut().unwrap().security_context.as_mut().unwrap().run_as_user =
                Some(cri::Int64Value { value: -1 });
        })
        .unwrap_err();
        assert!(matches!(err, SpecError::Invalid { field: "run_as_user", .. }));
    }
}
