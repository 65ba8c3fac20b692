//! Images built in memory: layers from tar entries (hostile ones included), configs, manifests and indexes in
//! both the OCI and the Docker formats.

use std::io::Write;

use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A tar stream under construction. Names go straight into the header bytes, so `../x` survives.
#[derive(Default, Clone)]
pub struct Layer {
    tar: Vec<u8>,
}

impl Layer {
    pub fn new() -> Layer {
        Layer::default()
    }

    pub fn raw(mut self, name: &str, kind: tar::EntryType, link: &str, data: &[u8], mode: u32) -> Layer {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(1).expect("major");
            h.set_device_minor(3).expect("minor");
        }
        h.set_cksum();
        self.tar.extend_from_slice(h.as_bytes());
        self.tar.extend_from_slice(data);
        self.tar.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
        self
    }

    pub fn dir(self, name: &str) -> Layer {
        self.raw(name, tar::EntryType::Directory, "", b"", 0o755)
    }

    pub fn file(self, name: &str, data: &[u8]) -> Layer {
        self.raw(name, tar::EntryType::Regular, "", data, 0o644)
    }

    pub fn executable(self, name: &str, data: &[u8]) -> Layer {
        self.raw(name, tar::EntryType::Regular, "", data, 0o755)
    }

    pub fn symlink(self, name: &str, target: &str) -> Layer {
        self.raw(name, tar::EntryType::Symlink, target, b"", 0o777)
    }

    pub fn hardlink(self, name: &str, target: &str) -> Layer {
        self.raw(name, tar::EntryType::Link, target, b"", 0o644)
    }

    pub fn char_device(self, name: &str) -> Layer {
        self.raw(name, tar::EntryType::Char, "", b"", 0o666)
    }

    /// The uncompressed tar, end-of-archive blocks included.
    pub fn tar(&self) -> Vec<u8> {
        let mut v = self.tar.clone();
        v.extend(std::iter::repeat_n(0u8, 1024));
        v
    }
}

pub struct Blob {
    pub media_type: String,
    pub data: Vec<u8>,
    pub digest: String,
    pub diff_id: String,
}

pub fn compress(tar: &[u8], compression: Compression, docker: bool) -> Blob {
    let (data, suffix) = match compression {
        Compression::None => (tar.to_vec(), ""),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).expect("gzip");
            (e.finish().expect("gzip"), "+gzip")
        }
        Compression::Zstd => (zstd::encode_all(tar, 3).expect("zstd"), "+zstd"),
    };
    let media_type = if docker {
        assert_ne!(compression, Compression::Zstd, "Docker schema2 has no zstd layer type");
        if compression == Compression::None {
            "application/vnd.docker.image.rootfs.diff.tar".to_string()
        } else {
            "application/vnd.docker.image.rootfs.diff.tar.gzip".to_string()
        }
    } else {
        format!("application/vnd.oci.image.layer.v1.tar{suffix}")
    };
    Blob { media_type, digest: crate::sha256(&data), diff_id: crate::sha256(tar), data }
}

pub struct Image {
    pub config: Vec<u8>,
    pub config_digest: String,
    pub layers: Vec<Blob>,
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
    pub architecture: String,
}

pub struct ImageBuilder {
    layers: Vec<(Vec<u8>, Compression)>,
    container_config: serde_json::Value,
    docker: bool,
    architecture: String,
}

impl ImageBuilder {
    pub fn new() -> ImageBuilder {
        ImageBuilder {
            layers: Vec::new(),
            container_config: json!({"Cmd": ["sh"]}),
            docker: false,
            architecture: "amd64".into(),
        }
    }

    pub fn layer(mut self, layer: Layer, compression: Compression) -> Self {
        self.layers.push((layer.tar(), compression));
        self
    }

    /// The `config` section of the image config (Cmd, Env, User, …).
    pub fn config(mut self, config: serde_json::Value) -> Self {
        self.container_config = config;
        self
    }

    pub fn docker(mut self) -> Self {
        self.docker = true;
        self
    }

    pub fn architecture(mut self, arch: &str) -> Self {
        self.architecture = arch.into();
        self
    }

    pub fn build(self) -> Image {
        let layers: Vec<Blob> = self.layers.iter().map(|(tar, c)| compress(tar, *c, self.docker)).collect();
        let config = serde_json::to_vec(&json!({
            "architecture": self.architecture,
            "os": "linux",
            "config": self.container_config,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        }))
        .expect("config json");
        let (manifest_media_type, config_media_type) = if self.docker {
            ("application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.container.image.v1+json")
        } else {
            ("application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.config.v1+json")
        };
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": manifest_media_type,
            "config": {"mediaType": config_media_type, "digest": crate::sha256(&config), "size": config.len()},
            "layers": layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.digest, "size": l.data.len()})).collect::<Vec<_>>(),
        }))
        .expect("manifest json");
        Image {
            config_digest: crate::sha256(&config),
            config,
            layers,
            manifest,
            manifest_media_type: manifest_media_type.into(),
            architecture: self.architecture,
        }
    }
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// An OCI index or Docker manifest list over several images (pushed beforehand by digest).
pub fn index(images: &[&Image], docker: bool) -> (Vec<u8>, String) {
    let media_type = if docker {
        "application/vnd.docker.distribution.manifest.list.v2+json"
    } else {
        "application/vnd.oci.image.index.v1+json"
    };
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": images.iter().map(|i| json!({
            "mediaType": i.manifest_media_type,
            "digest": crate::sha256(&i.manifest),
            "size": i.manifest.len(),
            "platform": {"architecture": i.architecture, "os": "linux"},
        })).collect::<Vec<_>>(),
    }))
    .expect("index json");
    (body, media_type.into())
}

/// A busybox root filesystem from Debian's static busybox: the binary, a symlink per applet, passwd and group.
pub fn busybox_layer() -> Layer {
    let busybox = std::fs::read("/bin/busybox").expect("read /bin/busybox (apt install busybox-static)");
    let mut layer = Layer::new().dir("bin/").dir("etc/").dir("tmp/").executable("bin/busybox", &busybox);
    let list = std::process::Command::new("/bin/busybox").arg("--list").output().expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if !applet.is_empty() && applet != "busybox" {
            layer = layer.symlink(&format!("bin/{applet}"), "busybox");
        }
    }
    layer
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        .file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
}

/// Random bytes that do not compress, for layers that must take a while to transfer.
pub fn random_bytes(len: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut v = vec![0u8; len];
    rand::rng().fill_bytes(&mut v);
    v
}
