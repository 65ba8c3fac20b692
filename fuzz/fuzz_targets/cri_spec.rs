//! A CreateContainerRequest (with the image config, passwd and group it meets on the node) through node-agent's
//! create path, as far as it is pure: validation, the user request and its resolution, the seccomp filter (a
//! Localhost profile's bytes fuzzed too), `spec::build`, then `plan_from_spec`. Never a panic; any plan made keeps
//! `check_plan`'s invariants.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use reef_fuzz::{SpecCase, check_plan};
use reef_node_agent::fuzzing::{PodNamespaces, SpecInput, build_spec, cgroup_path, seccomp_filter, validate_container};

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
    // So does validation (a host path it looks up is a fact of the node, not of the input: most just miss).
    if validate_container(&config, &sandbox).is_err() {
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
    let default_parent = if case.systemd_cgroups { "reef.slice" } else { "reef" };
    // A parent the driver refuses ends the case, as CreateContainer would.
    let Ok(cgroup) = cgroup_path(case.systemd_cgroups, parent, default_parent, ID) else { return };
    let profile = case.seccomp_profile.clone();
    let Ok(seccomp) = seccomp_filter(&security, move |_| Ok(profile)) else { return };
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
        seccomp: &seccomp,
    };
    let Ok(spec) = build_spec(&input) else { return };
    if let Ok(plan) = reef_runtime::plan::plan_from_spec(&spec) {
        check_plan(&plan);
    }
});
