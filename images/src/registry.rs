//! Talking to registries: which endpoints serve a reference (mirrors, plain http), which credentials go where,
//! and turning the OCI client's errors into the store's kinds.
//!
//! oci-client keeps the first credentials it sees per registry, so a pull that carries its own credentials gets
//! a client of its own; pulls without them share a client per scheme (and its connection pool and token cache).
//!
//! A registry on this machine (a loopback address or `localhost`, never a resolved name) is tried over https and
//! then plain http without configuration, as docker and containerd do: a local test or cache registry rarely has
//! a certificate, and its traffic never leaves the machine.

use std::collections::BTreeMap;
use std::sync::Arc;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde::{Deserialize, Serialize};

use crate::error::{ImageError, Result};
use crate::reference::ImageRef;

/// Registry settings, as they appear under `[registry]` in reefd's config.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Hosts (`host[:port]`) spoken to over plain http instead of https. Loopback hosts need no entry.
    pub insecure: Vec<String>,
    /// Per registry host, the endpoints that serve it instead, tried in order. The original host is not contacted.
    pub mirrors: BTreeMap<String, Mirror>,
    /// Static credentials per registry host (the host actually contacted, so a mirror's own host).
    pub auths: BTreeMap<String, Credentials>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mirror {
    /// `http://host:port`, `https://host` or a bare `host[:port]` (https unless listed as insecure; https then
    /// http for a loopback host).
    pub endpoints: Vec<String>,
}

/// Credentials, with the meaning of the CRI's AuthConfig fields of the same names.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// base64 of `username:password`.
    pub auth: String,
    pub identity_token: String,
    pub registry_token: String,
}

impl std::fmt::Debug for Credentials {
    // Secrets must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn is_empty(&self) -> bool {
        *self == Credentials::default()
    }

    fn to_registry_auth(&self) -> Result<RegistryAuth> {
        if !self.registry_token.is_empty() {
            return Ok(RegistryAuth::Bearer(self.registry_token.clone()));
        }
        if !self.username.is_empty() || !self.password.is_empty() {
            return Ok(RegistryAuth::Basic(self.username.clone(), self.password.clone()));
        }
        if !self.auth.is_empty() {
            let decoded =
                base64_decode(self.auth.trim()).ok_or_else(|| ImageError::Config("auth is not valid base64".into()))?;
            let text = String::from_utf8(decoded).map_err(|_| ImageError::Config("auth is not UTF-8".into()))?;
            let (u, p) =
                text.split_once(':').ok_or_else(|| ImageError::Config("auth must encode username:password".into()))?;
            return Ok(RegistryAuth::Basic(u.to_string(), p.to_string()));
        }
        if !self.identity_token.is_empty() {
            // An identity token is a refresh token exchanged at the token endpoint; registries that hand them out
            // (Docker Hub, ACR) also accept it as the password of the `<token>` user in the basic-auth token flow.
            return Ok(RegistryAuth::Basic("<token>".into(), self.identity_token.clone()));
        }
        Ok(RegistryAuth::Anonymous)
    }
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// One place a reference can be fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` as contacted.
    pub host: String,
    pub plain_http: bool,
    /// Plain http for a loopback host after https: worth trying only when the https attempt could not get an
    /// answer (a plain-http server fails the TLS handshake). Any other error from https is the registry's answer.
    pub fallback: bool,
}

impl Endpoint {
    /// How a host is spoken to when nothing says which scheme: plain http when listed as insecure, https
    /// otherwise, and for a loopback host https then plain http.
    fn for_host(host: &str, insecure: &[String]) -> Vec<Endpoint> {
        let one = |plain_http, fallback| Endpoint { host: host.to_string(), plain_http, fallback };
        if insecure.iter().any(|h| h == host) {
            vec![one(true, false)]
        } else if is_loopback(host) {
            vec![one(false, false), one(true, true)]
        } else {
            vec![one(false, false)]
        }
    }
}

/// Whether `host[:port]` is this machine: `localhost` or a literal loopback address (`127.0.0.0/8`, `::1`, and
/// `::ffff:127.x.y.z`). Names are never resolved: what `localhost.example` points at is not ours to ask.
pub fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((addr, port)) if port.is_empty() || port.starts_with(':') => addr,
            _ => return false,
        }
    } else if host.parse::<std::net::Ipv6Addr>().is_ok() {
        host
    } else {
        host.rsplit_once(':').map_or(host, |(name, _port)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback())
}

