//! The files a pod's containers get bind-mounted: resolv.conf from the pod's DNS config, hosts, hostname.

use std::path::Path;

use k8s_cri::v1 as cri;

pub fn write_pod_files(
    dir: &Path,
    config: &cri::PodSandboxConfig,
    host_network: bool,
    pod_ips: &[String],
) -> std::io::Result<()> {
    let resolv = match &config.dns_config {
        Some(dns) if !dns.servers.is_empty() || !dns.searches.is_empty() || !dns.options.is_empty() => resolv_conf(dns),
        // No DNS config: the node's, as kubelet expects for dnsPolicy Default and host-network pods.
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    };
    std::fs::write(dir.join("resolv.conf"), resolv)?;
    let hostname = if host_network || config.hostname.is_empty() {
        nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
    } else {
        config.hostname.clone()
    };
    std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
    std::fs::write(dir.join("hosts"), hosts(&hostname, pod_ips))
}

fn resolv_conf(dns: &cri::DnsConfig) -> String {
    let mut s = String::new();
    if !dns.searches.is_empty() {
        s.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        s.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        s.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    s
}

/// The hostname resolves to each of the pod's IPs (both families for a dual-stack pod, as kubelet writes it); a
/// pod without one of its own (host network) maps it to 127.0.1.1.
fn hosts(hostname: &str, pod_ips: &[String]) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if pod_ips.is_empty() {
        s.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    for ip in pod_ips {
        s.push_str(&format!("{ip}\t{hostname}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_config_becomes_resolv_conf() {
        let dns = cri::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        assert!(hosts("web-0", &[]).ends_with("127.0.1.1\tweb-0\n"));
        assert!(hosts("web-0", &["10.88.0.7".into()]).ends_with("ip6-allrouters\n10.88.0.7\tweb-0\n"));
        let dual = hosts("web-0", &["10.88.0.7".into(), "fd00::7".into()]);
        assert!(dual.ends_with("\n10.88.0.7\tweb-0\nfd00::7\tweb-0\n"), "{dual}");
    }
}
