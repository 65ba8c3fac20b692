//! crictl-style config files for `runp` and `create`: a PodSandboxConfig or ContainerConfig in JSON or YAML
//! (YAML reads JSON too). Field names as in the CRI's proto, snake_case or camelCase; enums as numbers or names;
//! every field optional. A field this file format does not know is refused by name rather than dropped.

use std::collections::HashMap;
use std::path::Path;

use k8s_cri::v1 as cri;
use serde::Deserialize;

pub fn load_pod(path: &Path) -> anyhow::Result<cri::PodSandboxConfig> {
    let file: PodFile = read(path)?;
    Ok(file.into_cri())
}

pub fn load_container(path: &Path) -> anyhow::Result<cri::ContainerConfig> {
    let file: ContainerFile = read(path)?;
    Ok(file.into_cri())
}

fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("read {}: {e}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// A proto enum: its number or its name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum EnumValue {
    Number(i32),
    Name(String),
}

impl Default for EnumValue {
    fn default() -> Self {
        EnumValue::Number(0)
    }
}

impl EnumValue {
    fn resolve(&self, by_name: fn(&str) -> Option<i32>) -> i32 {
        match self {
            EnumValue::Number(n) => *n,
            // An unknown name becomes an out-of-range number: reefd refuses it with InvalidArgument.
            EnumValue::Name(s) => by_name(&s.to_ascii_uppercase()).unwrap_or(-1),
        }
    }
}

fn namespace_mode(s: &str) -> Option<i32> {
    cri::NamespaceMode::from_str_name(s).map(|m| m as i32)
}

fn protocol(s: &str) -> Option<i32> {
    cri::Protocol::from_str_name(s).map(|p| p as i32)
}

fn propagation(s: &str) -> Option<i32> {
    cri::MountPropagation::from_str_name(s).map(|p| p as i32)
}

fn profile_type(s: &str) -> Option<i32> {
    let upper = s.replace('_', "");
    match upper.as_str() {
        "RUNTIMEDEFAULT" => Some(cri::security_profile::ProfileType::RuntimeDefault as i32),
        "UNCONFINED" => Some(cri::security_profile::ProfileType::Unconfined as i32),
        "LOCALHOST" => Some(cri::security_profile::ProfileType::Localhost as i32),
        _ => None,
    }
}

/// `{"value": 1000}` as protobuf JSON writes an Int64Value, or a plain number.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Int64 {
    Plain(i64),
    Wrapped { value: i64 },
}

