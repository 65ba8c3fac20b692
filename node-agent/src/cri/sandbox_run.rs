use std::sync::Arc;

use k8s_cri::v1 as cri;

use super::container_events::publish_pod;
use crate::agent::Agent;
use crate::error::ReefError;
use crate::events::Action;

pub async fn handle(
    agent: Arc<Agent>,
    req: cri::RunPodSandboxRequest,
) -> Result<cri::RunPodSandboxResponse, ReefError> {
    let config = req.config.ok_or_else(|| ReefError::InvalidArgument("pod sandbox config is required".into()))?;
    if agent.config.cgroup_driver == crate::config::CgroupDriver::Systemd {
        // Refused here, not at the first CreateContainer: the parent is the pod's, and so is the mistake.
        let parent = config.linux.as_ref().map(|l| l.cgroup_parent.as_str()).unwrap_or_default();
        crate::spec::pod_slice(parent)?;
    }
    let pod = crate::blocking::run("run pod task", move || {
        let pod = agent.pods.run(&config, &req.runtime_handler)?;
        agent.containers.watch_pod(&agent.pods, &pod.id);
        publish_pod(&agent, &pod, Action::Created);
        publish_pod(&agent, &pod, Action::Started);
        Ok::<_, ReefError>(pod)
    })
    .await?;
    tracing::info!(pod = %pod.id, name = %pod.name, namespace = %pod.namespace, "pod ready");
    Ok(cri::RunPodSandboxResponse { pod_sandbox_id: pod.id })
}
