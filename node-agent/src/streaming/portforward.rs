//! Port forwarding into a pod's network namespace.
//!
//! Over SPDY (`portforward.k8s.io`) the client opens two streams per forwarded connection, `data` and `error`,
//! carrying the same `requestID` and the pod's `port`; over WebSocket the ports come in the `port` query
//! parameters and each gets two channels (2i data, 2i+1 error), both opened by a message holding the port as two
//! little-endian bytes. The connection to the pod is made from a short-lived thread that enters the pod's network
//! namespace (a socket stays in the namespace it was created in); hostNetwork pods connect from the host.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::remotecommand::Outlet;
use super::{spdy, websocket};
use crate::agent::Agent;

pub const SPDY_PROTOCOLS: &[&str] = &["portforward.k8s.io"];
pub const WS_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "v4.base64.channel.k8s.io"];
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(agent: Arc<Agent>, pod_id: String, req: Request) -> Response {
    let Some(pod) = agent.pods.get(&pod_id) else {
        return super::http_error(StatusCode::NOT_FOUND, &format!("pod sandbox {pod_id} not found"));
    };
    let target = Target { pod_id: pod.id.clone(), netns: pod.pinned.network.clone() };
    let idle = agent.streaming.idle_timeout;
    if super::is_websocket(req.headers()) {
        let ports = match query_ports(req.uri().query().unwrap_or_default()) {
            Ok(p) => p,
            Err(message) => return super::http_error(StatusCode::BAD_REQUEST, &message),
        };
        let protocol = match super::ws_protocol(req.headers(), WS_PROTOCOLS) {
            Ok(p) => p,
            Err(resp) => return resp,
        };
        let ws = match super::upgrade_ws(req, &agent, protocol).await {
            Ok(ws) => ws,
            Err(resp) => return resp,
        };
        return axum::response::IntoResponse::into_response(ws.on_upgrade(move |socket| async move {
            let readable: Vec<u8> = (0..ports.len()).map(|i| (2 * i) as u8).collect();
            let mut channels =
                websocket::serve(socket, websocket::Framing::of(protocol), 2 * ports.len(), &readable, idle);
            let mut forwards = JoinSet::new();
            for (i, port) in ports.iter().enumerate() {
                let data = Outlet::Ws { tx: channels.tx.clone(), channel: (2 * i) as u8 };
                let error = Outlet::Ws { tx: channels.tx.clone(), channel: (2 * i + 1) as u8 };
                let prefix = Bytes::copy_from_slice(&port.to_le_bytes());
                data.send(prefix.clone()).await;
                error.send(prefix).await;
                let input = channels.inputs[2 * i].take().unwrap_or_else(|| mpsc::channel(1).1);
                forwards.spawn(forward(target.clone(), *port, input, data, error));
            }
            let _ = (&mut channels.gone).await;
            forwards.abort_all();
        }));
    }
    super::upgrade_spdy(req, SPDY_PROTOCOLS, idle, move |conn, _| spdy_streams(conn, target))
}

#[derive(Clone)]
pub struct Target {
    pub pod_id: String,
    /// The pod's pinned network namespace; `None` for hostNetwork pods.
    pub netns: Option<PathBuf>,
}

fn query_ports(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.split('&') {
        let Some(value) = pair.strip_prefix("port=") else { continue };
        let port = value.parse::<u16>().map_err(|e| format!("unable to parse {value:?} as a port: {e}"))?;
        if port == 0 {
            return Err(format!("port {value:?} must be > 0"));
        }
        ports.push(port);
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

struct Half {
    port: u16,
    data: Option<(spdy::IncomingStream, Outlet)>,
    error: Option<Outlet>,
}

/// Pairs `data` and `error` streams by requestID and forwards each pair; ends with the connection.
async fn spdy_streams(mut conn: spdy::Connection, target: Target) {
    let mut pairs: HashMap<String, Half> = HashMap::new();
    let mut forwards = JoinSet::new();
    loop {
        let stream = tokio::select! {
            s = conn.streams.recv() => match s { Some(s) => s, None => break },
            _ = &mut conn.gone => break,
        };
        let port = match validate(&stream.headers) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "port forward stream refused");
                conn.writer.reset(stream.id, spdy::RST_REFUSED_STREAM).await;
                continue;
            }
        };
        let kind = spdy::header(&stream.headers, "streamtype").unwrap_or_default().to_string();
        // Old clients send no requestID: their error stream's id, and the data stream's id minus 2, pair up.
        let request_id = match spdy::header(&stream.headers, "requestid") {
            Some(r) if !r.is_empty() => r.to_string(),
            _ if kind == "error" => stream.id.to_string(),
            _ => stream.id.saturating_sub(2).to_string(),
        };
        conn.writer.reply(stream.id).await;
        let outlet = Outlet::Spdy { writer: conn.writer.clone(), stream: stream.id };
        let half = pairs.entry(request_id.clone()).or_insert(Half { port, data: None, error: None });
        if kind == "error" {
            half.error = Some(outlet);
        } else {
            half.data = Some((stream, outlet));
        }
        if half.data.is_some() && half.error.is_some() {
            let Some(Half { port, data: Some((stream, data)), error: Some(error) }) = pairs.remove(&request_id) else {
                continue;
            };
            forwards.spawn(forward(target.clone(), port, stream.data, data, error));
        }
        // A bounded map: a client that opens halves and never pairs them cannot grow it without end.
        if pairs.len() > 1024 {
            pairs.clear();
        }
    }
    forwards.abort_all();
}

