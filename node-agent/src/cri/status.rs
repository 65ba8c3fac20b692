use std::collections::HashMap;
use std::sync::Arc;

use k8s_cri::v1 as cri;

use crate::agent::Agent;
use crate::error::ReefError;

pub async fn handle(agent: &Arc<Agent>, req: cri::StatusRequest) -> Result<cri::StatusResponse, ReefError> {
    // A netlink round trip or a directory read: off the async workers, so Status answers while they are busy.
    let a = Arc::clone(agent);
    let network = crate::blocking::value("network readiness", move || a.pods.network.ready()).await?;
    let conditions = vec![
        cri::RuntimeCondition {
            r#type: "RuntimeReady".into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        cri::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: network.is_ok(),
            reason: if network.is_ok() { String::new() } else { "NetworkPluginNotReady".into() },
            message: network.err().map(|e| format!("reef: {e}")).unwrap_or_default(),
        },
    ];
    let mut info = HashMap::new();
    if req.verbose {
        info.insert("config".to_string(), agent.config.redacted_json());
        info.insert("apparmor".to_string(), apparmor_info());
    }
    Ok(cri::StatusResponse {
        status: Some(cri::RuntimeStatus { conditions }),
        info,
        runtime_handlers: vec![cri::RuntimeHandler {
            name: String::new(),
            features: Some(cri::RuntimeHandlerFeatures {
                recursive_read_only_mounts: true,
                user_namespaces: reef_runtime::userns::kernel_supports_pod_user_namespaces(),
            }),
        }],
        // Groups are computed from the image's /etc/group under Merge and left out under Strict.
        features: Some(cri::RuntimeFeatures { supplemental_groups_policy: true }),
    })
}

/// Whether containers can be confined by AppArmor here, and what RuntimeDefault means (verbose info, JSON as the
/// CRI's info values are): `{"enabled":true,"runtime_default":"reef-default"}`, or `null` where it runs
/// unconfined.
fn apparmor_info() -> String {
    let enabled = reef_runtime::apparmor::enabled();
    serde_json::json!({
        "enabled": enabled,
        "runtime_default": enabled.then_some(reef_runtime::apparmor::DEFAULT_PROFILE),
    })
    .to_string()
}
