use k8s_cri::v1 as cri;
use serde_json::json;

use crate::cli::InspectArgs;
use crate::client::{Clients, status_error};

fn info_json(info: &std::collections::HashMap<String, String>) -> serde_json::Value {
    info.get("info").and_then(|i| serde_json::from_str(i).ok()).unwrap_or(serde_json::Value::Null)
}

pub async fn container(clients: &Clients, args: &InspectArgs) -> anyhow::Result<()> {
    for arg in &args.ids {
        let id = &crate::resolve::container(clients, arg).await?;
        let reply = clients
            .runtime()
            .container_status(cri::ContainerStatusRequest { container_id: id.clone(), verbose: true })
            .await
            .map_err(|s| status_error(&format!("inspect {id}"), s))?
            .into_inner();
        let s = reply.status.unwrap_or_default();
        let out = json!({
            "id": s.id,
            "name": s.metadata.map(|m| m.name).unwrap_or_default(),
            "state": cri::ContainerState::try_from(s.state).map(|x| x.as_str_name()).unwrap_or("UNKNOWN"),
            "createdAt": s.created_at,
            "startedAt": s.started_at,
            "finishedAt": s.finished_at,
            "exitCode": s.exit_code,
            "reason": s.reason,
            "image": s.image.map(|i| i.image).unwrap_or_default(),
            "imageRef": s.image_ref,
            "logPath": s.log_path,
            "labels": s.labels,
            "info": info_json(&reply.info),
        });
        crate::output::print_structured(&out, args.output)?;
    }
    Ok(())
}

pub async fn pod(clients: &Clients, args: &InspectArgs) -> anyhow::Result<()> {
    for arg in &args.ids {
        let id = &crate::resolve::pod(clients, arg).await?;
        let reply = clients
            .runtime()
            .pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: id.clone(), verbose: true })
            .await
            .map_err(|s| status_error(&format!("inspect pod {id}"), s))?
            .into_inner();
        let s = reply.status.unwrap_or_default();
        let meta = s.metadata.unwrap_or_default();
        let out = json!({
            "id": s.id,
            "name": meta.name,
            "namespace": meta.namespace,
            "uid": meta.uid,
            "state": cri::PodSandboxState::try_from(s.state).map(|x| x.as_str_name()).unwrap_or("UNKNOWN"),
            "createdAt": s.created_at,
            "labels": s.labels,
            "info": info_json(&reply.info),
        });
        crate::output::print_structured(&out, args.output)?;
    }
    Ok(())
}
