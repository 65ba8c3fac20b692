//! The image store on disk, and the in-memory index over it.
//!
//! ```text
//! <root>/images.redb              image records (id -> JSON), the only source of truth for what is listed
//! <root>/blobs/sha256/<hex>       manifests, indexes and configs, digest-named
//! <root>/layers/<chain-hex>/      unpacked layers, used directly as overlay lowerdirs, shared by chain id
//! <root>/tmp/                     work in progress; emptied at every start
//! ```
//!
//! Crash safety comes from ordering, not from logs: a pull writes layers and blobs first and the record last (one
//! redb transaction), and a removal deletes the record first and the files after. At open, anything under tmp/
//! and any layer or blob no record points at is deleted, so a SIGKILL at any instant leaves either a complete
//! image or nothing listed — and no stray files once the next reefd has started.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{ImageError, Result};
use crate::reference::ImageRef;

const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");

/// One image as the store keeps it. The id is the config digest, as the CRI expects.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Digest of the platform manifest the image was pulled through.
    pub manifest_digest: String,
    pub layers: Vec<LayerRecord>,
    /// Bytes of the unpacked layers.
    pub size: u64,
    /// The image config's `User`, verbatim.
    pub user: String,
    /// Unix time in nanoseconds when the image was first stored.
    pub created_at: i64,
    pub pinned: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerRecord {
    /// Digest of the layer as fetched (usually compressed).
    pub digest: String,
    pub diff_id: String,
    pub chain_id: String,
    pub size: u64,
    pub inodes: u64,
}

#[derive(Default)]
struct Index {
    images: HashMap<String, ImageRecord>,
    /// Repo tags and repo digests to image ids.
    names: HashMap<String, String>,
}

impl Index {
    fn insert(&mut self, record: ImageRecord) {
        for n in record.repo_tags.iter().chain(&record.repo_digests) {
            self.names.insert(n.clone(), record.id.clone());
        }
        self.images.insert(record.id.clone(), record);
    }
}

pub struct Store {
    root: PathBuf,
    db: redb::Database,
    index: RwLock<Index>,
    /// Held by whoever changes the records (commit, remove) for the whole change. The index's own lock is then
    /// taken only to swap the in-memory entries once redb has committed: a lookup never waits out a disk flush.
    writer: Mutex<()>,
    /// Layers that pulls in progress rely on; removal and GC leave them alone.
    in_use: Mutex<HashMap<String, usize>>,
}

/// Usage of the store's filesystem, for ImageFsInfo.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

/// `registry/repo` of a repo tag (`registry/repo:tag`) or repo digest (`registry/repo@sha256:…`).
fn repository_of(name: &str) -> &str {
    match name.split_once('@') {
        Some((repo, _)) => repo,
        // The tag follows the last ':' after the last '/', so a registry port is not mistaken for it.
        None => match name.rfind(':') {
            Some(i) if !name[i..].contains('/') => &name[..i],
            _ => name,
        },
    }
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| ImageError::io("create directory", path, e))
}

fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io("remove", path, e)),
    }
}

impl Store {
    /// Opens (or creates) the store and cleans whatever a crash left half-made.
    pub fn open(root: &Path) -> Result<Arc<Store>> {
        for dir in ["blobs/sha256", "layers", "tmp"] {
            mkdir(&root.join(dir))?;
        }
        let db = redb::Database::create(root.join("images.redb")).map_err(redb::Error::from)?;
        let mut index = Index::default();
        {
            let txn = db.begin_write().map_err(redb::Error::from)?;
            txn.open_table(IMAGES).map_err(redb::Error::from)?;
            txn.commit().map_err(redb::Error::from)?;
            let read = db.begin_read().map_err(redb::Error::from)?;
            let table = read.open_table(IMAGES).map_err(redb::Error::from)?;
            for row in table.iter().map_err(redb::Error::from)? {
                let (key, value) = row.map_err(redb::Error::from)?;
                match serde_json::from_slice::<ImageRecord>(value.value()) {
                    Ok(record) => index.insert(record),
                    // A record this version cannot read is skipped, not fatal: the rest of the node still works.
                    Err(e) => tracing::warn!(image = key.value(), error = %e, "skipping unreadable image record"),
                }
            }
        }
        let store = Arc::new(Store {
            root: root.to_path_buf(),
            db,
            index: RwLock::new(index),
            writer: Mutex::default(),
            in_use: Mutex::default(),
        });
        store.clean_tmp()?;
        store.collect_garbage()?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    pub fn layer_path(&self, chain_id: &str) -> PathBuf {
        self.root.join("layers").join(hex_of(chain_id))
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex_of(digest))
    }

