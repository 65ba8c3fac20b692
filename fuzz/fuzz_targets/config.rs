//! reefd's configuration file. Never a panic; a file that loads is one reefd can run with: its streaming
//! timeouts fit an Instant (token expiries, stream creation and idle deadlines are `now + setting`; the CNI
//! timeout goes to recv_timeout, which copes), and the views made of it at startup can be made.

#![no_main]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use reef_node_agent::fuzzing::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = Config::parse(text, Path::new("/etc/reef/config.toml")) else { return };
    let s = &config.streaming;
    for (key, seconds) in [
        ("token_ttl_seconds", s.token_ttl_seconds),
        ("idle_timeout_seconds", s.idle_timeout_seconds),
        ("stream_creation_timeout_seconds", s.stream_creation_timeout_seconds),
    ] {
        assert!(
            Instant::now().checked_add(Duration::from_secs(seconds)).is_some(),
            "{key} = {seconds} loads, but now + it overflows"
        );
    }
    let _ = config.network.netplug(PathBuf::from("/var/lib/reef/network"));
    let _ = config.redacted_json();
});
