//! Sysctls a container may set: only those the kernel keeps per namespace, and only in a namespace of the pod's
//! own, so that a pod can never change the node's settings. The rules are runc's: IPC sysctls (`kernel.shm*`,
//! `kernel.msg*`, `kernel.sem`, `fs.mqueue.*`) need a private IPC namespace, `net.*` a private network namespace,
//! `kernel.hostname` and `kernel.domainname` a private UTS namespace; anything else is node-wide and refused.
//!
//! Keys come in kubelet's two spellings: dots (`net.ipv4.ip_forward`), where a `/` inside a part stands for a
//! literal dot (`net.ipv4.conf.eth0/100.forwarding`, interface `eth0.100`), or slashes (`net/ipv4/ip_forward`).

use std::path::{Path, PathBuf};

/// The namespace a sysctl belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    Ipc,
    Network,
    Uts,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SysctlError {
    #[error("sysctl {0:?} is not a valid name")]
    BadName(String),
    #[error("sysctl {0:?} is not namespaced: it would change the whole node")]
    NotNamespaced(String),
    #[error("sysctl {key:?} needs a {ns} namespace of the pod's own, and the pod uses the node's")]
    HostNamespace { key: String, ns: &'static str },
    #[error("sysctl {0:?} does not exist on this node")]
    Unknown(String),
}

impl Namespace {
    fn name(self) -> &'static str {
        match self {
            Namespace::Ipc => "IPC",
            Namespace::Network => "network",
            Namespace::Uts => "UTS",
        }
    }
}

/// The key's parts, in either spelling. `None` when a part is empty or could leave /proc/sys.
fn parts(key: &str) -> Option<Vec<String>> {
    let slash_form = key.find('/').is_some_and(|s| key.find('.').is_none_or(|d| s < d));
    let parts: Vec<String> = if slash_form {
        key.split('/').map(str::to_string).collect()
    } else {
        key.split('.').map(|p| p.replace('/', ".")).collect()
    };
    let safe = |p: &String| {
        !p.is_empty() && p != "." && p != ".." && p.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    (parts.len() >= 2 && parts.iter().all(safe)).then_some(parts)
}

/// The file under /proc/sys that holds `key`.
pub fn path(key: &str) -> Option<PathBuf> {
    parts(key).map(|p| p.iter().fold(PathBuf::from("/proc/sys"), |path, part| path.join(part)))
}

/// The namespace `key` belongs to, or `None` for a node-wide sysctl.
pub fn namespace_of(key: &str) -> Option<Namespace> {
    let parts = parts(key)?;
    let dotted = parts.join(".");
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    match parts[0].as_str() {
        _ if IPC.contains(&dotted.as_str()) => Some(Namespace::Ipc),
        "fs" if parts[1] == "mqueue" => Some(Namespace::Ipc),
        "net" => Some(Namespace::Network),
        "kernel" if dotted == "kernel.hostname" || dotted == "kernel.domainname" => Some(Namespace::Uts),
        _ => None,
    }
}

/// Checks `key` against the namespaces the pod has of its own (`private(ns)`), and that this kernel knows it.
pub fn check(key: &str, private: impl Fn(Namespace) -> bool) -> Result<(), SysctlError> {
    parts(key).ok_or_else(|| SysctlError::BadName(key.to_string()))?;
    let ns = namespace_of(key).ok_or_else(|| SysctlError::NotNamespaced(key.to_string()))?;
    if !private(ns) {
        return Err(SysctlError::HostNamespace { key: key.to_string(), ns: ns.name() });
    }
    if !known_on(Path::new("/proc/sys"), key) {
        return Err(SysctlError::Unknown(key.to_string()));
    }
    Ok(())
}

/// Whether the kernel has `key`, looked up below `root`. The node's network namespace is the one looked in, and
/// a pod's interfaces are not there: a per-interface key (`net.ipv4.conf.eth0.*`) is checked on `default`.
fn known_on(root: &Path, key: &str) -> bool {
    let Some(mut parts) = parts(key) else { return false };
    if parts.len() > 4 && parts[0] == "net" && matches!(parts[2].as_str(), "conf" | "neigh") {
        parts[3] = "default".into();
    }
    parts.iter().fold(root.to_path_buf(), |path, part| path.join(part)).is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_name_the_same_file_and_nothing_climbs_out() {
        assert_eq!(path("net.ipv4.ip_forward"), Some("/proc/sys/net/ipv4/ip_forward".into()));
        assert_eq!(path("net/ipv4/ip_forward"), Some("/proc/sys/net/ipv4/ip_forward".into()));
        assert_eq!(
            path("net.ipv4.conf.eth0/100.forwarding"),
            Some("/proc/sys/net/ipv4/conf/eth0.100/forwarding".into())
        );
        assert_eq!(
            path("net/ipv4/conf/eth0.100/forwarding"),
            Some("/proc/sys/net/ipv4/conf/eth0.100/forwarding".into())
        );
        for bad in ["", "net", "net..x", "net/../../etc/x", "net.ipv4.x y", "net/./x", "kernel.x\n"] {
            assert_eq!(path(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_ipc_network_and_uts_sysctls_are_namespaced() {
        assert_eq!(namespace_of("kernel.shm_rmid_forced"), Some(Namespace::Ipc));
        assert_eq!(namespace_of("kernel.sem"), Some(Namespace::Ipc));
        assert_eq!(namespace_of("fs.mqueue.msg_max"), Some(Namespace::Ipc));
        assert_eq!(namespace_of("net.ipv4.ip_unprivileged_port_start"), Some(Namespace::Network));
        assert_eq!(namespace_of("kernel.hostname"), Some(Namespace::Uts));
        for node_wide in ["kernel.panic", "vm.overcommit_memory", "fs.file-max", "kernel.shmfoo", "kernel.hostnames"] {
            assert_eq!(namespace_of(node_wide), None, "{node_wide}");
        }
    }

    #[test]
    fn a_sysctl_is_refused_in_the_node_s_namespace_and_when_the_kernel_lacks_it() {
        let all = |_: Namespace| true;
        assert_eq!(check("kernel.shm_rmid_forced", all), Ok(()));
        assert_eq!(check("net.ipv4.ip_unprivileged_port_start", all), Ok(()));
        let host_net = |ns: Namespace| ns != Namespace::Network;
        assert!(matches!(check("net.ipv4.ip_forward", host_net), Err(SysctlError::HostNamespace { .. })));
        assert_eq!(check("kernel.panic", all), Err(SysctlError::NotNamespaced("kernel.panic".into())));
        assert_eq!(check("net.ipv4.no_such_knob", all), Err(SysctlError::Unknown("net.ipv4.no_such_knob".into())));
        assert_eq!(check("net.ipv4.conf.eth0.forwarding", all), Ok(()), "a pod interface is checked on default");
    }
}
