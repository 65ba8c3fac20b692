//! The pod monitor as reefd uses it: a separate daemon, containers created, started, signalled and reaped
//! through its socket, their output in CRI log files, their exits on disk (needs root).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use reef_runtime::launch::LaunchPlan;
use reef_runtime::logging::{Stream, parse_line};
use reef_runtime::monitor::client::MonitorClient;
use reef_runtime::monitor::protocol::{ContainerState, ErrorKind, Request, Response, Status};
use reef_runtime::mounts::MountPlan;

fn privileged() -> bool {
    let ok = std::env::var("REEF_E2E").as_deref() == Ok("1")
        && nix::unistd::geteuid().is_root()
        && Path::new("/bin/busybox").exists();
    if !ok {
        eprintln!("skipped: needs REEF_E2E=1, root and /bin/busybox");
    }
    ok
}

fn rootfs(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "sleep", "printf"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    for d in ["proc", "dev", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
}

fn plan(rootfs: &Path, script: &str) -> LaunchPlan {
    LaunchPlan {
        rootfs: rootfs.to_path_buf(),
        readonly_rootfs: false,
        new_namespaces: CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC,
        join_namespaces: vec![],
        mounts: vec![MountPlan::from_oci("/proc", "proc", "proc", &["nosuid".into(), "noexec".into(), "nodev".into()])],
        masked_paths: vec![],
        readonly_paths: vec![],
        hostname: None,
        args: vec!["sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        uid: 0,
        gid: 0,
        additional_gids: vec![],
        no_new_privileges: false,
        capabilities: None,
        rlimits: vec![],
        cgroup: None,
        sysctls: vec![],
        devices: vec![],
        oom_score_adj: None,
        terminal: false,
        seccomp: None,
        apparmor_profile: None,
    }
}

/// A monitor of the test's own, shut down (and its containers killed) at the end.
struct Pod {
    dir: tempfile::TempDir,
}

impl Pod {
    fn start() -> Pod {
        let dir = tempfile::tempdir().unwrap();
        let status =
            Command::new(env!("CARGO_BIN_EXE_reef-monitor")).arg(dir.path()).status().expect("run reef-monitor");
        assert!(status.success(), "reef-monitor reports readiness by exiting 0");
        Pod { dir }
    }

    fn client(&self) -> MonitorClient {
        MonitorClient::connect(&self.dir.path().join("monitor.sock")).expect("connect to the monitor")
    }

    fn state(&self, id: &str) -> ContainerState {
        match self.client().call(&Request::State { id: id.into() }).unwrap() {
            Response::Ok { state: Some(s) } => s,
            other => panic!("state of {id}: {other:?}"),
        }
    }

    fn wait_exit(&self, id: &str) -> ContainerState {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = self.state(id);
            if s.status == Status::Exited || Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Ok(mut c) = MonitorClient::connect(&self.dir.path().join("monitor.sock")) {
            let _ = c.call(&Request::Shutdown);
        }
    }
}

#[test]
fn containers_run_log_and_exit_through_the_monitor() {
    if !privileged() {
        return;
    }
    let pod = Pod::start();
    let root = pod.dir.path().join("rootfs");
    rootfs(&root);
    let log = pod.dir.path().join("c1.log");
    let mut client = pod.client();
    let created = client
        .call(&Request::Create {
            log_dir: None,
            id: "c1".into(),
            plan: plan(&root, "echo hello; echo oops >&2; printf 'no newline'; exit 3"),
            log_path: log.clone(),
            stdin: false,
            stdin_once: false,
        })
        .unwrap();
    assert!(
        matches!(created, Response::Ok { state: Some(ContainerState { status: Status::Created, .. }) }),
        "{created:?}"
    );
    let again = client
        .call(&Request::Create {
            log_dir: None,
            id: "c1".into(),
            plan: plan(&root, "true"),
            log_path: log.clone(),
            stdin: false,
            stdin_once: false,
        })
        .unwrap();
    assert!(matches!(again, Response::Error { kind: ErrorKind::AlreadyExists, .. }));

    client.call(&Request::Start { id: "c1".into() }).unwrap();
    let state = pod.wait_exit("c1");
    let exit = state.exit.expect("exit recorded");
    assert_eq!((exit.code, exit.signal), (3, None));
    assert!(state.started_at.is_some_and(|s| s <= exit.finished_at));
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pod.dir.path().join("c1.exit")).unwrap()).unwrap();
    assert_eq!(on_disk["code"], 3, "the exit is on disk for a reefd that restarts");

    let text = std::fs::read(&log).unwrap();
    let lines: Vec<_> = text.split(|&b| b == b'\n').filter_map(parse_line).collect();
    let out: Vec<(Stream, String)> =
        lines.iter().map(|l| (l.stream, String::from_utf8_lossy(&l.message).into_owned())).collect();
    assert!(out.contains(&(Stream::Stdout, "hello".into())), "{out:?}");
    assert!(out.contains(&(Stream::Stderr, "oops".into())), "{out:?}");
    assert!(out.contains(&(Stream::Stdout, "no newline".into())), "{out:?}");

    client.call(&Request::Forget { id: "c1".into() }).unwrap();
    assert!(!pod.dir.path().join("c1.exit").exists());
}

