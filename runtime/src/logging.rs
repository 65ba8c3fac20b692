//! Container logs in the CRI format kubelet reads: `<RFC3339Nano> <stdout|stderr> <P|F> <message>\n`.
//!
//! Rules, as containerd writes them: a line ending in `\n` is written with tag `F` without its newline; a line
//! longer than `max_line` is cut into `P` chunks followed by a final `F`; data still without a newline when the
//! stream ends is written with `F` (the stream ending completes it, and a reader waiting for `F` would otherwise
//! hold it back forever). Each log line goes out in one write(2), so a concurrent reader never sees half of one.
//! One timestamp serves all lines of one read from the container's pipe: they arrived together, and formatting
//! once per read rather than per line keeps the writer cheap for chatty containers.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::Mode;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("open log {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("write log {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read log {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static [u8] {
        match self {
            Stream::Stdout => b"stdout",
            Stream::Stderr => b"stderr",
        }
    }
}

/// kubelet's default maximum: longer lines are split.
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;

pub struct LogWriter {
    path: Target,
    file: File,
    max_line: usize,
    /// Data of an unfinished line, per stream.
    partial: [Vec<u8>; 2],
    /// Reused for every line so the steady state allocates nothing.
    line: Vec<u8>,
}

/// Where a log file lives. With `dir`, the file is opened below it with `openat2(RESOLVE_BENEATH)`: the pod's log
/// directory is kubelet's, and a symlink inside it (or a path naming `..`) must not send a container's output
/// to a file elsewhere on the node.
#[derive(Debug, Clone)]
pub struct Target {
    dir: Option<PathBuf>,
    path: PathBuf,
}

