//! `rctl run IMAGE [CMD...]`: docker's run on the CRI. A pod and a container in one step, the image pulled first
//! if the node lacks it. Detached, it prints the container id; in the foreground it streams the container's
//! output (stdout to stdout, stderr to stderr), passes Ctrl-C on as a stop, and exits with the container's code.
//!
//! The steps are separate functions (`plan`, `prepare`, `start`, `wait`, `clean_up`) so that an interactive mode
//! can replace `wait` with an attach without touching the rest.

use std::collections::HashMap;
use std::path::PathBuf;

use k8s_cri::v1 as cri;
use reef_api::v1 as api;

use super::image_spec;
use super::logs::{Options, follow};
use crate::ExitStatus;
use crate::cli::RunArgs;
use crate::client::{Clients, status_error};
use crate::parse::{CPU_PERIOD, User, cpu_quota};

/// Seconds between the stop signal and SIGKILL when Ctrl-C stops a foreground container, as docker's default.
const STOP_TIMEOUT: i64 = 10;

/// Everything `run` will ask of reefd, decided before connecting.
#[derive(Debug, Clone)]
pub struct Plan {
    pub image: String,
    pub pod: cri::PodSandboxConfig,
    pub container: cri::ContainerConfig,
    pub detach: bool,
    pub remove: bool,
    /// The pod's log directory, which rctl made and removes with `--rm`.
    pub log_dir: PathBuf,
}

/// What `prepare` made: the ids to start, wait for and clean up.
#[derive(Debug, Clone)]
pub struct Made {
    pub pod_id: String,
    pub container_id: String,
}

pub fn plan(args: &RunArgs) -> anyhow::Result<Plan> {
    plan_with(args, &random_hex(16))
}

/// `suffix` makes generated names and the pod uid unique (random in `plan`, fixed in tests).
pub fn plan_with(args: &RunArgs, suffix: &str) -> anyhow::Result<Plan> {
    if args.detach && args.rm {
        anyhow::bail!("--rm with -d is not supported: nothing would be left to remove the container when it exits");
    }
    if args.uts.is_some() && args.net.is_none() {
        anyhow::bail!(
            "--uts=host needs --net=host: the CRI gives a pod the node's UTS namespace only with its network"
        );
    }
    let name = match &args.name {
        Some(n) if valid_name(n) => n.clone(),
        Some(n) => {
            anyhow::bail!("invalid name {n:?}: use letters, digits, '-', '_' and '.', starting with a letter or digit")
        }
        None => format!("rctl-{}", &suffix[..suffix.len().min(8)]),
    };
    let uid = suffix.to_string();
    let namespace = "default".to_string();
    let log_dir = args.log_root.join(format!("{namespace}_{name}_{uid}"));
    let mode = |host: bool, otherwise: cri::NamespaceMode| {
        if host { cri::NamespaceMode::Node as i32 } else { otherwise as i32 }
    };
    let namespaces = cri::NamespaceOption {
        network: mode(args.net.is_some(), cri::NamespaceMode::Pod),
        pid: mode(args.pid.is_some(), cri::NamespaceMode::Container),
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    };
    let labels: HashMap<String, String> = args.label.iter().cloned().collect();
    let pod = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: name.clone(), uid, namespace, attempt: 0 }),
        hostname: if args.net.is_some() {
            String::new()
        } else {
            args.hostname.clone().unwrap_or_else(|| name.clone())
        },
        log_directory: log_dir.display().to_string(),
        labels: labels.clone(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut security = cri::LinuxContainerSecurityContext { namespace_options: Some(namespaces), ..Default::default() };
    match &args.user {
        Some(User::Id { uid, gid }) => {
            security.run_as_user = Some(cri::Int64Value { value: *uid });
            security.run_as_group = gid.map(|value| cri::Int64Value { value });
        }
        Some(User::Name(n)) => security.run_as_username = n.clone(),
        None => {}
    }
    let resources = (args.memory.is_some() || args.cpus.is_some()).then(|| cri::LinuxContainerResources {
        memory_limit_in_bytes: args.memory.unwrap_or_default(),
        cpu_period: if args.cpus.is_some() { CPU_PERIOD } else { 0 },
        cpu_quota: args.cpus.map(cpu_quota).unwrap_or_default(),
        ..Default::default()
    });
    let (command, cmd_args) = match &args.entrypoint {
        Some(e) => (vec![e.clone()], args.command.clone()),
        // docker: arguments replace the image's CMD and keep its ENTRYPOINT.
        None => (Vec::new(), args.command.clone()),
    };
    let container = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.clone(), attempt: 0 }),
        image: image_spec(&args.image),
        command,
        args: cmd_args,
        working_dir: args.workdir.clone().unwrap_or_default(),
        envs: args.env.iter().map(|(key, value)| cri::KeyValue { key: key.clone(), value: value.clone() }).collect(),
        mounts: args
            .volume
            .iter()
            .map(|v| cri::Mount {
                container_path: v.container.clone(),
                host_path: v.host.clone(),
                readonly: v.readonly,
                ..Default::default()
            })
            .collect(),
        labels,
        log_path: format!("{name}/0.log"),
        linux: Some(cri::LinuxContainerConfig { resources, security_context: Some(security) }),
        // docker run -i: the container's stdin is the attached client's, and ends with it.
        stdin: args.interactive,
        stdin_once: args.interactive,
        tty: args.tty,
        ..Default::default()
    };
    Ok(Plan { image: args.image.clone(), pod, container, detach: args.detach, remove: args.rm, log_dir })
}

