//! `rctl logs`: reads the container's CRI log file on this node (rctl runs where the containers run). Lines the
//! container wrote to stderr go to stderr, like `docker logs`. With `-f` it keeps reading as the monitor appends,
//! follows kubelet's rotations (a new file at the same path), and ends once the container has exited and every
//! line it wrote is out.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use k8s_cri::v1 as cri;

use crate::cli::LogsArgs;
use crate::client::{Clients, status_error};

pub async fn run(clients: &Clients, args: &LogsArgs) -> anyhow::Result<()> {
    let id = crate::resolve::container(clients, &args.container).await?;
    let status = container_status(clients, &id).await?;
    if status.log_path.is_empty() {
        anyhow::bail!("container {} has no log file", args.container);
    }
    let options = Options { tail: args.tail, timestamps: args.timestamps };
    if args.follow {
        follow(clients, &status.id, Path::new(&status.log_path), options).await
    } else {
        let text = std::fs::read(&status.log_path).map_err(|e| anyhow::anyhow!("read {}: {e}", status.log_path))?;
        let mut joiner = Joiner::default();
        let mut lines: Vec<Line> = text.split(|&b| b == b'\n').filter_map(|l| joiner.push(l)).collect();
        lines.extend(joiner.pending.take());
        print_lines(&lines, options.tail, options.timestamps)
    }
}

async fn container_status(clients: &Clients, id: &str) -> anyhow::Result<cri::ContainerStatus> {
    clients
        .runtime()
        .container_status(cri::ContainerStatusRequest { container_id: id.to_string(), verbose: false })
        .await
        .map_err(|s| status_error(&format!("logs {id}"), s))?
        .into_inner()
        .status
        .ok_or_else(|| anyhow::anyhow!("no such container: {id}"))
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub tail: Option<usize>,
    pub timestamps: bool,
}

/// One logical line: its timestamp, whether it came from stderr, and the text without its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub timestamp: String,
    pub stderr: bool,
    pub text: Vec<u8>,
}

/// Joins CRI log lines into logical lines: `P` chunks are held until their `F`.
#[derive(Default)]
pub struct Joiner {
    pending: Option<Line>,
}

impl Joiner {
    /// One CRI log line (without its newline); a logical line when this one completes it.
    pub fn push(&mut self, line: &[u8]) -> Option<Line> {
        let mut parts = line.splitn(4, |&b| b == b' ');
        let (Some(ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else { return None };
        let msg = parts.next().unwrap_or_default();
        let entry = self.pending.get_or_insert_with(|| Line {
            timestamp: String::from_utf8_lossy(ts).into_owned(),
            stderr: stream == b"stderr",
            text: Vec::new(),
        });
        entry.text.extend_from_slice(msg);
        if tag == b"P" { None } else { self.pending.take() }
    }
}

fn print_lines(lines: &[Line], tail: Option<usize>, timestamps: bool) -> anyhow::Result<()> {
    let start = tail.map(|n| lines.len().saturating_sub(n)).unwrap_or(0);
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    for line in &lines[start..] {
        let w: &mut dyn Write = if line.stderr { &mut err } else { &mut out };
        if timestamps {
            w.write_all(line.timestamp.as_bytes())?;
            w.write_all(b" ")?;
        }
        w.write_all(&line.text)?;
        w.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Reads a growing log file from an offset, handing out complete CRI lines.
struct Tail {
    file: Option<std::fs::File>,
    inode: u64,
    offset: u64,
    partial: Vec<u8>,
}

impl Tail {
    fn new() -> Tail {
        Tail { file: None, inode: 0, offset: 0, partial: Vec::new() }
    }

    /// Everything appended since the last read, as complete lines. Reopens the path when kubelet rotated it
    /// (another inode there, or the file got shorter), after reading what was left in the old one.
    fn read(&mut self, path: &Path) -> std::io::Result<Vec<Vec<u8>>> {
        let mut lines = Vec::new();
        if self.file.is_none() {
            match std::fs::File::open(path) {
                Ok(f) => {
                    self.inode = f.metadata()?.ino();
                    self.file = Some(f);
                    self.offset = 0;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(lines),
                Err(e) => return Err(e),
            }
        }
        self.drain(&mut lines)?;
        let rotated = match std::fs::metadata(path) {
            Ok(m) => m.ino() != self.inode || m.len() < self.offset,
            Err(_) => false,
        };
        if rotated {
            self.file = None;
            self.partial.clear();
            lines.extend(self.read(path)?);
        }
        Ok(lines)
    }

    fn drain(&mut self, lines: &mut Vec<Vec<u8>>) -> std::io::Result<()> {
        let Some(f) = self.file.as_mut() else { return Ok(()) };
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::new();
        let n = f.read_to_end(&mut buf)?;
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        // Each log line is one write(2): only the last one can be incomplete.
        while let Some(i) = self.partial.iter().position(|&b| b == b'\n') {
            let rest = self.partial.split_off(i + 1);
            let mut line = std::mem::replace(&mut self.partial, rest);
            line.pop();
            lines.push(line);
        }
        Ok(())
    }
}

/// Prints the log and what is appended to it until the container has exited and its last line is out.
pub async fn follow(clients: &Clients, id: &str, path: &Path, options: Options) -> anyhow::Result<()> {
    let mut tail = Tail::new();
    let mut joiner = Joiner::default();
    let mut first = true;
    loop {
        let running = is_running(clients, id).await?;
        // Read after asking: a container that was not running any more has written everything by now.
        let chunk = tail.read(path).map_err(|e| anyhow::anyhow!("read {}: {e}", path.display()))?;
        let lines: Vec<Line> = chunk.iter().filter_map(|l| joiner.push(l)).collect();
        print_lines(&lines, if first { options.tail } else { None }, options.timestamps)?;
        first = false;
        if !running {
            if let Some(rest) = joiner.pending.take() {
                print_lines(&[rest], None, options.timestamps)?;
            }
            return Ok(());
        }
        if chunk.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn is_running(clients: &Clients, id: &str) -> anyhow::Result<bool> {
    let s = container_status(clients, id).await?;
    let state = cri::ContainerState::try_from(s.state).unwrap_or(cri::ContainerState::ContainerUnknown);
    Ok(matches!(state, cri::ContainerState::ContainerRunning | cri::ContainerState::ContainerCreated))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_chunks_join_their_full_line() {
        let mut j = Joiner::default();
        let lines: Vec<Line> =
            [&b"t1 stdout P ab"[..], b"t2 stdout F cd", b"t3 stderr F e f"].iter().filter_map(|l| j.push(l)).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[0].timestamp.as_str(), lines[0].text.as_slice(), lines[0].stderr),
            ("t1", &b"abcd"[..], false)
        );
        assert_eq!((lines[1].text.as_slice(), lines[1].stderr), (&b"e f"[..], true));
    }

    #[test]
    fn the_tail_reads_what_is_appended_and_follows_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut t = Tail::new();
        assert!(t.read(&path).unwrap().is_empty(), "no file yet is no line yet");
        std::fs::write(&path, b"t stdout F one\nt stdout F tw").unwrap();
        assert_eq!(t.read(&path).unwrap(), [b"t stdout F one".to_vec()]);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"o\n").unwrap();
        assert_eq!(t.read(&path).unwrap(), [b"t stdout F two".to_vec()]);
        std::fs::rename(&path, dir.path().join("0.log.1")).unwrap();
        std::fs::write(&path, b"t stdout F three\n").unwrap();
        assert_eq!(t.read(&path).unwrap(), [b"t stdout F three".to_vec()]);
    }
}
