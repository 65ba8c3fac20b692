//! Short CRI calls for tests.

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use tonic::transport::Channel;

type Images = ImageServiceClient<Channel>;

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec { image: image.to_string(), ..Default::default() })
}

pub async fn pull(c: &mut Images, image: &str) -> Result<String, tonic::Status> {
    pull_with(c, image, None).await
}

pub async fn pull_with(c: &mut Images, image: &str, auth: Option<cri::AuthConfig>) -> Result<String, tonic::Status> {
    c.pull_image(cri::PullImageRequest { image: spec(image), auth, sandbox_config: None })
        .await
        .map(|r| r.into_inner().image_ref)
}

pub async fn list(c: &mut Images) -> Vec<cri::Image> {
    c.list_images(cri::ListImagesRequest { filter: None }).await.expect("ListImages").into_inner().images
}

pub async fn status(c: &mut Images, image: &str) -> cri::ImageStatusResponse {
    c.image_status(cri::ImageStatusRequest { image: spec(image), verbose: true })
        .await
        .expect("ImageStatus")
        .into_inner()
}

pub async fn remove(c: &mut Images, image: &str) {
    c.remove_image(cri::RemoveImageRequest { image: spec(image) }).await.expect("RemoveImage");
}

pub fn basic(user: &str, password: &str) -> Option<cri::AuthConfig> {
    Some(cri::AuthConfig { username: user.into(), password: password.into(), ..Default::default() })
}

/// A gRPC transport with no timer of its own: tonic's channel enforces a request's `grpc-timeout` itself and
/// answers Cancelled when it passes, which would hide the code reefd answers with. This one only sends the header.
#[derive(Clone)]
pub struct NoClientTimer(hyper::client::conn::http2::SendRequest<tonic::body::Body>);

impl tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for NoClientTimer {
    type Response = tonic::codegen::http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self::Response, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

/// An image client over `NoClientTimer`, on its own connection.
pub async fn images_without_client_timer(socket: &std::path::Path) -> ImageServiceClient<NoClientTimer> {
    let stream = tokio::net::UnixStream::connect(socket).await.expect("connect to reefd");
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("HTTP/2 handshake with reefd");
    tokio::spawn(connection);
    ImageServiceClient::with_origin(NoClientTimer(sender), tonic::codegen::http::Uri::from_static("http://reefd"))
}
