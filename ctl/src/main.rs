//! rctl: the Reef node debugging CLI.

mod cli;
mod client;
mod commands;
mod output;

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
        Err(e) => {
            eprintln!("rctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let timeout = match cli.command {
        Command::Pull(_) => Duration::from_secs(cli.timeout.max(30 * 60)),
        _ => Duration::from_secs(cli.timeout),
    };
    let clients = Clients::connect(&cli.endpoint, timeout).await?;
    match &cli.command {
        Command::Version(a) => commands::version::run(&clients, a).await,
        Command::Info(a) => commands::info::run(&clients, a).await,
        Command::Pull(a) => commands::pull::run(&clients, a).await,
        Command::Images(a) => commands::images::run(&clients, a).await,
        Command::Inspecti(a) => commands::inspecti::run(&clients, a).await,
        Command::Rmi(a) => commands::rmi::run(&clients, a).await,
        Command::Imagefsinfo(a) => commands::imagefsinfo::run(&clients, a).await,
    }
}

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
