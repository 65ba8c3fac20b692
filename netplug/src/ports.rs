//! Host ports: validation and the rule that one (protocol, host port) pair belongs to one pod per address.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::NetError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => libc::IPPROTO_TCP as u8,
            Protocol::Udp => libc::IPPROTO_UDP as u8,
            Protocol::Sctp => libc::IPPROTO_SCTP as u8,
        }
    }
}

/// A port mapping as asked for (kubelet's hostPort). Only mappings with a host port reach the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub protocol: Protocol,
    pub container_port: i32,
    pub host_port: i32,
    /// Empty, 0.0.0.0 or `::`: every address of the node, over each family the pod has an address of.
    pub host_ip: String,
}

/// A validated host port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    pub protocol: Protocol,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
}

impl HostPort {
    fn overlaps(&self, other: &HostPort) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }

    pub fn describe(&self) -> String {
        let ip = match self.host_ip {
            Some(IpAddr::V6(i)) => format!("[{i}]"),
            Some(i) => i.to_string(),
            None => "0.0.0.0".into(),
        };
        format!("{ip}:{}/{}", self.host_port, self.protocol.name())
    }
}

/// Keeps the mappings that ask for a host port, checked: ports in range, a host address of either family.
pub fn host_ports(mappings: &[PortMapping]) -> Result<Vec<HostPort>, NetError> {
    let mut out: Vec<HostPort> = Vec::new();
    for m in mappings.iter().filter(|m| m.host_port != 0) {
        let bad = |why: &str| {
            NetError::InvalidPortMapping(format!(
                "{}:{}->{} {}: {why}",
                m.host_ip,
                m.host_port,
                m.container_port,
                m.protocol.name()
            ))
        };
        let host_port =
            u16::try_from(m.host_port).ok().filter(|p| *p > 0).ok_or_else(|| bad("host port out of range"))?;
        let container_port = u16::try_from(m.container_port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("container port out of range"))?;
        let host_ip = match m.host_ip.trim() {
            "" | "0.0.0.0" | "::" => None,
            ip => Some(ip.parse::<IpAddr>().map_err(|_| bad("host IP is not an IP address"))?),
        };
        let hp = HostPort { protocol: m.protocol, host_ip, host_port, container_port };
        if let Some(prev) = out.iter().find(|p| p.overlaps(&hp)) {
            return Err(bad(&format!("the pod maps {} twice", prev.describe())));
        }
        out.push(hp);
    }
    Ok(out)
}

/// The first of `wanted` already held by one of `taken` (pod id, its ports).
pub fn conflict<'a>(
    wanted: &[HostPort],
    taken: impl Iterator<Item = (&'a str, &'a [HostPort])>,
) -> Option<(HostPort, String)> {
    for (pod, ports) in taken {
        for w in wanted {
            if let Some(t) = ports.iter().find(|t| t.overlaps(w)) {
                return Some((t.clone(), pod.to_string()));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(proto: Protocol, host_ip: &str, host: i32, container: i32) -> PortMapping {
        PortMapping { protocol: proto, container_port: container, host_port: host, host_ip: host_ip.into() }
    }

    #[test]
    fn mappings_without_a_host_port_are_not_the_network_s_business() {
        assert!(host_ports(&[m(Protocol::Tcp, "", 0, 80)]).unwrap().is_empty());
    }

    #[test]
    fn bad_mappings_are_refused_with_the_reason() {
        let e = host_ports(&[m(Protocol::Tcp, "", 70000, 80)]).unwrap_err().to_string();
        assert!(e.contains("host port out of range"), "{e}");
        let e = host_ports(&[m(Protocol::Udp, "node-a", 53, 53)]).unwrap_err().to_string();
        assert!(e.contains("not an IP address"), "{e}");
        let v6 = host_ports(&[m(Protocol::Udp, "fd00::7", 53, 53)]).unwrap();
        assert_eq!(v6[0].describe(), "[fd00::7]:53/udp");
        let e = host_ports(&[m(Protocol::Tcp, "", 80, 80), m(Protocol::Tcp, "127.0.0.1", 80, 81)]).unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn a_taken_port_conflicts_per_protocol_and_address() {
        let a = host_ports(&[m(Protocol::Tcp, "", 8080, 80)]).unwrap();
        let udp = host_ports(&[m(Protocol::Udp, "", 8080, 80)]).unwrap();
        assert!(conflict(&udp, [("a", &a[..])].into_iter()).is_none(), "udp and tcp are distinct");
        let specific = host_ports(&[m(Protocol::Tcp, "127.0.0.1", 8080, 80)]).unwrap();
        let (port, holder) = conflict(&specific, [("a", &a[..])].into_iter()).unwrap();
        assert_eq!((port.describe().as_str(), holder.as_str()), ("0.0.0.0:8080/tcp", "a"));
        let b = host_ports(&[m(Protocol::Tcp, "127.0.0.2", 8080, 80)]).unwrap();
        assert!(conflict(&b, [("s", &specific[..])].into_iter()).is_none(), "two distinct addresses");
    }
}
