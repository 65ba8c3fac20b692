//! The CRI services. The trait impls stay thin: each RPC goes through `instrument::call` to a handler in the
//! module named for it (`image_pull.rs` for PullImage, …), which does the work against the agent's managers.

mod container_attach;
mod container_create;
pub(crate) mod container_events;
pub(crate) mod container_exec;
mod container_exec_sync;
mod container_list;
mod container_remove;
mod container_start;
mod container_stats;
pub(crate) mod container_status;
mod container_stop;
mod filter;
mod image_fs_info;
mod image_list;
pub(crate) mod image_pull;
mod image_remove;
mod image_status;
mod metric_descriptors;
mod runtime_config;
mod sandbox_list;
mod sandbox_metrics;
mod sandbox_port_forward;
mod sandbox_remove;
mod sandbox_run;
mod sandbox_stats;
pub(crate) mod sandbox_status;
mod sandbox_stop;
mod status;
mod version;

use std::pin::Pin;
use std::sync::Arc;

use k8s_cri::v1 as cri;
use tonic::{Request, Response, Status};

use crate::agent::Agent;
use crate::error::ReefError;
use crate::instrument::call;

#[derive(Clone)]
pub struct Cri {
    agent: Arc<Agent>,
}

impl Cri {
    pub fn new(agent: Arc<Agent>) -> Self {
        Cri { agent }
    }
}

type Reply<T> = Result<Response<T>, Status>;

/// RPCs whose issue has not landed answer Unimplemented, through the same wrapper as the rest.
macro_rules! not_yet {
    ($($fn:ident($req:ty) -> $resp:ty = $name:literal;)*) => {
        $(
            // Written in async_trait's expanded form: the attribute cannot see inside macro output.
            fn $fn<'life0, 'async_trait>(
                &'life0 self,
                _request: Request<$req>,
            ) -> Pin<Box<dyn std::future::Future<Output = Reply<$resp>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(call($name, async { Err::<$resp, _>(ReefError::Unimplemented($name)) }))
            }
        )*
    };
}

#[tonic::async_trait]
impl cri::runtime_service_server::RuntimeService for Cri {
    async fn version(&self, request: Request<cri::VersionRequest>) -> Reply<cri::VersionResponse> {
        call("Version", version::handle(request.into_inner())).await
    }

    async fn status(&self, request: Request<cri::StatusRequest>) -> Reply<cri::StatusResponse> {
        call("Status", status::handle(&self.agent, request.into_inner())).await
    }

    async fn runtime_config(&self, request: Request<cri::RuntimeConfigRequest>) -> Reply<cri::RuntimeConfigResponse> {
        call("RuntimeConfig", runtime_config::get(&self.agent, request.into_inner())).await
    }