fn validate(headers: &spdy::Headers) -> Result<u16, String> {
    let port = spdy::header(headers, "port").filter(|p| !p.is_empty()).ok_or("\"port\" header is required")?;
    let port = port.parse::<u16>().map_err(|e| format!("unable to parse {port:?} as a port: {e}"))?;
    if port == 0 {
        return Err("port \"0\" must be > 0".into());
    }
    match spdy::header(headers, "streamtype") {
        Some("data") | Some("error") => Ok(port),
        Some(other) => Err(format!("invalid stream type {other:?}")),
        None => Err("\"streamType\" header is required".into()),
    }
}

/// One forwarded connection: the client's data into the pod's port and back, until both sides are done.
async fn forward(target: Target, port: u16, mut input: mpsc::Receiver<Bytes>, data: Outlet, error: Outlet) {
    let tcp = match connect(&target, port).await {
        Ok(tcp) => tcp,
        Err(e) => {
            let message = format!("error forwarding port {port} to pod {}, uid : {e}", target.pod_id);
            tracing::debug!("{message}");
            error.send(Bytes::from(message)).await;
            error.close().await;
            data.close().await;
            return;
        }
    };
    let (mut rd, mut wr) = tcp.into_split();
    let to_pod = async move {
        while let Some(chunk) = input.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    let from_pod = super::remotecommand::pump(&mut rd, &data);
    tokio::join!(to_pod, from_pod);
    error.close().await;
}

/// Connects to `port` on the pod's loopback, IPv4 first then IPv6 (as containerd does), from inside its netns.
pub async fn connect(target: &Target, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let netns = target.netns.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread of its own, not a pooled one: it changes network namespace and must not be reused afterwards.
    std::thread::Builder::new().name("reefd-portfwd".into()).spawn(move || {
        let result = (|| {
            if let Some(ns) = &netns {
                let f = std::fs::File::open(ns)?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            }
            let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            match std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
                Ok(s) => Ok(s),
                Err(e4) => std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|e6| {
                    std::io::Error::new(e4.kind(), format!("connect to localhost:{port}: IPv4: {e4}; IPv6: {e6}"))
                }),
            }
        })();
        let _ = tx.send(result);
    })?;
    let stream = rx.await.map_err(|_| std::io::Error::other("port forward connect thread failed"))??;
    stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_ports_come_from_the_query() {
        assert_eq!(query_ports("port=80&port=8080"), Ok(vec![80, 8080]));
        assert!(query_ports("").unwrap_err().contains("required"));
        assert!(query_ports("port=0").unwrap_err().contains("> 0"));
        assert!(query_ports("port=http").unwrap_err().contains("unable to parse"));
    }

    #[test]
    fn spdy_streams_need_a_port_and_a_known_type() {
        let h = |pairs: &[(&str, &str)]| -> spdy::Headers {
            pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
        };
        assert_eq!(validate(&h(&[("port", "80"), ("streamtype", "data")])), Ok(80));
        assert!(validate(&h(&[("streamtype", "data")])).is_err());
        assert!(validate(&h(&[("port", "80"), ("streamtype", "stdin")])).is_err());
        assert!(validate(&h(&[("port", "0"), ("streamtype", "error")])).is_err());
    }
}
