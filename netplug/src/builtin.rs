//! Built-in mode: Reef's bridge, a veth pair per pod, addresses from `ipam`, rules in Reef's nft table.

use std::net::IpAddr;
use std::path::Path;

use ipnet::Ipv4Net;

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

pub(crate) fn load_pod_cidr(dir: &Path) -> Option<Ipv4Net> {
    std::fs::read_to_string(dir.join("pod-cidr")).ok()?.trim().parse().ok()
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
            links::ensure_address(&mut rt, index, IpAddr::V4(gw), net.prefix_len())
                .map_err(NetError::netlink(format!("add {gw}/{} to {bridge}", net.prefix_len())))?;
        }
        sysctl::ip_forward()?;
        sysctl::route_localnet(bridge)?;
        state.bridge_index = Some(index);
        self.sync_rules(state)?;
        Ok(index)
    }

    pub(crate) fn set_subnet(&self, state: &mut State, cidr: Ipv4Net) -> Result<(), NetError> {
        let Some(ipam) = state.ipam.as_mut() else { return Ok(()) };
        if ipam.subnet() == cidr {
            return Ok(());
        }
        ipam.set_subnet(cidr);
        if !state.subnets.contains(&cidr) {
            state.subnets.push(cidr);
        }
        let path = self.config.dir.join("pod-cidr");
        std::fs::write(&path, cidr.to_string()).map_err(NetError::io("save pod CIDR", &path))?;
        tracing::info!(subnet = %cidr, "pods now get addresses from kubelet's pod CIDR");
        self.ensure_host(state).map(drop)
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
            let Some(IpAddr::V4(pod_ip)) = pod.ips.first().copied() else { continue };
            for p in &pod.ports {
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
        dnats.sort_by(|a, b| (a.host_port, a.protocol.name()).cmp(&(b.host_port, b.protocol.name())));
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
        let ip = ipam.allocate(pod.id)?;
        let subnet = ipam.subnet();
        let gateway = ipam.gateway();
        rec.ips = vec![IpAddr::V4(ip)];
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
        links::ensure_address(&mut ns, eth0, IpAddr::V4(ip), subnet.prefix_len())
            .map_err(NetError::netlink(format!("add {ip}/{} to the pod's eth0", subnet.prefix_len())))?;
        links::set_up(&mut ns, eth0).map_err(NetError::netlink("bring the pod's eth0 up"))?;
        links::add_default_route(&mut ns, gateway, eth0)
            .map_err(NetError::netlink(format!("default route via {gateway}")))?;

        self.store.save(&rec)?;
        let has_ports = !rec.ports.is_empty();
        state.pods.insert(rec.id.clone(), rec);
        if has_ports {
            self.sync_rules(state)?;
        }
        Ok(vec![IpAddr::V4(ip)])
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
                let prefix = |ip: &IpAddr| {
                    state.subnets.iter().find(|n| matches!(ip, IpAddr::V4(v) if n.contains(v))).map(|n| n.prefix_len())
                };
                for ip in &rec.ips {
                    let Some(len) = prefix(ip) else { continue };
                    links::delete_address(&mut ns, eth0, *ip, len)
                        .map_err(NetError::netlink(format!("remove {ip} from the pod's eth0")))?;
                }
            }
        }
        if let Some(ipam) = state.ipam.as_mut() {
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
        if let Some(ipam) = state.ipam.as_mut() {
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
