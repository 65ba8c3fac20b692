//! AppArmor as the container sees it, in /proc/self/attr/current and in what it may do. Where the kernel enforces
//! AppArmor (the real-node lane's guest): RuntimeDefault and no request at all run as Reef's `reef-default`, its
//! execs too; Localhost profiles by name, in the `apparmor` field, the deprecated `apparmor_profile` string, or both
//! (the field wins), the cri-tools conformance specs (`pkg/validate/apparmor_linux.go`) reproduced; a profile not
//! loaded fails at create. Where it does not (this machine): RuntimeDefault runs unconfined and a Localhost
//! profile is refused at create, naming it, with nothing left behind.

use std::io::Write;
use std::process::{Command, Stdio};

use k8s_cri::v1 as cri;
use reef_tests::pod::{
    Runtime, Setup, assert_no_container_left, container_config, create, pod_config, run_pod, setup, sh, wait_exited,
};
use reef_tests::require_e2e;
use tonic::Code;

use cri::security_profile::ProfileType;

/// As critest decides it: the kernel's AppArmor parameter.
fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.starts_with('Y'))
}

/// Skips the rest of a test that needs an AppArmor kernel, saying so.
macro_rules! require_apparmor {
    () => {
        if !apparmor_enabled() {
            eprintln!("skipped: AppArmor is not enabled on this host (/sys/module/apparmor/parameters/enabled)");
            return;
        }
    };
}

/// Test profiles as critest writes them (its deny-write and audit-write pair), under names of the test's own;
/// unloaded when dropped, so the kernel keeps nothing of the test.
struct TestProfiles {
    deny_write: String,
    audit_write: String,
}

impl TestProfiles {
    fn load(test: &str) -> TestProfiles {
        let (deny_write, audit_write) = (format!("reef-e2e-{test}-deny-write"), format!("reef-e2e-{test}-audit-write"));
        let text = format!(
            "#include <tunables/global>\n\
             profile {deny_write} flags=(attach_disconnected) {{\n  #include <abstractions/base>\n  file,\n  deny /** w,\n}}\n\
             profile {audit_write} flags=(attach_disconnected) {{\n  #include <abstractions/base>\n  file,\n  audit /** w,\n}}\n"
        );
        parser(&["-r", "-K"], &text);
        TestProfiles { deny_write, audit_write }
    }
}

impl Drop for TestProfiles {
    fn drop(&mut self) {
        let text = format!("profile {} {{\n}}\nprofile {} {{\n}}\n", self.deny_write, self.audit_write);
        parser(&["-R", "-K"], &text);
    }
}

/// apparmor_parser with the profiles on stdin (no file, no cache left behind); any stderr is a failure, as critest
/// counts it.
fn parser(args: &[&str], text: &str) {
    let mut child = Command::new("apparmor_parser")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("apparmor_parser (the apparmor package) is installed where AppArmor is enabled");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write the profiles");
    let out = child.wait_with_output().expect("apparmor_parser");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "apparmor_parser {args:?}: {}: {stderr}", out.status);
}

/// One way of putting a profile in the security context.
type Tweak<'a> = Box<dyn Fn(&mut cri::LinuxContainerSecurityContext) + 'a>;

fn localhost(name: &str) -> cri::SecurityProfile {
    cri::SecurityProfile { profile_type: ProfileType::Localhost as i32, localhost_ref: name.into() }
}

fn profile(t: ProfileType) -> cri::SecurityProfile {
    cri::SecurityProfile { profile_type: t as i32, localhost_ref: String::new() }
}

/// A pod of the test's, where each probe runs as a fresh container.
struct InPod<'a> {
    s: &'a Setup,
    pod: String,
    sandbox: cri::PodSandboxConfig,
}

impl InPod<'_> {
    async fn new<'a>(s: &'a Setup, rt: &mut Runtime, name: &str) -> InPod<'a> {
        let sandbox = pod_config(s, name);
        let pod = run_pod(rt, &sandbox).await;
        InPod { s, pod, sandbox }
    }

    fn config(
        &self,
        name: &str,
        script: &str,
        tweak: impl FnOnce(&mut cri::LinuxContainerSecurityContext),
    ) -> cri::ContainerConfig {
        let mut c = container_config(self.s, name, script);
        tweak(c.linux.as_mut().unwrap().security_context.as_mut().unwrap());
        c
    }

    /// Runs `script` to its end in a fresh container; returns its exit code and output.
    async fn run(
        &self,
        rt: &mut Runtime,
        name: &str,
        script: &str,
        tweak: impl FnOnce(&mut cri::LinuxContainerSecurityContext),
    ) -> (i32, String) {
        let c = self.config(name, script, tweak);
        let id = create(rt, &self.pod, &self.sandbox, c).await.unwrap_or_else(|e| panic!("create {name}: {e:?}"));
        rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("start");
        let st = wait_exited(rt, &id).await;
        assert_eq!(st.state, cri::ContainerState::ContainerExited as i32, "{name} did not exit");
        let log = std::fs::read_to_string(self.s.logs.path().join(format!("{name}.log"))).unwrap_or_default();
        // CRI lines are `time stream tag message`: keep the messages.
        let out = log.lines().filter_map(|l| l.splitn(4, ' ').nth(3)).map(|m| format!("{m}\n")).collect();
        (st.exit_code, out)
    }

    async fn remove(self, rt: &mut Runtime) {
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: self.pod }).await.expect("remove pod");
    }
}