    /// A fresh directory under tmp/ for work in progress.
    pub fn temp_dir(&self, prefix: &str) -> Result<PathBuf> {
        let path = self.root.join("tmp").join(format!("{prefix}-{:016x}", rand::random::<u64>()));
        std::fs::create_dir(&path).map_err(|e| ImageError::io("create directory", &path, e))?;
        Ok(path)
    }

    fn clean_tmp(&self) -> Result<()> {
        let tmp = self.root.join("tmp");
        let entries = std::fs::read_dir(&tmp).map_err(|e| ImageError::io("read directory", &tmp, e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let res = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&path)
            } else {
                std::fs::remove_file(&path).map_err(|e| ImageError::io("remove", &path, e))
            };
            if let Err(e) = res {
                tracing::warn!(path = %path.display(), error = %e, "cannot clean temporary file");
            }
        }
        Ok(())
    }

    /// Deletes layers and blobs that no image record and no pull in progress refers to.
    pub fn collect_garbage(&self) -> Result<()> {
        let (layers, blobs) = {
            let index = self.read_index();
            let layers: HashSet<String> =
                index.images.values().flat_map(|r| r.layers.iter().map(|l| hex_of(&l.chain_id).to_string())).collect();
            let blobs: HashSet<String> = index
                .images
                .values()
                .flat_map(|r| {
                    let mut v = vec![hex_of(&r.id).to_string(), hex_of(&r.manifest_digest).to_string()];
                    v.extend(
                        r.repo_digests.iter().filter_map(|d| d.rsplit_once('@')).map(|(_, d)| hex_of(d).to_string()),
                    );
                    v
                })
                .collect();
            (layers, blobs)
        };
        let in_use: HashSet<String> = self.lock_in_use().keys().map(|k| hex_of(k).to_string()).collect();
        let sweep = |dir: PathBuf, keep: &HashSet<String>| -> Result<()> {
            let entries = std::fs::read_dir(&dir).map_err(|e| ImageError::io("read directory", &dir, e))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if keep.contains(&name) || in_use.contains(&name) {
                    continue;
                }
                let path = entry.path();
                tracing::debug!(path = %path.display(), "removing unreferenced content");
                let res = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&path)
                } else {
                    std::fs::remove_file(&path).map_err(|e| ImageError::io("remove", &path, e))
                };
                if let Err(e) = res {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove unreferenced content");
                }
            }
            Ok(())
        };
        sweep(self.root.join("layers"), &layers)?;
        sweep(self.root.join("blobs/sha256"), &blobs)
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // A panic while holding the lock cannot leave the index half-updated (updates are single inserts after
        // the database commit), so a poisoned lock is still safe to use.
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_in_use(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.in_use.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Deletes layers a failed pull unpacked, unless an image record lists them or a pull in progress holds them.
    /// A layer is moved out of layers/ under the lock `hold_layer` takes, so a pull either holds it first and
    /// keeps it, or finds it gone and downloads it again; the tree is deleted after, outside the lock.
    pub fn discard_layers(&self, chain_ids: &[String]) {
        for chain_id in chain_ids {
            let moved = {
                let index = self.read_index();
                let in_use = self.lock_in_use();
                if in_use.contains_key(chain_id)
                    || index.images.values().any(|r| r.layers.iter().any(|l| l.chain_id == *chain_id))
                {
                    continue;
                }
                let from = self.layer_path(chain_id);
                let to =
                    self.root.join("tmp").join(format!("discard-{}-{:08x}", hex_of(chain_id), rand::random::<u32>()));
                match std::fs::rename(&from, &to) {
                    Ok(()) => to,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        tracing::warn!(path = %from.display(), error = %e, "cannot discard a failed pull's layer");
                        continue;
                    }
                }
            };
            if let Err(e) = remove_tree(&moved) {
                tracing::warn!(path = %moved.display(), error = %e, "cannot remove a failed pull's layer");
            }
        }
    }

    /// Marks a layer as needed by a pull in progress until the guard drops.
    pub fn hold_layer(self: &Arc<Self>, chain_id: &str) -> LayerHold {
        *self.lock_in_use().entry(chain_id.to_string()).or_default() += 1;
        LayerHold { store: Arc::clone(self), chain_id: chain_id.to_string() }
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        let mut v: Vec<ImageRecord> = self.read_index().images.values().cloned().collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
        v
    }

    pub fn count(&self) -> usize {
        self.read_index().images.len()
    }

    /// Finds an image by id (`sha256:…`, bare hex, or a unique hex prefix of at least 3 characters),
    /// by repo tag or repo digest in any spelling the reference grammar allows.
    pub fn resolve(&self, name: &str) -> Option<ImageRecord> {
        let index = self.read_index();
        if let Some(r) = index.images.get(name) {
            return Some(r.clone());
        }
        if let Ok(r) = ImageRef::parse(name) {
            let keys = [r.tagged(), r.digest.as_ref().map(|d| r.with_digest(d))];
            for key in keys.into_iter().flatten() {
                if let Some(id) = index.names.get(&key) {
                    return index.images.get(id).cloned();
                }
            }
        }
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() >= 3 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
            let mut found = index.images.values().filter(|r| hex_of(&r.id).starts_with(hex));
            if let (Some(one), None) = (found.next(), found.next()) {
                return Some(one.clone());
            }
        }
        None
    }

    /// The image already stored under this repo digest, if any.
    pub fn by_repo_digest(&self, repo_digest: &str) -> Option<ImageRecord> {
        let index = self.read_index();
        index.names.get(repo_digest).and_then(|id| index.images.get(id)).cloned()
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        std::fs::read(&path).map_err(|e| ImageError::io("read", &path, e))
    }

    /// Writes a blob atomically (tmp + fsync + rename) unless it is already there.
    pub fn write_blob(&self, digest: &str, data: &[u8]) -> Result<()> {
        use std::io::Write;
        let path = self.blob_path(digest);
        if path.exists() {
            return Ok(());
        }
        let tmp = self.root.join("tmp").join(format!("blob-{}-{:08x}", hex_of(digest), rand::random::<u32>()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            ImageError::io("write blob", &path, e)
        })
    }

    /// Adds or merges an image and moves the given names onto it, in one transaction. Names that pointed at another
    /// image are taken from it (a tag names one image); that image stays, reachable by id and its other names.
    pub fn commit(&self, mut record: ImageRecord) -> Result<ImageRecord> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let index = self.read_index();
        let mut changed: Vec<ImageRecord> = Vec::new();
        if let Some(existing) = index.images.get(&record.id) {
            let mut merged = existing.clone();
            for n in record.repo_tags.iter().chain(&record.repo_digests) {
                let list = if record.repo_tags.contains(n) { &mut merged.repo_tags } else { &mut merged.repo_digests };
                if !list.contains(n) {
                    list.push(n.clone());
                }
            }
            record = merged;
        }
        for name in record.repo_tags.iter().chain(&record.repo_digests) {
            if let Some(other_id) = index.names.get(name)
                && *other_id != record.id
            {
                if let Some(other) = changed.iter_mut().find(|o| &o.id == other_id) {
                    other.repo_tags.retain(|t| t != name);
                    other.repo_digests.retain(|t| t != name);
                } else if let Some(other) = index.images.get(other_id) {
                    let mut other = other.clone();
                    other.repo_tags.retain(|t| t != name);
                    other.repo_digests.retain(|t| t != name);
                    changed.push(other);
                }
            }
        }
        changed.push(record.clone());
        drop(index);
        self.persist(&changed, &[])?;
        let mut index = self.write_index();
        for r in changed {
            index.names.retain(|_, id| *id != r.id);
            index.insert(r);
        }
        Ok(record)
    }

    fn persist(&self, upserts: &[ImageRecord], deletes: &[&str]) -> Result<()> {
        let txn = self.db.begin_write().map_err(redb::Error::from)?;
        {
            let mut table = txn.open_table(IMAGES).map_err(redb::Error::from)?;
            for r in upserts {
                let json = serde_json::to_vec(r).map_err(|e| ImageError::Config(e.to_string()))?;
                table.insert(r.id.as_str(), json.as_slice()).map_err(redb::Error::from)?;
            }
            for id in deletes {
                table.remove(*id).map_err(redb::Error::from)?;
            }
        }
        txn.commit().map_err(redb::Error::from)?;
        Ok(())
    }

    /// Removes a name, or a whole image when given its id (or when its last name goes). Returns the image's id
    /// when something was removed; `None` when nothing matched, which the CRI treats as success.
    pub fn remove(&self, name: &str) -> Result<Option<String>> {
        let removed = self.forget(name)?;
        if removed.is_some() {
            self.collect_garbage()?;
        }
        Ok(removed)
    }

    /// `remove` without the garbage collection: the record or name is gone (nothing resolves to it any more), and
    /// the files it alone held stay until `collect_garbage`. For a caller that must hold a lock of its own only
    /// while the record changes, not while layers are deleted.
    pub fn forget(&self, name: &str) -> Result<Option<String>> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Some(record) = self.resolve(name) else { return Ok(None) };
        let by_name = ImageRef::parse(name).ok().and_then(|r| {
            [r.tagged(), r.digest.as_ref().map(|d| r.with_digest(d))]
                .into_iter()
                .flatten()
                .find(|k| record.repo_tags.contains(k) || record.repo_digests.contains(k))
        });
        {
            let mut remaining = record.clone();
            if let Some(n) = &by_name {
                remaining.repo_tags.retain(|t| t != n);
                // Removing a tag also drops the image's digests of that repository when no tag of it remains, as
                // containerd does; otherwise a removed image would linger under its digest.
                let repo = repository_of(n);
                if !remaining.repo_tags.iter().any(|t| repository_of(t) == repo) {
                    remaining.repo_digests.retain(|d| repository_of(d) != repo);
                }
                remaining.repo_digests.retain(|t| t != n);
            }
            if by_name.is_some() && (!remaining.repo_tags.is_empty() || !remaining.repo_digests.is_empty()) {
                self.persist(std::slice::from_ref(&remaining), &[])?;
                let mut index = self.write_index();
                index.names.retain(|_, id| *id != remaining.id);
                index.insert(remaining);
                return Ok(Some(record.id));
            }
            self.persist(&[], &[record.id.as_str()])?;
            let mut index = self.write_index();
            index.names.retain(|_, id| *id != record.id);
            index.images.remove(&record.id);
        }
        Ok(Some(record.id))
    }

    /// Bytes and inodes of the stored layers, from the records (walking the tree would be far slower).
    pub fn usage(&self) -> Usage {
        let index = self.read_index();
        let mut seen = BTreeSet::new();
        let mut usage = Usage::default();
        for layer in index.images.values().flat_map(|r| &r.layers) {
            if seen.insert(&layer.chain_id) {
                usage.bytes += layer.size;
                usage.inodes += layer.inodes;
            }
        }
        usage
    }
}

