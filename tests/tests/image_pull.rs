//! Pulling, listing, inspecting and removing images against a real registry.

use std::os::unix::fs::FileTypeExt;

use reef_tests::cri::{list, pull, remove, status};
use reef_tests::image::{Compression, ImageBuilder, Layer, busybox_layer, index};
use reef_tests::push::{push_image, push_manifest};
use reef_tests::reefd::Reefd;
use reef_tests::registry::Registry;
use reef_tests::require_e2e;
use serde_json::json;

fn insecure(registry: &str) -> String {
    format!("[registry]\ninsecure = [\"{registry}\"]\n")
}

#[tokio::test]
async fn pulling_busybox_returns_the_config_digest_and_lists_its_names() {
    require_e2e!();
    let registry = Registry::start();
    let image = ImageBuilder::new()
        .layer(busybox_layer(), Compression::Gzip)
        .config(json!({"Cmd": ["sh"], "User": "1000"}))
        .build();
    let manifest_digest = push_image(&registry.addr(), "busybox", "1.36", &image, None);
    let reefd = Reefd::start(&insecure(&registry.addr()));
    let mut images = reefd.images().await;
    let name = format!("{}/busybox:1.36", registry.addr());

    let id = pull(&mut images, &name).await.expect("pull");
    assert_eq!(id, image.config_digest);
    let listed = list(&mut images).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].repo_tags, vec![name.clone()]);
    assert_eq!(listed[0].repo_digests, vec![format!("{}/busybox@{manifest_digest}", registry.addr())]);
    assert!(listed[0].size > 1_000_000, "size counts the unpacked busybox: {}", listed[0].size);
    assert_eq!(listed[0].uid.as_ref().map(|u| u.value), Some(1000));

    let st = status(&mut images, &name).await;
    assert_eq!(st.image.expect("image status").id, id);
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).expect("verbose info is JSON");
    assert_eq!(info["imageSpec"]["config"]["User"], "1000");
    assert_eq!(status(&mut images, &id).await.image.map(|i| i.id), Some(id.clone()), "status by id");

    let fs = images.image_fs_info(k8s_cri::v1::ImageFsInfoRequest {}).await.expect("ImageFsInfo").into_inner();
    let usage = &fs.image_filesystems[0];
    assert!(usage.used_bytes.as_ref().expect("used bytes").value >= listed[0].size);
    let inodes = usage.inodes_used.as_ref().expect("inodes").value;
    assert!(inodes > 100, "busybox applet links count as inodes: {inodes}");
    assert_eq!(usage.fs_id.as_ref().expect("fs id").mountpoint, reefd.root().join("layers").display().to_string());
    assert!(usage.timestamp > 1_700_000_000_000_000_000, "timestamps are in nanoseconds");

    let filtered = images
        .list_images(k8s_cri::v1::ListImagesRequest {
            filter: Some(k8s_cri::v1::ImageFilter {
                image: Some(k8s_cri::v1::ImageSpec { image: name.clone(), ..Default::default() }),
            }),
        })
        .await
        .expect("ListImages with a filter")
        .into_inner()
        .images;
    assert_eq!(filtered.len(), 1);

    assert_eq!(pull(&mut images, &name).await.expect("second pull"), id, "pulling again is idempotent");
    assert_eq!(list(&mut images).await.len(), 1);
    assert!(reefd.leftover_tmp().is_empty());
}

#[tokio::test]
async fn image_users_by_name_are_reported_as_usernames() {
    require_e2e!();
    let registry = Registry::start();
    let image = ImageBuilder::new()
        .layer(Layer::new().file("a", b"1"), Compression::Gzip)
        .config(json!({"User": "nobody:nogroup"}))
        .build();
    push_image(&registry.addr(), "named", "1", &image, None);
    let reefd = Reefd::start(&insecure(&registry.addr()));
    let mut images = reefd.images().await;
    pull(&mut images, &format!("{}/named:1", registry.addr())).await.expect("pull");
    let img = list(&mut images).await.remove(0);
    assert_eq!(img.username, "nobody");
    assert!(img.uid.is_none());
}

#[tokio::test]
async fn removing_by_tag_digest_and_id_and_missing_images_is_fine() {
    require_e2e!();
    let registry = Registry::start();
    let image = ImageBuilder::new().layer(Layer::new().file("a", b"1"), Compression::Gzip).build();
    let digest = push_image(&registry.addr(), "app", "1", &image, None);
    push_image(&registry.addr(), "app", "2", &image, None);
    let reefd = Reefd::start(&insecure(&registry.addr()));
    let mut images = reefd.images().await;
    let (one, two) = (format!("{}/app:1", registry.addr()), format!("{}/app:2", registry.addr()));
    let id = pull(&mut images, &one).await.expect("pull 1");
    assert_eq!(pull(&mut images, &two).await.expect("pull 2"), id);
    assert_eq!(list(&mut images).await[0].repo_tags.len(), 2);

    remove(&mut images, &one).await;
    let left = list(&mut images).await;
    assert_eq!(left.len(), 1, "removing one of two tags keeps the image");
    assert_eq!(left[0].repo_tags, vec![two.clone()]);
    assert!(status(&mut images, &one).await.image.is_none());

    remove(&mut images, &format!("{}/app@{digest}", registry.addr())).await;
    assert_eq!(list(&mut images).await.len(), 1, "the tag still names it");
    remove(&mut images, &id).await;
    assert!(list(&mut images).await.is_empty(), "removing by id removes the image");
    assert!(reefd.layer_dirs().is_empty(), "its layers are gone too");

    remove(&mut images, &two).await;
    remove(&mut images, "docker.io/library/never-pulled:latest").await;
    assert!(status(&mut images, &two).await.image.is_none());

    // By digest alone.
    let by_digest = format!("{}/app@{digest}", registry.addr());
    assert_eq!(pull(&mut images, &by_digest).await.expect("pull by digest"), id);
    let img = list(&mut images).await.remove(0);
    assert!(img.repo_tags.is_empty());
    assert_eq!(img.repo_digests, vec![by_digest.clone()]);
    remove(&mut images, &by_digest).await;
    assert!(list(&mut images).await.is_empty());
}

