//! Image references, normalized the way docker, containerd and kubelet do
//! (`busybox` is `docker.io/library/busybox:latest`), so that a name given to PullImage, ListImages or RemoveImage
//! finds the same image whichever spelling the caller used.

use std::fmt;

use crate::error::{ImageError, Result};

pub const DEFAULT_REGISTRY: &str = "docker.io";
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;

/// A fully normalized image reference: always a registry and a repository, and a tag, a digest or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(input: &str) -> Result<Self> {
        let bad =
            |reason: &str| ImageError::InvalidReference { reference: input.to_string(), reason: reason.to_string() };
        if input.is_empty() {
            return Err(bad("empty reference"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest).map_err(|r| bad(&r))?;
                (rest, Some(digest.to_string()))
            }
            None => (input, None),
        };
        // A ':' after the last '/' separates the tag; one before it belongs to a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(|r| bad(&r))?;
        }
        let (registry, repository) = split_registry(name);
        if !registry.is_empty() {
            validate_registry(registry).map_err(|r| bad(&r))?;
        }
        let registry = match registry {
            "" | LEGACY_DEFAULT_REGISTRY => DEFAULT_REGISTRY,
            other => other,
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_string()
        };
        validate_repository(&repository).map_err(|r| bad(&r))?;
        if registry.len() + 1 + repository.len() > MAX_NAME_LEN {
            return Err(bad("name longer than 255 characters"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(ImageRef { registry: registry.to_string(), repository, tag, digest })
    }

    /// `registry/repository`, the name repo tags and repo digests are built on.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`, if the reference has a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `registry/repository@digest` for a given manifest digest.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// The first path component is a registry when it looks like a host: it has a dot or a port, is `localhost`,
/// or has upper case (which a repository may not) — docker's rule, so `localhost/x` and `foo.io/x` agree with it.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':']) || first == "localhost" || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => ("", name),
    }
}

fn validate_registry(host: &str) -> std::result::Result<(), String> {
    let (h, port) = match host.rsplit_once(':') {
        // An IPv6 literal keeps its colons inside brackets.
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (host, None),
    };
    if let Some(port) = port
        && (port.is_empty() || port.parse::<u16>().is_err())
    {
        return Err(format!("invalid port in registry {host:?}"));
    }
    let ok = if h.starts_with('[') && h.ends_with(']') {
        h[1..h.len() - 1].parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !h.is_empty()
            && h.split('.').all(|label| {
                !label.is_empty()
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    };
    if ok { Ok(()) } else { Err(format!("invalid registry host {host:?}")) }
}

/// Path components: lower-case alphanumerics joined by `.`, `_`, `__` or runs of `-`.
fn validate_repository(repo: &str) -> std::result::Result<(), String> {
    for component in repo.split('/') {
        if component.is_empty() {
            return Err("empty path component".into());
        }
        if !component.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c)) {
            return Err(format!("repository component {component:?} must be lower-case alphanumerics and . _ -"));
        }
        let first = component.as_bytes()[0];
        let last = component.as_bytes()[component.len() - 1];
        if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
            return Err(format!("repository component {component:?} must start and end with a letter or digit"));
        }
        if component.contains("..") || component.contains("___") || component.contains("._") || component.contains("_.")
        {
            return Err(format!("repository component {component:?} has invalid separators"));
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> std::result::Result<(), String> {
    let valid = !tag.is_empty()
        && tag.len() <= 128
        && tag.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if valid { Ok(()) } else { Err(format!("invalid tag {tag:?}")) }
}

/// Only sha256 is accepted: it is what registries serve and what the store addresses content by.
pub fn validate_digest(digest: &str) -> std::result::Result<(), String> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) =>
        {
            Ok(())
        }
        Some(("sha256", _)) => Err(format!("invalid sha256 digest {digest:?}")),
        Some((alg, _)) => Err(format!("unsupported digest algorithm {alg:?}")),
        None => Err(format!("invalid digest {digest:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn short_names_get_docker_hub_library_and_latest() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(norm("index.docker.io/library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("docker.io/busybox"), "docker.io/library/busybox:latest");
    }

    #[test]
    fn hosts_with_ports_are_registries_not_tags() {
        let r = ImageRef::parse("127.0.0.1:5000/team/app").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(norm("localhost:5000/app:v2"), "localhost:5000/app:v2");
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("registry.k8s.io/pause:3.9"), "registry.k8s.io/pause:3.9");
        assert_eq!(norm("[::1]:5000/app"), "[::1]:5000/app:latest");
    }

    #[test]
    fn digests_keep_no_implicit_tag() {
        let r = ImageRef::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(norm(&format!("busybox:1.0@{D}")), format!("docker.io/library/busybox:1.0@{D}"));
    }

    #[test]
    fn malformed_references_are_rejected() {
        for bad in [
            "",
            "UpperCase",
            "docker.io/Library/x",
            "busybox:",
            "busybox:-tag",
            "a@sha256:zz",
            "a@md5:0123",
            "a//b",
            "host:99999/app",
            "app:tag:more",
            "-leading",
            "white space",
            &format!("{}:t", "a".repeat(300)),
        ] {
            let err = ImageRef::parse(bad).expect_err(bad);
            assert!(matches!(err, ImageError::InvalidReference { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn name_tagged_and_digest_forms() {
        let r = ImageRef::parse("127.0.0.1:5000/x:1").unwrap();
        assert_eq!(r.name(), "127.0.0.1:5000/x");
        assert_eq!(r.tagged().as_deref(), Some("127.0.0.1:5000/x:1"));
        assert_eq!(r.with_digest(D), format!("127.0.0.1:5000/x@{D}"));
    }
}
