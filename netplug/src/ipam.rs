//! IPAM over one subnet of one family: one lease file per address, named by the address and holding the owner's
//! id. The IPv4 and the IPv6 IPAM share the lease directory (each reads only its own family's names), so one
//! store, one sweep and one crash-safety argument cover both.
//!
//! A lease is written to a temporary file and renamed into place, so after a crash a lease exists whole or not
//! at all; the owner's network record (see `store`) is written before the lease, so a lease never lacks an owner
//! that reconciliation can find. Leases are not fsynced: a power loss is a reboot, after which every pod's
//! network is gone and reconciliation frees all leases anyway.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use crate::error::NetError;

pub struct Ipam {
    dir: PathBuf,
    subnet: IpNet,
    leases: HashMap<IpAddr, String>,
    /// Where the next search starts: addresses are handed out round-robin so a released one is not reused at once.
    next: u128,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

fn from_u128(v6: bool, n: u128) -> IpAddr {
    if v6 { IpAddr::V6(Ipv6Addr::from(n)) } else { IpAddr::V4(Ipv4Addr::from(n as u32)) }
}

/// The gateway of a subnet: its first host address, held by the bridge.
pub fn gateway(subnet: IpNet) -> IpAddr {
    from_u128(subnet.addr().is_ipv6(), to_u128(subnet.network()).saturating_add(1))
}

impl Ipam {
    /// The IPAM of `subnet`'s family; leases of the other family in `dir` are left to the other IPAM.
    pub fn open(dir: &Path, subnet: impl Into<IpNet>) -> Result<Ipam, NetError> {
        let subnet = subnet.into();
        std::fs::create_dir_all(dir).map_err(NetError::io("create lease dir", dir))?;
        let mut leases = HashMap::new();
        for entry in std::fs::read_dir(dir).map_err(NetError::io("read lease dir", dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(ip) = name.strip_prefix('.') {
                // A lease that was being written when reefd died: it was never handed out.
                if ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6() == subnet.addr().is_ipv6()) {
                    let _ = std::fs::remove_file(entry.path());
                }
                continue;
            }
            let Ok(ip) = name.parse::<IpAddr>() else { continue };
            if ip.is_ipv6() != subnet.addr().is_ipv6() {
                continue;
            }
            let Ok(owner) = std::fs::read_to_string(entry.path()) else { continue };
            leases.insert(ip, owner.trim().to_string());
        }
        Ok(Ipam { dir: dir.to_path_buf(), subnet, leases, next: 0 })
    }

    pub fn subnet(&self) -> IpNet {
        self.subnet
    }

    /// A subnet of the same family takes over for new leases.
    pub fn set_subnet(&mut self, subnet: IpNet) {
        if subnet != self.subnet {
            self.subnet = subnet;
            self.next = 0;
        }
    }

    pub fn gateway(&self) -> IpAddr {
        gateway(self.subnet)
    }

    /// The owner's address in the current subnet, allocating one if it has none.
    pub fn allocate(&mut self, owner: &str) -> Result<IpAddr, NetError> {
        if let Some(ip) = self.leases.iter().find(|(ip, o)| *o == owner && self.subnet.contains(*ip)).map(|(ip, _)| *ip)
        {
            return Ok(ip);
        }
        let v6 = self.subnet.addr().is_ipv6();
        // The network address and the gateway are excluded, and so is the last address (IPv4's broadcast; in
        // IPv6 kept out too, so both families read the same).
        let first = to_u128(self.subnet.network()) + 2;
        let last = to_u128(self.subnet.broadcast()).saturating_sub(1);
        if last < first {
            return Err(NetError::Exhausted(self.subnet.to_string()));
        }
        // A /64 has 2^64 addresses: the search is bounded by the leases held, not by the subnet's size.
        let size = last - first + 1;
        for i in 0..size.min(self.leases.len() as u128 + 1) {
            let candidate = from_u128(v6, first + (self.next + i) % size);
            if self.leases.contains_key(&candidate) {
                continue;
            }
            self.write(candidate, owner)?;
            self.next = (self.next + i + 1) % size;
            return Ok(candidate);
        }
        Err(NetError::Exhausted(self.subnet.to_string()))
    }

    fn write(&mut self, ip: IpAddr, owner: &str) -> Result<(), NetError> {
        let path = self.dir.join(ip.to_string());
        let tmp = self.dir.join(format!(".{ip}"));
        std::fs::write(&tmp, owner).map_err(NetError::io("write lease", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(NetError::io("commit lease", &path))?;
        self.leases.insert(ip, owner.to_string());
        Ok(())
    }

    /// Frees every address of `owner`. Idempotent.
    pub fn release(&mut self, owner: &str) -> Result<(), NetError> {
        let ips: Vec<IpAddr> = self.leases.iter().filter(|(_, o)| *o == owner).map(|(ip, _)| *ip).collect();
        for ip in ips {
            let path = self.dir.join(ip.to_string());
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(NetError::io("remove lease", path)(e)),
            }
            self.leases.remove(&ip);
        }
        Ok(())
    }

    pub fn leases_of(&self, owner: &str) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.leases.iter().filter(|(_, o)| *o == owner).map(|(ip, _)| *ip).collect();
        v.sort();
        v
    }

