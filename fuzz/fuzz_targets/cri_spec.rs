//! A CreateContainerRequest (with the image config, passwd and group it meets on the node) through node-agent's
//! create path, as far as it is pure: the user request and its resolution, `spec::build`, the seccomp choice and
//! a Localhost profile, then `plan_from_spec`. Never a panic; any plan made keeps `check_plan`'s invariants.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use reef_fuzz::{SpecCase, cgroup_path, check_plan, systemd_cgroup_path};
use reef_node_agent::fuzzing::{PodNamespaces, Seccomp, SpecInput, build_spec, parse_seccomp_profile, seccomp_choice};

const ID: &str = "0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let Ok(case) = SpecCase::decode(data) else { return };
    let Some(request) = case.request else { return };
    let Some(config) = request.config else { return };
    let sandbox = request.sandbox_config.unwrap_or_default();
    // create() refuses these before anything else.
    if config.metadata.as_ref().is_none_or(|m| m.name.is_empty()) {
        return;
    }
    let image = serde_json::from_slice::<reef_images::manifest::ImageConfig>(&case.image_config)
        .ok()
        .and_then(|c| c.config)
        .unwrap_or_default();
    let security = config.linux.as_ref().and_then(|l| l.security_context.clone()).unwrap_or_default();
    let Ok(user_request) = reef_node_agent::fuzzing::user_request(&security, &image) else { return };
    let Ok(user) = reef_runtime::users::resolve_with(&user_request, Some(&case.passwd), Some(&case.group)) else {
        return;
    };
    let pod = PodNamespaces {
        network: Some("/run/reef/pods/p/ns/net".into()),
        ipc: Some("/run/reef/pods/p/ns/ipc".into()),
        uts: Some("/run/reef/pods/p/ns/uts".into()),
        pid: None,
        user: case.pod_user_namespace.then(|| "/run/reef/pods/p/ns/user".into()),
    };
    let parent = sandbox.linux.as_ref().map(|l| l.cgroup_parent.as_str()).unwrap_or_default();
    let cgroup = if case.systemd_cgroups {
        systemd_cgroup_path(parent, "reef.slice", ID)
    } else {
        cgroup_path(parent, "reef", ID)
    };
    let input = SpecInput {
        container: &config,
        sandbox: &sandbox,
        image: &image,
        pod: &pod,
        rootfs: format!("/run/reef/containers/{ID}/rootfs").into(),
        cgroup_path: cgroup,
        user: &user,
        devices: &[],
        available_capabilities: &[],
    };
    let Ok(mut spec) = build_spec(&input) else { return };
    match seccomp_choice(&security) {
        Err(_) => return,
        Ok(Seccomp::Localhost(path)) => {
            let Ok(profile) = parse_seccomp_profile(&path, &case.seccomp_profile) else { return };
            if let Some(linux) = spec.linux_mut() {
                linux.set_seccomp(Some(profile));
            }
        }
        Ok(_) => {}
    }
    if let Ok(plan) = reef_runtime::plan::plan_from_spec(&spec) {
        check_plan(&plan);
    }
});
