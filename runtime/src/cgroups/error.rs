//! What goes wrong with a cgroup, with where: the cgroup's path, or the file's (as youki's libcgroups wraps its
//! I/O errors), and the cause kept as the source, errno included.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A file of the cgroup filesystem could not be opened, read or written.
    #[error("cgroup file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// cgroups-rs failed to create, limit or remove the cgroup at `path` (or, under systemd, its scope).
    #[error("cgroup {path}")]
    Manager {
        path: String,
        /// Boxed: cgroups-rs's error is a few hundred bytes, and most results never hold one.
        #[source]
        source: Box<cgroups_rs::manager::Error>,
    },
    /// The same, through cgroups-rs's cgroupfs handles.
    #[error("cgroup {path}")]
    Fs {
        path: String,
        #[source]
        source: cgroups_rs::fs::error::Error,
    },
    #[error("cgroup {path} does not exist")]
    Missing { path: String },
    #[error("cgroup {path}: no {controller} hierarchy")]
    NoController { path: String, controller: &'static str },
    /// On v2: the controller a limit needs is not enabled in the cgroup (its parent's `cgroup.subtree_control`
    /// lacks it, as when the parent holds processes itself).
    #[error("cgroup {path}: the {controller} controller is not enabled for it")]
    NotEnabled { path: String, controller: String },
    #[error("cgroup {path}: {what}")]
    Invalid { path: String, what: String },
    /// The kernel refused a step of cgroup v2's device rules (see `device_filter`) for the cgroup at `path`.
    #[error("cgroup {path}: {step}")]
    DeviceFilter {
        path: PathBuf,
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup parent {0:?} is not a systemd slice name")]
    NotASlice(String),
}

impl CgroupError {
    /// The errno of the first cause that has one (a file's, or what cgroups-rs wraps).
    pub fn errno(&self) -> Option<nix::errno::Errno> {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if let Some(code) = e.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error) {
                return Some(nix::errno::Errno::from_raw(code));
            }
            cause = e.source();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cgroup_error_names_its_file_and_keeps_the_errno() {
        let source = std::io::Error::from_raw_os_error(nix::libc::EBUSY);
        let e = CgroupError::Io { path: "/sys/fs/cgroup/memory/c1/tasks".into(), source };
        assert_eq!(e.errno(), Some(nix::errno::Errno::EBUSY));
        assert!(crate::error_chain(&e).starts_with("cgroup file /sys/fs/cgroup/memory/c1/tasks: "));
        assert_eq!(CgroupError::Missing { path: "c1".into() }.errno(), None);
    }
}
