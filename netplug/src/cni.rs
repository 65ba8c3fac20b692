//! CNI mode: standard CNI plugins (spec 1.0: ADD, CHECK, DEL) from a conf dir and bin dirs.
//!
//! The network configuration list, the namespace path and the ADD result are stored with the pod (`store`)
//! before and after ADD, so DEL runs with exactly what ADD saw, even after a restart or a config change.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::NetError;
use crate::ports::HostPort;
use crate::store::PodNet;
use crate::{Network, PodSpec, State, ports};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CniAttachment {
    /// The whole configuration list (`.conf` files are wrapped into one).
    pub netconf: Value,
    pub netns: PathBuf,
    pub ifname: String,
    pub args: String,
    pub port_mappings: Value,
    /// The final ADD result: prevResult for CHECK and DEL.
    pub result: Option<Value>,
}

/// The first configuration in `dir` by name (`*.conflist`, `*.conf`, `*.json`), as a configuration list.
pub fn find_config(dir: &Path) -> Result<(PathBuf, Value), NetError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| NetError::NotReady(format!("CNI config dir {}: {e}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("conflist" | "conf" | "json")))
        .collect();
    files.sort();
    for path in files {
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let Ok(mut v) = serde_json::from_str::<Value>(&text) else {
            tracing::warn!(path = %path.display(), "CNI config is not JSON: skipped");
            continue;
        };
        if v.get("plugins").is_none() {
            // A single-plugin .conf becomes a list of one.
            let name = v.get("name").cloned().unwrap_or(Value::Null);
            let version = v.get("cniVersion").cloned().unwrap_or(Value::Null);
            v = json!({"cniVersion": version, "name": name, "plugins": [v]});
        }
        if v["plugins"].as_array().is_some_and(|p| !p.is_empty()) && v["name"].is_string() {
            return Ok((path, v));
        }
    }
    Err(NetError::NotReady(format!("no CNI network config in {}", dir.display())))
}

impl Network {
    pub(crate) fn setup_cni(&self, state: &mut State, pod: &PodSpec<'_>) -> Result<Vec<std::net::IpAddr>, NetError> {
        let wanted = ports::host_ports(pod.ports)?;
        if let Some((port, holder)) = ports::conflict(
            &wanted,
            state.pods.values().filter(|p| p.id != pod.id).map(|p| (p.id.as_str(), &p.ports[..])),
        ) {
            return Err(NetError::HostPortTaken { port: port.describe(), holder });
        }
        let (_, netconf) = find_config(&self.config.cni_conf_dir)?;
        let attachment = CniAttachment {
            netconf,
            netns: pod.netns.to_path_buf(),
            ifname: crate::builtin::POD_IFNAME.to_string(),
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
                pod.namespace, pod.name, pod.id, pod.uid
            ),
            port_mappings: port_mappings_json(&wanted),
            result: None,
        };
        let mut rec = PodNet { id: pod.id.to_string(), ports: wanted, cni: Some(attachment), ..Default::default() };
        // The intent: DEL must run even if reefd dies in the middle of ADD.
        self.store.save(&rec)?;
        state.pods.insert(rec.id.clone(), rec.clone());
        let Some(att) = rec.cni.as_mut() else { return Err(NetError::Config("CNI attachment missing".into())) };
        let result = self.run_list("ADD", pod.id, att)?;
        let ips = result_ips(&result);
        att.result = Some(result);
        rec.ips = ips.clone();
        self.store.save(&rec)?;
        state.pods.insert(rec.id.clone(), rec);
        Ok(ips)
    }

    pub(crate) fn teardown_cni(&self, rec: &PodNet) -> Result<(), NetError> {
        let Some(att) = rec.cni.clone() else { return Ok(()) };
        self.run_list("DEL", &rec.id, &att).map(drop)
    }

    /// CHECK: the plugins confirm the pod's network is as ADD left it.
    pub fn check(&self, id: &str) -> Result<(), NetError> {
        let rec = self.lock().pods.get(id).cloned();
        let Some(att) = rec.and_then(|r| r.cni) else { return Ok(()) };
        self.run_list("CHECK", id, &att).map(drop)
    }

    /// Runs the list: ADD and CHECK in order, each plugin seeing the previous result; DEL in reverse, all of them
    /// even if one fails (the first failure is returned).
    fn run_list(&self, command: &'static str, id: &str, att: &CniAttachment) -> Result<Value, NetError> {
        let list = &att.netconf;
        let plugins = list["plugins"].as_array().cloned().unwrap_or_default();
        let mut prev = if command == "ADD" { None } else { att.result.clone() };
        if command == "DEL" {
            let mut first_err = None;
            for plugin in plugins.iter().rev() {
                if let Err(e) = self.exec_plugin(command, id, list, plugin, prev.as_ref(), att) {
                    first_err.get_or_insert(e);
                }
            }
            return first_err.map_or(Ok(Value::Null), Err);
        }
        for plugin in &plugins {
            let out = self.exec_plugin(command, id, list, plugin, prev.as_ref(), att)?;
            if command == "ADD" {
                prev = Some(out);
            }
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    fn exec_plugin(
        &self,
        command: &'static str,
        id: &str,
        list: &Value,
        plugin: &Value,
        prev: Option<&Value>,
        att: &CniAttachment,
    ) -> Result<Value, NetError> {
        let kind = plugin["type"].as_str().unwrap_or_default().to_string();
        let fail = |message: String| NetError::Cni { command, plugin: kind.clone(), message };
        if kind.is_empty() || kind.contains('/') {
            return Err(fail("the plugin has no valid \"type\"".into()));
        }
        let bin = self
            .config
            .cni_bin_dirs
            .iter()
            .map(|d| d.join(&kind))
            .find(|p| p.is_file())
            .ok_or_else(|| fail(format!("no plugin binary in {:?}", self.config.cni_bin_dirs)))?;
        let mut conf = plugin.clone();
        conf["name"] = list["name"].clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        if plugin["capabilities"]["portMappings"].as_bool() == Some(true)
            && att.port_mappings.as_array().is_some_and(|a| !a.is_empty())
        {
            conf["runtimeConfig"] = json!({"portMappings": att.port_mappings});
        }
        let path = std::env::join_paths(&self.config.cni_bin_dirs).unwrap_or_default();
        let mut child = Command::new(&bin)
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", &att.netns)
            .env("CNI_IFNAME", &att.ifname)
            .env("CNI_ARGS", &att.args)
            .env("CNI_PATH", path)
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("start {}: {e}", bin.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(conf.to_string().as_bytes());
        }
        let output = wait_with_timeout(child, self.config.cni_timeout).map_err(fail)?;
        let stdout: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        if !output.status.success() {
            let msg = stdout["msg"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()));
            let details = stdout["details"].as_str().map(|d| format!(" ({d})")).unwrap_or_default();
            return Err(fail(format!("{msg}{details}")));
        }
        Ok(stdout)
    }
}

fn wait_with_timeout(child: std::process::Child, timeout: Duration) -> Result<std::process::Output, String> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(format!("wait: {e}")),
        Err(_) => {
            // The waiting thread still owns the child, so the pid cannot have been reused yet.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = rx.recv();
            Err(format!("timed out after {timeout:?}"))
        }
    }
}

