//! Work that blocks (forks, mounts, monitor calls, disk flushes, netlink) runs on tokio's blocking pool, never on
//! the two async workers: one slow call must not stall every other RPC, Status included.

use crate::error::ReefError;

/// Runs `f` on the blocking pool. `what` names the work if its thread panics.
pub async fn run<T, F>(what: &'static str, f: F) -> Result<T, ReefError>
where
    F: FnOnce() -> Result<T, ReefError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| ReefError::Internal(format!("{what}: {e}")))?
}

/// `run` for work that cannot fail.
pub async fn value<T, F>(what: &'static str, f: F) -> Result<T, ReefError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    run(what, move || Ok(f())).await
}
