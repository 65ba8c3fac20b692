//! How reefd hears that a container exited by itself. The monitor already records every exit by renaming
//! `<id>.exit` into the pod's directory; an inotify watch on each pod directory sees that rename. So the monitor
//! stays as it is (single-threaded, no subscriptions to keep), and reefd learns of an exit within a moment of it
//! being recorded, with nothing polled. One thread blocks on the inotify fd for all pods; a pod's watch goes away
//! by itself when its directory is removed.

use std::path::Path;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

pub struct ExitWatch {
    inotify: Option<Inotify>,
}

impl ExitWatch {
    pub fn new() -> ExitWatch {
        match Inotify::init(InitFlags::IN_CLOEXEC) {
            Ok(inotify) => ExitWatch { inotify: Some(inotify) },
            Err(e) => {
                tracing::warn!(error = %e, "inotify is unavailable: exits are seen only when a container is asked about");
                ExitWatch { inotify: None }
            }
        }
    }

    /// Watches a pod's directory for exit records.
    pub fn watch(&self, pod_dir: &Path) {
        let Some(inotify) = &self.inotify else { return };
        if let Err(e) = inotify.add_watch(pod_dir, AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ONLYDIR) {
            tracing::warn!(dir = %pod_dir.display(), error = %e, "cannot watch the pod's exit records");
        }
    }

    /// Blocks, calling `on_exit` with the id of each container whose exit record appears. Returns only if
    /// inotify is unavailable or fails.
    pub fn run(&self, on_exit: impl Fn(&str)) {
        let Some(inotify) = &self.inotify else { return };
        loop {
            let events = match inotify.read_events() {
                Ok(events) => events,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "reading exit records stopped");
                    return;
                }
            };
            for event in events {
                if let Some(id) = event.name.as_ref().and_then(|n| container_of(&n.to_string_lossy())) {
                    on_exit(&id);
                }
            }
        }
    }
}

/// `<id>.exit` → `<id>`; anything else the monitor writes (`.started`, temporary files) is not an exit.
fn container_of(file: &str) -> Option<String> {
    file.strip_suffix(".exit").filter(|id| !id.is_empty() && !id.contains('.')).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exit_records_name_an_exited_container() {
        assert_eq!(container_of("abc123.exit").as_deref(), Some("abc123"));
        assert_eq!(container_of("abc123.started"), None);
        assert_eq!(container_of("abc123.tmp"), None);
        assert_eq!(container_of(".exit"), None);
    }

    #[test]
    fn a_renamed_exit_record_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let watch = std::sync::Arc::new(ExitWatch::new());
        watch.watch(dir.path());
        let (tx, rx) = std::sync::mpsc::channel();
        let w = std::sync::Arc::clone(&watch);
        std::thread::spawn(move || w.run(|id| tx.send(id.to_string()).unwrap_or_default()));
        std::fs::write(dir.path().join("c1.tmp"), b"{}").unwrap();
        std::fs::rename(dir.path().join("c1.tmp"), dir.path().join("c1.started")).unwrap();
        std::fs::write(dir.path().join("c1.tmp"), b"{}").unwrap();
        std::fs::rename(dir.path().join("c1.tmp"), dir.path().join("c1.exit")).unwrap();
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap(), "c1");
    }
}
