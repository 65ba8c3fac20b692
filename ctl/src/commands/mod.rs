//! One module per subcommand.

pub mod imagefsinfo;
pub mod images;
pub mod info;
pub mod inspecti;
pub mod pull;
pub mod rmi;
pub mod version;

use k8s_cri::v1 as cri;

pub fn image_spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec { image: image.to_string(), ..Default::default() })
}