#[test]
fn a_killed_container_reports_its_signal_and_unknown_ids_are_not_found() {
    if !privileged() {
        return;
    }
    let pod = Pod::start();
    let root = pod.dir.path().join("rootfs");
    rootfs(&root);
    let mut client = pod.client();
    client
        .call(&Request::Create {
            log_dir: None,
            id: "sleeper".into(),
            plan: plan(&root, "exec sleep 60"),
            log_path: pod.dir.path().join("s.log"),
            stdin: false,
            stdin_once: false,
        })
        .unwrap();
    client.call(&Request::Start { id: "sleeper".into() }).unwrap();
    assert_eq!(pod.state("sleeper").status, Status::Running);
    client.call(&Request::Signal { id: "sleeper".into(), signal: 9 }).unwrap();
    let exit = pod.wait_exit("sleeper").exit.expect("exit");
    assert_eq!((exit.code, exit.signal), (137, Some(9)));
    let missing = client.call(&Request::State { id: "nope".into() }).unwrap();
    assert!(matches!(missing, Response::Error { kind: ErrorKind::NotFound, .. }));
}

#[test]
fn a_client_that_sends_half_a_request_does_not_hold_up_another_client() {
    let pod = Pod::start();
    let mut stalled = UnixStream::connect(pod.dir.path().join("monitor.sock")).expect("connect");
    stalled.write_all(br#"{"op":"state","id":"#).expect("write half a request");
    std::thread::sleep(Duration::from_millis(100));
    let asked = Instant::now();
    let answer = pod.client().call(&Request::State { id: "nope".into() }).expect("an answer");
    assert!(matches!(answer, Response::Error { kind: ErrorKind::NotFound, .. }), "{answer:?}");
    assert!(asked.elapsed() < Duration::from_secs(2), "answered in {:?}", asked.elapsed());
    // The stalled client is still served once it finishes its request.
    stalled.write_all(b"\"nope\"}\n").expect("write the rest");
    let mut reply = String::new();
    stalled.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&stalled), &mut reply).expect("read the answer");
    assert!(reply.contains("not_found"), "{reply}");
}

#[test]
fn a_state_record_that_cannot_be_written_is_logged() {
    if !privileged() {
        return;
    }
    let pod = Pod::start();
    let root = pod.dir.path().join("rootfs");
    rootfs(&root);
    // Records are written through `<id>.tmp`: a directory there makes every write fail.
    std::fs::create_dir(pod.dir.path().join("c1.tmp")).unwrap();
    let mut client = pod.client();
    let create = Request::Create {
        log_dir: None,
        id: "c1".into(),
        plan: plan(&root, "exit 0"),
        log_path: pod.dir.path().join("c1.log"),
        stdin: false,
        stdin_once: false,
    };
    client.call(&create).unwrap();
    client.call(&Request::Start { id: "c1".into() }).unwrap();
    assert_eq!(pod.wait_exit("c1").status, Status::Exited, "the monitor still knows");
    let log = std::fs::read_to_string(pod.dir.path().join("monitor.log")).unwrap_or_default();
    assert!(log.contains("c1.started"), "{log}");
    assert!(log.contains("c1.exit"), "{log}");
}
