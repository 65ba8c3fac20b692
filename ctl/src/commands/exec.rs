use std::io::Write;

use k8s_cri::v1 as cri;

use crate::ExitStatus;
use crate::cli::ExecArgs;
use crate::client::{Clients, status_error};

/// Prints the command's output and exits with its status, like `docker exec`.
pub async fn run(clients: &Clients, args: &ExecArgs, timeout_secs: u64) -> anyhow::Result<()> {
    let container_id = crate::resolve::container(clients, &args.container).await?;
    let reply = clients
        .runtime()
        .exec_sync(cri::ExecSyncRequest { container_id, cmd: args.command.clone(), timeout: timeout_secs as i64 })
        .await
        .map_err(|s| status_error(&format!("exec in {}", args.container), s))?
        .into_inner();
    std::io::stdout().write_all(&reply.stdout)?;
    std::io::stderr().write_all(&reply.stderr)?;
    if reply.exit_code != 0 {
        return Err(ExitStatus(reply.exit_code).into());
    }
    Ok(())
}