#[tokio::test]
async fn whiteouts_and_opaque_directories_are_stored_for_overlayfs() {
    require_e2e!();
    let registry = Registry::start();
    let base = Layer::new().dir("etc/").file("etc/old.conf", b"old").dir("var/cache/").file("var/cache/stale", b"x");
    let upper = Layer::new()
        .file("etc/.wh.old.conf", b"")
        .dir("var/cache/")
        .file("var/cache/.wh..wh..opq", b"")
        .file("var/cache/fresh", b"y");
    let image = ImageBuilder::new().layer(base, Compression::Gzip).layer(upper, Compression::Gzip).build();
    push_image(&registry.addr(), "layered", "1", &image, None);
    let reefd = Reefd::start(&insecure(&registry.addr()));
    let mut images = reefd.images().await;
    pull(&mut images, &format!("{}/layered:1", registry.addr())).await.expect("pull");

    let layers = reefd.layer_dirs();
    assert_eq!(layers.len(), 2);
    let top = layers.iter().find(|l| l.join("var/cache/fresh").exists()).expect("the upper layer");
    let whiteout = std::fs::symlink_metadata(top.join("etc/old.conf")).expect("whiteout");
    assert!(whiteout.file_type().is_char_device(), "a whiteout is a 0:0 char device");
    assert_eq!(std::os::unix::fs::MetadataExt::rdev(&whiteout), 0);
    assert_eq!(xattr::get(top.join("var/cache"), "trusted.overlay.opaque").expect("xattr").as_deref(), Some(&b"y"[..]));
    for layer in &layers {
        let out = std::process::Command::new("find").arg(layer).arg("-name").arg(".wh.*").output().expect("find");
        assert!(out.stdout.is_empty(), "no .wh. files are stored: {}", String::from_utf8_lossy(&out.stdout));
    }
}

#[tokio::test]
async fn indexes_and_manifest_lists_resolve_to_this_platform() {
    require_e2e!();
    let registry = Registry::start();
    for docker in [false, true] {
        let amd =
            ImageBuilder::new().layer(Layer::new().file("arch", b"amd64"), Compression::Gzip).architecture("amd64");
        let arm =
            ImageBuilder::new().layer(Layer::new().file("arch", b"arm64"), Compression::Gzip).architecture("arm64");
        let (amd, arm) = if docker { (amd.docker().build(), arm.docker().build()) } else { (amd.build(), arm.build()) };
        let repo = if docker { "multi-docker" } else { "multi-oci" };
        for img in [&arm, &amd] {
            let digest = reef_tests::sha256(&img.manifest);
            push_image(&registry.addr(), repo, &digest, img, None);
        }
        let (body, media_type) = index(&[&arm, &amd], docker);
        let index_digest = push_manifest(&registry.addr(), repo, "1", &body, &media_type, None);

        let reefd = Reefd::start(&insecure(&registry.addr()));
        let mut images = reefd.images().await;
        let id = pull(&mut images, &format!("{}/{repo}:1", registry.addr())).await.expect("pull index");
        assert_eq!(id, amd.config_digest, "the amd64 image was chosen ({repo})");
        let img = list(&mut images).await.remove(0);
        assert_eq!(
            img.repo_digests,
            vec![format!("{}/{repo}@{index_digest}", registry.addr())],
            "repo digest is the index's"
        );
        let layer = &reefd.layer_dirs()[0];
        assert_eq!(std::fs::read(layer.join("arch")).expect("arch file"), b"amd64");
    }
}

#[tokio::test]
async fn zstd_and_uncompressed_layers_unpack() {
    require_e2e!();
    let registry = Registry::start();
    let image = ImageBuilder::new()
        .layer(Layer::new().file("z", b"zstd layer"), Compression::Zstd)
        .layer(Layer::new().file("p", b"plain layer"), Compression::None)
        .build();
    push_image(&registry.addr(), "mixed", "1", &image, None);
    let reefd = Reefd::start(&insecure(&registry.addr()));
    let mut images = reefd.images().await;
    assert_eq!(pull(&mut images, &format!("{}/mixed:1", registry.addr())).await.expect("pull"), image.config_digest);
    let files: Vec<_> = reefd
        .layer_dirs()
        .iter()
        .flat_map(|l| std::fs::read_dir(l).unwrap().flatten().map(|e| e.file_name()))
        .collect();
    assert!(files.contains(&"z".into()) && files.contains(&"p".into()), "{files:?}");
}

#[tokio::test]
async fn the_store_survives_a_restart() {
    require_e2e!();
    let registry = Registry::start();
    let image = ImageBuilder::new().layer(busybox_layer(), Compression::Gzip).build();
    push_image(&registry.addr(), "busybox", "1", &image, None);
    let mut reefd = Reefd::start(&insecure(&registry.addr()));
    let name = format!("{}/busybox:1", registry.addr());
    pull(&mut reefd.images().await, &name).await.expect("pull");
    reefd.restart();
    let mut images = reefd.images().await;
    let listed = list(&mut images).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, image.config_digest);
    assert!(reefd.layer_dirs()[0].join("bin/busybox").exists());
}
