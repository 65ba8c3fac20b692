use k8s_cri::v1 as cri;
use serde::Serialize;

use super::{human_duration, now_nanos, short};
use crate::cli::{Format, PsArgs};
use crate::client::{Clients, status_error};
use crate::output::{print_structured, print_table, table};

#[derive(Serialize)]
struct ContainerOut {
    id: String,
    pod_id: String,
    name: String,
    image: String,
    state: String,
    status: String,
    created_at: i64,
}

/// docker's STATUS column: "Up 3 minutes", "Exited (0) 2 minutes ago", "Created 5 seconds ago".
pub fn status_text(s: &cri::ContainerStatus, now: i64) -> String {
    match cri::ContainerState::try_from(s.state).unwrap_or(cri::ContainerState::ContainerUnknown) {
        cri::ContainerState::ContainerRunning => format!("Up {}", human_duration(now - s.started_at)),
        cri::ContainerState::ContainerExited => {
            format!("Exited ({}) {} ago", s.exit_code, human_duration(now - s.finished_at))
        }
        cri::ContainerState::ContainerCreated => format!("Created {} ago", human_duration(now - s.created_at)),
        cri::ContainerState::ContainerUnknown => "Unknown".into(),
    }
}

pub async fn run(clients: &Clients, args: &PsArgs) -> anyhow::Result<()> {
    let mut rt = clients.runtime();
    let filter = cri::ContainerFilter {
        pod_sandbox_id: args.pod.clone().unwrap_or_default(),
        state: (!args.all).then_some(cri::ContainerStateValue { state: cri::ContainerState::ContainerRunning as i32 }),
        ..Default::default()
    };
    let containers = rt
        .list_containers(cri::ListContainersRequest { filter: Some(filter) })
        .await
        .map_err(|s| status_error("list containers", s))?
        .into_inner()
        .containers;
    let now = now_nanos();
    let mut out = Vec::new();
    for c in containers {
        let status = rt
            .container_status(cri::ContainerStatusRequest { container_id: c.id.clone(), verbose: false })
            .await
            .ok()
            .and_then(|r| r.into_inner().status);
        let state = cri::ContainerState::try_from(c.state).map(|s| s.as_str_name().to_string()).unwrap_or_default();
        out.push(ContainerOut {
            id: c.id,
            pod_id: c.pod_sandbox_id,
            name: c.metadata.map(|m| m.name).unwrap_or_default(),
            image: c.image.map(|i| i.image).unwrap_or_default(),
            state,
            status: status.as_ref().map(|s| status_text(s, now)).unwrap_or_else(|| "Unknown".into()),
            created_at: c.created_at,
        });
    }
    if args.output != Format::Table {
        return print_structured(&out, args.output);
    }
    if args.quiet {
        out.iter().for_each(|c| println!("{}", c.id));
        return Ok(());
    }
    let mut t = table(&["CONTAINER", "IMAGE", "CREATED", "STATUS", "NAME", "POD ID"]);
    for c in &out {
        t.add_row(vec![
            short(&c.id),
            c.image.clone(),
            format!("{} ago", human_duration(now - c.created_at)),
            c.status.clone(),
            c.name.clone(),
            short(&c.pod_id),
        ]);
    }
    print_table(&t);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reads_like_docker_ps() {
        let now = 1_000_000_000_000;
        let running = cri::ContainerStatus {
            state: cri::ContainerState::ContainerRunning as i32,
            started_at: now - 180_000_000_000,
            ..Default::default()
        };
        assert_eq!(status_text(&running, now), "Up 3 minutes");
        let exited = cri::ContainerStatus {
            state: cri::ContainerState::ContainerExited as i32,
            exit_code: 137,
            finished_at: now - 120_000_000_000,
            ..Default::default()
        };
        assert_eq!(status_text(&exited, now), "Exited (137) 2 minutes ago");
    }
}
