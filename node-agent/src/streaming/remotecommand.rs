//! Kubernetes' remotecommand protocol (exec and attach), independent of the transport: which subprotocols exist,
//! which streams a session has, and how the outcome is reported on the error stream.
//!
//! Over SPDY the client opens one stream per channel, named by a `streamType` header; over WebSocket every
//! message starts with a channel byte (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; 255 closes a channel in
//! v5). The outcome goes on the error stream: from v4 on a metav1.Status object in JSON, before that only a
//! failure's text.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::spdy;
use super::websocket;

/// SPDY subprotocols, newest first (kubelet's order). No header at all means the 1.0 protocol.
pub const SPDY_PROTOCOLS: &[&str] =
    &["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];
/// WebSocket subprotocols; "" is a client that names none (binary channels, 1.0 status).
pub const WS_PROTOCOLS: &[&str] =
    &["v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io", "base64.channel.k8s.io"];

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;

/// What the client asked for in the CRI request (the URL carries nothing else).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// How the outcome is written on the error stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFormat {
    /// v1 to v3: nothing on success, the failure's message as text.
    Text,
    /// v4 and v5: a metav1.Status object.
    Json,
}

impl StatusFormat {
    pub fn of(protocol: &str) -> StatusFormat {
        if protocol.starts_with("v4.") || protocol.starts_with("v5.") { StatusFormat::Json } else { StatusFormat::Text }
    }
}

/// Output toward an rctl session on Reef's own API.
pub type GrpcTx = mpsc::Sender<Result<reef_api::v1::StdioOutput, tonic::Status>>;

/// One channel toward the client.
#[derive(Clone)]
pub enum Outlet {
    Spdy { writer: spdy::Writer, stream: u32 },
    Ws { tx: mpsc::Sender<websocket::Out>, channel: u8 },
    Grpc { tx: GrpcTx, stderr: bool },
}

impl Outlet {
    /// False once the client is gone.
    pub async fn send(&self, data: Bytes) -> bool {
        match self {
            Outlet::Spdy { writer, stream } => writer.data(*stream, data).await,
            Outlet::Ws { tx, channel } => tx.send(websocket::Out::Data(*channel, data)).await.is_ok(),
            Outlet::Grpc { tx, stderr } => {
                use reef_api::v1::stdio_output::Output;
                let output = if *stderr { Output::Stderr(data.to_vec()) } else { Output::Stdout(data.to_vec()) };
                tx.send(Ok(reef_api::v1::StdioOutput { output: Some(output) })).await.is_ok()
            }
        }
    }

    /// The end of this channel's data (SPDY half-closes the stream; WebSocket channels have no end of their own).
    pub async fn close(&self) {
        if let Outlet::Spdy { writer, stream } = self {
            writer.fin(*stream).await;
        }
    }
}

/// Sends what `source` yields to `outlet` until the source ends (then the outlet is closed) or the client goes.
pub async fn pump(mut source: impl tokio::io::AsyncRead + Unpin, outlet: &Outlet) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match source.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if !outlet.send(Bytes::copy_from_slice(&buf[..n])).await {
                    return;
                }
            }
        }
    }
    outlet.close().await;
}

/// Ends the connection once the outcome is written.
pub enum Closer {
    Spdy(spdy::Writer),
    Ws(mpsc::Sender<websocket::Out>),
    /// The outcome is the stream's last message (the exit code) or its error status.
    Grpc(GrpcTx),
}

impl Closer {
    pub async fn close(self) {
        match self {
            Closer::Spdy(w) => w.close().await,
            Closer::Ws(tx) => {
                let _ = tx.send(websocket::Out::Close).await;
            }
            Closer::Grpc(_) => {}
        }
    }
}

/// An established exec or attach session: the streams the client asked for, already open.
pub struct Session {
    /// Closed when the client closes stdin (SPDY FIN, v5 close signal) or goes away.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<Outlet>,
    pub stderr: Option<Outlet>,
    /// JSON `{"Width":w,"Height":h}` objects, possibly split or joined across frames.
    pub resize: Option<mpsc::Receiver<Bytes>>,
    pub error: Outlet,
    pub status: StatusFormat,
    /// Resolves when the client is gone (or the connection ended otherwise).
    pub gone: oneshot::Receiver<()>,
    pub closer: Closer,
}

impl Session {
    /// Writes the outcome and closes the connection.
    pub async fn finish(self, outcome: Outcome) {
        if let Closer::Grpc(tx) = &self.closer {
            use reef_api::v1::stdio_output::Output;
            let last = match outcome {
                Outcome::Exited { code, .. } => Ok(reef_api::v1::StdioOutput { output: Some(Output::ExitCode(code)) }),
                Outcome::Failed { code, message } => Err(tonic::Status::new(code, message)),
            };
            let _ = tx.send(last).await;
            return;
        }
        if let Some(bytes) = outcome.encode(self.status) {
            self.error.send(bytes.into()).await;
        }
        self.error.close().await;
        self.closer.close().await;
    }
}

/// How an exec or attach ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited {
        code: i32,
        cmd: Vec<String>,
    },
    /// The error as every RPC reports it: its code from the one mapping (`error.rs`), its whole cause chain.
    Failed {
        code: tonic::Code,
        message: String,
    },
}

impl From<crate::error::ReefError> for Outcome {
    fn from(e: crate::error::ReefError) -> Self {
        Outcome::Failed { code: e.code(), message: crate::error::chain(&e) }
    }
}

