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
    pub network: NetworkConfig,
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
            network: NetworkConfig::default(),
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

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Reef's own bridge, veths, IPAM and nftables rules.
    Builtin,
    /// Standard CNI plugins.
    Cni,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    pub mode: NetworkMode,
    /// Built-in mode: the bridge pods' veths attach to; it holds the gateway address.
    pub bridge: String,
    /// Built-in mode: the IPv4 subnet pods get addresses from until kubelet sends a pod CIDR.
    pub subnet: String,
    /// Built-in mode, dual stack: the IPv6 subnet pods also get an address from (e.g. `fd00:10:88::/64`); empty
    /// (the default) for IPv4 only. kubelet's IPv6 pod CIDR takes over when it sends one.
    pub subnet6: String,
    /// Built-in mode: the MTU of the pods' veth pairs.
    pub mtu: u32,
    /// Built-in mode: Reef's own nftables table (family inet); no other table is touched.
    pub nft_table: String,
    /// CNI mode: network configurations (`*.conflist`, `*.conf`, `*.json`); the first by name is used.
    pub cni_conf_dir: PathBuf,
    /// CNI mode: where plugin binaries are looked up, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// CNI mode: how long one plugin call may take.
    pub cni_timeout_seconds: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            mode: NetworkMode::Builtin,
            bridge: "reef0".into(),
            subnet: "10.88.0.0/16".into(),
            subnet6: String::new(),
            mtu: 1500,
            nft_table: "reef".into(),
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            cni_timeout_seconds: 60,
        }
    }
}

impl NetworkConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let b = &self.bridge;
        if b.is_empty() || b.len() > 15 || b.contains(['/', ' ', '\t', '\n']) || b == "." || b == ".." {
            return Err(("network.bridge", format!("{b:?} is not a valid interface name (1 to 15 characters)")));
        }
        match self.subnet.parse::<ipnet::Ipv4Net>() {
            Ok(n) if n.prefix_len() <= 30 => {}
            _ => return Err(("network.subnet", format!("{:?} is not an IPv4 subnet of /30 or larger", self.subnet))),
        }
        if !self.subnet6.is_empty() {
            match self.subnet6.parse::<ipnet::Ipv6Net>() {
                Ok(n) if n.prefix_len() <= 120 => {}
                _ => {
                    return Err((
                        "network.subnet6",
                        format!("{:?} is not an IPv6 subnet of /120 or larger", self.subnet6),
                    ));
                }
            }
        }
        if !(576..=65535).contains(&self.mtu) {
            return Err(("network.mtu", format!("{} is not between 576 and 65535", self.mtu)));
        }
        let t = &self.nft_table;
        if t.is_empty() || t.len() > 64 || !t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(("network.nft_table", format!("{t:?}: use 1 to 64 letters, digits, '_' or '-'")));
        }
        if self.cni_timeout_seconds == 0 {
            return Err(("network.cni_timeout_seconds", "must be at least 1".into()));
        }
        Ok(())
    }

    /// netplug's view of this section; `dir` is where leases and per-pod records live.
    pub fn netplug(&self, dir: PathBuf) -> reef_netplug::NetConfig {
        reef_netplug::NetConfig {
            mode: match self.mode {
                NetworkMode::Builtin => reef_netplug::Mode::Builtin,
                NetworkMode::Cni => reef_netplug::Mode::Cni,
            },
            dir,
            bridge: self.bridge.clone(),
            subnet: self.subnet.parse::<ipnet::Ipv4Net>().map(|n| n.trunc()).unwrap_or_default(),
            subnet6: self.subnet6.parse::<ipnet::Ipv6Net>().ok().map(|n| n.trunc()),
            mtu: self.mtu,
            nft_table: self.nft_table.clone(),
            cni_conf_dir: self.cni_conf_dir.clone(),
            cni_bin_dirs: self.cni_bin_dirs.clone(),
            cni_timeout: std::time::Duration::from_secs(self.cni_timeout_seconds),
        }
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
        self.network.validate().map_err(|(key, reason)| invalid(key, reason))?;
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
    fn the_node_config_shipped_in_deploy_is_valid() {
        let c = parse(include_str!("../../deploy/config.toml")).unwrap();
        assert_eq!(c.cgroup_driver, CgroupDriver::Systemd);
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

    // A streaming timeout is added to Instant::now(): i64::MAX seconds loaded, then panicked the first Exec.
    #[test]
    fn streaming_timeouts_past_a_year_are_refused_rather_than_overflowing_a_deadline() {
        for key in ["token_ttl_seconds", "idle_timeout_seconds", "stream_creation_timeout_seconds"] {
            let err = parse(&format!("[streaming]\n{key} = 9223372036854775807")).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
            assert!(parse(&format!("[streaming]\n{key} = 31536000")).is_ok());
        }
    }

    #[test]
    fn network_settings_default_to_the_builtin_bridge_and_bad_ones_name_the_key() {
        let c = parse("").unwrap();
        assert_eq!(
            (c.network.mode, c.network.bridge.as_str(), c.network.subnet.as_str()),
            (NetworkMode::Builtin, "reef0", "10.88.0.0/16")
        );
        assert_eq!(c.network.netplug("/x".into()).subnet6, None, "IPv4 only unless a v6 subnet is set");
        let c = parse("[network]\nsubnet6 = \"fd00:10:88::7/64\"").unwrap();
        assert_eq!(c.network.netplug("/x".into()).subnet6, Some("fd00:10:88::/64".parse().unwrap()));
        let c = parse("[network]\nmode = \"cni\"\ncni_conf_dir = \"/x\"").unwrap();
        assert_eq!(c.network.mode, NetworkMode::Cni);
        for (text, key) in [
            ("[network]\nbridge = \"a-very-long-bridge-name\"", "network.bridge"),
            ("[network]\nsubnet = \"10.88.0.0/31\"", "network.subnet"),
            ("[network]\nsubnet = \"fd00::/64\"", "network.subnet"),
            ("[network]\nsubnet6 = \"10.0.0.0/8\"", "network.subnet6"),
            ("[network]\nsubnet6 = \"fd00::/126\"", "network.subnet6"),
            ("[network]\nmtu = 100", "network.mtu"),
            ("[network]\nnft_table = \"a b\"", "network.nft_table"),
            ("[network]\nmode = \"calico\"", "calico"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
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
