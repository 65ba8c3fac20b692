//! stop, rm, stopp, rmp: each id in turn, the id printed when done, failures reported at the end.

use k8s_cri::v1 as cri;

use crate::cli::{IdsArgs, RmArgs, StopArgs};
use crate::client::{Clients, status_error};

fn finish(failed: Vec<String>) -> anyhow::Result<()> {
    match failed.as_slice() {
        [] => Ok(()),
        _ => anyhow::bail!("{}", failed.join("; ")),
    }
}

pub async fn stop(clients: &Clients, args: &StopArgs) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for id in &args.containers {
        let container_id = crate::resolve::container(clients, id).await?;
        match clients.runtime().stop_container(cri::StopContainerRequest { container_id, timeout: args.time }).await {
            Ok(_) => println!("{id}"),
            Err(s) => failed.push(status_error(&format!("stop {id}"), s).to_string()),
        }
    }
    finish(failed)
}

pub async fn rm(clients: &Clients, args: &RmArgs) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for id in &args.containers {
        let resolved = crate::resolve::container(clients, id).await?;
        let status = clients
            .runtime()
            .container_status(cri::ContainerStatusRequest { container_id: resolved.clone(), verbose: false })
            .await;
        let running = status
            .as_ref()
            .ok()
            .and_then(|r| r.get_ref().status.as_ref())
            .is_some_and(|s| s.state == cri::ContainerState::ContainerRunning as i32);
        if running && !args.force {
            failed.push(format!("container {id} is running: stop it first or use -f"));
            continue;
        }
        match clients.runtime().remove_container(cri::RemoveContainerRequest { container_id: resolved }).await {
            Ok(_) => println!("{id}"),
            Err(s) => failed.push(status_error(&format!("remove {id}"), s).to_string()),
        }
    }
    finish(failed)
}

pub async fn stopp(clients: &Clients, args: &IdsArgs) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for id in &args.ids {
        let pod_sandbox_id = crate::resolve::pod(clients, id).await?;
        match clients.runtime().stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id }).await {
            Ok(_) => println!("Stopped pod {id}"),
            Err(s) => failed.push(status_error(&format!("stop pod {id}"), s).to_string()),
        }
    }
    finish(failed)
}

pub async fn rmp(clients: &Clients, args: &IdsArgs) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for id in &args.ids {
        let pod_sandbox_id = crate::resolve::pod(clients, id).await?;
        match clients.runtime().remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id }).await {
            Ok(_) => println!("Removed pod {id}"),
            Err(s) => failed.push(status_error(&format!("remove pod {id}"), s).to_string()),
        }
    }
    finish(failed)
}
