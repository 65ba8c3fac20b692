//! Hostile layers: refused or confined, never written outside the store, never half-listed.

use reef_tests::cri::{list, pull};
use reef_tests::image::{Compression, ImageBuilder, Layer};
use reef_tests::push::push_image;
use reef_tests::reefd::Reefd;
use reef_tests::registry::Registry;
use reef_tests::require_e2e;
use tonic::Code;

struct Case {
    repo: &'static str,
    layer: Layer,
}

/// Pulls `layer` as a one-layer image into a fresh reefd; returns the outcome and the reefd to inspect.
async fn pull_layer(registry: &Registry, case: Case) -> (Result<String, tonic::Status>, Reefd) {
    let image = ImageBuilder::new()
        .layer(Layer::new().file("ok", b"fine"), Compression::Gzip)
        .layer(case.layer, Compression::Gzip)
        .build();
    push_image(&registry.addr(), case.repo, "1", &image, None);
    let reefd = Reefd::start(&format!("[registry]\ninsecure = [\"{}\"]\n", registry.addr()));
    let result = pull(&mut reefd.images().await, &format!("{}/{}:1", registry.addr(), case.repo)).await;
    (result, reefd)
}

/// Nothing may appear next to the store: the layer names below aim at these paths.
fn assert_nothing_escaped(reefd: &Reefd) {
    let parent = reefd.root().parent().expect("root has a parent").to_path_buf();
    for name in ["escape", "pwned", "outside"] {
        assert!(!parent.join(name).exists(), "{name} was written outside the store");
        assert!(!reefd.root().join(name).exists(), "{name} was written into the store's root, outside any layer");
    }
    assert!(!std::path::Path::new("/tmp/reef-hostile-pwned").exists());
}

#[tokio::test]
async fn dot_dot_entries_are_refused_and_nothing_is_left() {
    require_e2e!();
    let registry = Registry::start();
    for (repo, name) in [("dotdot", "../../escape"), ("nested-dotdot", "a/../../../escape")] {
        let (result, reefd) = pull_layer(&registry, Case { repo, layer: Layer::new().file(name, b"pwned") }).await;
        let err = result.expect_err("a layer escaping with .. must be refused");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains(repo), "the message names the image: {}", err.message());
        assert!(err.message().contains("escape"), "the message names the entry: {}", err.message());
        assert_nothing_escaped(&reefd);
        assert!(list(&mut reefd.images().await).await.is_empty(), "nothing listed after a refused pull");
        assert!(reefd.leftover_tmp().is_empty(), "no temporary files: {:?}", reefd.leftover_tmp());
        assert!(reefd.layer_dirs().len() <= 1, "only the harmless first layer may stay (until the next start)");
    }
}

#[tokio::test]
async fn hardlinks_out_of_the_layer_are_refused() {
    require_e2e!();
    let registry = Registry::start();
    for (repo, target) in [("hardlink-dotdot", "../../../../etc/shadow"), ("hardlink-abs", "/etc/shadow")] {
        let (result, reefd) =
            pull_layer(&registry, Case { repo, layer: Layer::new().hardlink("shadow", target) }).await;
        let err = result.expect_err("a hardlink leaving the layer must be refused");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(list(&mut reefd.images().await).await.is_empty());
        assert!(reefd.leftover_tmp().is_empty());
    }
}

#[tokio::test]
async fn absolute_paths_and_writes_through_symlinks_stay_inside_the_layer() {
    require_e2e!();
    let registry = Registry::start();
    let layer = Layer::new()
        .file("/abs/file", b"absolute")
        .symlink("evil", "/tmp")
        .file("evil/reef-hostile-pwned", b"x")
        .symlink("up", "../../../../..")
        .file("up/pwned", b"x");
    let (result, reefd) = pull_layer(&registry, Case { repo: "symlinks", layer }).await;
    result.expect("confined entries are harmless: the pull succeeds");
    assert_nothing_escaped(&reefd);
    let layer = reefd.layer_dirs().into_iter().find(|l| l.join("abs/file").exists()).expect("the second layer");
    assert!(layer.join("tmp/reef-hostile-pwned").exists(), "the write through the symlink landed inside the layer");
    assert!(layer.join("pwned").exists());
}

#[tokio::test]
async fn device_nodes_are_skipped_unless_allowed() {
    require_e2e!();
    let registry = Registry::start();
    let (result, reefd) =
        pull_layer(&registry, Case { repo: "devices", layer: Layer::new().char_device("dev/mem") }).await;
    result.expect("the pull succeeds without the device");
    assert!(reefd.layer_dirs().iter().all(|l| !l.join("dev/mem").exists()), "device nodes are not created by default");
}
