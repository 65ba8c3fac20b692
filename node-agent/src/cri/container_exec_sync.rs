use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1 as cri;

use crate::agent::Agent;
use crate::error::ReefError;

/// Each stream of an ExecSync keeps at most this much (kubelet's probes read far less).
const MAX_OUTPUT: usize = 16 << 20;

pub async fn handle(agent: Arc<Agent>, req: cri::ExecSyncRequest) -> Result<cri::ExecSyncResponse, ReefError> {
    let timeout = (req.timeout > 0).then(|| Duration::from_secs(req.timeout as u64));
    let (stdout, stderr, exit_code) = crate::blocking::run("exec task", move || {
        agent.containers.exec_sync(&agent.pods, &req.container_id, &req.cmd, timeout, MAX_OUTPUT)
    })
    .await?;
    Ok(cri::ExecSyncResponse { stdout, stderr, exit_code })
}
