//! The runtime's only unsafe calls, each small and explained.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd as _, BorrowedFd};

use nix::unistd::ForkResult;

/// fork(2).
///
/// # Safety
///
/// The child may only run code that is safe after fork: syscalls, and allocation through glibc malloc, whose fork
/// handlers leave it usable in the child, or through the monitor's dlmalloc, whose lock no other thread can hold.
/// So the caller must be single-threaded (the monitor and the children it forks are), or the child must not
/// allocate; and the child must never return into the caller's code: it ends in exec or `exit_now`.
pub unsafe fn fork() -> nix::Result<ForkResult> {
    // SAFETY: the caller upholds fork's contract (see above).
    unsafe { nix::unistd::fork() }
}

/// _exit(2): leaves a child without running the parent's atexit handlers or flushing its stdio buffers.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and takes no pointers.
    unsafe { nix::libc::_exit(code) }
}

/// Lowers the calling process to SCHED_IDLE, for a short-lived helper that has handed over its result and only
/// exits: the process it woke then runs at once on this core instead of waiting out the exit's teardown of the
/// helper's memory. Best effort: a refusal only costs that wait.
pub fn yield_to_waker() {
    // SAFETY: sched_param is plain integers (musl adds fields glibc lacks, hence zeroed rather than a literal),
    // all-zero is priority 0, which SCHED_IDLE requires; the call only reads it while it lives.
    let _ = unsafe {
        let param: nix::libc::sched_param = std::mem::zeroed();
        nix::libc::sched_setscheduler(0, nix::libc::SCHED_IDLE, &param)
    };
}

/// Takes ownership of a descriptor inherited across exec, under a number its parent gave on the command line,
/// once it is known to be open; it is then close-on-exec, like every other descriptor of this process.
pub fn take_inherited(fd: i32) -> nix::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    // SAFETY: the descriptor is only used for this call; if it is not open, fcntl fails with EBADF.
    fcntl(unsafe { borrow(fd) }, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    // SAFETY: fcntl succeeded, so `fd` is open; the command line names it once, so nothing else owns it.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// A descriptor known only by its number, such as one a forked child inherited.
///
/// # Safety
///
/// `fd` must stay open, and name the same file, for as long as the returned borrow is used: the caller opened it
/// and keeps its owner alive (a child that ends in exec or exit keeps everything its parent held).
pub unsafe fn borrow(fd: i32) -> BorrowedFd<'static> {
    // SAFETY: the caller keeps `fd` open while the borrow lives (see above).
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Sets IFF_UP on the loopback device of the calling thread's network namespace (SIOCSIFFLAGS), so a fresh pod
/// network namespace has a working `lo`. Built-in networking replaces this with netlink.
pub fn loopback_up() -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: `ifreq` is plain old data that the kernel reads and writes within its size; the name is NUL-terminated
    // ("lo" in a zeroed 16-byte array) and the socket fd is open for the duration of both calls.
    unsafe {
        let mut req: nix::libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as nix::libc::c_char;
        req.ifr_name[1] = b'o' as nix::libc::c_char;
        if nix::libc::ioctl(sock.as_raw_fd(), nix::libc::SIOCGIFFLAGS as nix::libc::Ioctl, &mut req) < 0 {
            return Err(nix::errno::Errno::last());
        }
        req.ifr_ifru.ifru_flags |= nix::libc::IFF_UP as nix::libc::c_short;
        if nix::libc::ioctl(sock.as_raw_fd(), nix::libc::SIOCSIFFLAGS as nix::libc::Ioctl, &req) < 0 {
            return Err(nix::errno::Errno::last());
        }
    }
    Ok(())
}

/// Closes every fd of the calling process except `keep`. A forked container init holds what the parent had open
/// at fork time until it execs, which may be long after (it waits at the start gate): any file another thread was
/// writing then stays open for writing, and exec'ing that file elsewhere fails with ETXTBSY.
///
/// # Safety
///
/// Nothing in the process may use a closed descriptor afterwards, nor close it again through its owner (an
/// `OwnedFd` or `File` dropped later would close whatever reused the number): for a forked child that ends in
/// exec or `exit_now` without dropping what its parent owned.
pub unsafe fn close_fds_except(keep: &[i32]) {
    // close_range over the gaps between the kept descriptors: a few syscalls instead of listing /proc/self/fd
    // (which cost ~0.1 ms of every container start). Older kernels (before 5.9) take the listing.
    let mut kept: Vec<u32> = keep.iter().filter(|fd| **fd > 2).map(|fd| *fd as u32).collect();
    kept.sort_unstable();
    kept.dedup();
    let mut from = 3u32;
    let mut ranges_ok = true;
    for fd in kept.iter().copied().chain([u32::MAX]) {
        if fd > from && !close_range(from, fd - 1) {
            ranges_ok = false;
            break;
        }
        from = fd.saturating_add(1);
    }
    if ranges_ok {
        return;
    }
    let open: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(entries) => entries.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect(),
        Err(_) => return,
    };
    for fd in open {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closing a descriptor this process owns; nothing in this child uses it afterwards (the listed
            // directory's own descriptor is already closed, and closing it again fails harmlessly with EBADF).
            unsafe {
                nix::libc::close(fd);
            }
        }
    }
}

