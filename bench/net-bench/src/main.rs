//! reef-net-bench: how long giving a pod its network and taking it back takes, per pod, for netplug's built-in
//! mode and for standard CNI plugins (bridge + host-local + portmap), measured the same way in one run.
//!
//! Each pod gets a fresh pinned network namespace (not timed) and one TCP hostPort; the timed part is exactly what
//! RunPodSandbox and StopPodSandbox pay for networking: `Network::setup` and `Network::teardown`. Every name
//! (bridges, nft table, subnets, host ports) is this run's own, and everything is removed at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use reef_netplug::{Mode, NetConfig, Network, PodSpec, PortMapping, Protocol};
use reef_runtime::pin::{self, PodNamespaceSet};

#[derive(Parser)]
struct Args {
    /// Pods per mode.
    #[arg(long, default_value_t = 200)]
    pods: usize,
    /// Modes to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "builtin,cni")]
    modes: Vec<String>,
    /// Where the CNI plugins are.
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_bin: PathBuf,
    /// Print the figures as JSON too.
    #[arg(long)]
    json: bool,
    /// Pods without a hostPort (no nft or portmap work).
    #[arg(long)]
    no_ports: bool,
}

struct Names {
    bridge: String,
    table: String,
    subnet: String,
    first_port: u16,
}

fn names(mode: &str) -> Names {
    let pid = std::process::id();
    let k = pid % 200;
    let (tag, third) = if mode == "cni" { ('c', 1) } else { ('b', 0) };
    Names {
        bridge: format!("rnb{pid:x}{tag}"),
        table: format!("reef_net_bench_{pid}_{tag}"),
        subnet: format!("10.{}.{}.0/22", 128 + k / 2, (k % 2) * 128 + third * 64),
        first_port: 21000 + (pid % 40) as u16 * 100 + third as u16 * 4000,
    }
}

