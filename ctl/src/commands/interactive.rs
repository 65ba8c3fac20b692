//! `rctl exec -it` and `rctl attach`: a bidirectional gRPC stream (Reef's Exec and Attach), the local terminal
//! in raw mode when there is one, SIGWINCH forwarded as resizes, docker's detach keys for attach, and the
//! command's exit code passed through.

use std::io::Write;

use reef_api::v1 as api;
use tokio::sync::mpsc;

use crate::ExitStatus;
use crate::client::{Clients, status_error};
use crate::terminal::{self, DetachScanner, RawMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Exec,
    Attach,
}

pub struct Session {
    pub mode: Mode,
    pub container: String,
    pub command: Vec<String>,
    pub stdin: bool,
    pub tty: bool,
}

fn start_message(s: &Session) -> api::StdioInput {
    let size = terminal::size().map(|(rows, cols)| api::TerminalSize { rows: rows.into(), cols: cols.into() });
    api::StdioInput {
        input: Some(api::stdio_input::Input::Start(api::StdioStart {
            container_id: s.container.clone(),
            command: s.command.clone(),
            stdin: s.stdin,
            tty: s.tty,
            size,
        })),
    }
}

/// How a session ended.
pub enum Ended {
    /// The command or the container's output ended; the exit code, when the server sent one.
    Exit(Option<i32>),
    /// ctrl-p ctrl-q: the container keeps running.
    Detached,
}

pub async fn run(clients: &Clients, s: Session) -> anyhow::Result<()> {
    match session(clients, s, None).await? {
        Ended::Exit(Some(0) | None) | Ended::Detached => Ok(()),
        Ended::Exit(Some(code)) => Err(ExitStatus(code).into()),
    }
}

pub type OnOpen<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + 'a>>;

/// Runs the session; `on_open` runs once the server has set it up (rctl run -it starts its container there).
pub async fn session(clients: &Clients, mut s: Session, on_open: Option<OnOpen<'_>>) -> anyhow::Result<Ended> {
    use std::os::fd::AsFd;
    s.container = crate::resolve::container(clients, &s.container).await?;
    let (tx, rx) = mpsc::channel::<api::StdioInput>(16);
    tx.send(start_message(&s)).await?;
    let input = tokio_stream::wrappers::ReceiverStream::new(rx);
    let what = format!("{} {}", if s.mode == Mode::Exec { "exec in" } else { "attach to" }, s.container);
    let response = match s.mode {
        Mode::Exec => clients.reef().exec(input).await,
        Mode::Attach => clients.reef().attach(input).await,
    };
    let mut output = response.map_err(|e| status_error(&what, e))?.into_inner();
    if let Some(f) = on_open {
        f.await?;
    }
    // Raw only when typing goes to a terminal on the other side too; otherwise keystrokes keep their meaning here.
    let local_tty = terminal::is_tty(std::io::stdin().as_fd());
    let _raw = if local_tty && (s.tty || s.mode == Mode::Attach) && s.stdin { Some(RawMode::enter()?) } else { None };

    let detach = s.mode == Mode::Attach && local_tty;
    let (detached_tx, mut detached_rx) = mpsc::channel::<()>(1);
    if s.stdin {
        let tx = tx.clone();
        // A plain thread, not tokio's stdin: a read blocked on the terminal must not keep rctl from exiting.
        let (chunks_tx, mut chunks) = mpsc::channel::<Vec<u8>>(4);
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match std::io::Read::read(&mut stdin, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if chunks_tx.blocking_send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        tokio::spawn(async move {
            let mut scanner = DetachScanner::default();
            while let Some(chunk) = chunks.recv().await {
                let (send, detaching) = match detach.then(|| scanner.scan(&chunk)).flatten() {
                    Some(keep) => (keep, true),
                    None => (chunk.len(), false),
                };
                if send > 0 {
                    let msg = api::StdioInput { input: Some(api::stdio_input::Input::Stdin(chunk[..send].to_vec())) };
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
                if detaching {
                    let _ = detached_tx.send(()).await;
                    return;
                }
            }
            let _ = tx.send(api::StdioInput { input: Some(api::stdio_input::Input::CloseStdin(true)) }).await;
        });
    }
    // An attached container's terminal is its own: sizes go to it whenever this side has a terminal too.
    if s.tty || (s.mode == Mode::Attach && local_tty) {
        let tx = tx.clone();
        tokio::spawn(async move {
            let Ok(mut winch) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) else {
                return;
            };
            while winch.recv().await.is_some() {
                if let Some((rows, cols)) = terminal::size() {
                    let size = api::TerminalSize { rows: rows.into(), cols: cols.into() };
                    let msg = api::StdioInput { input: Some(api::stdio_input::Input::Resize(size)) };
                    if tx.send(msg).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    // Keep the input stream open until the end: closing it is how the server learns the client left.
    let _keep_open = tx;
    let mut exit = None;
    loop {
        tokio::select! {
            msg = output.message() => match msg {
                Ok(Some(api::StdioOutput { output: Some(out) })) => match out {
                    api::stdio_output::Output::Stdout(d) => {
                        let mut o = std::io::stdout().lock();
                        o.write_all(&d)?;
                        o.flush()?;
                    }
                    api::stdio_output::Output::Stderr(d) => {
                        let mut e = std::io::stderr().lock();
                        e.write_all(&d)?;
                        e.flush()?;
                    }
                    api::stdio_output::Output::ExitCode(code) => exit = Some(code),
                },
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return Err(status_error(&what, e)),
            },
            _ = detached_rx.recv() => {
                drop(_raw);
                eprintln!("\r\nread escape sequence");
                return Ok(Ended::Detached);
            }
        }
    }
    drop(_raw);
    Ok(Ended::Exit(exit))
}