impl RegistryConfig {
    pub fn validate(&self) -> Result<()> {
        for (host, mirror) in &self.mirrors {
            if mirror.endpoints.is_empty() {
                return Err(ImageError::Config(format!("mirrors.\"{host}\".endpoints is empty")));
            }
            for e in &mirror.endpoints {
                parse_endpoint(e, &self.insecure)
                    .map(drop)
                    .map_err(|r| ImageError::Config(format!("mirrors.\"{host}\": endpoint {e:?}: {r}")))?;
            }
        }
        for (host, creds) in &self.auths {
            creds.to_registry_auth().map_err(|e| ImageError::Config(format!("auths.\"{host}\": {e}")))?;
        }
        Ok(())
    }

    /// Where to fetch `registry`'s images from, in order.
    pub fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        match self.mirrors.get(registry) {
            Some(m) => m.endpoints.iter().filter_map(|e| parse_endpoint(e, &self.insecure).ok()).flatten().collect(),
            None => Endpoint::for_host(registry, &self.insecure),
        }
    }
}

fn parse_endpoint(e: &str, insecure: &[String]) -> std::result::Result<Vec<Endpoint>, String> {
    let (plain, rest) = if let Some(r) = e.strip_prefix("http://") {
        (Some(true), r)
    } else if let Some(r) = e.strip_prefix("https://") {
        (Some(false), r)
    } else {
        (None, e)
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') || host.contains(char::is_whitespace) {
        return Err("expected [http://|https://]host[:port]".into());
    }
    Ok(match plain {
        Some(plain_http) => vec![Endpoint { host: host.to_string(), plain_http, fallback: false }],
        None => Endpoint::for_host(host, insecure),
    })
}

/// Fetches manifests and blobs for one pull from one endpoint, with the credentials that apply there.
pub struct Session {
    client: Client,
    auth: RegistryAuth,
    pub endpoint: Endpoint,
    /// The reference rewritten onto the endpoint's host (same repository, tag and digest).
    reference: Reference,
}

/// Builds sessions; holds the shared clients for credential-less pulls (one for https, one for plain http), each
/// built on its first use (the https one loads the system's root certificates, which an idle reefd has no use
/// for).
pub struct Registries {
    config: RegistryConfig,
    shared: [std::sync::OnceLock<Client>; 2],
    max_concurrent_downloads: usize,
}

impl Registries {
    pub fn new(config: RegistryConfig, max_concurrent_downloads: usize) -> Result<Self> {
        config.validate()?;
        // reqwest is built without a default crypto provider (ring builds far faster than aws-lc); install ring
        // once per process. A second install fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Registries { config, shared: Default::default(), max_concurrent_downloads })
    }

    /// A client speaking one scheme to every host: a session talks to one endpoint, whose scheme is decided.
    fn client(plain_http: bool, max_concurrent_downloads: usize) -> Client {
        Client::new(ClientConfig {
            protocol: if plain_http { ClientProtocol::Http } else { ClientProtocol::Https },
            max_concurrent_download: max_concurrent_downloads.max(1),
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            // A stalled registry must not hang a pull forever: no byte for this long ends it.
            read_timeout: Some(std::time::Duration::from_secs(60)),
            platform_resolver: None,
            ..Default::default()
        })
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    pub fn endpoints(&self, image: &ImageRef) -> Vec<Endpoint> {
        self.config.endpoints(&image.registry)
    }

    /// A session against one endpoint. Request credentials win over static ones from the config.
    pub fn session(&self, image: &ImageRef, endpoint: &Endpoint, request: &Credentials) -> Result<Arc<Session>> {
        let plain = endpoint.plain_http;
        let (client, creds) = if !request.is_empty() {
            (Self::client(plain, self.max_concurrent_downloads), request.clone())
        } else {
            (
                self.shared[usize::from(plain)]
                    .get_or_init(|| Self::client(plain, self.max_concurrent_downloads))
                    .clone(),
                self.config.auths.get(&endpoint.host).cloned().unwrap_or_default(),
            )
        };
        let auth = creds.to_registry_auth().map_err(|e| match e {
            ImageError::Config(reason) => ImageError::InvalidReference { reference: image.to_string(), reason },
            other => other,
        })?;
        let reference = match (&image.tag, &image.digest) {
            (Some(t), Some(d)) => {
                Reference::with_tag_and_digest(endpoint.host.clone(), image.repository.clone(), t.clone(), d.clone())
            }
            (_, Some(d)) => Reference::with_digest(endpoint.host.clone(), image.repository.clone(), d.clone()),
            (Some(t), None) => Reference::with_tag(endpoint.host.clone(), image.repository.clone(), t.clone()),
            (None, None) => Reference::with_tag(endpoint.host.clone(), image.repository.clone(), "latest".into()),
        };
        Ok(Arc::new(Session { client, auth, endpoint: endpoint.clone(), reference }))
    }
}

impl Session {
    /// Runs the registry's auth handshake (anonymous bearer tokens included) before the first request.
    pub async fn authenticate(&self) -> Result<()> {
        self.client
            .auth(&self.reference, &self.auth, RegistryOperation::Pull)
            .await
            .map(|_| ())
            .map_err(|e| self.classify(e))
    }

