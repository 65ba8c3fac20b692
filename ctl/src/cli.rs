//! rctl's arguments, parsed completely before anything connects to reefd (so parsing is unit-testable).

use clap::{Parser, Subcommand, ValueEnum};

pub const DEFAULT_ENDPOINT: &str = "/run/reef/reef.sock";

/// rctl: the Reef node debugging CLI. crictl's verbs with docker's ergonomics.
#[derive(Debug, Parser)]
#[command(name = "rctl", version, disable_help_subcommand = true)]
pub struct Cli {
    /// reefd's socket (`/path` or `unix:///path`).
    #[arg(long, global = true, env = "REEF_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    pub endpoint: String,
    /// Give up on a call after this many seconds (pulls get at least 30 minutes).
    #[arg(long, global = true, default_value_t = 60)]
    pub timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Client and runtime versions.
    Version(FormatArgs),
    /// reefd's state: version, directories, conditions, configuration.
    Info(FormatArgs),
    /// Pull an image, with progress per layer.
    Pull(PullArgs),
    /// List images.
    #[command(alias = "image")]
    Images(ImagesArgs),
    /// Show images' details (CRI ImageStatus, verbose).
    Inspecti(InspectiArgs),
    /// Remove images.
    Rmi(RmiArgs),
    /// Image filesystem usage.
    Imagefsinfo(FormatArgs),
    /// List pods.
    Pods(ListArgs),
    /// List containers (running ones unless -a).
    Ps(PsArgs),
    /// Print a container's log.
    Logs(LogsArgs),
    /// Run a command in a running container: its output (through ExecSync; --timeout applies), or with -i/-t
    /// a session streamed both ways.
    Exec(ExecArgs),
    /// Join a running container's own stdin, stdout and stderr (detach with ctrl-p ctrl-q).
    Attach(AttachArgs),
    /// Forward local ports to ports on a pod's loopback: `rctl port-forward POD 8080:80`.
    #[command(name = "port-forward")]
    PortForward(PortForwardArgs),
    /// Stop containers (the stop signal, then SIGKILL after --time seconds).
    Stop(StopArgs),
    /// Remove containers (-f: stop running ones first).
    Rm(RmArgs),
    /// Stop pods and their containers.
    Stopp(IdsArgs),
    /// Remove pods and their containers.
    Rmp(IdsArgs),
    /// Show a container's status (CRI ContainerStatus, verbose).
    Inspect(InspectArgs),
    /// Show a pod's status (CRI PodSandboxStatus, verbose).
    Inspectp(InspectArgs),
    /// Run a pod from a PodSandboxConfig file (JSON or YAML, like crictl's).
    Runp(RunpArgs),
    /// Create a container in a pod from a ContainerConfig file and the pod's PodSandboxConfig file, like crictl.
    Create(CreateArgs),
    /// Start created containers.
    Start(IdsArgs),
    /// Run a command in a new container (a pod plus a container in one step), docker style.
    Run(Box<RunArgs>),
    /// Live CPU, memory and process figures of running containers, like docker stats.
    Stats(StatsArgs),
    /// Change the CPU and memory limits of running containers, like docker update.
    Update(UpdateArgs),
    /// Print pod, container and image events as they happen.
    Events(EventsArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunpArgs {
    /// The PodSandboxConfig file.
    pub pod_config: std::path::PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The pod (id or prefix) the container goes into.
    pub pod: String,
    /// The ContainerConfig file.
    pub container_config: std::path::PathBuf,
    /// The pod's PodSandboxConfig file.
    pub pod_config: std::path::PathBuf,
}

/// `rctl run`: every value is checked here, before reefd is contacted.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep stdin open and attach it to the container.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the container a terminal (the local one goes raw; detach with ctrl-p ctrl-q).
    #[arg(short, long)]
    pub tty: bool,
    /// The container's name (and its pod's); a generated one otherwise.
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variables: `KEY=VALUE`, or `KEY` to pass rctl's own value.
    #[arg(short, long = "env", value_name = "KEY[=VALUE]", value_parser = crate::parse::env_var)]
    pub env: Vec<(String, String)>,
    /// Bind mounts: `/host/path:/container/path[:ro]`.
    #[arg(short, long = "volume", value_name = "HOST:CONTAINER[:ro]", value_parser = crate::parse::volume)]
    pub volume: Vec<crate::parse::Volume>,
    /// Remove the container and its pod when it exits.
    #[arg(long)]
    pub rm: bool,
    /// `host`: use the node's PID namespace.
    #[arg(long, value_name = "host", value_parser = crate::parse::host_only)]
    pub pid: Option<String>,
    /// `host`: use the node's UTS namespace (hostname); needs --net=host, as the CRI ties the two together.
    #[arg(long, value_name = "host", value_parser = crate::parse::host_only)]
    pub uts: Option<String>,
    /// `host`: use the node's network namespace.
    #[arg(long, alias = "network", value_name = "host", value_parser = crate::parse::host_only)]
    pub net: Option<String>,
    /// The user to run as: `uid[:gid]` or a user name from the image.
    #[arg(short, long, value_name = "UID[:GID]", value_parser = crate::parse::user)]
    pub user: Option<crate::parse::User>,
    /// Memory limit, e.g. `64m`, `1g` (units b, k, m, g: powers of 1024).
    #[arg(short, long, value_name = "BYTES", value_parser = crate::parse::memory)]
    pub memory: Option<i64>,
    /// CPU limit in cores, e.g. `0.5`.
    #[arg(long, value_name = "CPUS", value_parser = crate::parse::cpus)]
    pub cpus: Option<f64>,
    /// Labels on the container and its pod: `key=value`.
    #[arg(short, long = "label", value_name = "KEY=VALUE", value_parser = crate::parse::label)]
    pub label: Vec<(String, String)>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// The pod's hostname (the container's name by default).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Where the pod's log directory goes (as kubelet's /var/log/pods).
    #[arg(long, default_value = "/var/log/pods", value_name = "DIR")]
    pub log_root: std::path::PathBuf,
    /// The image, pulled first if it is not on the node.
    pub image: String,
    /// The command and its arguments (the image's CMD otherwise).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Only these containers (ids or prefixes); all running ones otherwise.
    pub containers: Vec<String>,
    /// Print one sample and exit.
    #[arg(long)]
    pub no_stream: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
    /// New memory limit, e.g. `128m`.
    #[arg(short, long, value_name = "BYTES", value_parser = crate::parse::memory)]
    pub memory: Option<i64>,
    /// New CPU limit in cores, e.g. `1.5`.
    #[arg(long, value_name = "CPUS", value_parser = crate::parse::cpus)]
    pub cpus: Option<f64>,
}

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Only events of this pod (id or prefix) and its containers.
    #[arg(long)]
    pub pod: Option<String>,
    /// Only events of this container (id or prefix).
    #[arg(long)]
    pub container: Option<String>,
    /// Only events of these kinds.
    #[arg(long = "type", value_enum)]
    pub kinds: Vec<EventType>,
    /// Output format (json: one object per line).
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventType {
    Pod,
    Container,
    Image,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// All containers, not only running ones.
    #[arg(short, long)]
    pub all: bool,
    /// Only ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Only containers of this pod (id or prefix).
    #[arg(short, long)]
    pub pod: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    pub container: String,
    /// Keep printing new lines until the container exits.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
    /// Prefix each line with its timestamp.
    #[arg(short, long)]
    pub timestamps: bool,
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// Keep stdin open and send it to the command.
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the command a terminal (the local one goes raw).
    #[arg(short, long)]
    pub tty: bool,
    pub container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// Do not send stdin to the container.
    #[arg(long)]
    pub no_stdin: bool,
    pub container: String,
}

#[derive(Debug, clap::Args)]
pub struct PortForwardArgs {
    pub pod: String,
    /// `LOCAL:REMOTE`, or `PORT` for the same number on both sides; LOCAL 0 picks a free port.
    #[arg(required = true, value_parser = parse_port_pair)]
    pub ports: Vec<(u16, u16)>,
}

fn parse_port_pair(s: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| p.parse::<u16>().map_err(|_| format!("invalid port {p:?}"));
    let (local, remote) = match s.split_once(':') {
        Some((l, r)) => (port(l)?, port(r)?),
        None => (port(s)?, port(s)?),
    };
    if remote == 0 {
        return Err(format!("{s}: the remote port must be between 1 and 65535"));
    }
    Ok((local, remote))
}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
    /// Seconds to wait after the stop signal before SIGKILL.
    #[arg(short, long, default_value_t = 10)]
    pub time: i64,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
    /// Remove running containers too.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct IdsArgs {
    #[arg(required = true)]
    pub ids: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Output format (table means JSON here).
    #[arg(short, long, value_enum, default_value_t = Format::Json)]
    pub output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, clap::Args)]
