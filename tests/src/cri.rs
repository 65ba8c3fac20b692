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
