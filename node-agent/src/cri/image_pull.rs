use std::sync::Arc;

use k8s_cri::v1 as cri;
use reef_images::reference::ImageRef;
use reef_images::registry::Credentials;
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::error::ReefError;
use crate::events::{Action, Event, Subject};

/// The pull runs in a task of its own, stopped when this call's future is dropped: kubelet's deadline passing
/// (`instrument::call` answers DeadlineExceeded) or the client going away. The task then still runs the pull's
/// cleanup to its end, so a pull nobody waits for leaves nothing in the store.
pub async fn handle(agent: &Arc<Agent>, req: cri::PullImageRequest) -> Result<cri::PullImageResponse, ReefError> {
    let image = req.image.map(|i| i.image).unwrap_or_default();
    let reference = parse(&image)?;
    let credentials = credentials_from_auth(req.auth.as_ref(), &reference);
    let cancel = CancellationToken::new();
    let _cancel_when_dropped = cancel.clone().drop_guard();
    let pull = tokio::spawn({
        let (agent, reference) = (Arc::clone(agent), reference.clone());
        async move { agent.puller.pull(&reference, &credentials, None, &cancel).await }
    });
    let record = pull
        .await
        .map_err(|e| ReefError::Internal(format!("pull task of {reference}: {e}")))?
        .map_err(|source| ReefError::Pull { image: reference.to_string(), source })?;
    tracing::info!(image = %reference, id = %record.id, "pulled");
    publish_image(agent, Action::Pulled, &record.id, &reference.to_string());
    Ok(cri::PullImageResponse { image_ref: record.id })
}

pub fn publish_image(agent: &Agent, action: Action, id: &str, name: &str) {
    agent.events.publish(|_| Some(Event::new(Subject::Image, action, id, name, "")));
}

pub fn parse(image: &str) -> Result<ImageRef, ReefError> {
    if image.is_empty() {
        return Err(ReefError::InvalidArgument("image is required".into()));
    }
    ImageRef::parse(image).map_err(|e| ReefError::InvalidArgument(e.to_string()))
}

/// The CRI's AuthConfig, applied when it is for this registry: kubelet sets `server_address` to the host the
/// credentials belong to, and they must not leak to another one.
pub fn credentials_from_auth(auth: Option<&cri::AuthConfig>, image: &ImageRef) -> Credentials {
    let Some(a) = auth else { return Credentials::default() };
    let server = a.server_address.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
    if !server.is_empty() && server != image.registry {
        return Credentials::default();
    }
    Credentials {
        username: a.username.clone(),
        password: a.password.clone(),
        auth: a.auth.clone(),
        identity_token: a.identity_token.clone(),
        registry_token: a.registry_token.clone(),
    }
}
