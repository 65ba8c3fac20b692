//! A container's root filesystem: the image's unpacked layers as overlay lowerdirs, with a writable upper
//! directory of the container's own. Mounted in the caller's mount namespace (so reefd can unmount it on
//! removal, even after a restart), at a path under the container's state directory.
//!
//! What happens inside the rootfs once a container's init has it (its mounts, devices, pivot, masked paths) is in
//! `setup` and `devices`, run by `launch`'s init role.

pub(crate) mod devices;
pub(crate) mod setup;

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("a container needs at least one image layer")]
    NoLayers,
    #[error("layer path {0} cannot be used in overlay options (it contains ',', ':' or '\\n')")]
    BadLayerPath(PathBuf),
    #[error(
        "overlay options exceed the kernel's one-page limit ({0} bytes); the image has too many layers for mount(2)"
    )]
    TooManyLayers(usize),
    #[error("{op} {path}")]
    Sys {
        op: &'static str,
        path: PathBuf,
        #[source]
        errno: nix::errno::Errno,
    },
}

/// Where a container's overlay lives.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// Image layers, lowest first (the order of the image's diff_ids).
    pub layers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub target: PathBuf,
    pub readonly: bool,
    /// For a pod with its own user namespace: the layers are seen through idmapped mounts of it, so the image's
    /// root-owned files belong to the container's root, and the upper and work dirs are given to that root.
    pub idmap: Option<Idmap>,
}

/// The pod's user namespace (its pinned nsfs file) and the host ids its root maps to.
#[derive(Debug, Clone)]
pub struct Idmap {
    pub userns: PathBuf,
    pub root_uid: u32,
    pub root_gid: u32,
}

const PAGE: usize = 4096;

impl Overlay {
    /// The mount(2) data: overlay wants the topmost lower layer first.
    pub fn options(&self) -> Result<String, RootfsError> {
        if self.layers.is_empty() {
            return Err(RootfsError::NoLayers);
        }
        for p in self.layers.iter().chain([&self.upper, &self.work]) {
            let s = p.to_string_lossy();
            if s.contains([',', ':', '\n']) {
                return Err(RootfsError::BadLayerPath(p.clone()));
            }
        }
        let lower: Vec<String> = self.layers.iter().rev().map(|p| p.display().to_string()).collect();
        // index=off: a layer shared by many containers must not be tied to any one upper dir.
        let data = format!(
            "lowerdir={},upperdir={},workdir={},index=off",
            lower.join(":"),
            self.upper.display(),
            self.work.display()
        );
        if data.len() >= PAGE {
            return Err(RootfsError::TooManyLayers(data.len()));
        }
        Ok(data)
    }

    /// Creates the upper, work and target directories and mounts the overlay.
    pub fn mount(&self) -> Result<(), RootfsError> {
        let data = self.options()?;
        for dir in [&self.upper, &self.work, &self.target] {
            std::fs::create_dir_all(dir).map_err(|e| RootfsError::Sys {
                op: "create directory",
                path: dir.clone(),
                errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            })?;
        }
        if let Some(idmap) = &self.idmap {
            return self.mount_idmapped(idmap);
        }
        let flags = if self.readonly { MsFlags::MS_RDONLY } else { MsFlags::empty() };
        nix::mount::mount(Some("overlay"), &self.target, Some("overlay"), flags, Some(data.as_str()))
            .map_err(|errno| RootfsError::Sys { op: "mount overlay on", path: self.target.clone(), errno })
    }
}

