use k8s_cri::v1 as cri;
use serde::Serialize;

use super::image_spec;
use super::images::ImageOut;
use crate::cli::InspectiArgs;
use crate::client::{Clients, status_error};

#[derive(Serialize)]
struct Inspect {
    status: ImageOut,
    info: serde_json::Value,
}

pub async fn run(clients: &Clients, args: &InspectiArgs) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for name in &args.images {
        let reply = clients
            .images()
            .image_status(cri::ImageStatusRequest { image: image_spec(name), verbose: true })
            .await
            .map_err(|s| status_error(&format!("inspect {name}"), s))?
            .into_inner();
        let Some(image) = reply.image else {
            missing.push(name.clone());
            continue;
        };
        let info = reply.info.get("info").and_then(|i| serde_json::from_str(i).ok()).unwrap_or(serde_json::Value::Null);
        out.push(Inspect { status: image.into(), info });
    }
    if !out.is_empty() {
        if out.len() == 1 {
            crate::output::print_structured(&out[0], args.output)?;
        } else {
            crate::output::print_structured(&out, args.output)?;
        }
    }
    match missing.as_slice() {
        [] => Ok(()),
        names => anyhow::bail!("no such image: {}", names.join(", ")),
    }
}