pub struct FormatArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The image reference, e.g. `busybox` or `registry.example:5000/team/app:1.0`.
    pub image: String,
    /// Registry credentials as `USER:PASSWORD`.
    #[arg(long, value_name = "USER:PASSWORD")]
    pub user: Option<String>,
    /// Print plain progress lines even on a terminal.
    #[arg(long)]
    pub plain: bool,
}

#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Only images matching this reference.
    pub image: Option<String>,
    /// Only image ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show repo digests.
    #[arg(long)]
    pub digests: bool,
    /// Full image ids.
    #[arg(long)]
    pub no_trunc: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, clap::Args)]
pub struct InspectiArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Output format (table means JSON here, as crictl does).
    #[arg(short, long, value_enum, default_value_t = Format::Json)]
    pub output: Format,
}

#[derive(Debug, clap::Args)]
pub struct RmiArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("rctl").chain(args.iter().copied()))
    }

    #[test]
    fn images_flags_parse() {
        let cli = parse(&["images", "-q", "--digests", "-o", "json"]).unwrap();
        let Command::Images(a) = cli.command else { panic!("not images") };
        assert!(a.quiet && a.digests);
        assert_eq!(a.output, Format::Json);
    }

    #[test]
    fn endpoint_is_global_and_pull_takes_credentials() {
        let cli = parse(&["pull", "--user", "u:p", "busybox", "--endpoint", "unix:///tmp/x.sock"]).unwrap();
        assert_eq!(cli.endpoint, "unix:///tmp/x.sock");
        let Command::Pull(a) = cli.command else { panic!("not pull") };
        assert_eq!(a.user.as_deref(), Some("u:p"));
        assert_eq!(a.image, "busybox");
    }

    #[test]
    fn exec_keeps_the_command_s_own_flags() {
        let cli = parse(&["exec", "abc", "ls", "-la", "/"]).unwrap();
        let Command::Exec(a) = cli.command else { panic!("not exec") };
        assert_eq!(a.command, ["ls", "-la", "/"]);
        let cli = parse(&["ps", "-a", "-q"]).unwrap();
        assert!(matches!(cli.command, Command::Ps(PsArgs { all: true, quiet: true, .. })));
    }

    #[test]
    fn run_takes_docker_s_flags_and_leaves_the_command_s_own() {
        let cli = parse(&[
            "run",
            "-d",
            "--name",
            "web",
            "-e",
            "A=1",
            "-v",
            "/srv:/data:ro",
            "--rm",
            "--pid=host",
            "--net=host",
            "-u",
            "1000:1000",
            "--memory",
            "64m",
            "--cpus",
            "0.5",
            "-l",
            "tier=front",
            "busybox",
            "sh",
            "-c",
            "ls -l",
        ])
        .unwrap();
        let Command::Run(a) = cli.command else { panic!("not run") };
        assert!(a.detach && a.rm);
        assert_eq!(a.name.as_deref(), Some("web"));
        assert_eq!(a.env, [("A".to_string(), "1".to_string())]);
        assert_eq!(a.volume[0].container, "/data");
        assert!(a.volume[0].readonly);
        assert_eq!((a.pid.as_deref(), a.net.as_deref()), (Some("host"), Some("host")));
        assert_eq!(a.memory, Some(64 << 20));
        assert_eq!(a.cpus, Some(0.5));
        assert_eq!(a.label, [("tier".to_string(), "front".to_string())]);
        assert_eq!(a.image, "busybox");
        assert_eq!(a.command, ["sh", "-c", "ls -l"]);
    }

    #[test]
    fn run_refuses_bad_values_before_connecting() {
        for bad in [
            &["run", "--memory", "lots", "busybox"][..],
            &["run", "--cpus", "-1", "busybox"],
            &["run", "-v", "relative:/data", "busybox"],
            &["run", "-v", "/a:/b:rx", "busybox"],
            &["run", "--pid", "container", "busybox"],
            &["run", "-l", "novalue", "busybox"],
            &["run", "-u", "1000:", "busybox"],
            &["run"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn logs_follow_stats_update_and_events_parse() {
        let cli = parse(&["logs", "-f", "--tail", "5", "abc"]).unwrap();
        assert!(matches!(cli.command, Command::Logs(LogsArgs { follow: true, tail: Some(5), .. })));
        let cli = parse(&["stats", "--no-stream", "-o", "json"]).unwrap();
        assert!(matches!(cli.command, Command::Stats(StatsArgs { no_stream: true, output: Format::Json, .. })));
        let cli = parse(&["update", "--memory", "1g", "--cpus", "2", "abc"]).unwrap();
        let Command::Update(a) = cli.command else { panic!("not update") };
        assert_eq!((a.memory, a.cpus), (Some(1 << 30), Some(2.0)));
        assert!(parse(&["update", "--memory", "1g"]).is_err(), "update needs a container");
        let cli = parse(&["events", "--type", "container", "--type", "pod"]).unwrap();
        let Command::Events(a) = cli.command else { panic!("not events") };
        assert_eq!(a.kinds, [EventType::Container, EventType::Pod]);
    }

    #[test]
    fn rmi_needs_an_image_and_formats_are_checked() {
        assert!(parse(&["rmi"]).is_err());
        assert!(parse(&["images", "-o", "xml"]).is_err());
        assert!(parse(&["nope"]).is_err());
    }
}