fn port_mappings_json(ports: &[HostPort]) -> Value {
    Value::Array(
        ports
            .iter()
            .map(|p| {
                let mut m =
                    json!({"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol.name()});
                if let Some(ip) = p.host_ip {
                    m["hostIP"] = json!(ip.to_string());
                }
                m
            })
            .collect(),
    )
}

/// The pod's addresses from a 1.0 result (`ips[].address` in CIDR form), IPv4 first: the first is the pod's
/// primary IP (PodSandboxStatus `network.ip`), the rest its additional IPs, as kubelet expects of a dual-stack pod.
pub fn result_ips(result: &Value) -> Vec<std::net::IpAddr> {
    let mut ips: Vec<std::net::IpAddr> = result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect();
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_plugin_conf_becomes_a_list_and_files_go_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("20-b.conf"), r#"{"cniVersion":"1.0.0","name":"b","type":"bridge"}"#).unwrap();
        std::fs::write(dir.path().join("10-bad.conflist"), "not json").unwrap();
        std::fs::write(dir.path().join("README"), "ignored").unwrap();
        let (path, list) = find_config(dir.path()).unwrap();
        assert!(path.ends_with("20-b.conf"));
        assert_eq!(list["plugins"][0]["type"], "bridge");
        assert_eq!(list["name"], "b");
        assert!(find_config(&dir.path().join("none")).is_err());
    }

    #[test]
    fn result_addresses_and_port_mappings() {
        let r = json!({"cniVersion":"1.0.0","ips":[{"address":"10.22.0.5/16","gateway":"10.22.0.1"},{"address":"fd00::5/64"}]});
        assert_eq!(result_ips(&r), vec!["10.22.0.5".parse::<std::net::IpAddr>().unwrap(), "fd00::5".parse().unwrap()]);
        let v6_first = json!({"cniVersion":"1.0.0","ips":[{"address":"fd00::5/64"},{"address":"10.22.0.5/16"}]});
        assert_eq!(result_ips(&v6_first), result_ips(&r), "the IPv4 address is the primary one");
        let ports = ports::host_ports(&[crate::PortMapping {
            protocol: crate::Protocol::Udp,
            container_port: 53,
            host_port: 5353,
            host_ip: "127.0.0.1".into(),
        }])
        .unwrap();
        assert_eq!(
            port_mappings_json(&ports),
            json!([{"hostPort":5353,"containerPort":53,"protocol":"udp","hostIP":"127.0.0.1"}])
        );
    }
}
