//! `rctl create POD CONTAINER-CONFIG POD-CONFIG`: CreateContainer as crictl does it; prints the container id.

use k8s_cri::v1 as cri;

use crate::client::{Clients, status_error};

pub async fn run(
    clients: &Clients,
    pod: &str,
    container: cri::ContainerConfig,
    sandbox: cri::PodSandboxConfig,
) -> anyhow::Result<()> {
    let id = clients
        .runtime()
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.to_string(),
            config: Some(container),
            sandbox_config: Some(sandbox),
        })
        .await
        .map_err(|s| status_error(&format!("create container in {pod}"), s))?
        .into_inner()
        .container_id;
    println!("{id}");
    Ok(())
}
