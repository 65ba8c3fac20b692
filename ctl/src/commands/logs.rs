//! `rctl logs`: reads the container's CRI log file on this node (rctl runs where the containers run).

use std::io::Write;

use k8s_cri::v1 as cri;

use crate::cli::LogsArgs;
use crate::client::{Clients, status_error};

pub async fn run(clients: &Clients, args: &LogsArgs) -> anyhow::Result<()> {
    let status = clients
        .runtime()
        .container_status(cri::ContainerStatusRequest { container_id: args.container.clone(), verbose: false })
        .await
        .map_err(|s| status_error(&format!("logs {}", args.container), s))?
        .into_inner()
        .status
        .ok_or_else(|| anyhow::anyhow!("no such container: {}", args.container))?;
    if status.log_path.is_empty() {
        anyhow::bail!("container {} has no log file", args.container);
    }
    let text = std::fs::read(&status.log_path).map_err(|e| anyhow::anyhow!("read {}: {e}", status.log_path))?;
    let lines = join_lines(&text);
    let start = args.tail.map(|n| lines.len().saturating_sub(n)).unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for (ts, msg) in &lines[start..] {
        if args.timestamps {
            out.write_all(ts.as_bytes())?;
            out.write_all(b" ")?;
        }
        out.write_all(msg)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Logical lines from CRI log lines: `P` chunks joined up to their `F`.
fn join_lines(text: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending: Option<(String, Vec<u8>)> = None;
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(4, |&b| b == b' ');
        let (Some(ts), Some(_stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let msg = parts.next().unwrap_or_default();
        let entry = pending.get_or_insert_with(|| (String::from_utf8_lossy(ts).into_owned(), Vec::new()));
        entry.1.extend_from_slice(msg);
        if tag != b"P" {
            out.extend(pending.take());
        }
    }
    out.extend(pending);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_chunks_join_their_full_line() {
        let text = b"t1 stdout P ab\nt2 stdout F cd\nt3 stderr F e f\n";
        let lines = join_lines(text);
        assert_eq!(lines, vec![("t1".to_string(), b"abcd".to_vec()), ("t3".to_string(), b"e f".to_vec())]);
    }
}
