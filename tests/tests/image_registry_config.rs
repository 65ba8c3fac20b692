//! Credentials, mirrors, and registries on loopback without configuration.

use k8s_cri::v1 as cri;
use reef_tests::cri::{basic, list, pull, pull_with};
use reef_tests::image::{Compression, ImageBuilder, Layer};
use reef_tests::push::push_image;
use reef_tests::reefd::{Reefd, reefd_bin};
use reef_tests::registry::Registry;
use reef_tests::require_e2e;
use tonic::Code;

fn small_image() -> reef_tests::image::Image {
    ImageBuilder::new().layer(Layer::new().file("hello", b"world"), Compression::Gzip).build()
}

#[tokio::test]
async fn basic_auth_registries_need_the_right_credentials() {
    require_e2e!();
    let registry = Registry::start_with_htpasswd("reef", "s3cret");
    let image = small_image();
    push_image(&registry.addr(), "private", "1", &image, registry.auth());
    let reefd = Reefd::start(&format!("[registry]\ninsecure = [\"{}\"]\n", registry.addr()));
    let mut images = reefd.images().await;
    let name = format!("{}/private:1", registry.addr());

    let err = pull(&mut images, &name).await.expect_err("no credentials");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let err = pull_with(&mut images, &name, basic("reef", "wrong")).await.expect_err("wrong password");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(list(&mut images).await.is_empty());

    assert_eq!(
        pull_with(&mut images, &name, basic("reef", "s3cret")).await.expect("right credentials"),
        image.config_digest
    );
    // The `auth` field carries base64(user:password).
    let auth = Some(cri::AuthConfig { auth: "cmVlZjpzM2NyZXQ=".into(), ..Default::default() });
    assert_eq!(pull_with(&mut images, &name, auth).await.expect("auth field"), image.config_digest);
}

#[tokio::test]
async fn static_credentials_from_the_config_are_used() {
    require_e2e!();
    let registry = Registry::start_with_htpasswd("reef", "s3cret");
    let image = small_image();
    push_image(&registry.addr(), "private", "1", &image, registry.auth());
    let addr = registry.addr();
    let reefd = Reefd::start(&format!(
        "[registry]\ninsecure = [\"{addr}\"]\n[registry.auths.\"{addr}\"]\nusername = \"reef\"\npassword = \"s3cret\"\n"
    ));
    let mut images = reefd.images().await;
    assert_eq!(pull(&mut images, &format!("{addr}/private:1")).await.expect("static credentials"), image.config_digest);
    let status = reefd.runtime().await.status(cri::StatusRequest { verbose: true }).await.expect("Status").into_inner();
    assert!(!status.info["config"].contains("s3cret"), "secrets are redacted from Status");
}

#[tokio::test]
async fn mirrors_serve_registry_k8s_io_and_the_name_is_kept() {
    require_e2e!();
    let dead = Registry::start();
    let dead_addr = dead.addr();
    drop(dead);
    let registry = Registry::start();
    let image = small_image();
    push_image(&registry.addr(), "pause", "3.9", &image, None);
    // The first endpoint is down: the next one in order serves the pull.
    let reefd = Reefd::start(&format!(
        "[registry.mirrors.\"registry.k8s.io\"]\nendpoints = [\"http://{dead_addr}\", \"http://{}\"]\n",
        registry.addr()
    ));
    let mut images = reefd.images().await;
    assert_eq!(pull(&mut images, "registry.k8s.io/pause:3.9").await.expect("mirrored pull"), image.config_digest);
    let listed = list(&mut images).await;
    assert_eq!(listed[0].repo_tags, vec!["registry.k8s.io/pause:3.9".to_string()]);
    assert!(listed[0].repo_digests[0].starts_with("registry.k8s.io/pause@sha256:"));
    // Not in the mirror: the answer comes from the mirror, and registry.k8s.io itself is never resolved.
    let err = pull(&mut images, "registry.k8s.io/not-mirrored:1").await.expect_err("missing in mirror");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
}

#[tokio::test]
async fn loopback_registries_need_no_insecure_entry_for_cri_rctl_or_mirrors() {
    require_e2e!();
    let registry = Registry::start();
    let image = small_image();
    push_image(&registry.addr(), "plain", "1", &image, None);
    push_image(&registry.addr(), "pause", "3.9", &image, None);
    // https is tried first and fails (the registry speaks plain http); plain http then serves the pull. A bare
    // loopback mirror endpoint falls back the same way.
    let reefd =
        Reefd::start(&format!("[registry.mirrors.\"registry.k8s.io\"]\nendpoints = [\"{}\"]\n", registry.addr()));
    let mut images = reefd.images().await;
    assert_eq!(
        pull(&mut images, &format!("{}/plain:1", registry.addr())).await.expect("CRI pull"),
        image.config_digest
    );
    assert_eq!(pull(&mut images, "registry.k8s.io/pause:3.9").await.expect("mirrored pull"), image.config_digest);
    let err = pull(&mut images, &format!("{}/plain:nope", registry.addr())).await.expect_err("missing tag");
    assert_eq!(err.code(), Code::NotFound, "the plain-http answer is reported, not the failed https: {err:?}");

    let name = format!("localhost:{}/plain:1", registry.port());
    let bin = reefd_bin().with_file_name("rctl");
    let out = std::process::Command::new(&bin)
        .arg("--endpoint")
        .arg(reefd.socket())
        .args(["pull", &name])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    assert!(out.status.success(), "rctl pull {name}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&image.config_digest));
    assert!(list(&mut images).await.iter().any(|i| i.repo_tags.contains(&name)), "{name} is listed");
}

#[tokio::test]
async fn loopback_registries_without_configuration_still_get_credentials() {
    require_e2e!();
    let registry = Registry::start_with_htpasswd("reef", "s3cret");
    let image = small_image();
    push_image(&registry.addr(), "private", "1", &image, registry.auth());
    let addr = registry.addr();
    let reefd = Reefd::start(&format!("[registry.auths.\"{addr}\"]\nusername = \"reef\"\npassword = \"s3cret\"\n"));
    let mut images = reefd.images().await;
    let name = format!("{addr}/private:1");
    let err = pull_with(&mut images, &name, basic("reef", "wrong")).await.expect_err("wrong password");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert_eq!(pull(&mut images, &name).await.expect("static credentials"), image.config_digest);
    assert_eq!(
        pull_with(&mut images, &name, basic("reef", "s3cret")).await.expect("request credentials"),
        image.config_digest
    );
}
