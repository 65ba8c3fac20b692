//! netplug against the real kernel: needs root and REEF_E2E=1. Every name (bridge, table, netns, subnet) is
//! unique to this process, and a guard removes them even when an assertion fails.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use reef_netplug::{Mode, NetConfig, Network, PodSpec, PortMapping, Protocol};

fn enabled() -> bool {
    std::env::var("REEF_E2E").as_deref() == Ok("1") && nix::unistd::geteuid().is_root()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

struct Env {
    bridge: String,
    table: String,
    netns: Vec<String>,
    dir: tempfile::TempDir,
    subnet: String,
}

impl Env {
    fn new() -> Env {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("{:x}{n}", pid % 0xfffff);
        Env {
            bridge: format!("rt{tag}"),
            table: format!("reef_t{tag}"),
            netns: vec![],
            dir: tempfile::tempdir().unwrap(),
            subnet: format!("10.{}.{}.0/24", 200 + (pid % 50), (pid / 50 % 200) as u32 + n),
        }
    }

    fn config(&self) -> NetConfig {
        NetConfig {
            mode: Mode::Builtin,
            dir: self.dir.path().join("net"),
            bridge: self.bridge.clone(),
            subnet: self.subnet.parse().unwrap(),
            subnet6: None,
            mtu: 1400,
            nft_table: self.table.clone(),
            cni_conf_dir: PathBuf::new(),
            cni_bin_dirs: vec![],
            cni_timeout: std::time::Duration::from_secs(10),
        }
    }

    fn netns(&mut self, name: &str) -> PathBuf {
        let name = format!("{}-{name}", self.bridge);
        assert!(Command::new("ip").args(["netns", "add", &name]).status().unwrap().success());
        Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]).status().unwrap();
        self.netns.push(name.clone());
        PathBuf::from(format!("/run/netns/{name}"))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
        let _ = Command::new("nft").args(["delete", "table", "inet", &self.table]).status();
    }
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn a_pod_gets_eth0_an_address_a_route_and_gives_them_back() {
    if !enabled() {
        return;
    }
    let mut env = Env::new();
    let ns = env.netns("a");
    let net = Network::open(env.config()).unwrap();
    net.ready().unwrap();
    let id = format!("{:064x}", 0xabcdu64 + std::process::id() as u64);
    let ports = [PortMapping { protocol: Protocol::Tcp, container_port: 80, host_port: 18080, host_ip: String::new() }];
    let pod = PodSpec { id: &id, name: "p", namespace: "ns", uid: "u", netns: &ns, ports: &ports };
    let ips = net.setup(&pod).unwrap();
    assert_eq!(ips.len(), 1);
    let nsname = ns.file_name().unwrap().to_str().unwrap();
    let addr = sh(&["ip", "-n", nsname, "-o", "addr", "show", "eth0"]);
    assert!(addr.contains(&ips[0].to_string()), "{addr}");
    let link = sh(&["ip", "-n", nsname, "-o", "link", "show", "eth0"]);
    assert!(link.contains("mtu 1400"), "{link}");
    let route = sh(&["ip", "-n", nsname, "route"]);
    assert!(route.contains("default via"), "{route}");
    let ping = Command::new("ip")
        .args(["netns", "exec", nsname, "busybox", "ping", "-c1", "-W2"])
        .arg(net_gateway(&env.subnet))
        .output()
        .unwrap();
    assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stdout));
    let rules = sh(&["nft", "list", "table", "inet", &env.table]);
    assert!(rules.contains("dport 18080") && rules.contains("masquerade"), "{rules}");
    let other = env.netns("b");
    let id2 = format!("{:064x}", 0xbcdeu64 + std::process::id() as u64);
    let e = net
        .setup(&PodSpec { id: &id2, name: "q", namespace: "ns", uid: "v", netns: &other, ports: &ports })
        .unwrap_err();
    assert!(e.to_string().contains("already taken"), "{e}");
    assert!(sh(&["ip", "-n", other.file_name().unwrap().to_str().unwrap(), "-o", "link"]).lines().count() == 1);
    net.teardown(&id).unwrap();
    net.teardown(&id).unwrap();
    let veth = format!("rf{}", &id[..13]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while sh(&["ip", "-o", "link"]).contains(&veth) {
        assert!(std::time::Instant::now() < deadline, "the reaper deletes {veth}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(net);
    assert!(!sh(&["nft", "list", "table", "inet", &env.table]).contains("18080"), "the hostPort rule went");
}

fn net_gateway(subnet: &str) -> String {
    let base = subnet.split('/').next().unwrap();
    let mut parts: Vec<u32> = base.split('.').map(|p| p.parse().unwrap()).collect();
    parts[3] += 1;
    parts.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(".")
}

#[test]
fn kubelet_s_dual_stack_pod_cidr_turns_v6_on_survives_a_restart_and_reconcile_frees_both_leases() {
    if !enabled() {
        return;
    }
    let mut env = Env::new();
    let ns = env.netns("d");
    let net = Network::open(env.config()).unwrap();
    let pid = std::process::id();
    let v6 = format!("fd5f:{:x}:{:x}::/64", pid & 0xffff, COUNTER.load(Ordering::SeqCst));
    // As kubelet sends it: "<v4>,<v6>".
    net.set_pod_cidr(&format!("{},{v6}", env.subnet)).unwrap();
    let id = format!("{:08x}{:056x}", pid ^ 0xd6d6_0000, 1);
    let pod = PodSpec { id: &id, name: "p", namespace: "ns", uid: "u", netns: &ns, ports: &[] };
    let ips = net.setup(&pod).unwrap();
    assert_eq!(ips.len(), 2, "{ips:?}");
    assert!(ips[0].is_ipv4() && ips[1].is_ipv6(), "IPv4 first: {ips:?}");
    let nsname = ns.file_name().unwrap().to_str().unwrap();
    let ping = Command::new("ip")
        .args(["netns", "exec", nsname, "busybox", "ping", "-6", "-c1", "-W2"])
        .arg(v6.replace("::/64", "::1"))
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "the bridge's v6 gateway answers: {}\n{}\n{}",
        String::from_utf8_lossy(&ping.stdout),
        sh(&["ip", "-6", "addr", "show", "dev", &env.bridge]),
        sh(&["ip", "-n", nsname, "-6", "addr"])
    );
    drop(net);
    // A restart keeps kubelet's CIDRs; the pod is gone by then: both its leases go.
    let net = Network::open(env.config()).unwrap();
    net.reconcile(&|_| false);
    let leases = env.dir.path().join("net/leases");
    assert_eq!(std::fs::read_dir(&leases).unwrap().count(), 0, "no lease left");
    let other = env.netns("e");
    let id2 = format!("{:08x}{:056x}", pid ^ 0xd6d6_0000, 2);
    let ips =
        net.setup(&PodSpec { id: &id2, name: "q", namespace: "ns", uid: "v", netns: &other, ports: &[] }).unwrap();
    assert!(ips.len() == 2 && ips[1].is_ipv6(), "still dual stack after the restart: {ips:?}");
    net.teardown(&id2).unwrap();
    assert_eq!(std::fs::read_dir(&leases).unwrap().count(), 0, "teardown frees both");
}
