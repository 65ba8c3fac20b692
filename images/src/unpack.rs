//! Unpacking one layer (an uncompressed tar stream) into its own directory, which then serves as an overlay
//! lowerdir as it is.
//!
//! Safety model. A layer is untrusted input, so no path from it is ever handed to a path-walking syscall from the
//! host's root. Every entry's parent directory is opened with `openat2(RESOLVE_IN_ROOT)` relative to the layer
//! directory: the kernel resolves `..` and symlinks as if that directory were `/`, so a symlink planted earlier in
//! the layer (`evil -> /etc`) and a later write through it (`evil/passwd`) lands inside the layer. The entry itself
//! is then created with `*at` calls on that directory fd, never following a final symlink. Names that climb out
//! lexically (`../x`, `a/../../x`) and hardlinks whose target climbs out are refused outright: they have no
//! legitimate use, and refusing them tells the operator the image is hostile rather than silently rewriting it.
//!
//! Whiteouts become what overlayfs understands: `.wh.NAME` a 0:0 character device named `NAME`, `.wh..wh..opq`
//! the `trusted.overlay.opaque=y` xattr on its directory. Device nodes are created only when allowed.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstatat, futimens, mknodat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, linkat, symlinkat, unlinkat};

use crate::error::{ImageError, Result};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const COPY_BUFFER: usize = 256 << 10;

#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Create char and block device nodes found in the layer; otherwise they are skipped with a warning.
    pub allow_device_nodes: bool,
    /// Apply the uid and gid of the tar headers (reefd runs as root; tests may not need it).
    pub preserve_owners: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions { allow_device_nodes: false, preserve_owners: true }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Entries created.
    pub inodes: u64,
}

/// Unpacks an uncompressed tar stream into `dest`, an existing empty directory. Reads the stream to its end, past
/// the end-of-archive blocks, because the caller hashes all of it.
pub fn unpack_layer<R: Read>(reader: R, dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats> {
    let root = open_dir(dest)?;
    let mut unpacker = Unpacker {
        root,
        dest: dest.to_path_buf(),
        opts: opts.clone(),
        buf: vec![0u8; COPY_BUFFER],
        stats: UnpackStats::default(),
        dir_times: Vec::new(),
        parents: HashMap::new(),
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(bad_archive)? {
        let mut entry = entry.map_err(bad_archive)?;
        unpacker.entry(&mut entry)?;
    }
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(bad_archive)?;
    unpacker.finish()?;
    Ok(unpacker.stats)
}

fn bad_archive(e: std::io::Error) -> ImageError {
    ImageError::BadArchive { reason: e.to_string() }
}

fn unsafe_entry(entry: &[u8], reason: &str) -> ImageError {
    ImageError::UnsafeLayerEntry { entry: String::from_utf8_lossy(entry).into_owned(), reason: reason.into() }
}

fn open_dir(path: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(path, OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| ImageError::io("open", path, e.into()))
}

/// Components of a symlink target as RESOLVE_IN_ROOT sees them: `..` at the root stays at the root.
fn clamp_components(path: &[u8]) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Splits an entry name into clean components, treating it as relative to the layer root. `None` if it climbs out.
fn clean_components(name: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            other => out.push(other),
        }
    }
    Some(out)
}

fn join(components: &[&[u8]]) -> PathBuf {
    if components.is_empty() {
        return PathBuf::from(".");
    }
    PathBuf::from(OsStr::from_bytes(&components.join(&b'/')))
}

struct Unpacker {
    root: OwnedFd,
    dest: PathBuf,
    opts: UnpackOptions,
    buf: Vec<u8>,
    stats: UnpackStats,
    /// Directory mtimes, applied last: creating children would change them.
    dir_times: Vec<(PathBuf, TimeSpec)>,
    /// Parent directories already resolved, by path. Cleared whenever an entry removes or replaces something,
    /// since a cached fd could then point at a directory no longer in the tree.
    parents: HashMap<PathBuf, OwnedFd>,
}

