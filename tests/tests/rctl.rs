//! rctl against a real reefd: the image verbs, their output and their exit codes.

use std::process::{Command, Output};

use reef_tests::image::{Compression, ImageBuilder, busybox_layer};
use reef_tests::push::push_image;
use reef_tests::reefd::{Reefd, reefd_bin};
use reef_tests::registry::Registry;
use reef_tests::require_e2e;

fn rctl(reefd: &Reefd, args: &[&str]) -> Output {
    let bin = reefd_bin().with_file_name("rctl");
    Command::new(&bin)
        .arg("--endpoint")
        .arg(reefd.socket())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn rctl_pulls_lists_inspects_and_removes_images() {
    require_e2e!();
    let registry = Registry::start();
    let image = ImageBuilder::new().layer(busybox_layer(), Compression::Gzip).build();
    push_image(&registry.addr(), "busybox", "1.36", &image, None);
    let reefd = Reefd::start(&format!("[registry]\ninsecure = [\"{}\"]\n", registry.addr()));
    let name = format!("{}/busybox:1.36", registry.addr());

    let pull = rctl(&reefd, &["pull", &name]);
    assert!(pull.status.success(), "{}", String::from_utf8_lossy(&pull.stderr));
    let out = stdout(&pull);
    assert!(out.contains("Pull complete"), "plain progress lines off a terminal: {out}");
    assert!(out.contains(&image.config_digest), "{out}");

    let images = stdout(&rctl(&reefd, &["images"]));
    let mut lines = images.lines();
    assert_eq!(
        lines.next().map(|h| h.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["IMAGE", "TAG", "IMAGE", "ID", "SIZE"])
    );
    let row: Vec<&str> = lines.next().expect("a row").split_whitespace().collect();
    assert_eq!(row[0], format!("{}/busybox", registry.addr()));
    assert_eq!(row[1], "1.36");
    assert_eq!(row[2], &image.config_digest[7..19]);
    assert!(row[3].ends_with("MB"), "{row:?}");

    assert_eq!(stdout(&rctl(&reefd, &["images", "-q"])).trim(), &image.config_digest[7..19]);
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&rctl(&reefd, &["images", "-o", "json"]))).expect("json");
    assert_eq!(json[0]["id"], image.config_digest);

    let inspect = rctl(&reefd, &["inspecti", &name]);
    let json: serde_json::Value = serde_json::from_slice(&inspect.stdout).expect("inspecti json");
    assert_eq!(json["status"]["id"], image.config_digest);

    let missing = rctl(&reefd, &["rmi", "nope:1"]);
    assert!(!missing.status.success());
    assert_eq!(String::from_utf8_lossy(&missing.stderr).trim(), "rctl: no such image: nope:1");

    let rmi = rctl(&reefd, &["rmi", &name]);
    assert!(rmi.status.success());
    assert!(stdout(&rmi).contains(&image.config_digest));
    assert_eq!(stdout(&rctl(&reefd, &["images", "-q"])).trim(), "");

    let bad = rctl(&reefd, &["pull", &format!("{}/nope:1", registry.addr())]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
    assert!(err.contains("NotFound"), "{err}");
}

#[test]
fn rctl_says_when_reefd_is_not_running() {
    require_e2e!();
    let dir = tempfile::tempdir().expect("dir");
    let bin = reefd_bin().with_file_name("rctl");
    let out =
        Command::new(bin).arg("--endpoint").arg(dir.path().join("none.sock")).arg("images").output().expect("run rctl");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("rctl: cannot connect to reefd at"), "{err}");
    assert!(err.contains("is reefd running?"), "{err}");
}

#[tokio::test]
async fn rctl_lists_inspects_execs_logs_stops_and_removes_pods_and_containers() {
    require_e2e!();
    use k8s_cri::v1 as cri;
    let registry = Registry::start();
    let image = ImageBuilder::new().layer(busybox_layer(), Compression::Gzip).build();
    push_image(&registry.addr(), "busybox", "1", &image, None);
    let reefd = Reefd::start(&format!("[registry]\ninsecure = [\"{}\"]\n", registry.addr()));
    let name = format!("{}/busybox:1", registry.addr());
    assert!(rctl(&reefd, &["pull", &name]).status.success());
    let logs = tempfile::tempdir().unwrap();
    let mut rt = reefd.runtime().await;
    let sandbox = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "web".into(),
            uid: "u1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "web".into(),
        log_directory: logs.path().display().to_string(),
        ..Default::default()
    };
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(sandbox.clone()), runtime_handler: String::new() })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let config = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: "app".into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: name.clone(), ..Default::default() }),
        command: vec!["sh".into(), "-c".into(), "echo started; exec sleep 300".into()],
        log_path: "app.log".into(),
        ..Default::default()
    };
    let id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config),
            sandbox_config: Some(sandbox),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap();

    let pods = stdout(&rctl(&reefd, &["pods"]));
    assert!(pods.contains("web") && pods.contains("Ready"), "{pods}");
    let ps = stdout(&rctl(&reefd, &["ps"]));
    assert!(ps.contains("app") && ps.contains("Up "), "{ps}");
    assert_eq!(stdout(&rctl(&reefd, &["ps", "-q"])).trim(), id);

    let exec = rctl(&reefd, &["exec", &id[..8], "sh", "-c", "hostname; exit 3"]);
    assert_eq!(stdout(&exec), "web\n");
    assert_eq!(exec.status.code(), Some(3), "rctl exec exits with the command's status");

    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(stdout(&rctl(&reefd, &["logs", &id])), "started\n");

    let refused = rctl(&reefd, &["rm", &id]);
    assert!(!refused.status.success(), "a running container needs -f");
    assert!(rctl(&reefd, &["stop", "-t", "1", &id]).status.success());
    let all = stdout(&rctl(&reefd, &["ps", "-a"]));
    // CRI's default pid mode is POD: sleep shares the pod's namespace, is not its PID 1, and SIGTERM ends it.
    assert!(all.contains("Exited (143)"), "{all}");
    let inspect: serde_json::Value = serde_json::from_slice(&rctl(&reefd, &["inspect", &id]).stdout).unwrap();
    assert_eq!(inspect["exitCode"], 143);
    assert!(rctl(&reefd, &["rm", &id]).status.success());
    assert!(rctl(&reefd, &["rmp", &pod]).status.success());
    assert_eq!(stdout(&rctl(&reefd, &["pods", "-q"])).trim(), "");
}
