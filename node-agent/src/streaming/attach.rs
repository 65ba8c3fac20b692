//! An attach session: the client joins the container's own stdio, which the pod monitor holds. reefd opens an
//! attach stream on the monitor's socket (`reef_runtime::monitor::attach`) and relays frames both ways. The
//! container is not the session's: a client that leaves only closes its stream, and the container keeps running.

use std::sync::Arc;

use bytes::Bytes;
use reef_runtime::monitor::attach as frames;
use reef_runtime::monitor::protocol::{Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::remotecommand::{Options, Outcome, Session};
use crate::agent::Agent;
use crate::error::ReefError;

pub struct AttachRequest {
    pub container_id: String,
    pub opts: Options,
}

pub async fn run(agent: Arc<Agent>, req: AttachRequest, session: Session) {
    match connect(&agent, &req).await {
        Ok(monitor) => relay(monitor, req, session).await,
        Err(e) => {
            tracing::warn!(container = %req.container_id, error = %crate::error::chain(&e), "attach failed");
            session.finish(Outcome::from(e)).await;
        }
    }
}

/// An attach stream of the pod monitor, established: from here on no output of the container is missed.
pub struct Monitor {
    rd: BufReader<tokio::net::unix::OwnedReadHalf>,
    wr: tokio::net::unix::OwnedWriteHalf,
}

pub async fn connect(agent: &Arc<Agent>, req: &AttachRequest) -> Result<Monitor, ReefError> {
    use reef_runtime::monitor::client::ClientError;
    let c = agent
        .containers
        .get(&req.container_id)
        .ok_or_else(|| ReefError::NotFound(format!("container {:?} not found", req.container_id)))?;
    let socket = agent.pods.pod_dir(&c.pod_id).join(reef_runtime::monitor::SOCKET);
    let stream = UnixStream::connect(&socket).await.map_err(|source| {
        ReefError::MonitorUnreachable(ClientError::Connect { path: socket.display().to_string(), source })
    })?;
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let request: Request = Request::Attach { id: c.id.clone(), stdin: req.opts.stdin };
    let mut line = serde_json::to_vec(&request).map_err(|e| ReefError::Internal(format!("encode attach: {e}")))?;
    line.push(b'\n');
    let talk = |e| ReefError::MonitorCall(ClientError::Io(e));
    wr.write_all(&line).await.map_err(talk)?;
    let mut reply = String::new();
    rd.read_line(&mut reply).await.map_err(talk)?;
    let response = serde_json::from_str::<Response>(&reply)
        .map_err(|e| ReefError::MonitorCall(ClientError::BadResponse(e.to_string())))?;
    crate::containers::ok_state(response).map(|_| Monitor { rd, wr })
}

pub async fn relay(monitor: Monitor, req: AttachRequest, mut session: Session) {
    let outcome = match attach(monitor, &mut session).await {
        Ok(()) => Outcome::Exited { code: 0, cmd: Vec::new() },
        Err(e) => {
            tracing::warn!(container = %req.container_id, error = %crate::error::chain(&e), "attach failed");
            Outcome::from(e)
        }
    };
    session.finish(outcome).await;
}

async fn attach(monitor: Monitor, session: &mut Session) -> Result<(), ReefError> {
    let Monitor { mut rd, mut wr } = monitor;
    let (stdout, stderr) = (session.stdout.take(), session.stderr.take());
    let from_container = async move {
        let mut head = [0u8; 5];
        let mut buf = Vec::new();
        loop {
            if rd.read_exact(&mut head).await.is_err() {
                break;
            }
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            if len > frames::MAX_QUEUED {
                break;
            }
            buf.resize(len, 0);
            if rd.read_exact(&mut buf).await.is_err() {
                break;
            }
            let outlet = match head[0] {
                frames::STDOUT => stdout.as_ref(),
                frames::STDERR => stderr.as_ref(),
                _ => break,
            };
            if let Some(o) = outlet
                && !o.send(Bytes::copy_from_slice(&buf)).await
            {
                break;
            }
        }
        for o in [stdout, stderr].into_iter().flatten() {
            o.close().await;
        }
    };
    let (mut stdin, mut resize) = (session.stdin.take(), session.resize.take());
    let to_container = async move {
        let mut pending = Vec::new();
        loop {
            tokio::select! {
                data = async { stdin.as_mut()?.recv().await }, if stdin.is_some() => {
                    let frame = match data {
                        Some(d) => frames::frame(frames::STDIN, &d),
                        None => {
                            stdin = None;
                            frames::frame(frames::STDIN, &[])
                        }
                    };
                    if wr.write_all(&frame).await.is_err() {
                        return;
                    }
                }
                data = async { resize.as_mut()?.recv().await }, if resize.is_some() => {
                    let Some(data) = data else {
                        resize = None;
                        continue;
                    };
                    pending.extend_from_slice(&data);
                    for (rows, cols) in super::exec::terminal_sizes(&mut pending) {
                        let mut payload = rows.to_be_bytes().to_vec();
                        payload.extend_from_slice(&cols.to_be_bytes());
                        if wr.write_all(&frames::frame(frames::RESIZE, &payload)).await.is_err() {
                            return;
                        }
                    }
                }
                else => std::future::pending::<()>().await,
            }
        }
    };
    tokio::select! {
        _ = from_container => {}
        _ = to_container => {}
        _ = &mut session.gone => {}
    }
    Ok(())
}