    /// The manifest or index the reference points at: its bytes, its verified digest and its content type.
    pub async fn manifest(&self, digest: Option<&str>) -> Result<(bytes::Bytes, String)> {
        let r = match digest {
            Some(d) => self.reference.clone_with_digest(d.to_string()),
            None => self.reference.clone(),
        };
        self.client.pull_manifest_raw(&r, &self.auth, crate::manifest::ACCEPTED).await.map_err(|e| self.classify(e))
    }

    /// A small blob read whole (the image config); its digest is verified by the client.
    pub async fn blob(&self, digest: &str, limit: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.client.pull_blob(&self.reference, digest, &mut out).await.map_err(|e| self.classify(e))?;
        if out.len() > limit {
            return Err(ImageError::MalformedManifest {
                reason: format!("blob {digest} is larger than {limit} bytes"),
            });
        }
        Ok(out)
    }

    /// A blob as a stream; the stream ends with an error if its digest does not match.
    pub async fn blob_stream(&self, digest: &str) -> Result<oci_client::client::SizedStream> {
        self.client.pull_blob_stream(&self.reference, digest).await.map_err(|e| self.classify(e))
    }

    pub fn classify(&self, e: OciDistributionError) -> ImageError {
        classify(&self.endpoint.host, e)
    }

    /// An error in the middle of a blob stream: a digest mismatch or a broken connection.
    pub fn classify_stream(&self, what: &str, e: std::io::Error) -> ImageError {
        if let Some(oci_client::errors::DigestError::VerificationError { expected, actual }) =
            e.get_ref().and_then(|inner| inner.downcast_ref::<oci_client::errors::DigestError>())
        {
            return ImageError::DigestMismatch {
                what: what.to_string(),
                expected: expected.clone(),
                actual: actual.clone(),
            };
        }
        ImageError::Unreachable {
            registry: self.endpoint.host.clone(),
            reason: format!("reading {what}: {}", error_chain(&e)),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = inner.source();
    }
    s
}

fn classify(registry: &str, e: OciDistributionError) -> ImageError {
    use OciDistributionError as E;
    let registry = registry.to_string();
    match e {
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => ImageError::Unauthorized { registry },
        E::ImageManifestNotFoundError(detail) => ImageError::RemoteNotFound { registry, detail },
        E::RegistryError { envelope, .. } => {
            let codes: Vec<String> = envelope.errors.iter().map(|e| format!("{:?}", e.code)).collect();
            let detail = envelope.errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>().join("; ");
            let has = |c: &str| codes.iter().any(|x| x.to_ascii_uppercase().replace('_', "").contains(c));
            if has("UNAUTHORIZED") {
                ImageError::Unauthorized { registry }
            } else if has("DENIED") {
                ImageError::Denied { registry }
            } else if has("UNKNOWN") || has("NOTFOUND") {
                ImageError::RemoteNotFound { registry, detail }
            } else {
                ImageError::Registry { registry, reason: detail }
            }
        }
        E::ServerError { code, message, .. } => match code {
            401 => ImageError::Unauthorized { registry },
            403 => ImageError::Denied { registry },
            404 => ImageError::RemoteNotFound { registry, detail: message },
            _ => ImageError::Registry { registry, reason: format!("HTTP {code}: {}", message.trim()) },
        },
        E::DigestError(oci_client::errors::DigestError::VerificationError { expected, actual }) => {
            ImageError::DigestMismatch { what: "manifest".into(), expected, actual }
        }
        E::ManifestParsingError(reason) => ImageError::MalformedManifest { reason },
        E::ManifestEncodingError(e) => ImageError::MalformedManifest { reason: e.to_string() },
        E::UnsupportedMediaTypeError(media_type) | E::IncompatibleLayerMediaTypeError(media_type) => {
            ImageError::UnsupportedMediaType { media_type }
        }
        E::RequestError(err) => ImageError::Unreachable { registry, reason: error_chain(&err) },
        other => ImageError::Registry { registry, reason: error_chain(&other) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schemes(config: &RegistryConfig, registry: &str) -> Vec<(String, &'static str)> {
        config
            .endpoints(registry)
            .into_iter()
            .map(|e| {
                let how = match (e.plain_http, e.fallback) {
                    (false, _) => "https",
                    (true, false) => "http",
                    (true, true) => "http if https is unreachable",
                };
                (e.host, how)
            })
            .collect()
    }

    #[test]
    fn loopback_registries_are_tried_over_https_then_plain_http_without_configuration() {
        let config = RegistryConfig::default();
        for host in ["127.0.0.1:5000", "127.1.2.3", "localhost", "LocalHost:5000", "[::1]:5000", "[::1]"] {
            assert_eq!(
                schemes(&config, host),
                vec![(host.to_string(), "https"), (host.to_string(), "http if https is unreachable")],
                "{host}"
            );
        }
    }

    #[test]
    fn other_registries_are_spoken_to_over_https_only_unless_listed_as_insecure() {
        let config = RegistryConfig { insecure: vec!["10.0.0.5:5000".into()], ..Default::default() };
        for host in ["registry.k8s.io", "10.0.0.5", "128.0.0.1:5000", "localhost.example.com", "[::2]:5000"] {
            assert_eq!(schemes(&config, host), vec![(host.to_string(), "https")], "{host}");
        }
        assert_eq!(schemes(&config, "10.0.0.5:5000"), vec![("10.0.0.5:5000".to_string(), "http")]);
    }

    #[test]
    fn a_loopback_host_listed_as_insecure_is_plain_http_only() {
        let config = RegistryConfig { insecure: vec!["127.0.0.1:5000".into()], ..Default::default() };
        assert_eq!(schemes(&config, "127.0.0.1:5000"), vec![("127.0.0.1:5000".to_string(), "http")]);
    }

    #[test]
    fn mirror_endpoints_keep_their_scheme_and_bare_loopback_ones_fall_back() {
        let mut config = RegistryConfig::default();
        config.mirrors.insert(
            "registry.k8s.io".into(),
            Mirror {
                endpoints: vec![
                    "https://127.0.0.1:5001".into(),
                    "http://mirror.example:5000".into(),
                    "127.0.0.1:5002/".into(),
                    "mirror.example".into(),
                ],
            },
        );
        config.validate().unwrap();
        assert_eq!(
            schemes(&config, "registry.k8s.io"),
            vec![
                ("127.0.0.1:5001".to_string(), "https"),
                ("mirror.example:5000".to_string(), "http"),
                ("127.0.0.1:5002".to_string(), "https"),
                ("127.0.0.1:5002".to_string(), "http if https is unreachable"),
                ("mirror.example".to_string(), "https"),
            ]
        );
    }

    #[test]
    fn loopback_is_decided_from_the_literal_host_alone() {
        for yes in ["127.0.0.1", "127.255.255.254:1", "localhost:80", "[::1]:443", "::1", "[::ffff:127.0.0.1]:5000"] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in ["", "10.1.1.1", "0.0.0.0:5000", "[::]:5000", "localhost.", "mylocalhost", "[::1]x", "example.com"] {
            assert!(!is_loopback(no), "{no}");
        }
    }
}
