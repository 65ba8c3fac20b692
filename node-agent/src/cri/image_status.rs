use std::collections::HashMap;

use k8s_cri::v1 as cri;

use super::image_to_cri;
use crate::agent::Agent;
use crate::error::ReefError;

/// A missing image is not an error: the reply simply has no image, which is how kubelet learns it must pull.
pub async fn handle(agent: &Agent, req: cri::ImageStatusRequest) -> Result<cri::ImageStatusResponse, ReefError> {
    let name = req.image.map(|i| i.image).unwrap_or_default();
    if name.is_empty() {
        return Err(ReefError::InvalidArgument("image is required".into()));
    }
    let store = agent.puller.store();
    let Some(record) = store.resolve(&name) else {
        return Ok(cri::ImageStatusResponse { image: None, info: HashMap::new() });
    };
    let mut info = HashMap::new();
    if req.verbose {
        let config: serde_json::Value = store
            .read_blob(&record.id)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        let detail = serde_json::json!({
            "id": record.id,
            "manifestDigest": record.manifest_digest,
            "chainID": record.layers.last().map(|l| l.chain_id.clone()).unwrap_or_default(),
            "layers": record.layers,
            "createdAt": record.created_at,
            "imageSpec": config,
        });
        info.insert("info".to_string(), detail.to_string());
    }
    Ok(cri::ImageStatusResponse { image: Some(image_to_cri(&record)), info })
}
