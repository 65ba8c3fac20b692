//! Records, one JSON file per object, written atomically (temp file, rename): a reader or a killed reefd sees the
//! old record or the new one, never half of one. Small and few (pods and containers on one node), and readable
//! with `cat` when a node misbehaves.
//!
//! Not fsynced, on purpose: a record must outlive reefd (a SIGKILL keeps the page cache), not a power loss. After
//! a power loss the node reboots and every container is gone anyway: a record that did not reach the disk leaves
//! directories the start-up sweep removes, a stale one describes a pod that loads NotReady, and an empty file a
//! crash left is dropped here. The syncs cost 10 to 45 ms per RPC on this machine's disk (bench/cri.sh).

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn open(dir: &Path) -> std::io::Result<Records> {
        std::fs::create_dir_all(dir)?;
        Ok(Records { dir: dir.to_path_buf() })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn save<T: Serialize>(&self, id: &str, value: &T) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = self.dir.join(format!(".{id}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, self.path(id))
    }

    pub fn delete(&self, id: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every readable record; unreadable ones are logged and skipped, never fatal.
    pub fn load_all<T: DeserializeOwned>(&self) -> Vec<T> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // Temp files of saves that never finished, and records a power loss left empty.
            if name.starts_with('.') || entry.metadata().is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            match std::fs::read(&path).map(|b| serde_json::from_slice::<T>(&b)) {
                Ok(Ok(v)) => out.push(v),
                Ok(Err(e)) => tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable record"),
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "skipping an unreadable record"),
            }
        }
        out
    }
}

/// A new object id: 64 random hex digits, as containerd and CRI-O make them.
pub fn new_id() -> String {
    format!(
        "{:016x}{:016x}{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>(),
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// An object by its id or by a unique prefix of at least 3 characters, as crictl accepts them.
pub fn find<'a, T>(map: &'a std::collections::HashMap<String, T>, id: &str) -> Option<&'a T> {
    if let Some(v) = map.get(id) {
        return Some(v);
    }
    let mut matches = map.iter().filter(|(k, _)| id.len() >= 3 && k.starts_with(id));
    match (matches.next(), matches.next()) {
        (Some((_, v)), None) => Some(v),
        _ => None,
    }
}

/// Names to ids, so a second pod or container with the same metadata is refused while the first exists.
#[derive(Default)]
pub struct Names {
    map: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl Names {
    /// Reserves `name` for `id`; reserving the same pair again is fine. Returns the holder on conflict.
    pub fn reserve(&self, name: &str, id: &str) -> Result<(), String> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(name) {
            Some(holder) if holder != id => Err(holder.clone()),
            _ => {
                map.insert(name.to_string(), id.to_string());
                Ok(())
            }
        }
    }

    pub fn release(&self, name: &str) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_stray_temporaries_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let r = Records::open(dir.path()).unwrap();
        r.save("a", &vec![1, 2]).unwrap();
        std::fs::write(dir.path().join(".b.tmp"), b"half").unwrap();
        std::fs::write(dir.path().join("c.json"), b"{not json").unwrap();
        assert_eq!(r.load_all::<Vec<i32>>(), vec![vec![1, 2]]);
        assert!(!dir.path().join(".b.tmp").exists());
        r.delete("a").unwrap();
        r.delete("a").unwrap();
    }

    #[test]
    fn ids_are_found_whole_or_by_a_unique_prefix() {
        let map: std::collections::HashMap<String, i32> = [("abcdef".to_string(), 1), ("abcxyz".to_string(), 2)].into();
        assert_eq!(find(&map, "abcdef"), Some(&1));
        assert_eq!(find(&map, "abcx"), Some(&2));
        assert_eq!(find(&map, "abc"), None, "ambiguous");
        assert_eq!(find(&map, "ab"), None, "too short");
        assert_eq!(new_id().len(), 64);
    }

    #[test]
    fn a_name_is_held_by_one_id() {
        let n = Names::default();
        n.reserve("web_default_uid_0", "p1").unwrap();
        n.reserve("web_default_uid_0", "p1").unwrap();
        assert_eq!(n.reserve("web_default_uid_0", "p2").unwrap_err(), "p1");
        n.release("web_default_uid_0");
        n.reserve("web_default_uid_0", "p2").unwrap();
    }
}
