//! Reef's own gRPC API: what the CRI does not carry and rctl or an orchestrator needs.
//! Generated at build time from `proto/reef/v1/*.proto`.

pub mod v1 {
    tonic::include_proto!("reef.v1");
}

/// A gRPC channel to reefd's unix socket, for every client (rctl, the tests, the benchmark): tonic dials only
/// URIs, so the endpoint's own URI is a placeholder and the connector opens the socket. `endpoint` carries the
/// caller's timeouts.
pub async fn connect_unix(
    endpoint: tonic::transport::Endpoint,
    socket: &std::path::Path,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
}

/// The placeholder endpoint `connect_unix` dials through.
pub fn unix_endpoint() -> tonic::transport::Endpoint {
    tonic::transport::Endpoint::from_static("http://[::]:50051")
}
