//! Undo as you go. A multi-step operation (RunPodSandbox, CreateContainer) registers how to take back each step
//! right after the step succeeds; if any later step fails, the guard is dropped and runs the undos in reverse
//! order, so exactly what was done is taken back. On success the operation disarms it.
//!
//! Rust has no `defer`; this is containerd's deferred cleanups and CRI-O's resource cleaner as a drop guard.
//! Undos run on the failing thread, never in the background: once the RPC answers, nothing of it is left.

/// A step's name and how to take it back.
type Undo<'a> = (&'static str, Box<dyn FnOnce() + 'a>);

pub struct Rollback<'a> {
    undo: Vec<Undo<'a>>,
}

impl<'a> Rollback<'a> {
    pub fn new() -> Rollback<'a> {
        Rollback { undo: Vec::new() }
    }

    /// Registers how to take back the step just done; `what` names it in the log.
    pub fn push(&mut self, what: &'static str, undo: impl FnOnce() + 'a) {
        self.undo.push((what, Box::new(undo)));
    }

    /// The operation succeeded: nothing is taken back.
    pub fn disarm(mut self) {
        self.undo.clear();
    }
}

impl Drop for Rollback<'_> {
    fn drop(&mut self) {
        while let Some((what, undo)) = self.undo.pop() {
            tracing::debug!(step = what, "taking back");
            undo();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[test]
    fn a_failure_takes_back_every_step_in_reverse_and_success_takes_back_none() {
        let log = RefCell::new(Vec::new());
        {
            let mut undo = Rollback::new();
            undo.push("one", || log.borrow_mut().push(1));
            undo.push("two", || log.borrow_mut().push(2));
        }
        assert_eq!(*log.borrow(), [2, 1]);
        let mut undo = Rollback::new();
        undo.push("three", || log.borrow_mut().push(3));
        undo.disarm();
        assert_eq!(*log.borrow(), [2, 1]);
    }
}
