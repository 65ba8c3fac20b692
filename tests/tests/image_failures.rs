//! Pulls that fail: each answers with a precise code naming the image, leaves nothing listed or half-written,
//! and the next pull works.

use reef_tests::cri::{images_without_client_timer, list, pull};
use reef_tests::image::{Compression, ImageBuilder, Layer, random_bytes};
use reef_tests::proxy::Proxy;
use reef_tests::push::push_image;
use reef_tests::reefd::Reefd;
use reef_tests::registry::Registry;
use reef_tests::require_e2e;
use tonic::Code;

fn insecure(hosts: &[&str]) -> String {
    let list: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    format!("[registry]\ninsecure = [{}]\n", list.join(", "))
}

fn big_image(mib: usize) -> reef_tests::image::Image {
    ImageBuilder::new().layer(Layer::new().file("big.bin", &random_bytes(mib << 20)), Compression::Gzip).build()
}

async fn assert_clean(reefd: &Reefd) {
    assert!(list(&mut reefd.images().await).await.is_empty(), "a failed pull lists nothing");
    assert!(reefd.leftover_tmp().is_empty(), "no temporary files: {:?}", reefd.leftover_tmp());
}

#[tokio::test]
async fn unknown_repositories_and_tags_are_not_found() {
    require_e2e!();
    let registry = Registry::start();
    push_image(
        &registry.addr(),
        "exists",
        "1",
        &ImageBuilder::new().layer(Layer::new().file("a", b"1"), Compression::Gzip).build(),
        None,
    );
    let reefd = Reefd::start(&insecure(&[&registry.addr()]));
    let mut images = reefd.images().await;
    for name in ["exists:nope", "nope:1"] {
        let err = pull(&mut images, &format!("{}/{name}", registry.addr())).await.expect_err("missing image");
        assert_eq!(err.code(), Code::NotFound, "{name}: {err:?}");
        assert!(err.message().contains(name.split(':').next().unwrap_or(name)), "{}", err.message());
    }
    assert_clean(&reefd).await;
}

#[tokio::test]
async fn malformed_references_are_invalid_arguments() {
    require_e2e!();
    let reefd = Reefd::start("");
    let mut images = reefd.images().await;
    for bad in ["", "Busybox", "a@sha256:zz", "busybox:bad:tag", "host:99999/x", "a//b"] {
        let err = pull(&mut images, bad).await.expect_err(bad);
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
    }
}

#[tokio::test]
async fn an_unreachable_registry_is_unavailable_and_nothing_is_contacted_elsewhere() {
    require_e2e!();
    let mut registry = Registry::start();
    let addr = registry.addr();
    registry.kill();
    let reefd = Reefd::start(&insecure(&[&addr]));
    let err = pull(&mut reefd.images().await, &format!("{addr}/gone:1")).await.expect_err("registry is down");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains(&addr), "{}", err.message());
    assert_clean(&reefd).await;
}

#[tokio::test]
async fn a_registry_dying_mid_layer_leaves_nothing_and_a_retry_works() {
    require_e2e!();
    let registry = Registry::start();
    let image = big_image(8);
    push_image(&registry.addr(), "big", "1", &image, None);
    let proxy = Proxy::start(registry.port());
    proxy.cut_after(2 << 20);
    let reefd = Reefd::start(&insecure(&[&proxy.addr()]));
    let name = format!("{}/big:1", proxy.addr());
    let mut images = reefd.images().await;
    let err = pull(&mut images, &name).await.expect_err("the connection is cut mid-layer");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_clean(&reefd).await;
    proxy.behave();
    assert_eq!(pull(&mut images, &name).await.expect("retry"), image.config_digest);
}

#[tokio::test]
async fn a_corrupted_transfer_is_data_loss() {
    require_e2e!();
    let registry = Registry::start();
    // Uncompressed, so the flipped byte reaches the digest check rather than the decompressor.
    let image = ImageBuilder::new().layer(Layer::new().file("data", &random_bytes(1 << 20)), Compression::None).build();
    push_image(&registry.addr(), "corrupt", "1", &image, None);
    let proxy = Proxy::start(registry.port());
    proxy.corrupt_at(600 << 10);
    let reefd = Reefd::start(&insecure(&[&proxy.addr()]));
    let name = format!("{}/corrupt:1", proxy.addr());
    let mut images = reefd.images().await;
    let err = pull(&mut images, &name).await.expect_err("corrupted bytes");
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(err.message().contains("digest"), "{}", err.message());
    assert_clean(&reefd).await;
    proxy.behave();
    assert_eq!(pull(&mut images, &name).await.expect("clean pull"), image.config_digest);
}

