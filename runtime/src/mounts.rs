//! OCI mount entries turned into what mount(2) takes: flags, propagation, data, and whether a bind needs the
//! read-only remount that a bind mount ignores on its first call.

use nix::mount::MsFlags;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountPlan {
    /// Absolute path inside the container.
    pub destination: String,
    pub source: String,
    pub fstype: String,
    #[serde(with = "ms_flags")]
    pub flags: MsFlags,
    /// Propagation to apply after mounting (MS_PRIVATE, MS_SLAVE, MS_SHARED, MS_UNBINDABLE, with MS_REC).
    #[serde(with = "ms_flags")]
    pub propagation: MsFlags,
    /// Options mount(2) passes to the filesystem (`mode=755`, `size=65536k`, …).
    pub data: String,
    /// `rro`: read-only all the way down, submounts included (mount_setattr with AT_RECURSIVE).
    #[serde(default)]
    pub recursive_readonly: bool,
}

impl MountPlan {
    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    /// A bind whose mounts propagate both ways (`rshared`, the CRI's Bidirectional).
    pub fn is_shared_bind(&self) -> bool {
        self.is_bind() && self.propagation.contains(MsFlags::MS_SHARED)
    }

    /// Bind mounts take MS_RDONLY and the other per-mount flags only on a remount.
    pub fn needs_remount(&self) -> bool {
        self.is_bind() && !(self.flags - MsFlags::MS_BIND - MsFlags::MS_REC).is_empty()
    }

    /// Parses an OCI mount's options (`["nosuid", "noexec", "mode=755", "rbind", "ro"]`).
    pub fn from_oci(destination: &str, fstype: &str, source: &str, options: &[String]) -> MountPlan {
        let mut flags = MsFlags::empty();
        let mut propagation = MsFlags::empty();
        let mut data: Vec<&str> = Vec::new();
        let mut recursive_readonly = false;
        for opt in options {
            if opt == "rro" {
                recursive_readonly = true;
                flags |= MsFlags::MS_RDONLY;
                continue;
            }
            let (set, clear, prop): (MsFlags, MsFlags, MsFlags) = match opt.as_str() {
                "ro" => (MsFlags::MS_RDONLY, MsFlags::empty(), MsFlags::empty()),
                "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY, MsFlags::empty()),
                "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty(), MsFlags::empty()),
                "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID, MsFlags::empty()),
                "nodev" => (MsFlags::MS_NODEV, MsFlags::empty(), MsFlags::empty()),
                "dev" => (MsFlags::empty(), MsFlags::MS_NODEV, MsFlags::empty()),
                "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty(), MsFlags::empty()),
                "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC, MsFlags::empty()),
                "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty(), MsFlags::empty()),
                "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
                "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty(), MsFlags::empty()),
                "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME, MsFlags::empty()),
                "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty(), MsFlags::empty()),
                "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty(), MsFlags::empty()),
                "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME, MsFlags::empty()),
                "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty(), MsFlags::empty()),
                "bind" => (MsFlags::MS_BIND, MsFlags::empty(), MsFlags::empty()),
                "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty(), MsFlags::empty()),
                "private" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_PRIVATE),
                "rprivate" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_PRIVATE | MsFlags::MS_REC),
                "slave" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SLAVE),
                "rslave" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SLAVE | MsFlags::MS_REC),
                "shared" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SHARED),
                "rshared" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_SHARED | MsFlags::MS_REC),
                "unbindable" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_UNBINDABLE),
                "runbindable" => (MsFlags::empty(), MsFlags::empty(), MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
                "defaults" => (MsFlags::empty(), MsFlags::empty(), MsFlags::empty()),
                other => {
                    data.push(other);
                    continue;
                }
            };
            flags = (flags | set) - clear;
            propagation |= prop;
        }
        // A "bind" type with no bind option is still a bind mount (docker and CRI-O write it that way).
        if fstype == "bind" {
            flags |= MsFlags::MS_BIND;
        }
        MountPlan {
            destination: destination.to_string(),
            source: source.to_string(),
            fstype: fstype.to_string(),
            flags,
            propagation,
            data: data.join(","),
            recursive_readonly,
        }
    }
}

/// Flags cross the monitor socket as their numeric bits.
mod ms_flags {
    use nix::mount::MsFlags;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(f: &MsFlags, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(f.bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MsFlags, D::Error> {
        Ok(MsFlags::from_bits_truncate(u64::deserialize(d)?))
    }
}

pub(crate) mod clone_flags {
    use nix::sched::CloneFlags;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(f: &CloneFlags, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(f.bits())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CloneFlags, D::Error> {
        Ok(CloneFlags::from_bits_truncate(i32::deserialize(d)?))
    }
}

pub(crate) mod join_list {
    use std::path::PathBuf;

    use nix::sched::CloneFlags;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[(CloneFlags, PathBuf)], s: S) -> Result<S::Ok, S::Error> {
        v.iter().map(|(f, p)| (f.bits(), p.clone())).collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(CloneFlags, PathBuf)>, D::Error> {
        let v = Vec::<(i32, PathBuf)>::deserialize(d)?;
        Ok(v.into_iter().map(|(f, p)| (CloneFlags::from_bits_truncate(f), p)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn filesystem_options_split_into_flags_and_data() {
        let m =
            MountPlan::from_oci("/dev", "tmpfs", "tmpfs", &opts(&["nosuid", "strictatime", "mode=755", "size=65536k"]));
        assert_eq!(m.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(m.data, "mode=755,size=65536k");
        assert!(!m.is_bind());
    }

    #[test]
    fn read_only_binds_need_a_remount_and_propagation_is_kept_apart() {
        let m = MountPlan::from_oci("/data", "bind", "/host/data", &opts(&["rbind", "ro", "rslave"]));
        assert!(m.is_bind() && m.needs_remount());
        assert!(m.flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_REC));
        assert_eq!(m.propagation, MsFlags::MS_SLAVE | MsFlags::MS_REC);
        let rw = MountPlan::from_oci("/data", "none", "/host/data", &opts(&["rbind", "rw"]));
        assert!(rw.is_bind() && !rw.needs_remount());
        let typed = MountPlan::from_oci("/x", "bind", "/y", &[]);
        assert!(typed.is_bind());
    }

    #[test]
    fn later_options_win() {
        let m = MountPlan::from_oci("/x", "tmpfs", "tmpfs", &opts(&["ro", "rw", "noexec", "exec"]));
        assert!(m.flags.is_empty());
    }
}
