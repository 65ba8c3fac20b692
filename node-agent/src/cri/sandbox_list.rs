use k8s_cri::v1 as cri;

use crate::agent::Agent;
use crate::error::ReefError;
use crate::pods::cri_status::{metadata, to_cri_state};

pub async fn handle(agent: &Agent, req: cri::ListPodSandboxRequest) -> Result<cri::ListPodSandboxResponse, ReefError> {
    let filter = req.filter.unwrap_or_default();
    let selector = super::filter::Selector::from(&filter);
    let items = agent
        .pods
        .list()
        .into_iter()
        .filter(|p| selector.pod(p))
        .filter(|p| filter.state.as_ref().is_none_or(|s| s.state == to_cri_state(p.state)))
        .map(|p| cri::PodSandbox {
            id: p.id.clone(),
            metadata: Some(metadata(&p)),
            state: to_cri_state(p.state),
            created_at: p.created_at,
            labels: p.labels.clone().into_iter().collect(),
            annotations: p.annotations.clone().into_iter().collect(),
            runtime_handler: p.runtime_handler.clone(),
        })
        .collect();
    Ok(cri::ListPodSandboxResponse { items })
}
