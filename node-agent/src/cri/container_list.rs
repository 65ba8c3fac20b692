use std::sync::Arc;

use k8s_cri::v1 as cri;

use crate::agent::Agent;
use crate::containers::cri_status::cri_state;
use crate::error::ReefError;

pub async fn handle(
    agent: Arc<Agent>,
    req: cri::ListContainersRequest,
) -> Result<cri::ListContainersResponse, ReefError> {
    let filter = req.filter.unwrap_or_default();
    let selector = super::filter::Selector::from(&filter);
    let containers = crate::blocking::value("list containers task", move || {
        agent
            .containers
            .list()
            .into_iter()
            .filter(|c| selector.container(c))
            .filter_map(|c| {
                let (state, ..) = cri_state(&c, &agent.containers.observe(&agent.pods, &c));
                if filter.state.as_ref().is_some_and(|s| s.state != state) {
                    return None;
                }
                Some(cri::Container {
                    id: c.id.clone(),
                    pod_sandbox_id: c.pod_id.clone(),
                    metadata: Some(cri::ContainerMetadata { name: c.name.clone(), attempt: c.attempt }),
                    image: Some(cri::ImageSpec { image: c.image.clone(), ..Default::default() }),
                    image_ref: c.image_ref.clone(),
                    image_id: c.image_id.clone(),
                    state,
                    created_at: c.created_at,
                    labels: c.labels.clone().into_iter().collect(),
                    annotations: c.annotations.clone().into_iter().collect(),
                })
            })
            .collect()
    })
    .await?;
    Ok(cri::ListContainersResponse { containers })
}
