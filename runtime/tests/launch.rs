//! Launching real containers (needs root): a busybox root filesystem, new namespaces, the start gate, exit codes
//! and typed setup errors.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::sched::CloneFlags;
use reef_runtime::launch::{
    CapabilitySets, Exit, Forker, Gate, LaunchError, LaunchPlan, Launched, Stdio, Step, spawn_exec, wait,
};
use reef_runtime::mounts::MountPlan;

/// The whole way in for a caller that is its own subreaper: gate, fork through an intermediate, ready.
fn launch(plan: &LaunchPlan, stdio: Stdio) -> Result<Launched, LaunchError> {
    let (gate, init) = Gate::new()?;
    let pid = gate.fork(plan, stdio, &[], Forker::Intermediate, init)?;
    gate.wait_ready(plan, pid)?;
    Ok(gate.launched(pid))
}

fn privileged() -> bool {
    let ok = std::env::var("REEF_E2E").as_deref() == Ok("1")
        && nix::unistd::geteuid().is_root()
        && Path::new("/bin/busybox").exists();
    if !ok {
        eprintln!("skipped: needs REEF_E2E=1, root and /bin/busybox");
    } else {
        // The container's init is reparented to us when the intermediate process exits.
        nix::sys::prctl::set_child_subreaper(true).expect("become a child subreaper");
    }
    ok
}

fn busybox_rootfs(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "hostname", "id", "cat", "wc", "touch", "ls", "sleep", "grep"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    for d in ["proc", "dev", "sys", "etc"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
}

fn cstrings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn plan(rootfs: &Path, script: &str) -> LaunchPlan {
    let opts = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    LaunchPlan {
        rootfs: rootfs.to_path_buf(),
        readonly_rootfs: false,
        new_namespaces: CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWNET,
        join_namespaces: vec![],
        mounts: vec![
            MountPlan::from_oci("/proc", "proc", "proc", &opts(&["nosuid", "noexec", "nodev"])),
            MountPlan::from_oci("/dev", "tmpfs", "tmpfs", &opts(&["nosuid", "strictatime", "mode=755", "size=65536k"])),
            MountPlan::from_oci("/sys", "sysfs", "sysfs", &opts(&["nosuid", "noexec", "nodev", "ro"])),
        ],
        masked_paths: vec!["/proc/keys".into(), "/proc/acpi".into(), "/proc/does-not-exist".into()],
        readonly_paths: vec!["/proc/sys".into()],
        hostname: Some("reef-test".into()),
        args: cstrings(&["sh", "-c", script]),
        env: cstrings(&["PATH=/bin", "HOME=/"]),
        cwd: "/tmp".into(),
        uid: 1000,
        gid: 1000,
        additional_gids: vec![10, 20],
        no_new_privileges: true,
        capabilities: Some(CapabilitySets {
            bounding: vec!["CAP_CHOWN".into(), "CAP_NET_BIND_SERVICE".into()],
            effective: vec!["CAP_NET_BIND_SERVICE".into()],
            permitted: vec!["CAP_CHOWN".into(), "CAP_NET_BIND_SERVICE".into()],
            inheritable: vec![],
            ambient: vec![],
        }),
        rlimits: vec![("RLIMIT_NOFILE".into(), 512, 512)],
        cgroup: None,
        sysctls: vec![],
        devices: vec![],
        oom_score_adj: None,
        terminal: false,
        seccomp: None,
        apparmor_profile: None,
    }
}

#[test]
fn a_container_runs_as_pid_1_with_its_own_hostname_user_and_masked_paths() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let script = "{ echo $$; hostname; id -u; id -G; pwd; cat /proc/keys | wc -c; ls /proc/acpi | wc -l; \
                  touch /proc/sys/kernel/x 2>/dev/null || echo proc-sys-ro; \
                  grep -c NoNewPrivs:.1 /proc/self/status 2>/dev/null || cat /proc/self/status | grep NoNewPrivs; \
                  ls /dev/null /dev/zero; grep -E '^Cap(Bnd|Eff)' /proc/self/status; } > /tmp/out 2>&1; exit 7";
    let mut container = launch(&plan(&rootfs, script), Stdio::inherit()).expect("launch");
    assert!(!rootfs.join("tmp/out").exists(), "nothing runs before the start gate opens");
    container.start().expect("start");
    assert_eq!(wait(container.pid()).expect("wait"), Exit::Code(7));
    let out = std::fs::read_to_string(rootfs.join("tmp/out")).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "the command is PID 1 of its namespace: {out}");
    assert_eq!(lines[1], "reef-test");
    assert_eq!(lines[2], "1000");
    assert_eq!(lines[3], "1000 10 20");
    assert_eq!(lines[4], "/tmp");
    assert_eq!(lines[5], "0", "/proc/keys reads empty (masked by /dev/null): {out}");
    assert_eq!(lines[6], "0", "/proc/acpi is an empty tmpfs: {out}");
    assert_eq!(lines[7], "proc-sys-ro");
    assert_eq!(lines[8], "1", "no_new_privs is set: {out}");
    assert!(out.contains("/dev/null") && out.contains("/dev/zero"), "{out}");
    // CHOWN (bit 0) and NET_BIND_SERVICE (bit 10) bound the process; a non-root user keeps no effective
    // capability across exec without ambient ones, exactly as the kernel rules (and docker) have it.
    assert!(out.contains("CapBnd:\t0000000000000401"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    // Nothing of the container's mounts is left in our namespace.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(rootfs.to_str().unwrap()), "container mounts leaked to the host");
}

#[test]
fn a_missing_command_fails_at_exec_with_its_errno() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    busybox_rootfs(dir.path());
    let mut p = plan(dir.path(), "");
    p.args = cstrings(&["no-such-command"]);
    let mut container = launch(&p, Stdio::inherit()).expect("launch");
    let err = container.start().expect_err("exec must fail");
    assert!(matches!(err, LaunchError::Child { step: Step::Exec, errno: nix::errno::Errno::ENOENT, .. }), "{err:?}");
    assert_eq!(wait(container.pid()).expect("wait"), Exit::Code(127));
}

