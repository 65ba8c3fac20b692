use std::sync::Arc;

use k8s_cri::v1 as cri;

use crate::agent::Agent;
use crate::config::CgroupDriver;
use crate::error::ReefError;

pub async fn get(agent: &Agent, _req: cri::RuntimeConfigRequest) -> Result<cri::RuntimeConfigResponse, ReefError> {
    let driver = match agent.config.cgroup_driver {
        CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
        CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
    };
    Ok(cri::RuntimeConfigResponse { linux: Some(cri::LinuxRuntimeConfiguration { cgroup_driver: driver as i32 }) })
}

pub async fn update(
    agent: &Arc<Agent>,
    req: cri::UpdateRuntimeConfigRequest,
) -> Result<cri::UpdateRuntimeConfigResponse, ReefError> {
    // kubelet sends an empty config on every sync; only a CIDR it actually set replaces the stored one.
    let cidr = req.runtime_config.and_then(|c| c.network_config).map(|n| n.pod_cidr).unwrap_or_default();
    if !cidr.is_empty() {
        for part in cidr.split(',') {
            let valid = part.split_once('/').is_some_and(|(ip, len)| {
                ip.trim().parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128)
            });
            if !valid {
                return Err(ReefError::InvalidArgument(format!("pod CIDR {cidr:?} is not a CIDR list")));
            }
        }
        tracing::info!(pod_cidr = %cidr, "pod CIDR updated");
        // netplug's state lock, which a pod's network setup holds while it runs: on a blocking thread.
        let (a, c) = (Arc::clone(agent), cidr.clone());
        crate::blocking::run("set the pod CIDR", move || a.pods.network.set_pod_cidr(&c).map_err(ReefError::Network))
            .await?;
        *agent.pod_cidr.write().unwrap_or_else(|p| p.into_inner()) = cidr;
    }
    Ok(cri::UpdateRuntimeConfigResponse {})
}