impl Unpacker {
    fn io(&self, op: &'static str, rel: &Path, e: Errno) -> ImageError {
        ImageError::io(op, self.dest.join(rel), e.into())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw_name = entry.path_bytes().into_owned();
        let components =
            clean_components(&raw_name).ok_or_else(|| unsafe_entry(&raw_name, "path escapes the layer root"))?;
        let kind = entry.header().entry_type();
        let Some((name, parent)) = components.split_last() else {
            // The root directory itself: nothing to create; its metadata belongs to the layer directory.
            return Ok(());
        };
        let (name, parent) = (*name, parent.to_vec());
        let parent_rel = join(&parent);
        let rel = parent_rel.join(OsStr::from_bytes(name));

        // Whiteouts first: they are regular files in the tar but mean deletions.
        if name == OPAQUE_MARKER.as_bytes() {
            let dir = self.parent(&parent_rel)?;
            xattr::FileExt::set_xattr(
                &std::fs::File::from(dir.try_clone().map_err(|e| ImageError::io("dup", &self.dest, e))?),
                "trusted.overlay.opaque",
                b"y",
            )
            .map_err(|e| ImageError::io("set opaque xattr on", self.dest.join(&parent_rel), e))?;
            return Ok(());
        }
        if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if target.is_empty() || target == b"." || target == b".." {
                return Err(unsafe_entry(&raw_name, "invalid whiteout"));
            }
            let target = OsStr::from_bytes(target).to_owned();
            let dir = self.parent(&parent_rel)?;
            self.remove_existing(&dir, &target, &rel)?;
            let dir = self.parent(&parent_rel)?;
            mknodat(&dir, target.as_os_str(), SFlag::S_IFCHR, Mode::empty(), 0)
                .map_err(|e| self.io("create whiteout", &rel, e))?;
            self.stats.inodes += 1;
            return Ok(());
        }

        let header = entry.header();
        let mode = Mode::from_bits_truncate(header.mode().map_err(bad_archive)?);
        let uid = header.uid().map_err(bad_archive)?;
        let gid = header.gid().map_err(bad_archive)?;
        let mtime = TimeSpec::new(header.mtime().unwrap_or(0) as i64, 0);
        let name = OsStr::from_bytes(name).to_owned();

