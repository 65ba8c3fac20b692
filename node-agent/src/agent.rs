//! The state every RPC handler shares.

use std::sync::{Arc, RwLock};

use reef_images::pull::Puller;

use crate::config::Config;
use crate::containers::Containers;
use crate::events::Events;
use crate::pods::Pods;

pub struct Agent {
    pub config: Config,
    pub puller: Puller,
    pub pods: Pods,
    pub containers: Containers,
    pub events: Arc<Events>,
    /// Unix time in nanoseconds when this reefd started.
    pub started_at: i64,
    /// The pod CIDR kubelet sent with UpdateRuntimeConfig; networking takes it over when it lands.
    pub pod_cidr: RwLock<String>,
}

impl Agent {
    pub fn new(config: Config, puller: Puller, pods: Pods, containers: Containers, events: Arc<Events>) -> Arc<Agent> {
        Arc::new(Agent {
            config,
            puller,
            pods,
            containers,
            events,
            started_at: reef_images::pull::now_nanos(),
            pod_cidr: RwLock::default(),
        })
    }
}
