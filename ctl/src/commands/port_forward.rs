//! `rctl port-forward POD LOCAL:REMOTE`: listens on 127.0.0.1:LOCAL and carries each connection to the pod's
//! port REMOTE over Reef's PortForward stream (one stream per connection), until interrupted.

use reef_api::v1 as api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::cli::PortForwardArgs;
use crate::client::{Clients, status_error};

pub async fn run(clients: &Clients, args: &PortForwardArgs) -> anyhow::Result<()> {
    let pod = crate::resolve::pod(clients, &args.pod).await?;
    let mut listeners = Vec::new();
    for (local, remote) in &args.ports {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", *local))
            .await
            .map_err(|e| anyhow::anyhow!("listen on 127.0.0.1:{local}: {e}"))?;
        let bound = listener.local_addr()?.port();
        println!("Forwarding from 127.0.0.1:{bound} -> {remote}");
        listeners.push((listener, *remote));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, remote) in listeners {
        let channel = clients.channel.clone();
        let pod = pod.clone();
        tasks.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let channel = channel.clone();
                let pod = pod.clone();
                tokio::spawn(async move {
                    if let Err(e) = forward(channel, pod, remote, tcp).await {
                        eprintln!("{e:#}");
                    }
                });
            }
        });
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = tasks.join_next() => Ok(()),
    }
}

async fn forward(
    channel: tonic::transport::Channel,
    pod: String,
    port: u16,
    tcp: tokio::net::TcpStream,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel(16);
    let start = api::PortForwardStart { pod_id: pod.clone(), port: port.into() };
    tx.send(api::PortForwardInput { input: Some(api::port_forward_input::Input::Start(start)) }).await?;
    let mut output = api::reef_client::ReefClient::new(channel)
        .port_forward(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|e| status_error(&format!("forward port {port} of pod {pod}"), e))?
        .into_inner();
    println!("Handling connection for {port}");
    let (mut rd, mut wr) = tcp.into_split();
    let upload = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let msg =
                        api::PortForwardInput { input: Some(api::port_forward_input::Input::Data(buf[..n].to_vec())) };
                    if tx.send(msg).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let download = async move {
        while let Ok(Some(msg)) = output.message().await {
            if wr.write_all(&msg.data).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    tokio::join!(upload, download);
    Ok(())
}
