//! Reef's nftables table: masquerade for pod traffic leaving the pod subnets, hostPort DNAT from other hosts and
//! from the node itself. One `inet` table carries both families: every rule starts by matching its family.
//! IPv6 has no `route_localnet`, so a hostPort is not reachable through `[::1]` (as with CNI's portmap); through
//! the node's own IPv6 addresses it is. The table belongs to Reef alone and its rules are always rewritten whole, in one netlink
//! transaction (add the table and chains, which is a no-op when they exist, flush every chain, add every rule),
//! from the pods' records: the kernel either has the new rule set or the old one, and a restart converges by
//! rewriting. The table and its base chains are never deleted on the way: removing a base chain unregisters its
//! hook, which waits for an RCU grace period (about 10 ms, far more on a loaded node) on every pod start and stop.
//! Other tables are never read or touched.
//!
//! `plan` is pure (what the rules are, printable in nft syntax for tests and logs); `apply` turns the plan into
//! nftnl expressions and sends the batch.

use std::ffi::CString;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use nftnl::expr::{self, Bitwise, Cmp, CmpOp, InterfaceName, Nat, NatType, Register};
use nftnl::{Batch, Chain, ChainType, Hook, MsgType, Policy, ProtoFamily, Rule, Table, nftnl_sys};

use crate::error::NetError;
use crate::ports::Protocol;

/// Everything the table holds, derived from the configuration and the pods' records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    pub table: String,
    pub bridge: String,
    /// Pod subnets in use, both families (the configured ones and any an existing lease still lives in).
    pub subnets: Vec<IpNet>,
    pub dnats: Vec<Dnat>,
}

/// One hostPort over one family: traffic to `host_ip` (any local address of `pod_ip`'s family when `None`) on
/// `host_port` goes to the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dnat {
    pub protocol: Protocol,
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub pod_ip: IpAddr,
    pub container_port: u16,
    pub pod_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    Ipv4,
    Ipv6,
    SaddrIn(IpNet),
    DaddrNotIn(IpNet),
    Daddr(IpAddr),
    /// The destination is one of this host's addresses (`fib daddr type local`).
    DaddrLocal,
    L4Proto(Protocol),
    Dport(u16),
    OifName(String),
    CtDnat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Jump(&'static str),
    Masquerade,
    Dnat(IpAddr, u16),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub chain: &'static str,
    pub matches: Vec<Match>,
    pub action: Action,
}

pub const HOSTPORTS: &str = "hostports";

/// Base chains: (name, hook, priority). NAT priorities as in nft's `dstnat` (-100) and `srcnat` (100).
const BASE_CHAINS: [(&str, Hook, i32); 3] =
    [("prerouting", Hook::PreRouting, -100), ("output", Hook::Out, -100), ("postrouting", Hook::PostRouting, 100)];

pub fn plan(set: &RuleSet) -> Vec<RuleSpec> {
    let mut rules = vec![
        RuleSpec { chain: "prerouting", matches: vec![], action: Action::Jump(HOSTPORTS) },
        RuleSpec { chain: "output", matches: vec![], action: Action::Jump(HOSTPORTS) },
    ];
    let family = |ip: &IpAddr| if ip.is_ipv6() { Match::Ipv6 } else { Match::Ipv4 };
    for d in &set.dnats {
        if d.host_ip.is_some_and(|h| h.is_ipv6() != d.pod_ip.is_ipv6()) {
            continue;
        }
        let mut m = vec![family(&d.pod_ip)];
        m.push(match d.host_ip {
            Some(ip) => Match::Daddr(ip),
            None => Match::DaddrLocal,
        });
        m.push(Match::L4Proto(d.protocol));
        m.push(Match::Dport(d.host_port));
        rules.push(RuleSpec { chain: HOSTPORTS, matches: m, action: Action::Dnat(d.pod_ip, d.container_port) });
    }
    for net in &set.subnets {
        // A hostPort reached from the node itself (127.0.0.1) or from a pod (hairpin) is masqueraded so that the
        // reply comes back through the host, where conntrack undoes the DNAT.
        rules.push(RuleSpec {
            chain: "postrouting",
            matches: vec![family(&net.addr()), Match::OifName(set.bridge.clone()), Match::CtDnat, Match::SaddrIn(*net)],
            action: Action::Masquerade,
        });
    }
    rules.push(RuleSpec {
        chain: "postrouting",
        matches: vec![
            Match::Ipv4,
            Match::OifName(set.bridge.clone()),
            Match::CtDnat,
            Match::SaddrIn("127.0.0.0/8".parse().unwrap_or_default()),
        ],
        action: Action::Masquerade,
    });
    for net in &set.subnets {
        rules.push(RuleSpec {
            chain: "postrouting",
            matches: vec![family(&net.addr()), Match::SaddrIn(*net), Match::DaddrNotIn(*net)],
            action: Action::Masquerade,
        });
    }
    rules
}