#[tokio::test]
async fn sigkill_of_reefd_mid_pull_leaves_nothing_half_listed() {
    require_e2e!();
    let registry = Registry::start();
    let image = big_image(16);
    push_image(&registry.addr(), "slow", "1", &image, None);
    let proxy = Proxy::start(registry.port());
    proxy.delay_per_chunk(5);
    let mut reefd = Reefd::start(&insecure(&[&proxy.addr()]));
    let name = format!("{}/slow:1", proxy.addr());
    let socket = reefd.socket();
    let pulling = tokio::spawn({
        let name = name.clone();
        async move {
            let mut images =
                k8s_cri::v1::image_service_client::ImageServiceClient::new(reef_tests::reefd::connect(&socket).await);
            pull(&mut images, &name).await
        }
    });
    // Kill once the layer is partly on disk.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while reefd.leftover_tmp().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!reefd.leftover_tmp().is_empty(), "the pull was under way when reefd was killed");
    reefd.kill9();
    assert!(pulling.await.expect("join").is_err(), "the pull did not complete");
    proxy.behave();
    reefd.spawn();
    let mut images = reefd.images().await;
    assert!(list(&mut images).await.is_empty(), "nothing half-listed after restart");
    assert!(reefd.leftover_tmp().is_empty(), "restart cleaned the half-made layer: {:?}", reefd.leftover_tmp());
    assert!(reefd.layer_dirs().is_empty());
    assert_eq!(pull(&mut images, &name).await.expect("pull after restart"), image.config_digest);
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_share_one_download() {
    require_e2e!();
    let registry = Registry::start();
    let image = big_image(8);
    let layer_size = image.layers[0].data.len() as u64;
    push_image(&registry.addr(), "shared", "1", &image, None);
    let proxy = Proxy::start(registry.port());
    proxy.delay_per_chunk(1);
    let reefd = Reefd::start(&insecure(&[&proxy.addr()]));
    let name = format!("{}/shared:1", proxy.addr());
    let mut pulls = Vec::new();
    for _ in 0..4 {
        let socket = reefd.socket();
        let name = name.clone();
        pulls.push(tokio::spawn(async move {
            let mut images =
                k8s_cri::v1::image_service_client::ImageServiceClient::new(reef_tests::reefd::connect(&socket).await);
            pull(&mut images, &name).await
        }));
    }
    for p in pulls {
        assert_eq!(p.await.expect("join").expect("pull"), image.config_digest);
    }
    assert!(
        proxy.served() < layer_size + layer_size / 2,
        "the layer was downloaded once: {} bytes served for a {layer_size}-byte layer",
        proxy.served()
    );
    assert_eq!(list(&mut reefd.images().await).await.len(), 1);
}

#[tokio::test]
async fn a_full_disk_is_resource_exhausted_and_leaves_nothing() {
    require_e2e!();
    let registry = Registry::start();
    let image = big_image(8);
    push_image(&registry.addr(), "huge", "1", &image, None);
    let reefd = Reefd::start_with_small_root(&insecure(&[&registry.addr()]), "4m");
    let err = pull(&mut reefd.images().await, &format!("{}/huge:1", registry.addr())).await.expect_err("disk full");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("no space"), "{}", err.message());
    assert_clean(&reefd).await;
    assert!(reefd.layer_dirs().is_empty());
}

/// Waits until the store holds nothing: no record, no blob, no layer, nothing in tmp/. A stopped pull cleans up in
/// its own task, which may still be at it when the RPC has answered.
async fn assert_store_empties(reefd: &Reefd) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let listed = list(&mut reefd.images().await).await.len();
        let (tmp, layers, blobs) = (reefd.leftover_tmp(), reefd.layer_dirs(), reefd.blob_files());
        if listed == 0 && tmp.is_empty() && layers.is_empty() && blobs.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: {listed} images, tmp {tmp:?}, layers {layers:?}, blobs {blobs:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn pull_request(name: &str, timeout: Option<std::time::Duration>) -> tonic::Request<k8s_cri::v1::PullImageRequest> {
    let mut request = tonic::Request::new(k8s_cri::v1::PullImageRequest {
        image: Some(k8s_cri::v1::ImageSpec { image: name.to_string(), ..Default::default() }),
        ..Default::default()
    });
    if let Some(t) = timeout {
        request.set_timeout(t);
    }
    request
}

#[tokio::test]
async fn a_pull_past_its_deadline_is_deadline_exceeded_and_leaves_nothing() {
    require_e2e!();
    let registry = Registry::start();
    // A small layer that is unpacked before the deadline and a big one that is not.
    let image = ImageBuilder::new()
        .layer(Layer::new().file("small", b"done early"), Compression::Gzip)
        .layer(Layer::new().file("big.bin", &random_bytes(8 << 20)), Compression::Gzip)
        .build();
    push_image(&registry.addr(), "slow", "1", &image, None);
    let proxy = Proxy::start(registry.port());
    proxy.delay_per_chunk(5);
    let reefd = Reefd::start(&insecure(&[&proxy.addr()]));
    let name = format!("{}/slow:1", proxy.addr());
    let mut images = reefd.images().await;
    // The code the client sees is reefd's, not a timer of the client's own.
    let mut timed = images_without_client_timer(&reefd.socket()).await;

    // What the CRI conformance test sends: a deadline too short for any pull.
    let err = timed.pull_image(pull_request(&name, Some(std::time::Duration::from_millis(1)))).await;
    assert_eq!(err.expect_err("1ms is too short").code(), Code::DeadlineExceeded);

    let pulling = {
        let mut images = timed.clone();
        let request = pull_request(&name, Some(std::time::Duration::from_millis(1500)));
        tokio::spawn(async move { images.pull_image(request).await })
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while reefd.layer_dirs().is_empty() && std::time::Instant::now() < until && !pulling.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(reefd.layer_dirs().len(), 1, "the small layer was unpacked before the deadline");
    let err = pulling.await.expect("join").expect_err("the big layer takes longer than the deadline");
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_store_empties(&reefd).await;

    // A client that goes away stops its pull the same way.
    let pulling = {
        let (mut images, request) = (images.clone(), pull_request(&name, None));
        tokio::spawn(async move { images.pull_image(request).await })
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while reefd.leftover_tmp().is_empty() && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(!reefd.leftover_tmp().is_empty(), "the pull was under way when its client left");
    pulling.abort();
    assert!(pulling.await.is_err(), "the client gave up");
    assert_store_empties(&reefd).await;

    proxy.behave();
    assert_eq!(pull(&mut images, &name).await.expect("a pull without deadline"), image.config_digest);
}