impl Target {
    pub fn new(dir: Option<PathBuf>, path: PathBuf) -> Target {
        Target { dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open(target: &Target) -> Result<File, LogError> {
    let err = |source| LogError::Open { path: target.path.clone(), source };
    let Some(dir) = &target.dir else {
        return OpenOptions::new().create(true).append(true).mode(0o640).open(&target.path).map_err(err);
    };
    let rel = target.path.strip_prefix(dir).map_err(|_| err(std::io::Error::from_raw_os_error(libc::EXDEV)))?;
    let dir = File::open(dir).map_err(err)?;
    let how = OpenHow::new()
        .flags(OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND | OFlag::O_CLOEXEC | OFlag::O_NOCTTY)
        .mode(Mode::from_bits_truncate(0o640))
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = openat2(&dir, rel, how).map_err(|e| err(std::io::Error::from(e)))?;
    Ok(File::from(fd))
}

/// Readies `rel` (a log file's path relative to `dir`) to be opened below `dir`: its directories are made, each
/// resolved with RESOLVE_BENEATH so a symlink inside `dir` cannot make them elsewhere, and a file already there must
/// not lead out either. Told at CreateContainer, this is the request's mistake rather than a failed launch.
pub fn prepare_beneath(dir: &Path, rel: &Path) -> std::io::Result<()> {
    let beneath = ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS;
    let mut at = File::open(dir)?;
    let parent = rel.parent().unwrap_or(Path::new(""));
    for part in parent.components() {
        let std::path::Component::Normal(name) = part else {
            if part == std::path::Component::CurDir {
                continue;
            }
            return Err(std::io::Error::from_raw_os_error(libc::EXDEV));
        };
        match nix::sys::stat::mkdirat(&at, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let how = OpenHow::new().flags(OFlag::O_DIRECTORY | OFlag::O_PATH | OFlag::O_CLOEXEC).resolve(beneath);
        at = File::from(openat2(&at, name, how)?);
    }
    let Some(file) = rel.file_name() else { return Err(std::io::Error::from_raw_os_error(libc::EISDIR)) };
    match openat2(&at, file, OpenHow::new().flags(OFlag::O_PATH | OFlag::O_CLOEXEC).resolve(beneath)) {
        Ok(_) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl LogWriter {
    pub fn open(path: &Path, max_line: usize) -> Result<LogWriter, LogError> {
        LogWriter::open_target(Target { dir: None, path: path.to_path_buf() }, max_line)
    }

    pub fn open_target(target: Target, max_line: usize) -> Result<LogWriter, LogError> {
        Ok(LogWriter {
            file: open(&target)?,
            path: target,
            max_line: max_line.max(1),
            partial: [Vec::new(), Vec::new()],
            line: Vec::with_capacity(256),
        })
    }

    /// Feeds bytes as read from a container's pipe.
    pub fn write(&mut self, stream: Stream, data: &[u8], now: SystemTime) -> Result<(), LogError> {
        let ts = rfc3339_nano(now);
        let idx = stream as usize;
        let mut rest = data;
        while !rest.is_empty() {
            let room = self.max_line - self.partial[idx].len();
            match rest[..rest.len().min(room)].iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    let mut msg = std::mem::take(&mut self.partial[idx]);
                    msg.extend_from_slice(&rest[..nl]);
                    self.emit(stream, &ts, b'F', &msg)?;
                    msg.clear();
                    self.partial[idx] = msg;
                    rest = &rest[nl + 1..];
                }
                None if rest.len() >= room => {
                    // The line is at its maximum length: out it goes as a partial chunk.
                    let mut msg = std::mem::take(&mut self.partial[idx]);
                    msg.extend_from_slice(&rest[..room]);
                    self.emit(stream, &ts, b'P', &msg)?;
                    msg.clear();
                    self.partial[idx] = msg;
                    rest = &rest[room..];
                }
                None => {
                    self.partial[idx].extend_from_slice(rest);
                    rest = &[];
                }
            }
        }
        Ok(())
    }

    /// At the container's exit: what is left of unfinished lines, then fsync.
    pub fn flush_partial(&mut self, now: SystemTime) -> Result<(), LogError> {
        let ts = rfc3339_nano(now);
        for stream in [Stream::Stdout, Stream::Stderr] {
            let msg = std::mem::take(&mut self.partial[stream as usize]);
            if !msg.is_empty() {
                self.emit(stream, &ts, b'F', &msg)?;
            }
        }
        self.sync()
    }

    /// ReopenContainerLog: kubelet renamed the file to rotate it; continue in a new file at the same path.
    /// Unfinished lines stay buffered and come out whole in the new file.
    pub fn reopen(&mut self) -> Result<(), LogError> {
        let _ = self.file.sync_data();
        self.file = open(&self.path)?;
        Ok(())
    }

    pub fn sync(&mut self) -> Result<(), LogError> {
        self.file.sync_data().map_err(|source| LogError::Write { path: self.path.path.clone(), source })
    }

    fn emit(&mut self, stream: Stream, ts: &str, tag: u8, msg: &[u8]) -> Result<(), LogError> {
        self.line.clear();
        self.line.extend_from_slice(ts.as_bytes());
        self.line.push(b' ');
        self.line.extend_from_slice(stream.name());
        self.line.push(b' ');
        self.line.push(tag);
        self.line.push(b' ');
        self.line.extend_from_slice(msg);
        self.line.push(b'\n');
        self.file.write_all(&self.line).map_err(|source| LogError::Write { path: self.path.path.clone(), source })
    }
}

/// Go's `time.RFC3339Nano` in UTC, exactly: the fraction loses its trailing zeros, and vanishes when zero.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    let mut s = format!("{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    let nanos = d.subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub timestamp: String,
    pub stream: Stream,
    pub partial: bool,
    pub message: Vec<u8>,
}

pub fn parse_line(line: &[u8]) -> Option<LogLine> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut parts = line.splitn(4, |&b| b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let stream = match parts.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match parts.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(LogLine { timestamp, stream, partial, message: parts.next().unwrap_or_default().to_vec() })
}

/// The last `n` logical lines (P chunks joined with their F), reading the file backwards in blocks.
pub fn tail(path: &Path, n: usize) -> Result<Vec<LogLine>, LogError> {
    let read_err = |source| LogError::Read { path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(read_err)?;
    let len = file.seek(SeekFrom::End(0)).map_err(read_err)?;
    const BLOCK: u64 = 64 * 1024;
    let mut pos = len;
    let mut buf: Vec<u8> = Vec::new();
    // Read until the buffer holds more than n full (F) lines, or the file start.
    while pos > 0 && buf.iter().filter(|&&b| b == b'\n').count() <= n * 2 + 1 {
        let start = pos.saturating_sub(BLOCK);
        let mut block = vec![0u8; (pos - start) as usize];
        file.seek(SeekFrom::Start(start)).map_err(read_err)?;
        file.read_exact(&mut block).map_err(read_err)?;
        block.extend_from_slice(&buf);
        buf = block;
        pos = start;
        let full = buf.split(|&b| b == b'\n').filter_map(parse_line).filter(|l| !l.partial).count();
        if full > n {
            break;
        }
    }
    let mut lines: Vec<LogLine> = Vec::new();
    let mut pending: Option<LogLine> = None;
    let mut raw = buf.split(|&b| b == b'\n').peekable();
    // Skip a first line cut by the block boundary.
    if pos > 0 {
        raw.next();
    }
    for l in raw.filter_map(parse_line) {
        match pending.as_mut() {
            Some(p) if p.stream == l.stream => p.message.extend_from_slice(&l.message),
            _ => pending = Some(LogLine { message: l.message.clone(), ..l.clone() }),
        }
        if !l.partial
            && let Some(mut done) = pending.take()
        {
            done.partial = false;
            lines.push(done);
        }
    }
    let skip = lines.len().saturating_sub(n);
    Ok(lines.split_off(skip))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    fn read(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path).unwrap().lines().map(|l| l.split_once(' ').unwrap().1.to_string()).collect()
    }

    #[test]
    fn timestamps_match_go_rfc3339_nano() {
        assert_eq!(rfc3339_nano(at(0, 0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_nano(at(1_795_403_058, 123_456_789)), "2026-11-23T03:04:18.123456789Z");
        assert_eq!(rfc3339_nano(at(1_795_403_058, 120_000_000)), "2026-11-23T03:04:18.12Z");
        assert_eq!(rfc3339_nano(at(951_782_400, 1)), "2000-02-29T00:00:00.000000001Z", "leap day");
        assert_eq!(rfc3339_nano(at(4_102_444_800, 0)), "2100-01-01T00:00:00Z", "after 2038");
    }

    #[test]
    fn full_lines_partial_lines_and_splits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::open(&path, 8).unwrap();
        w.write(Stream::Stdout, b"one\ntwo\nthr", at(1, 0)).unwrap();
        w.write(Stream::Stderr, b"err", at(1, 0)).unwrap();
        w.write(Stream::Stdout, b"ee\n", at(2, 0)).unwrap();
        w.write(Stream::Stdout, b"0123456789abcdefXY\n", at(3, 0)).unwrap();
        w.write(Stream::Stderr, b"!\n", at(3, 0)).unwrap();
        w.write(Stream::Stdout, b"tail", at(4, 0)).unwrap();
        w.flush_partial(at(5, 0)).unwrap();
        assert_eq!(
            read(&path),
            [
                "stdout F one",
                "stdout F two",
                "stdout F three",
                "stdout P 01234567",
                "stdout P 89abcdef",
                "stdout F XY",
                "stderr F err!",
                "stdout F tail",
            ]
        );
    }

    #[test]
    fn log_files_never_open_outside_the_pod_s_directory() {
        let outside = tempfile::tempdir().unwrap();
        let pod = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), pod.path().join("evil")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f.log"), pod.path().join("link.log")).unwrap();
        for rel in ["evil/0.log", "evil/sub/0.log", "link.log", "../x.log"] {
            assert!(prepare_beneath(pod.path(), Path::new(rel)).is_err(), "{rel} was readied");
            let target = Target::new(Some(pod.path().to_path_buf()), pod.path().join(rel));
            assert!(LogWriter::open_target(target, 8).is_err(), "{rel} was opened");
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing was made outside");
        prepare_beneath(pod.path(), Path::new("app/0.log")).unwrap();
        let target = Target::new(Some(pod.path().to_path_buf()), pod.path().join("app/0.log"));
        LogWriter::open_target(target, 8).unwrap();
        assert!(pod.path().join("app/0.log").is_file());
    }

    #[test]
    fn reopening_after_rotation_loses_and_splits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::open(&path, DEFAULT_MAX_LINE).unwrap();
        w.write(Stream::Stdout, b"before\nhal", at(1, 0)).unwrap();
        std::fs::rename(&path, dir.path().join("c.log.1")).unwrap();
        w.reopen().unwrap();
        w.write(Stream::Stdout, b"f\nafter\n", at(2, 0)).unwrap();
        assert_eq!(read(&dir.path().join("c.log.1")), ["stdout F before"]);
        assert_eq!(read(&path), ["stdout F half", "stdout F after"]);
    }

    #[test]
    fn lines_parse_back_and_tail_joins_partials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::open(&path, 4).unwrap();
        for i in 0..100 {
            w.write(Stream::Stdout, format!("line{i}\n").as_bytes(), at(1, 5)).unwrap();
        }
        let parsed = parse_line(b"2026-11-23T00:10:58.1Z stderr P a b c\n").unwrap();
        assert_eq!((parsed.stream, parsed.partial, parsed.message.as_slice()), (Stream::Stderr, true, &b"a b c"[..]));
        assert!(parse_line(b"garbage").is_none());
        let last = tail(&path, 3).unwrap();
        let text: Vec<String> = last.iter().map(|l| String::from_utf8_lossy(&l.message).into_owned()).collect();
        assert_eq!(text, ["line97", "line98", "line99"]);
        assert_eq!(tail(&path, 1000).unwrap().len(), 100);
        let empty = dir.path().join("empty.log");
        std::fs::write(&empty, b"").unwrap();
        assert!(tail(&empty, 5).unwrap().is_empty());
    }
}