struct Cleanup {
    bridges: Vec<String>,
    tables: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for b in &self.bridges {
            let _ = Command::new("ip").args(["link", "del", b]).stderr(Stdio::null()).status();
        }
        for t in &self.tables {
            let _ = reef_netplug::nft::delete_table(t);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Figures {
    setup: Vec<Duration>,
    teardown: Vec<Duration>,
    total: Vec<Duration>,
}

fn run_mode(mode: &str, args: &Args, work: &Path, cleanup: &mut Cleanup) -> anyhow::Result<Figures> {
    let n = names(mode);
    cleanup.bridges.push(n.bridge.clone());
    cleanup.tables.push(n.table.clone());
    let dir = work.join(mode);
    let conf_dir = dir.join("net.d");
    std::fs::create_dir_all(&conf_dir)?;
    if mode == "cni" {
        let list = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "reef-net-bench",
            "plugins": [
                {"type": "bridge", "bridge": n.bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": n.subnet}]],
                          "dataDir": dir.join("ipam").display().to_string()}},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        std::fs::write(conf_dir.join("10-bench.conflist"), list.to_string())?;
    }
    let network = Network::open(NetConfig {
        mode: if mode == "cni" { Mode::Cni } else { Mode::Builtin },
        dir: dir.join("state"),
        bridge: n.bridge.clone(),
        subnet: n.subnet.parse().context("subnet")?,
        subnet6: None,
        mtu: 1500,
        nft_table: n.table.clone(),
        cni_conf_dir: conf_dir,
        cni_bin_dirs: vec![args.cni_bin.clone()],
        cni_timeout: Duration::from_secs(30),
    })?;
    network.ready().map_err(|e| anyhow::anyhow!("{mode} network not ready: {e}"))?;
    let mut figures = Figures { setup: vec![], teardown: vec![], total: vec![] };
    // Two untimed warm-ups (page cache, the bridge's first port), then the measured pods.
    for i in 0..args.pods + 2 {
        // The first 13 hex digits name the host veth: unique per pod and per run.
        let id = format!("{:08x}{:05x}{:051x}", i, std::process::id() % 0xfffff, 0);
        let ns_dir = dir.join("ns").join(&id[..13]);
        let pinned = pin::pin(&ns_dir, &PodNamespaceSet { network: true, ..Default::default() }, "")?;
        let netns = pinned.network.clone().context("pinned netns")?;
        let ports = [PortMapping {
            protocol: Protocol::Tcp,
            container_port: 80,
            host_port: i32::from(n.first_port) + i as i32,
            host_ip: String::new(),
        }];
        let ports = if args.no_ports { &ports[..0] } else { &ports[..] };
        let spec = PodSpec { id: &id, name: "bench", namespace: "bench", uid: &id, netns: &netns, ports };
        let t0 = Instant::now();
        let ips = network.setup(&spec);
        let t1 = Instant::now();
        let torn = network.teardown(&id);
        let t2 = Instant::now();
        pin::unpin(&ns_dir);
        let _ = std::fs::remove_dir_all(&ns_dir);
        ips.with_context(|| format!("{mode} setup of pod {i}"))?;
        torn.with_context(|| format!("{mode} teardown of pod {i}"))?;
        if i >= 2 {
            figures.setup.push(t1 - t0);
            figures.teardown.push(t2 - t1);
            figures.total.push(t2 - t0);
        }
    }
    for v in [&mut figures.setup, &mut figures.teardown, &mut figures.total] {
        v.sort();
    }
    Ok(figures)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let work = tempfile::Builder::new().prefix("reef-net-bench-").tempdir()?;
    let mut cleanup = Cleanup { bridges: vec![], tables: vec![] };
    let mut results = Vec::new();
    for mode in &args.modes {
        let f = run_mode(mode, &args, work.path(), &mut cleanup)?;
        results.push((mode.clone(), f));
    }
    let ports = if args.no_ports { "no hostPort" } else { "one TCP hostPort each" };
    println!("{} pods per mode, {ports}; milliseconds per pod", args.pods);
    println!(
        "{:<8} {:>10} {:>10} {:>12} {:>12} {:>10} {:>10}",
        "mode", "setup p50", "setup p99", "teardown p50", "teardown p99", "both p50", "both p99"
    );
    let mut json = serde_json::Map::new();
    for (mode, f) in &results {
        println!(
            "{:<8} {:>10.2} {:>10.2} {:>12.2} {:>12.2} {:>10.2} {:>10.2}",
            mode,
            ms(percentile(&f.setup, 0.5)),
            ms(percentile(&f.setup, 0.99)),
            ms(percentile(&f.teardown, 0.5)),
            ms(percentile(&f.teardown, 0.99)),
            ms(percentile(&f.total, 0.5)),
            ms(percentile(&f.total, 0.99)),
        );
        json.insert(
            mode.clone(),
            serde_json::json!({
                "setup_p50_ms": ms(percentile(&f.setup, 0.5)), "setup_p99_ms": ms(percentile(&f.setup, 0.99)),
                "teardown_p50_ms": ms(percentile(&f.teardown, 0.5)), "teardown_p99_ms": ms(percentile(&f.teardown, 0.99)),
                "total_p50_ms": ms(percentile(&f.total, 0.5)), "total_p99_ms": ms(percentile(&f.total, 0.99)),
            }),
        );
    }
    if let (Some((_, b)), Some((_, c))) =
        (results.iter().find(|(m, _)| m == "builtin"), results.iter().find(|(m, _)| m == "cni"))
    {
        let ratio = ms(percentile(&c.total, 0.5)) / ms(percentile(&b.total, 0.5)).max(1e-9);
        println!("built-in is {ratio:.1}x faster than CNI at p50 (goal: at least 10x)");
        json.insert("cni_over_builtin_p50".into(), serde_json::json!(ratio));
    }
    if args.json {
        println!("{}", serde_json::Value::Object(json));
    }
    drop(cleanup);
    Ok(())
}
