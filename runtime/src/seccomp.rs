//! The RuntimeDefault seccomp profile, compiled to a BPF program with libseccomp.
//!
//! The profile follows the default of docker and containerd: everything an ordinary program uses is allowed, the
//! rest fails with EPERM; syscalls that need a capability are allowed only when the container has it; `clone` may
//! not create namespaces without CAP_SYS_ADMIN; `clone3` answers ENOSYS, so libc falls back to `clone`, whose
//! flags the filter can see. The program is compiled in reefd (once per capability set) and installed raw by the
//! container's init, which needs no libseccomp of its own.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::sync::{Arc, Mutex, OnceLock};

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: {0}")]
    Compile(String),
    #[error("seccomp profile: {0}")]
    Invalid(String),
}

const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_getfd",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socket",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// Syscalls allowed only with a capability.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["delete_module", "init_module", "finit_module"]),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_PTRACE", &["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"]),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    ("CAP_SYS_TIME", &["settimeofday", "stime", "clock_settime", "clock_settime64", "adjtimex"]),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_SYS_NICE", &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// Namespace flags of clone(2): without CAP_SYS_ADMIN, a container may not set any of them.
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

fn compile_error(e: impl std::fmt::Display) -> SeccompError {
    SeccompError::Compile(e.to_string())
}

/// The BPF program of RuntimeDefault for a container with these capabilities (names like `CAP_SYS_ADMIN`).
pub fn runtime_default(capabilities: &[String]) -> Result<Vec<u8>, SeccompError> {
    let mut filter = ScmpFilterContext::new(ScmpAction::Errno(nix::libc::EPERM)).map_err(compile_error)?;
    // The runtime sets no_new_privs itself when asked; the filter is installed while init still holds its caps.
    filter.set_ctl_nnp(false).map_err(compile_error)?;
    let has = |cap: &str| capabilities.iter().any(|c| c == cap);
    let allowed =
        ALLOWED.iter().chain(BY_CAPABILITY.iter().filter(|(cap, _)| has(cap)).flat_map(|(_, names)| names.iter()));
    for name in allowed {
        // A name this kernel or libseccomp does not know is simply not there to allow.
        if let Ok(syscall) = ScmpSyscall::from_name(name) {
            filter.add_rule(ScmpAction::Allow, syscall).map_err(compile_error)?;
        }
    }
    let clone = ScmpSyscall::from_name("clone").map_err(compile_error)?;
    if has("CAP_SYS_ADMIN") {
        filter.add_rule(ScmpAction::Allow, clone).map_err(compile_error)?;
    } else {
        let no_namespaces = ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(CLONE_NAMESPACE_FLAGS), 0);
        filter.add_rule_conditional(ScmpAction::Allow, clone, &[no_namespaces]).map_err(compile_error)?;
    }
    if let Ok(clone3) = ScmpSyscall::from_name("clone3") {
        filter.add_rule(ScmpAction::Errno(nix::libc::ENOSYS), clone3).map_err(compile_error)?;
    }
    export(&filter)
}

/// The filter as a raw BPF program, for the container's init to install without libseccomp.
fn export(filter: &ScmpFilterContext) -> Result<Vec<u8>, SeccompError> {
    // Debian's libseccomp 2.5 has no in-memory export: write the program to a memfd and read it back.
    let fd =
        nix::sys::memfd::memfd_create("reef-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).map_err(compile_error)?;
    let mut file = std::fs::File::from(fd);
    filter.export_bpf(&file).map_err(compile_error)?;
    file.rewind().map_err(compile_error)?;
    let mut program = Vec::new();
    file.read_to_end(&mut program).map_err(compile_error)?;
    if program.is_empty() || !program.len().is_multiple_of(8) {
        return Err(SeccompError::Compile(format!("unexpected BPF program of {} bytes", program.len())));
    }
    Ok(program)
}

fn action(action: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<ScmpAction, SeccompError> {
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno_ret.unwrap_or(nix::libc::EPERM as u32) as i32),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno_ret.unwrap_or(nix::libc::EPERM as u32) as u16),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        // A notify action hands syscalls to a seccomp agent, which Reef does not run: refusing beats hanging.
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Invalid("SCMP_ACT_NOTIFY needs a seccomp agent, which Reef does not run".into()));
        }
    })
}

fn compare(arg: &LinuxSeccompArg) -> ScmpArgCompare {
    let index = arg.index() as u32;
    let op = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // OCI (like runc) puts the mask in `value` and the value compared against in `valueTwo`.
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            return ScmpArgCompare::new(index, ScmpCompareOp::MaskedEqual(arg.value()), arg.value_two().unwrap_or(0));
        }
    };
    ScmpArgCompare::new(index, op, arg.value())
}

