use k8s_cri::v1 as cri;

use crate::agent::Agent;
use crate::error::ReefError;
use crate::events::Action;

/// Removing an image that is not there succeeds: kubelet's image GC and critest both rely on it.
pub async fn handle(agent: &Agent, req: cri::RemoveImageRequest) -> Result<cri::RemoveImageResponse, ReefError> {
    let name = req.image.map(|i| i.image).unwrap_or_default();
    if name.is_empty() {
        return Err(ReefError::InvalidArgument("image is required".into()));
    }
    // A container's rootfs uses the image's layers as overlay lowerdirs: deleting them under it would change
    // its files. Such an image stays until its containers are removed.
    if let Some(image) = agent.puller.store().resolve(&name)
        && let Some(c) = agent.containers.list().iter().find(|c| c.image_id == image.id)
    {
        return Err(ReefError::FailedPrecondition(format!(
            "image {name:?} is in use by container {} ({}): remove the container first",
            c.id, c.name
        )));
    }
    let store = agent.puller.store().clone();
    let removed = tokio::task::spawn_blocking(move || store.remove(&name).map(|id| (name, id)))
        .await
        .map_err(|e| ReefError::Internal(format!("remove image task: {e}")))?;
    match removed {
        Ok((name, Some(id))) => {
            tracing::info!(image = %name, %id, "removed");
            super::image_pull::publish_image(agent, Action::Deleted, &id, &name);
        }
        Ok((name, None)) => tracing::debug!(image = %name, "not present, nothing to remove"),
        Err(source) => return Err(ReefError::Image { image: String::new(), source }),
    }
    Ok(cri::RemoveImageResponse {})
}
