//! The security context as the container sees it: checked from inside, in /proc/self/status and mountinfo, not in
//! the spec Reef wrote. Users and groups (numeric, named, from the image, Merge and Strict), the capability sets,
//! no_new_privs, masked and read-only /proc paths, a read-only root, and what privileged changes.

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use reef_tests::cri::pull;
use reef_tests::image::{Compression, ImageBuilder, Layer, busybox_layer};
use reef_tests::pod::{Runtime, Setup, container_config, create, pod_config, run_pod, setup, wait_exited};
use reef_tests::push::push_image;
use reef_tests::require_e2e;
use tonic::Code;

/// docker's and containerd's default set, as the kernel prints it (CHOWN … AUDIT_WRITE, SETFCAP).
const DEFAULT_CAPS: &str = "00000000a80425fb";

/// A pod of the test's, where each probe runs as a fresh container.
struct InPod<'a> {
    s: &'a Setup,
    pod: String,
    sandbox: cri::PodSandboxConfig,
}

/// Runs `script` in a fresh container of `at` with the security context `tweak` makes; returns its output.
async fn run_with(
    at: &InPod<'_>,
    rt: &mut Runtime,
    name: &str,
    image: Option<&str>,
    script: &str,
    tweak: impl FnOnce(&mut cri::LinuxContainerSecurityContext),
) -> String {
    let (s, pod, sandbox) = (at.s, at.pod.as_str(), &at.sandbox);
    let mut c = container_config(s, name, script);
    if let Some(image) = image {
        c.image = Some(cri::ImageSpec { image: image.into(), ..Default::default() });
    }
    tweak(c.linux.as_mut().unwrap().security_context.as_mut().unwrap());
    let id = create(rt, pod, sandbox, c).await.unwrap_or_else(|e| panic!("create {name}: {e:?}"));
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("start");
    let st = wait_exited(rt, &id).await;
    assert_eq!(st.exit_code, 0, "{name} exited {}", st.exit_code);
    let log = std::fs::read_to_string(s.logs.path().join(format!("{name}.log"))).unwrap_or_default();
    // CRI lines are `time stream tag message`: keep the messages.
    log.lines().filter_map(|l| l.splitn(4, ' ').nth(3)).map(|m| format!("{m}\n")).collect()
}

/// `Key:\tvalue` lines of /proc/self/status, as the container printed them.
fn status_fields(out: &str) -> HashMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect()
}

/// An image whose own passwd and group files name a user `app` (uid 1000, primary group 1001) who is also a member
/// of `wheel` (10), with `User: app`.
async fn app_image(s: &Setup) -> String {
    let accounts = Layer::new()
        .dir("etc/")
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/tmp:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
        )
        .file("etc/group", b"root:x:0:\nwheel:x:10:app\napp:x:1001:\nnogroup:x:65534:\n");
    let image = ImageBuilder::new()
        .layer(busybox_layer(), Compression::Gzip)
        .layer(accounts, Compression::Gzip)
        .config(serde_json::json!({"User": "app", "Cmd": ["sh"]}))
        .build();
    push_image(&s.registry.addr(), "app", "1", &image, None);
    let name = format!("{}/app:1", s.registry.addr());
    pull(&mut s.reefd.images().await, &name).await.expect("pull app");
    name
}

const IDS: &str = "grep -E '^(Uid|Gid|Groups):' /proc/self/status";

#[tokio::test]
async fn users_and_groups_come_from_the_security_context_or_the_image_s_own_files() {
    require_e2e!();
    let s = setup().await;
    let app = app_image(&s).await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "users");
    let pod = run_pod(&mut rt, &sandbox).await;
    let at = InPod { s: &s, pod: pod.clone(), sandbox: sandbox.clone() };

    let root = status_fields(&run_with(&at, &mut rt, "root", None, IDS, |_| {}).await);
    assert_eq!((root["Uid"].as_str(), root["Gid"].as_str()), ("0 0 0 0", "0 0 0 0"));

    let numeric = run_with(&at, &mut rt, "numeric", None, IDS, |sc| {
        sc.run_as_user = Some(cri::Int64Value { value: 1234 });
        sc.run_as_group = Some(cri::Int64Value { value: 2345 });
        sc.supplemental_groups = vec![3456];
    })
    .await;
    let numeric = status_fields(&numeric);
    assert_eq!(numeric["Uid"], "1234 1234 1234 1234");
    assert_eq!(numeric["Gid"], "2345 2345 2345 2345");
    assert_eq!(numeric["Groups"], "2345 3456");

    let image_user = status_fields(&run_with(&at, &mut rt, "image-user", Some(&app), IDS, |_| {}).await);
    assert_eq!(image_user["Uid"], "1000 1000 1000 1000", "the image's User, resolved in its own /etc/passwd");
    assert_eq!(image_user["Gid"], "1001 1001 1001 1001");
    assert_eq!(image_user["Groups"], "10 1001", "Merge: the image's /etc/group memberships too");

    let strict = run_with(&at, &mut rt, "strict", Some(&app), IDS, |sc| {
        sc.supplemental_groups = vec![5000];
        sc.supplemental_groups_policy = cri::SupplementalGroupsPolicy::Strict as i32;
    })
    .await;
    assert_eq!(status_fields(&strict)["Groups"], "1001 5000", "Strict: only what the pod asked for");

    let named = run_with(&at, &mut rt, "named", Some(&app), IDS, |sc| {
        sc.run_as_username = "nobody".into();
    })
    .await;
    assert_eq!(status_fields(&named)["Uid"], "65534 65534 65534 65534");

    let mut ghost = container_config(&s, "ghost", "true");
    ghost.image = Some(cri::ImageSpec { image: app.clone(), ..Default::default() });
    ghost.linux.as_mut().unwrap().security_context.as_mut().unwrap().run_as_username = "ghost".into();
    let err = create(&mut rt, &pod, &sandbox, ghost).await.expect_err("no such user");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("ghost"), "{}", err.message());

    // ContainerStatus reports who the process runs as.
    let listed = rt.list_containers(cri::ListContainersRequest { filter: None }).await.unwrap().into_inner();
    let image_user_id = listed.containers.iter().find(|c| c.metadata.as_ref().unwrap().name == "image-user").unwrap();
    let st = rt
        .container_status(cri::ContainerStatusRequest { container_id: image_user_id.id.clone(), verbose: false })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    let user = st.user.and_then(|u| u.linux).expect("user in the status");
    assert_eq!((user.uid, user.gid, user.supplemental_groups), (1000, 1001, vec![1001, 10]));
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

