//! Looking up the node's devices the CRI asks to map in: the one place CreateContainer stats host device paths.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use k8s_cri::v1 as cri;

use crate::error::ReefError;
use crate::spec::devices::HostDevice;

fn from_metadata(container_path: String, md: &std::fs::Metadata, permissions: &str) -> Option<HostDevice> {
    let kind = md.file_type();
    if !kind.is_char_device() && !kind.is_block_device() {
        return None;
    }
    let rdev = md.rdev();
    Some(HostDevice {
        container_path,
        block: kind.is_block_device(),
        major: nix::sys::stat::major(rdev) as i64,
        minor: nix::sys::stat::minor(rdev) as i64,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        permissions: permissions.to_string(),
    })
}

/// Each CRI device as the node has it. A host path that is a directory maps every device directly inside it
/// (as `/dev/snd` is asked for), under the container path.
pub fn lookup(devices: &[cri::Device]) -> Result<Vec<HostDevice>, ReefError> {
    let mut found = Vec::new();
    for d in devices {
        let md = std::fs::metadata(&d.host_path)
            .map_err(|e| ReefError::InvalidArgument(format!("device {:?}: {e}", d.host_path)))?;
        let container_path = if d.container_path.is_empty() { d.host_path.clone() } else { d.container_path.clone() };
        if md.is_dir() {
            let entries = std::fs::read_dir(&d.host_path)
                .map_err(|e| ReefError::InvalidArgument(format!("device directory {:?}: {e}", d.host_path)))?;
            for e in entries.flatten() {
                let target = format!("{}/{}", container_path.trim_end_matches('/'), e.file_name().to_string_lossy());
                if let Some(dev) = e.metadata().ok().and_then(|md| from_metadata(target, &md, &d.permissions)) {
                    found.push(dev);
                }
            }
            continue;
        }
        found.push(from_metadata(container_path, &md, &d.permissions).ok_or_else(|| {
            ReefError::InvalidArgument(format!("device {:?} is not a character or block device", d.host_path))
        })?);
    }
    Ok(found)
}
