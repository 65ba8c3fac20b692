//! A minimal SPDY/3.1 client, written from the spec (and from what client-go's spdystream sends), to drive the
//! streaming server the way kubelet and crictl do: an HTTP upgrade, then SYN_STREAMs with `streamType` headers,
//! waiting for each SYN_REPLY, data frames both ways, FIN to half-close. Independent of reefd's own framing code
//! on purpose: the two meet only on the wire.

use std::collections::HashMap;
use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DICT_HEAD: &[u8] = b"\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post";

/// The SPDY/3 dictionary, from the same bytes the server embeds (checked against its Adler-32 in the server's
/// unit tests); the client refuses to start if the head differs from the spec's.
fn dictionary() -> &'static [u8] {
    let d: &'static [u8] = include_bytes!("../../node-agent/src/streaming/spdy3.dict");
    assert!(d.starts_with(DICT_HEAD) && d.len() == 1423, "not the SPDY/3 dictionary");
    d
}

#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Control { kind: u16, flags: u8, payload: Vec<u8>, headers: Vec<(String, String)> },
    Data { stream: u32, fin: bool, data: Vec<u8> },
}

pub struct Client {
    tcp: TcpStream,
    enc: Compress,
    dec: Decompress,
    next_id: u32,
    /// Frames read while waiting for something else.
    pub backlog: std::collections::VecDeque<Frame>,
}

/// Splits `http://host:port/path` into the address and the path.
pub fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let slash = rest.find('/').unwrap_or(rest.len());
    (rest[..slash].to_string(), rest[slash..].to_string())
}

/// Sends a plain HTTP/1.1 request with `headers` and reads the response head (and, unless 101, the body).
pub async fn request(url: &str, method: &str, headers: &[(&str, &str)]) -> (TcpStream, HttpReply) {
    let (addr, path) = split_url(url);
    let mut tcp = TcpStream::connect(&addr).await.expect("connect to the streaming server");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("Content-Length: 0\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("send request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await.expect("read response") == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_string(), v.trim().to_string())).collect();
    let mut reply = HttpReply { status, headers, body: String::new() };
    if status != 101 {
        let len = reply.header("content-length").and_then(|l| l.parse::<usize>().ok()).unwrap_or(0);
        let mut body = vec![0u8; len];
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut body)).await;
        reply.body = String::from_utf8_lossy(&body).into_owned();
    }
    (tcp, reply)
}

impl Client {
    /// Upgrades to SPDY/3.1 offering `protocols` in X-Stream-Protocol-Version. `Err` is the refusal.
    pub async fn connect(url: &str, protocols: &[&str]) -> Result<(Client, HttpReply), HttpReply> {
        let mut headers = vec![("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")];
        for p in protocols {
            headers.push(("X-Stream-Protocol-Version", p));
        }
        let (tcp, reply) = request(url, "POST", &headers).await;
        if reply.status != 101 {
            return Err(reply);
        }
        let mut enc = Compress::new(Compression::best(), true);
        enc.set_dictionary(dictionary()).expect("set the dictionary");
        let client = Client { tcp, enc, dec: Decompress::new(true), next_id: 1, backlog: Default::default() };
        Ok((client, reply))
    }