impl Int64 {
    fn into_cri(self) -> cri::Int64Value {
        match self {
            Int64::Plain(value) | Int64::Wrapped { value } => cri::Int64Value { value },
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PodMeta {
    name: String,
    namespace: String,
    uid: String,
    attempt: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Dns {
    servers: Vec<String>,
    searches: Vec<String>,
    options: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Port {
    protocol: EnumValue,
    #[serde(alias = "containerPort")]
    container_port: i32,
    #[serde(alias = "hostPort")]
    host_port: i32,
    #[serde(alias = "hostIp")]
    host_ip: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Namespaces {
    network: EnumValue,
    pid: EnumValue,
    ipc: EnumValue,
    #[serde(alias = "targetId")]
    target_id: String,
}

impl Namespaces {
    fn into_cri(self) -> cri::NamespaceOption {
        cri::NamespaceOption {
            network: self.network.resolve(namespace_mode),
            pid: self.pid.resolve(namespace_mode),
            ipc: self.ipc.resolve(namespace_mode),
            target_id: self.target_id,
            userns_options: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Profile {
    #[serde(alias = "profileType")]
    profile_type: EnumValue,
    #[serde(alias = "localhostRef")]
    localhost_ref: String,
}

impl Profile {
    fn into_cri(self) -> cri::SecurityProfile {
        cri::SecurityProfile {
            profile_type: self.profile_type.resolve(profile_type),
            localhost_ref: self.localhost_ref,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PodSecurity {
    #[serde(alias = "namespaceOptions")]
    namespace_options: Option<Namespaces>,
    privileged: bool,
    #[serde(alias = "runAsUser")]
    run_as_user: Option<Int64>,
    #[serde(alias = "runAsGroup")]
    run_as_group: Option<Int64>,
    #[serde(alias = "readonlyRootfs")]
    readonly_rootfs: bool,
    #[serde(alias = "supplementalGroups")]
    supplemental_groups: Vec<i64>,
    seccomp: Option<Profile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PodLinux {
    #[serde(alias = "cgroupParent")]
    cgroup_parent: String,
    sysctls: HashMap<String, String>,
    #[serde(alias = "securityContext")]
    security_context: Option<PodSecurity>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PodFile {
    metadata: Option<PodMeta>,
    hostname: String,
    #[serde(alias = "logDirectory")]
    log_directory: String,
    #[serde(alias = "dnsConfig")]
    dns_config: Option<Dns>,
    #[serde(alias = "portMappings")]
    port_mappings: Vec<Port>,
    labels: HashMap<String, String>,
    annotations: HashMap<String, String>,
    linux: Option<PodLinux>,
}

impl PodFile {
    fn into_cri(self) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: self.metadata.map(|m| cri::PodSandboxMetadata {
                name: m.name,
                uid: m.uid,
                namespace: m.namespace,
                attempt: m.attempt,
            }),
            hostname: self.hostname,
            log_directory: self.log_directory,
            dns_config: self.dns_config.map(|d| cri::DnsConfig {
                servers: d.servers,
                searches: d.searches,
                options: d.options,
            }),
            port_mappings: self
                .port_mappings
                .into_iter()
                .map(|p| cri::PortMapping {
                    protocol: p.protocol.resolve(protocol),
                    container_port: p.container_port,
                    host_port: p.host_port,
                    host_ip: p.host_ip,
                })
                .collect(),
            labels: self.labels,
            annotations: self.annotations,
            linux: self.linux.map(|l| cri::LinuxPodSandboxConfig {
                cgroup_parent: l.cgroup_parent,
                sysctls: l.sysctls,
                security_context: l.security_context.map(|s| cri::LinuxSandboxSecurityContext {
                    namespace_options: s.namespace_options.map(Namespaces::into_cri),
                    privileged: s.privileged,
                    run_as_user: s.run_as_user.map(Int64::into_cri),
                    run_as_group: s.run_as_group.map(Int64::into_cri),
                    readonly_rootfs: s.readonly_rootfs,
                    supplemental_groups: s.supplemental_groups,
                    seccomp: s.seccomp.map(Profile::into_cri),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            windows: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ContainerMeta {
    name: String,
    attempt: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Image {
    image: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct KeyValue {
    key: String,
    value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Mount {
    #[serde(alias = "containerPath")]
    container_path: String,
    #[serde(alias = "hostPath")]
    host_path: String,
    readonly: bool,
    #[serde(alias = "selinuxRelabel")]
    selinux_relabel: bool,
    propagation: EnumValue,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Device {
    #[serde(alias = "containerPath")]
    container_path: String,
    #[serde(alias = "hostPath")]
    host_path: String,
    permissions: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Resources {
    #[serde(alias = "cpuPeriod")]
    cpu_period: i64,
    #[serde(alias = "cpuQuota")]
    cpu_quota: i64,
    #[serde(alias = "cpuShares")]
    cpu_shares: i64,
    #[serde(alias = "memoryLimitInBytes")]
    memory_limit_in_bytes: i64,
    #[serde(alias = "oomScoreAdj")]
    oom_score_adj: i64,
    #[serde(alias = "cpusetCpus")]
    cpuset_cpus: String,
    #[serde(alias = "cpusetMems")]
    cpuset_mems: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Capabilities {
    #[serde(alias = "addCapabilities")]
    add_capabilities: Vec<String>,
    #[serde(alias = "dropCapabilities")]
    drop_capabilities: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ContainerSecurity {
    capabilities: Option<Capabilities>,
    privileged: bool,
    #[serde(alias = "namespaceOptions")]
    namespace_options: Option<Namespaces>,
    #[serde(alias = "runAsUser")]
    run_as_user: Option<Int64>,
    #[serde(alias = "runAsGroup")]
    run_as_group: Option<Int64>,
    #[serde(alias = "runAsUsername")]
    run_as_username: String,
    #[serde(alias = "readonlyRootfs")]
    readonly_rootfs: bool,
    #[serde(alias = "supplementalGroups")]
    supplemental_groups: Vec<i64>,
    #[serde(alias = "noNewPrivs")]
    no_new_privs: bool,
    #[serde(alias = "maskedPaths")]
    masked_paths: Vec<String>,
    #[serde(alias = "readonlyPaths")]
    readonly_paths: Vec<String>,
    seccomp: Option<Profile>,
    apparmor: Option<Profile>,
    /// The deprecated string form (`runtime/default`, `unconfined`, `localhost/<name>`), as crictl files have it.
    #[serde(alias = "apparmorProfile")]
    apparmor_profile: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ContainerLinux {
    resources: Option<Resources>,
    #[serde(alias = "securityContext")]
    security_context: Option<ContainerSecurity>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ContainerFile {
    metadata: Option<ContainerMeta>,
    image: Option<Image>,
    command: Vec<String>,
    args: Vec<String>,
    #[serde(alias = "workingDir")]
    working_dir: String,
    envs: Vec<KeyValue>,
    mounts: Vec<Mount>,
    devices: Vec<Device>,
    labels: HashMap<String, String>,
    annotations: HashMap<String, String>,
    #[serde(alias = "logPath")]
    log_path: String,
    stdin: bool,
    #[serde(alias = "stdinOnce")]
    stdin_once: bool,
    tty: bool,
    linux: Option<ContainerLinux>,
}

impl ContainerFile {
    fn into_cri(self) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: self.metadata.map(|m| cri::ContainerMetadata { name: m.name, attempt: m.attempt }),
            image: self.image.map(|i| cri::ImageSpec { image: i.image, ..Default::default() }),
            command: self.command,
            args: self.args,
            working_dir: self.working_dir,
            envs: self.envs.into_iter().map(|e| cri::KeyValue { key: e.key, value: e.value }).collect(),
            mounts: self
                .mounts
                .into_iter()
                .map(|m| cri::Mount {
                    container_path: m.container_path,
                    host_path: m.host_path,
                    readonly: m.readonly,
                    selinux_relabel: m.selinux_relabel,
                    propagation: m.propagation.resolve(propagation),
                    ..Default::default()
                })
                .collect(),
            devices: self
                .devices
                .into_iter()
                .map(|d| cri::Device {
                    container_path: d.container_path,
                    host_path: d.host_path,
                    permissions: d.permissions,
                })
                .collect(),
            labels: self.labels,
            annotations: self.annotations,
            log_path: self.log_path,
            stdin: self.stdin,
            stdin_once: self.stdin_once,
            tty: self.tty,
            linux: self.linux.map(|l| cri::LinuxContainerConfig {
                resources: l.resources.map(|r| cri::LinuxContainerResources {
                    cpu_period: r.cpu_period,
                    cpu_quota: r.cpu_quota,
                    cpu_shares: r.cpu_shares,
                    memory_limit_in_bytes: r.memory_limit_in_bytes,
                    oom_score_adj: r.oom_score_adj,
                    cpuset_cpus: r.cpuset_cpus,
                    cpuset_mems: r.cpuset_mems,
                    ..Default::default()
                }),
                security_context: l.security_context.map(|s| cri::LinuxContainerSecurityContext {
                    capabilities: s.capabilities.map(|c| cri::Capability {
                        add_capabilities: c.add_capabilities,
                        drop_capabilities: c.drop_capabilities,
                        ..Default::default()
                    }),
                    privileged: s.privileged,
                    namespace_options: s.namespace_options.map(Namespaces::into_cri),
                    run_as_user: s.run_as_user.map(Int64::into_cri),
                    run_as_group: s.run_as_group.map(Int64::into_cri),
                    run_as_username: s.run_as_username,
                    readonly_rootfs: s.readonly_rootfs,
                    supplemental_groups: s.supplemental_groups,
                    no_new_privs: s.no_new_privs,
                    masked_paths: s.masked_paths,
                    readonly_paths: s.readonly_paths,
                    seccomp: s.seccomp.map(Profile::into_cri),
                    apparmor: s.apparmor.map(Profile::into_cri),
                    #[allow(deprecated)]
                    apparmor_profile: s.apparmor_profile,
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(text: &str) -> Result<cri::PodSandboxConfig, serde_yaml::Error> {
        serde_yaml::from_str::<PodFile>(text).map(PodFile::into_cri)
    }

    #[test]
    fn a_crictl_pod_config_in_json_reads_with_defaults_for_what_is_missing() {
        let p = pod(r#"{
            "metadata": {"name": "nginx-sandbox", "namespace": "default", "uid": "hdishd83djaidwnduwk28bcsb"},
            "log_directory": "/tmp",
            "linux": {"security_context": {"namespace_options": {"network": 2, "pid": "CONTAINER"}}}
        }"#)
        .unwrap();
        assert_eq!(p.metadata.as_ref().map(|m| m.name.as_str()), Some("nginx-sandbox"));
        assert_eq!(p.log_directory, "/tmp");
        let ns = p.linux.unwrap().security_context.unwrap().namespace_options.unwrap();
        assert_eq!((ns.network, ns.pid, ns.ipc), (2, 1, 0));
    }

    #[test]
    fn yaml_camel_case_and_unknown_fields() {
        let p = pod(
            "metadata:\n  name: web\nlogDirectory: /var/log/x\nportMappings:\n- containerPort: 80\n  protocol: UDP\n",
        )
        .unwrap();
        assert_eq!(p.log_directory, "/var/log/x");
        assert_eq!(p.port_mappings[0].protocol, cri::Protocol::Udp as i32);
        let err = pod("metadata:\n  name: web\nhostnam: typo\n").unwrap_err().to_string();
        assert!(err.contains("hostnam"), "{err}");
    }

    #[test]
    fn a_container_config_keeps_command_env_mounts_and_user() {
        let c: cri::ContainerConfig = serde_yaml::from_str::<ContainerFile>(
            r#"{"metadata": {"name": "busybox"}, "image": {"image": "busybox"}, "command": ["top"],
                "envs": [{"key": "A", "value": "1"}], "log_path": "busybox.log",
                "mounts": [{"container_path": "/data", "host_path": "/srv", "readonly": true}],
                "linux": {"security_context": {"run_as_user": {"value": 1000}},
                          "resources": {"memory_limit_in_bytes": 67108864}}}"#,
        )
        .map(ContainerFile::into_cri)
        .unwrap();
        assert_eq!(c.command, ["top"]);
        assert_eq!(c.envs[0].key, "A");
        assert!(c.mounts[0].readonly);
        let linux = c.linux.unwrap();
        assert_eq!(linux.security_context.unwrap().run_as_user.map(|u| u.value), Some(1000));
        assert_eq!(linux.resources.unwrap().memory_limit_in_bytes, 64 << 20);
    }

    #[test]
    #[allow(deprecated)]
    fn a_container_config_carries_both_apparmor_forms() {
        let c = serde_yaml::from_str::<ContainerFile>(
            "linux:\n  securityContext:\n    apparmor:\n      profileType: Localhost\n      localhostRef: deny-write\n    \
             apparmorProfile: localhost/deny-write\n",
        )
        .map(ContainerFile::into_cri)
        .unwrap();
        let sc = c.linux.unwrap().security_context.unwrap();
        let profile = sc.apparmor.unwrap();
        assert_eq!(profile.profile_type, cri::security_profile::ProfileType::Localhost as i32);
        assert_eq!(profile.localhost_ref, "deny-write");
        assert_eq!(sc.apparmor_profile, "localhost/deny-write");
    }
}
