use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use super::*;

/// Builds a tar in memory, writing names straight into the header so hostile ones (`../x`) survive.
#[derive(Default)]
struct Layer {
    out: Vec<u8>,
}

impl Layer {
    fn raw(&mut self, name: &str, kind: tar::EntryType, link: &str, data: &[u8], mode: u32) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1_600_000_000);
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        h.set_cksum();
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
        self
    }
    fn dir(&mut self, name: &str) -> &mut Self {
        self.raw(name, tar::EntryType::Directory, "", b"", 0o755)
    }
    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(name, tar::EntryType::Regular, "", data, 0o644)
    }
    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name, tar::EntryType::Symlink, target, b"", 0o777)
    }
    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name, tar::EntryType::Link, target, b"", 0o644)
    }
    fn finish(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.out);
        v.extend(std::iter::repeat_n(0u8, 1024));
        v
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dest: PathBuf,
    outside: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("layer");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&dest).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"keep").unwrap();
    Fixture { _tmp: tmp, dest, outside }
}

fn unpack(f: &Fixture, tar: &[u8]) -> Result<UnpackStats> {
    unpack_layer(tar, &f.dest, &UnpackOptions::default())
}

fn assert_outside_untouched(f: &Fixture) {
    let names: Vec<_> = std::fs::read_dir(&f.outside).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("secret")], "something was written outside the layer");
    assert_eq!(std::fs::read(f.outside.join("secret")).unwrap(), b"keep");
    assert!(!f.dest.parent().unwrap().join("escape").exists());
}