/// close_range(2) of `first..=last`; false when the kernel does not have it.
fn close_range(first: u32, last: u32) -> bool {
    // SAFETY: closes only descriptors of this process, none of which the caller uses afterwards (see above);
    // takes no pointers.
    let ret = unsafe { nix::libc::syscall(nix::libc::SYS_close_range, first, last, 0u32) };
    ret == 0
}

/// clone(CLONE_PARENT) with fork semantics: the child becomes a sibling of the caller, so the caller's parent
/// can wait for it. Used by the single-threaded intermediate of an exec, whose own parent is the one waiting.
/// Returns None in the child.
///
/// # Safety
///
/// As for `fork`: the caller is single-threaded, so no lock can be held by another thread in the child, and the
/// child never returns into the caller's code. (A raw clone also skips libc's fork handlers.)
pub unsafe fn fork_sibling() -> nix::Result<Option<nix::unistd::Pid>> {
    // SAFETY: raw clone without a new stack behaves like fork; the caller upholds the rest (see above).
    let ret = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_clone,
            (nix::libc::CLONE_PARENT | nix::libc::SIGCHLD) as nix::libc::c_ulong,
            0,
            0,
            0,
            0,
        )
    };
    match ret {
        -1 => Err(nix::errno::Errno::last()),
        0 => Ok(None),
        pid => Ok(Some(nix::unistd::Pid::from_raw(pid as i32))),
    }
}

/// Gives a container's process the signal handling a fresh process has: every signal unblocked and at its
/// default action. exec keeps what is ignored and what is blocked, and the launch starts from the monitor (which
/// blocks SIGCHLD for its signalfd) and reefd (Rust ignores SIGPIPE): a shell in the container would otherwise
/// not die of SIGPIPE, and a `head | tail` whose reader is gone would read its whole input for nothing.
pub fn reset_signals() {
    // The kernel's own sigaction, all zero: SIG_DFL, no flags, no restorer, nothing masked; the same layout on
    // every architecture for these fields. Raw, not glibc's: glibc refuses 32 and 33, which it keeps for itself,
    // and those too were found ignored in containers.
    let default = [0usize; 4];
    for signal in 1..=64 {
        // SAFETY: rt_sigaction reads `default` (of the kernel's size) and writes nothing back (null old action);
        // SIG_DFL installs no handler, so nothing of this process runs in signal context. SIGKILL and SIGSTOP
        // are refused by the kernel, harmlessly.
        unsafe {
            nix::libc::syscall(
                nix::libc::SYS_rt_sigaction,
                signal,
                default.as_ptr(),
                std::ptr::null_mut::<nix::libc::c_void>(),
                8usize,
            );
        }
    }
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
}

/// Installs a classic BPF seccomp program (an array of 8-byte `sock_filter`s) on the calling thread, which is
/// the container's only thread. No allocation: the bytes were prepared before fork.
pub fn install_seccomp(program: &[u8]) -> nix::Result<()> {
    if program.is_empty() || !program.len().is_multiple_of(8) || program.len() / 8 > u16::MAX as usize {
        return Err(nix::errno::Errno::EINVAL);
    }
    let prog = nix::libc::sock_fprog {
        len: (program.len() / 8) as u16,
        filter: program.as_ptr() as *mut nix::libc::sock_filter,
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies the filter and does not keep
    // the pointer. The length is checked above to be whole sock_filter entries.
    let ret = unsafe {
        nix::libc::syscall(nix::libc::SYS_seccomp, 1 /* SECCOMP_SET_MODE_FILTER */, 0, &prog as *const _)
    };
    if ret == 0 { Ok(()) } else { Err(nix::errno::Errno::last()) }
}

/// ioctl(fd, TIOCSCTTY, 0): makes the terminal on `fd` the controlling terminal of the caller, a session leader
/// without one.
pub fn set_controlling_terminal(fd: i32) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal from another session), no pointer.
    let ret = unsafe { nix::libc::ioctl(fd, nix::libc::TIOCSCTTY, 0) };
    if ret == 0 { Ok(()) } else { Err(nix::errno::Errno::last()) }
}

