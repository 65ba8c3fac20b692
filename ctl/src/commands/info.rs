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
        .status(k8s_cri::v1::StatusRequest { verbose: false })
        .await
        .map_err(|s| status_error("status", s))?
        .into_inner();
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
