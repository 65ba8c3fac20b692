//! OOM kills seen as they happen: one inotify instance per monitor, a watch on each container's `memory.events`
//! (cgroup v2), read whenever the kernel notifies it.
//!
//! Why not only read it at the exit: under the systemd driver the container's scope is systemd's, which stops it
//! and removes its cgroup as soon as its last process is gone, often before the monitor has reaped the exit; the
//! count was then lost and the exit reported as `Error`. containerd's shim and conmon watch the same file the
//! same way. Keeping the scope until the exit is recorded is not possible from outside: systemd ends a scope
//! whose cgroup is empty, whatever its properties. The kill is counted (and notified) before the process even
//! gets its SIGKILL, so the watch reads it while the file is still there.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::cgroups::ContainerCgroup;

#[derive(Default)]
pub(super) struct OomWatch {
    inotify: Option<Inotify>,
    /// Which container each watch is for.
    watches: HashMap<WatchDescriptor, String>,
}

impl OomWatch {
    /// Watches `cgroup` of container `id`, when its hierarchy notifies OOM kills. A failure leaves the exit-time
    /// read alone to tell.
    pub fn add(&mut self, id: &str, cgroup: &ContainerCgroup) {
        let Some(file) = cgroup.oom_watch_file() else { return };
        if self.inotify.is_none() {
            self.inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok();
        }
        let Some(inotify) = &self.inotify else { return };
        if let Ok(wd) = inotify.add_watch(&file, AddWatchFlags::IN_MODIFY) {
            self.watches.insert(wd, id.to_string());
        }
    }

    /// Stops watching container `id` (removed; a cgroup that went takes its watch with it).
    pub fn remove(&mut self, id: &str) {
        let Some(inotify) = &self.inotify else { return };
        let gone: Vec<WatchDescriptor> = self.watches.iter().filter(|(_, c)| *c == id).map(|(wd, _)| *wd).collect();
        for wd in gone {
            let _ = inotify.rm_watch(wd);
            self.watches.remove(&wd);
        }
    }

    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.inotify.as_ref().map(|i| i.as_fd())
    }

    /// The containers whose `memory.events` changed since the last call.
    pub fn changed(&mut self) -> Vec<String> {
        let Some(inotify) = &self.inotify else { return Vec::new() };
        let mut ids = Vec::new();
        while let Ok(events) = inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for e in events {
                if e.mask.contains(AddWatchFlags::IN_IGNORED) {
                    self.watches.remove(&e.wd);
                } else if let Some(id) = self.watches.get(&e.wd)
                    && !ids.contains(id)
                {
                    ids.push(id.clone());
                }
            }
        }
        ids
    }
}