/// ioctl(fd, TIOCSWINSZ): the terminal's size in rows and columns.
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    let size = nix::libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, which points at a live local for the call.
    let ret = unsafe { nix::libc::ioctl(fd.as_raw_fd(), nix::libc::TIOCSWINSZ, &size as *const nix::libc::winsize) };
    if ret == 0 { Ok(()) } else { Err(nix::errno::Errno::last()) }
}

/// pidfd_open(2): a descriptor for `pid` that becomes readable when it exits.
pub fn pidfd_open(pid: nix::unistd::Pid) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: the syscall takes a pid and flags (0) and returns a new descriptor or -1; no pointers.
    let ret = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if ret < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: a non-negative return is a fresh descriptor this process now owns, and only this OwnedFd closes it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(ret as i32) })
}

/// mount_setattr(2) on the mount `fd` names and every mount below it, making them all read-only: what a plain
/// MS_RDONLY remount cannot do for submounts of a recursive bind.
pub fn make_tree_readonly(fd: &impl std::os::fd::AsRawFd) -> nix::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const MOUNT_ATTR_RDONLY: u64 = 0x1;
    let attr = MountAttr { attr_set: MOUNT_ATTR_RDONLY, attr_clr: 0, propagation: 0, userns_fd: 0 };
    // SAFETY: the path is a NUL-terminated empty string (AT_EMPTY_PATH: the fd itself), `attr` is a properly laid
    // out `struct mount_attr` that outlives the call, and its size is passed; the kernel only reads it.
    let ret = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            (nix::libc::AT_EMPTY_PATH | nix::libc::AT_RECURSIVE) as nix::libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret == 0 { Ok(()) } else { Err(nix::errno::Errno::last()) }
}

/// The kernel's `struct mount_attr` (mount_setattr(2)).
#[repr(C)]
struct MountAttrIdmap {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn owned_or_errno(ret: nix::libc::c_long) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if ret < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: a non-negative return is a fresh descriptor this process now owns, and only this OwnedFd closes it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(ret as i32) })
}

/// A detached copy of the mount tree at `path` (open_tree(2) with OPEN_TREE_CLONE | AT_RECURSIVE): attached
/// nowhere, so its attributes can still change, and it can be attached in another mount namespace.
pub fn clone_tree(path: &std::ffi::CStr) -> nix::Result<std::os::fd::OwnedFd> {
    clone_mount(path, true)
}

/// As `clone_tree`, with the mounts below `path` only when `recursive` (a bind's copy, rbind's).
pub fn clone_mount(path: &std::ffi::CStr, recursive: bool) -> nix::Result<std::os::fd::OwnedFd> {
    const OPEN_TREE_CLONE: u32 = 1;
    let recursive = if recursive { nix::libc::AT_RECURSIVE as u32 } else { 0 };
    // SAFETY: `path` is NUL-terminated and outlives the call; the flags are plain integers.
    let ret = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_open_tree,
            nix::libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | nix::libc::O_CLOEXEC as u32 | recursive,
        )
    };
    owned_or_errno(ret)
}

/// Attaches the detached tree `tree` (from `clone_tree`) at `target`, in the caller's mount namespace.
pub fn attach_tree(tree: &impl std::os::fd::AsRawFd, target: &std::ffi::CStr) -> nix::Result<()> {
    move_mount_fd(tree.as_raw_fd(), target)
}

/// Attaches the detached tree `tree` on the directory or file `target` names (an O_PATH descriptor): no path is
/// looked up again, so nothing can swap what was resolved inside the root for a symlink in between.
pub fn attach_tree_at(tree: &impl std::os::fd::AsRawFd, target: &impl std::os::fd::AsRawFd) -> nix::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: u32 = 4;
    const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;
    // SAFETY: both paths are empty NUL-terminated strings, with the EMPTY_PATH flags naming the descriptors
    // themselves; both descriptors outlive the call.
    let ret = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if ret == 0 { Ok(()) } else { Err(nix::errno::Errno::last()) }
}

