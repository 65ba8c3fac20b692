//! reefd, the Reef node agent, as a library: `src/main.rs` is only its entry point. The modules stay private; what
//! the fuzz targets in `fuzz/` drive is re-exported, and only that, by [`fuzzing`].

#![deny(unsafe_code)]

mod agent;
mod api;
mod blocking;
mod config;
mod containers;
mod cri;
mod error;
mod events;
mod heap;
mod instrument;
mod pods;
mod records;
mod rollback;
mod server;
mod spec;
mod streaming;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use reef_images::pull::Puller;
use reef_images::registry::Registries;
use reef_images::store::Store;
use reef_images::unpack::UnpackOptions;

use crate::config::{Config, DEFAULT_CONFIG_PATH};

/// Reef's node agent: serves the Kubernetes CRI and Reef's own API on a unix socket.
#[derive(Parser)]
#[command(name = "reefd", version)]
struct Args {
    /// Configuration file (TOML). Without it every setting takes its default.
    #[arg(long, env = "REEF_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the version as JSON and exit.
    #[arg(long)]
    version_json: bool,
}

/// reefd's whole life: parse the arguments, load the configuration, serve until told to stop.
pub fn main() -> ExitCode {
    let args = Args::parse();
    if args.version_json {
        println!("{}", serde_json::json!({"name": "reefd", "version": env!("CARGO_PKG_VERSION"), "cri_api": "v1"}));
        return ExitCode::SUCCESS;
    }
    let (path, explicit) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
    };
    let config = match Config::load(&path, explicit) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("reefd: invalid configuration: {}", error::chain(&e));
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log_level);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("reefd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

fn run(config: Config) -> anyhow::Result<()> {
    heap::limit_arenas();
    // The lock comes first: a second reefd must stop before it touches the store, or makes a mount namespace of
    // its own that two would then race to pin.
    let lock = server::SocketLock::acquire(&config.socket)?;
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("create state dir {}", config.state_dir.display()))?;
    // Before the async runtime starts its threads: a mount namespace is entered by a single-threaded process.
    let pin = config.state_dir.join(reef_runtime::mount_ns::PIN);
    let node_mounts = match reef_runtime::mount_ns::enter_own(&pin, || !pods::live_monitors(&config.state_dir)) {
        Ok(Some(node)) => Some(node),
        Ok(None) => {
            tracing::info!(
                "pods of a reefd without a mount namespace of its own are running: staying in the node's until \
                 they are gone, so that their monitors see the rootfs of their new containers"
            );
            None
        }
        Err(e) => {
            tracing::warn!(
                error = %error::chain(&e),
                "pins and rootfs mounts stay in the node's mount namespace: each Create then copies them all"
            );
            None
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Two workers keep idle memory low; the heavy work (unpacking) runs on blocking threads anyway.
        .worker_threads(2)
        .thread_name("reefd")
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async move {
        let signals = server::ShutdownSignals::install()?;
        // The socket comes last: clients only ever talk to a recovered reefd.
        let root = config.root_dir.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&root))
            .await
            .context("open the image store")?
            .with_context(|| format!("open the image store in {}", config.root_dir.display()))?;
        let registries = Registries::new(config.registry.clone(), config.images.max_concurrent_downloads)
            .context("registry settings")?;
        let unpack = UnpackOptions { allow_device_nodes: config.images.allow_device_nodes, ..Default::default() };
        let puller = Puller::new(store, registries, unpack, config.images.max_concurrent_downloads);
        let (root, state, monitor) = (config.root_dir.clone(), config.state_dir.clone(), config.monitor_binary());
        let cgroup_parent = config.cgroup_parent.clone();
        let systemd_cgroups = config.cgroup_driver == config::CgroupDriver::Systemd;
        let events = std::sync::Arc::new(events::Events::default());
        let bus = std::sync::Arc::clone(&events);
        let net_config = config.network.netplug(config.root_dir.join("network"));
        let (pods, containers) = tokio::task::spawn_blocking(move || {
            let network = reef_netplug::Network::open(net_config)
                .map_err(|e| std::io::Error::other(format!("pod network: {}", error::chain(&e))))?;
            let pods = pods::Pods::open(&root, &state, monitor, node_mounts, network)?;
            let containers = containers::Containers::open(&root, &state, &cgroup_parent, systemd_cgroups, bus)?;
            for pod in pods.list() {
                containers.watch_pod(&pods, &pod.id);
            }
            Ok::<_, std::io::Error>((pods, containers))
        })
        .await
        .context("load pods and containers")?
        .context("load pods and containers")?;
        let (streaming, listener) = streaming::bind(&config.streaming).await?;
        let agent = agent::Agent::new(config, puller, pods, containers, events, streaming);
        streaming::spawn(listener, std::sync::Arc::clone(&agent));
        let watcher = std::sync::Arc::clone(&agent);
        std::thread::Builder::new()
            .name("reefd-exits".into())
            .spawn(move || watcher.containers.exit_watch().run(|id| watcher.containers.exited(&watcher.pods, id)))
            .context("start the exit watch")?;
        heap::spawn_trimmer();
        let socket = lock.bind()?;
        let stopped = std::sync::Arc::clone(&agent);
        server::serve(agent, socket, signals).await?;
        release_mount_namespace(&stopped, &pin);
        Ok(())
    })
}

/// At a clean stop with no pod left, reefd's mount namespace holds nothing to keep: its pin is taken back, so a
/// stopped reefd leaves no mount behind. With pods, it stays for the next start to enter and find them.
fn release_mount_namespace(agent: &agent::Agent, pin: &std::path::Path) {
    if !agent.pods.list().is_empty() || pods::live_monitors(&agent.config.state_dir) {
        return;
    }
    match reef_runtime::mount_ns::release(pin) {
        Ok(()) => tracing::debug!(pin = %pin.display(), "no pod left: mount namespace released"),
        Err(e) => tracing::warn!(error = %error::chain(&e), "release the mount namespace's pin"),
    }
}

/// What the fuzz targets in `fuzz/` drive: the parsers and mappings untrusted input reaches. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::config::Config;
    pub use crate::spec::seccomp::{Filter as SeccompFilter, filter as seccomp_filter};
    pub use crate::spec::{PodNamespaces, SpecError, SpecInput, build as build_spec, cgroup_path, user_request};
    pub use crate::streaming::spdy::{Frame, HeaderDecoder, HeaderEncoder, MAX_FRAME, encode_frame, read_frame};
    pub use crate::streaming::websocket::{Framing, Incoming, decode as decode_ws, encode as encode_ws};
    pub use crate::validate::{container as validate_container, pod as validate_pod};
    pub use axum::extract::ws::Message as WsMessage;
}
