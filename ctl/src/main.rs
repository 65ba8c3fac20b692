//! rctl: the Reef node debugging CLI.

#![deny(unsafe_code)]

mod cli;
mod client;
mod commands;
mod config_file;
mod output;
mod parse;
mod resolve;
mod terminal;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::client::Clients;

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rctl: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // `rctl images | head` closes the pipe early: that is not an error worth a message.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<ExitStatus>().is_some() => {
            ExitCode::from(e.downcast_ref::<ExitStatus>().map(|s| s.0.clamp(1, 255) as u8).unwrap_or(1))
        }
        Err(e) => {
            eprintln!("rctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ten years: no deadline for sessions a person drives.
const INTERACTIVE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

async fn run(cli: Cli) -> anyhow::Result<()> {
    let timeout = match cli.command {
        Command::Pull(_) => Duration::from_secs(cli.timeout.max(30 * 60)),
        // Pulling the image is part of run; the container itself may run for as long as it likes.
        Command::Run(_) => Duration::from_secs(cli.timeout.max(30 * 60)),
        // Interactive sessions last as long as the person at the keyboard wants.
        Command::Attach(_) | Command::PortForward(_) => INTERACTIVE,
        Command::Exec(ref a) if a.interactive || a.tty => INTERACTIVE,
        _ => Duration::from_secs(cli.timeout),
    };
    let connect = || Clients::connect(&cli.endpoint, timeout);
    // What can be checked without reefd is checked first: a bad file or flag never leaves half a job done.
    match &cli.command {
        Command::Runp(a) => {
            let config = config_file::load_pod(&a.pod_config)?;
            return commands::runp::run(&connect().await?, config, &a.pod_config).await;
        }
        Command::Create(a) => {
            let container = config_file::load_container(&a.container_config)?;
            let sandbox = config_file::load_pod(&a.pod_config)?;
            return commands::create::run(&connect().await?, &a.pod, container, sandbox).await;
        }
        Command::Run(a) => {
            let plan = commands::run::plan(a)?;
            return commands::run::run(&connect().await?, plan).await;
        }
        Command::Update(a) => commands::update::check(a)?,
        _ => {}
    }
    let clients = connect().await?;
    match &cli.command {
        Command::Version(a) => commands::version::run(&clients, a).await,
        Command::Info(a) => commands::info::run(&clients, a).await,
        Command::Pull(a) => commands::pull::run(&clients, a).await,
        Command::Images(a) => commands::images::run(&clients, a).await,
        Command::Inspecti(a) => commands::inspecti::run(&clients, a).await,
        Command::Rmi(a) => commands::rmi::run(&clients, a).await,
        Command::Imagefsinfo(a) => commands::imagefsinfo::run(&clients, a).await,
        Command::Pods(a) => commands::pods::run(&clients, a).await,
        Command::Ps(a) => commands::ps::run(&clients, a).await,
        Command::Logs(a) => commands::logs::run(&clients, a).await,
        Command::Exec(a) if a.interactive || a.tty => {
            let session = commands::interactive::Session {
                mode: commands::interactive::Mode::Exec,
                container: a.container.clone(),
                command: a.command.clone(),
                stdin: a.interactive,
                tty: a.tty,
            };
            commands::interactive::run(&clients, session).await
        }
        Command::Exec(a) => commands::exec::run(&clients, a, cli.timeout).await,
        Command::Attach(a) => {
            let session = commands::interactive::Session {
                mode: commands::interactive::Mode::Attach,
                container: a.container.clone(),
                command: Vec::new(),
                stdin: !a.no_stdin,
                tty: false,
            };
            commands::interactive::run(&clients, session).await
        }
        Command::PortForward(a) => commands::port_forward::run(&clients, a).await,
        Command::Stop(a) => commands::lifecycle::stop(&clients, a).await,
        Command::Rm(a) => commands::lifecycle::rm(&clients, a).await,
        Command::Stopp(a) => commands::lifecycle::stopp(&clients, a).await,
        Command::Rmp(a) => commands::lifecycle::rmp(&clients, a).await,
        Command::Inspect(a) => commands::inspect::container(&clients, a).await,
        Command::Inspectp(a) => commands::inspect::pod(&clients, a).await,
        Command::Start(a) => commands::start::run(&clients, a).await,
        Command::Stats(a) => commands::stats::run(&clients, a).await,
        Command::Update(a) => commands::update::run(&clients, a).await,
        Command::Events(a) => commands::events::run(&clients, a).await,
        Command::Runp(_) | Command::Create(_) | Command::Run(_) => unreachable!("handled above"),
    }
}

/// `rctl exec` and `rctl run` exit with the command's own status.
#[derive(Debug)]
pub struct ExitStatus(pub i32);

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for ExitStatus {}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// Rust ignores SIGPIPE, which turns `rctl images | head` into a panic inside `println!`. The default action ends
/// rctl quietly instead, as it does for every other command-line tool.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