/// Compiles an OCI seccomp profile (a Localhost profile from the node, say) to a BPF program.
///
/// Syscall names unknown to this kernel's libseccomp are skipped, as runc does: a profile written for a newer
/// kernel still loads. Arguments of one rule are ANDed; several rules for one syscall are alternatives, as in
/// runc. Filter flags are not applied: TSYNC is moot for a single-threaded init, and LOG and SPEC_ALLOW only log
/// more or mitigate less.
pub fn compile_profile(profile: &LinuxSeccomp) -> Result<Vec<u8>, SeccompError> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut filter = ScmpFilterContext::new(default).map_err(compile_error)?;
    filter.set_ctl_nnp(false).map_err(compile_error)?;
    for arch in profile.architectures().iter().flatten() {
        let name = arch.to_string();
        let arch =
            name.parse::<ScmpArch>().map_err(|_| SeccompError::Invalid(format!("unknown architecture {name}")))?;
        // The native architecture is already in the filter.
        if arch != ScmpArch::native() {
            filter.add_arch(arch).map_err(compile_error)?;
        }
    }
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            // libseccomp refuses rules that repeat the default action; they change nothing anyway.
            continue;
        }
        let args: Vec<ScmpArgCompare> = rule.args().iter().flatten().map(compare).collect();
        for name in rule.names() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else { continue };
            if args.is_empty() {
                filter.add_rule(act, syscall).map_err(compile_error)?;
            } else {
                filter.add_rule_conditional(act, syscall, &args).map_err(compile_error)?;
            }
        }
    }
    export(&filter)
}

/// OCI profiles compiled once per distinct profile (by their JSON form) and kept for the life of the process.
pub fn compile_profile_cached(profile: &LinuxSeccomp) -> Result<Arc<Vec<u8>>, SeccompError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Vec<u8>>>>> = OnceLock::new();
    let key = serde_json::to_string(profile).map_err(compile_error)?;
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(p) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(Arc::clone(p));
    }
    let program = Arc::new(compile_profile(profile)?);
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= 64 {
        map.clear();
    }
    map.insert(key, Arc::clone(&program));
    Ok(program)
}

/// Compiled programs by sorted capability set.
type ProgramCache = Mutex<HashMap<Vec<String>, Arc<Vec<u8>>>>;

/// The spec annotation by which a spec builder chooses RuntimeDefault: the launch plan then carries the program
/// compiled for the container's bounding set (`plan_from_spec`), from a cache, instead of an OCI profile of a few
/// hundred rules built, hashed and matched on every create.
pub const RUNTIME_DEFAULT_ANNOTATION: &str = "run.reef.seccomp/profile";
pub const RUNTIME_DEFAULT_VALUE: &str = "runtime/default";

/// RuntimeDefault compiled once per capability set and kept for the life of the process.
pub fn runtime_default_cached(capabilities: &[String]) -> Result<Arc<Vec<u8>>, SeccompError> {
    static CACHE: OnceLock<ProgramCache> = OnceLock::new();
    let mut key = capabilities.to_vec();
    key.sort();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(p) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(Arc::clone(p));
    }
    let program = Arc::new(runtime_default(&key)?);
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    // Capability sets on a node are few; a bound still keeps a misbehaving client from growing this forever.
    if map.len() >= 64 {
        map.clear();
    }
    map.insert(key, Arc::clone(&program));
    Ok(program)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_compiles_and_capabilities_widen_it() {
        let plain = runtime_default(&[]).unwrap();
        let admin = runtime_default(&["CAP_SYS_ADMIN".into()]).unwrap();
        assert!(plain.len() > 100 * 8, "a real program: {} bytes", plain.len());
        assert_ne!(plain, admin);
        let a = runtime_default_cached(&["CAP_KILL".into(), "CAP_CHOWN".into()]).unwrap();
        let b = runtime_default_cached(&["CAP_CHOWN".into(), "CAP_KILL".into()]).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "compiled once per capability set");
    }

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn oci_profiles_compile_with_arguments_and_unknown_names_skipped() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
                "syscalls":[{"names":["mkdir","mkdirat","not_a_syscall"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
                            {"names":["personality"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":8,"op":"SCMP_CMP_NE"}]},
                            {"names":["clone"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":2080505856,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
                            {"names":["getpid"],"action":"SCMP_ACT_ALLOW"}]}"#,
        );
        let program = compile_profile(&p).unwrap();
        assert!(program.len() >= 8 * 8);
        assert!(Arc::ptr_eq(&compile_profile_cached(&p).unwrap(), &compile_profile_cached(&p.clone()).unwrap()));
    }

    #[test]
    fn a_notify_action_is_refused_rather_than_left_hanging() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        assert!(matches!(compile_profile(&p), Err(SeccompError::Invalid(_))));
    }
}
