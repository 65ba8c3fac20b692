//! The few host sysctls pod networking needs.

use crate::error::NetError;

fn ensure(path: &str, value: &str) -> Result<(), NetError> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(path, value).map_err(NetError::io("write sysctl", path))
}

/// Routing between the bridge and the host's other links.
pub fn ip_forward() -> Result<(), NetError> {
    ensure("/proc/sys/net/ipv4/ip_forward", "1")
}

/// IPv6 routing, for dual stack only. Like the IPv4 switch (and like containerd's CNI bridge plugin and Docker) it
/// is set on and left on when reefd stops: other pods, or the operator's own setup, may rely on it by then, and
/// turning it off under them would cut them off. Note that `all.forwarding = 1` makes the kernel ignore router
/// advertisements on links with `accept_ra = 1`; a node whose uplink learns its IPv6 route by RA wants
/// `accept_ra = 2` there (Reef never touches the uplink).
pub fn ipv6_forwarding() -> Result<(), NetError> {
    ensure("/proc/sys/net/ipv6/conf/all/forwarding", "1")
}

/// Lets a hostPort reached at 127.0.0.1 be DNATed out through the bridge (the kernel otherwise drops packets
/// with a loopback source leaving a non-loopback link). Only on Reef's bridge.
pub fn route_localnet(bridge: &str) -> Result<(), NetError> {
    ensure(&format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"), "1")
}
