//! The registry documents a pull reads: manifests, indexes (manifest lists) and the image config.
//! Parsed leniently (unknown fields ignored) but checked for what the store relies on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ImageError, Result};
use crate::reference::validate_digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// What a manifest request accepts, in order of preference.
pub const ACCEPTED: &[&str] = &[OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on, in OCI's names.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            other => (other, None),
        };
        Platform { architecture: architecture.into(), os: "linux".into(), variant: variant.map(Into::into) }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A manifest or an index: registries answer a tag with either.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Debug, Clone)]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, Clone)]
pub enum Fetched {
    Manifest(Manifest),
    Index(Vec<Descriptor>),
}

fn malformed(reason: impl Into<String>) -> ImageError {
    ImageError::MalformedManifest { reason: reason.into() }
}

/// Parses what a manifest request returned, telling manifests from indexes by media type (header first,
/// then the document's own field, then its shape, since registries are not all strict about it).
pub fn parse_document(body: &[u8], content_type: Option<&str>) -> Result<Fetched> {
    let doc: Document = serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
    if doc.schema_version != Some(2) {
        return Err(match doc.schema_version {
            Some(1) => ImageError::UnsupportedMediaType {
                media_type: "application/vnd.docker.distribution.manifest.v1+json (schema 1)".into(),
            },
            _ => malformed("schemaVersion must be 2"),
        });
    }
    let media_type = content_type
        .filter(|c| ACCEPTED.contains(c))
        .map(str::to_string)
        .or(doc.media_type.clone())
        .unwrap_or_default();
    let is_index = match media_type.as_str() {
        OCI_INDEX | DOCKER_MANIFEST_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        "" => doc.manifests.is_some(),
        other => return Err(ImageError::UnsupportedMediaType { media_type: other.to_string() }),
    };
    if is_index {
        let manifests = doc.manifests.ok_or_else(|| malformed("index without manifests"))?;
        for m in &manifests {
            validate_digest(&m.digest).map_err(malformed)?;
        }
        return Ok(Fetched::Index(manifests));
    }
    let config = doc.config.ok_or_else(|| malformed("manifest without config"))?;
    validate_digest(&config.digest).map_err(malformed)?;
    let layers = doc.layers.ok_or_else(|| malformed("manifest without layers"))?;
    for layer in &layers {
        validate_digest(&layer.digest).map_err(malformed)?;
        if layer.size < 0 {
            return Err(malformed(format!("layer {} has a negative size", layer.digest)));
        }
        if !is_layer_media_type(&layer.media_type) {
            return Err(ImageError::UnsupportedMediaType { media_type: layer.media_type.clone() });
        }
    }
    Ok(Fetched::Manifest(Manifest { config, layers }))
}

fn is_layer_media_type(mt: &str) -> bool {
    mt.is_empty()
        || mt.starts_with("application/vnd.oci.image.layer.")
        || mt.starts_with("application/vnd.docker.image.rootfs.")
}

/// Picks the host's platform from an index. A variant is matched when both sides name one, so an arm64 index
/// entry without a variant still matches an arm64/v8 host.
pub fn choose_platform<'a>(manifests: &'a [Descriptor], want: &Platform) -> Option<&'a Descriptor> {
    let matches = |d: &&Descriptor| {
        d.platform.as_ref().is_some_and(|p| {
            p.os == want.os
                && p.architecture == want.architecture
                && match (&p.variant, &want.variant) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        })
    };
    manifests.iter().find(matches)
}

/// The parts of the image config the store and the runtime read. The whole document is kept as a blob.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub volumes: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    pub diff_ids: Vec<String>,
}

pub fn parse_config(body: &[u8], layer_count: usize) -> Result<ImageConfig> {
    let config: ImageConfig = serde_json::from_slice(body).map_err(|e| malformed(format!("image config: {e}")))?;
    if config.rootfs.diff_ids.len() != layer_count {
        return Err(malformed(format!(
            "image config lists {} diff_ids for {} layers",
            config.rootfs.diff_ids.len(),
            layer_count
        )));
    }
    for d in &config.rootfs.diff_ids {
        validate_digest(d).map_err(malformed)?;
    }
    Ok(config)
}

/// Chain ids name a layer together with everything under it (OCI image-spec): the store shares unpacked layers
/// between images by chain id, never by the layer's own digest, so a layer is only reused on the same base.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    use sha2::Digest;
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => format!("sha256:{}", hex::encode(sha2::Sha256::digest(format!("{parent} {d}")))),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn manifests_and_indexes_are_told_apart() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"digest":"{A}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{B}","size":3}}]}}"#
        );
        assert!(matches!(parse_document(m.as_bytes(), None).unwrap(), Fetched::Manifest(m) if m.layers.len() == 1));
        let i = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"{A}","size":1,"platform":{{"architecture":"arm64","os":"linux"}}}},{{"digest":"{B}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        let Fetched::Index(list) = parse_document(i.as_bytes(), Some(DOCKER_MANIFEST_LIST)).unwrap() else {
            panic!("expected an index")
        };
        let want = Platform { architecture: "amd64".into(), os: "linux".into(), variant: None };
        assert_eq!(choose_platform(&list, &want).unwrap().digest, B);
        let arm = Platform { architecture: "arm64".into(), os: "linux".into(), variant: Some("v8".into()) };
        assert_eq!(choose_platform(&list, &arm).unwrap().digest, A);
        let s390 = Platform { architecture: "s390x".into(), os: "linux".into(), variant: None };
        assert!(choose_platform(&list, &s390).is_none());
    }

    #[test]
    fn broken_documents_are_malformed() {
        for body in [
            "not json".to_string(),
            r#"{"schemaVersion":2}"#.to_string(),
            r#"{"schemaVersion":2,"config":{"digest":"sha256:zz"},"layers":[]}"#.to_string(),
            format!(r#"{{"schemaVersion":3,"config":{{"digest":"{A}"}},"layers":[]}}"#),
        ] {
            assert!(
                matches!(parse_document(body.as_bytes(), None), Err(ImageError::MalformedManifest { .. })),
                "{body}"
            );
        }
        let schema1 = r#"{"schemaVersion":1,"fsLayers":[]}"#;
        assert!(matches!(parse_document(schema1.as_bytes(), None), Err(ImageError::UnsupportedMediaType { .. })));
        let helm = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{A}"}},"layers":[{{"mediaType":"application/vnd.cncf.helm.chart.content.v1.tar+gzip","digest":"{B}"}}]}}"#
        );
        assert!(matches!(parse_document(helm.as_bytes(), None), Err(ImageError::UnsupportedMediaType { .. })));
    }

    #[test]
    fn config_must_list_one_diff_id_per_layer() {
        let c = format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{A}"]}}}}"#);
        assert!(parse_config(c.as_bytes(), 1).is_ok());
        assert!(matches!(parse_config(c.as_bytes(), 2), Err(ImageError::MalformedManifest { .. })));
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let ids = chain_ids(&[A.to_string(), B.to_string()]);
        assert_eq!(ids[0], A);
        use sha2::Digest;
        let expect = format!("sha256:{}", hex::encode(sha2::Sha256::digest(format!("{A} {B}"))));
        assert_eq!(ids[1], expect);
    }
}
