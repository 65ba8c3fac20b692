//! Pod networking: bridge, veth, IPAM, SNAT and hostPort over netlink, or standard CNI plugins. Knows nothing of
//! gRPC or the CRI: callers hand it plain pod descriptions and get addresses back.
//!
//! Every operation is keyed by the pod id and idempotent: `setup` records its intent before touching anything,
//! `teardown` undoes whatever exists, and `reconcile` at start tears down every network whose pod is gone, so a
//! crash at any point leaks nothing once reefd has started again.

#![deny(unsafe_code)]

mod builtin;
pub mod cni;
mod error;
pub mod ipam;
mod links;
pub mod nft;
pub mod ports;
mod rtnl;
mod store;
mod sysctl;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

pub use error::{ErrorKind, NetError};
pub use ports::{PortMapping, Protocol};
use store::{PodNet, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Builtin,
    Cni,
}

#[derive(Debug, Clone)]
pub struct NetConfig {
    pub mode: Mode,
    /// Where leases and per-pod records live.
    pub dir: PathBuf,
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// Dual stack: pods also get an address from this IPv6 subnet (kubelet's IPv6 pod CIDR takes over when set).
    pub subnet6: Option<Ipv6Net>,
    pub mtu: u32,
    pub nft_table: String,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    /// CNI plugins get this long per call.
    pub cni_timeout: std::time::Duration,
}

/// What `setup` needs to know of a pod.
#[derive(Debug, Clone)]
pub struct PodSpec<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub netns: &'a Path,
    pub ports: &'a [PortMapping],
}

pub struct Network {
    config: NetConfig,
    store: Store,
    state: Mutex<State>,
    /// Work done in the background (built-in mode): veth deletions and rule rebuilds after a teardown.
    reaper: Mutex<Option<(std::sync::mpsc::Sender<Job>, std::thread::JoinHandle<()>)>>,
    /// The generation of the last rule set handed out, and of the last one applied.
    generation: std::sync::atomic::AtomicU64,
    applied: std::sync::Arc<Mutex<u64>>,
}

pub(crate) enum Job {
    DeleteLink(String),
    Rules(nft::RuleSet, u64),
}

/// Applies `set` unless a newer generation already is in the kernel.
pub(crate) fn apply_rules(applied: &Mutex<u64>, set: &nft::RuleSet, generation: u64) -> Result<(), NetError> {
    let mut applied = applied.lock().unwrap_or_else(|p| p.into_inner());
    if generation <= *applied {
        return Ok(());
    }
    nft::apply(set)?;
    *applied = generation;
    Ok(())
}

struct State {
    pods: HashMap<String, PodNet>,
    ipam: Option<ipam::Ipam>,
    /// Dual stack: the IPv6 addresses, same lease directory.
    ipam6: Option<ipam::Ipam>,
    /// Subnets pods were given addresses from (the configured ones, then kubelet's pod CIDRs), both families.
    subnets: Vec<IpNet>,
    bridge_index: Option<u32>,
}

impl Network {
    /// Loads the records and, in built-in mode, sets up the bridge, the sysctls and the table. A failure of the
    /// latter is not fatal: `ready` reports it and the next pod setup tries again.
    pub fn open(config: NetConfig) -> Result<Network, NetError> {
        let store = Store::open(&config.dir.join("pods"))?;
        let pods = store.load_all().into_iter().map(|p| (p.id.clone(), p)).collect();
        let mut subnets = vec![IpNet::V4(config.subnet)];
        subnets.extend(config.subnet6.map(IpNet::V6));
        let (ipam, ipam6) = match config.mode {
            Mode::Builtin => {
                let leases = config.dir.join("leases");
                let mut ipam = ipam::Ipam::open(&leases, config.subnet)?;
                let mut ipam6 = config.subnet6.map(|net| ipam::Ipam::open(&leases, net)).transpose()?;
                for cidr in builtin::load_pod_cidrs(&config.dir) {
                    match (cidr, ipam6.as_mut()) {
                        (IpNet::V4(_), _) => ipam.set_subnet(cidr),
                        (IpNet::V6(_), Some(v6)) => v6.set_subnet(cidr),
                        (IpNet::V6(_), None) => ipam6 = Some(ipam::Ipam::open(&leases, cidr)?),
                    }
                    if !subnets.contains(&cidr) {
                        subnets.push(cidr);
                    }
                }
                (Some(ipam), ipam6)
            }
            Mode::Cni => (None, None),
        };
        let net = Network {
            config,
            store,
            state: Mutex::new(State { pods, ipam, ipam6, subnets, bridge_index: None }),
            reaper: Mutex::new(None),
            generation: Default::default(),
            applied: Default::default(),
        };
        if net.config.mode == Mode::Builtin
            && let Err(e) = net.ensure_host(&mut net.lock())
        {
            tracing::warn!(error = %error_chain(&e), "pod network not ready yet");
        }
        Ok(net)
    }

