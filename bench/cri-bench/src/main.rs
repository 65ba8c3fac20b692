//! reef-bench: a CRI benchmark client for any CRI endpoint (reefd, containerd, CRI-O).
//!
//! `reef-bench run` brings pods up one after another (RunPodSandbox + CreateContainer + StartContainer of a busybox
//! `sleep`), keeps them running to measure the runtime's memory at 0, 20 and 100 pods, takes them down (Stop and
//! Remove), then runs full lifecycles with M pods in flight. It prints p50/p90/p99 per RPC and end to end, pods per
//! second and memory as a table, then one JSON line. Given a daemon command after `--`, it starts the runtime
//! itself as a child subreaper, so the per-pod processes the runtime daemonizes stay its descendants: they are
//! measured and, at the end, killed by PID. `reef-bench compare A.json B.json…` sets runs side by side.

mod daemon;
mod lifecycle;
mod procs;
mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use tonic::transport::Channel;

use crate::lifecycle::{Runtime, Settings, Timings};
use crate::procs::Snapshot;
use crate::report::{PerPod, RunResult};

#[derive(Parser)]
#[command(name = "reef-bench", about = "CRI benchmark: pod lifecycle latencies and runtime memory")]
enum Cli {
    /// Benchmark one CRI endpoint.
    Run(Box<RunArgs>),
    /// Compare the JSON results of several runs (the first is the reference).
    Compare { files: Vec<PathBuf> },
}