/// move_mount(2) of the mount `fd` names onto `target`.
fn move_mount_fd(fd: i32, target: &std::ffi::CStr) -> nix::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: u32 = 4;
    // SAFETY: empty NUL-terminated source path with MOVE_MOUNT_F_EMPTY_PATH (the fd itself), NUL-terminated target.
    let ret = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_move_mount,
            fd,
            c"".as_ptr(),
            nix::libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if ret == 0 { Ok(()) } else { Err(nix::errno::Errno::last()) }
}

/// A copy of the mount tree at `path` (`clone_tree`), idmapped through the user namespace `userns`: files owned
/// by host uid N appear owned by whatever N maps to in that namespace's uid_map, read backwards.
pub fn idmapped_clone(path: &std::ffi::CStr, userns: &impl std::os::fd::AsRawFd) -> nix::Result<std::os::fd::OwnedFd> {
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    let tree = clone_tree(path)?;
    let attr = MountAttrIdmap {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: as in make_tree_readonly: an empty NUL-terminated path with AT_EMPTY_PATH, a properly laid out
    // `struct mount_attr` that outlives the call, and its size.
    let ret = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            (nix::libc::AT_EMPTY_PATH | nix::libc::AT_RECURSIVE) as nix::libc::c_uint,
            &attr as *const MountAttrIdmap,
            std::mem::size_of::<MountAttrIdmap>(),
        )
    };
    if ret != 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(tree)
}

/// An overlay mounted at `target` through the new mount API, its lower layers given as mount fds (topmost first):
/// detached idmapped mounts can be layers this way without ever being attached anywhere (fd layers: kernel 6.13).
pub fn mount_overlay_fds(
    lowers: &[std::os::fd::OwnedFd],
    upper: &std::ffi::CStr,
    work: &std::ffi::CStr,
    target: &std::ffi::CStr,
    readonly: bool,
) -> nix::Result<()> {
    const FSCONFIG_SET_STRING: u32 = 1;
    const FSCONFIG_SET_FD: u32 = 5;
    const FSCONFIG_CMD_CREATE: u32 = 6;
    const FSMOUNT_CLOEXEC: u32 = 1;
    const MOUNT_ATTR_RDONLY: u32 = 1;
    // SAFETY: a NUL-terminated filesystem name and a plain flag.
    let fs = owned_or_errno(unsafe { nix::libc::syscall(nix::libc::SYS_fsopen, c"overlay".as_ptr(), 1u32) })?;
    let config = |cmd: u32, key: Option<&std::ffi::CStr>, value: *const nix::libc::c_void, aux: i32| {
        // SAFETY: `fs` is an open fs context; key and value are NUL-terminated strings (or null where the
        // command takes none) that outlive the call.
        let ret = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_fsconfig,
                fs.as_raw_fd(),
                cmd,
                key.map_or(std::ptr::null(), |k| k.as_ptr()),
                value,
                aux,
            )
        };
        if ret == 0 { Ok(()) } else { Err(nix::errno::Errno::last()) }
    };
    for lower in lowers {
        config(FSCONFIG_SET_FD, Some(c"lowerdir+"), std::ptr::null(), lower.as_raw_fd())?;
    }
    config(FSCONFIG_SET_STRING, Some(c"upperdir"), upper.as_ptr().cast(), 0)?;
    config(FSCONFIG_SET_STRING, Some(c"workdir"), work.as_ptr().cast(), 0)?;
    config(FSCONFIG_SET_STRING, Some(c"index"), c"off".as_ptr().cast(), 0)?;
    config(FSCONFIG_CMD_CREATE, None, std::ptr::null(), 0)?;
    let attrs = if readonly { MOUNT_ATTR_RDONLY } else { 0 };
    // SAFETY: `fs` is a created fs context; flags are plain integers.
    let mnt =
        owned_or_errno(unsafe { nix::libc::syscall(nix::libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })?;
    move_mount_fd(mnt.as_raw_fd(), target)
}

/// Whether a directory of an unpacked layer carries overlay's opaque mark (`trusted.overlay.opaque=y`), which
/// hides what the layers below hold under it. Any failure (no such xattr, no xattr support) means not opaque.
pub fn has_opaque_xattr(path: &std::ffi::CStr) -> bool {
    let mut value = [0u8; 2];
    // SAFETY: both strings are NUL-terminated and outlive the call; the kernel writes at most `value.len()` bytes
    // into the buffer, which lives across the call.
    let n = unsafe {
        nix::libc::lgetxattr(path.as_ptr(), c"trusted.overlay.opaque".as_ptr(), value.as_mut_ptr().cast(), value.len())
    };
    n == 1 && value[0] == b'y'
}