fn ip_kw(ip: &IpAddr) -> &'static str {
    if ip.is_ipv6() { "ip6" } else { "ip" }
}

fn octets(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::Ipv4 => write!(f, "meta nfproto ipv4"),
            Match::Ipv6 => write!(f, "meta nfproto ipv6"),
            Match::SaddrIn(n) => write!(f, "{} saddr {n}", ip_kw(&n.addr())),
            Match::DaddrNotIn(n) => write!(f, "{} daddr != {n}", ip_kw(&n.addr())),
            Match::Daddr(a) => write!(f, "{} daddr {a}", ip_kw(a)),
            Match::DaddrLocal => write!(f, "fib daddr type local"),
            Match::L4Proto(p) => write!(f, "meta l4proto {}", p.name()),
            Match::Dport(p) => write!(f, "th dport {p}"),
            Match::OifName(n) => write!(f, "oifname \"{n}\""),
            Match::CtDnat => write!(f, "ct status dnat"),
        }
    }
}

impl fmt::Display for RuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.chain)?;
        for m in &self.matches {
            write!(f, " {m}")?;
        }
        match &self.action {
            Action::Jump(c) => write!(f, " jump {c}"),
            Action::Masquerade => write!(f, " masquerade"),
            Action::Dnat(IpAddr::V4(ip), port) => write!(f, " dnat ip to {ip}:{port}"),
            Action::Dnat(IpAddr::V6(ip), port) => write!(f, " dnat ip6 to [{ip}]:{port}"),
        }
    }
}

/// `fib daddr type`: nftnl has no wrapper for the fib expression, so this sets its three attributes.
struct FibDaddrType;

impl expr::Expression for FibDaddrType {
    #[allow(unsafe_code)]
    fn to_expr(&self, _rule: &Rule) -> std::ptr::NonNull<nftnl_sys::nftnl_expr> {
        // SAFETY: allocates a libnftnl expression and sets u32 attributes on it; a null allocation aborts like
        // nftnl's own expressions do. The rule takes ownership of the returned pointer.
        unsafe {
            let e = nftnl_sys::nftnl_expr_alloc(c"fib".as_ptr());
            let Some(e) = std::ptr::NonNull::new(e) else { std::process::abort() };
            nftnl_sys::nftnl_expr_set_u32(e.as_ptr(), nftnl_sys::NFTNL_EXPR_FIB_DREG as u16, libc::NFT_REG_1 as u32);
            nftnl_sys::nftnl_expr_set_u32(e.as_ptr(), nftnl_sys::NFTNL_EXPR_FIB_RESULT as u16, NFT_FIB_RESULT_ADDRTYPE);
            nftnl_sys::nftnl_expr_set_u32(e.as_ptr(), nftnl_sys::NFTNL_EXPR_FIB_FLAGS as u16, NFTA_FIB_F_DADDR);
            e
        }
    }
}

const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
const NFTA_FIB_F_DADDR: u32 = 2;
const RTN_LOCAL: u32 = 2;
const IPS_DST_NAT: u32 = 32;

