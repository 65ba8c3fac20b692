//! Device nodes in a container's /dev, made by its init before it pivots: the standard ones on a fresh tmpfs /dev
//! and those the spec lists, each below the rootfs (resolved with `RESOLVE_IN_ROOT`).

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MsFlags, mount};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::{Gid, Uid};

use super::setup::{ensure_target, resolve_in_root};
use crate::launch::DevicePlan;

pub(crate) fn create_devices(root: &OwnedFd) -> nix::Result<()> {
    let dev = resolve_in_root(root, "/dev", OFlag::O_DIRECTORY | OFlag::O_RDONLY)?;
    for (name, major, minor) in
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    {
        match nix::sys::stat::mknodat(
            &dev,
            name,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(major, minor),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            // In a user namespace mknod is refused: the host's node is bind-mounted instead, as runc and crun do.
            Err(Errno::EPERM) => {
                bind_host_device(&dev, name)?;
                continue;
            }
            Err(e) => return Err(e),
        }
        // mknod honours the umask; the nodes must be usable by any user.
        nix::sys::stat::fchmodat(
            &dev,
            name,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        match nix::unistd::symlinkat(target, &dev, name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Bind-mounts the host's `/dev/<name>` onto an empty file of that name in the container's /dev (`dev`).
fn bind_host_device(dev: &OwnedFd, name: &str) -> nix::Result<()> {
    match nix::fcntl::openat(
        dev,
        name,
        OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o666),
    ) {
        Ok(fd) => drop(fd),
        Err(e) => return Err(e),
    }
    let target = format!("/proc/self/fd/{}/{name}", dev.as_raw_fd());
    let none: Option<&str> = None;
    mount(Some(format!("/dev/{name}").as_str()), target.as_str(), none, MsFlags::MS_BIND, none)
}

/// A device node the spec asks for, created below the root (its parents made as needed) with its owner and mode.
pub(crate) fn create_device(root: &OwnedFd, d: &DevicePlan) -> nix::Result<()> {
    let (parent, name) = match d.path.trim_end_matches('/').rsplit_once('/') {
        Some((parent, name)) if !name.is_empty() && name != ".." && name != "." => (parent, name),
        _ => return Err(Errno::EINVAL),
    };
    let dir = if parent.is_empty() {
        resolve_in_root(root, "/", OFlag::O_DIRECTORY | OFlag::O_PATH)?
    } else {
        drop(ensure_target(root, parent, false)?);
        resolve_in_root(root, parent, OFlag::O_DIRECTORY | OFlag::O_PATH)?
    };
    let kind = if d.kind == 'b' { SFlag::S_IFBLK } else { SFlag::S_IFCHR };
    let dev = nix::sys::stat::makedev(d.major as u64, d.minor as u64);
    match nix::sys::stat::mknodat(&dir, name, kind, Mode::from_bits_truncate(d.mode), dev) {
        // A standard node already there (kubelet may map /dev/null onto itself) is replaced by the asked one.
        Err(Errno::EEXIST) => {
            nix::unistd::unlinkat(&dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir)?;
            nix::sys::stat::mknodat(&dir, name, kind, Mode::from_bits_truncate(d.mode), dev)?;
        }
        other => other?,
    }
    nix::sys::stat::fchmodat(
        &dir,
        name,
        Mode::from_bits_truncate(d.mode),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )?;
    nix::unistd::fchownat(
        &dir,
        name,
        Some(Uid::from_raw(d.uid)),
        Some(Gid::from_raw(d.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
}
