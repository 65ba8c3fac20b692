//! GetContainerEvents: kubelet's evented PLEG. Each event names the container (or, for pod events, the pod
//! itself: kubelet recognises those by `container_id == pod id`) and carries the pod's status and all its
//! containers' statuses as they were when it happened, as containerd sends them. kubelet drops events without a
//! pod status, so a pod's own DELETED is built before its record goes.

use std::pin::Pin;

use k8s_cri::v1 as cri;
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use crate::agent::Agent;
use crate::containers::cri_status::snapshot;
use crate::error::ReefError;
use crate::events::{Action, Event, Subject};
use crate::pods::PodRecord;

pub type EventStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<cri::ContainerEventResponse, Status>> + Send>>;

/// A pod's own event. Blocking (see `snapshot`).
pub fn pod_event(agent: &Agent, pod: &PodRecord, action: Action, want_cri: bool) -> Event {
    let mut event = Event::new(Subject::Pod, action, &pod.id, &pod.name, &pod.id)
        .with("namespace", &pod.namespace)
        .with("uid", &pod.uid);
    if want_cri && let Some(kind) = action.cri_type() {
        event.cri = Some(snapshot(&agent.pods, &agent.containers, &pod.id, &pod.id, kind));
    }
    event
}

/// Publishes a pod's own event in order with its containers'. Blocking (see `snapshot`).
pub fn publish_pod(agent: &Agent, pod: &PodRecord, action: Action) {
    let order = agent.containers.event_order(&pod.id);
    let _ordered = order.lock().unwrap_or_else(|p| p.into_inner());
    agent.events.publish(|want_cri| Some(pod_event(agent, pod, action, want_cri)));
}

pub fn handle(agent: &Agent, _req: cri::GetEventsRequest) -> Result<EventStream, ReefError> {
    let (rx, listener) =
        agent.events.subscribe_cri().ok_or_else(|| ReefError::Unavailable("reefd is shutting down".into()))?;
    let stream = futures::stream::unfold(Some((rx, listener)), |state| async move {
        let (mut rx, listener) = state?;
        loop {
            match rx.recv().await {
                Ok(Event { cri: Some(response), .. }) => {
                    return Some((Ok((*response).clone()), Some((rx, listener))));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    let status = Status::from(ReefError::Unavailable(format!(
                        "the event stream fell {n} events behind: relist"
                    )));
                    return Some((Err(status), None));
                }
                Err(RecvError::Closed) => {
                    return Some((
                        Err(Status::from(ReefError::Unavailable(
                            "container events subscription closed by server".into(),
                        ))),
                        None,
                    ));
                }
            }
        }
    });
    Ok(Box::pin(stream))
}
