//! reefd's configuration: one TOML file, every key optional. Unknown keys and bad values stop reefd at start with
//! the key and the reason: a typo in a node's config must not silently fall back to a default.

use std::path::{Path, PathBuf};

use reef_images::registry::RegistryConfig;
use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/reef/config.toml";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Durable state: image metadata, blobs, unpacked layers.
    pub root_dir: PathBuf,
    /// Volatile state (tmpfs on real nodes): per-pod runtime state, locks.
    pub state_dir: PathBuf,
    /// The unix socket serving the CRI and the Reef API.
    pub socket: PathBuf,
    /// A tracing filter: `info`, `debug`, or per-module like `info,reef_images=debug`. `RUST_LOG` overrides it.
    pub log_level: String,
    /// The cgroup driver reported to kubelet: `cgroupfs` or `systemd`.
    pub cgroup_driver: CgroupDriver,
    /// The pod monitor binary; by default `reef-monitor` next to reefd.
    pub monitor_path: Option<PathBuf>,
    /// The cgroup containers go under when their pod names no cgroup parent.
    pub cgroup_parent: String,
    pub images: ImagesConfig,
    pub registry: RegistryConfig,
    /// The streaming server for Exec, Attach and PortForward.
    pub streaming: crate::streaming::StreamingConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root_dir: "/var/lib/reef".into(),
            state_dir: "/run/reef".into(),
            socket: "/run/reef/reef.sock".into(),
            log_level: "info".into(),
            cgroup_driver: CgroupDriver::Cgroupfs,
            monitor_path: None,
            cgroup_parent: "reef".into(),
            images: ImagesConfig::default(),
            registry: RegistryConfig::default(),
            streaming: crate::streaming::StreamingConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImagesConfig {
    /// Layers of one pull fetched at the same time.
    pub max_concurrent_downloads: usize,
    /// Create device nodes found in image layers. Off by default: an image has no business shipping them, and a
    /// node the container can open bypasses nothing only as long as the device cgroup holds.
    pub allow_device_nodes: bool,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig { max_concurrent_downloads: 3, allow_device_nodes: false }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {key}: {reason}")]
    Invalid { path: PathBuf, key: String, reason: String },
}

impl Config {
    /// Loads the file at `path`. A missing file is fine only at the default path: every key has a default,
    /// but a path given on purpose that does not exist is a mistake worth stopping for.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => String::new(),
            Err(e) => return Err(ConfigError::Read { path: path.into(), source: e }),
        };
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string().trim().replace('\n', " ") })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid { path: path.into(), key: key.into(), reason };
        for (key, p) in [("root_dir", &self.root_dir), ("state_dir", &self.state_dir), ("socket", &self.socket)] {
            if !p.is_absolute() {
                return Err(invalid(key, format!("{} must be an absolute path", p.display())));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(invalid("log_level", format!("{:?} is not a valid level or filter", self.log_level)));
        }
        if !(1..=64).contains(&self.images.max_concurrent_downloads) {
            return Err(invalid("images.max_concurrent_downloads", "must be between 1 and 64".into()));
        }
        self.registry.validate().map_err(|e| invalid("registry", e.to_string()))?;
        self.streaming.validate().map_err(|(key, reason)| invalid(&key, reason))?;
        Ok(())
    }

    /// Where the pod monitor binary is.
    pub fn monitor_binary(&self) -> PathBuf {
        self.monitor_path.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("reef-monitor")))
                .unwrap_or_else(|| PathBuf::from("/usr/local/bin/reef-monitor"))
        })
    }

    /// The configuration as JSON with secrets blanked, for Status(verbose) and Info.
    pub fn redacted_json(&self) -> String {
        let mut copy = self.clone();
        for creds in copy.registry.auths.values_mut() {
            for secret in [&mut creds.password, &mut creds.auth, &mut creds.identity_token, &mut creds.registry_token] {
                if !secret.is_empty() {
                    *secret = "<redacted>".into();
                }
            }
        }
        serde_json::to_string(&copy).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/reef/config.toml"))
    }

    #[test]
    fn an_empty_file_means_every_default() {
        let c = parse("").unwrap();
        assert_eq!(c.socket, Path::new("/run/reef/reef.sock"));
        assert_eq!(c.root_dir, Path::new("/var/lib/reef"));
        assert_eq!(c.images.max_concurrent_downloads, 3);
        assert_eq!(c.cgroup_driver, CgroupDriver::Cgroupfs);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = parse("sockett = \"/x\"").unwrap_err().to_string();
        assert!(err.contains("sockett"), "{err}");
        let err = parse("[images]\nmax_downloads = 3").unwrap_err().to_string();
        assert!(err.contains("max_downloads"), "{err}");
        let err = parse("[registry.mirrors.\"docker.io\"]\nendpoint = [\"http://x\"]").unwrap_err().to_string();
        assert!(err.contains("endpoint"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = parse("root_dir = \"relative\"").unwrap_err().to_string();
        assert!(err.contains("root_dir"), "{err}");
        let err = parse("[images]\nmax_concurrent_downloads = 0").unwrap_err().to_string();
        assert!(err.contains("max_concurrent_downloads"), "{err}");
        let err = parse("cgroup_driver = \"cgroupfs2\"").unwrap_err().to_string();
        assert!(err.contains("cgroup_driver") || err.contains("cgroupfs2"), "{err}");
        let err = parse("[registry.mirrors.\"docker.io\"]\nendpoints = [\"http://a/b/c\"]").unwrap_err().to_string();
        assert!(err.contains("registry"), "{err}");
    }

    #[test]
    fn registry_settings_parse_and_secrets_are_redacted() {
        let c = parse(
            r#"
[registry]
insecure = ["127.0.0.1:5000"]
[registry.mirrors."registry.k8s.io"]
endpoints = ["http://127.0.0.1:5000", "https://mirror.example"]
[registry.auths."127.0.0.1:5000"]
username = "u"
password = "hunter2"
"#,
        )
        .unwrap();
        assert_eq!(c.registry.mirrors["registry.k8s.io"].endpoints.len(), 2);
        let json = c.redacted_json();
        assert!(!json.contains("hunter2"));
        assert!(json.contains("<redacted>"));
    }
}