    pub fn owners(&self) -> Vec<String> {
        let mut v: Vec<String> = self.leases.values().cloned().collect();
        v.sort();
        v.dedup();
        v
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_unique_skip_the_gateway_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), net("10.88.0.0/29")).unwrap();
        assert_eq!(ipam.gateway(), ip("10.88.0.1"));
        let got: Vec<IpAddr> = (0..5).map(|i| ipam.allocate(&format!("pod{i}")).unwrap()).collect();
        assert_eq!(got[0], ip("10.88.0.2"));
        assert_eq!(got[4], ip("10.88.0.6"));
        let e = ipam.allocate("pod5").unwrap_err();
        assert!(matches!(e, NetError::Exhausted(_)), "{e}");
        assert_eq!(ipam.allocate("pod3").unwrap(), got[3], "asking again returns the same lease");
        let reopened = Ipam::open(dir.path(), net("10.88.0.0/29")).unwrap();
        assert_eq!(reopened.leases_of("pod2"), vec![got[2]]);
        assert_eq!(reopened.len(), 5);
    }

    #[test]
    fn release_is_idempotent_and_frees_the_address() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), net("10.0.0.0/30")).unwrap();
        let ip = ipam.allocate("a").unwrap();
        assert!(ipam.allocate("b").is_err(), "a /30 has one pod address");
        ipam.release("a").unwrap();
        ipam.release("a").unwrap();
        assert_eq!(ipam.allocate("b").unwrap(), ip);
        assert!(Ipam::open(dir.path(), net("10.0.0.0/30")).unwrap().leases_of("a").is_empty());
    }

    #[test]
    fn a_half_written_lease_is_discarded_at_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".10.0.0.2"), "x").unwrap();
        let ipam = Ipam::open(dir.path(), net("10.0.0.0/24")).unwrap();
        assert!(ipam.is_empty());
        assert!(!dir.path().join(".10.0.0.2").exists());
    }

    #[test]
    fn a_new_subnet_takes_over_and_old_leases_stay_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), net("10.88.0.0/24")).unwrap();
        let old = ipam.allocate("a").unwrap();
        ipam.set_subnet(net("10.244.1.0/24"));
        let new = ipam.allocate("b").unwrap();
        assert!(net("10.244.1.0/24").contains(&new));
        assert_eq!(ipam.leases_of("a"), vec![old]);
    }

    #[test]
    fn v4_and_v6_share_the_lease_dir_and_each_sees_only_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let mut v4 = Ipam::open(dir.path(), net("10.88.0.0/24")).unwrap();
        let mut v6 = Ipam::open(dir.path(), net("fd00:1:2:3::/64")).unwrap();
        assert_eq!(v6.gateway(), ip("fd00:1:2:3::1"));
        assert_eq!(v4.allocate("a").unwrap(), ip("10.88.0.2"));
        assert_eq!(v6.allocate("a").unwrap(), ip("fd00:1:2:3::2"));
        assert_eq!(v6.allocate("b").unwrap(), ip("fd00:1:2:3::3"));
        let reopened6 = Ipam::open(dir.path(), net("fd00:1:2:3::/64")).unwrap();
        assert_eq!(reopened6.len(), 2);
        assert_eq!(Ipam::open(dir.path(), net("10.88.0.0/24")).unwrap().len(), 1);
        v6.release("a").unwrap();
        assert_eq!(v4.leases_of("a"), vec![ip("10.88.0.2")], "releasing v6 leaves v4 alone");
        v4.release("a").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only b's v6 lease is left");
    }

    #[test]
    fn a_v6_allocation_does_not_walk_the_whole_subnet() {
        let dir = tempfile::tempdir().unwrap();
        let mut v6 = Ipam::open(dir.path(), net("fd00:9::/64")).unwrap();
        let got: Vec<IpAddr> = (0..50).map(|i| v6.allocate(&format!("p{i}")).unwrap()).collect();
        assert_eq!(got.iter().collect::<std::collections::HashSet<_>>().len(), 50);
        let e = Ipam::open(dir.path(), net("fd00:9::/127")).unwrap().allocate("x").unwrap_err();
        assert!(matches!(e, NetError::Exhausted(_)), "{e}");
    }
}
