use k8s_cri::v1 as cri;
use serde::Serialize;

use super::{human_duration, now_nanos, short};
use crate::cli::{Format, ListArgs};
use crate::client::{Clients, status_error};
use crate::output::{print_structured, print_table, table};

#[derive(Serialize)]
struct PodOut {
    id: String,
    name: String,
    namespace: String,
    uid: String,
    state: String,
    created_at: i64,
    labels: std::collections::BTreeMap<String, String>,
}

pub async fn run(clients: &Clients, args: &ListArgs) -> anyhow::Result<()> {
    let items = clients
        .runtime()
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .map_err(|s| status_error("list pods", s))?
        .into_inner()
        .items;
    let pods: Vec<PodOut> = items
        .into_iter()
        .map(|p| {
            let meta = p.metadata.unwrap_or_default();
            PodOut {
                id: p.id,
                name: meta.name,
                namespace: meta.namespace,
                uid: meta.uid,
                state: if p.state == cri::PodSandboxState::SandboxReady as i32 { "Ready" } else { "NotReady" }.into(),
                created_at: p.created_at,
                labels: p.labels.into_iter().collect(),
            }
        })
        .collect();
    if args.output != Format::Table {
        return print_structured(&pods, args.output);
    }
    if args.quiet {
        pods.iter().for_each(|p| println!("{}", p.id));
        return Ok(());
    }
    let mut t = table(&["POD ID", "CREATED", "STATE", "NAME", "NAMESPACE"]);
    for p in &pods {
        t.add_row(vec![
            short(&p.id),
            format!("{} ago", human_duration(now_nanos() - p.created_at)),
            p.state.clone(),
            p.name.clone(),
            p.namespace.clone(),
        ]);
    }
    print_table(&t);
    Ok(())
}
