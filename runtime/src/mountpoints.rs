//! A read-only lower layer that already holds the mount points every container mounts over: `/proc`, `/dev`,
//! `/sys`, and the pod's files in `/etc` (hostname, hosts, resolv.conf).
//!
//! Without it, each container creates those names through its overlay on its first start: three directories
//! made in the upper dir, and `/etc` copied up to hold three new files, each a journaled metadata operation with
//! overlay's work-dir dance around it (several milliseconds of CreateContainer on ext4, measured with perf trace).
//! With it, the names exist in a layer above the image's, every container's upper dir stays empty, and nothing
//! is written per container. What is mounted over a name hides it, so the layer changes nothing a container can
//! see, provided the image has no other kind of file at those names: an image whose `/etc` is a symlink, or whose
//! `/etc/hosts` is one, gets no layer and keeps the old path. `/etc` itself shows through (its mode and owner), so
//! the layer's `/etc` copies the image's; the few variants (by `/etc`'s mode and owner and which files are
//! mounted) are made once per node and kept.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The directories the runtime always mounts over.
const DIRS: [&str; 3] = ["proc", "dev", "sys"];
/// The files under `/etc` a container may have mounted over (the pod's own).
pub const ETC_FILES: [&str; 3] = ["hostname", "hosts", "resolv.conf"];

/// Where the variants live: one directory per variant, made under a temporary name and renamed into place.
#[derive(Debug)]
pub struct MountpointLayers {
    dir: PathBuf,
    /// What each image (by its top layer, which names the whole chain) got, so the image is looked at once, not
    /// on every CreateContainer: unpacked layers never change.
    chosen: std::sync::Mutex<std::collections::HashMap<(PathBuf, String), Option<PathBuf>>>,
}

/// The attributes of the image's `/etc` that show through the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EtcAttrs {
    mode: u32,
    uid: u32,
    gid: u32,
}

const DEFAULT_ETC: EtcAttrs = EtcAttrs { mode: 0o755, uid: 0, gid: 0 };

impl MountpointLayers {
    /// Opens the directory, removing variants a crash left half-made.
    pub fn open(dir: &Path) -> io::Result<MountpointLayers> {
        std::fs::create_dir_all(dir)?;
        for e in std::fs::read_dir(dir)?.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        Ok(MountpointLayers { dir: dir.to_path_buf(), chosen: Default::default() })
    }

    /// The layer to put above `layers` (lowest first) for a container that mounts over `/proc`, `/dev`, `/sys`
    /// and the given `/etc` files, or None when the image has something else than a directory or a regular file
    /// at one of those names.
    pub fn layer_for(&self, layers: &[PathBuf], etc_files: &[&str]) -> io::Result<Option<PathBuf>> {
        let key = (layers.last().cloned().unwrap_or_default(), etc_files.join("+"));
        let cached = self.chosen.lock().unwrap_or_else(|p| p.into_inner()).get(&key).cloned();
        match cached {
            Some(None) => return Ok(None),
            Some(Some(path)) if path.is_dir() => return Ok(Some(path)),
            _ => {}
        }
        let chosen = self.choose(layers, etc_files)?;
        self.chosen.lock().unwrap_or_else(|p| p.into_inner()).insert(key, chosen.clone());
        Ok(chosen)
    }

    fn choose(&self, layers: &[PathBuf], etc_files: &[&str]) -> io::Result<Option<PathBuf>> {
        let Some(etc) = image_allows(layers, etc_files)? else {
            return Ok(None);
        };
        let name = format!("v1-etc{:o}-{}-{}-{}", etc.mode, etc.uid, etc.gid, etc_files.join("+"));
        let path = self.dir.join(&name);
        if path.is_dir() {
            return Ok(Some(path));
        }
        let tmp = self.dir.join(format!(".tmp-{}-{:x}", std::process::id(), rand_suffix()));
        if let Err(e) = build(&tmp, etc, etc_files) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        match std::fs::rename(&tmp, &path) {
            Ok(()) => Ok(Some(path)),
            // Another CreateContainer made the same variant first: theirs is as good.
            Err(_) if path.is_dir() => {
                let _ = std::fs::remove_dir_all(&tmp);
                Ok(Some(path))
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(e)
            }
        }
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

fn build(tmp: &Path, etc: EtcAttrs, etc_files: &[&str]) -> io::Result<()> {
    std::fs::create_dir(tmp)?;
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755))?;
    for d in DIRS {
        std::fs::create_dir(tmp.join(d))?;
    }
    let etc_dir = tmp.join("etc");
    std::fs::create_dir(&etc_dir)?;
    for f in etc_files {
        std::fs::File::create(etc_dir.join(f))?.sync_all()?;
    }
    std::os::unix::fs::chown(&etc_dir, Some(etc.uid), Some(etc.gid))?;
    // After chown, which clears set-id bits.
    std::fs::set_permissions(&etc_dir, std::fs::Permissions::from_mode(etc.mode))?;
    // The rename must not reach the disk before what it names does.
    std::fs::File::open(&etc_dir)?.sync_all()?;
    std::fs::File::open(tmp)?.sync_all()
}

/// What the merged image has at `name` (a path of one or two components), looking down from the top layer and
/// never following a symlink: the topmost entry wins, a whiteout means nothing is there, and a parent directory
/// that is missing in a layer is skipped while one that is not a directory, or is opaque, hides the layers below.
enum Entry {
    Missing,
    Dir(std::fs::Metadata),
    File,
    Other,
}

