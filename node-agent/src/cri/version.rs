use k8s_cri::v1 as cri;

use crate::error::ReefError;

/// The CRI's own API version, which kubelet checks: always 0.1.0 for runtime.v1.
const KUBELET_API_VERSION: &str = "0.1.0";

pub async fn handle(_req: cri::VersionRequest) -> Result<cri::VersionResponse, ReefError> {
    Ok(cri::VersionResponse {
        version: KUBELET_API_VERSION.into(),
        runtime_name: "reef".into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        runtime_api_version: "v1".into(),
    })
}