#[derive(clap::Args)]
struct RunArgs {
    /// A name for this run in tables (e.g. reef, containerd).
    #[arg(long, default_value = "runtime")]
    name: String,
    /// The CRI socket (a path or unix://path).
    #[arg(long)]
    endpoint: String,
    /// The image of the benchmark's container (pulled through the CRI first).
    #[arg(long)]
    image: String,
    /// Further images to pull before starting (containerd's sandbox image).
    #[arg(long)]
    pull: Vec<String>,
    /// The container's command.
    #[arg(long, num_args = 1.., default_values = ["sleep", "3600"])]
    command: Vec<String>,
    /// Pods brought up one after another (and kept running for the memory snapshots).
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Pods in flight in the parallel phase.
    #[arg(long, default_value_t = 10)]
    parallel: usize,
    /// Full lifecycles in the parallel phase.
    #[arg(long, default_value_t = 100)]
    parallel_pods: usize,
    /// Untimed lifecycles first (caches, lazy initialisation).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Running pod counts at which memory is measured.
    #[arg(long, value_delimiter = ',', default_values_t = [20, 100])]
    memory_at: Vec<usize>,
    /// Milliseconds to let the runtime settle before a memory snapshot.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// The cgroup parent of the pods (removed at the end when empty).
    #[arg(long)]
    cgroup_parent: Option<String>,
    /// Where pod log directories go.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Run the pods in the host network namespace (no CNI, no network namespace).
    #[arg(long)]
    host_network: bool,
    /// StopContainer's timeout in seconds (busybox sleep as PID 1 ignores SIGTERM: 0 kills at once).
    #[arg(long, default_value_t = 0)]
    stop_timeout: i64,
    /// Also write the JSON result here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Measure the memory of an already running daemon with this PID (and of its descendants).
    #[arg(long)]
    pid: Option<i32>,
    /// The daemon's output when reef-bench starts it.
    #[arg(long)]
    daemon_log: Option<PathBuf>,
    /// The daemon command: reef-bench starts it, waits for the endpoint, and stops it and all it left at the end.
    #[arg(last = true)]
    daemon: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Run(args) => run(*args),
        Cli::Compare { files } => {
            let mut runs = Vec::new();
            for f in &files {
                let text = std::fs::read_to_string(f).with_context(|| format!("read {}", f.display()))?;
                runs.push(
                    serde_json::from_str::<RunResult>(text.trim()).with_context(|| format!("parse {}", f.display()))?,
                );
            }
            report::compare(&runs);
            Ok(())
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    if args.memory_at.iter().any(|&n| n > args.pods) {
        bail!("--memory-at {:?} needs --pods of at least the largest", args.memory_at);
    }
    let socket = daemon::socket_path(&args.endpoint);
    let mut started = None;
    if !args.daemon.is_empty() {
        daemon::become_subreaper()?;
        let log = args
            .daemon_log
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/reef-bench-{}.log", std::process::id())));
        let d = daemon::Daemon::spawn(&args.daemon, &log)?;
        if let Err(e) = d.wait_for_socket(&socket, Duration::from_secs(60)) {
            d.stop(Duration::from_secs(5));
            return Err(e.context(format!("daemon log: {}", log.display())));
        }
        started = Some(d);
    }
    let (daemon_pid, tree_root) = match (&started, args.pid) {
        (Some(d), _) => (Some(d.pid), std::process::id() as i32),
        (None, Some(p)) => (Some(p), p),
        (None, None) => (None, 0),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = rt.block_on(async {
        let channel = connect(&socket).await?;
        let prefix = format!("bench{}", std::process::id());
        let cgroup_parent = args.cgroup_parent.clone().unwrap_or_else(|| format!("/reef-bench-{}", std::process::id()));
        let log_dir = args
            .log_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/tmp/reef-bench-logs-{}", std::process::id())));
        let settings = Settings {
            image: args.image.clone(),
            command: args.command.clone(),
            cgroup_parent: cgroup_parent.clone(),
            log_dir: log_dir.display().to_string(),
            host_network: args.host_network,
            stop_timeout: args.stop_timeout,
            prefix: prefix.clone(),
        };
        let mut runtime = Runtime::new(channel.clone());
        let bench = bench(&args, &settings, channel, daemon_pid, tree_root);
        let outcome = tokio::select! {
            r = bench => r,
            _ = interrupted() => Err(anyhow::anyhow!("interrupted")),
        };
        // Whatever happened, nothing of ours stays on the runtime (bounded: a hung runtime is killed below).
        let _ = tokio::time::timeout(Duration::from_secs(60), async {
            for pod in lifecycle::leftover_pods(&mut runtime, &prefix).await {
                lifecycle::remove_pod(&mut runtime, &pod).await;
            }
        })
        .await;
        let _ = std::fs::remove_dir_all(&log_dir);
        outcome.map(|r| (r, cgroup_parent))
    });
    drop(rt);
    if let Some(d) = &started {
        d.stop(Duration::from_secs(10));
    }
    let (result, cgroup_parent) = result?;
    remove_empty_cgroups(&cgroup_parent);
    report::print_table(&result);
    let line = serde_json::to_string(&result)?;
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{line}\n")).with_context(|| format!("write {}", path.display()))?;
    }
    println!("{line}");
    Ok(())
}

async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

async fn bench(
    args: &RunArgs,
    s: &Settings,
    channel: Channel,
    daemon_pid: Option<i32>,
    tree_root: i32,
) -> anyhow::Result<RunResult> {
    let mut rt = Runtime::new(channel.clone());
    let version = rt.version(cri::VersionRequest { version: "v1".into() }).await.context("Version")?.into_inner();
    let runtime_name = format!("{} {}", version.runtime_name, version.runtime_version);
    eprintln!("[{}] {runtime_name} on {}", args.name, args.endpoint);
    let mut memory: Vec<Snapshot> = Vec::new();
    let snap = |label: &str, pods: usize| daemon_pid.map(|d| procs::snapshot(label, pods, d, tree_root, &s.command));
    memory.extend(snap("start", 0));

    let mut images = ImageServiceClient::new(channel.clone());
    for image in args.pull.iter().chain([&args.image]) {
        let t0 = Instant::now();
        images
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec { image: image.clone(), ..Default::default() }),
                auth: None,
                sandbox_config: None,
            })
            .await
            .with_context(|| format!("PullImage {image}"))?;
        eprintln!("[{}] pulled {image} in {:.0} ms", args.name, t0.elapsed().as_secs_f64() * 1000.0);
    }

    let mut n = 0;
    for _ in 0..args.warmup {
        let mut t = Timings::new();
        let p = lifecycle::up(&mut rt, s, n, &mut t).await?;
        lifecycle::down(&mut rt, s, &p, &mut t).await?;
        n += 1;
    }
    let settle = Duration::from_millis(args.settle_ms);
    tokio::time::sleep(settle).await;
    memory.extend(snap("0 pods", 0));

    eprintln!("[{}] {} pods one after another", args.name, args.pods);
    let mut seq = Timings::new();
    let mut running = Vec::new();
    for i in 0..args.pods {
        running.push(lifecycle::up(&mut rt, s, n, &mut seq).await?);
        n += 1;
        if args.memory_at.contains(&(i + 1)) {
            tokio::time::sleep(settle).await;
            memory.extend(snap(&format!("{} pods", i + 1), i + 1));
        }
    }
    for p in &running {
        lifecycle::down(&mut rt, s, p, &mut seq).await?;
    }
    let up_total: Duration = seq.iter().filter(|(st, _)| *st == lifecycle::POD_UP).map(|(_, d)| *d).sum();

    eprintln!("[{}] {} lifecycles, {} in flight", args.name, args.parallel_pods, args.parallel);
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.parallel {
        let mut rt = Runtime::new(channel.clone());
        let next = next.clone();
        let total = args.parallel_pods;
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = Timings::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(t);
                }
                let l0 = Instant::now();
                let p = lifecycle::up(&mut rt, &s, n + i, &mut t).await?;
                lifecycle::down(&mut rt, &s, &p, &mut t).await?;
                t.push((lifecycle::LIFECYCLE, l0.elapsed()));
            }
        }));
    }
    let mut par = Timings::new();
    for task in tasks {
        par.extend(task.await.context("parallel task")??);
    }
    let wall = t0.elapsed();
    tokio::time::sleep(settle).await;
    memory.extend(snap("end (0 pods)", 0));

    let per_pod = match (
        memory.iter().find(|m| m.label == "0 pods"),
        memory.iter().filter(|m| m.pods > 0).max_by_key(|m| m.pods),
    ) {
        (Some(zero), Some(top)) => {
            let (a, b) = (zero.runtime(), top.runtime());
            let n = top.pods as f64;
            Some(PerPod {
                rss: (b.rss as f64 - a.rss as f64) / n,
                pss: (b.pss as f64 - a.pss as f64) / n,
                private: (b.private as f64 - a.private as f64) / n,
            })
        }
        _ => None,
    };
    let phases = vec![("sequential".to_string(), report::stats(&seq)), ("parallel".to_string(), report::stats(&par))];
    Ok(RunResult {
        name: args.name.clone(),
        runtime: runtime_name,
        sequential_pods: args.pods,
        parallel: args.parallel,
        parallel_pods: args.parallel_pods,
        phases,
        sequential_pods_per_s: if up_total.is_zero() { 0.0 } else { args.pods as f64 / up_total.as_secs_f64() },
        parallel_lifecycles_per_s: args.parallel_pods as f64 / wall.as_secs_f64(),
        memory,
        per_pod,
    })
}

async fn connect(socket: &Path) -> anyhow::Result<Channel> {
    reef_api::connect_unix(reef_api::unix_endpoint(), socket)
        .await
        .with_context(|| format!("connect to {}", socket.display()))
}

/// Removes the pods' cgroup parent in every hierarchy, deepest first, where the runtime left it empty.
fn remove_empty_cgroups(parent: &str) {
    let rel = parent.trim_matches('/');
    if rel.is_empty() || rel.split('/').any(|c| c == ".." || c == ".") {
        return;
    }
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else { return };
    let roots = hierarchies.flatten().map(|h| h.path()).chain([PathBuf::from("/sys/fs/cgroup")]);
    for root in roots {
        let mut dirs = Vec::new();
        let mut stack = vec![root.join(rel)];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            stack.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
            dirs.push(d);
        }
        for d in dirs.into_iter().rev() {
            let _ = std::fs::remove_dir(&d);
        }
    }
}
