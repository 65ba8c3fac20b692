//! A container's root filesystem: the mount points every container needs come from one shared layer above the
//! image, so creating and starting a container writes nothing into its own upper dir; images that have something
//! else than a plain directory or file at one of those names keep it, and still get the pod's files.

use k8s_cri::v1 as cri;
use reef_tests::cri::pull;
use reef_tests::image::{Compression, ImageBuilder, Layer, busybox_layer};
use reef_tests::pod::{container_config, create, pod_config, run_pod, setup, wait_exited};
use reef_tests::push::push_image;
use reef_tests::require_e2e;

fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            found.push(e.path().strip_prefix(dir).unwrap_or(&e.path()).display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    found
}

#[tokio::test]
async fn mount_points_come_from_a_shared_layer_and_a_started_container_writes_nothing_to_its_upper_dir() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "app");
    let pod = run_pod(&mut rt, &sandbox).await;
    let script = "cat /etc/hostname; grep -q app-host /etc/hosts && echo hosts; cat /etc/resolv.conf >/dev/null && \
                  echo resolv; stat -c 'etc %a %u' /etc; cat /proc/self/cgroup >/dev/null && echo proc; \
                  ls /sys/kernel >/dev/null && echo sys; ls /dev/null /dev/pts /dev/shm >/dev/null && echo dev";
    let mut ids = Vec::new();
    for name in ["one", "two"] {
        let id = create(&mut rt, &pod, &sandbox, container_config(&s, name, script)).await.expect("CreateContainer");
        rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("StartContainer");
        assert_eq!(wait_exited(&mut rt, &id).await.exit_code, 0);
        let log = std::fs::read_to_string(s.logs.path().join(format!("{name}.log"))).expect("log");
        for line in ["app-host", "hosts", "resolv", "etc 755 0", "proc", "sys", "dev"] {
            assert!(log.contains(&format!(" stdout F {line}\n")), "{line} missing from {log}");
        }
        let upper = s.reefd.root().join("containers").join(&id).join("upper");
        assert_eq!(files_under(&upper), Vec::<String>::new(), "the upper dir of {name}");
        ids.push(id);
    }
    let variants = std::fs::read_dir(s.reefd.root().join("mountpoints")).expect("the mount-point layers").count();
    assert_eq!(variants, 1, "both containers share one layer");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}

#[tokio::test]
async fn an_image_whose_resolv_conf_is_a_symlink_keeps_it_and_still_gets_the_pod_s_dns() {
    require_e2e!();
    let s = setup().await;
    let linked =
        Layer::new().file("etc/resolv.real", b"nameserver 192.0.2.1\n").symlink("etc/resolv.conf", "resolv.real");
    let image = ImageBuilder::new().layer(busybox_layer(), Compression::Gzip).layer(linked, Compression::Gzip).build();
    push_image(&s.registry.addr(), "linked", "1", &image, None);
    let name = format!("{}/linked:1", s.registry.addr());
    pull(&mut s.reefd.images().await, &name).await.expect("pull");
    let mut rt = s.reefd.runtime().await;
    let mut sandbox = pod_config(&s, "dns");
    sandbox.dns_config = Some(cri::DnsConfig { servers: vec!["192.0.2.53".into()], ..Default::default() });
    let pod = run_pod(&mut rt, &sandbox).await;
    let mut config = container_config(&s, "main", "readlink /etc/resolv.conf; cat /etc/resolv.conf");
    config.image = Some(cri::ImageSpec { image: name, ..Default::default() });
    let id = create(&mut rt, &pod, &sandbox, config).await.expect("CreateContainer");
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("StartContainer");
    assert_eq!(wait_exited(&mut rt, &id).await.exit_code, 0);
    let log = std::fs::read_to_string(s.logs.path().join("main.log")).expect("log");
    assert!(log.contains(" stdout F resolv.real\n"), "the image's symlink stays: {log}");
    assert!(log.contains(" stdout F nameserver 192.0.2.53\n"), "the pod's DNS is what the container reads: {log}");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.expect("RemovePodSandbox");
}
