//! A container's device rules on cgroup v2, which has no devices controller: an eBPF program of type
//! BPF_PROG_TYPE_CGROUP_DEVICE, run by the kernel on every mknod, open for reading and open for writing of a
//! device node by a process of the cgroup, attached to the container's cgroup. As runc's, crun's and youki's:
//! the rules are tried last first, so the last rule that matches decides, and a device no rule matches is refused.
//!
//! The encoder is a few lines here rather than a crate: the program is at most six instructions per rule, of
//! eight kinds, and needs no maps, helpers or ELF. aya (and libbpf-rs, through libbpf-sys's C build) would bring
//! a loader with its object-file parser and dozens of crates into the monitor binary for this; rbpf, which youki
//! uses for its instruction builder, is a userspace VM and JIT.

use std::ffi::CStr;
use std::os::fd::AsFd;
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::CgroupError;
use crate::sys::{BpfInsn, bpf_prog_attach, bpf_prog_load};

const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Other programs may sit on the same cgroup (systemd's, for a scope's DeviceAllow): all must allow.
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `bpf_cgroup_dev_ctx.access_type`: the device type in the low 16 bits, the access asked for in the high.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;
const ACC_ALL: i32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// The program's registers: the context comes in r1, the verdict goes out in r0.
const R0: u8 = 0;
const R1: u8 = 1;
const TYPE: u8 = 2;
const ACCESS: u8 = 3;
const MAJOR: u8 = 4;
const MINOR: u8 = 5;

fn load_word(dst: u8, src: u8, off: i16) -> BpfInsn {
    BpfInsn::new(0x61, dst, src, off, 0) // BPF_LDX | BPF_MEM | BPF_W
}
fn and_imm(dst: u8, imm: i32) -> BpfInsn {
    BpfInsn::new(0x57, dst, 0, 0, imm) // BPF_ALU64 | BPF_AND | BPF_K
}
fn shift_right(dst: u8, imm: i32) -> BpfInsn {
    BpfInsn::new(0x77, dst, 0, 0, imm) // BPF_ALU64 | BPF_RSH | BPF_K
}
fn mov_imm(dst: u8, imm: i32) -> BpfInsn {
    BpfInsn::new(0xb7, dst, 0, 0, imm) // BPF_ALU64 | BPF_MOV | BPF_K
}
fn mov_reg(dst: u8, src: u8) -> BpfInsn {
    BpfInsn::new(0xbf, dst, src, 0, 0) // BPF_ALU64 | BPF_MOV | BPF_X
}
/// Jumps `off` instructions ahead when `dst != imm`; the offset is filled in once the rule's block is known.
fn jump_if_not_imm(dst: u8, imm: i32) -> BpfInsn {
    BpfInsn::new(0x55, dst, 0, 0, imm) // BPF_JMP | BPF_JNE | BPF_K
}
fn jump_if_not_reg(dst: u8, src: u8) -> BpfInsn {
    BpfInsn::new(0x5d, dst, src, 0, 0) // BPF_JMP | BPF_JNE | BPF_X
}
fn exit() -> BpfInsn {
    BpfInsn::new(0x95, 0, 0, 0, 0)
}

/// One rule, checked: the device type bits (`None`: any), the access bits it covers, its numbers (`None`: any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    allow: bool,
    kind: Option<i32>,
    access: i32,
    major: Option<i32>,
    minor: Option<i32>,
}