/// One eBPF instruction as the kernel reads it (`struct bpf_insn`): the two 4-bit register numbers share a byte,
/// destination in the low bits on a little-endian machine.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl BpfInsn {
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
        let regs = if cfg!(target_endian = "little") { (dst & 0xf) | (src << 4) } else { (dst << 4) | (src & 0xf) };
        BpfInsn { code, regs, off, imm }
    }
}

/// bpf(BPF_PROG_LOAD): loads `insns` as a program of `prog_type` and returns its descriptor. With `log`, the
/// verifier writes why it refused the program there (a NUL-terminated text).
pub fn bpf_prog_load(
    prog_type: u32,
    insns: &[BpfInsn],
    license: &std::ffi::CStr,
    log: Option<&mut [u8]>,
) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // The leading fields of `union bpf_attr` for BPF_PROG_LOAD, up to expected_attach_type; the kernel takes a
    // shorter attr than its own and reads the rest as zero.
    #[repr(C)]
    struct ProgLoadAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }
    let insn_cnt = u32::try_from(insns.len()).map_err(|_| nix::errno::Errno::E2BIG)?;
    let (log_level, log_size, log_buf) = match log {
        Some(buf) if !buf.is_empty() => (1, u32::try_from(buf.len()).unwrap_or(u32::MAX), buf.as_mut_ptr() as u64),
        _ => (0, 0, 0),
    };
    let mut prog_name = [0u8; 16];
    prog_name[..4].copy_from_slice(b"reef");
    let attr = ProgLoadAttr {
        prog_type,
        insn_cnt,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: 0,
    };
    // SAFETY: `attr` is a plain C struct whose pointers name `insns` (insn_cnt entries of the kernel's layout),
    // the NUL-terminated `license` and, when given, `log` (log_size bytes, writable): all outlive the call, and the
    // kernel copies what it keeps. The size passed is the struct's own.
    let ret = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_bpf,
            5, /* BPF_PROG_LOAD */
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>() as u32,
        )
    };
    if ret < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: a non-negative return is a fresh descriptor this process now owns, and only this OwnedFd closes it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(ret as i32) })
}

/// bpf(BPF_PROG_ATTACH): attaches the program `prog` to `target` (a cgroup directory) as `attach_type`.
pub fn bpf_prog_attach(target: BorrowedFd<'_>, prog: BorrowedFd<'_>, attach_type: u32, flags: u32) -> nix::Result<()> {
    // The leading fields of `union bpf_attr` for BPF_PROG_ATTACH (replace_bpf_fd and later stay zero).
    #[repr(C)]
    struct ProgAttachAttr {
        target_fd: u32,
        attach_bpf_fd: u32,
        attach_type: u32,
        attach_flags: u32,
    }
    let attr = ProgAttachAttr {
        target_fd: target.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type,
        attach_flags: flags,
    };
    // SAFETY: `attr` is a plain C struct of integers that lives through the call; both descriptors are borrowed,
    // so open for its length. The kernel takes its own reference to the program.
    let ret = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_bpf,
            8, /* BPF_PROG_ATTACH */
            &attr as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>() as u32,
        )
    };
    if ret == 0 { Ok(()) } else { Err(nix::errno::Errno::last()) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_inherited_descriptor_is_taken_only_when_open_and_becomes_close_on_exec() {
        use std::os::fd::IntoRawFd;
        assert_eq!(super::take_inherited(1 << 20).err(), Some(nix::errno::Errno::EBADF));
        let file = std::fs::File::open("/proc/self/ns/mnt").unwrap();
        nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty())).unwrap();
        let raw = file.into_raw_fd();
        let fd = super::take_inherited(raw).unwrap();
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & nix::libc::FD_CLOEXEC, 0);
    }

    /// The scheduling policy of the calling thread, as the kernel reports it (field 41 of its stat).
    fn policy_of_this_thread() -> u32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        let after_comm = &stat[stat.rfind(')').expect("comm") + 1..];
        after_comm.split_whitespace().nth(38).and_then(|f| f.parse().ok()).expect("policy field")
    }

    #[test]
    fn a_helper_that_has_handed_over_its_result_runs_only_when_nothing_else_would() {
        // On a thread of its own: the policy is per thread, and the test runner's must not change.
        let policy = std::thread::spawn(|| {
            super::yield_to_waker();
            policy_of_this_thread()
        })
        .join()
        .expect("thread");
        assert_eq!(policy, nix::libc::SCHED_IDLE as u32);
    }
}
