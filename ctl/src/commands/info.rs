use serde::Serialize;

use crate::cli::{Format, FormatArgs};
use crate::client::{Clients, status_error};

#[derive(Serialize)]
struct Info {
    version: String,
    pid: u32,
    root_dir: String,
    state_dir: String,
    socket: String,
    images: u64,
    conditions: Vec<Condition>,
    /// `{"enabled": bool, "runtime_default": "reef-default" | null}`, from the runtime's verbose status.
    apparmor: serde_json::Value,
    config: serde_json::Value,
}

#[derive(Serialize)]
struct Condition {
    r#type: String,
    status: bool,
    reason: String,
    message: String,
}

pub async fn run(clients: &Clients, args: &FormatArgs) -> anyhow::Result<()> {
    let info =
        clients.reef().info(reef_api::v1::InfoRequest {}).await.map_err(|s| status_error("info", s))?.into_inner();
    let status = clients
        .runtime()
        .status(k8s_cri::v1::StatusRequest { verbose: true })
        .await
        .map_err(|s| status_error("status", s))?
        .into_inner();
    let apparmor =
        status.info.get("apparmor").and_then(|j| serde_json::from_str(j).ok()).unwrap_or(serde_json::Value::Null);
    let conditions = status
        .status
        .map(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .map(|c| Condition { r#type: c.r#type, status: c.status, reason: c.reason, message: c.message })
        .collect();
    let out = Info {
        version: info.version,
        pid: info.pid,
        root_dir: info.root_dir,
        state_dir: info.state_dir,
        socket: info.socket,
        images: info.image_count,
        conditions,
        apparmor,
        config: serde_json::from_str(&info.config_json).unwrap_or(serde_json::Value::Null),
    };
    match args.output {
        Format::Table => {
            println!("Version:    {}", out.version);
            println!("PID:        {}", out.pid);
            println!("Socket:     {}", out.socket);
            println!("Root dir:   {}", out.root_dir);
            println!("State dir:  {}", out.state_dir);
            println!("Images:     {}", out.images);
            println!("AppArmor:   {}", apparmor_line(&out.apparmor));
            println!("Conditions:");
            for c in &out.conditions {
                let detail = if c.status { String::new() } else { format!(" ({}: {})", c.reason, c.message) };
                println!("  {}: {}{detail}", c.r#type, c.status);
            }
            Ok(())
        }
        f => crate::output::print_structured(&out, f),
    }
}

fn apparmor_line(a: &serde_json::Value) -> String {
    match (a["enabled"].as_bool(), a["runtime_default"].as_str()) {
        (Some(true), Some(profile)) => format!("enabled (RuntimeDefault: {profile})"),
        (Some(true), None) => "enabled".into(),
        (Some(false), _) => "not enabled (RuntimeDefault runs unconfined; Localhost profiles are refused)".into(),
        (None, _) => "unknown (an older reefd)".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_apparmor_line_says_what_runtime_default_means_here() {
        let on = serde_json::json!({"enabled": true, "runtime_default": "reef-default"});
        assert_eq!(super::apparmor_line(&on), "enabled (RuntimeDefault: reef-default)");
        let off = serde_json::json!({"enabled": false, "runtime_default": null});
        assert!(super::apparmor_line(&off).starts_with("not enabled"));
        assert!(super::apparmor_line(&serde_json::Value::Null).starts_with("unknown"));
    }
}
