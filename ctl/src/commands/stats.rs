//! `rctl stats`: docker stats for the node's running containers. CPU % is the CPU time used between two samples
//! over the wall time between them (100 % is one core busy); MEM USAGE is the working set kubelet evicts on,
//! against the container's limit (the node's memory when it has none); PIDS counts its tasks.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use k8s_cri::v1 as cri;
use serde::Serialize;

use crate::cli::{Format, StatsArgs};
use crate::client::{Clients, status_error};
use crate::output::{human_binary, print_structured, table};

/// docker samples once a second.
const INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: String,
    pub name: String,
    pub cpu_percent: f64,
    pub memory_usage: u64,
    pub memory_limit: u64,
    pub memory_percent: f64,
    pub pids: u64,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    cpu_ns: u64,
    at_ns: i64,
}

/// CPU % between two samples of one container.
fn cpu_percent(before: Sample, after: Sample) -> f64 {
    let wall = after.at_ns.saturating_sub(before.at_ns);
    if wall <= 0 {
        return 0.0;
    }
    after.cpu_ns.saturating_sub(before.cpu_ns) as f64 / wall as f64 * 100.0
}

pub async fn run(clients: &Clients, args: &StatsArgs) -> anyhow::Result<()> {
    let mut wanted = Vec::new();
    for c in &args.containers {
        wanted.push(crate::resolve::container(clients, c).await?);
    }
    let args = &StatsArgs { containers: wanted, no_stream: args.no_stream, output: args.output };
    let mut before = sample(clients, args).await?.1;
    let redraw = std::io::stdout().is_terminal() && !args.no_stream && args.output == Format::Table;
    loop {
        tokio::time::sleep(INTERVAL).await;
        let (rows, now) = sample(clients, args).await?;
        let rows: Vec<Row> = rows
            .into_iter()
            .map(|(mut row, s)| {
                row.cpu_percent = before.get(&row.id).map(|b| cpu_percent(*b, s)).unwrap_or_default();
                row
            })
            .collect();
        before = now;
        if redraw {
            // Clear the screen and go home, as docker stats does.
            print!("\x1b[2J\x1b[H");
        }
        print_rows(&rows, args.output)?;
        std::io::stdout().flush()?;
        if args.no_stream {
            return Ok(());
        }
    }
}

fn print_rows(rows: &[Row], format: Format) -> anyhow::Result<()> {
    if format != Format::Table {
        return print_structured(&rows, format);
    }
    let mut t = table(&["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS"]);
    for r in rows {
        t.add_row(vec![
            crate::output::short_id(&r.id),
            r.name.clone(),
            format!("{:.2}%", r.cpu_percent),
            format!("{} / {}", human_binary(r.memory_usage), human_binary(r.memory_limit)),
            format!("{:.2}%", r.memory_percent),
            r.pids.to_string(),
        ]);
    }
    crate::output::print_table(&t);
    Ok(())
}

/// One sample of every running container asked for: its row (CPU % still to compute) and its CPU counter.
async fn sample(clients: &Clients, args: &StatsArgs) -> anyhow::Result<(Vec<(Row, Sample)>, HashMap<String, Sample>)> {
    let mut rt = clients.runtime();
    let running = Some(cri::ContainerStateValue { state: cri::ContainerState::ContainerRunning as i32 });
    let containers = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter { state: running, ..Default::default() }),
        })
        .await
        .map_err(|s| status_error("list containers", s))?
        .into_inner()
        .containers;
    let wanted: Vec<cri::Container> = containers
        .into_iter()
        .filter(|c| args.containers.is_empty() || args.containers.iter().any(|w| c.id.starts_with(w.as_str())))
        .collect();
    for w in &args.containers {
        if !wanted.iter().any(|c| c.id.starts_with(w.as_str())) {
            anyhow::bail!("no running container {w}");
        }
    }
    let stats = rt
        .list_container_stats(cri::ListContainerStatsRequest { filter: None })
        .await
        .map_err(|s| status_error("container stats", s))?
        .into_inner()
        .stats;
    let threads = threads_by_container(clients).await?;
    let node_memory = node_memory();
    let mut rows = Vec::new();
    let mut samples = HashMap::new();
    for c in wanted {
        let Some(st) = stats.iter().find(|s| s.attributes.as_ref().is_some_and(|a| a.id == c.id)) else { continue };
        let cpu = st.cpu.unwrap_or_default();
        let s =
            Sample { cpu_ns: cpu.usage_core_nano_seconds.map(|v| v.value).unwrap_or_default(), at_ns: cpu.timestamp };
        let usage = st.memory.as_ref().and_then(|m| m.working_set_bytes.as_ref()).map(|v| v.value).unwrap_or_default();
        let limit = memory_limit(clients, &c.id).await.filter(|l| *l > 0).unwrap_or(node_memory);
        samples.insert(c.id.clone(), s);
        rows.push((
            Row {
                id: c.id.clone(),
                name: c.metadata.map(|m| m.name).unwrap_or_default(),
                cpu_percent: 0.0,
                memory_usage: usage,
                memory_limit: limit,
                memory_percent: if limit > 0 { usage as f64 / limit as f64 * 100.0 } else { 0.0 },
                pids: threads.get(&c.id).copied().unwrap_or_default(),
            },
            s,
        ));
    }
    Ok((rows, samples))
}

async fn memory_limit(clients: &Clients, id: &str) -> Option<u64> {
    let status = clients
        .runtime()
        .container_status(cri::ContainerStatusRequest { container_id: id.to_string(), verbose: false })
        .await
        .ok()?
        .into_inner()
        .status?;
    status.resources?.linux.map(|l| l.memory_limit_in_bytes.max(0) as u64)
}

/// The tasks of each container, from the CRI metrics (`container_threads`: what the pids controller counts).
async fn threads_by_container(clients: &Clients) -> anyhow::Result<HashMap<String, u64>> {
    let pods = clients
        .runtime()
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .map_err(|s| status_error("pod metrics", s))?
        .into_inner()
        .pod_metrics;
    Ok(pods
        .iter()
        .flat_map(|p| p.container_metrics.iter())
        .filter_map(|c| {
            let m = c.metrics.iter().find(|m| m.name == "container_threads")?;
            Some((c.container_id.clone(), m.value.as_ref()?.value))
        })
        .collect())
}

/// MemTotal of this node, in bytes: a container without a limit can use it all.
fn node_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map(|kb| kb * 1024)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_is_cpu_time_over_wall_time() {
        let a = Sample { cpu_ns: 1_000_000_000, at_ns: 10_000_000_000 };
        let b = Sample { cpu_ns: 1_500_000_000, at_ns: 11_000_000_000 };
        assert!((cpu_percent(a, b) - 50.0).abs() < 1e-9);
        let two_cores = Sample { cpu_ns: 3_000_000_000, at_ns: 11_000_000_000 };
        assert!((cpu_percent(a, two_cores) - 200.0).abs() < 1e-9);
        assert_eq!(cpu_percent(b, a), 0.0, "time going backwards is no usage");
    }
}
