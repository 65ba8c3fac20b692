//! One JSON record per pod network, written atomically (temporary file, rename). A pod's record is written before
//! anything of its network exists (the intent), so a reefd killed at any point of a setup finds, at the next
//! start, a record naming everything that may need undoing.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::NetError;
use crate::ports::HostPort;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PodNet {
    pub id: String,
    /// Built-in mode: the host end of the pod's veth pair.
    #[serde(default)]
    pub host_veth: String,
    /// Built-in mode: the pod's pinned network namespace, where its address lives.
    #[serde(default)]
    pub netns: std::path::PathBuf,
    #[serde(default)]
    pub ips: Vec<IpAddr>,
    #[serde(default)]
    pub ports: Vec<HostPort>,
    /// CNI mode: what DEL needs, whatever the configuration says by then.
    #[serde(default)]
    pub cni: Option<crate::cni::CniAttachment>,
}

pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, NetError> {
        std::fs::create_dir_all(dir).map_err(NetError::io("create network record dir", dir))?;
        Ok(Store { dir: dir.to_path_buf() })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    pub fn save(&self, rec: &PodNet) -> Result<(), NetError> {
        let path = self.path(&rec.id);
        let tmp = self.dir.join(format!(".{}.tmp", rec.id));
        let json = serde_json::to_vec(rec).map_err(|e| NetError::Config(e.to_string()))?;
        std::fs::write(&tmp, json).map_err(NetError::io("write network record", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(NetError::io("commit network record", &path))
    }

    pub fn delete(&self, id: &str) -> Result<(), NetError> {
        match std::fs::remove_file(self.path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NetError::io("remove network record", self.path(id))(e)),
        }
    }

    /// Every readable record; half-written temporaries are removed.
    pub fn load_all(&self) -> Vec<PodNet> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return vec![] };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            match std::fs::read(entry.path()).map(|b| serde_json::from_slice::<PodNet>(&b)) {
                Ok(Ok(rec)) => out.push(rec),
                _ => tracing::warn!(path = %entry.path().display(), "unreadable network record skipped"),
            }
        }
        out
    }
}
