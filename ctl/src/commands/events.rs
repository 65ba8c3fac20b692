//! `rctl events`: Reef's event stream, one line per event as docker prints them, until Ctrl-C or reefd stops.

use std::io::Write;

use reef_api::v1 as api;

use crate::cli::{EventType, EventsArgs, Format};
use crate::client::{Clients, status_error};
use crate::output::rfc3339_nano;

pub fn line(e: &api::Event) -> String {
    let kind = match api::EventKind::try_from(e.kind).unwrap_or(api::EventKind::Unspecified) {
        api::EventKind::Pod => "pod",
        api::EventKind::Container => "container",
        api::EventKind::Image => "image",
        api::EventKind::Unspecified => "unknown",
    };
    let mut attrs: Vec<(String, String)> = e.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if !e.name.is_empty() {
        attrs.push(("name".into(), e.name.clone()));
    }
    if kind == "container" {
        attrs.push(("pod".into(), e.pod_id.clone()));
    }
    attrs.sort();
    let attrs: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{} {kind} {} {} ({})", rfc3339_nano(e.time), e.action, e.id, attrs.join(", "))
}

pub async fn run(clients: &Clients, args: &EventsArgs) -> anyhow::Result<()> {
    let kinds = args
        .kinds
        .iter()
        .map(|k| match k {
            EventType::Pod => api::EventKind::Pod,
            EventType::Container => api::EventKind::Container,
            EventType::Image => api::EventKind::Image,
        } as i32)
        .collect();
    let request = api::EventsRequest {
        pod_id: args.pod.clone().unwrap_or_default(),
        container_id: args.container.clone().unwrap_or_default(),
        kinds,
    };
    let mut stream = clients.reef().events(request).await.map_err(|s| status_error("events", s))?.into_inner();
    loop {
        let next = tokio::select! {
            m = stream.message() => m.map_err(|s| status_error("events", s))?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let Some(e) = next else { return Ok(()) };
        let mut out = std::io::stdout().lock();
        match args.output {
            Format::Table => writeln!(out, "{}", line(&e))?,
            _ => writeln!(out, "{}", event_json(&e))?,
        }
        out.flush()?;
    }
}

/// One JSON object per line (`-o json` and `-o yaml` alike: a stream has no document to wrap it in).
fn event_json(e: &api::Event) -> serde_json::Value {
    serde_json::json!({
        "time": e.time,
        "kind": api::EventKind::try_from(e.kind).map(|k| k.as_str_name()).unwrap_or("EVENT_KIND_UNSPECIFIED"),
        "action": e.action,
        "id": e.id,
        "name": e.name,
        "podId": e.pod_id,
        "attributes": e.attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_reads_like_docker_events() {
        let e = api::Event {
            time: 1_764_614_400_123_456_789,
            kind: api::EventKind::Container as i32,
            action: "stopped".into(),
            id: "abc".into(),
            name: "web".into(),
            pod_id: "p1".into(),
            attributes: [("exitCode".to_string(), "3".to_string())].into(),
        };
        assert_eq!(line(&e), "2025-12-01T18:40:00.123456789Z container stopped abc (exitCode=3, name=web, pod=p1)");
    }
}