/// Keeps a layer out of garbage collection while a pull relies on it.
pub struct LayerHold {
    store: Arc<Store>,
    chain_id: String,
}

impl Drop for LayerHold {
    fn drop(&mut self) {
        let mut in_use = self.store.lock_in_use();
        if let Some(n) = in_use.get_mut(&self.chain_id) {
            *n -= 1;
            if *n == 0 {
                in_use.remove(&self.chain_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, tags: &[&str], chain: &str) -> ImageRecord {
        ImageRecord {
            id: format!("sha256:{}", id.repeat(64 / id.len())),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: vec![],
            manifest_digest: format!("sha256:{}", "f".repeat(64)),
            layers: vec![LayerRecord {
                digest: "sha256:x".into(),
                diff_id: "sha256:y".into(),
                chain_id: format!("sha256:{}", chain.repeat(64 / chain.len())),
                size: 10,
                inodes: 2,
            }],
            size: 10,
            user: String::new(),
            created_at: 1,
            pinned: false,
        }
    }

    #[test]
    fn records_survive_reopening_and_names_resolve_in_any_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let r = record("a", &["docker.io/library/busybox:latest"], "c");
        std::fs::create_dir_all(store.layer_path(&r.layers[0].chain_id)).unwrap();
        store.commit(r.clone()).unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.resolve("busybox").unwrap().id, r.id);
        assert_eq!(store.resolve("docker.io/library/busybox").unwrap().id, r.id);
        assert_eq!(store.resolve(&r.id).unwrap().id, r.id);
        assert_eq!(store.resolve("aaaa").unwrap().id, r.id);
        assert!(store.resolve("busybox:other").is_none());
        assert!(store.layer_path(&r.layers[0].chain_id).exists(), "a referenced layer is kept");
        assert_eq!(store.usage().bytes, 10);
    }

    #[test]
    fn opening_removes_temporaries_and_unreferenced_layers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tmp = store.temp_dir("layer").unwrap();
        std::fs::write(tmp.join("f"), b"x").unwrap();
        let orphan = store.layer_path("sha256:dead");
        std::fs::create_dir_all(&orphan).unwrap();
        drop(store);
        let _store = Store::open(dir.path()).unwrap();
        assert!(!tmp.exists());
        assert!(!orphan.exists());
    }

