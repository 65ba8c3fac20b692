//! What reefd does about its heap: glibc's arenas are bounded, and the pages that a burst of calls freed are
//! given back once the calls are over.
//!
//! A pod's RPCs allocate and free a few hundred KiB (specs, plans, protobufs, JSON); glibc keeps freed pages for
//! reuse and returns only what ends up at the top of an arena. After a burst (pods started, images pulled),
//! reefd's resident heap would stay at its high-water mark. `malloc_trim` releases the free pages inside the
//! arenas too (madvise), once no call has been in flight for a moment, so an idle reefd holds what it uses.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

static CALLS: AtomicU64 = AtomicU64::new(0);
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
/// Told when the last call in flight ends: the trimmer sleeps on it, so an idle reefd does not wake up.
static CALLS_DONE: Notify = Notify::const_new();

/// Counts an RPC for as long as it runs (see `instrument::call`).
pub struct CallGuard(());

impl CallGuard {
    pub fn enter() -> CallGuard {
        CALLS.fetch_add(1, Ordering::Relaxed);
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        CallGuard(())
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if IN_FLIGHT.fetch_sub(1, Ordering::Relaxed) == 1 {
            CALLS_DONE.notify_one();
        }
    }
}

/// How long reefd must have been without calls before it trims: long enough that a trim never lands inside a
/// burst, short enough that kubelet's one-second relists leave room for it.
const QUIET: Duration = Duration::from_millis(400);

/// Trims the heap whenever calls came and then stopped for `QUIET`.
pub fn spawn_trimmer() {
    tokio::spawn(async {
        loop {
            CALLS_DONE.notified().await;
            loop {
                let seen = CALLS.load(Ordering::Relaxed);
                tokio::time::sleep(QUIET).await;
                if CALLS.load(Ordering::Relaxed) == seen && IN_FLIGHT.load(Ordering::Relaxed) == 0 {
                    break;
                }
            }
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    });
}

/// glibc gives threads that allocate arenas of their own, up to eight per core; reefd's blocking threads come and
/// go, and the arenas they leave keep their pages. Two arenas bound that, as `MALLOC_ARENA_MAX=2` would, however
/// reefd is started.
#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
pub fn limit_arenas() {
    // SAFETY: mallopt takes two integers and touches only the allocator's settings; it runs before any thread.
    unsafe { nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2) };
}

#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim takes an integer and works under the allocator's own locks; any thread may call it.
    unsafe { nix::libc::malloc_trim(0) };
}

#[cfg(not(target_env = "gnu"))]
pub fn limit_arenas() {}

#[cfg(not(target_env = "gnu"))]
fn trim() {}
