//! The state every RPC handler shares.

use std::sync::{Arc, RwLock};

use reef_images::pull::Puller;

use crate::config::Config;
use crate::containers::Containers;
use crate::events::Events;
use crate::pods::Pods;
use crate::streaming::Streaming;

pub struct Agent {
    pub config: Config,
    pub puller: Puller,
    pub pods: Pods,
    pub containers: Containers,
    pub events: Arc<Events>,
    /// Pending Exec, Attach and PortForward requests and the URL they are served on.
    pub streaming: Streaming,
    /// Unix time in nanoseconds when this reefd started.
    pub started_at: i64,
    /// The pod CIDR kubelet sent with UpdateRuntimeConfig; networking takes it over when it lands.
    pub pod_cidr: RwLock<String>,
}

impl Agent {
    pub fn new(
        config: Config,
        puller: Puller,
        pods: Pods,
        containers: Containers,
        events: Arc<Events>,
        streaming: Streaming,
    ) -> Arc<Agent> {
        Arc::new(Agent {
            config,
            puller,
            pods,
            containers,
            events,
            streaming,
            started_at: reef_runtime::clock::now_nanos(),
            pod_cidr: RwLock::default(),
        })
    }
}