#[test]
fn setup_failures_come_back_typed_before_start() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    busybox_rootfs(dir.path());
    let mut p = plan(dir.path(), "true");
    p.mounts.push(MountPlan::from_oci("/bogus", "no-such-fs", "none", &[]));
    match launch(&p, Stdio::inherit()) {
        Err(LaunchError::Child { step: Step::Mount, errno, detail }) => {
            assert_eq!(errno, nix::errno::Errno::ENODEV);
            assert_eq!(detail.as_deref(), Some("no-such-fs on /bogus"), "the error names the mount");
        }
        Err(other) => panic!("wrong error: {other:?}"),
        Ok(_) => panic!("a bogus mount must fail the launch"),
    }
}

#[test]
fn the_apparmor_profile_is_set_for_the_exec_or_the_launch_fails_at_that_step_naming_it() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    busybox_rootfs(dir.path());
    let mut p = plan(dir.path(), "cat /proc/self/attr/current");
    if reef_runtime::apparmor::enabled() {
        // `unconfined` is a label every AppArmor kernel knows; a made-up name is not.
        p.apparmor_profile = Some("unconfined".into());
        let mut container = launch(&p, Stdio::inherit()).expect("launch with a known label");
        container.start().expect("start");
        assert_eq!(wait(container.pid()).expect("wait"), Exit::Code(0));
        p.apparmor_profile = Some("reef-test-no-such-profile".into());
    } else {
        // The kernel has no AppArmor: any profile is refused where it is set, never silently dropped.
        p.apparmor_profile = Some("reef-default".into());
    }
    match launch(&p, Stdio::inherit()) {
        Err(LaunchError::Child { step: Step::AppArmor, detail, .. }) => {
            assert!(detail.as_deref().is_some_and(|d| d.contains(p.apparmor_profile.as_deref().unwrap())), "{detail:?}")
        }
        Err(other) => panic!("wrong error: {other:?}"),
        Ok(_) => panic!("a profile the kernel does not have must fail the launch"),
    }
}