#[test]
fn a_normal_tree_is_unpacked_with_modes_owners_links_and_times() {
    let f = fixture();
    let tar = Layer::default()
        .dir("bin/")
        .file("bin/tool", b"#!/bin/sh\n")
        .raw("bin/suid", tar::EntryType::Regular, "", b"x", 0o4755)
        .symlink("bin/sh", "/bin/tool")
        .hardlink("bin/tool2", "bin/tool")
        .raw("run/fifo", tar::EntryType::Fifo, "", b"", 0o600)
        .file("deep/er/file", b"made parents")
        .finish();
    let stats = unpack(&f, &tar).unwrap();
    let d = &f.dest;
    assert_eq!(std::fs::read(d.join("bin/tool")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(std::fs::metadata(d.join("bin/suid")).unwrap().permissions().mode() & 0o7777, 0o4755);
    assert_eq!(std::fs::read_link(d.join("bin/sh")).unwrap(), Path::new("/bin/tool"));
    assert_eq!(
        std::fs::metadata(d.join("bin/tool")).unwrap().ino(),
        std::fs::metadata(d.join("bin/tool2")).unwrap().ino()
    );
    assert!(std::fs::symlink_metadata(d.join("run/fifo")).unwrap().file_type().is_fifo());
    assert_eq!(std::fs::read(d.join("deep/er/file")).unwrap(), b"made parents");
    if nix::unistd::geteuid().is_root() {
        assert_eq!(std::fs::metadata(d.join("bin/tool")).unwrap().uid(), 1000);
        assert_eq!(std::fs::symlink_metadata(d.join("bin/sh")).unwrap().gid(), 1000);
    }
    assert_eq!(std::fs::metadata(d.join("bin")).unwrap().mtime(), 1_600_000_000, "directory times are applied last");
    assert_eq!(stats.bytes, 10 + 1 + 12);
    assert!(stats.inodes >= 8, "{stats:?}");
}

#[test]
fn names_climbing_out_of_the_root_are_refused() {
    for name in ["../escape", "a/../../escape", "./../../escape"] {
        let f = fixture();
        let err = unpack(&f, &Layer::default().file(name, b"pwned").finish()).unwrap_err();
        assert!(matches!(err, ImageError::UnsafeLayerEntry { .. }), "{name}: {err}");
        assert_outside_untouched(&f);
    }
}

#[test]
fn absolute_names_stay_inside_the_root() {
    let f = fixture();
    unpack(&f, &Layer::default().file("/abs/file", b"in").finish()).unwrap();
    assert_eq!(std::fs::read(f.dest.join("abs/file")).unwrap(), b"in");
    assert_outside_untouched(&f);
}

#[test]
fn writes_through_symlinks_are_confined_to_the_root() {
    let f = fixture();
    let outside = f.outside.to_str().unwrap().to_string();
    let tar = Layer::default()
        .symlink("evil", &outside)
        .file("evil/pwned", b"x")
        .symlink("up", "../../outside")
        .file("up/pwned2", b"x")
        .symlink("root", "/")
        .file("root/etc/pwned3", b"x")
        .finish();
    unpack(&f, &tar).unwrap();
    assert_outside_untouched(&f);
    // Resolved as if the layer were `/`: the files exist, inside.
    assert!(f.dest.join(outside.trim_start_matches('/')).join("pwned").exists());
    assert!(f.dest.join("outside/pwned2").exists());
    assert!(f.dest.join("etc/pwned3").exists());
}

#[test]
fn hardlinks_leaving_the_root_are_refused() {
    for target in ["../outside/secret", "../../outside/secret", "/etc/passwd"] {
        let f = fixture();
        let err = unpack(&f, &Layer::default().hardlink("link", target).finish()).unwrap_err();
        assert!(matches!(err, ImageError::UnsafeLayerEntry { .. }), "{target}: {err}");
        assert_outside_untouched(&f);
    }
}

#[test]
fn device_nodes_need_permission_but_fifos_do_not() {
    let f = fixture();
    let tar = Layer::default().raw("dev/null", tar::EntryType::Char, "", b"", 0o666).finish();
    unpack(&f, &tar).unwrap();
    assert!(!f.dest.join("dev/null").exists(), "skipped by default");
    if nix::unistd::geteuid().is_root() {
        let f = fixture();
        unpack_layer(&tar[..], &f.dest, &UnpackOptions { allow_device_nodes: true, ..Default::default() }).unwrap();
        assert!(std::fs::symlink_metadata(f.dest.join("dev/null")).unwrap().file_type().is_char_device());
    }
}

#[test]
fn whiteouts_become_overlay_whiteouts_and_opaque_markers_xattrs() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root for mknod and trusted.* xattrs");
        return;
    }
    let f = fixture();
    let tar = Layer::default()
        .file("etc/.wh.removed", b"")
        .dir("var/cache/")
        .file("var/cache/.wh..wh..opq", b"")
        .file("present", b"x")
        .file(".wh.present", b"")
        .finish();
    unpack(&f, &tar).unwrap();
    let wh = std::fs::symlink_metadata(f.dest.join("etc/removed")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(std::fs::symlink_metadata(f.dest.join("present")).unwrap().file_type().is_char_device());
    assert_eq!(xattr::get(f.dest.join("var/cache"), "trusted.overlay.opaque").unwrap().as_deref(), Some(&b"y"[..]));
    let mut stack = vec![f.dest.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            assert!(!e.file_name().to_string_lossy().starts_with(".wh."), "{:?}", e.path());
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
}

#[test]
fn garbage_is_a_bad_archive_not_a_panic() {
    let f = fixture();
    let mut junk = vec![0x55u8; 700];
    junk[0] = b'x';
    assert!(unpack(&f, &junk).is_err());
    let mut truncated = Layer::default().file("big", &vec![7u8; 5000]).finish();
    truncated.truncate(1500);
    assert!(matches!(unpack(&f, &truncated), Err(ImageError::BadArchive { .. })));
}

#[test]
fn the_stream_is_read_to_its_end() {
    struct Counting<'a>(&'a [u8], usize);
    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.len().min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            self.1 += n;
            Ok(n)
        }
    }
    let f = fixture();
    let mut tar = Layer::default().file("a", b"1").finish();
    tar.extend(std::iter::repeat_n(0u8, 10 * 512));
    let mut reader = Counting(&tar, 0);
    unpack_layer(&mut reader, &f.dest, &UnpackOptions::default()).unwrap();
    assert_eq!(reader.1, tar.len());
}

#[test]
fn a_later_entry_replaces_an_earlier_one() {
    let f = fixture();
    let tar = Layer::default()
        .dir("x/")
        .file("x/inner", b"1")
        .file("x", b"now a file")
        .symlink("y", "x")
        .file("y", b"file again")
        .finish();
    unpack(&f, &tar).unwrap();
    assert_eq!(std::fs::read(f.dest.join("x")).unwrap(), b"now a file");
    assert!(std::fs::symlink_metadata(f.dest.join("y")).unwrap().is_file());
}
