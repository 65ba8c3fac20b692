//! Lifecycle events: one ordered broadcast feeding the CRI's GetContainerEvents (kubelet's evented PLEG) and
//! Reef's own event stream (`rctl events`).
//!
//! Publishers order the events of one pod among themselves (the container manager holds the pod's ordering lock
//! while it builds and sends them), so every subscriber sees a pod's events in the order they happened; pods
//! do not wait for each other, so a monitor that is slow to answer holds up only its own pod's events. The CRI
//! snapshot an event carries (the pod's status and all its containers' statuses at that moment, which is what
//! kubelet caches) costs a round trip to the pod's monitor, so it is only built while a CRI client listens. A
//! subscriber that falls more than `BACKLOG` events behind is told so and dropped: kubelet then relists.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use k8s_cri::v1 as cri;
use tokio::sync::broadcast;

const BACKLOG: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Pod,
    Container,
    Image,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Started,
    /// A container exited (by itself, stopped or killed), or a pod was stopped.
    Stopped,
    /// The kernel's OOM killer ended a process of the container; its Stopped follows.
    Oom,
    Deleted,
    Pulled,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Started => "started",
            Action::Stopped => "stopped",
            Action::Oom => "oom",
            Action::Deleted => "deleted",
            Action::Pulled => "pulled",
        }
    }

    /// The CRI's event type, for the actions kubelet hears about.
    pub fn cri_type(self) -> Option<cri::ContainerEventType> {
        match self {
            Action::Created => Some(cri::ContainerEventType::ContainerCreatedEvent),
            Action::Started => Some(cri::ContainerEventType::ContainerStartedEvent),
            Action::Stopped => Some(cri::ContainerEventType::ContainerStoppedEvent),
            Action::Deleted => Some(cri::ContainerEventType::ContainerDeletedEvent),
            Action::Oom | Action::Pulled => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    /// Unix time in nanoseconds.
    pub at: i64,
    pub subject: Subject,
    pub action: Action,
    /// The pod's, container's or image's id.
    pub id: String,
    pub name: String,
    /// The pod a container belongs to (a pod's own id for a pod).
    pub pod_id: String,
    pub attributes: BTreeMap<String, String>,
    /// What GetContainerEvents sends, when a CRI client listened at the time.
    pub cri: Option<Arc<cri::ContainerEventResponse>>,
}

impl Event {
    pub fn new(subject: Subject, action: Action, id: &str, name: &str, pod_id: &str) -> Event {
        Event {
            at: reef_runtime::clock::now_nanos(),
            subject,
            action,
            id: id.to_string(),
            name: name.to_string(),
            pod_id: pod_id.to_string(),
            attributes: BTreeMap::new(),
            cri: None,
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<String>) -> Event {
        self.attributes.insert(key.to_string(), value.into());
        self
    }
}

pub struct Events {
    /// `None` once reefd shuts down: the streams end instead of holding the graceful stop up.
    sender: Mutex<Option<broadcast::Sender<Event>>>,
    cri_listeners: Arc<AtomicUsize>,
}

/// Counts a CRI listener for as long as it lives.
pub struct CriListener {
    count: Arc<AtomicUsize>,
}

impl Drop for CriListener {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Default for Events {
    fn default() -> Self {
        Events { sender: Mutex::new(Some(broadcast::channel(BACKLOG).0)), cri_listeners: Arc::default() }
    }
}

impl Events {
    /// Publishes what `make` returns; `make` runs only when someone listens, and is told whether a CRI client
    /// does (and so whether to build the CRI snapshot).
    pub fn publish(&self, make: impl FnOnce(bool) -> Option<Event>) {
        self.publish_all(|cri| make(cri).into_iter().collect());
    }

    /// Like `publish`, for events that belong together (an OOM and the exit it caused).
    pub fn publish_all(&self, make: impl FnOnce(bool) -> Vec<Event>) {
        let listening =
            self.sender.lock().unwrap_or_else(|p| p.into_inner()).as_ref().is_some_and(|tx| tx.receiver_count() > 0);
        if !listening {
            return;
        }
        let events = make(self.wants_cri());
        let guard = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = guard.as_ref() else { return };
        for event in events {
            tracing::debug!(subject = ?event.subject, action = event.action.as_str(), id = %event.id, "event");
            let _ = tx.send(event);
        }
    }

    /// Whether a CRI client listens now (for events built before they can be published).
    pub fn wants_cri(&self) -> bool {
        self.cri_listeners.load(Ordering::SeqCst) > 0
    }

    pub fn subscribe(&self) -> Option<broadcast::Receiver<Event>> {
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|tx| tx.subscribe())
    }

    /// A subscription whose events carry the CRI snapshot while the returned listener lives.
    pub fn subscribe_cri(&self) -> Option<(broadcast::Receiver<Event>, CriListener)> {
        let guard = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        let rx = guard.as_ref()?.subscribe();
        self.cri_listeners.fetch_add(1, Ordering::SeqCst);
        Some((rx, CriListener { count: Arc::clone(&self.cri_listeners) }))
    }

    /// Ends every subscription (reefd is stopping).
    pub fn close(&self) {
        self.sender.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_arrive_in_order_and_only_cri_listeners_ask_for_snapshots() {
        let events = Events::default();
        let mut built = false;
        events.publish(|_| {
            built = true;
            None
        });
        assert!(!built, "nothing is built while nobody listens");
        let mut rx = events.subscribe().unwrap();
        events.publish(|cri| {
            assert!(!cri);
            Some(Event::new(Subject::Container, Action::Created, "c1", "app", "p1"))
        });
        let (_cri_rx, listener) = events.subscribe_cri().unwrap();
        events.publish(|cri| {
            assert!(cri);
            Some(Event::new(Subject::Container, Action::Started, "c1", "app", "p1"))
        });
        drop(listener);
        events.publish(|cri| {
            assert!(!cri);
            Some(Event::new(Subject::Container, Action::Stopped, "c1", "app", "p1"))
        });
        let actions: Vec<Action> = (0..3).map(|_| rx.try_recv().unwrap().action).collect();
        assert_eq!(actions, [Action::Created, Action::Started, Action::Stopped]);
        events.close();
        assert!(matches!(rx.try_recv(), Err(broadcast::error::TryRecvError::Closed)));
        assert!(events.subscribe().is_none());
    }
}
