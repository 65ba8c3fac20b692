//! The streaming server kubelet sends clients to for exec, attach and port forwarding.
//!
//! The CRI's Exec, Attach and PortForward calls only store the request under a single-use token and answer with a
//! URL on this server (`http://127.0.0.1:PORT/exec/TOKEN`); kubelet, the API server or crictl then connects there
//! and upgrades to SPDY/3.1 or WebSocket. Routes, status codes and headers follow kubelet's streaming library,
//! which every Kubernetes client is written against: an unknown or used token is 404, a failed protocol
//! negotiation 403, a request that upgrades to nothing 400.
//!
//! Files: `tokens` (the pending requests), `spdy` (framing and connections), `websocket` (channel framing),
//! `remotecommand` (the exec/attach protocol over either), `exec`, `portforward`, `fdio` (async pipes and ptys).

pub mod attach;
pub mod exec;
mod fdio;
pub mod portforward;
pub mod remotecommand;
pub mod spdy;
pub mod tokens;
pub mod websocket;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde::{Deserialize, Serialize};

use crate::agent::Agent;
use crate::error::ReefError;
use remotecommand::Options;

/// The longest any streaming timeout may be.
const MAX_SECONDS: u64 = 365 * 24 * 3600;

/// `[streaming]` in the config file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    /// `host:port` to listen on; port 0 picks a free one. Loopback by default: kubelet runs on the node.
    pub address: String,
    /// PEM certificate chain and key: with both, the server speaks only TLS (`https://` URLs).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// An Exec, Attach or PortForward URL nobody connects to expires after this many seconds.
    pub token_ttl_seconds: u64,
    /// A session with no traffic either way for this long is closed.
    pub idle_timeout_seconds: u64,
    /// How long a SPDY client gets to open all its streams after the upgrade.
    pub stream_creation_timeout_seconds: u64,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: "127.0.0.1:0".into(),
            tls_cert: None,
            tls_key: None,
            token_ttl_seconds: 60,
            idle_timeout_seconds: 4 * 3600,
            stream_creation_timeout_seconds: 30,
        }
    }
}

impl StreamingConfig {
    pub fn validate(&self) -> Result<(), (String, String)> {
        let invalid = |k: &str, r: &str| Err((format!("streaming.{k}"), r.to_string()));
        if self.address.parse::<SocketAddr>().is_err() {
            return invalid("address", "must be an IP address and port, like 127.0.0.1:0 or [::1]:10010");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return invalid("tls_cert", "tls_cert and tls_key go together");
        }
        for (k, v) in [
            ("token_ttl_seconds", self.token_ttl_seconds),
            ("idle_timeout_seconds", self.idle_timeout_seconds),
            ("stream_creation_timeout_seconds", self.stream_creation_timeout_seconds),
        ] {
            if v == 0 {
                return invalid(k, "must be at least 1");
            }
            // Each is added to an Instant (a token's expiry, a deadline), which panics past its range.
            if v > MAX_SECONDS {
                return invalid(k, "must be at most 31536000 (a year)");
            }
        }
        Ok(())
    }
}

/// A request waiting for its client to connect.
pub enum Pending {
    Exec(exec::ExecRequest),
    Attach(attach::AttachRequest),
    PortForward { pod_id: String },
}

pub struct Streaming {
    base_url: String,
    tokens: tokens::Tokens<Pending>,
    idle_timeout: Duration,
    creation_timeout: Duration,
}

impl Streaming {
    /// Stores the request and returns the URL its client connects to.
    pub fn url(&self, pending: Pending) -> Result<String, ReefError> {
        let kind = match &pending {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward { .. } => "portforward",
        };
        let token = self.tokens.insert(pending).map_err(|_| {
            ReefError::ResourceExhausted("maximum number of in-flight streaming requests exceeded".into())
        })?;
        Ok(format!("{}/{kind}/{token}", self.base_url))
    }
}

pub struct Listener {
    tcp: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Binds the listener, so the URLs are known before the first CRI call.
pub async fn bind(config: &StreamingConfig) -> anyhow::Result<(Streaming, Listener)> {
    let addr: SocketAddr = config.address.parse().context("streaming.address")?;
    let tcp =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("bind the streaming server on {addr}"))?;
    let local = tcp.local_addr().context("streaming server address")?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let streaming = Streaming {
        base_url: format!("{scheme}://{local}"),
        tokens: tokens::Tokens::new(Duration::from_secs(config.token_ttl_seconds)),
        idle_timeout: Duration::from_secs(config.idle_timeout_seconds),
        creation_timeout: Duration::from_secs(config.stream_creation_timeout_seconds),
    };
    tracing::info!(url = %streaming.base_url, "streaming server listening");
    Ok((streaming, Listener { tcp, tls }))
}

fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("read streaming.tls_cert {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("read streaming.tls_key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("streaming TLS certificate and key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves until reefd exits. Each connection is its own task; upgrades (SPDY, WebSocket) outlive the request.
pub fn spawn(listener: Listener, agent: Arc<Agent>) -> tokio::task::JoinHandle<()> {
    let router = Router::new()
        .route("/exec/{token}", any(serve_exec))
        .route("/attach/{token}", any(serve_attach))
        .route("/portforward/{token}", any(serve_portforward))
        .with_state(agent);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.tcp.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "streaming server: accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let router = router.clone();
            let tls = listener.tls.clone();
            tokio::spawn(async move {
                let service = hyper_util::service::TowerToHyperService::new(router);
                let http = hyper::server::conn::http1::Builder::new();
                let result = match tls {
                    Some(tls) => match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).with_upgrades().await
                        }
                        _ => {
                            tracing::debug!(%peer, "streaming server: TLS handshake failed");
                            return;
                        }
                    },
                    None => http.serve_connection(hyper_util::rt::TokioIo::new(tcp), service).with_upgrades().await,
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "streaming connection");
                }
            });
        }
    })
}

/// Go's http.Error: the message and a newline, as plain text.
fn http_error(status: StatusCode, message: &str) -> Response {
    let mut resp = (status, format!("{message}\n")).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    resp
}

fn not_found() -> Response {
    http_error(StatusCode::NOT_FOUND, "404 page not found")
}

/// A header's comma-separated values across all its lines, in order.
fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn has_token(headers: &HeaderMap, name: &header::HeaderName, token: &str) -> bool {
    header_values(headers, name.as_str()).iter().any(|v| v.eq_ignore_ascii_case(token))
}

fn is_websocket(headers: &HeaderMap) -> bool {
    has_token(headers, &header::CONNECTION, "upgrade") && has_token(headers, &header::UPGRADE, "websocket")
}

