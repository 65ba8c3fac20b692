//! Reef's own API (proto/reef/v1): what rctl and orchestrators need beyond the CRI.

mod events;
mod image_pull;
mod info;
mod port_forward;
mod stdio;

use std::pin::Pin;
use std::sync::Arc;

use reef_api::v1 as api;
use tonic::{Request, Response, Status};

use crate::agent::Agent;
use crate::instrument::call;

#[derive(Clone)]
pub struct ReefApi {
    agent: Arc<Agent>,
}

impl ReefApi {
    pub fn new(agent: Arc<Agent>) -> Self {
        ReefApi { agent }
    }
}

#[tonic::async_trait]
impl api::reef_server::Reef for ReefApi {
    async fn info(&self, request: Request<api::InfoRequest>) -> Result<Response<api::InfoResponse>, Status> {
        call("reef.Info", info::handle(&self.agent, request.into_inner())).await
    }

    type PullImageStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<api::PullImageProgress, Status>> + Send>>;

    async fn pull_image(
        &self,
        request: Request<api::PullImageRequest>,
    ) -> Result<Response<Self::PullImageStream>, Status> {
        call("reef.PullImage", image_pull::handle(Arc::clone(&self.agent), request.into_inner())).await
    }

    type EventsStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<api::Event, Status>> + Send>>;

    async fn events(&self, request: Request<api::EventsRequest>) -> Result<Response<Self::EventsStream>, Status> {
        call("reef.Events", async { events::handle(&self.agent, request.into_inner()) }).await
    }

    type ExecStream = stdio::OutputStream;

    async fn exec(
        &self,
        request: Request<tonic::Streaming<api::StdioInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        call("reef.Exec", stdio::handle(Arc::clone(&self.agent), request.into_inner(), stdio::Kind::Exec)).await
    }

    type AttachStream = stdio::OutputStream;

    async fn attach(
        &self,
        request: Request<tonic::Streaming<api::StdioInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        call("reef.Attach", stdio::handle(Arc::clone(&self.agent), request.into_inner(), stdio::Kind::Attach)).await
    }

    type PortForwardStream = port_forward::OutputStream;

    async fn port_forward(
        &self,
        request: Request<tonic::Streaming<api::PortForwardInput>>,
    ) -> Result<Response<Self::PortForwardStream>, Status> {
        call("reef.PortForward", port_forward::handle(Arc::clone(&self.agent), request.into_inner())).await
    }
}
