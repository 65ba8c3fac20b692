//! The local terminal for interactive sessions: raw mode (restored on drop, also on error paths), its size, and
//! docker's detach keys.

use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};

pub fn is_tty(fd: BorrowedFd<'_>) -> bool {
    nix::unistd::isatty(fd).unwrap_or(false)
}

/// Puts stdin's terminal in raw mode until dropped.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    pub fn enter() -> anyhow::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Rows and columns of the terminal on stdout (or stdin), if there is one.
pub fn size() -> Option<(u16, u16)> {
    let out = std::io::stdout();
    let inp = std::io::stdin();
    [out.as_fd(), inp.as_fd()].into_iter().find_map(window_size)
}

#[allow(unsafe_code)]
fn window_size(fd: BorrowedFd<'_>) -> Option<(u16, u16)> {
    use std::os::fd::AsRawFd;
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points at a live local.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws as *mut libc::winsize) };
    (ret == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// docker's default detach sequence: ctrl-p, ctrl-q.
pub const DETACH_KEYS: [u8; 2] = [0x10, 0x11];

/// Finds the detach sequence in typed input, across reads: `Some(n)` means detach after forwarding the first
/// `n` bytes of `chunk` (the sequence itself is swallowed, as docker does).
#[derive(Default)]
pub struct DetachScanner {
    matched: usize,
}

impl DetachScanner {
    pub fn scan(&mut self, chunk: &[u8]) -> Option<usize> {
        for (i, b) in chunk.iter().enumerate() {
            if *b == DETACH_KEYS[self.matched] {
                self.matched += 1;
                if self.matched == DETACH_KEYS.len() {
                    return Some((i + 1).saturating_sub(DETACH_KEYS.len()));
                }
            } else {
                self.matched = usize::from(*b == DETACH_KEYS[0]);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detach_sequence_is_found_within_and_across_reads() {
        let mut s = DetachScanner::default();
        assert_eq!(s.scan(b"ls\r"), None);
        assert_eq!(s.scan(b"ab\x10\x11cd"), Some(2));
        let mut s = DetachScanner::default();
        assert_eq!(s.scan(b"x\x10"), None);
        assert_eq!(s.scan(b"\x11"), Some(0));
        let mut s = DetachScanner::default();
        assert_eq!(s.scan(b"\x10a\x11"), None);
        assert_eq!(s.scan(b"\x10\x10\x11"), Some(1));
    }
}