/// Negotiates `X-Stream-Protocol-Version` and upgrades to SPDY/3.1, as kubelet's httpstream does; the upgraded
/// connection goes to `then`. Errors are answered here.
fn upgrade_spdy<F, Fut>(mut req: Request, protocols: &[&'static str], idle: Duration, then: F) -> Response
where
    F: FnOnce(spdy::Connection, Option<&'static str>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let client = header_values(req.headers(), "x-stream-protocol-version");
    let protocol = match remotecommand::negotiate(&client, protocols) {
        Ok(p) => p,
        Err(message) => {
            let mut resp = http_error(StatusCode::FORBIDDEN, &message);
            for p in protocols {
                resp.headers_mut().append("x-accepted-stream-protocol-versions", HeaderValue::from_static(p));
            }
            return resp;
        }
    };
    let headers = req.headers();
    if !has_token(headers, &header::CONNECTION, "upgrade") || !has_token(headers, &header::UPGRADE, "spdy/3.1") {
        return http_error(StatusCode::BAD_REQUEST, "unable to upgrade: missing upgrade headers in request");
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                let conn = spdy::serve(hyper_util::rt::TokioIo::new(upgraded), idle);
                then(conn, protocol).await;
            }
            Err(e) => tracing::debug!(error = %e, "spdy upgrade failed"),
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    if let Some(p) = protocol {
        h.insert("x-stream-protocol-version", HeaderValue::from_static(p));
    }
    resp
}

/// The WebSocket subprotocol kubelet would pick: the client's first that the server speaks, "" when the client
/// names none. `Err` when it names only unknown ones (a 403, as golang.org/x/net/websocket answers).
// The error is the refusal itself, answered once per connection attempt: its size does not matter.
#[allow(clippy::result_large_err)]
fn ws_protocol(headers: &HeaderMap, server: &[&'static str]) -> Result<&'static str, Response> {
    let client = header_values(headers, "sec-websocket-protocol");
    match remotecommand::negotiate(&client, server) {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Ok(""),
        Err(_) => Err(http_error(
            StatusCode::FORBIDDEN,
            &format!("requested protocol(s) are not supported: {client:?}; supports {server:?}"),
        )),
    }
}

async fn upgrade_ws(
    req: Request,
    agent: &Arc<Agent>,
    protocol: &'static str,
) -> Result<axum::extract::ws::WebSocketUpgrade, Response> {
    let ws = axum::extract::ws::WebSocketUpgrade::from_request(req, agent).await.map_err(|e| e.into_response())?;
    let ws = ws.max_message_size(websocket::MAX_MESSAGE).max_frame_size(websocket::MAX_MESSAGE);
    Ok(if protocol.is_empty() { ws } else { ws.protocols([protocol]) })
}

async fn serve_exec(State(agent): State<Arc<Agent>>, Path(token): Path<String>, req: Request) -> Response {
    let Some(Pending::Exec(exec)) = agent.streaming.tokens.take(&token) else { return not_found() };
    let opts = exec.opts;
    remote_command(agent, req, opts, move |agent, session| exec::run(agent, exec, session)).await
}

async fn serve_attach(State(agent): State<Arc<Agent>>, Path(token): Path<String>, req: Request) -> Response {
    let Some(Pending::Attach(attach)) = agent.streaming.tokens.take(&token) else { return not_found() };
    let opts = attach.opts;
    remote_command(agent, req, opts, move |agent, session| attach::run(agent, attach, session)).await
}

async fn serve_portforward(State(agent): State<Arc<Agent>>, Path(token): Path<String>, req: Request) -> Response {
    let Some(Pending::PortForward { pod_id }) = agent.streaming.tokens.take(&token) else { return not_found() };
    portforward::serve(agent, pod_id, req).await
}

/// Exec and attach share everything up to the session: the transport, the subprotocol, the streams.
async fn remote_command<F, Fut>(agent: Arc<Agent>, req: Request, opts: Options, run: F) -> Response
where
    F: FnOnce(Arc<Agent>, remotecommand::Session) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let idle = agent.streaming.idle_timeout;
    if is_websocket(req.headers()) {
        let protocol = match ws_protocol(req.headers(), remotecommand::WS_PROTOCOLS) {
            Ok(p) => p,
            Err(resp) => return resp,
        };
        let ws = match upgrade_ws(req, &agent, protocol).await {
            Ok(ws) => ws,
            Err(resp) => return resp,
        };
        return ws.on_upgrade(move |socket| async move {
            use remotecommand::{ERROR, RESIZE, STDERR, STDIN, STDOUT};
            let framing = websocket::Framing::of(protocol);
            let mut channels = websocket::serve(socket, framing, 5, &[STDIN, RESIZE], idle);
            let outlet = |ch| remotecommand::Outlet::Ws { tx: channels.tx.clone(), channel: ch };
            let session = remotecommand::Session {
                stdin: if opts.stdin { channels.inputs[STDIN as usize].take() } else { None },
                stdout: opts.stdout.then(|| outlet(STDOUT)),
                stderr: opts.stderr.then(|| outlet(STDERR)),
                resize: if opts.tty { channels.inputs[RESIZE as usize].take() } else { None },
                error: outlet(ERROR),
                status: remotecommand::StatusFormat::of(protocol),
                gone: channels.gone,
                closer: remotecommand::Closer::Ws(channels.tx.clone()),
            };
            // kubelet's first message: an empty one on the lowest channel it writes, so the client knows the
            // session is up.
            let first = if opts.stdout {
                STDOUT
            } else if opts.stderr {
                STDERR
            } else {
                ERROR
            };
            let _ = channels.tx.send(websocket::Out::Data(first, bytes::Bytes::new())).await;
            run(agent, session).await;
        });
    }
    let creation = agent.streaming.creation_timeout;
    upgrade_spdy(req, remotecommand::SPDY_PROTOCOLS, idle, move |conn, protocol| async move {
        match remotecommand::spdy_session(conn, protocol, opts, creation).await {
            Ok(session) => run(agent, session).await,
            Err(e) => tracing::info!(error = %e, "exec/attach session not established"),
        }
    })
}

/// When a connection last saw traffic either way, for the idle timeout.
#[derive(Clone)]
pub struct Activity {
    base: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    pub fn new() -> Activity {
        Activity { base: Instant::now(), last_ms: Arc::new(AtomicU64::new(0)) }
    }

    pub fn touch(&self) {
        self.last_ms.store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once `timeout` passed without a touch.
    pub async fn idle(&self, timeout: Duration) {
        loop {
            let last = self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}