impl Outcome {
    /// What goes on the error stream, in kubelet's words: clients parse the exit code out of the v4 Status.
    pub fn encode(&self, format: StatusFormat) -> Option<Vec<u8>> {
        let status = match self {
            Outcome::Exited { code: 0, .. } => serde_json::json!({"metadata": {}, "status": "Success"}),
            Outcome::Exited { code, cmd } => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!(
                    "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
                    cmd.join(" ")
                ),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            Outcome::Failed { message, .. } => serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("Internal error occurred: {message}"),
                "reason": "InternalError",
                "details": {"causes": [{"message": message}]},
                "code": 500,
            }),
        };
        match format {
            StatusFormat::Json => serde_json::to_vec(&status).ok(),
            StatusFormat::Text => match self {
                Outcome::Exited { code: 0, .. } => None,
                _ => status.get("message").and_then(|m| m.as_str()).map(|m| m.as_bytes().to_vec()),
            },
        }
    }
}

/// Kubelet's negotiation: the first protocol the client lists that the server speaks. `Ok(None)`: the client
/// named none (a 1.0 client). `Err` carries the 403 message.
pub fn negotiate<'a>(client: &[String], server: &[&'a str]) -> Result<Option<&'a str>, String> {
    if client.is_empty() {
        return Ok(None);
    }
    for c in client {
        if let Some(s) = server.iter().find(|s| **s == c.as_str()) {
            return Ok(Some(s));
        }
    }
    Err(format!(
        "unable to upgrade: unable to negotiate protocol: client supports {:?}, server accepts {:?}",
        client, server
    ))
}

/// Waits until the client has opened every stream the options call for (error, the requested stdio, resize
/// with a tty from v3 on), answering each as it comes: clients wait for the reply before opening the next.
pub async fn spdy_session(
    mut conn: spdy::Connection,
    protocol: Option<&str>,
    opts: Options,
    creation_timeout: Duration,
) -> Result<Session, String> {
    let protocol = protocol.unwrap_or("channel.k8s.io");
    let resize_supported = !matches!(protocol, "channel.k8s.io" | "v2.channel.k8s.io");
    let expected =
        1 + opts.stdin as usize + opts.stdout as usize + opts.stderr as usize + (opts.tty && resize_supported) as usize;
    let (mut stdin, mut stdout, mut stderr, mut resize, mut error) = (None, None, None, None, None);
    let deadline = tokio::time::Instant::now() + creation_timeout;
    let mut seen = 0;
    while seen < expected {
        let stream = tokio::select! {
            s = conn.streams.recv() => s.ok_or("the client closed the connection before opening its streams")?,
            _ = tokio::time::sleep_until(deadline) => return Err("timed out waiting for client to create streams".into()),
        };
        let kind = spdy::header(&stream.headers, "streamtype").unwrap_or_default().to_string();
        let outlet = Outlet::Spdy { writer: conn.writer.clone(), stream: stream.id };
        match kind.as_str() {
            "error" => error = Some(outlet),
            "stdin" => stdin = Some(stream.data),
            "stdout" => stdout = Some(outlet),
            "stderr" => stderr = Some(outlet),
            "resize" => resize = Some(stream.data),
            other => {
                conn.writer.reset(stream.id, spdy::RST_PROTOCOL_ERROR).await;
                conn.writer.close().await;
                return Err(format!("unexpected stream type: {other:?}"));
            }
        }
        conn.writer.reply(stream.id).await;
        seen += 1;
    }
    let error = error.ok_or("the client opened no error stream")?;
    // Streams opened later have no meaning here: refuse them.
    let writer = conn.writer.clone();
    let mut rest = conn.streams;
    tokio::spawn(async move {
        while let Some(s) = rest.recv().await {
            writer.reset(s.id, spdy::RST_REFUSED_STREAM).await;
        }
    });
    Ok(Session {
        stdin,
        stdout,
        stderr,
        resize,
        error,
        status: StatusFormat::of(protocol),
        gone: conn.gone,
        closer: Closer::Spdy(conn.writer),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_takes_the_clients_first_supported_protocol() {
        let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            negotiate(&c(&["v4.channel.k8s.io", "v3.channel.k8s.io"]), SPDY_PROTOCOLS),
            Ok(Some("v4.channel.k8s.io"))
        );
        assert_eq!(negotiate(&c(&["v9", "v2.channel.k8s.io"]), SPDY_PROTOCOLS), Ok(Some("v2.channel.k8s.io")));
        assert_eq!(negotiate(&[], SPDY_PROTOCOLS), Ok(None));
        assert!(negotiate(&c(&["v9"]), SPDY_PROTOCOLS).unwrap_err().contains("unable to negotiate protocol"));
    }

    #[test]
    fn exit_codes_are_reported_as_kubelet_reports_them() {
        let ok = Outcome::Exited { code: 0, cmd: vec!["true".into()] };
        assert_eq!(ok.encode(StatusFormat::Json).unwrap(), br#"{"metadata":{},"status":"Success"}"#);
        assert_eq!(ok.encode(StatusFormat::Text), None);
        let three = Outcome::Exited { code: 3, cmd: vec!["sh".into(), "-c".into(), "exit 3".into()] };
        let v: serde_json::Value = serde_json::from_slice(&three.encode(StatusFormat::Json).unwrap()).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        assert_eq!(
            v["message"],
            "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
        let text = String::from_utf8(three.encode(StatusFormat::Text).unwrap()).unwrap();
        assert!(text.contains("exit code 3"));
    }

    #[test]
    fn the_status_format_follows_the_protocol() {
        assert_eq!(StatusFormat::of("v5.channel.k8s.io"), StatusFormat::Json);
        assert_eq!(StatusFormat::of("v4.base64.channel.k8s.io"), StatusFormat::Json);
        assert_eq!(StatusFormat::of("v3.channel.k8s.io"), StatusFormat::Text);
        assert_eq!(StatusFormat::of("base64.channel.k8s.io"), StatusFormat::Text);
        assert_eq!(StatusFormat::of(""), StatusFormat::Text);
    }
}