/// The process's AppArmor label, or `none` where the kernel has no AppArmor (reading it fails there).
const LABEL: &str = "cat /proc/self/attr/current 2>/dev/null || echo none";

#[tokio::test]
async fn runtime_default_and_no_request_run_as_reef_default_where_apparmor_is_on_and_unconfined_where_it_is_off() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let at = InPod::new(&s, &mut rt, "aa-default").await;
    let expected = if apparmor_enabled() { "reef-default (enforce)\n" } else { "none\n" };
    let (code, unset) = at.run(&mut rt, "unset", LABEL, |_| {}).await;
    assert_eq!((code, unset.as_str()), (0, expected), "no request: RuntimeDefault");
    let (code, field) =
        at.run(&mut rt, "field", LABEL, |sc| sc.apparmor = Some(profile(ProfileType::RuntimeDefault))).await;
    assert_eq!((code, field.as_str()), (0, expected), "the apparmor field");
    #[allow(deprecated)]
    let (code, string) = at.run(&mut rt, "string", LABEL, |sc| sc.apparmor_profile = "runtime/default".into()).await;
    assert_eq!((code, string.as_str()), (0, expected), "the deprecated string");
    let (code, unconfined) =
        at.run(&mut rt, "unconfined", LABEL, |sc| sc.apparmor = Some(profile(ProfileType::Unconfined))).await;
    let expected = if apparmor_enabled() { "unconfined\n" } else { "none\n" };
    assert_eq!((code, unconfined.as_str()), (0, expected));
    let (code, privileged) = at.run(&mut rt, "privileged", LABEL, |sc| sc.privileged = true).await;
    assert_eq!((code, privileged.as_str()), (0, expected), "privileged: unconfined unless a profile is named");
    at.remove(&mut rt).await;
}

#[tokio::test]
async fn an_exec_runs_under_its_container_s_profile() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let at = InPod::new(&s, &mut rt, "aa-exec").await;
    let c = at.config("sleeper", "sleep 600", |_| {});
    let id = create(&mut rt, &at.pod, &at.sandbox, c).await.expect("create");
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("start");
    let out = sh(&mut rt, &id, LABEL).await;
    let expected = if apparmor_enabled() { "reef-default (enforce)\n" } else { "none\n" };
    assert_eq!((out.exit_code, String::from_utf8_lossy(&out.stdout).as_ref()), (0, expected));
    at.remove(&mut rt).await;
}

#[tokio::test]
async fn a_localhost_profile_the_node_cannot_apply_fails_at_create_naming_it_and_leaves_nothing() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let at = InPod::new(&s, &mut rt, "aa-missing").await;
    #[allow(deprecated)]
    let forms: [(&str, Tweak<'_>); 3] = [
        ("string", Box::new(|sc| sc.apparmor_profile = "localhost/reef-e2e-non-existent".into())),
        ("field", Box::new(|sc| sc.apparmor = Some(localhost("localhost/reef-e2e-non-existent")))),
        (
            "both",
            Box::new(|sc| {
                sc.apparmor_profile = "localhost/reef-e2e-non-existent".into();
                sc.apparmor = Some(localhost("reef-e2e-non-existent"));
            }),
        ),
    ];
    for (name, tweak) in forms {
        let c = at.config(name, "true", |sc| tweak(sc));
        let err = create(&mut rt, &at.pod, &at.sandbox, c).await.expect_err("a profile the node does not hold");
        let (code, why) = if apparmor_enabled() {
            (Code::InvalidArgument, "not loaded")
        } else {
            (Code::FailedPrecondition, "not enabled")
        };
        assert_eq!(err.code(), code, "{name}: {}", err.message());
        assert!(
            err.message().contains("\"reef-e2e-non-existent\"") && err.message().contains(why),
            "{}",
            err.message()
        );
        assert_no_container_left(&s, &mut rt, &format!("{name}.log")).await;
    }
    at.remove(&mut rt).await;
}

#[tokio::test]
async fn the_status_says_whether_apparmor_confines_containers() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let status = rt.status(cri::StatusRequest { verbose: true }).await.expect("status").into_inner();
    let info: serde_json::Value = serde_json::from_str(&status.info["apparmor"]).expect("apparmor info is JSON");
    assert_eq!(info["enabled"], apparmor_enabled());
    let default = if apparmor_enabled() { serde_json::json!("reef-default") } else { serde_json::Value::Null };
    assert_eq!(info["runtime_default"], default);
}

