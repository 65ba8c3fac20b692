use std::sync::Arc;

use k8s_cri::v1 as cri;

use crate::agent::Agent;
use crate::error::ReefError;
use crate::events::Action;

/// Removing an image that is not there succeeds: kubelet's image GC and critest both rely on it.
pub async fn handle(agent: &Arc<Agent>, req: cri::RemoveImageRequest) -> Result<cri::RemoveImageResponse, ReefError> {
    let name = req.image.map(|i| i.image).unwrap_or_default();
    if name.is_empty() {
        return Err(ReefError::InvalidArgument("image is required".into()));
    }
    // A container's rootfs uses the image's layers as overlay lowerdirs: deleting them under it would change
    // its files. Such an image stays until its containers are removed.
    let store = agent.puller.store().clone();
    let agent_ = agent.clone();
    let removed = crate::blocking::run("remove image task", move || {
        agent_.containers.remove_image(&store, &name).map(|id| (name, id))
    })
    .await?;
    match removed {
        (name, Some(id)) => {
            tracing::info!(image = %name, %id, "removed");
            super::image_pull::publish_image(agent, Action::Deleted, &id, &name);
        }
        (name, None) => tracing::debug!(image = %name, "not present, nothing to remove"),
    }
    Ok(cri::RemoveImageResponse {})
}
