//! `rctl runp FILE`: RunPodSandbox from a crictl-style PodSandboxConfig file; prints the pod id.

use std::path::Path;

use k8s_cri::v1 as cri;

use crate::client::{Clients, status_error};

pub async fn run(clients: &Clients, config: cri::PodSandboxConfig, file: &Path) -> anyhow::Result<()> {
    let id = clients
        .runtime()
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config), runtime_handler: String::new() })
        .await
        .map_err(|s| status_error(&format!("run pod from {}", file.display()), s))?
        .into_inner()
        .pod_sandbox_id;
    println!("{id}");
    Ok(())
}
