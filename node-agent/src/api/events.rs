//! Events: the lifecycle broadcast (events.rs) as Reef's own stream, filtered for the client.

use reef_api::v1 as api;
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use super::ReefApi;
use crate::agent::Agent;
use crate::error::ReefError;
use crate::events::{Event, Subject};

struct Filter {
    pod_id: String,
    container_id: String,
    kinds: Vec<i32>,
}

impl Filter {
    fn admits(&self, e: &Event) -> bool {
        let kind = kind_of(e.subject) as i32;
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && (self.pod_id.is_empty() || (e.subject != Subject::Image && e.pod_id.starts_with(&self.pod_id)))
            && (self.container_id.is_empty()
                || (e.subject == Subject::Container && e.id.starts_with(&self.container_id)))
    }
}

fn kind_of(s: Subject) -> api::EventKind {
    match s {
        Subject::Pod => api::EventKind::Pod,
        Subject::Container => api::EventKind::Container,
        Subject::Image => api::EventKind::Image,
    }
}

fn to_api(e: &Event) -> api::Event {
    api::Event {
        time: e.at,
        kind: kind_of(e.subject) as i32,
        action: e.action.as_str().to_string(),
        id: e.id.clone(),
        name: e.name.clone(),
        pod_id: e.pod_id.clone(),
        attributes: e.attributes.clone().into_iter().collect(),
    }
}

pub fn handle(
    agent: &Agent,
    req: api::EventsRequest,
) -> Result<<ReefApi as api::reef_server::Reef>::EventsStream, ReefError> {
    let rx = agent.events.subscribe().ok_or_else(|| ReefError::Unavailable("reefd is shutting down".into()))?;
    let filter = Filter { pod_id: req.pod_id, container_id: req.container_id, kinds: req.kinds };
    let stream = futures::stream::unfold(Some((rx, filter)), |state| async move {
        let (mut rx, filter) = state?;
        loop {
            match rx.recv().await {
                Ok(e) if filter.admits(&e) => return Some((Ok(to_api(&e)), Some((rx, filter)))),
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    return Some((
                        Err(Status::from(ReefError::Unavailable(format!("the event stream fell {n} events behind")))),
                        None,
                    ));
                }
                Err(RecvError::Closed) => {
                    return Some((Err(Status::from(ReefError::Unavailable("reefd is shutting down".into()))), None));
                }
            }
        }
    });
    Ok(Box::pin(stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Action;

    #[test]
    fn filters_pick_by_pod_container_and_kind() {
        let c = Event::new(Subject::Container, Action::Started, "c123", "app", "p456");
        let p = Event::new(Subject::Pod, Action::Created, "p456", "web", "p456");
        let i = Event::new(Subject::Image, Action::Pulled, "sha256:1", "busybox", "");
        let f = |pod: &str, ctr: &str, kinds: Vec<i32>| Filter { pod_id: pod.into(), container_id: ctr.into(), kinds };
        assert!(f("", "", vec![]).admits(&i));
        assert!(f("p45", "", vec![]).admits(&c) && f("p45", "", vec![]).admits(&p) && !f("p45", "", vec![]).admits(&i));
        assert!(f("", "c1", vec![]).admits(&c) && !f("", "c1", vec![]).admits(&p));
        let images = f("", "", vec![api::EventKind::Image as i32]);
        assert!(images.admits(&i) && !images.admits(&c));
    }
}