impl Rule {
    fn of(rule: &LinuxDeviceCgroup) -> Result<Option<Rule>, String> {
        let kind = match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => None,
            LinuxDeviceType::B => Some(DEV_BLOCK),
            LinuxDeviceType::C | LinuxDeviceType::U => Some(DEV_CHAR),
            // A FIFO is no device: the kernel never asks about one, as runc's filter skips it.
            LinuxDeviceType::P => return Ok(None),
        };
        let access = match rule.access().as_deref() {
            None | Some("") => ACC_ALL,
            Some(chars) => chars.chars().try_fold(0, |bits, c| match c {
                'r' => Ok(bits | ACC_READ),
                'w' => Ok(bits | ACC_WRITE),
                'm' => Ok(bits | ACC_MKNOD),
                other => Err(format!("device rule access {chars:?} has {other:?}, not r, w or m")),
            })?,
        };
        let number = |n: Option<i64>, what: &str| match n {
            None | Some(-1) => Ok(None),
            Some(n) => i32::try_from(n).ok().filter(|n| *n >= 0).map(Some).ok_or(format!("device rule {what} {n}")),
        };
        Ok(Some(Rule {
            allow: rule.allow(),
            kind,
            access,
            major: number(rule.major(), "major")?,
            minor: number(rule.minor(), "minor")?,
        }))
    }

    fn matches_everything(&self) -> bool {
        self.kind.is_none() && self.access == ACC_ALL && self.major.is_none() && self.minor.is_none()
    }

    /// Its block: each check jumps past the block when the access does not match, else the verdict is returned.
    fn block(&self) -> Vec<BpfInsn> {
        let mut block = Vec::with_capacity(7);
        if let Some(kind) = self.kind {
            block.push(jump_if_not_imm(TYPE, kind));
        }
        if self.access != ACC_ALL {
            // Matches when every access asked for is among the rule's.
            block.extend([mov_reg(R1, ACCESS), and_imm(R1, self.access), jump_if_not_reg(R1, ACCESS)]);
        }
        if let Some(major) = self.major {
            block.push(jump_if_not_imm(MAJOR, major));
        }
        if let Some(minor) = self.minor {
            block.push(jump_if_not_imm(MINOR, minor));
        }
        block.extend([mov_imm(R0, i32::from(self.allow)), exit()]);
        let len = block.len();
        for (i, insn) in block.iter_mut().enumerate() {
            if insn.code == 0x55 || insn.code == 0x5d {
                insn.off = (len - i - 1) as i16;
            }
        }
        block
    }
}

/// The program for `rules`, or `None` when they allow every device (a privileged container): no program then.
fn program(rules: &[LinuxDeviceCgroup]) -> Result<Option<Vec<BpfInsn>>, String> {
    let rules: Vec<Rule> = rules.iter().map(Rule::of).filter_map(Result::transpose).collect::<Result<_, _>>()?;
    if rules.last().is_some_and(|r| r.allow && r.matches_everything()) {
        return Ok(None);
    }
    let mut insns = vec![
        // bpf_cgroup_dev_ctx: u32 access_type, u32 major, u32 minor.
        load_word(TYPE, R1, 0),
        and_imm(TYPE, 0xffff),
        load_word(ACCESS, R1, 0),
        shift_right(ACCESS, 16),
        load_word(MAJOR, R1, 4),
        load_word(MINOR, R1, 8),
    ];
    for rule in rules.iter().rev() {
        insns.extend(rule.block());
        if rule.matches_everything() {
            // It decides every access: what would follow is unreachable, which the verifier refuses.
            return Ok(Some(insns));
        }
    }
    insns.extend([mov_imm(R0, 0), exit()]);
    Ok(Some(insns))
}

