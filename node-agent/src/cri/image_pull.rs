use k8s_cri::v1 as cri;
use reef_images::reference::ImageRef;
use reef_images::registry::Credentials;

use crate::agent::Agent;
use crate::error::ReefError;
use crate::events::{Action, Event, Subject};

pub async fn handle(agent: &Agent, req: cri::PullImageRequest) -> Result<cri::PullImageResponse, ReefError> {
    let image = req.image.map(|i| i.image).unwrap_or_default();
    let reference = parse(&image)?;
    let credentials = credentials_from_auth(req.auth.as_ref(), &reference);
    let record = agent
        .puller
        .pull(&reference, &credentials, None)
        .await
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