    /// Queues work for the reaper thread (started on first use); done in line if the thread cannot run.
    fn background(&self, job: Job) {
        let mut reaper = self.reaper.lock().unwrap_or_else(|p| p.into_inner());
        let applied = std::sync::Arc::clone(&self.applied);
        if reaper.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            let spawned = std::thread::Builder::new().name("netplug-reaper".into()).spawn(move || {
                while let Ok(job) = rx.recv() {
                    run_job(&applied, job);
                }
            });
            match spawned {
                Ok(handle) => *reaper = Some((tx, handle)),
                Err(e) => tracing::warn!(error = %e, "cannot start the network reaper"),
            }
        }
        let job = match reaper.as_ref() {
            Some((tx, _)) => match tx.send(job) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError(job)) => job,
            },
            None => job,
        };
        run_job(&self.applied, job);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn mode(&self) -> Mode {
        self.config.mode
    }

    /// Gives the pod its network; returns its addresses. On failure nothing of it is left.
    pub fn setup(&self, pod: &PodSpec<'_>) -> Result<Vec<IpAddr>, NetError> {
        let mut state = self.lock();
        let result = match self.config.mode {
            Mode::Builtin => self.setup_builtin(&mut state, pod),
            Mode::Cni => self.setup_cni(&mut state, pod),
        };
        if result.is_err()
            && let Err(e) = self.teardown_locked(&mut state, pod.id)
        {
            tracing::warn!(pod = pod.id, error = %error_chain(&e), "undoing a failed network setup");
        }
        result
    }

    /// Takes the pod's network away. Idempotent: a pod without a network, or whose namespace is gone, is fine.
    pub fn teardown(&self, id: &str) -> Result<(), NetError> {
        self.teardown_locked(&mut self.lock(), id)
    }

    fn teardown_locked(&self, state: &mut State, id: &str) -> Result<(), NetError> {
        let rec = state.pods.get(id).cloned().unwrap_or_else(|| PodNet { id: id.to_string(), ..Default::default() });
        match self.config.mode {
            Mode::Builtin => self.teardown_builtin(state, &rec)?,
            Mode::Cni => self.teardown_cni(&rec)?,
        }
        state.pods.remove(id);
        self.store.delete(id)
    }

    /// The pod's addresses, first the primary one.
    pub fn addresses(&self, id: &str) -> Vec<IpAddr> {
        self.lock().pods.get(id).map(|p| p.ips.clone()).unwrap_or_default()
    }

    /// Tears down every network whose pod `is_live` says is gone, and anything of Reef's that no record owns
    /// (leases, veths on the bridge); then rebuilds the rule table from what is left.
    pub fn reconcile(&self, is_live: &dyn Fn(&str) -> bool) {
        let mut state = self.lock();
        let dead: Vec<String> = state.pods.keys().filter(|id| !is_live(id)).cloned().collect();
        for id in dead {
            tracing::info!(pod = %id, "releasing the network of a pod that is gone");
            if let Err(e) = self.teardown_locked(&mut state, &id) {
                tracing::warn!(pod = %id, error = %error_chain(&e), "cannot release a pod network");
            }
        }
        if self.config.mode == Mode::Builtin {
            self.sweep_builtin(&mut state);
        }
    }

    /// Ok when pods can get a network now; otherwise why not.
    pub fn ready(&self) -> Result<(), String> {
        match self.config.mode {
            Mode::Builtin => self.ready_builtin(),
            Mode::Cni => cni::find_config(&self.config.cni_conf_dir).map(drop).map_err(|e| error_chain(&e)),
        }
    }

    /// kubelet's pod CIDR (UpdateRuntimeConfig): new pods get addresses from it. kubelet sends one CIDR, or a
    /// dual-stack pair separated by a comma; the first CIDR of each family is used, and an IPv6 one turns dual
    /// stack on. CNI plugins bring their own IPAM, so CNI mode ignores it.
    pub fn set_pod_cidr(&self, cidrs: &str) -> Result<(), NetError> {
        if self.config.mode != Mode::Builtin {
            return Ok(());
        }
        let parsed: Vec<IpNet> = cidrs.split(',').filter_map(|c| c.trim().parse::<IpNet>().ok()).collect();
        let v4 = parsed.iter().find(|n| n.addr().is_ipv4()).map(IpNet::trunc);
        let v6 = parsed.iter().find(|n| n.addr().is_ipv6()).map(IpNet::trunc);
        if v4.is_none() && v6.is_none() {
            return Ok(());
        }
        self.set_subnets(&mut self.lock(), v4, v6)
    }
}

/// Finishes the background work before the network goes (a caller that then deletes the table or the bridge
/// must not see them come back).
impl Drop for Network {
    fn drop(&mut self) {
        let reaper = self.reaper.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((tx, handle)) = reaper {
            drop(tx);
            let _ = handle.join();
        }
    }
}

fn run_job(applied: &Mutex<u64>, job: Job) {
    match job {
        Job::DeleteLink(name) => {
            if let Err(e) = rtnl::Rtnl::open().and_then(|mut rt| links::delete(&mut rt, &name)) {
                tracing::warn!(veth = %name, error = %e, "cannot delete a pod's veth (the start-up sweep will)");
            }
        }
        Job::Rules(set, generation) => {
            if let Err(e) = apply_rules(applied, &set, generation) {
                tracing::warn!(table = %set.table, error = %error_chain(&e), "cannot rebuild the rules (the next change or start will)");
            }
        }
    }
}

/// The whole cause chain on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
