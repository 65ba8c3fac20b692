use k8s_cri::v1 as cri;

use super::image_to_cri;
use crate::agent::Agent;
use crate::error::ReefError;

pub async fn handle(agent: &Agent, req: cri::ListImagesRequest) -> Result<cri::ListImagesResponse, ReefError> {
    let store = agent.puller.store();
    let wanted = req.filter.and_then(|f| f.image).map(|i| i.image).filter(|i| !i.is_empty());
    let images = match wanted {
        Some(name) => store.resolve(&name).iter().map(image_to_cri).collect(),
        None => store.list().iter().map(image_to_cri).collect(),
    };
    Ok(cri::ListImagesResponse { images })
}
