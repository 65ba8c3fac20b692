//! IPAM over one IPv4 subnet: one lease file per address, named by the address and holding the owner's id.
//!
//! A lease is written to a temporary file and renamed into place, so after a crash a lease exists whole or not
//! at all; the owner's network record (see `store`) is written before the lease, so a lease never lacks an owner
//! that reconciliation can find. Leases are not fsynced: a power loss is a reboot, after which every pod's
//! network is gone and reconciliation frees all leases anyway.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::error::NetError;

pub struct Ipam {
    dir: PathBuf,
    subnet: Ipv4Net,
    leases: HashMap<Ipv4Addr, String>,
    /// Where the next search starts: addresses are handed out round-robin so a released one is not reused at once.
    next: u32,
}

/// The gateway of a subnet: its first host address, held by the bridge.
pub fn gateway(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
}

impl Ipam {
    pub fn open(dir: &Path, subnet: Ipv4Net) -> Result<Ipam, NetError> {
        std::fs::create_dir_all(dir).map_err(NetError::io("create lease dir", dir))?;
        let mut leases = HashMap::new();
        for entry in std::fs::read_dir(dir).map_err(NetError::io("read lease dir", dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                // A lease that was being written when reefd died: it was never handed out.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let (Ok(ip), Ok(owner)) = (name.parse::<Ipv4Addr>(), std::fs::read_to_string(entry.path())) else {
                continue;
            };
            leases.insert(ip, owner.trim().to_string());
        }
        Ok(Ipam { dir: dir.to_path_buf(), subnet, leases, next: 0 })
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    pub fn set_subnet(&mut self, subnet: Ipv4Net) {
        if subnet != self.subnet {
            self.subnet = subnet;
            self.next = 0;
        }
    }

    pub fn gateway(&self) -> Ipv4Addr {
        gateway(self.subnet)
    }

    /// The owner's address in the current subnet, allocating one if it has none.
    pub fn allocate(&mut self, owner: &str) -> Result<Ipv4Addr, NetError> {
        if let Some(ip) = self.leases.iter().find(|(ip, o)| *o == owner && self.subnet.contains(*ip)).map(|(ip, _)| *ip)
        {
            return Ok(ip);
        }
        let first = u32::from(self.subnet.network()) + 2; // network address and gateway excluded
        let last = u32::from(self.subnet.broadcast()).saturating_sub(1);
        if last < first {
            return Err(NetError::Exhausted(self.subnet.to_string()));
        }
        let size = last - first + 1;
        for i in 0..size {
            let candidate = Ipv4Addr::from(first + (self.next + i) % size);
            if self.leases.contains_key(&candidate) {
                continue;
            }
            self.write(candidate, owner)?;
            self.next = (self.next + i + 1) % size;
            return Ok(candidate);
        }
        Err(NetError::Exhausted(self.subnet.to_string()))
    }

    fn write(&mut self, ip: Ipv4Addr, owner: &str) -> Result<(), NetError> {
        let path = self.dir.join(ip.to_string());
        let tmp = self.dir.join(format!(".{ip}"));
        std::fs::write(&tmp, owner).map_err(NetError::io("write lease", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(NetError::io("commit lease", &path))?;
        self.leases.insert(ip, owner.to_string());
        Ok(())
    }

    /// Frees every address of `owner`. Idempotent.
    pub fn release(&mut self, owner: &str) -> Result<(), NetError> {
        let ips: Vec<Ipv4Addr> = self.leases.iter().filter(|(_, o)| *o == owner).map(|(ip, _)| *ip).collect();
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

    pub fn leases_of(&self, owner: &str) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self.leases.iter().filter(|(_, o)| *o == owner).map(|(ip, _)| *ip).collect();
        v.sort();
        v
    }

    pub fn owners(&self) -> Vec<String> {
        let mut v: Vec<String> = self.leases.values().cloned().collect();
        v.sort();
        v.dedup();
        v
    }

    /// The subnets with a live lease, plus the current one: the masquerade rules cover all of them.
    pub fn subnets_in_use(&self, prefix_of: impl Fn(Ipv4Addr) -> Option<Ipv4Net>) -> Vec<Ipv4Net> {
        let mut v = vec![self.subnet];
        for ip in self.leases.keys() {
            if let Some(net) = prefix_of(*ip)
                && !v.contains(&net)
            {
                v.push(net);
            }
        }
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

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_unique_skip_the_gateway_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut ipam = Ipam::open(dir.path(), net("10.88.0.0/29")).unwrap();
        assert_eq!(ipam.gateway(), "10.88.0.1".parse::<Ipv4Addr>().unwrap());
        let got: Vec<Ipv4Addr> = (0..5).map(|i| ipam.allocate(&format!("pod{i}")).unwrap()).collect();
        assert_eq!(got[0], "10.88.0.2".parse::<Ipv4Addr>().unwrap());
        assert_eq!(got[4], "10.88.0.6".parse::<Ipv4Addr>().unwrap());
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
        let nets = ipam.subnets_in_use(|ip| net("10.88.0.0/24").contains(&ip).then(|| net("10.88.0.0/24")));
        assert_eq!(nets, vec![net("10.244.1.0/24"), net("10.88.0.0/24")]);
    }
}
