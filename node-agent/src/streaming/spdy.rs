//! SPDY/3.1 framing and the server side of a SPDY connection, as far as Kubernetes' streaming protocols use it
//! (what moby/spdystream speaks for kubelet, crictl and the API server).
//!
//! No Rust crate speaks SPDY/3.1 any more, so this is written against the spec (chromium's
//! spdy-protocol-draft3-1): 8-byte frame headers, header blocks of length-prefixed name/value pairs compressed by
//! one zlib stream per direction with the SPDY/3 preset dictionary, flushed (sync) after every block.
//!
//! Flow control: spdystream neither sends WINDOW_UPDATE nor honours the window, so neither does this side; memory
//! stays bounded because frames are read one at a time and each stream's channel is bounded: a stream whose
//! consumer is slow stops the reader, and TCP pushes back on the client.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::Activity;

/// The SPDY/3 header compression dictionary (1423 bytes, from the spec).
const DICTIONARY: &[u8] = include_bytes!("spdy3.dict");

pub const VERSION: u16 = 3;
const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;
pub const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status codes used here.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;

/// The largest frame accepted from a client. spdystream writes one frame per Write call (io.Copy's 32 KiB); a
/// bigger frame is refused rather than buffered.
pub const MAX_FRAME: usize = 1 << 20;
/// Decompressed header blocks beyond this are refused (a compression bomb would otherwise cost memory).
const MAX_HEADER_BLOCK: usize = 64 << 10;

/// Header names are lowercase; a value holding several values separates them with NUL.
pub type Headers = Vec<(String, String)>;

pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.split('\0').next().unwrap_or_default())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame type this side does not know (the spec says: ignore it).
    Unknown {
        kind: u16,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is larger than the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("malformed {0} frame")]
    Malformed(&'static str),
    #[error("header block: {0}")]
    HeaderBlock(String),
}