/// Loads the program for `rules` and attaches it to the cgroup directory `dir`. The program's descriptor is
/// closed on return: the attachment holds the program for as long as the cgroup lives.
pub fn attach(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    let error = |step: String, source: nix::errno::Errno| CgroupError::DeviceFilter {
        path: dir.to_path_buf(),
        step,
        source: std::io::Error::from(source),
    };
    let insns = match program(rules) {
        Ok(Some(insns)) => insns,
        Ok(None) => return Ok(()),
        Err(what) => return Err(CgroupError::Invalid { path: dir.display().to_string(), what }),
    };
    let license: &CStr = c"Apache-2.0";
    let prog = match bpf_prog_load(BPF_PROG_TYPE_CGROUP_DEVICE, &insns, license, None) {
        Ok(prog) => prog,
        // Once more with the verifier's log, to say why.
        Err(first) => {
            let mut log = vec![0u8; 16 << 10];
            let again = bpf_prog_load(BPF_PROG_TYPE_CGROUP_DEVICE, &insns, license, Some(&mut log));
            let text = CStr::from_bytes_until_nul(&log).map(|t| t.to_string_lossy().trim().to_string());
            let step = match text {
                Ok(text) if !text.is_empty() => format!("load the device filter (verifier: {text})"),
                _ => "load the device filter".to_string(),
            };
            return Err(error(step, again.err().unwrap_or(first)));
        }
    };
    let cgroup = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| error("open".into(), e))?;
    bpf_prog_attach(cgroup.as_fd(), prog.as_fd(), BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI)
        .map_err(|e| error("attach the device filter to".into(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).typ(typ).access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    /// Runs `insns` on one access as the kernel would: a small interpreter of the instructions this encoder emits.
    fn run(insns: &[BpfInsn], kind: i32, access: i32, major: u32, minor: u32) -> u64 {
        let ctx = [((access as u32) << 16) | kind as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = insns[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                0x61 => r[dst] = u64::from(ctx[(i.off / 4) as usize]),
                0x57 => r[dst] &= i.imm as i64 as u64,
                0x77 => r[dst] >>= i.imm,
                0xb7 => r[dst] = i.imm as i64 as u64,
                0xbf => r[dst] = r[src],
                0x55 if r[dst] != i.imm as i64 as u64 => pc += i.off as usize,
                0x5d if r[dst] != r[src] => pc += i.off as usize,
                0x55 | 0x5d => {}
                0x95 => return r[0],
                code => panic!("unexpected opcode {code:#x}"),
            }
        }
    }

    /// The rules node-agent gives an unprivileged container.
    fn defaults() -> Vec<LinuxDeviceCgroup> {
        use LinuxDeviceType::{A, B, C};
        let mut rules = vec![
            rule(false, A, None, None, "rwm"),
            rule(true, C, None, None, "m"),
            rule(true, B, None, None, "m"),
            rule(true, C, Some(1), Some(3), "rwm"),
            rule(true, C, Some(136), None, "rwm"),
        ];
        rules.push(rule(true, C, Some(5), Some(0), "rw"));
        rules
    }

    #[test]
    fn the_default_rules_allow_the_standard_devices_and_making_nodes_and_nothing_else() {
        let p = program(&defaults()).unwrap().unwrap();
        assert_eq!(run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3), 1, "/dev/null");
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 136, 7), 1, "any pty");
        assert_eq!(run(&p, DEV_CHAR, ACC_MKNOD, 1, 1), 1, "making any char node");
        assert_eq!(run(&p, DEV_BLOCK, ACC_MKNOD, 8, 0), 1, "making any block node");
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 1), 0, "/dev/mem");
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 8, 0), 0, "a disk");
        assert_eq!(run(&p, DEV_CHAR, ACC_WRITE, 1, 11), 0, "/dev/kmsg");
        assert_eq!(run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 5, 0), 1, "/dev/tty, rw");
        assert_eq!(run(&p, DEV_CHAR, ACC_MKNOD | ACC_READ, 5, 0), 0, "more access than the rule gives");
    }

    #[test]
    fn the_last_matching_rule_decides() {
        use LinuxDeviceType::{A, C};
        let rules = [rule(true, C, Some(1), None, "rwm"), rule(false, C, Some(1), Some(7), "w")];
        let p = program(&rules).unwrap().unwrap();
        assert_eq!(run(&p, DEV_CHAR, ACC_WRITE, 1, 7), 0, "denied by the later rule");
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 7), 1, "reading is not denied by a rule about writing");
        assert_eq!(run(&p, DEV_CHAR, ACC_WRITE, 1, 5), 1);
        let rules = [rule(false, C, Some(1), Some(7), "rwm"), rule(true, A, None, None, "rwm")];
        assert_eq!(program(&rules).unwrap(), None, "an allow-all last needs no program");
        let rules = [rule(true, A, None, None, "rwm"), rule(false, C, Some(1), Some(7), "rwm")];
        let p = program(&rules).unwrap().unwrap();
        assert_eq!((run(&p, DEV_CHAR, ACC_READ, 1, 7), run(&p, DEV_BLOCK, ACC_READ, 8, 1)), (0, 1));
    }

    #[test]
    fn no_rules_deny_every_device_and_bad_rules_are_refused() {
        let p = program(&[]).unwrap().unwrap();
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 3), 0);
        let bad = rule(true, LinuxDeviceType::C, Some(1), Some(3), "rx");
        assert!(program(&[bad]).unwrap_err().contains("'x'"));
        let bad = rule(true, LinuxDeviceType::C, Some(-2), None, "r");
        assert!(program(&[bad]).unwrap_err().contains("major -2"));
        let fifo = rule(true, LinuxDeviceType::P, None, None, "rwm");
        assert_eq!(program(&[fifo]).unwrap().unwrap().len(), 8, "a FIFO rule adds nothing");
    }

    /// A cgroup of the test's own on this machine's cgroup2 mount, removed when dropped (also on failure).
    struct TestCgroup(std::path::PathBuf);

    impl TestCgroup {
        /// Below the cgroup2 mount (a hybrid host's `unified`, or `/sys/fs/cgroup` itself); `None` without one
        /// or without root.
        fn make(name: &str) -> Option<TestCgroup> {
            let mount = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"].into_iter().find(|m| {
                nix::sys::statfs::statfs(*m).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
            })?;
            if !nix::unistd::geteuid().is_root() {
                return None;
            }
            let dir = Path::new(mount).join(format!("{name}-{}", std::process::id()));
            std::fs::create_dir(&dir).expect("make the test cgroup");
            Some(TestCgroup(dir))
        }
    }

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            // The kernel releases an exited process's cgroup a moment after it is reaped.
            for _ in 0..100 {
                if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }

    #[test]
    fn a_process_in_a_filtered_cgroup_opens_and_makes_only_the_devices_its_rules_allow() {
        use LinuxDeviceType::{A, C};
        let Some(cgroup) = TestCgroup::make("reef-devfilter-test") else {
            eprintln!("skipped: needs root and a cgroup2 mount at /sys/fs/cgroup/unified or /sys/fs/cgroup");
            return;
        };
        let rules = [
            rule(false, A, None, None, "rwm"),
            rule(true, C, Some(1), Some(3), "rw"),
            rule(true, C, Some(1), Some(7), "rm"),
        ];
        attach(&cgroup.0, &rules).expect("load and attach the filter");
        let nodes = tempfile::tempdir().unwrap();
        // Each check prints its name and "ok" or the shell's error; it waits for a line first, to be moved into
        // the cgroup before it opens anything.
        let script = r#"read go
try() { if out=$(eval "$2" 2>&1); then echo "$1 ok"; else echo "$1 $out"; fi; }
try null-rw 'true <>/dev/null'
try full-r 'true </dev/full'
try full-w 'true >/dev/full'
try zero-r 'true </dev/zero'
try mknod-full 'mknod "$NODES/full" c 1 7'
try mknod-null 'mknod "$NODES/null" c 1 3'
"#;
        let mut child = std::process::Command::new("sh")
            .args(["-c", script])
            .env("NODES", nodes.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let moved = std::fs::write(cgroup.0.join("cgroup.procs"), child.id().to_string());
        {
            use std::io::Write;
            let _ = child.stdin.take().expect("stdin").write_all(b"go\n");
        }
        let out = child.wait_with_output().expect("wait");
        moved.expect("move the shell into the cgroup");
        let out = String::from_utf8_lossy(&out.stdout).to_string();
        let result = |name: &str| {
            out.lines().find_map(|l| l.strip_prefix(name).map(|r| r.trim().to_string())).unwrap_or_default()
        };
        assert_eq!(result("null-rw "), "ok", "{out}");
        assert_eq!(result("full-r "), "ok", "{out}");
        assert!(result("full-w ").contains("Operation not permitted"), "only reading /dev/full is allowed: {out}");
        assert!(result("zero-r ").contains("Operation not permitted"), "no rule names /dev/zero: {out}");
        assert_eq!(result("mknod-full "), "ok", "{out}");
        assert!(result("mknod-null ").contains("Operation not permitted"), "1:3 may not be made: {out}");
        assert!(std::fs::File::open("/dev/zero").is_ok(), "outside the cgroup, nothing is filtered");
    }
}
