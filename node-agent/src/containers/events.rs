//! The container events this manager publishes: each once per container, in lifecycle order, whoever notices
//! first (the RPC that caused it, or the exit watch for a container that exited by itself).
//!
//! ```text
//! Created ──► Started ──► Stopped ──► Deleted        (an exit seen before Started was published publishes both)
//! Created ──────────────────────────► Deleted        (never started)
//! ```
//! A container loaded at startup starts in `Loaded`: what happened before this reefd was the previous one's to
//! tell, so only what happens from now on is published.

use std::sync::{Arc, Mutex};

use super::cri_status::snapshot;
use super::{ContainerRecord, Containers, Observed};
use crate::events::{Action, Event, Subject};
use crate::pods::Pods;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Loaded,
    Created,
    Started,
    Stopped,
}

/// The events that take a container from `current` to `to`.
fn steps(current: Phase, to: Phase) -> &'static [Action] {
    use Phase::*;
    match (current, to) {
        (_, Created) => &[Action::Created],
        (Loaded | Created, Started) => &[Action::Started],
        (Created, Stopped) => &[Action::Started, Action::Stopped],
        (Loaded | Started, Stopped) => &[Action::Stopped],
        _ => &[],
    }
}

impl Containers {
    /// The lock that orders a pod's events (its own and its containers').
    pub fn event_order(&self, pod_id: &str) -> Arc<Mutex<()>> {
        let mut locks = self.event_order.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(locks.entry(pod_id.to_string()).or_default())
    }

    /// The pod is gone: its ordering lock with it.
    pub fn forget_event_order(&self, pod_id: &str) {
        self.event_order.lock().unwrap_or_else(|p| p.into_inner()).remove(pod_id);
    }

    /// Publishes what moves the container to `to`, if it is not there yet. Blocking (asks the monitor).
    pub(super) fn advance(&self, pods: &Pods, c: &ContainerRecord, to: Phase) {
        // Held across publishing: two threads noticing the same exit publish it once, and in order.
        let order = self.event_order(&c.pod_id);
        let _ordered = order.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.phase(&c.id);
        for &action in steps(current, to) {
            self.publish(pods, c, action);
        }
        self.phases.lock().unwrap_or_else(|p| p.into_inner()).insert(c.id.clone(), to.max_with(current));
    }

    fn phase(&self, id: &str) -> Phase {
        self.phases.lock().unwrap_or_else(|p| p.into_inner()).get(id).copied().unwrap_or(Phase::Loaded)
    }

    /// The container is gone: Deleted, with the pod's remaining containers.
    pub(super) fn deleted(&self, pods: &Pods, c: &ContainerRecord) {
        let order = self.event_order(&c.pod_id);
        let _ordered = order.lock().unwrap_or_else(|p| p.into_inner());
        self.phases.lock().unwrap_or_else(|p| p.into_inner()).remove(&c.id);
        self.publish(pods, c, Action::Deleted);
    }

    /// The exit watch saw the container's exit record appear.
    pub fn exited(&self, pods: &Pods, id: &str) {
        if let Some(c) = self.get(id) {
            self.advance(pods, &c, Phase::Stopped);
        }
    }

    /// Whether the container's Stopped is still to be published after an exit observed now: always for a
    /// container this reefd saw created or started; for one loaded at startup, only if it exited since.
    pub(super) fn exit_unpublished(&self, c: &ContainerRecord, observed: &Observed) -> bool {
        match (self.phase(&c.id), observed) {
            (Phase::Stopped, _) => false,
            (Phase::Loaded, Observed::Exited { exit, .. }) => exit.finished_at >= self.opened_at,
            (_, Observed::Exited { .. }) => true,
            _ => false,
        }
    }

    fn publish(&self, pods: &Pods, c: &ContainerRecord, action: Action) {
        self.events.publish_all(|want_cri| {
            let event = || Event::new(Subject::Container, action, &c.id, &c.name, &c.pod_id).with("image", &c.image);
            let mut out = Vec::new();
            let mut main = event();
            if action == Action::Stopped
                && let Observed::Exited { exit, .. } = self.observe(pods, c)
            {
                if exit.oom_killed {
                    // Docker's order: the OOM, then the death it caused.
                    let mut oom = event();
                    oom.action = Action::Oom;
                    out.push(oom);
                }
                main = main.with("exitCode", exit.code.to_string());
                if let Some(signal) = exit.signal {
                    main = main.with("signal", signal.to_string());
                }
            }
            if want_cri && let Some(kind) = action.cri_type() {
                main.cri = Some(snapshot(pods, self, &c.pod_id, &c.id, kind));
            }
            out.push(main);
            out
        });
    }
}

impl Phase {
    fn max_with(self, other: Phase) -> Phase {
        let rank = |p: Phase| match p {
            Phase::Loaded => 0,
            Phase::Created => 1,
            Phase::Started => 2,
            Phase::Stopped => 3,
        };
        if rank(self) >= rank(other) { self } else { other }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_is_published_once_and_none_is_skipped() {
        assert_eq!(steps(Phase::Created, Phase::Stopped), [Action::Started, Action::Stopped]);
        assert_eq!(steps(Phase::Started, Phase::Stopped), [Action::Stopped]);
        assert_eq!(steps(Phase::Stopped, Phase::Stopped), [] as [Action; 0]);
        assert_eq!(steps(Phase::Stopped, Phase::Started), [] as [Action; 0]);
        assert_eq!(steps(Phase::Loaded, Phase::Stopped), [Action::Stopped], "a loaded container was started before");
        assert_eq!(steps(Phase::Loaded, Phase::Started), [Action::Started]);
        assert_eq!(Phase::Started.max_with(Phase::Stopped), Phase::Stopped);
    }
}
