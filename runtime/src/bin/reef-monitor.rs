//! `reef-monitor DIR [--share-pid-namespace [--user-namespace PIN]] [--node-mounts FD]`: the per-pod monitor (see
//! `reef_runtime::monitor`). `--user-namespace` is the pod's user namespace, which then owns the shared PID
//! namespace. `--node-mounts` names an inherited descriptor of the node's mount namespace, which containers'
//! mount namespaces are copied from (`reef_runtime::mount_ns`).
//!
//! It daemonizes: the process reefd starts exits as soon as the monitor listens on `DIR/monitor.sock`, so reefd
//! neither waits on the monitor nor has to reap it, and the monitor lives on in its own session when reefd dies.

#![deny(unsafe_code)]

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;

use reef_runtime::monitor::Monitor;

/// dlmalloc keeps the memory it frees for reuse, where musl's allocator (the release build's libc) unmaps freed
/// pages at once: decoding one Create request cost some 25 mmap and munmap calls. The monitor's own heap is a
/// few KiB at rest, so what dlmalloc keeps is small. The same allocator in every build, so the tests run it too.
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn main() -> ExitCode {
    const USAGE: &str = "usage: reef-monitor DIR [--share-pid-namespace [--user-namespace PIN]] [--node-mounts FD]";
    let mut args = std::env::args_os().skip(1);
    let Some(dir) = args.next().map(PathBuf::from) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let mut share_pid_namespace = false;
    let mut user_namespace = None;
    while let Some(arg) = args.next() {
        if arg == "--share-pid-namespace" {
            share_pid_namespace = true;
        } else if arg == "--user-namespace"
            && let Some(pin) = args.next()
        {
            user_namespace = Some(PathBuf::from(pin));
        } else if arg == "--node-mounts"
            && let Some(fd) = args.next().and_then(|fd| fd.to_str().and_then(|fd| fd.parse().ok()))
        {
            // Without it containers are still right, only their mount namespaces are copied from this one.
            if let Err(e) = reef_runtime::launch::copy_mounts_from_inherited(fd) {
                eprintln!("reef-monitor: the node's mount namespace (descriptor {fd}): {e}");
            }
        } else {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    let Ok((ready_r, ready_w)) = nix::unistd::pipe() else {
        eprintln!("reef-monitor: cannot create a pipe");
        return ExitCode::FAILURE;
    };
    match fork() {
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(ready_w);
            let mut byte = [0u8; 1];
            // A byte means "listening"; end-of-file means the monitor failed (it said why on stderr).
            match nix::unistd::read(&ready_r, &mut byte) {
                Ok(1) => ExitCode::SUCCESS,
                _ => ExitCode::FAILURE,
            }
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(ready_r);
            let _ = nix::unistd::setsid();
            let mut monitor = match Monitor::new(&dir) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("reef-monitor: {}", reef_runtime::error_chain(&e));
                    return ExitCode::FAILURE;
                }
            };
            if share_pid_namespace && let Err(e) = monitor.share_pid_namespace(user_namespace.as_deref()) {
                eprintln!("reef-monitor: {}", reef_runtime::error_chain(&e));
                return ExitCode::FAILURE;
            }
            let _ = nix::unistd::write(&ready_w, &[1]);
            drop(ready_w);
            detach_stdio(&dir);
            monitor.run();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("reef-monitor: fork: {e}");
            ExitCode::FAILURE
        }
    }
}

#[allow(unsafe_code)]
fn fork() -> nix::Result<nix::unistd::ForkResult> {
    // SAFETY: called before any thread exists, so the child is a full copy with no lock held elsewhere.
    unsafe { nix::unistd::fork() }
}

/// Once running, the monitor's own messages go to a file in its directory: reefd's stderr may be gone.
fn detach_stdio(dir: &std::path::Path) {
    let null = std::fs::File::open("/dev/null");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("monitor.log"));
    if let (Ok(null), Ok(log)) = (null, log) {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&log);
        let _ = nix::unistd::dup2_stderr(&log);
        let _ = std::io::stderr().flush();
        let _ = log.as_raw_fd();
    }
}
