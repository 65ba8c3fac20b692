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
    fn rmi_needs_an_image_and_formats_are_checked() {
        assert!(parse(&["rmi"]).is_err());
        assert!(parse(&["images", "-o", "xml"]).is_err());
        assert!(parse(&["nope"]).is_err());
    }
}