fn add_match(rule: &mut Rule, m: &Match) -> Result<(), String> {
    use nftnl::expr::{Conntrack, Meta, NetworkHeaderField, Payload, TransportHeaderField};
    use nftnl::expr::{Ipv4HeaderField as V4, Ipv6HeaderField as V6};
    let addr_field = |ip: &IpAddr, source: bool| match (ip.is_ipv6(), source) {
        (false, true) => Payload::Network(NetworkHeaderField::Ipv4(V4::Saddr)),
        (false, false) => Payload::Network(NetworkHeaderField::Ipv4(V4::Daddr)),
        (true, true) => Payload::Network(NetworkHeaderField::Ipv6(V6::Saddr)),
        (true, false) => Payload::Network(NetworkHeaderField::Ipv6(V6::Daddr)),
    };
    match m {
        Match::Ipv4 | Match::Ipv6 => {
            let proto = if matches!(m, Match::Ipv4) { libc::NFPROTO_IPV4 } else { libc::NFPROTO_IPV6 };
            rule.add_expr(&Meta::NfProto);
            rule.add_expr(&Cmp::new(CmpOp::Eq, proto as u8));
        }
        Match::SaddrIn(n) | Match::DaddrNotIn(n) => {
            let source = matches!(m, Match::SaddrIn(_));
            let mask = octets(&n.netmask());
            rule.add_expr(&addr_field(&n.addr(), source));
            rule.add_expr(&Bitwise::new(&mask[..], &vec![0u8; mask.len()][..]));
            let op = if source { CmpOp::Eq } else { CmpOp::Neq };
            rule.add_expr(&Cmp::new(op, &octets(&n.network())[..]));
        }
        Match::Daddr(a) => {
            rule.add_expr(&addr_field(a, false));
            rule.add_expr(&Cmp::new(CmpOp::Eq, &octets(a)[..]));
        }
        Match::DaddrLocal => {
            rule.add_expr(&FibDaddrType);
            rule.add_expr(&Cmp::new(CmpOp::Eq, RTN_LOCAL));
        }
        Match::L4Proto(p) => {
            rule.add_expr(&Meta::L4Proto);
            rule.add_expr(&Cmp::new(CmpOp::Eq, p.number()));
        }
        Match::Dport(port) => {
            // TCP, UDP and SCTP all carry the destination port at offset 2.
            rule.add_expr(&Payload::Transport(TransportHeaderField::Raw { offset_bits: 2, length_bits: 2 }));
            rule.add_expr(&Cmp::new(CmpOp::Eq, &port.to_be_bytes()[..]));
        }
        Match::OifName(n) => {
            let name = CString::new(n.as_str()).map_err(|_| format!("bad interface name {n:?}"))?;
            rule.add_expr(&Meta::OifName);
            rule.add_expr(&Cmp::new(CmpOp::Eq, InterfaceName::Exact(name)));
        }
        Match::CtDnat => {
            rule.add_expr(&Conntrack::Status);
            rule.add_expr(&Bitwise::new(IPS_DST_NAT, 0u32));
            rule.add_expr(&Cmp::new(CmpOp::Neq, 0u32));
        }
    }
    Ok(())
}

/// Replaces Reef's table with `set`, atomically.
pub fn apply(set: &RuleSet) -> Result<(), NetError> {
    let name =
        CString::new(set.table.as_str()).map_err(|_| NetError::NftBuild(format!("bad table name {:?}", set.table)))?;
    let table = Table::new(&name, ProtoFamily::Inet);
    let mut batch = Batch::new();
    batch.add(&table, MsgType::Add);
    let mut chains = Vec::new();
    for (chain_name, hook, prio) in BASE_CHAINS {
        let mut c = Chain::new(CString::new(chain_name).unwrap_or_default(), &table);
        c.set_type(ChainType::Nat);
        c.set_hook(hook, prio);
        c.set_policy(Policy::Accept);
        chains.push((chain_name, c));
    }
    chains.push((HOSTPORTS, Chain::new(CString::new(HOSTPORTS).unwrap_or_default(), &table)));
    for (_, c) in &chains {
        batch.add(c, MsgType::Add);
    }
    // A rule without a handle, deleted, is the whole chain flushed.
    for (_, c) in &chains {
        batch.add(&Rule::new(c), MsgType::Del);
    }
    for spec in plan(set) {
        let Some((_, chain)) = chains.iter().find(|(n, _)| *n == spec.chain) else { continue };
        let mut rule = Rule::new(chain);
        for m in &spec.matches {
            add_match(&mut rule, m).map_err(NetError::NftBuild)?;
        }
        match &spec.action {
            Action::Jump(target) => {
                rule.add_expr(&expr::Verdict::Jump { chain: CString::new(*target).unwrap_or_default() })
            }
            Action::Masquerade => rule.add_expr(&expr::Masquerade),
            Action::Dnat(ip, port) => {
                let family = match ip {
                    IpAddr::V4(v) => {
                        rule.add_expr(&expr::Immediate::new(v.octets(), Register::Reg1));
                        ProtoFamily::Ipv4
                    }
                    IpAddr::V6(v) => {
                        rule.add_expr(&expr::Immediate::new(v.octets(), Register::Reg1));
                        ProtoFamily::Ipv6
                    }
                };
                rule.add_expr(&expr::Immediate::new(port.to_be_bytes(), Register::Reg2));
                rule.add_expr(&Nat {
                    nat_type: NatType::DNat,
                    family,
                    ip_register: Register::Reg1,
                    port_register: Some(Register::Reg2),
                });
            }
        }
        batch.add(&rule, MsgType::Add);
    }
    send(&batch.finalize()).map_err(|source| NetError::Nft { table: set.table.clone(), source })
}

/// Deletes Reef's table (tests and `reefd --cleanup-network`); a table already gone is fine.
pub fn delete_table(table_name: &str) -> Result<(), NetError> {
    let name = CString::new(table_name).map_err(|_| NetError::NftBuild(format!("bad table name {table_name:?}")))?;
    let table = Table::new(&name, ProtoFamily::Inet);
    let mut batch = Batch::new();
    batch.add(&table, MsgType::Add);
    batch.add(&table, MsgType::Del);
    send(&batch.finalize()).map_err(|source| NetError::Nft { table: table_name.to_string(), source })
}

