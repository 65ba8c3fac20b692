//! The unix socket and the gRPC server on it.
//!
//! Exclusivity comes from an flock on `<socket>.lock`, not from the socket file: the lock dies with its process,
//! so a socket left by a SIGKILLed reefd is recognised as stale and replaced, while a live reefd keeps the lock and
//! a second one exits with a clear message instead of stealing the socket.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;
use nix::fcntl::{Flock, FlockArg};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::agent::Agent;
use crate::api::ReefApi;
use crate::cri::Cri;

/// How long in-flight calls get to finish after SIGTERM before reefd exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Large layers and long image lists exceed tonic's 4 MiB default; kubelet's own limit is 16 MiB.
const MAX_MESSAGE_SIZE: usize = 16 << 20;

pub struct Socket {
    listener: UnixListener,
    path: PathBuf,
    _lock: Flock<std::fs::File>,
}

/// The exclusive right to serve a socket path, held before recovery starts and kept until reefd exits.
pub struct SocketLock {
    path: PathBuf,
    lock: Flock<std::fs::File>,
}

impl SocketLock {
    pub fn acquire(path: &Path) -> anyhow::Result<SocketLock> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        }
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock_file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("open {}", lock_path.display()))?;
        let lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                anyhow::bail!("another reefd is already serving {} (it holds {})", path.display(), lock_path.display())
            }
            Err((_, e)) => return Err(e).with_context(|| format!("lock {}", lock_path.display())),
        };
        Ok(SocketLock { path: path.to_path_buf(), lock })
    }

    /// Listens on the socket (replacing a stale one). Called once recovery is done, so that every call is
    /// answered from recovered state.
    pub fn bind(self) -> anyhow::Result<Socket> {
        let path = self.path.as_path();
        match std::fs::remove_file(path) {
            Ok(()) => tracing::info!(socket = %path.display(), "replaced a stale socket"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("remove stale socket {}", path.display())),
        }
        // Bind under a tight umask so the socket is never reachable by others, not even between bind and chmod.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = bound.with_context(|| format!("bind {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .with_context(|| format!("chmod {}", path.display()))?;
        Ok(Socket { listener, path: path.to_path_buf(), _lock: self.lock })
    }
}

/// SIGTERM and SIGINT, listened for from before the socket exists: a signal that arrives as soon as clients can
/// connect must already mean a graceful stop.
pub struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    pub fn install() -> anyhow::Result<ShutdownSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            term: signal(SignalKind::terminate()).context("listen for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("listen for SIGINT")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

pub async fn serve(agent: Arc<Agent>, socket: Socket, mut signals: ShutdownSignals) -> anyhow::Result<()> {
    let cri = Cri::new(Arc::clone(&agent));
    let events = Arc::clone(&agent.events);
    let Socket { listener, path, _lock } = socket;
    tracing::info!(socket = %path.display(), version = env!("CARGO_PKG_VERSION"), "reefd serving");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .layer(crate::instrument::Deadlines)
        .add_service(
            RuntimeServiceServer::new(cri.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            ImageServiceServer::new(cri)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(reef_api::v1::reef_server::ReefServer::new(ReefApi::new(agent)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
            let _ = stop_rx.await;
        });
    let mut server = tokio::spawn(server);
    let signal = signals.recv();
    tokio::select! {
        result = &mut server => {
            result.context("server task")?.context("serve")?;
        }
        name = signal => {
            tracing::info!(signal = name, "shutting down, finishing calls in flight");
            // Event streams never finish by themselves: they end now rather than hold the stop up.
            events.close();
            let _ = stop_tx.send(());
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(result) => result.context("server task")?.context("serve")?,
                Err(_) => tracing::warn!("calls still in flight after {SHUTDOWN_GRACE:?}; exiting anyway"),
            }
        }
    }
    let _ = std::fs::remove_file(&path);
    tracing::info!("reefd stopped");
    Ok(())
}