/// kubelet's rule for names (DNS-1123-ish, dots allowed), which also keeps them safe in paths.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut bytes = vec![0u8; n.div_ceil(2)];
    let from_kernel = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_ok();
    if !from_kernel {
        // Unique enough for a name: the clock and the pid.
        let seed = super::now_nanos() as u64 ^ ((std::process::id() as u64) << 32);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (seed >> ((i % 8) * 8)) as u8;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()[..n].to_string()
}

pub async fn run(clients: &Clients, plan: Plan) -> anyhow::Result<()> {
    ensure_image(clients, &plan.image).await?;
    let made = prepare(clients, &plan).await?;
    if plan.interactive() {
        return run_attached(clients, plan, made).await;
    }
    if let Err(e) = start(clients, &made).await {
        if plan.remove {
            clean_up(clients, &plan, &made).await;
        }
        return Err(e);
    }
    if plan.detach {
        println!("{}", made.container_id);
        return Ok(());
    }
    let exit = wait(clients, &plan, &made).await;
    if plan.remove {
        clean_up(clients, &plan, &made).await;
    }
    match exit? {
        0 => Ok(()),
        code => Err(ExitStatus(code).into()),
    }
}

impl Plan {
    /// `-i` or `-t` in the foreground: the terminal is attached to the container instead of following its log.
    pub fn interactive(&self) -> bool {
        !self.detach && (self.container.stdin || self.container.tty)
    }
}

/// `run -it`: attach first, then start, so not a byte of output is missed; the container's exit code is rctl's.
async fn run_attached(clients: &Clients, plan: Plan, made: Made) -> anyhow::Result<()> {
    use super::interactive::{Ended, Mode, Session, session};
    let s = Session {
        mode: Mode::Attach,
        container: made.container_id.clone(),
        command: Vec::new(),
        stdin: plan.container.stdin,
        tty: plan.container.tty,
    };
    let ended = session(clients, s, Some(Box::pin(start(clients, &made)))).await;
    let code = match ended {
        Ok(Ended::Detached) => return Ok(()),
        Ok(Ended::Exit(_)) => exit_code_when_exited(clients, &made).await,
        Err(e) => Err(e),
    };
    if plan.remove {
        clean_up(clients, &plan, &made).await;
    }
    match code? {
        0 => Ok(()),
        code => Err(ExitStatus(code).into()),
    }
}

