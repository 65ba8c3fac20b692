use k8s_cri::v1::*;
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args[1].clone();
    let ch =
        tonic::transport::Endpoint::try_from("http://[::]:50051")?
            .connect_with_connector(tower::service_fn(move |_| {
                let p = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(p).await?))
                }
            }))
            .await?;
    let mut img = image_service_client::ImageServiceClient::new(ch.clone());
    for a in &args[2..] {
        let (op, arg) = a.split_once('=').unwrap_or((a, ""));
        let r: Result<String, tonic::Status> = match op {
            "pull" => img
                .pull_image(PullImageRequest {
                    image: Some(ImageSpec { image: arg.into(), ..Default::default() }),
                    ..Default::default()
                })
                .await
                .map(|r| format!("{:?}", r.into_inner())),
            "list" => img.list_images(ListImagesRequest::default()).await.map(|r| format!("{:#?}", r.into_inner())),
            "status" => img
                .image_status(ImageStatusRequest {
                    image: Some(ImageSpec { image: arg.into(), ..Default::default() }),
                    verbose: true,
                })
                .await
                .map(|r| format!("{:?}", r.into_inner())),
            "rm" => img
                .remove_image(RemoveImageRequest { image: Some(ImageSpec { image: arg.into(), ..Default::default() }) })
                .await
                .map(|r| format!("{:?}", r.into_inner())),
            "fs" => img.image_fs_info(ImageFsInfoRequest {}).await.map(|r| format!("{:?}", r.into_inner())),
            _ => panic!(),
        };
        println!("{op} {arg}: {r:?}");
    }
    Ok(())
}