const CAPS_AND_PRIVS: &str = "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status";

#[tokio::test]
async fn capabilities_and_no_new_privs_are_what_the_security_context_asks_for() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "caps");
    let pod = run_pod(&mut rt, &sandbox).await;
    let at = InPod { s: &s, pod: pod.clone(), sandbox: sandbox.clone() };

    let default = status_fields(&run_with(&at, &mut rt, "default", None, CAPS_AND_PRIVS, |_| {}).await);
    for set in ["CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(default[set], DEFAULT_CAPS, "{set}");
    }
    assert_eq!((default["CapInh"].as_str(), default["CapAmb"].as_str()), ("0000000000000000", "0000000000000000"));
    assert_eq!(default["NoNewPrivs"], "0");

    let narrowed = run_with(&at, &mut rt, "narrowed", None, CAPS_AND_PRIVS, |sc| {
        sc.capabilities = Some(cri::Capability {
            add_capabilities: vec!["NET_ADMIN".into()],
            drop_capabilities: vec!["ALL".into()],
            ..Default::default()
        });
        sc.no_new_privs = true;
    })
    .await;
    let narrowed = status_fields(&narrowed);
    assert_eq!(narrowed["CapEff"], "0000000000001000", "NET_ADMIN alone");
    assert_eq!(narrowed["CapBnd"], "0000000000001000");
    assert_eq!(narrowed["NoNewPrivs"], "1");

    // A non-root user keeps the bounding set, but exec leaves it no effective capability (no ambient set).
    let user = run_with(&at, &mut rt, "user", None, CAPS_AND_PRIVS, |sc| {
        sc.run_as_user = Some(cri::Int64Value { value: 1000 });
    })
    .await;
    let user = status_fields(&user);
    assert_eq!((user["CapEff"].as_str(), user["CapBnd"].as_str()), ("0000000000000000", DEFAULT_CAPS));

    let privileged = run_with(&at, &mut rt, "privileged", None, CAPS_AND_PRIVS, |sc| {
        sc.privileged = true;
    })
    .await;
    let privileged = status_fields(&privileged);
    let ours = status_fields(&std::fs::read_to_string("/proc/self/status").unwrap());
    assert_eq!(privileged["CapEff"], ours["CapBnd"], "every capability the runtime holds (this host withholds some)");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

#[tokio::test]
async fn proc_paths_are_masked_or_read_only_and_a_read_only_root_stays_read_only() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "paths");
    let pod = run_pod(&mut rt, &sandbox).await;
    let at = InPod { s: &s, pod: pod.clone(), sandbox: sandbox.clone() };
    let probe = "echo timer_list=$(wc -c < /proc/timer_list); \
                 grep -E ' /proc/(sys|irq|timer_list|acpi) ' /proc/self/mountinfo | awk '{print \"mount\", $5, $6}'; \
                 touch /rootfs-write && echo root=rw || echo root=ro";
    let default = run_with(&at, &mut rt, "default", None, probe, |_| {}).await;
    assert!(default.contains("timer_list=0\n"), "/proc/timer_list reads as /dev/null: {default}");
    assert!(default.lines().any(|l| l.starts_with("mount /proc/acpi ro")), "/proc/acpi is an empty tmpfs: {default}");
    assert!(default.lines().any(|l| l.starts_with("mount /proc/sys ro")), "/proc/sys is read-only: {default}");
    // (this kernel has no /proc/sysrq-trigger or /proc/kcore; paths that are not there are skipped)
    assert!(default.lines().any(|l| l.starts_with("mount /proc/irq ro")), "{default}");
    assert!(default.contains("root=rw\n"), "{default}");

    let read_only = run_with(&at, &mut rt, "read-only", None, probe, |sc| sc.readonly_rootfs = true).await;
    assert!(read_only.contains("root=ro\n"), "{read_only}");

    let unmasked = run_with(&at, &mut rt, "unmasked", None, probe, |sc| {
        // What kubelet sends for procMount: Unmasked: lists that replace the defaults.
        sc.masked_paths = vec!["/proc/keys".into()];
        sc.readonly_paths = vec!["/proc/bus".into()];
    })
    .await;
    assert!(!unmasked.lines().any(|l| l.starts_with("mount /proc/sys ")), "{unmasked}");

    let privileged = run_with(&at, &mut rt, "privileged", None, probe, |sc| sc.privileged = true).await;
    assert!(!privileged.lines().any(|l| l.starts_with("mount /proc/")), "privileged sees all of /proc: {privileged}");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

