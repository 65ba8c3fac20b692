//! The process: command, environment, working directory, terminal, user.

use k8s_cri::v1 as cri;
use reef_images::manifest::ContainerConfig as ImageConfig;
use reef_runtime::oci_spec::runtime::Spec;
use reef_runtime::users::{ResolvedUser, UserRequest, Who};

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

fn id(field: &'static str, value: i64) -> Result<u32, SpecError> {
    u32::try_from(value)
        .ok()
        .filter(|id| *id != reef_runtime::users::UNCHANGED_ID)
        .ok_or_else(|| SpecError::Invalid { field, reason: format!("{value} is not a valid id") })
}

fn who(s: &str) -> Who {
    s.parse::<u32>().map(Who::Id).unwrap_or_else(|_| Who::Name(s.to_string()))
}

/// Who the container runs as: the CRI's run_as_user (or run_as_username), else the image's `User`
/// (`user[:group]`), else root. Names are resolved later against the image's own /etc/passwd and /etc/group
/// (the spec stays pure); the group comes from run_as_group, else from the image's `User` when the user does.
pub fn user_request(sc: &cri::LinuxContainerSecurityContext, image: &ImageConfig) -> Result<UserRequest, SpecError> {
    let image_user = image.user.clone().unwrap_or_default();
    let (image_name, image_group) = match image_user.split_once(':') {
        Some((u, g)) => (u.to_string(), Some(g.to_string()).filter(|g| !g.is_empty())),
        None => (image_user.clone(), None),
    };
    let (user, group_from_image) = match (&sc.run_as_user, sc.run_as_username.as_str()) {
        (Some(uid), _) => (Who::Id(id("run_as_user", uid.value)?), None),
        (None, name) if !name.is_empty() => (who(name), None),
        _ if !image_name.is_empty() => (who(&image_name), image_group.as_deref().map(who)),
        _ => (Who::Id(0), None),
    };
    let group = match &sc.run_as_group {
        Some(gid) => Some(Who::Id(id("run_as_group", gid.value)?)),
        None => group_from_image,
    };
    let supplemental =
        sc.supplemental_groups.iter().map(|g| id("supplemental_groups", *g)).collect::<Result<Vec<_>, _>>()?;
    let merge = sc.supplemental_groups_policy != cri::SupplementalGroupsPolicy::Strict as i32;
    Ok(UserRequest { user, group, supplemental, merge_image_groups: merge })
}

pub fn with_user(spec: &mut Spec, resolved: &ResolvedUser) {
    let user = process(spec).user_mut();
    user.set_uid(resolved.uid);
    user.set_gid(resolved.gid);
    user.set_additional_gids(Some(resolved.additional_gids.clone()).filter(|g| !g.is_empty()));
}

/// The image's stop signal (SIGTERM when it names none or one this host lacks).
pub fn stop_signal(image: &ImageConfig) -> i32 {
    use nix::sys::signal::Signal;
    image
        .stop_signal
        .as_deref()
        .and_then(|s| {
            let name = if s.starts_with("SIG") { s.to_string() } else { format!("SIG{s}") };
            name.parse::<Signal>().ok().or_else(|| s.parse::<i32>().ok().and_then(|n| Signal::try_from(n).ok()))
        })
        .unwrap_or(Signal::SIGTERM) as i32
}

#[cfg(test)]
mod tests {
    use k8s_cri::v1 as cri;

    use super::*;
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
    fn the_user_comes_from_the_security_context_then_the_image_then_root() {
        use reef_runtime::users::Who;
        let sc = |f: &dyn Fn(&mut cri::LinuxContainerSecurityContext)| {
            let mut sc = cri::LinuxContainerSecurityContext::default();
            f(&mut sc);
            sc
        };
        let image = |u: &str| ImageConfig { user: Some(u.into()), ..Default::default() };
        let r = user_request(&sc(&|_| {}), &image("")).unwrap();
        assert_eq!((r.user, r.group, r.merge_image_groups), (Who::Id(0), None, true));
        let r = user_request(&sc(&|_| {}), &image("app:staff")).unwrap();
        assert_eq!((r.user, r.group), (Who::Name("app".into()), Some(Who::Name("staff".into()))));
        let r = user_request(&sc(&|_| {}), &image("1000:1000")).unwrap();
        assert_eq!((r.user, r.group), (Who::Id(1000), Some(Who::Id(1000))));
        let r = user_request(
            &sc(&|s| {
                s.run_as_user = Some(cri::Int64Value { value: 2000 });
                s.supplemental_groups = vec![10, 20];
                s.supplemental_groups_policy = cri::SupplementalGroupsPolicy::Strict as i32;
            }),
            &image("app:staff"),
        )
        .unwrap();
        assert_eq!((r.user, r.group, r.supplemental, r.merge_image_groups), (Who::Id(2000), None, vec![10, 20], false));
        let r = user_request(&sc(&|s| s.run_as_username = "nobody".into()), &image("app")).unwrap();
        assert_eq!(r.user, Who::Name("nobody".into()));
        let err = user_request(&sc(&|s| s.run_as_user = Some(cri::Int64Value { value: -1 })), &image("")).unwrap_err();
        assert!(matches!(err, SpecError::Invalid { field: "run_as_user", .. }));
    }

    #[test]
    fn the_resolved_user_lands_in_the_spec() {
        let mut spec = reef_runtime::oci_spec::runtime::Spec::default();
        with_user(&mut spec, &ResolvedUser { uid: 1000, gid: 2000, additional_gids: vec![2000, 10] });
        let user = spec.process().as_ref().unwrap().user().clone();
        assert_eq!((user.uid(), user.gid()), (1000, 2000));
        assert_eq!(user.additional_gids().clone().unwrap(), [2000, 10]);
    }

    #[test]
    fn the_stop_signal_comes_from_the_image_by_name_or_number() {
        let image = |s: Option<&str>| ImageConfig { stop_signal: s.map(String::from), ..Default::default() };
        assert_eq!(stop_signal(&image(None)), nix::sys::signal::Signal::SIGTERM as i32);
        assert_eq!(stop_signal(&image(Some("SIGQUIT"))), nix::sys::signal::Signal::SIGQUIT as i32);
        assert_eq!(stop_signal(&image(Some("INT"))), nix::sys::signal::Signal::SIGINT as i32);
        assert_eq!(stop_signal(&image(Some("9"))), 9);
        assert_eq!(stop_signal(&image(Some("SIGBOGUS"))), nix::sys::signal::Signal::SIGTERM as i32);
    }
}
