//! Exec and Attach for rctl: the same sessions as the streaming server's, with gRPC streams as the transport
//! (rctl needs no SPDY). The first input message says what to run; the output ends with the exit code.

use std::sync::Arc;

use reef_api::v1 as api;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::agent::Agent;
use crate::cri::container_exec::{running_container, validate};
use crate::error::ReefError;
use crate::streaming::remotecommand::{Closer, Outlet, Session, StatusFormat};
use crate::streaming::{attach, exec};

pub type OutputStream = ReceiverStream<Result<api::StdioOutput, tonic::Status>>;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
}

pub async fn handle(
    agent: Arc<Agent>,
    mut input: Streaming<api::StdioInput>,
    kind: Kind,
) -> Result<OutputStream, ReefError> {
    let first = input.message().await.map_err(|s| ReefError::InvalidArgument(s.message().to_string()))?;
    let Some(api::StdioInput { input: Some(api::stdio_input::Input::Start(start)) }) = first else {
        return Err(ReefError::InvalidArgument("the first message must be `start`".into()));
    };
    let id = match kind {
        Kind::Exec => running_container(&agent, &start.container_id).await?,
        // rctl run -it attaches before it starts the container, so that no output is missed.
        Kind::Attach => agent
            .containers
            .get(&start.container_id)
            .map(|c| c.id)
            .ok_or_else(|| ReefError::NotFound(format!("container {:?} not found", start.container_id)))?,
    };
    // An attach gets the terminal the container has, whatever the client assumed.
    let tty = match kind {
        Kind::Exec => start.tty,
        Kind::Attach => agent.containers.get(&id).is_some_and(|c| c.has_terminal()),
    };
    let opts = validate(&id, tty, start.stdin, true, !tty)?;
    let monitor = match kind {
        Kind::Attach => Some(attach::connect(&agent, &attach::AttachRequest { container_id: id.clone(), opts }).await?),
        Kind::Exec => None,
    };
    if kind == Kind::Exec && start.command.is_empty() {
        return Err(ReefError::InvalidArgument("exec needs a command".into()));
    }
    let (tx, rx) = mpsc::channel(16);
    let (stdin_tx, stdin_rx) = mpsc::channel(8);
    let (resize_tx, resize_rx) = mpsc::channel(8);
    let (gone_tx, gone_rx) = oneshot::channel();
    let size_json = |s: &api::TerminalSize| {
        bytes::Bytes::from(format!("{{\"Width\":{},\"Height\":{}}}", s.cols.min(65535), s.rows.min(65535)))
    };
    if let Some(size) = start.size.as_ref().filter(|_| tty) {
        let _ = resize_tx.try_send(size_json(size));
    }
    tokio::spawn(async move {
        let mut stdin_tx = Some(stdin_tx);
        // The input stream's end (rctl gone, or done) is the client leaving.
        while let Ok(Some(msg)) = input.message().await {
            match msg.input {
                Some(api::stdio_input::Input::Stdin(data)) => {
                    if let Some(tx) = &stdin_tx
                        && tx.send(data.into()).await.is_err()
                    {
                        stdin_tx = None;
                    }
                }
                Some(api::stdio_input::Input::Resize(size)) => {
                    let _ = resize_tx.send(size_json(&size)).await;
                }
                Some(api::stdio_input::Input::CloseStdin(true)) => stdin_tx = None,
                _ => {}
            }
        }
        let _ = gone_tx.send(());
    });
    let session = Session {
        stdin: opts.stdin.then_some(stdin_rx),
        stdout: Some(Outlet::Grpc { tx: tx.clone(), stderr: false }),
        stderr: opts.stderr.then(|| Outlet::Grpc { tx: tx.clone(), stderr: true }),
        resize: tty.then_some(resize_rx),
        error: Outlet::Grpc { tx: tx.clone(), stderr: true },
        status: StatusFormat::Json,
        gone: gone_rx,
        closer: Closer::Grpc(tx),
    };
    match kind {
        Kind::Exec => {
            let req = exec::ExecRequest { container_id: id, cmd: start.command, opts };
            tokio::spawn(exec::run(agent, req, session));
        }
        Kind::Attach => {
            let req = attach::AttachRequest { container_id: id, opts };
            if let Some(monitor) = monitor {
                tokio::spawn(attach::relay(monitor, req, session));
            }
        }
    }
    Ok(ReceiverStream::new(rx))
}
