//! The end-to-end harness: a real `docker-registry` on 127.0.0.1, a real reefd with its own directories and
//! socket, and images built in memory by the tests themselves. Every test owns its registry and its reefd, so tests
//! run in parallel, and everything is torn down by `Drop`, also when a test fails.
//!
//! The tests need root and Debian's docker-registry and busybox-static; they run only with `REEF_E2E=1` (which
//! `scripts/test-all` sets), so a plain `cargo test` stays hermetic.

pub mod cgroup;
pub mod cri;
pub mod image;
pub mod netns;
pub mod pod;
pub mod proxy;
pub mod push;
pub mod reefd;
pub mod registry;
pub mod spdy;

pub fn e2e_enabled() -> bool {
    std::env::var("REEF_E2E").as_deref() == Ok("1")
}

/// First line of every end-to-end test.
#[macro_export]
macro_rules! require_e2e {
    () => {
        if !$crate::e2e_enabled() {
            eprintln!("skipped: set REEF_E2E=1 to run end-to-end tests");
            return;
        }
    };
}

pub fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}