impl Overlay {
    /// Overlay cannot itself be idmapped (mount_setattr gives EINVAL), but since 5.19 its lower layers can be:
    /// each layer becomes a detached idmapped clone, handed to overlay as a file descriptor (6.13), so no
    /// per-layer mount is ever attached and the one overlay at `target` is all there is to unmount, as without
    /// a user namespace. Copy-ups keep the mapped owner, which the upper dir then holds on the host.
    fn mount_idmapped(&self, idmap: &Idmap) -> Result<(), RootfsError> {
        let sys_err = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |errno| RootfsError::Sys { op, path: path.clone(), errno }
        };
        let cstr = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| RootfsError::BadLayerPath(p.into()))
        };
        let userns = nix::fcntl::open(
            &idmap.userns,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(sys_err("open user namespace", &idmap.userns))?;
        let mut lowers = Vec::with_capacity(self.layers.len());
        for layer in self.layers.iter().rev() {
            lowers.push(crate::sys::idmapped_clone(&cstr(layer)?, &userns).map_err(sys_err("idmap layer", layer))?);
        }
        for dir in [&self.upper, &self.work] {
            nix::unistd::chown(
                dir.as_path(),
                Some(nix::unistd::Uid::from_raw(idmap.root_uid)),
                Some(nix::unistd::Gid::from_raw(idmap.root_gid)),
            )
            .map_err(sys_err("chown to the pod's root", dir))?;
        }
        crate::sys::mount_overlay_fds(
            &lowers,
            &cstr(&self.upper)?,
            &cstr(&self.work)?,
            &cstr(&self.target)?,
            self.readonly,
        )
        .map_err(sys_err("mount idmapped overlay on", &self.target))
    }
}

/// Unmounts a container's root filesystem; one that is not mounted (any more) is fine, so removal can repeat.
pub fn unmount(target: &Path) -> Result<(), RootfsError> {
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(errno) => Err(RootfsError::Sys { op: "unmount", path: target.to_path_buf(), errno }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(dir: &Path, layers: usize) -> Overlay {
        Overlay {
            layers: (0..layers).map(|i| dir.join(format!("l{i}"))).collect(),
            upper: dir.join("upper"),
            work: dir.join("work"),
            target: dir.join("rootfs"),
            readonly: false,
            idmap: None,
        }
    }

    #[test]
    fn the_top_layer_comes_first_in_lowerdir() {
        let o = overlay(Path::new("/x"), 3);
        assert_eq!(o.options().unwrap(), "lowerdir=/x/l2:/x/l1:/x/l0,upperdir=/x/upper,workdir=/x/work,index=off");
    }

    #[test]
    fn bad_or_too_many_layers_are_refused_before_mounting() {
        assert!(matches!(overlay(Path::new("/x"), 0).options(), Err(RootfsError::NoLayers)));
        assert!(matches!(overlay(Path::new("/a:b"), 1).options(), Err(RootfsError::BadLayerPath(_))));
        let long = format!("/{}", "d".repeat(200));
        assert!(matches!(overlay(Path::new(&long), 30).options(), Err(RootfsError::TooManyLayers(_))));
    }

    #[test]
    fn layers_merge_with_the_top_one_winning_and_writes_go_to_the_upper_dir() {
        if std::env::var("REEF_E2E").as_deref() != Ok("1") || !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs REEF_E2E=1 and root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let o = overlay(dir.path(), 2);
        std::fs::create_dir_all(&o.layers[0]).unwrap();
        std::fs::create_dir_all(&o.layers[1]).unwrap();
        std::fs::write(o.layers[0].join("f"), "bottom").unwrap();
        std::fs::write(o.layers[0].join("only-bottom"), "b").unwrap();
        std::fs::write(o.layers[1].join("f"), "top").unwrap();
        o.mount().unwrap();
        // Unmounts even when an assertion below fails.
        struct Mounted<'a>(&'a Path);
        impl Drop for Mounted<'_> {
            fn drop(&mut self) {
                let _ = unmount(self.0);
            }
        }
        let _mounted = Mounted(&o.target);
        assert_eq!(std::fs::read_to_string(o.target.join("f")).unwrap(), "top");
        assert!(o.target.join("only-bottom").exists());
        std::fs::write(o.target.join("new"), "w").unwrap();
        assert!(o.upper.join("new").exists(), "writes land in the upper dir");
        assert!(!o.layers[1].join("new").exists(), "layers stay untouched");
        unmount(&o.target).unwrap();
        unmount(&o.target).expect("unmounting twice is fine");
    }
}
