//! Port forwarding for rctl: one gRPC stream per TCP connection into the pod's network namespace.

use std::sync::Arc;

use reef_api::v1 as api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::agent::Agent;
use crate::error::ReefError;
use crate::streaming::portforward::{Target, connect};

pub type OutputStream = ReceiverStream<Result<api::PortForwardOutput, tonic::Status>>;

pub async fn handle(agent: Arc<Agent>, mut input: Streaming<api::PortForwardInput>) -> Result<OutputStream, ReefError> {
    let first = input.message().await.map_err(|s| ReefError::InvalidArgument(s.message().to_string()))?;
    let Some(api::PortForwardInput { input: Some(api::port_forward_input::Input::Start(start)) }) = first else {
        return Err(ReefError::InvalidArgument("the first message must be `start`".into()));
    };
    let port = u16::try_from(start.port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| ReefError::InvalidArgument(format!("invalid port {}", start.port)))?;
    let pod = agent
        .pods
        .get(&start.pod_id)
        .ok_or_else(|| ReefError::NotFound(format!("pod sandbox {:?} not found", start.pod_id)))?;
    let target = Target { pod_id: pod.id.clone(), netns: pod.pinned.network.clone() };
    let tcp = connect(&target, port)
        .await
        .map_err(|e| ReefError::Unavailable(format!("error forwarding port {port} to pod {}: {e}", pod.id)))?;
    let (mut rd, mut wr) = tcp.into_split();
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok(Some(msg)) = input.message().await {
            if let Some(api::port_forward_input::Input::Data(data)) = msg.input
                && wr.write_all(&data).await.is_err()
            {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(Ok(api::PortForwardOutput { data: buf[..n].to_vec() })).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}
