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
    /// Run a command in a running container and print its output (non-interactive; --timeout applies to it).
    Exec(ExecArgs),
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
    /// Only the last N lines.
    #[arg(long)]
    pub tail: Option<usize>,
    /// Prefix each line with its timestamp.
    #[arg(short, long)]
    pub timestamps: bool,
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    pub container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
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
    fn rmi_needs_an_image_and_formats_are_checked() {
        assert!(parse(&["rmi"]).is_err());
        assert!(parse(&["images", "-o", "xml"]).is_err());
        assert!(parse(&["nope"]).is_err());
    }
}
