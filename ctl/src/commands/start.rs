//! `rctl start ID...`: StartContainer for each, the id printed when done, failures reported at the end.

use k8s_cri::v1 as cri;

use crate::cli::IdsArgs;
use crate::client::{Clients, status_error};

pub async fn run(clients: &Clients, args: &IdsArgs) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for id in &args.ids {
        let container_id = crate::resolve::container(clients, id).await?;
        match clients.runtime().start_container(cri::StartContainerRequest { container_id }).await {
            Ok(_) => println!("{id}"),
            Err(s) => failed.push(status_error(&format!("start {id}"), s).to_string()),
        }
    }
    if failed.is_empty() { Ok(()) } else { anyhow::bail!("{}", failed.join("; ")) }
}
