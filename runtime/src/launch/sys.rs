//! The only unsafe calls of container launch, each small and explained.
#![allow(unsafe_code)]

use std::os::fd::BorrowedFd;

use nix::unistd::ForkResult;

/// fork(2). Sound here because the children only run code that is safe after fork: syscalls, and allocation
/// through glibc malloc, whose fork handlers leave it usable in the child. No child ever returns into the
/// caller's code: each ends in exec or `exit_now`.
pub fn fork() -> nix::Result<ForkResult> {
    // SAFETY: see above.
    unsafe { nix::unistd::fork() }
}

/// _exit(2): leaves a child without running the parent's atexit handlers or flushing its stdio buffers.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and takes no pointers.
    unsafe { nix::libc::_exit(code) }
}

/// A pipe end the child inherited as a raw number across fork.
pub fn borrow(fd: i32) -> BorrowedFd<'static> {
    // SAFETY: the launch code passes only pipe ends it created and keeps open for the child's whole life (the
    // child ends in exec or exit without closing them), so the fd stays valid for as long as it is used.
    unsafe { BorrowedFd::borrow_raw(fd) }
}
