use std::sync::Arc;

use k8s_cri::v1 as cri;

use crate::agent::Agent;
use crate::error::ReefError;
use crate::streaming::remotecommand::Options;
use crate::streaming::{Pending, exec::ExecRequest};

/// Exec: checks the request as kubelet's streaming library does, then answers with a single-use URL on the
/// streaming server, where the command runs once the client connects.
pub async fn handle(agent: Arc<Agent>, req: cri::ExecRequest) -> Result<cri::ExecResponse, ReefError> {
    let opts = validate(&req.container_id, req.tty, req.stdin, req.stdout, req.stderr)?;
    if req.cmd.is_empty() {
        return Err(ReefError::InvalidArgument("cmd must not be empty".into()));
    }
    let id = running_container(&agent, &req.container_id).await?;
    let url = agent.streaming.url(Pending::Exec(ExecRequest { container_id: id, cmd: req.cmd, opts }))?;
    Ok(cri::ExecResponse { url })
}

/// Kubelet's rules for Exec and Attach requests.
pub fn validate(container_id: &str, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> Result<Options, ReefError> {
    if container_id.is_empty() {
        return Err(ReefError::InvalidArgument("missing required container_id".into()));
    }
    if tty && stderr {
        return Err(ReefError::InvalidArgument("tty and stderr cannot both be true".into()));
    }
    if !stdin && !stdout && !stderr {
        return Err(ReefError::InvalidArgument("one of stdin, stdout, or stderr must be set".into()));
    }
    Ok(Options { stdin, stdout, stderr, tty })
}

/// The full id of a running container, or NotFound / FailedPrecondition.
pub async fn running_container(agent: &Arc<Agent>, id: &str) -> Result<String, ReefError> {
    let c = agent.containers.get(id).ok_or_else(|| ReefError::NotFound(format!("container {id:?} not found")))?;
    let a = Arc::clone(agent);
    let record = c.clone();
    let observed = crate::blocking::value("container state", move || a.containers.observe(&a.pods, &record)).await?;
    match observed {
        crate::containers::Observed::Running { .. } => Ok(c.id),
        _ => Err(ReefError::FailedPrecondition(format!("container {} is not running", c.id))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_like_kubelet_checks_them() {
        assert!(validate("", false, false, true, false).is_err());
        assert!(validate("c", true, true, true, true).unwrap_err().to_string().contains("tty and stderr"));
        assert!(validate("c", false, false, false, false).unwrap_err().to_string().contains("one of stdin"));
        assert!(validate("c", true, true, true, false).is_ok());
    }
}