#[test]
fn the_apparmor_profile_is_written_only_to_procfs_not_to_a_file_mounted_over_proc() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    busybox_rootfs(dir.path());
    // A directory shaped like /proc, with the attribute files as plain files, where the container's /proc goes.
    let fake = tempfile::tempdir().unwrap();
    for attr in ["thread-self/attr/apparmor", "self/attr"] {
        std::fs::create_dir_all(fake.path().join(attr)).unwrap();
    }
    std::fs::write(fake.path().join("thread-self/attr/apparmor/exec"), "").unwrap();
    std::fs::write(fake.path().join("self/attr/exec"), "").unwrap();
    let mut p = plan(dir.path(), "true");
    let fake_proc = fake.path().display().to_string();
    p.mounts[0] = MountPlan::from_oci("/proc", "bind", &fake_proc, &cstrings(&["rbind", "rw"]));
    p.masked_paths.clear();
    p.readonly_paths.clear();
    p.apparmor_profile = Some("reef-default".into());
    match launch(&p, Stdio::inherit()) {
        Err(LaunchError::Child { step: Step::AppArmor, errno, .. }) => assert_eq!(errno, nix::errno::Errno::EXDEV),
        Err(other) => panic!("wrong error: {other:?}"),
        Ok(_) => panic!("a profile written to a file that is not procfs's must fail the launch"),
    }
    assert_eq!(std::fs::read(fake.path().join("thread-self/attr/apparmor/exec")).unwrap(), b"");
}

#[test]
fn a_container_dropped_before_start_exits_without_running() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    busybox_rootfs(dir.path());
    let container = launch(&plan(dir.path(), "echo ran > /tmp/ran"), Stdio::inherit()).expect("launch");
    let pid = container.pid();
    drop(container);
    assert_eq!(wait(pid).expect("wait"), Exit::Code(0));
    assert!(!dir.path().join("tmp/ran").exists());
}

#[test]
fn exec_joins_a_running_container_as_its_user() {
    if !privileged() {
        return;
    }
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    busybox_rootfs(dir.path());
    let p = plan(dir.path(), "exec sleep 30");
    let mut container = launch(&p, Stdio::inherit()).expect("launch");
    container.start().expect("start");
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let mut exec = p.clone();
    exec.args = cstrings(&["sh", "-c", "echo $$; hostname; id -u; pwd"]);
    let stdio = Stdio { stdin: 0, stdout: out_w.as_raw_fd(), stderr: 2 };
    let pid = spawn_exec(&exec, container.pid(), stdio).expect("exec");
    drop(out_w);
    let mut out = String::new();
    std::fs::File::from(out_r).read_to_string(&mut out).unwrap();
    assert_eq!(wait(pid).expect("wait for the exec"), Exit::Code(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], "1", "a new process in the container's PID namespace: {out}");
    assert!(lines[0].parse::<u32>().unwrap() < 100, "pids are the container's own: {out}");
    assert_eq!(&lines[1..], ["reef-test", "1000", "/tmp"]);
    let mut missing = p.clone();
    missing.args = cstrings(&["no-such-tool"]);
    let err = spawn_exec(&missing, container.pid(), Stdio::inherit()).expect_err("missing command");
    assert!(matches!(err, LaunchError::Child { step: Step::Exec, .. }), "{err:?}");
    nix::sys::signal::kill(container.pid(), nix::sys::signal::Signal::SIGKILL).unwrap();
    assert_eq!(wait(container.pid()).unwrap(), Exit::Signal(9));
}