fn send(batch: &nftnl::FinalizedBatch) -> std::io::Result<()> {
    let socket = mnl::Socket::new(mnl::Bus::Netfilter)?;
    let portid = socket.portid();
    socket.send_all(batch)?;
    let mut buffer = vec![0; nftnl::nft_nlmsg_maxsize() as usize];
    let mut expected = batch.sequence_numbers();
    while !expected.is_empty() {
        for message in socket.recv(&mut buffer[..])? {
            let message = message?;
            let Some(seq) = expected.next() else { return Ok(()) };
            mnl::cb_run(message, seq, portid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(dnats: Vec<Dnat>) -> RuleSet {
        RuleSet { table: "reef".into(), bridge: "reef0".into(), subnets: vec!["10.88.0.0/16".parse().unwrap()], dnats }
    }

    fn text(set: &RuleSet) -> Vec<String> {
        plan(set).iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn pods_leaving_the_subnet_are_masqueraded_and_nothing_else() {
        let rules = text(&set(vec![]));
        assert!(
            rules.contains(
                &"postrouting: meta nfproto ipv4 ip saddr 10.88.0.0/16 ip daddr != 10.88.0.0/16 masquerade".to_string()
            ),
            "{rules:#?}"
        );
        assert!(!rules.iter().any(|r| r.contains("dnat ip to")), "{rules:#?}");
    }

    #[test]
    fn host_ports_dnat_from_any_local_address_or_the_given_one() {
        let rules = text(&set(vec![
            Dnat {
                protocol: Protocol::Tcp,
                host_ip: None,
                host_port: 8080,
                pod_ip: "10.88.0.2".parse().unwrap(),
                container_port: 80,
                pod_id: "a".into(),
            },
            Dnat {
                protocol: Protocol::Sctp,
                host_ip: Some("127.0.0.1".parse().unwrap()),
                host_port: 9000,
                pod_ip: "10.88.0.3".parse().unwrap(),
                container_port: 9,
                pod_id: "b".into(),
            },
        ]));
        assert!(rules.contains(&"hostports: meta nfproto ipv4 fib daddr type local meta l4proto tcp th dport 8080 dnat ip to 10.88.0.2:80".to_string()), "{rules:#?}");
        assert!(rules.contains(&"hostports: meta nfproto ipv4 ip daddr 127.0.0.1 meta l4proto sctp th dport 9000 dnat ip to 10.88.0.3:9".to_string()), "{rules:#?}");
        // Reached from the node (127.0.0.1) or from a pod, the DNATed connection is masqueraded into the bridge.
        assert!(
            rules.contains(
                &"postrouting: meta nfproto ipv4 oifname \"reef0\" ct status dnat ip saddr 127.0.0.0/8 masquerade"
                    .to_string()
            ),
            "{rules:#?}"
        );
        assert!(rules.contains(&"prerouting: jump hostports".to_string()));
        assert!(rules.contains(&"output: jump hostports".to_string()));
    }

    #[test]
    fn one_table_carries_both_families() {
        let mut s = set(vec![
            Dnat {
                protocol: Protocol::Tcp,
                host_ip: None,
                host_port: 8080,
                pod_ip: "fd00:10:88::2".parse().unwrap(),
                container_port: 80,
                pod_id: "a".into(),
            },
            Dnat {
                protocol: Protocol::Udp,
                host_ip: Some("10.0.0.1".parse().unwrap()),
                host_port: 53,
                pod_ip: "fd00:10:88::2".parse().unwrap(),
                container_port: 53,
                pod_id: "a".into(),
            },
        ]);
        s.subnets.push("fd00:10:88::/64".parse().unwrap());
        let rules = text(&s);
        assert!(rules.contains(&"hostports: meta nfproto ipv6 fib daddr type local meta l4proto tcp th dport 8080 dnat ip6 to [fd00:10:88::2]:80".to_string()), "{rules:#?}");
        assert!(
            !rules.iter().any(|r| r.contains("dport 53")),
            "an IPv4 host IP never DNATs to an IPv6 pod: {rules:#?}"
        );
        assert!(
            rules.contains(
                &"postrouting: meta nfproto ipv6 ip6 saddr fd00:10:88::/64 ip6 daddr != fd00:10:88::/64 masquerade"
                    .to_string()
            ),
            "{rules:#?}"
        );
        assert!(rules.iter().any(|r| r.starts_with("postrouting: meta nfproto ipv4 ip saddr 10.88.0.0/16")));
    }
}
