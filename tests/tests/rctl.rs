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

/// A registry with busybox and a reefd that has not pulled it: `rctl run` must.
struct Node {
    reefd: Reefd,
    _registry: Registry,
    image: String,
    logs: tempfile::TempDir,
}

fn node() -> Node {
    let registry = Registry::start();
    let image = ImageBuilder::new().layer(busybox_layer(), Compression::Gzip).build();
    push_image(&registry.addr(), "busybox", "1", &image, None);
    let reefd = Reefd::start(&format!("[registry]\ninsecure = [\"{}\"]\n", registry.addr()));
    let image = format!("{}/busybox:1", registry.addr());
    Node { reefd, _registry: registry, image, logs: tempfile::tempdir().expect("log root") }
}

impl Node {
    /// `rctl run --log-root <the test's dir> ARGS...`
    fn run(&self, args: &[&str]) -> Output {
        let log_root = self.logs.path().display().to_string();
        let mut all = vec!["run", "--log-root", log_root.as_str()];
        all.extend_from_slice(args);
        rctl(&self.reefd, &all)
    }

    fn log_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.logs.path())
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn rctl_run_in_the_foreground_pulls_streams_and_passes_the_exit_code_through() {
    require_e2e!();
    let n = node();
    let fg = n.run(&["--name", "fg", &n.image, "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(fg.status.code(), Some(7), "{}", stderr(&fg));
    assert_eq!(stdout(&fg), "out\n", "the container's stdout, and nothing else");
    let err = stderr(&fg);
    assert!(err.contains(&format!("Unable to find image '{}' locally", n.image)), "{err}");
    assert!(err.ends_with("err\n"), "{err}");
    let ps = stdout(&rctl(&n.reefd, &["ps", "-a"]));
    assert!(ps.contains("fg") && ps.contains("Exited (7)"), "without --rm the container stays: {ps}");

    let ok = n.run(&["--rm", &n.image, "true"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(!stderr(&ok).contains("Unable to find"), "the image is there now");
}

#[test]
fn rctl_run_rm_leaves_nothing_and_flags_reach_the_container() {
    require_e2e!();
    let n = node();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("f"), "content\n").unwrap();
    let volume = format!("{}:/data:ro", data.path().display());
    let script = "echo $A; cat /data/f; touch /data/x 2>/dev/null || echo ro; echo $(id -u):$(id -g); pwd";
    let out = n.run(&[
        "--rm",
        "--name",
        "flags",
        "-e",
        "A=hello",
        "-v",
        &volume,
        "-u",
        "1000:1001",
        "-w",
        "/tmp",
        &n.image,
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello\ncontent\nro\n1000:1001\n/tmp\n");
    assert_eq!(stdout(&rctl(&n.reefd, &["ps", "-a", "-q"])).trim(), "", "--rm removes the container");
    assert_eq!(stdout(&rctl(&n.reefd, &["pods", "-q"])).trim(), "", "and its pod");
    assert!(n.log_dirs().is_empty(), "and the log directory rctl made: {:?}", n.log_dirs());

    let host = nix::unistd::gethostname().unwrap().to_string_lossy().into_owned();
    let shared = n.run(&["--rm", "--net=host", "--pid=host", &n.image, "sh", "-c", "hostname; cat /proc/1/comm"]);
    assert_eq!(shared.status.code(), Some(0), "{}", stderr(&shared));
    let text = stdout(&shared);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(host.as_str()), "the node's hostname with --net=host");
    let init = std::fs::read_to_string("/proc/1/comm").unwrap();
    assert_eq!(lines.next(), Some(init.trim()), "the node's PID 1 with --pid=host");

    let refused = n.run(&["--memory", "lots", &n.image]);
    assert_eq!(refused.status.code(), Some(2), "a bad flag is a usage error");
    assert!(stderr(&refused).contains("lots"), "{}", stderr(&refused));
}

#[test]
fn rctl_run_detached_then_logs_follow_stats_and_update() {
    require_e2e!();
    let n = node();
    let d = n.run(&["-d", "--name", "talker", &n.image, "sh", "-c", "for i in 1 2 3; do echo line$i; sleep 0.3; done"]);
    assert!(d.status.success(), "{}", stderr(&d));
    let talker = stdout(&d).trim().to_string();
    assert_eq!(talker.len(), 64, "the container id: {talker}");
    let started = std::time::Instant::now();
    // By name, as docker users do.
    let follow = rctl(&n.reefd, &["logs", "-f", "talker"]);
    assert!(follow.status.success(), "{}", stderr(&follow));
    assert_eq!(stdout(&follow), "line1\nline2\nline3\n", "every line, once the container is done");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    let d = n.run(&["-d", "--name", "capped", "--memory", "64m", "--cpus", "0.5", &n.image, "sleep", "300"]);
    assert!(d.status.success(), "{}", stderr(&d));
    let id = stdout(&d).trim().to_string();

    let stats = stdout(&rctl(&n.reefd, &["stats", "--no-stream"]));
    let mut lines = stats.lines();
    let header = lines.next().unwrap_or_default();
    for column in ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS"] {
        assert!(header.contains(column), "{header}");
    }
    let row = lines.find(|l| l.contains("capped")).unwrap_or_else(|| panic!("a row for capped: {stats}"));
    assert!(row.starts_with(&id[..12]), "{row}");
    assert!(row.contains("/ 64MiB"), "{row}");
    assert!(row.trim_end().ends_with(" 1"), "one task (sleep): {row}");
    let json: serde_json::Value =
        serde_json::from_slice(&rctl(&n.reefd, &["stats", "--no-stream", "-o", "json", "capped"]).stdout).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(1), "only the container asked for");
    let by_prefix: serde_json::Value =
        serde_json::from_slice(&rctl(&n.reefd, &["stats", "--no-stream", "-o", "json", &id[..12]]).stdout).unwrap();
    assert_eq!(by_prefix[0]["id"], id);
    assert_eq!(json[0]["memory_limit"], 64u64 << 20);
    assert_eq!(json[0]["pids"], 1);

    {
        let cgroup = format!("{}/reef-{id}", n.reefd.cgroup_parent());
        assert_eq!(reef_tests::cgroup::memory_limit(&cgroup), (64u64 << 20).to_string());
        assert_eq!(reef_tests::cgroup::cpu_quota(&cgroup), "50000");
        let up = rctl(&n.reefd, &["update", "--memory", "128m", "capped"]);
        assert!(up.status.success(), "{}", stderr(&up));
        assert_eq!(reef_tests::cgroup::memory_limit(&cgroup), (128u64 << 20).to_string());
        assert_eq!(reef_tests::cgroup::cpu_quota(&cgroup), "50000", "the CPU limit not given stays");
        assert!(rctl(&n.reefd, &["update", "--cpus", "1.5", &id]).status.success());
        assert_eq!(reef_tests::cgroup::cpu_quota(&cgroup), "150000");
        assert_eq!(reef_tests::cgroup::memory_limit(&cgroup), (128u64 << 20).to_string());
    }
    let nothing = rctl(&n.reefd, &["update", &id]);
    assert!(!nothing.status.success() && stderr(&nothing).contains("nothing to update"));
}

#[test]
fn rctl_events_prints_the_lifecycle_as_it_happens() {
    require_e2e!();
    use std::io::BufRead;
    let n = node();
    let bin = reefd_bin().with_file_name("rctl");
    let mut events = Command::new(&bin)
        .arg("--endpoint")
        .arg(n.reefd.socket())
        .args(["events", "--type", "container", "--type", "pod"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("rctl events");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = n.run(&["--rm", "--name", "watched", &n.image, "sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(4));
    let mut reader = std::io::BufReader::new(events.stdout.take().unwrap());
    let mut seen = Vec::new();
    let mut line = String::new();
    while seen.len() < 8 && reader.read_line(&mut line).unwrap_or(0) > 0 {
        let words: Vec<&str> = line.split_whitespace().collect();
        seen.push(format!("{} {}", words[1], words[2]));
        if words[1] == "container" && words[2] == "stopped" {
            assert!(line.contains("exitCode=4") && line.contains("name=watched"), "{line}");
        }
        line.clear();
    }
    let _ = events.kill();
    let _ = events.wait();
    assert_eq!(
        seen,
        [
            "pod created",
            "pod started",
            "container created",
            "container started",
            "container stopped",
            "container deleted",
            "pod stopped",
            "pod deleted"
        ]
    );
}

#[test]
fn rctl_runp_create_and_start_take_crictl_config_files() {
    require_e2e!();
    let n = node();
    assert!(rctl(&n.reefd, &["pull", &n.image]).status.success());
    let dir = tempfile::tempdir().unwrap();
    let pod_file = dir.path().join("pod.json");
    std::fs::write(
        &pod_file,
        format!(
            r#"{{"metadata": {{"name": "files", "namespace": "default", "uid": "u-files"}},
                "log_directory": "{}", "linux": {{}}}}"#,
            n.logs.path().display()
        ),
    )
    .unwrap();
    let container_file = dir.path().join("container.yaml");
    std::fs::write(
        &container_file,
        format!(
            "metadata:\n  name: app\nimage:\n  image: {}\ncommand: [sh, -c, 'echo from-file']\nlog_path: app.log\n",
            n.image
        ),
    )
    .unwrap();
    let runp = rctl(&n.reefd, &["runp", pod_file.to_str().unwrap()]);
    assert!(runp.status.success(), "{}", stderr(&runp));
    let pod = stdout(&runp).trim().to_string();
    let create = rctl(&n.reefd, &["create", &pod, container_file.to_str().unwrap(), pod_file.to_str().unwrap()]);
    assert!(create.status.success(), "{}", stderr(&create));
    let id = stdout(&create).trim().to_string();
    assert!(stdout(&rctl(&n.reefd, &["ps", "-a"])).contains("Created"));
    assert!(rctl(&n.reefd, &["start", &id]).status.success());
    assert_eq!(stdout(&rctl(&n.reefd, &["logs", "-f", &id])), "from-file\n");

    std::fs::write(dir.path().join("bad.json"), r#"{"metadata": {"name": "x"}, "hostnam": "typo"}"#).unwrap();
    let bad = rctl(&n.reefd, &["runp", dir.path().join("bad.json").to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("hostnam"), "{}", stderr(&bad));
    assert!(rctl(&n.reefd, &["rmp", &pod]).status.success());
}

#[test]
fn ctrl_c_on_a_foreground_run_stops_the_container_and_rm_still_cleans_up() {
    require_e2e!();
    let n = node();
    assert!(rctl(&n.reefd, &["pull", &n.image]).status.success());
    let bin = reefd_bin().with_file_name("rctl");
    let script = "trap 'echo bye; exit 42' TERM; echo ready; while true; do sleep 0.1; done";
    let mut child = Command::new(&bin)
        .arg("--endpoint")
        .arg(n.reefd.socket())
        .args(["run", "--rm", "--log-root"])
        .arg(n.logs.path())
        .args([n.image.as_str(), "sh", "-c", script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("rctl run");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "bye\n", "the container's last words still come");
    assert_eq!(status.code(), Some(42), "the container's exit code, after its stop signal");
    assert_eq!(stdout(&rctl(&n.reefd, &["ps", "-a", "-q"])).trim(), "");
    assert_eq!(stdout(&rctl(&n.reefd, &["pods", "-q"])).trim(), "");
    assert!(n.log_dirs().is_empty());
}
