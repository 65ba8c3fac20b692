//! Arbitrary bytes as a layer's tar stream, unpacked into `<tmp>/layer`. Whatever the stream holds, nothing
//! outside the layer changes: `<tmp>` keeps only `layer` and the sentinel `outside` (a file, a directory and a
//! symlink back into it, none modified), and a sentinel directory at a fixed absolute path, which seeds aim
//! symlinks and hardlinks at, is left alone too.

#![no_main]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use reef_images::unpack::{UnpackOptions, unpack_layer};

/// Seeds name this path; it must be the same in fuzz/seeds.py.
const ABSOLUTE_SENTINEL: &str = "/tmp/reef-fuzz-unpack-sentinel";

/// Everything about an entry an escaping write, chmod, chown, utimes, link or unlink would change.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u32, u32, u32, u64, i64, i64, u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read a sentinel directory").flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in std::iter::once(dir.to_path_buf()).chain(entries.iter().map(|e| e.path())) {
        let m = std::fs::symlink_metadata(&e).expect("stat a sentinel");
        let content = if m.is_file() { std::fs::read(&e).expect("read a sentinel") } else { Vec::new() };
        out.push((e, m.mode(), m.uid(), m.gid(), m.nlink(), m.mtime(), m.mtime_nsec(), m.size(), content));
    }
    out
}

fn make_sentinel(dir: &Path) {
    std::fs::create_dir_all(dir).expect("create a sentinel directory");
    std::fs::write(dir.join("file"), b"sentinel").expect("write a sentinel");
    let _ = std::os::unix::fs::symlink("file", dir.join("link"));
}

fn absolute_sentinel() -> &'static Vec<(PathBuf, u32, u32, u32, u64, i64, i64, u64, Vec<u8>)> {
    static BEFORE: OnceLock<Vec<(PathBuf, u32, u32, u32, u64, i64, i64, u64, Vec<u8>)>> = OnceLock::new();
    BEFORE.get_or_init(|| {
        make_sentinel(Path::new(ABSOLUTE_SENTINEL));
        snapshot(Path::new(ABSOLUTE_SENTINEL))
    })
}

fuzz_target!(|data: &[u8]| {
    let absolute_before = absolute_sentinel();
    let tmp = tempfile::tempdir().expect("make a temporary directory");
    let (layer, outside) = (tmp.path().join("layer"), tmp.path().join("outside"));
    std::fs::create_dir(&layer).expect("create the layer directory");
    make_sentinel(&outside);
    let before = snapshot(&outside);
    // As reefd unpacks: owners kept (the fuzzer runs as root), device nodes skipped.
    let _ = unpack_layer(data, &layer, &UnpackOptions { allow_device_nodes: false, preserve_owners: true });
    let mut names: Vec<_> =
        std::fs::read_dir(tmp.path()).expect("read the temporary directory").flatten().map(|e| e.file_name()).collect();
    names.sort();
    assert_eq!(names, ["layer", "outside"], "the unpacker wrote next to the layer");
    assert!(std::fs::symlink_metadata(&layer).expect("stat the layer").is_dir(), "the layer is no longer a directory");
    assert_eq!(snapshot(&outside), before, "the unpacker changed a file outside the layer");
    assert_eq!(&snapshot(Path::new(ABSOLUTE_SENTINEL)), absolute_before, "the unpacker changed {ABSOLUTE_SENTINEL}");
});