    #[test]
    fn a_tag_moves_to_the_newer_image_and_removing_one_of_two_tags_keeps_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = record("a", &["r.io/x:1"], "c");
        let new = record("b", &["r.io/x:1", "r.io/x:2"], "d");
        store.commit(old.clone()).unwrap();
        store.commit(new.clone()).unwrap();
        assert_eq!(store.resolve("r.io/x:1").unwrap().id, new.id);
        assert!(store.resolve(&old.id).unwrap().repo_tags.is_empty());
        assert_eq!(store.remove("r.io/x:1").unwrap(), Some(new.id.clone()));
        assert_eq!(store.resolve("r.io/x:2").unwrap().id, new.id);
        assert_eq!(store.remove("r.io/x:2").unwrap(), Some(new.id.clone()));
        assert!(store.resolve(&new.id).is_none());
        assert_eq!(store.remove("r.io/x:2").unwrap(), None);
    }

    #[test]
    fn removing_by_digest_keeps_other_repositories_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = format!("sha256:{}", "e".repeat(64));
        let mut r = record("a", &["r.io:5000/x:1", "m.io/y:1"], "c");
        r.repo_digests = vec![format!("r.io:5000/x@{d}"), format!("m.io/y@{d}")];
        store.commit(r.clone()).unwrap();
        assert_eq!(repository_of("r.io:5000/x:1"), "r.io:5000/x");
        assert_eq!(repository_of(&format!("r.io:5000/x@{d}")), "r.io:5000/x");
        assert_eq!(store.remove(&format!("r.io:5000/x@{d}")).unwrap(), Some(r.id.clone()));
        let left = store.resolve(&r.id).unwrap();
        assert_eq!(left.repo_digests, vec![format!("m.io/y@{d}")]);
        assert_eq!(store.remove("r.io:5000/x:1").unwrap(), Some(r.id.clone()));
        assert_eq!(store.remove("m.io/y:1").unwrap(), Some(r.id.clone()));
        assert!(store.resolve(&r.id).is_none(), "the last name removes the image");
    }

    #[test]
    fn discarding_a_failed_pulls_layers_spares_those_listed_or_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let listed = record("a", &["r.io/x:1"], "c");
        let listed_chain = listed.layers[0].chain_id.clone();
        std::fs::create_dir_all(store.layer_path(&listed_chain)).unwrap();
        store.commit(listed).unwrap();
        let (held, fresh) = (format!("sha256:{}", "d".repeat(64)), format!("sha256:{}", "e".repeat(64)));
        for chain in [&held, &fresh] {
            std::fs::create_dir_all(store.layer_path(chain).join("usr/bin")).unwrap();
        }
        let hold = store.hold_layer(&held);
        let never_unpacked = format!("sha256:{}", "9".repeat(64));
        store.discard_layers(&[listed_chain.clone(), held.clone(), fresh.clone(), never_unpacked]);
        assert!(store.layer_path(&listed_chain).is_dir(), "a listed image keeps its layer");
        assert!(store.layer_path(&held).is_dir(), "a pull in progress keeps its layer");
        assert!(!store.layer_path(&fresh).exists());
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "nothing is left in tmp/");
        drop(hold);
    }

    #[test]
    fn held_layers_are_not_collected() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let path = store.layer_path("sha256:beef");
        std::fs::create_dir_all(&path).unwrap();
        let hold = store.hold_layer("sha256:beef");
        store.collect_garbage().unwrap();
        assert!(path.exists());
        drop(hold);
        store.collect_garbage().unwrap();
        assert!(!path.exists());
    }
}