/// The container's output has ended; its exit is recorded a moment later.
async fn exit_code_when_exited(clients: &Clients, made: &Made) -> anyhow::Result<i32> {
    let mut rt = clients.runtime();
    for _ in 0..200 {
        let status = rt
            .container_status(cri::ContainerStatusRequest { container_id: made.container_id.clone(), verbose: false })
            .await
            .map_err(|s| status_error(&format!("status of {}", made.container_id), s))?
            .into_inner()
            .status
            .unwrap_or_default();
        if status.state == cri::ContainerState::ContainerExited as i32 {
            return Ok(status.exit_code);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    anyhow::bail!("container {} did not exit after its output ended", made.container_id)
}

/// Pulls the image when the node lacks it, telling so on stderr (stdout is the container's).
pub async fn ensure_image(clients: &Clients, image: &str) -> anyhow::Result<()> {
    let present = clients
        .images()
        .image_status(cri::ImageStatusRequest { image: image_spec(image), verbose: false })
        .await
        .map_err(|s| status_error(&format!("image {image}"), s))?
        .into_inner()
        .image
        .is_some();
    if present {
        return Ok(());
    }
    eprintln!("Unable to find image '{image}' locally");
    let mut stream = clients
        .reef()
        .pull_image(api::PullImageRequest { image: image.to_string(), ..Default::default() })
        .await
        .map_err(|s| status_error(&format!("pull {image}"), s))?
        .into_inner();
    while let Some(m) = stream.message().await.map_err(|s| status_error(&format!("pull {image}"), s))? {
        if let Some(api::pull_image_progress::Event::Done(d)) = m.event {
            eprintln!("Pulled {} ({})", d.reference, d.image_id);
            return Ok(());
        }
    }
    anyhow::bail!("pull {image}: reefd ended the stream without a result")
}

/// The pod, then the container in it. A container that cannot be created takes its new pod with it.
pub async fn prepare(clients: &Clients, plan: &Plan) -> anyhow::Result<Made> {
    let mut rt = clients.runtime();
    let pod_id = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(plan.pod.clone()), runtime_handler: String::new() })
        .await
        .map_err(|s| status_error("run pod", s))?
        .into_inner()
        .pod_sandbox_id;
    let created = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(plan.container.clone()),
            sandbox_config: Some(plan.pod.clone()),
        })
        .await;
    match created {
        Ok(r) => Ok(Made { pod_id, container_id: r.into_inner().container_id }),
        Err(s) => {
            let made = Made { pod_id, container_id: String::new() };
            clean_up(clients, plan, &made).await;
            Err(status_error("create container", s))
        }
    }
}

pub async fn start(clients: &Clients, made: &Made) -> anyhow::Result<()> {
    clients
        .runtime()
        .start_container(cri::StartContainerRequest { container_id: made.container_id.clone() })
        .await
        .map_err(|s| status_error(&format!("start {}", made.container_id), s))?;
    Ok(())
}

