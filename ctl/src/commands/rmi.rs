use k8s_cri::v1 as cri;

use super::image_spec;
use crate::cli::RmiArgs;
use crate::client::{Clients, status_error};

/// Removes each image; a missing one is reported at the end, after the others were removed.
pub async fn run(clients: &Clients, args: &RmiArgs) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for name in &args.images {
        let status = clients
            .images()
            .image_status(cri::ImageStatusRequest { image: image_spec(name), verbose: false })
            .await
            .map_err(|s| status_error(&format!("remove {name}"), s))?
            .into_inner();
        let Some(image) = status.image else {
            missing.push(name.clone());
            continue;
        };
        clients
            .images()
            .remove_image(cri::RemoveImageRequest { image: image_spec(name) })
            .await
            .map_err(|s| status_error(&format!("remove {name}"), s))?;
        println!("Deleted: {}", image.id);
    }
    match missing.as_slice() {
        [] => Ok(()),
        names => anyhow::bail!("no such image: {}", names.join(", ")),
    }
}