fn lookup(layers: &[PathBuf], parent: Option<&str>, name: &str) -> io::Result<Entry> {
    for layer in layers.iter().rev() {
        let dir = match parent {
            None => layer.clone(),
            Some(p) => match std::fs::symlink_metadata(layer.join(p)) {
                Ok(md) if md.is_dir() => layer.join(p),
                Ok(_) => return Ok(Entry::Missing),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            },
        };
        match std::fs::symlink_metadata(dir.join(name)) {
            Ok(md) => return Ok(classify(md)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if parent.is_some() && is_opaque(&dir) {
            return Ok(Entry::Missing);
        }
    }
    Ok(Entry::Missing)
}

fn classify(md: std::fs::Metadata) -> Entry {
    use std::os::unix::fs::FileTypeExt;
    let ft = md.file_type();
    if ft.is_char_device() && md.rdev() == 0 {
        Entry::Missing // an overlay whiteout
    } else if ft.is_dir() {
        Entry::Dir(md)
    } else if ft.is_file() {
        Entry::File
    } else {
        Entry::Other
    }
}

fn is_opaque(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    crate::sys::has_opaque_xattr(&c)
}

/// The image's `/etc` attributes when the layer may go above it, None when it may not.
fn image_allows(layers: &[PathBuf], etc_files: &[&str]) -> io::Result<Option<EtcAttrs>> {
    for d in DIRS {
        if !matches!(lookup(layers, None, d)?, Entry::Missing | Entry::Dir(_)) {
            return Ok(None);
        }
    }
    let etc = match lookup(layers, None, "etc")? {
        Entry::Missing => DEFAULT_ETC,
        Entry::Dir(md) => EtcAttrs { mode: md.mode() & 0o7777, uid: md.uid(), gid: md.gid() },
        Entry::File | Entry::Other => return Ok(None),
    };
    for f in etc_files {
        if !matches!(lookup(layers, Some("etc"), f)?, Entry::Missing | Entry::File) {
            return Ok(None);
        }
    }
    Ok(Some(etc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(root: &Path, name: &str) -> PathBuf {
        let p = root.join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    #[test]
    fn an_image_with_plain_dirs_and_files_gets_one_shared_variant_holding_every_mount_point() {
        let t = tempfile::tempdir().unwrap();
        let base = layer(t.path(), "base");
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::fs::set_permissions(base.join("etc"), std::fs::Permissions::from_mode(0o751)).unwrap();
        std::fs::write(base.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        std::fs::create_dir(base.join("proc")).unwrap();
        let layers = MountpointLayers::open(&t.path().join("mp")).unwrap();
        let got = layers.layer_for(std::slice::from_ref(&base), &ETC_FILES).unwrap().expect("a layer");
        for d in ["proc", "dev", "sys", "etc"] {
            assert!(got.join(d).is_dir(), "{d}");
        }
        for f in ETC_FILES {
            assert_eq!(std::fs::metadata(got.join("etc").join(f)).unwrap().len(), 0, "{f}");
        }
        assert_eq!(std::fs::metadata(got.join("etc")).unwrap().mode() & 0o7777, 0o751);
        assert_eq!(layers.layer_for(&[base], &ETC_FILES).unwrap(), Some(got));
        assert_eq!(std::fs::read_dir(t.path().join("mp")).unwrap().count(), 1);
    }

    #[test]
    fn a_symlink_or_device_at_a_mount_point_means_no_layer() {
        let t = tempfile::tempdir().unwrap();
        let layers = MountpointLayers::open(&t.path().join("mp")).unwrap();
        let etc_link = layer(t.path(), "etc-link");
        std::os::unix::fs::symlink("private/etc", etc_link.join("etc")).unwrap();
        assert_eq!(layers.layer_for(&[etc_link], &ETC_FILES).unwrap(), None);
        let resolv_link = layer(t.path(), "resolv-link");
        std::fs::create_dir(resolv_link.join("etc")).unwrap();
        std::os::unix::fs::symlink("../run/resolv.conf", resolv_link.join("etc/resolv.conf")).unwrap();
        assert_eq!(layers.layer_for(std::slice::from_ref(&resolv_link), &ETC_FILES).unwrap(), None);
        // Only the files the container mounts over count.
        assert!(layers.layer_for(&[resolv_link], &["hostname", "hosts"]).unwrap().is_some());
        let sys_file = layer(t.path(), "sys-file");
        std::fs::write(sys_file.join("sys"), "").unwrap();
        assert_eq!(layers.layer_for(&[sys_file], &ETC_FILES).unwrap(), None);
    }

    #[test]
    fn the_topmost_entry_wins_and_a_non_directory_etc_above_hides_the_layers_below() {
        let t = tempfile::tempdir().unwrap();
        let layers = MountpointLayers::open(&t.path().join("mp")).unwrap();
        let low = layer(t.path(), "low");
        std::fs::create_dir(low.join("etc")).unwrap();
        std::os::unix::fs::symlink("/elsewhere", low.join("etc/hosts")).unwrap();
        let high = layer(t.path(), "high");
        std::fs::create_dir(high.join("etc")).unwrap();
        std::fs::write(high.join("etc/hosts"), "").unwrap();
        assert!(layers.layer_for(&[low.clone(), high], &ETC_FILES).unwrap().is_some());
        let replaced = layer(t.path(), "replaced");
        std::fs::write(replaced.join("etc"), "").unwrap();
        assert_eq!(layers.layer_for(&[low, replaced], &ETC_FILES).unwrap(), None);
    }

    #[test]
    fn half_made_variants_are_removed_when_opened() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("mp");
        std::fs::create_dir_all(dir.join(".tmp-1-2/etc")).unwrap();
        MountpointLayers::open(&dir).unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }
}