    async fn update_runtime_config(
        &self,
        request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> Reply<cri::UpdateRuntimeConfigResponse> {
        call("UpdateRuntimeConfig", runtime_config::update(&self.agent, request.into_inner())).await
    }

    async fn run_pod_sandbox(&self, request: Request<cri::RunPodSandboxRequest>) -> Reply<cri::RunPodSandboxResponse> {
        call("RunPodSandbox", sandbox_run::handle(Arc::clone(&self.agent), request.into_inner())).await
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> Reply<cri::StopPodSandboxResponse> {
        call("StopPodSandbox", sandbox_stop::handle(Arc::clone(&self.agent), request.into_inner())).await
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> Reply<cri::RemovePodSandboxResponse> {
        call("RemovePodSandbox", sandbox_remove::handle(Arc::clone(&self.agent), request.into_inner())).await
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Reply<cri::PodSandboxStatusResponse> {
        call("PodSandboxStatus", sandbox_status::handle(Arc::clone(&self.agent), request.into_inner())).await
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Reply<cri::ListPodSandboxResponse> {
        call("ListPodSandbox", sandbox_list::handle(&self.agent, request.into_inner())).await
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> Reply<cri::CreateContainerResponse> {
        call("CreateContainer", container_create::handle(Arc::clone(&self.agent), request.into_inner())).await
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> Reply<cri::StartContainerResponse> {
        call("StartContainer", container_start::handle(Arc::clone(&self.agent), request.into_inner())).await
    }

    async fn stop_container(&self, request: Request<cri::StopContainerRequest>) -> Reply<cri::StopContainerResponse> {
        call("StopContainer", container_stop::handle(Arc::clone(&self.agent), request.into_inner())).await
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> Reply<cri::RemoveContainerResponse> {
        call("RemoveContainer", container_remove::handle(Arc::clone(&self.agent), request.into_inner())).await
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Reply<cri::ContainerStatusResponse> {
        call("ContainerStatus", container_status::handle(Arc::clone(&self.agent), request.into_inner())).await
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Reply<cri::ListContainersResponse> {
        call("ListContainers", container_list::handle(Arc::clone(&self.agent), request.into_inner())).await
    }

    async fn exec_sync(&self, request: Request<cri::ExecSyncRequest>) -> Reply<cri::ExecSyncResponse> {
        call("ExecSync", container_exec_sync::handle(Arc::clone(&self.agent), request.into_inner())).await
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> Reply<cri::ContainerStatsResponse> {
        call("ContainerStats", container_stats::one(Arc::clone(&self.agent), request.into_inner())).await
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> Reply<cri::ListContainerStatsResponse> {
        call("ListContainerStats", container_stats::list(Arc::clone(&self.agent), request.into_inner())).await
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> Reply<cri::UpdateContainerResourcesResponse> {
        call("UpdateContainerResources", container_stats::update(Arc::clone(&self.agent), request.into_inner())).await
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> Reply<cri::ReopenContainerLogResponse> {
        let agent = Arc::clone(&self.agent);
        call("ReopenContainerLog", async move {
            let id = request.into_inner().container_id;
            crate::blocking::run("reopen log task", move || agent.containers.reopen_log(&agent.pods, &id)).await?;
            Ok(cri::ReopenContainerLogResponse {})
        })
        .await
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> Reply<cri::PodSandboxStatsResponse> {
        call("PodSandboxStats", sandbox_stats::one(Arc::clone(&self.agent), request.into_inner())).await
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> Reply<cri::ListPodSandboxStatsResponse> {
        call("ListPodSandboxStats", sandbox_stats::list(Arc::clone(&self.agent), request.into_inner())).await
    }

    async fn exec(&self, request: Request<cri::ExecRequest>) -> Reply<cri::ExecResponse> {
        call("Exec", container_exec::handle(Arc::clone(&self.agent), request.into_inner())).await
    }

    async fn attach(&self, request: Request<cri::AttachRequest>) -> Reply<cri::AttachResponse> {
        call("Attach", container_attach::handle(Arc::clone(&self.agent), request.into_inner())).await
    }

    async fn port_forward(&self, request: Request<cri::PortForwardRequest>) -> Reply<cri::PortForwardResponse> {
        call("PortForward", sandbox_port_forward::handle(Arc::clone(&self.agent), request.into_inner())).await
    }

    async fn list_metric_descriptors(
        &self,
        request: Request<cri::ListMetricDescriptorsRequest>,
    ) -> Reply<cri::ListMetricDescriptorsResponse> {
        call("ListMetricDescriptors", metric_descriptors::handle(request.into_inner())).await
    }

    async fn list_pod_sandbox_metrics(
        &self,
        request: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> Reply<cri::ListPodSandboxMetricsResponse> {
        call("ListPodSandboxMetrics", sandbox_metrics::handle(Arc::clone(&self.agent), request.into_inner())).await
    }

    type GetContainerEventsStream = container_events::EventStream;

    async fn get_container_events(
        &self,
        request: Request<cri::GetEventsRequest>,
    ) -> Reply<Self::GetContainerEventsStream> {
        call("GetContainerEvents", async { container_events::handle(&self.agent, request.into_inner()) }).await
    }

    not_yet! {
        checkpoint_container(cri::CheckpointContainerRequest) -> cri::CheckpointContainerResponse = "CheckpointContainer";
    }
}

#[tonic::async_trait]
impl cri::image_service_server::ImageService for Cri {
    async fn list_images(&self, request: Request<cri::ListImagesRequest>) -> Reply<cri::ListImagesResponse> {
        call("ListImages", image_list::handle(&self.agent, request.into_inner())).await
    }

    async fn image_status(&self, request: Request<cri::ImageStatusRequest>) -> Reply<cri::ImageStatusResponse> {
        call("ImageStatus", image_status::handle(&self.agent, request.into_inner())).await
    }

    async fn pull_image(&self, request: Request<cri::PullImageRequest>) -> Reply<cri::PullImageResponse> {
        call("PullImage", image_pull::handle(&self.agent, request.into_inner())).await
    }

    async fn remove_image(&self, request: Request<cri::RemoveImageRequest>) -> Reply<cri::RemoveImageResponse> {
        call("RemoveImage", image_remove::handle(&self.agent, request.into_inner())).await
    }

    async fn image_fs_info(&self, request: Request<cri::ImageFsInfoRequest>) -> Reply<cri::ImageFsInfoResponse> {
        call("ImageFsInfo", image_fs_info::handle(&self.agent, request.into_inner())).await
    }
}

/// The CRI's view of a stored image.
pub fn image_to_cri(record: &reef_images::store::ImageRecord) -> cri::Image {
    let (uid, username) = user_of(&record.user);
    cri::Image {
        id: record.id.clone(),
        repo_tags: record.repo_tags.clone(),
        repo_digests: record.repo_digests.clone(),
        size: record.size,
        uid,
        username,
        spec: Some(cri::ImageSpec { image: record.id.clone(), ..Default::default() }),
        pinned: record.pinned,
    }
}

/// The image config's `User` is `user[:group]`; kubelet wants a uid when the user part is numeric (it checks
/// runAsNonRoot against it) and a name otherwise.
fn user_of(user: &str) -> (Option<cri::Int64Value>, String) {
    let name = user.split(':').next().unwrap_or_default();
    if name.is_empty() {
        return (None, String::new());
    }
    match name.parse::<i64>() {
        Ok(uid) => (Some(cri::Int64Value { value: uid }), String::new()),
        Err(_) => (None, name.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_users_become_uids_and_names_stay_names() {
        assert_eq!(user_of("1000"), (Some(cri::Int64Value { value: 1000 }), String::new()));
        assert_eq!(user_of("1000:1000"), (Some(cri::Int64Value { value: 1000 }), String::new()));
        assert_eq!(user_of("nobody:nogroup"), (None, "nobody".into()));
        assert_eq!(user_of(""), (None, String::new()));
    }
}