#[tokio::test]
async fn devices_are_mapped_in_with_only_the_access_asked_for_and_oom_score_adj_applies() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "devices");
    let pod = run_pod(&mut rt, &sandbox).await;
    let script = "echo hi > /dev/xnull && echo null-written; stat -c 'null %t,%T %a' /dev/xnull; \
                  (echo reef-test > /dev/xkmsg) 2>/dev/null && echo kmsg-written || echo kmsg-refused; \
                  echo oom=$(cat /proc/self/oom_score_adj)";
    let mut c = container_config(&s, "mapped", script);
    c.devices = vec![
        cri::Device { host_path: "/dev/null".into(), container_path: "/dev/xnull".into(), permissions: "rw".into() },
        // Not one of the standard nodes every container may use: only the rule asked for applies.
        cri::Device { host_path: "/dev/kmsg".into(), container_path: "/dev/xkmsg".into(), permissions: "r".into() },
    ];
    c.linux.as_mut().unwrap().resources =
        Some(cri::LinuxContainerResources { oom_score_adj: 500, ..Default::default() });
    let id = create(&mut rt, &pod, &sandbox, c).await.expect("create");
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("start");
    assert_eq!(wait_exited(&mut rt, &id).await.exit_code, 0);
    let out = std::fs::read_to_string(s.logs.path().join("mapped.log")).unwrap();
    assert!(out.contains("null-written") && out.contains("null 1,3 666"), "{out}");
    assert!(out.contains("kmsg-refused"), "read-only by the device cgroup: {out}");
    assert!(out.contains("oom=500"), "{out}");

    let mut bad = container_config(&s, "not-a-device", "true");
    bad.devices = vec![cri::Device {
        host_path: "/etc/hostname".into(),
        container_path: "/dev/x".into(),
        permissions: "r".into(),
    }];
    assert_eq!(create(&mut rt, &pod, &sandbox, bad).await.unwrap_err().code(), Code::InvalidArgument);
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

/// A directory of the test's with a tmpfs mounted inside it (a submount), unmounted on drop.
struct VolumeWithSubmount(tempfile::TempDir);

impl VolumeWithSubmount {
    fn new() -> VolumeWithSubmount {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &dir.path().join("sub"),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .expect("mount a tmpfs inside the volume");
        VolumeWithSubmount(dir)
    }
}

impl Drop for VolumeWithSubmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0.path().join("sub"), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[tokio::test]
async fn a_recursive_read_only_mount_makes_its_submounts_read_only_too() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let features = rt.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner().runtime_handlers;
    assert!(features[0].features.as_ref().unwrap().recursive_read_only_mounts, "kubelet asks before using them");
    let sandbox = pod_config(&s, "rro");
    let pod = run_pod(&mut rt, &sandbox).await;
    let volume = VolumeWithSubmount::new();
    let probe = "touch /data/top 2>/dev/null && echo top=rw || echo top=ro; \
                 touch /data/sub/x 2>/dev/null && echo sub=rw || echo sub=ro";
    let mut outputs = Vec::new();
    for (name, recursive) in [("plain", false), ("recursive", true)] {
        let mut c = container_config(&s, name, probe);
        c.mounts = vec![cri::Mount {
            container_path: "/data".into(),
            host_path: volume.0.path().display().to_string(),
            readonly: true,
            recursive_read_only: recursive,
            ..Default::default()
        }];
        let id = create(&mut rt, &pod, &sandbox, c).await.expect("create");
        rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("start");
        wait_exited(&mut rt, &id).await;
        outputs.push(std::fs::read_to_string(s.logs.path().join(format!("{name}.log"))).unwrap());
    }
    assert!(outputs[0].contains("top=ro") && outputs[0].contains("sub=rw"), "ro stops at submounts: {}", outputs[0]);
    assert!(outputs[1].contains("top=ro") && outputs[1].contains("sub=ro"), "rro does not: {}", outputs[1]);

    let mut writable = container_config(&s, "bad-rro", "true");
    writable.mounts = vec![cri::Mount {
        container_path: "/data".into(),
        host_path: volume.0.path().display().to_string(),
        readonly: false,
        recursive_read_only: true,
        ..Default::default()
    }];
    assert_eq!(create(&mut rt, &pod, &sandbox, writable).await.unwrap_err().code(), Code::InvalidArgument);
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}