    fn header_block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (n, v) in headers {
            for part in [n.to_ascii_lowercase().into_bytes(), v.as_bytes().to_vec()] {
                raw.extend_from_slice(&(part.len() as u32).to_be_bytes());
                raw.extend_from_slice(&part);
            }
        }
        let mut out = Vec::with_capacity(raw.len() * 2 + 64);
        self.enc.compress_vec(&raw, &mut out, FlushCompress::Sync).expect("compress");
        out
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tcp.write_all(bytes).await
    }

    /// SYN_STREAM with `headers`, then waits for its SYN_REPLY (as spdystream's CreateStream does).
    pub async fn open(&mut self, headers: &[(&str, &str)]) -> Result<u32, String> {
        let id = self.next_id;
        self.next_id += 2;
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend_from_slice(&0u32.to_be_bytes());
        payload.extend_from_slice(&[0, 0]);
        payload.extend(self.header_block(headers));
        self.control(1, 0, &payload).await.map_err(|e| e.to_string())?;
        loop {
            match self.read_frame_inner().await {
                Some(Frame::Control { kind: 2, payload, .. }) if be32(&payload[..4]) == id => return Ok(id),
                Some(Frame::Control { kind: 3, payload, .. }) if be32(&payload[..4]) == id => {
                    return Err(format!("stream {id} reset with status {}", be32(&payload[4..8])));
                }
                Some(other) => self.backlog.push_back(other),
                None => return Err("connection closed".into()),
            }
        }
    }

    async fn control(&mut self, kind: u16, flags: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut f = (0x8003u16).to_be_bytes().to_vec();
        f.extend_from_slice(&kind.to_be_bytes());
        f.push(flags);
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(payload);
        self.tcp.write_all(&f).await
    }

    pub async fn send(&mut self, stream: u32, data: &[u8], fin: bool) -> std::io::Result<()> {
        let mut f = stream.to_be_bytes().to_vec();
        f.push(fin as u8);
        f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        f.extend_from_slice(data);
        self.tcp.write_all(&f).await
    }

    pub async fn ping(&mut self, id: u32) -> std::io::Result<()> {
        self.control(6, 0, &id.to_be_bytes()).await
    }

    /// The next frame (backlog first); `None` when the connection ended.
    pub async fn next(&mut self) -> Option<Frame> {
        if let Some(f) = self.backlog.pop_front() {
            return Some(f);
        }
        self.read_frame_inner().await
    }

    async fn read_frame_inner(&mut self) -> Option<Frame> {
        let mut head = [0u8; 8];
        self.tcp.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let mut payload = vec![0u8; len];
        self.tcp.read_exact(&mut payload).await.ok()?;
        if head[0] & 0x80 == 0 {
            return Some(Frame::Data { stream: be32(&head[..4]) & 0x7fff_ffff, fin: head[4] & 1 == 1, data: payload });
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let headers = match kind {
            1 => self.decode(&payload[10..]),
            2 | 8 => self.decode(&payload[4..]),
            _ => Vec::new(),
        };
        Some(Frame::Control { kind, flags: head[4], payload, headers })
    }

    fn decode(&mut self, block: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::with_capacity(4096);
        let before = self.dec.total_in();
        if let Err(e) = self.dec.decompress_vec(block, &mut out, FlushDecompress::Sync) {
            assert!(e.needs_dictionary().is_some(), "bad header block: {e}");
            self.dec.set_dictionary(dictionary()).expect("dictionary");
            let used = (self.dec.total_in() - before) as usize;
            self.dec.decompress_vec(&block[used..], &mut out, FlushDecompress::Sync).expect("decompress");
        }
        let mut pos = 4;
        let n = be32(&out[..4]) as usize;
        let mut headers = Vec::new();
        for _ in 0..n {
            let mut field = || {
                let l = be32(&out[pos..pos + 4]) as usize;
                let s = String::from_utf8_lossy(&out[pos + 4..pos + 4 + l]).into_owned();
                pos += 4 + l;
                s
            };
            let name = field();
            let value = field();
            headers.push((name, value));
        }
        headers
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// What a remotecommand session produced, per stream, until the server closed the connection.
#[derive(Debug, Default)]
pub struct Collected {
    pub data: HashMap<u32, Vec<u8>>,
    pub fin: Vec<u32>,
    pub goaway: bool,
}

/// Reads frames until the connection ends (or `timeout`), answering nothing.
pub async fn collect(client: &mut Client, timeout: Duration) -> Collected {
    let mut c = Collected::default();
    let _ = tokio::time::timeout(timeout, async {
        while let Some(f) = client.next().await {
            match f {
                Frame::Data { stream, fin, data } => {
                    c.data.entry(stream).or_default().extend(data);
                    if fin {
                        c.fin.push(stream);
                    }
                }
                Frame::Control { kind: 7, .. } => c.goaway = true,
                Frame::Control { .. } => {}
            }
        }
    })
    .await;
    c
}
