//! Pushing with the registry HTTP API (monolithic blob uploads, manifests by tag or digest).

use base64::Engine;

use crate::image::Image;

fn with_auth<B>(req: ureq::RequestBuilder<B>, auth: Option<(&str, &str)>) -> ureq::RequestBuilder<B> {
    match auth {
        Some((u, p)) => {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            req.header("Authorization", &format!("Basic {token}"))
        }
        None => req,
    }
}

pub fn push_blob(registry: &str, repo: &str, data: &[u8], auth: Option<(&str, &str)>) {
    let digest = crate::sha256(data);
    let start = with_auth(ureq::post(&format!("http://{registry}/v2/{repo}/blobs/uploads/")), auth)
        .send_empty()
        .unwrap_or_else(|e| panic!("start upload to {registry}/{repo}: {e}"));
    let location = start.headers().get("Location").and_then(|l| l.to_str().ok()).expect("upload location").to_string();
    let location = if location.starts_with('/') { format!("http://{registry}{location}") } else { location };
    let sep = if location.contains('?') { '&' } else { '?' };
    with_auth(ureq::put(&format!("{location}{sep}digest={digest}")), auth)
        .header("Content-Type", "application/octet-stream")
        .send(data)
        .unwrap_or_else(|e| panic!("upload blob {digest}: {e}"));
}

/// Puts a manifest or index under `reference` (a tag or a digest) and returns its digest.
pub fn push_manifest(
    registry: &str,
    repo: &str,
    reference: &str,
    body: &[u8],
    media_type: &str,
    auth: Option<(&str, &str)>,
) -> String {
    with_auth(ureq::put(&format!("http://{registry}/v2/{repo}/manifests/{reference}")), auth)
        .header("Content-Type", media_type)
        .send(body)
        .unwrap_or_else(|e| panic!("put manifest {repo}:{reference}: {e}"));
    crate::sha256(body)
}

/// Pushes an image's blobs and manifest under `repo:tag`; returns the manifest digest.
pub fn push_image(registry: &str, repo: &str, tag: &str, image: &Image, auth: Option<(&str, &str)>) -> String {
    for layer in &image.layers {
        push_blob(registry, repo, &layer.data, auth);
    }
    push_blob(registry, repo, &image.config, auth);
    push_manifest(registry, repo, tag, &image.manifest, &image.manifest_media_type, auth)
}
