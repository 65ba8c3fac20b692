use reef_api::v1 as api;

use crate::agent::Agent;
use crate::error::ReefError;

pub async fn handle(agent: &Agent, _req: api::InfoRequest) -> Result<api::InfoResponse, ReefError> {
    let c = &agent.config;
    Ok(api::InfoResponse {
        version: env!("CARGO_PKG_VERSION").into(),
        root_dir: c.root_dir.display().to_string(),
        state_dir: c.state_dir.display().to_string(),
        socket: c.socket.display().to_string(),
        config_json: c.redacted_json(),
        pid: std::process::id(),
        started_at: agent.started_at,
        image_count: agent.puller.store().count() as u64,
    })
}
