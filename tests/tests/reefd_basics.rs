//! reefd as a daemon: its socket, its config, its lifecycle, the RuntimeService basics and Reef's own API.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use k8s_cri::v1 as cri;
use reef_tests::image::{Compression, ImageBuilder, Layer};
use reef_tests::push::push_image;
use reef_tests::reefd::{Reefd, reefd_bin};
use reef_tests::registry::Registry;
use reef_tests::require_e2e;

#[tokio::test]
async fn version_and_status_describe_the_runtime() {
    require_e2e!();
    let reefd = Reefd::start("");
    let mut rt = reefd.runtime().await;
    let v = rt.version(cri::VersionRequest { version: "0.1.0".into() }).await.expect("Version").into_inner();
    assert_eq!(v.runtime_name, "reef");
    assert_eq!(v.runtime_api_version, "v1");
    assert_eq!(v.version, "0.1.0");
    assert!(!v.runtime_version.is_empty());
    let s = rt.status(cri::StatusRequest { verbose: true }).await.expect("Status").into_inner();
    let conditions = s.status.expect("status").conditions;
    let runtime_ready = conditions.iter().find(|c| c.r#type == "RuntimeReady").expect("RuntimeReady");
    assert!(runtime_ready.status);
    let network = conditions.iter().find(|c| c.r#type == "NetworkReady").expect("NetworkReady");
    assert!(network.status || !network.reason.is_empty(), "a false NetworkReady carries a reason");
    let config: serde_json::Value = serde_json::from_str(&s.info["config"]).expect("verbose Status carries the config");
    assert_eq!(config["socket"], reefd.socket().display().to_string());
    let rc = rt.runtime_config(cri::RuntimeConfigRequest {}).await.expect("RuntimeConfig").into_inner();
    assert_eq!(rc.linux.expect("linux").cgroup_driver, cri::CgroupDriver::Cgroupfs as i32);
    let update = cri::UpdateRuntimeConfigRequest {
        runtime_config: Some(cri::RuntimeConfig {
            network_config: Some(cri::NetworkConfig { pod_cidr: "10.244.1.0/24".into() }),
        }),
    };
    rt.update_runtime_config(update).await.expect("UpdateRuntimeConfig");
    let bad = cri::UpdateRuntimeConfigRequest {
        runtime_config: Some(cri::RuntimeConfig {
            network_config: Some(cri::NetworkConfig { pod_cidr: "not-a-cidr".into() }),
        }),
    };
    assert_eq!(rt.update_runtime_config(bad).await.expect_err("bad CIDR").code(), tonic::Code::InvalidArgument);
    let err =
        rt.checkpoint_container(cri::CheckpointContainerRequest::default()).await.expect_err("not implemented yet");
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}

#[tokio::test]
async fn the_socket_is_root_only_and_a_second_reefd_is_refused() {
    require_e2e!();
    let reefd = Reefd::start("");
    let mode = std::fs::metadata(reefd.socket()).expect("socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let out = Command::new(reefd_bin()).arg("--config").arg(reefd.config_path()).output().expect("run a second reefd");
    assert!(!out.status.success(), "a second reefd on the same socket must exit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another reefd"), "{stderr}");
    // The first one still serves.
    reefd.runtime().await.version(cri::VersionRequest::default()).await.expect("first reefd still answers");
}

#[tokio::test]
async fn a_stale_socket_from_a_killed_reefd_is_replaced() {
    require_e2e!();
    let mut reefd = Reefd::start("");
    reefd.kill9();
    assert!(reefd.socket().exists(), "SIGKILL leaves the socket file behind");
    reefd.spawn();
    reefd.runtime().await.version(cri::VersionRequest::default()).await.expect("the new reefd answers");
}

#[tokio::test]
async fn sigterm_stops_reefd_cleanly() {
    require_e2e!();
    let mut reefd = Reefd::start("");
    let status = reefd.stop().expect("reefd was running");
    assert!(status.success(), "{status}");
    assert!(!reefd.socket().exists(), "the socket is removed on a clean stop");
}

#[test]
fn bad_configs_stop_reefd_naming_the_key() {
    require_e2e!();
    let dir = tempfile::tempdir().expect("dir");
    for (text, key) in [
        ("sockets = \"/tmp/x\"\n", "sockets"),
        ("[images]\nmax_concurrent_downloads = 0\n", "max_concurrent_downloads"),
        ("[registry.mirrors.\"docker.io\"]\nendpoint = [\"http://x\"]\n", "endpoint"),
        ("root_dir = \"relative\"\n", "root_dir"),
    ] {
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).expect("write config");
        let out = Command::new(reefd_bin()).arg("--config").arg(&path).output().expect("run reefd");
        assert!(!out.status.success(), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{key} not named in: {stderr}");
    }
    let out =
        Command::new(reefd_bin()).arg("--config").arg(dir.path().join("missing.toml")).output().expect("run reefd");
    assert!(!out.status.success(), "an explicit config path that does not exist is an error");
}

#[tokio::test]
async fn reef_api_pull_streams_progress_and_ends_with_the_image_id() {
    require_e2e!();
    let registry = Registry::start();
    let image = ImageBuilder::new()
        .layer(Layer::new().file("a", b"1"), Compression::Gzip)
        .layer(Layer::new().file("b", b"2"), Compression::Gzip)
        .build();
    push_image(&registry.addr(), "streamed", "1", &image, None);
    let reefd = Reefd::start(&format!("[registry]\ninsecure = [\"{}\"]\n", registry.addr()));
    let mut reef = reefd.reef().await;
    let request =
        reef_api::v1::PullImageRequest { image: format!("{}/streamed:1", registry.addr()), ..Default::default() };
    let mut stream = reef.pull_image(request).await.expect("PullImage").into_inner();
    let mut events = Vec::new();
    while let Some(msg) = stream.message().await.expect("stream") {
        events.push(msg.event.expect("event"));
    }
    use reef_api::v1::pull_image_progress::Event;
    assert!(matches!(events.first(), Some(Event::Resolved(r)) if r.layers.len() == 2));
    let done = events
        .iter()
        .filter(|e| matches!(e, Event::Layer(l) if l.state == reef_api::v1::LayerState::Done as i32))
        .count();
    assert_eq!(done, 2, "each layer reports Done");
    let Some(Event::Done(d)) = events.last() else { panic!("the stream ends with Done: {events:?}") };
    assert_eq!(d.image_id, image.config_digest);
    let info = reef.info(reef_api::v1::InfoRequest {}).await.expect("Info").into_inner();
    assert_eq!(info.image_count, 1);
    assert_eq!(info.root_dir, reefd.root().display().to_string());
}
