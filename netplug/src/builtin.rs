//! Built-in mode: Reef's bridge, a veth pair per pod, addresses from `ipam`, rules in Reef's nft table.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use crate::error::NetError;
use crate::nft::{Dnat, RuleSet};
use crate::rtnl::Rtnl;
use crate::store::PodNet;
use crate::{Network, PodSpec, State, links, ports, sysctl};

/// Host ends of pod veths are named `rf` + the start of the pod id, so they fit IFNAMSIZ and are Reef's at a glance.
pub(crate) fn host_veth(id: &str) -> String {
    format!("rf{}", &id[..id.len().min(13)])
}

pub(crate) const POD_IFNAME: &str = "eth0";

fn rtnl() -> Result<Rtnl, NetError> {
    Rtnl::open().map_err(NetError::netlink("open rtnetlink socket"))
}

/// kubelet's pod CIDRs as last saved: `pod-cidr` (IPv4) and `pod-cidr6`.
pub(crate) fn load_pod_cidrs(dir: &Path) -> Vec<IpNet> {
    ["pod-cidr", "pod-cidr6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok()?.trim().parse().ok())
        .collect()
}

impl Network {
    /// The bridge (created if missing, up, holding the gateway of every subnet in use), ip_forward and
    /// route_localnet, and the rule table.
    pub(crate) fn ensure_host(&self, state: &mut State) -> Result<u32, NetError> {
        let mut rt = rtnl()?;
        let bridge = &self.config.bridge;
        let index =
            links::ensure_bridge(&mut rt, bridge).map_err(NetError::netlink(format!("create bridge {bridge}")))?;
        for net in state.subnets.clone() {
            let gw = crate::ipam::gateway(net);
            links::ensure_address(&mut rt, index, gw, net.prefix_len())
                .map_err(NetError::netlink(format!("add {gw}/{} to {bridge}", net.prefix_len())))?;
        }
        sysctl::ip_forward()?;
        if state.ipam6.is_some() {
            sysctl::ipv6_forwarding()?;
        }
        sysctl::route_localnet(bridge)?;
        state.bridge_index = Some(index);
        self.sync_rules(state)?;
        Ok(index)
    }

    /// kubelet's pod CIDRs take over for new pods (each family's when given); saved so a restart keeps them.
    pub(crate) fn set_subnets(&self, state: &mut State, v4: Option<IpNet>, v6: Option<IpNet>) -> Result<(), NetError> {
        let mut changed = false;
        for (cidr, file) in [(v4, "pod-cidr"), (v6, "pod-cidr6")] {
            let Some(cidr) = cidr else { continue };
            let slot = if cidr.addr().is_ipv4() { &mut state.ipam } else { &mut state.ipam6 };
            match slot {
                Some(ipam) if ipam.subnet() == cidr => continue,
                Some(ipam) => ipam.set_subnet(cidr),
                None if cidr.addr().is_ipv6() => {
                    *slot = Some(crate::ipam::Ipam::open(&self.config.dir.join("leases"), cidr)?)
                }
                None => return Ok(()),
            }
            if !state.subnets.contains(&cidr) {
                state.subnets.push(cidr);
            }
            let path = self.config.dir.join(file);
            std::fs::write(&path, cidr.to_string()).map_err(NetError::io("save pod CIDR", &path))?;
            tracing::info!(subnet = %cidr, "pods now get addresses from kubelet's pod CIDR");
            changed = true;
        }
        if changed { self.ensure_host(state).map(drop) } else { Ok(()) }
    }

    /// Rebuilds Reef's table from the records, now.
    pub(crate) fn sync_rules(&self, state: &State) -> Result<(), NetError> {
        let (set, generation) = self.rule_set(state);
        crate::apply_rules(&self.applied, &set, generation)
    }

    /// Rebuilds the table on the reaper thread: a stopped pod's hostPorts can go a few milliseconds late (its
    /// address is already gone), but no StopPodSandbox waits for the kernel's nftables commit.
    pub(crate) fn sync_rules_later(&self, state: &State) {
        let (set, generation) = self.rule_set(state);
        self.background(crate::Job::Rules(set, generation));
    }

    /// The table as the records say, with a generation number: a rebuild never overwrites a newer one.
    fn rule_set(&self, state: &State) -> (RuleSet, u64) {
        let mut dnats = Vec::new();
        for pod in state.pods.values() {
            // A hostPort without a host IP reaches the pod over each family it has an address of; one with a
            // host IP only over that address's family.
            for pod_ip in pod.ips.iter().copied() {
                for p in pod.ports.iter().filter(|p| p.host_ip.is_none_or(|h| h.is_ipv6() == pod_ip.is_ipv6())) {
                    dnats.push(Dnat {
                        protocol: p.protocol,
                        host_ip: p.host_ip,
                        host_port: p.host_port,
                        pod_ip,
                        container_port: p.container_port,
                        pod_id: pod.id.clone(),
                    });
                }
            }
        }
        dnats.sort_by(|a, b| {
            (a.host_port, a.protocol.name(), a.pod_ip.is_ipv6()).cmp(&(
                b.host_port,
                b.protocol.name(),
                b.pod_ip.is_ipv6(),
            ))
        });
        let set = RuleSet {
            table: self.config.nft_table.clone(),
            bridge: self.config.bridge.clone(),
            subnets: state.subnets.clone(),
            dnats,
        };
        (set, self.generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1)
    }

    pub(crate) fn setup_builtin(&self, state: &mut State, pod: &PodSpec<'_>) -> Result<Vec<IpAddr>, NetError> {
        let wanted = ports::host_ports(pod.ports)?;
        if let Some((port, holder)) = ports::conflict(
            &wanted,
            state.pods.values().filter(|p| p.id != pod.id).map(|p| (p.id.as_str(), &p.ports[..])),
        ) {
            return Err(NetError::HostPortTaken { port: port.describe(), holder });
        }
        let bridge = match state.bridge_index {
            Some(i) => i,
            None => self.ensure_host(state)?,
        };
        let host = host_veth(pod.id);
        let mut rec = PodNet {
            id: pod.id.to_string(),
            host_veth: host.clone(),
            netns: pod.netns.to_path_buf(),
            ips: vec![],
            ports: wanted,
            cni: None,
        };
        // The intent first: from here on a crash leaves a record that reconciliation tears down.
        self.store.save(&rec)?;
        state.pods.insert(rec.id.clone(), rec.clone());
        let ipam = state.ipam.as_mut().ok_or_else(|| NetError::Config("no IPAM in built-in mode".into()))?;
        // (address, prefix length, gateway) per family, IPv4 first: it is the pod's primary address.
        let mut addrs = vec![(ipam.allocate(pod.id)?, ipam.subnet().prefix_len(), ipam.gateway())];
        if let Some(ipam6) = state.ipam6.as_mut() {
            addrs.push((ipam6.allocate(pod.id)?, ipam6.subnet().prefix_len(), ipam6.gateway()));
        }
        rec.ips = addrs.iter().map(|a| a.0).collect();
        state.pods.insert(rec.id.clone(), rec.clone());

        let netns = std::fs::File::open(pod.netns).map_err(NetError::io("open pod network namespace", pod.netns))?;
        let mut rt = rtnl()?;
        let created = links::create_veth(&mut rt, &host, bridge, self.config.mtu, POD_IFNAME, &netns);
        let bridge_gone = || {
            let mut rt = rtnl().ok()?;
            Some(links::index_of(&mut rt, &self.config.bridge).ok()? != Some(bridge))
        };
        if created.is_err() && bridge_gone() == Some(true) {
            // Someone deleted the bridge under us: make it again (with its address and rules), once.
            let bridge = self.ensure_host(state)?;
            links::create_veth(&mut rt, &host, bridge, self.config.mtu, POD_IFNAME, &netns)
        } else {
            created
        }
        .map_err(NetError::netlink(format!("create veth pair {host}/{POD_IFNAME}")))?;
        let host_index = links::index_of(&mut rt, &host)
            .map_err(NetError::netlink(format!("find {host}")))?
            .ok_or_else(|| NetError::netlink(format!("find {host}"))(nix::errno::Errno::ENODEV))?;
        links::set_hairpin(&mut rt, host_index).map_err(NetError::netlink(format!("hairpin on {host}")))?;

        let mut ns = Rtnl::open_in(pod.netns).map_err(NetError::netlink("enter the pod's network namespace"))?;
        let eth0 = links::index_of(&mut ns, POD_IFNAME)
            .map_err(NetError::netlink("find eth0 in the pod"))?
            .ok_or_else(|| NetError::netlink("find eth0 in the pod")(nix::errno::Errno::ENODEV))?;
        for (ip, len, _) in &addrs {
            links::ensure_address(&mut ns, eth0, *ip, *len)
                .map_err(NetError::netlink(format!("add {ip}/{len} to the pod's eth0")))?;
        }
        links::set_up(&mut ns, eth0).map_err(NetError::netlink("bring the pod's eth0 up"))?;
        for (_, _, gateway) in &addrs {
            links::add_default_route(&mut ns, *gateway, eth0)
                .map_err(NetError::netlink(format!("default route via {gateway}")))?;
        }

        self.store.save(&rec)?;
        let has_ports = !rec.ports.is_empty();
        state.pods.insert(rec.id.clone(), rec);
        if has_ports {
            self.sync_rules(state)?;
        }
        Ok(addrs.into_iter().map(|a| a.0).collect())
    }

    /// The pod's address leaves its eth0 at once, so the lease can be handed out again; the veth pair itself is
    /// deleted by the reaper thread: unregistering a link waits for an RCU grace period (tens of milliseconds on a
    /// busy node), which no StopPodSandbox needs to wait for. A veth still queued when reefd dies has no record
    /// left, and the start-up sweep deletes it.
    pub(crate) fn teardown_builtin(&self, state: &mut State, rec: &PodNet) -> Result<(), NetError> {
        let host = if rec.host_veth.is_empty() { host_veth(&rec.id) } else { rec.host_veth.clone() };
        if !rec.ips.is_empty() && !rec.netns.as_os_str().is_empty() {
            // A namespace already gone took the address (and the veth pair) with it.
            if let Ok(mut ns) = Rtnl::open_in(&rec.netns)
                && let Ok(Some(eth0)) = links::index_of(&mut ns, POD_IFNAME)
            {
                let prefix = |ip: &IpAddr| state.subnets.iter().find(|n| n.contains(ip)).map(|n| n.prefix_len());
                for ip in &rec.ips {
                    let Some(len) = prefix(ip) else { continue };
                    links::delete_address(&mut ns, eth0, *ip, len)
                        .map_err(NetError::netlink(format!("remove {ip} from the pod's eth0")))?;
                }
            }
        }
        for ipam in [state.ipam.as_mut(), state.ipam6.as_mut()].into_iter().flatten() {
            ipam.release(&rec.id)?;
        }
        self.background(crate::Job::DeleteLink(host));
        if !rec.ports.is_empty() {
            state.pods.remove(&rec.id);
            self.sync_rules_later(state);
        }
        Ok(())
    }

    /// What no record owns: leases of unknown pods, `rf*` veths on our bridge. Then the table is rebuilt.
    pub(crate) fn sweep_builtin(&self, state: &mut State) {
        let known: Vec<String> = state.pods.keys().cloned().collect();
        for ipam in [state.ipam.as_mut(), state.ipam6.as_mut()].into_iter().flatten() {
            for owner in ipam.owners() {
                if !known.contains(&owner) {
                    tracing::info!(pod = %owner, "releasing a lease no pod owns");
                    let _ = ipam.release(&owner);
                }
            }
        }
        let veths: Vec<String> = state.pods.values().map(|p| p.host_veth.clone()).collect();
        let swept = (|| -> Result<(), NetError> {
            let mut rt = rtnl()?;
            let Some(bridge) =
                links::index_of(&mut rt, &self.config.bridge).map_err(NetError::netlink("find bridge"))?
            else {
                return Ok(());
            };
            for port in links::ports_of(&mut rt, bridge).map_err(NetError::netlink("list bridge ports"))? {
                if port.starts_with("rf") && !veths.contains(&port) {
                    tracing::info!(veth = %port, "removing a veth no pod owns");
                    links::delete(&mut rt, &port).map_err(NetError::netlink(format!("delete veth {port}")))?;
                }
            }
            Ok(())
        })();
        if let Err(e) = swept.and_then(|()| self.ensure_host(state).map(drop)) {
            tracing::warn!(error = %crate::error_chain(&e), "network reconciliation incomplete");
        }
    }

    pub(crate) fn ready_builtin(&self) -> Result<(), String> {
        let mut rt = rtnl().map_err(|e| crate::error_chain(&e))?;
        match links::is_up(&mut rt, &self.config.bridge) {
            Ok(true) => Ok(()),
            Ok(false) => Err(format!("bridge {} is missing or down", self.config.bridge)),
            Err(e) => Err(format!("bridge {}: {e}", self.config.bridge)),
        }
    }
}
