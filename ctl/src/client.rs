//! Connections to reefd over its unix socket.

use std::time::Duration;

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use reef_api::v1::reef_client::ReefClient;
use tonic::transport::Channel;

pub struct Clients {
    pub channel: Channel,
}

impl Clients {
    pub async fn connect(endpoint: &str, timeout: Duration) -> anyhow::Result<Clients> {
        let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint).to_string();
        let shown = path.clone();
        let endpoint = reef_api::unix_endpoint().connect_timeout(Duration::from_secs(5)).timeout(timeout);
        let channel = reef_api::connect_unix(endpoint, std::path::Path::new(&path)).await.map_err(|e| {
            anyhow::anyhow!("cannot connect to reefd at {shown}: {} (is reefd running?)", root_cause(&e))
        })?;
        Ok(Clients { channel })
    }

    pub fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
    }

    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
    }

    pub fn reef(&self) -> ReefClient<Channel> {
        ReefClient::new(self.channel.clone())
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A gRPC failure as one line: the message and the code in words.
pub fn status_error(what: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{what}: {} ({:?})", s.message(), s.code())
}