// -- where the kernel enforces AppArmor: cri-tools' AppArmor specs, and what reef-default takes away --------------

/// critest's `touch /tmp/foo` under a Localhost profile, given three ways: the deprecated string, the field (with
/// critest's `localhost/` prefix), and both, where the field names the profile and the string a missing one.
#[tokio::test]
async fn a_localhost_deny_write_profile_stops_writes_in_every_form_the_cri_gives_it() {
    require_e2e!();
    require_apparmor!();
    let profiles = TestProfiles::load("deny");
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let at = InPod::new(&s, &mut rt, "aa-deny").await;
    let deny = profiles.deny_write.clone();
    #[allow(deprecated)]
    let forms: [(&str, Tweak<'_>); 3] = [
        ("string", Box::new(|sc| sc.apparmor_profile = format!("localhost/{deny}"))),
        ("field", Box::new(|sc| sc.apparmor = Some(localhost(&format!("localhost/{deny}"))))),
        (
            "both",
            Box::new(|sc| {
                sc.apparmor_profile = "localhost/reef-e2e-non-existent".into();
                sc.apparmor = Some(localhost(&format!("localhost/{deny}")));
            }),
        ),
    ];
    for (name, tweak) in forms {
        let (code, out) =
            at.run(&mut rt, name, "touch /tmp/foo; r=$?; cat /proc/self/attr/current; exit $r", |sc| tweak(sc)).await;
        assert_ne!(code, 0, "{name}: the write must be denied: {out}");
        // stdout and stderr are read apart: touch's complaint may land in the log after the label.
        assert!(out.lines().any(|l| l == format!("{deny} (enforce)")), "{name}: {out}");
    }
    at.remove(&mut rt).await;
}

#[tokio::test]
async fn a_localhost_audit_write_profile_lets_writes_through_in_every_form_the_cri_gives_it() {
    require_e2e!();
    require_apparmor!();
    let profiles = TestProfiles::load("audit");
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let at = InPod::new(&s, &mut rt, "aa-audit").await;
    let audit = profiles.audit_write.clone();
    #[allow(deprecated)]
    let forms: [(&str, Tweak<'_>); 3] = [
        ("string", Box::new(|sc| sc.apparmor_profile = format!("localhost/{audit}"))),
        ("field", Box::new(|sc| sc.apparmor = Some(localhost(&audit)))),
        (
            "both",
            Box::new(|sc| {
                sc.apparmor_profile = "localhost/reef-e2e-non-existent".into();
                sc.apparmor = Some(localhost(&format!("localhost/{audit}")));
            }),
        ),
    ];
    for (name, tweak) in forms {
        let (code, out) = at.run(&mut rt, name, "touch /tmp/foo && cat /proc/self/attr/current", |sc| tweak(sc)).await;
        assert_eq!((code, out), (0, format!("{audit} (enforce)\n")), "{name}");
    }
    at.remove(&mut rt).await;
}

#[tokio::test]
async fn a_privileged_container_runs_a_localhost_profile_it_names_and_its_execs_do_too() {
    require_e2e!();
    require_apparmor!();
    let profiles = TestProfiles::load("priv");
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let at = InPod::new(&s, &mut rt, "aa-priv").await;
    let deny = profiles.deny_write.clone();
    let c = at.config("sleeper", "sleep 600", |sc| {
        sc.privileged = true;
        sc.apparmor = Some(localhost(&deny));
    });
    let id = create(&mut rt, &at.pod, &at.sandbox, c).await.expect("create");
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("start");
    let label = sh(&mut rt, &id, "cat /proc/self/attr/current").await;
    assert_eq!(String::from_utf8_lossy(&label.stdout), format!("{deny} (enforce)\n"));
    let write = sh(&mut rt, &id, "touch /tmp/from-exec").await;
    assert_ne!(write.exit_code, 0, "the exec is denied the write too");
    at.remove(&mut rt).await;
}

/// What reef-default adds to the capabilities: even with CAP_SYS_ADMIN, no mount.
#[tokio::test]
async fn reef_default_denies_mounts_that_capabilities_alone_would_allow() {
    require_e2e!();
    require_apparmor!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let at = InPod::new(&s, &mut rt, "aa-mount").await;
    let script = "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m && echo mounted";
    let sys_admin = |sc: &mut cri::LinuxContainerSecurityContext| {
        sc.capabilities = Some(cri::Capability { add_capabilities: vec!["SYS_ADMIN".into()], ..Default::default() });
    };
    let (code, out) = at
        .run(&mut rt, "unconfined", script, |sc| {
            sys_admin(sc);
            sc.apparmor = Some(profile(ProfileType::Unconfined));
        })
        .await;
    assert_eq!((code, out.as_str()), (0, "mounted\n"), "unconfined, CAP_SYS_ADMIN mounts");
    let (code, out) = at.run(&mut rt, "confined", script, sys_admin).await;
    assert_ne!(code, 0, "reef-default denies the mount: {out}");
    at.remove(&mut rt).await;
}