        match kind {
            tar::EntryType::Directory => {
                let dir = self.parent(&parent_rel)?;
                match fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) if is_dir(&st) => {}
                    Ok(_) => {
                        self.remove_existing(&dir, &name, &rel)?;
                        self.mkdir(&parent_rel, &name, &rel)?;
                    }
                    Err(Errno::ENOENT) => self.mkdir(&parent_rel, &name, &rel)?,
                    Err(e) => return Err(self.io("stat", &rel, e)),
                }
                let dir = self.parent(&parent_rel)?;
                self.chown(&dir, &name, &rel, uid, gid)?;
                let fd = self.resolve_dir(&rel)?;
                fchmod(&fd, mode).map_err(|e| self.io("chmod", &rel, e))?;
                self.dir_times.push((rel, mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let dir = self.parent(&parent_rel)?;
                self.remove_existing(&dir, &name, &rel)?;
                let dir = self.parent(&parent_rel)?;
                let fd = nix::fcntl::openat(
                    &dir,
                    name.as_os_str(),
                    OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| self.io("create", &rel, e))?;
                let mut file = std::fs::File::from(fd);
                let mut written = 0u64;
                loop {
                    let n = entry.read(&mut self.buf).map_err(bad_archive)?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&self.buf[..n]).map_err(|e| ImageError::io("write", self.dest.join(&rel), e))?;
                    written += n as u64;
                }
                if self.opts.preserve_owners {
                    nix::unistd::fchown(&file, Some(Uid::from_raw(uid as u32)), Some(Gid::from_raw(gid as u32)))
                        .map_err(|e| self.io("chown", &rel, e))?;
                }
                // After chown, which clears setuid and setgid bits.
                fchmod(&file, mode).map_err(|e| self.io("chmod", &rel, e))?;
                self.apply_xattrs(entry, &file, &rel);
                futimens(&file, &mtime, &mtime).map_err(|e| self.io("set times on", &rel, e))?;
                self.stats.bytes += written;
                self.stats.inodes += 1;
            }
            tar::EntryType::Symlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                if target.is_empty() {
                    return Err(unsafe_entry(&raw_name, "symlink without a target"));
                }
                let dir = self.parent(&parent_rel)?;
                self.remove_existing(&dir, &name, &rel)?;
                let dir = self.parent(&parent_rel)?;
                symlinkat(OsStr::from_bytes(&target), &dir, name.as_os_str())
                    .map_err(|e| self.io("symlink", &rel, e))?;
                self.chown(&dir, &name, &rel, uid, gid)?;
                // A symlink's target is never followed here; it may be followed later only inside the container.
                nix::sys::stat::utimensat(
                    &dir,
                    name.as_os_str(),
                    &mtime,
                    &mtime,
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                )
                .map_err(|e| self.io("set times on", &rel, e))?;
                self.stats.inodes += 1;
                // A new symlink may shadow a cached parent path.
                self.parents.clear();
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                let target_components = clean_components(&target)
                    .ok_or_else(|| unsafe_entry(&raw_name, "hardlink target escapes the layer root"))?;
                if target_components.is_empty() {
                    return Err(unsafe_entry(&raw_name, "hardlink to the layer root"));
                }
                let target_rel = join(&target_components);
                let how = OpenHow::new()
                    .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
                    .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
                let source = match openat2(&self.root, &target_rel, how) {
                    Ok(fd) => fd,
                    Err(Errno::ENOENT) => return Err(unsafe_entry(&raw_name, "hardlink target is not in the layer")),
                    Err(e) => return Err(self.io("open hardlink target", &target_rel, e)),
                };
                let st = nix::sys::stat::fstat(&source).map_err(|e| self.io("stat", &target_rel, e))?;
                if is_dir(&st) {
                    return Err(unsafe_entry(&raw_name, "hardlink to a directory"));
                }
                let dir = self.parent(&parent_rel)?;
                self.remove_existing(&dir, &name, &rel)?;
                let dir = self.parent(&parent_rel)?;
                // AT_EMPTY_PATH links the very inode resolved inside the root, with no second path walk.
                linkat(&source, "", &dir, name.as_os_str(), AtFlags::AT_EMPTY_PATH)
                    .map_err(|e| self.io("hardlink", &rel, e))?;
                self.stats.inodes += 1;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                if sflag != SFlag::S_IFIFO && !self.opts.allow_device_nodes {
                    tracing::warn!(entry = %String::from_utf8_lossy(&raw_name), "skipping a device node in an image layer");
                    return Ok(());
                }
                let dev = if sflag == SFlag::S_IFIFO {
                    0
                } else {
                    let major = header.device_major().map_err(bad_archive)?.unwrap_or(0);
                    let minor = header.device_minor().map_err(bad_archive)?.unwrap_or(0);
                    nix::sys::stat::makedev(major.into(), minor.into())
                };
                let dir = self.parent(&parent_rel)?;
                self.remove_existing(&dir, &name, &rel)?;
                let dir = self.parent(&parent_rel)?;
                mknodat(&dir, name.as_os_str(), sflag, mode, dev).map_err(|e| self.io("mknod", &rel, e))?;
                self.chown(&dir, &name, &rel, uid, gid)?;
                self.stats.inodes += 1;
            }
            // PAX and GNU metadata entries are consumed by the tar reader; anything else has no place in a layer.
            other => tracing::debug!(entry = %String::from_utf8_lossy(&raw_name), kind = ?other, "skipping entry"),
        }
        Ok(())
    }

    /// The parent directory of an entry, resolved inside the root and created (like `mkdir -p`) when missing,
    /// since layers need not list every directory.
    fn parent(&mut self, rel: &Path) -> Result<OwnedFd> {
        if let Some(fd) = self.parents.get(rel) {
            return fd.try_clone().map_err(|e| ImageError::io("dup", self.dest.join(rel), e));
        }
        let fd = self.ensure_dir(rel, 0)?;
        let copy = fd.try_clone().map_err(|e| ImageError::io("dup", self.dest.join(rel), e))?;
        self.parents.insert(rel.to_path_buf(), copy);
        Ok(fd)
    }

    /// Opens `rel` as a directory inside the root, creating what is missing. A symlink on the way is followed the
    /// way the kernel follows it under RESOLVE_IN_ROOT (absolute targets start at the layer root, `..` stops
    /// there), so the directories are created where the later write will resolve to: inside the layer.
    fn ensure_dir(&mut self, rel: &Path, depth: usize) -> Result<OwnedFd> {
        const MAX_SYMLINK_DEPTH: usize = 40;
        match self.resolve_dir(rel) {
            Ok(fd) => return Ok(fd),
            Err(ImageError::Io { source, .. }) if source.raw_os_error() == Some(Errno::ENOENT as i32) => {}
            Err(e) => return Err(e),
        }
        if depth > MAX_SYMLINK_DEPTH {
            return Err(unsafe_entry(rel.as_os_str().as_bytes(), "too many levels of symlinks"));
        }
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Err(self.io("open directory", rel, Errno::ENOENT));
        };
        let parent_fd = self.ensure_dir(parent, depth + 1)?;
        match fstatat(&parent_fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => match nix::sys::stat::mkdirat(&parent_fd, name, Mode::from_bits_truncate(0o755)) {
                Ok(()) => self.stats.inodes += 1,
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(self.io("create directory", rel, e)),
            },
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK => {
                let target = nix::fcntl::readlinkat(&parent_fd, name).map_err(|e| self.io("read link", rel, e))?;
                let target = target.as_bytes();
                let base: Vec<u8> =
                    if target.starts_with(b"/") { Vec::new() } else { parent.as_os_str().as_bytes().to_vec() };
                let joined = [base.as_slice(), b"/", target].concat();
                let resolved = join(&clamp_components(&joined));
                self.ensure_dir(&resolved, depth + 1)?;
            }
            Ok(_) => {}
            Err(e) => return Err(self.io("stat", rel, e)),
        }
        self.resolve_dir(rel)
    }

    fn resolve_dir(&self, rel: &Path) -> Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let path = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
        openat2(&self.root, path, how).map_err(|e| match e {
            // A path component that is a file, not a directory, is as hostile as `..`: refuse it.
            Errno::ENOTDIR => unsafe_entry(rel.as_os_str().as_bytes(), "a parent of the entry is not a directory"),
            e => self.io("open directory", rel, e),
        })
    }

    fn mkdir(&mut self, parent_rel: &Path, name: &OsStr, rel: &Path) -> Result<()> {
        let dir = self.parent(parent_rel)?;
        nix::sys::stat::mkdirat(&dir, name, Mode::from_bits_truncate(0o755))
            .map_err(|e| self.io("create directory", rel, e))?;
        self.stats.inodes += 1;
        Ok(())
    }

    fn chown(&self, dir: &OwnedFd, name: &OsStr, rel: &Path, uid: u64, gid: u64) -> Result<()> {
        if !self.opts.preserve_owners {
            return Ok(());
        }
        fchownat(
            dir,
            name,
            Some(Uid::from_raw(uid as u32)),
            Some(Gid::from_raw(gid as u32)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.io("chown", rel, e))
    }

    /// Removes whatever exists at `name` (a whole tree for a directory), so that a later entry replaces it.
    fn remove_existing(&mut self, dir: &OwnedFd, name: &OsStr, rel: &Path) -> Result<()> {
        match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(self.io("stat", rel, e)),
            Ok(st) => {
                if is_dir(&st) {
                    remove_tree_at(dir, name).map_err(|e| self.io("remove", rel, e))?;
                } else {
                    unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).map_err(|e| self.io("remove", rel, e))?;
                }
                self.parents.clear();
                Ok(())
            }
        }
    }

    /// Extended attributes from PAX headers. Only file capabilities and user attributes are honoured: an image
    /// must not set overlayfs's own trusted.* attributes or security labels of its choosing.
    fn apply_xattrs<R: Read>(&self, entry: &mut tar::Entry<'_, R>, file: &std::fs::File, rel: &Path) {
        let Ok(Some(extensions)) = entry.pax_extensions() else { return };
        for ext in extensions.flatten() {
            let Ok(key) = ext.key() else { continue };
            let Some(name) = key.strip_prefix("SCHILY.xattr.") else { continue };
            if (name == "security.capability" || name.starts_with("user."))
                && let Err(e) = xattr::FileExt::set_xattr(file, name, ext.value_bytes())
            {
                tracing::debug!(path = %rel.display(), xattr = name, error = %e, "cannot set xattr");
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        // Deepest first, so setting a parent's time is not undone by anything after it.
        for (rel, mtime) in self.dir_times.iter().rev() {
            // A directory a later entry replaced or removed has no time to keep.
            let Ok(fd) = self.resolve_dir(rel) else { continue };
            futimens(&fd, mtime, mtime).map_err(|e| self.io("set times on", rel, e))?;
        }
        Ok(())
    }
}

fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Removes a directory tree below `dir` without following symlinks out of it.
fn remove_tree_at(dir: &impl AsFd, name: &OsStr) -> nix::Result<()> {
    let mut child = nix::dir::Dir::openat(
        dir,
        name,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let names: Vec<(std::ffi::OsString, bool)> = child
        .iter()
        .filter_map(|e| e.ok())
        .filter(|e| !matches!(e.file_name().to_bytes(), b"." | b".."))
        .map(|e| {
            (OsStr::from_bytes(e.file_name().to_bytes()).to_owned(), e.file_type() == Some(nix::dir::Type::Directory))
        })
        .collect();
    let child_fd = child.as_fd().try_clone_to_owned().map_err(|_| Errno::EBADF)?;
    for (n, is_directory) in names {
        if is_directory {
            remove_tree_at(&child_fd, &n)?;
        } else {
            unlinkat(&child_fd, n.as_os_str(), UnlinkatFlags::NoRemoveDir)?;
        }
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

#[cfg(test)]
mod tests;
