//! `rctl update`: new CPU and memory limits for running containers, like docker update. The limits not given
//! keep their current values: reefd applies the resources it is sent as a whole.

use k8s_cri::v1 as cri;

use crate::cli::UpdateArgs;
use crate::client::{Clients, status_error};
use crate::parse::{CPU_PERIOD, cpu_quota};

pub fn check(args: &UpdateArgs) -> anyhow::Result<()> {
    if args.memory.is_none() && args.cpus.is_none() {
        anyhow::bail!("nothing to update: give --memory and/or --cpus");
    }
    Ok(())
}

/// The container's current limits with the ones asked for put in.
pub fn merged(current: Option<cri::LinuxContainerResources>, args: &UpdateArgs) -> cri::LinuxContainerResources {
    let mut r = current.unwrap_or_default();
    if let Some(m) = args.memory {
        r.memory_limit_in_bytes = m;
    }
    if let Some(c) = args.cpus {
        r.cpu_period = CPU_PERIOD;
        r.cpu_quota = cpu_quota(c);
    }
    r
}

pub async fn run(clients: &Clients, args: &UpdateArgs) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    for id in &args.containers {
        let resolved = crate::resolve::container(clients, id).await?;
        let mut rt = clients.runtime();
        let result = async {
            let status = rt
                .container_status(cri::ContainerStatusRequest { container_id: resolved.clone(), verbose: false })
                .await?
                .into_inner()
                .status
                .unwrap_or_default();
            let linux = merged(status.resources.and_then(|r| r.linux), args);
            rt.update_container_resources(cri::UpdateContainerResourcesRequest {
                container_id: status.id,
                linux: Some(linux),
                ..Default::default()
            })
            .await
        }
        .await;
        match result {
            Ok(_) => println!("{id}"),
            Err(s) => failed.push(status_error(&format!("update {id}"), s).to_string()),
        }
    }
    if failed.is_empty() { Ok(()) } else { anyhow::bail!("{}", failed.join("; ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_not_given_keep_their_values() {
        let args = UpdateArgs { containers: vec!["x".into()], memory: Some(128 << 20), cpus: None };
        let current = cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpu_shares: 512,
            ..Default::default()
        };
        let r = merged(Some(current), &args);
        assert_eq!(
            (r.memory_limit_in_bytes, r.cpu_quota, r.cpu_period, r.cpu_shares),
            (128 << 20, 50_000, 100_000, 512)
        );
        assert!(check(&UpdateArgs { containers: vec!["x".into()], memory: None, cpus: None }).is_err());
    }
}