/// Streams the container's output until it exits and returns its exit code. Ctrl-C (or SIGTERM) stops the
/// container, as docker passes the signal on; its remaining output still comes.
pub async fn wait(clients: &Clients, plan: &Plan, made: &Made) -> anyhow::Result<i32> {
    let log = plan.log_dir.join(&plan.container.log_path);
    let mut following = Box::pin(follow(clients, &made.container_id, &log, Options::default()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut stopping = false;
    loop {
        tokio::select! {
            done = &mut following => { done?; break; }
            _ = tokio::signal::ctrl_c(), if !stopping => {}
            _ = term.recv(), if !stopping => {}
        }
        stopping = true;
        let (id, mut rt) = (made.container_id.clone(), clients.runtime());
        tokio::spawn(async move {
            let _ = rt.stop_container(cri::StopContainerRequest { container_id: id, timeout: STOP_TIMEOUT }).await;
        });
    }
    let status = clients
        .runtime()
        .container_status(cri::ContainerStatusRequest { container_id: made.container_id.clone(), verbose: false })
        .await
        .map_err(|s| status_error(&format!("status of {}", made.container_id), s))?
        .into_inner()
        .status
        .unwrap_or_default();
    Ok(status.exit_code)
}

/// `--rm`: the pod (and with it the container) and the log directory rctl made. Best effort, reported.
pub async fn clean_up(clients: &Clients, plan: &Plan, made: &Made) {
    let removed = clients
        .runtime()
        .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: made.pod_id.clone() })
        .await;
    if let Err(s) = removed {
        eprintln!("rctl: {}", status_error(&format!("remove pod {}", made.pod_id), s));
        return;
    }
    if let Err(e) = std::fs::remove_dir_all(&plan.log_dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("rctl: remove {}: {e}", plan.log_dir.display());
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn plan_of(args: &[&str]) -> anyhow::Result<Plan> {
        let cli = Cli::try_parse_from(std::iter::once("rctl").chain(args.iter().copied()))?;
        let Command::Run(a) = cli.command else { panic!("not run") };
        plan_with(&a, "0123456789abcdef")
    }

    #[test]
    fn a_plain_run_keeps_the_image_s_entrypoint_and_gets_private_namespaces() {
        let p = plan_of(&["run", "--log-root", "/logs", "busybox", "echo", "hi"]).unwrap();
        assert_eq!(p.pod.metadata.as_ref().unwrap().name, "rctl-01234567");
        assert_eq!(p.pod.log_directory, "/logs/default_rctl-01234567_0123456789abcdef");
        assert_eq!(p.pod.hostname, "rctl-01234567");
        assert!(p.container.command.is_empty());
        assert_eq!(p.container.args, ["echo", "hi"]);
        assert_eq!(p.container.log_path, "rctl-01234567/0.log");
        let ns = p.container.linux.unwrap().security_context.unwrap().namespace_options.unwrap();
        assert_eq!((ns.network, ns.pid), (cri::NamespaceMode::Pod as i32, cri::NamespaceMode::Container as i32));
        assert!(!p.detach && !p.remove);
    }

    #[test]
    fn flags_map_to_the_cri() {
        let p = plan_of(&[
            "run",
            "--name",
            "web",
            "--net=host",
            "--pid=host",
            "--uts=host",
            "-u",
            "1000:2000",
            "--memory",
            "64m",
            "--cpus",
            "1.5",
            "-e",
            "A=1",
            "-v",
            "/srv:/data:ro",
            "-l",
            "k=v",
            "-w",
            "/tmp",
            "--entrypoint",
            "/bin/sh",
            "--rm",
            "busybox",
            "-c",
            "true",
        ])
        .unwrap();
        let linux = p.container.linux.clone().unwrap();
        let sc = linux.security_context.unwrap();
        let ns = sc.namespace_options.unwrap();
        assert_eq!((ns.network, ns.pid), (cri::NamespaceMode::Node as i32, cri::NamespaceMode::Node as i32));
        assert_eq!((sc.run_as_user.map(|u| u.value), sc.run_as_group.map(|g| g.value)), (Some(1000), Some(2000)));
        let r = linux.resources.unwrap();
        assert_eq!((r.memory_limit_in_bytes, r.cpu_quota, r.cpu_period), (64 << 20, 150_000, 100_000));
        assert_eq!(p.container.command, ["/bin/sh"]);
        assert_eq!(p.container.args, ["-c", "true"]);
        assert_eq!(p.container.working_dir, "/tmp");
        assert_eq!(p.container.envs[0].key, "A");
        assert!(p.container.mounts[0].readonly);
        assert_eq!(p.pod.labels.get("k").map(String::as_str), Some("v"));
        assert_eq!(p.pod.hostname, "", "the node's hostname with its network");
        assert!(p.remove);
    }

    #[test]
    fn impossible_combinations_are_refused() {
        assert!(plan_of(&["run", "-d", "--rm", "busybox"]).is_err());
        assert!(plan_of(&["run", "--uts=host", "busybox"]).is_err());
        assert!(plan_of(&["run", "--name", "../x", "busybox"]).is_err());
        assert!(plan_of(&["run", "--name", "-x", "busybox"]).is_err());
    }
}