/// Compresses outgoing header blocks: one zlib stream for the whole connection.
pub struct HeaderEncoder {
    z: Compress,
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderEncoder {
    pub fn new() -> HeaderEncoder {
        let mut z = Compress::new(Compression::default(), true);
        // Never fails on a fresh stream; if it ever did, the peer would fail to decode and say so.
        let _ = z.set_dictionary(DICTIONARY);
        HeaderEncoder { z }
    }

    fn encode(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            for part in [name.as_bytes(), value.as_bytes()] {
                raw.extend_from_slice(&(part.len() as u32).to_be_bytes());
                raw.extend_from_slice(part);
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut consumed = 0;
        loop {
            out.reserve(256);
            let before_in = self.z.total_in();
            self.z
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::HeaderBlock(e.to_string()))?;
            consumed += (self.z.total_in() - before_in) as usize;
            // A sync flush is complete once all input is taken and the output buffer was not filled up.
            if consumed == raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// Decompresses incoming header blocks: one zlib stream for the whole connection.
pub struct HeaderDecoder {
    z: Decompress,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecoder {
    pub fn new() -> HeaderDecoder {
        HeaderDecoder { z: Decompress::new(true) }
    }

    fn decode(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let bad = |m: &str| SpdyError::HeaderBlock(m.to_string());
        let mut out = Vec::with_capacity(256);
        let mut consumed = 0;
        loop {
            if out.len() >= MAX_HEADER_BLOCK {
                return Err(bad("too large"));
            }
            out.reserve(1024.min(MAX_HEADER_BLOCK - out.len()).max(1));
            let (before_in, before_out) = (self.z.total_in(), out.len());
            let result = self.z.decompress_vec(&block[consumed..], &mut out, FlushDecompress::Sync);
            consumed += (self.z.total_in() - before_in) as usize;
            match result {
                Ok(Status::StreamEnd) => return Err(bad("the zlib stream ended")),
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z.set_dictionary(DICTIONARY).map_err(|e| SpdyError::HeaderBlock(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(SpdyError::HeaderBlock(e.to_string())),
            }
            if consumed == block.len() && out.len() < out.capacity() {
                break;
            }
            if consumed == block.len() && out.len() == before_out {
                break;
            }
        }
        parse_header_block(&out)
    }
}

fn parse_header_block(raw: &[u8]) -> Result<Headers, SpdyError> {
    let bad = || SpdyError::HeaderBlock("truncated".into());
    let mut pos = 0;
    let mut take = |n: usize| -> Result<&[u8], SpdyError> {
        let s = raw.get(pos..pos + n).ok_or_else(bad)?;
        pos += n;
        Ok(s)
    };
    let u32_at = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = u32_at(take(4)?);
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let n = u32_at(take(4)?);
        let name = String::from_utf8_lossy(take(n)?).into_owned();
        let n = u32_at(take(4)?);
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(SpdyError::HeaderBlock(format!("header name {name:?} is empty or not lowercase")));
        }
        headers.push((name, value));
    }
    Ok(headers)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads one frame. `Ok(None)` is a clean end of the connection between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, dec: &mut HeaderDecoder) -> Result<Option<Frame>, SpdyError> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    r.read_exact(&mut head[1..]).await?;
    let flags = head[4];
    let len = (u32::from_be_bytes([0, head[5], head[6], head[7]])) as usize;
    if len > MAX_FRAME {
        return Err(SpdyError::TooLarge(len));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    if head[0] & 0x80 == 0 {
        let stream_id = be32(&head[..4]) & 0x7fff_ffff;
        return Ok(Some(Frame::Data { stream_id, flags, data: payload.into() }));
    }
    let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
    if version != VERSION {
        return Err(SpdyError::Version(version));
    }
    let kind = u16::from_be_bytes([head[2], head[3]]);
    let need = |n: usize, what: &'static str| if len < n { Err(SpdyError::Malformed(what)) } else { Ok(()) };
    let p = &payload;
    let frame = match kind {
        TYPE_SYN_STREAM => {
            need(10, "SYN_STREAM")?;
            Frame::SynStream {
                stream_id: be32(&p[0..4]) & 0x7fff_ffff,
                associated: be32(&p[4..8]) & 0x7fff_ffff,
                priority: p[8] >> 5,
                flags,
                headers: dec.decode(&p[10..])?,
            }
        }
        TYPE_SYN_REPLY => {
            need(4, "SYN_REPLY")?;
            Frame::SynReply { stream_id: be32(&p[0..4]) & 0x7fff_ffff, flags, headers: dec.decode(&p[4..])? }
        }
        TYPE_HEADERS => {
            need(4, "HEADERS")?;
            Frame::Headers { stream_id: be32(&p[0..4]) & 0x7fff_ffff, flags, headers: dec.decode(&p[4..])? }
        }
        TYPE_RST_STREAM => {
            need(8, "RST_STREAM")?;
            Frame::RstStream { stream_id: be32(&p[0..4]) & 0x7fff_ffff, status: be32(&p[4..8]) }
        }
        TYPE_SETTINGS => {
            need(4, "SETTINGS")?;
            let n = be32(&p[0..4]) as usize;
            if len != 4 + n * 8 {
                return Err(SpdyError::Malformed("SETTINGS"));
            }
            let entries = (0..n)
                .map(|i| {
                    let e = &p[4 + i * 8..12 + i * 8];
                    (e[0], u32::from_be_bytes([0, e[1], e[2], e[3]]), be32(&e[4..8]))
                })
                .collect();
            Frame::Settings { flags, entries }
        }
        TYPE_PING => {
            need(4, "PING")?;
            Frame::Ping { id: be32(&p[0..4]) }
        }
        TYPE_GOAWAY => {
            need(4, "GOAWAY")?;
            // SPDY/3 had no status; 3.1 adds it.
            let status = if len >= 8 { be32(&p[4..8]) } else { 0 };
            Frame::GoAway { last_good: be32(&p[0..4]) & 0x7fff_ffff, status }
        }
        TYPE_WINDOW_UPDATE => {
            need(8, "WINDOW_UPDATE")?;
            Frame::WindowUpdate { stream_id: be32(&p[0..4]) & 0x7fff_ffff, delta: be32(&p[4..8]) & 0x7fff_ffff }
        }
        kind => Frame::Unknown { kind },
    };
    Ok(Some(frame))
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(payload);
    out
}

/// Serializes a frame (header blocks through `enc`, which must see every block in wire order).
pub fn encode_frame(frame: &Frame, enc: &mut HeaderEncoder) -> Result<Vec<u8>, SpdyError> {
    let id = |v: u32| (v & 0x7fff_ffff).to_be_bytes();
    Ok(match frame {
        Frame::Data { stream_id, flags, data } => {
            let mut out = Vec::with_capacity(8 + data.len());
            out.extend_from_slice(&id(*stream_id));
            out.push(*flags);
            out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            out.extend_from_slice(data);
            out
        }
        Frame::SynStream { stream_id, associated, priority, flags, headers } => {
            let mut p = Vec::new();
            p.extend_from_slice(&id(*stream_id));
            p.extend_from_slice(&id(*associated));
            p.push(priority << 5);
            p.push(0);
            p.extend(enc.encode(headers)?);
            control(TYPE_SYN_STREAM, *flags, &p)
        }
        Frame::SynReply { stream_id, flags, headers } => {
            let mut p = id(*stream_id).to_vec();
            p.extend(enc.encode(headers)?);
            control(TYPE_SYN_REPLY, *flags, &p)
        }
        Frame::Headers { stream_id, flags, headers } => {
            let mut p = id(*stream_id).to_vec();
            p.extend(enc.encode(headers)?);
            control(TYPE_HEADERS, *flags, &p)
        }
        Frame::RstStream { stream_id, status } => {
            let mut p = id(*stream_id).to_vec();
            p.extend_from_slice(&status.to_be_bytes());
            control(TYPE_RST_STREAM, 0, &p)
        }
        Frame::Settings { flags, entries } => {
            let mut p = (entries.len() as u32).to_be_bytes().to_vec();
            for (f, i, v) in entries {
                p.push(*f);
                p.extend_from_slice(&i.to_be_bytes()[1..]);
                p.extend_from_slice(&v.to_be_bytes());
            }
            control(TYPE_SETTINGS, *flags, &p)
        }
        Frame::Ping { id: ping } => control(TYPE_PING, 0, &ping.to_be_bytes()),
        Frame::GoAway { last_good, status } => {
            let mut p = id(*last_good).to_vec();
            p.extend_from_slice(&status.to_be_bytes());
            control(TYPE_GOAWAY, 0, &p)
        }
        Frame::WindowUpdate { stream_id, delta } => {
            let mut p = id(*stream_id).to_vec();
            p.extend_from_slice(&id(*delta));
            control(TYPE_WINDOW_UPDATE, 0, &p)
        }
        Frame::Unknown { .. } => return Err(SpdyError::Malformed("unknown")),
    })
}

/// A stream the client opened. Its data arrives on `data` until the client half-closes (FIN) or resets it.
pub struct IncomingStream {
    pub id: u32,
    pub headers: Headers,
    pub data: mpsc::Receiver<Bytes>,
}

/// What the connection's writer task is asked to send.
enum Out {
    Frame(Frame),
    /// Sends GOAWAY, flushes and shuts the connection down.
    Close,
}

/// A handle to send on the connection; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Out>,
}

impl Writer {
    /// False once the connection is gone.
    pub async fn data(&self, stream_id: u32, data: Bytes) -> bool {
        self.tx.send(Out::Frame(Frame::Data { stream_id, flags: 0, data })).await.is_ok()
    }

    /// Half-closes our side of a stream (an empty DATA frame with FIN, as spdystream does).
    pub async fn fin(&self, stream_id: u32) -> bool {
        self.tx.send(Out::Frame(Frame::Data { stream_id, flags: FLAG_FIN, data: Bytes::new() })).await.is_ok()
    }

    pub async fn reply(&self, stream_id: u32) -> bool {
        self.tx.send(Out::Frame(Frame::SynReply { stream_id, flags: 0, headers: Vec::new() })).await.is_ok()
    }

    pub async fn reset(&self, stream_id: u32, status: u32) -> bool {
        self.tx.send(Out::Frame(Frame::RstStream { stream_id, status })).await.is_ok()
    }

    /// GOAWAY, then the connection closes once everything queued before it is written.
    pub async fn close(&self) {
        let _ = self.tx.send(Out::Close).await;
    }
}

/// The server side of an upgraded connection: streams the client opens come out of `streams`; `gone` resolves
/// when the connection ends for any reason (client gone, idle timeout, protocol error, our close).
pub struct Connection {
    pub streams: mpsc::Receiver<IncomingStream>,
    pub writer: Writer,
    pub gone: oneshot::Receiver<()>,
}

/// Per-stream data channels hold this many frames before the reader waits for their consumer.
const STREAM_BUFFER: usize = 8;

/// Serves SPDY on `io` (after the HTTP upgrade): a reader task and a writer task, both ending with the connection.
pub fn serve<IO>(io: IO, idle_timeout: Duration) -> Connection
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::channel::<Out>(16);
    let (streams_tx, streams_rx) = mpsc::channel::<IncomingStream>(8);
    let (gone_tx, gone_rx) = oneshot::channel::<()>();
    let activity = Activity::new();
    let writer = Writer { tx: out_tx.clone() };
    let last_client_stream = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));

    let write_activity = activity.clone();
    let last_seen = last_client_stream.clone();
    let write_task = tokio::spawn(async move {
        let mut enc = HeaderEncoder::new();
        while let Some(out) = out_rx.recv().await {
            let frame = match out {
                Out::Frame(f) => f,
                Out::Close => {
                    let last_good = last_seen.load(std::sync::atomic::Ordering::Relaxed);
                    if let Ok(bytes) = encode_frame(&Frame::GoAway { last_good, status: 0 }, &mut enc) {
                        let _ = wr.write_all(&bytes).await;
                    }
                    let _ = wr.flush().await;
                    let _ = wr.shutdown().await;
                    return;
                }
            };
            let Ok(bytes) = encode_frame(&frame, &mut enc) else { continue };
            if wr.write_all(&bytes).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            write_activity.touch();
        }
    });

    let pong = writer.clone();
    tokio::spawn(async move {
        let mut dec = HeaderDecoder::new();
        let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
        loop {
            let frame = tokio::select! {
                f = read_frame(&mut rd, &mut dec) => f,
                _ = activity.idle(idle_timeout) => {
                    tracing::debug!("spdy connection idle for {idle_timeout:?}: closing");
                    break;
                }
            };
            activity.touch();
            let frame = match frame {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "spdy connection ends");
                    if !matches!(e, SpdyError::Io(_)) {
                        pong.close().await;
                    }
                    break;
                }
            };
            match frame {
                Frame::SynStream { stream_id, headers, flags, .. } => {
                    let last = last_client_stream.load(std::sync::atomic::Ordering::Relaxed);
                    // Clients open odd, increasing ids; anything else is a broken peer.
                    if stream_id % 2 == 0 || stream_id <= last || open.contains_key(&stream_id) {
                        let _ = pong.reset(stream_id, RST_PROTOCOL_ERROR).await;
                        continue;
                    }
                    last_client_stream.store(stream_id, std::sync::atomic::Ordering::Relaxed);
                    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
                    if flags & FLAG_FIN == 0 {
                        open.insert(stream_id, tx);
                    }
                    if streams_tx.send(IncomingStream { id: stream_id, headers, data: rx }).await.is_err() {
                        // Nobody takes new streams any more: refuse it.
                        open.remove(&stream_id);
                        let _ = pong.reset(stream_id, RST_REFUSED_STREAM).await;
                    }
                }
                Frame::Data { stream_id, flags, data } => {
                    if let Some(tx) = open.get(&stream_id) {
                        if !data.is_empty() && tx.send(data).await.is_err() {
                            open.remove(&stream_id);
                        }
                        if flags & FLAG_FIN != 0 {
                            open.remove(&stream_id);
                        }
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    open.remove(&stream_id);
                }
                Frame::Ping { id } => {
                    let _ = pong.tx.send(Out::Frame(Frame::Ping { id })).await;
                }
                Frame::GoAway { .. } => break,
                Frame::Headers { .. }
                | Frame::Settings { .. }
                | Frame::WindowUpdate { .. }
                | Frame::SynReply { .. }
                | Frame::Unknown { .. } => {}
            }
        }
        drop((open, streams_tx, pong));
        let _ = gone_tx.send(());
        // Whatever was queued before the end still goes out; a client that stopped reading gets 5 s, not forever.
        let abort = write_task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), write_task).await.is_err() {
            abort.abort();
        }
    });

    Connection { streams: streams_rx, writer, gone: gone_rx }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(frames: &[Frame]) -> Vec<Frame> {
        let mut enc = HeaderEncoder::new();
        let mut wire = Vec::new();
        for f in frames {
            wire.extend(encode_frame(f, &mut enc).unwrap());
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut dec = HeaderDecoder::new();
            let mut r = wire.as_slice();
            let mut out = Vec::new();
            while let Some(f) = read_frame(&mut r, &mut dec).await.unwrap() {
                out.push(f);
            }
            out
        })
    }

    #[test]
    fn the_dictionary_is_the_spdy3_one() {
        // zlib names a preset dictionary by its Adler-32; SPDY/3 peers expect this one.
        assert_eq!(DICTIONARY.len(), 1423);
        let (mut a, mut b) = (1u32, 0u32);
        for &x in DICTIONARY {
            a = (a + x as u32) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn frames_survive_encoding_with_one_compression_stream_per_direction() {
        let h =
            |pairs: &[(&str, &str)]| -> Headers { pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect() };
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: h(&[("streamtype", "error")]),
            },
            Frame::SynStream {
                stream_id: 3,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: h(&[("streamtype", "stdout"), ("port", "80")]),
            },
            Frame::SynReply { stream_id: 3, flags: 0, headers: vec![] },
            Frame::Data { stream_id: 3, flags: 0, data: Bytes::from_static(b"hello") },
            Frame::Data { stream_id: 3, flags: FLAG_FIN, data: Bytes::new() },
            Frame::RstStream { stream_id: 5, status: 5 },
            Frame::Settings { flags: 0, entries: vec![(0, 7, 65536)] },
            Frame::Ping { id: 2 },
            Frame::GoAway { last_good: 3, status: 0 },
            Frame::WindowUpdate { stream_id: 1, delta: 1000 },
            Frame::Headers { stream_id: 1, flags: 0, headers: h(&[("a", "b\0c")]) },
        ];
        assert_eq!(roundtrip(&frames), frames);
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn header_blocks_from_c_zlib_decode_in_sequence() {
        // Two blocks of one stream compressed by C zlib (Python's zlib, level 9, the SPDY/3 dictionary, sync
        // flush after each): the second refers back into the first's window.
        let mut dec = HeaderDecoder::new();
        let first = dec.decode(&unhex("78f9e3c6a7c202a62346703a2b294a4dcc851625aca9a08006000000ffff")).unwrap();
        assert_eq!(first, vec![("streamtype".to_string(), "error".to_string())]);
        let second = dec.decode(&unhex("02651c4ca9e21260768194d845e0cc6161606100000000ffff")).unwrap();
        assert_eq!(second, vec![("streamtype".into(), "stdin".into()), ("port".into(), "8080".into())]);
    }

    #[test]
    fn header_values_split_on_nul_and_uppercase_names_are_refused() {
        let headers: Headers =
            vec![("x-stream-protocol-version".into(), "v4.channel.k8s.io\0v3.channel.k8s.io".into())];
        assert_eq!(header(&headers, "x-stream-protocol-version"), Some("v4.channel.k8s.io"));
        let mut raw = 1u32.to_be_bytes().to_vec();
        for part in [&b"StreamType"[..], b"x"] {
            raw.extend_from_slice(&(part.len() as u32).to_be_bytes());
            raw.extend_from_slice(part);
        }
        assert!(parse_header_block(&raw).is_err());
    }

    #[test]
    fn oversized_frames_are_refused_before_they_are_buffered() {
        let mut wire = vec![0, 0, 0, 1, 0];
        wire.extend_from_slice(&((MAX_FRAME as u32 + 1).to_be_bytes()[1..]));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let err = rt.block_on(async { read_frame(&mut wire.as_slice(), &mut HeaderDecoder::new()).await.unwrap_err() });
        assert!(matches!(err, SpdyError::TooLarge(_)));
    }

    #[test]
    fn truncated_and_garbage_header_blocks_are_errors_not_panics() {
        let mut dec = HeaderDecoder::new();
        assert!(dec.decode(&[0x78, 0xbb, 0xff, 0xff, 0xff]).is_err());
        assert!(parse_header_block(&[0, 0, 0, 5, 0, 0]).is_err());
        assert!(parse_header_block(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
