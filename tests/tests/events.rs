//! Container events (CRI GetContainerEvents, as kubelet's evented PLEG reads them, and Reef's own Events stream)
//! and the CRI metrics, against a real reefd running real containers.

use std::time::Duration;

use k8s_cri::v1 as cri;
use reef_api::v1 as api;
use reef_tests::pod::{self, Runtime, Setup, container_config, memory_eater, pod_config, run_pod, setup};
use reef_tests::require_e2e;
use tokio::sync::mpsc;

async fn create(rt: &mut Runtime, pod: &str, sandbox: &cri::PodSandboxConfig, c: cri::ContainerConfig) -> String {
    pod::create(rt, pod, sandbox, c).await.expect("CreateContainer")
}

/// The CRI stream, collected into a channel so the test can wait for one event at a time.
async fn cri_events(s: &Setup) -> mpsc::UnboundedReceiver<cri::ContainerEventResponse> {
    let mut stream = s
        .reefd
        .runtime()
        .await
        .get_container_events(cri::GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(e)) = stream.message().await {
            if tx.send(e).is_err() {
                return;
            }
        }
    });
    rx
}

async fn reef_events(s: &Setup) -> mpsc::UnboundedReceiver<api::Event> {
    let mut stream =
        s.reefd.reef().await.events(api::EventsRequest::default()).await.expect("reef Events").into_inner();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(e)) = stream.message().await {
            if tx.send(e).is_err() {
                return;
            }
        }
    });
    rx
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("an event in time").expect("stream open")
}

fn kind(e: &cri::ContainerEventResponse) -> cri::ContainerEventType {
    cri::ContainerEventType::try_from(e.container_event_type).expect("known type")
}

fn state_of(e: &cri::ContainerEventResponse, id: &str) -> Option<cri::ContainerState> {
    e.containers_statuses
        .iter()
        .find(|c| c.id == id)
        .map(|c| cri::ContainerState::try_from(c.state).unwrap_or(cri::ContainerState::ContainerUnknown))
}

#[tokio::test]
async fn events_arrive_in_order_for_create_start_exit_stop_and_remove() {
    require_e2e!();
    use cri::ContainerEventType::*;
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let mut events = cri_events(&s).await;
    let mut reef = reef_events(&s).await;
    // Subscriptions are live once the server has them: a pull event proves the Reef one is.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let sandbox = pod_config(&s, "evented");
    let pod = run_pod(&mut rt, &sandbox).await;
    for expected in [ContainerCreatedEvent, ContainerStartedEvent] {
        let e = next(&mut events).await;
        assert_eq!((kind(&e), e.container_id.as_str()), (expected, pod.as_str()), "the pod's own events come first");
        let status = e.pod_sandbox_status.as_ref().expect("kubelet drops events without a pod status");
        assert_eq!(status.metadata.as_ref().map(|m| m.uid.as_str()), Some("uid-evented"));
        assert!(e.created_at > 1_700_000_000_000_000_000, "nanoseconds");
    }

    // A container that exits by itself: nobody asks about it, its STOPPED still comes.
    let quick = create(&mut rt, &pod, &sandbox, container_config(&s, "quick", "exit 3")).await;
    let e = next(&mut events).await;
    assert_eq!((kind(&e), e.container_id.as_str()), (ContainerCreatedEvent, quick.as_str()));
    assert_eq!(state_of(&e, &quick), Some(cri::ContainerState::ContainerCreated));
    rt.start_container(cri::StartContainerRequest { container_id: quick.clone() }).await.unwrap();
    let e = next(&mut events).await;
    assert_eq!((kind(&e), e.container_id.as_str()), (ContainerStartedEvent, quick.as_str()));
    let e = next(&mut events).await;
    assert_eq!((kind(&e), e.container_id.as_str()), (ContainerStoppedEvent, quick.as_str()));
    let status = e.containers_statuses.iter().find(|c| c.id == quick).expect("the container's status");
    assert_eq!((status.state, status.exit_code), (cri::ContainerState::ContainerExited as i32, 3));
    // The evented PLEG reads a pod's containers from PodSandboxStatus, stamped with when they were read.
    let pod_status = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pod_status.containers_statuses.len(), 1);
    assert_eq!(pod_status.containers_statuses[0].exit_code, 3);
    assert!(pod_status.timestamp >= e.created_at);

    // A container stopped through the CRI: its STOPPED is out by the time StopContainer returns.
    let slow = create(&mut rt, &pod, &sandbox, container_config(&s, "slow", "exec sleep 300")).await;
    rt.start_container(cri::StartContainerRequest { container_id: slow.clone() }).await.unwrap();
    // sleep is PID 1 of its namespace and ignores SIGTERM: SIGKILL after a second.
    rt.stop_container(cri::StopContainerRequest { container_id: slow.clone(), timeout: 1 }).await.unwrap();
    for expected in [ContainerCreatedEvent, ContainerStartedEvent, ContainerStoppedEvent] {
        let e = next(&mut events).await;
        assert_eq!((kind(&e), e.container_id.as_str()), (expected, slow.as_str()));
    }
    assert!(events.try_recv().is_err(), "a second stop publishes nothing");
    rt.stop_container(cri::StopContainerRequest { container_id: slow.clone(), timeout: 5 }).await.unwrap();

    rt.remove_container(cri::RemoveContainerRequest { container_id: quick.clone() }).await.unwrap();
    let e = next(&mut events).await;
    assert_eq!((kind(&e), e.container_id.as_str()), (ContainerDeletedEvent, quick.as_str()));
    assert_eq!(state_of(&e, &quick), None, "a deleted container is no longer among the pod's");
    assert_eq!(state_of(&e, &slow), Some(cri::ContainerState::ContainerExited));

    // Removing the pod removes its last container, stops the pod and deletes it, in that order.
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    let e = next(&mut events).await;
    assert_eq!((kind(&e), e.container_id.as_str()), (ContainerDeletedEvent, slow.as_str()));
    let e = next(&mut events).await;
    assert_eq!((kind(&e), e.container_id.as_str()), (ContainerStoppedEvent, pod.as_str()));
    let e = next(&mut events).await;
    assert_eq!((kind(&e), e.container_id.as_str()), (ContainerDeletedEvent, pod.as_str()));
    assert!(e.pod_sandbox_status.is_some(), "the pod's DELETED still carries its status");
    assert!(e.containers_statuses.is_empty());

    // Reef's stream told the same story, with the exit codes.
    let mut seen = Vec::new();
    while seen.len() < 12 {
        let e = next(&mut reef).await;
        let who = if e.id == pod {
            "pod"
        } else if e.id == quick {
            "quick"
        } else {
            "slow"
        };
        let code = e.attributes.get("exitCode").map(|c| format!(" {c}")).unwrap_or_default();
        seen.push(format!("{who} {}{code}", e.action));
    }
    assert_eq!(
        seen,
        [
            "pod created",
            "pod started",
            "quick created",
            "quick started",
            "quick stopped 3",
            "slow created",
            "slow started",
            "slow stopped 137",
            "quick deleted",
            "slow deleted",
            "pod stopped",
            "pod deleted",
        ]
    );
}

#[tokio::test]
async fn an_oom_kill_is_an_event_before_the_exit() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "hungry");
    let pod = run_pod(&mut rt, &sandbox).await;
    let id = create(&mut rt, &pod, &sandbox, memory_eater(&s, "eater")).await;
    let mut reef = {
        let mut stream = s
            .reefd
            .reef()
            .await
            .events(api::EventsRequest { container_id: id.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(e)) = stream.message().await {
                let _ = tx.send(e);
            }
        });
        rx
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap();
    let actions: Vec<String> =
        [next(&mut reef).await, next(&mut reef).await, next(&mut reef).await].into_iter().map(|e| e.action).collect();
    assert_eq!(actions, ["started", "oom", "stopped"]);
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

#[tokio::test]
async fn an_exit_while_a_new_reefd_runs_is_an_event_and_nothing_before_it_is_repeated() {
    require_e2e!();
    let mut s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let sandbox = pod_config(&s, "survivor");
    let pod = run_pod(&mut rt, &sandbox).await;
    let id = create(&mut rt, &pod, &sandbox, container_config(&s, "later", "sleep 3; exit 5")).await;
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap();
    s.reefd.restart();
    let mut events = cri_events(&s).await;
    let e = next(&mut events).await;
    assert_eq!((kind(&e), e.container_id.as_str()), (cri::ContainerEventType::ContainerStoppedEvent, id.as_str()));
    let status = e.containers_statuses.iter().find(|c| c.id == id).expect("its status");
    assert_eq!(status.exit_code, 5);
    let mut rt = s.reefd.runtime().await;
    rt.stop_container(cri::StopContainerRequest { container_id: id.clone(), timeout: 1 }).await.unwrap();
    rt.remove_container(cri::RemoveContainerRequest { container_id: id.clone() }).await.unwrap();
    let e = next(&mut events).await;
    assert_eq!(kind(&e), cri::ContainerEventType::ContainerDeletedEvent, "no second STOPPED: {e:?}");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

// Multi-threaded: the client must keep answering its connection while this thread waits for reefd to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_end_when_reefd_stops() {
    require_e2e!();
    let mut s = setup().await;
    let mut events = cri_events(&s).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let status = tokio::task::block_in_place(|| s.reefd.stop()).expect("reefd exit status");
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(10), "an open stream does not hold the stop up");
    let end = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("stream ends");
    assert!(end.is_none());
}

#[tokio::test]
async fn metrics_are_described_and_reported_per_container() {
    require_e2e!();
    let s = setup().await;
    let mut rt = s.reefd.runtime().await;
    let descriptors =
        rt.list_metric_descriptors(cri::ListMetricDescriptorsRequest {}).await.unwrap().into_inner().descriptors;
    let keys_of = |name: &str| {
        descriptors.iter().find(|d| d.name == name).map(|d| d.label_keys.clone()).unwrap_or_else(|| panic!("{name}"))
    };
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_rss",
        "container_memory_usage_bytes",
        "container_processes",
        "container_threads",
        "container_spec_memory_limit_bytes",
    ] {
        assert_eq!(keys_of(name), ["pod", "namespace", "container", "id", "image"]);
    }

    let sandbox = pod_config(&s, "measured");
    let pod = run_pod(&mut rt, &sandbox).await;
    let mut config = container_config(&s, "busy", "sleep 300 & sleep 300 & wait");
    config.linux.as_mut().unwrap().resources =
        Some(cri::LinuxContainerResources { memory_limit_in_bytes: 64 << 20, ..Default::default() });
    let id = create(&mut rt, &pod, &sandbox, config).await;
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let pods =
        rt.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {}).await.unwrap().into_inner().pod_metrics;
    let ours = pods.iter().find(|p| p.pod_sandbox_id == pod).expect("the pod's metrics");
    let metrics = &ours.container_metrics.iter().find(|c| c.container_id == id).expect("the container's").metrics;
    let value = |name: &str| {
        let m = metrics.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("{name} reported"));
        assert_eq!(m.label_values, ["measured", "default", "busy", id.as_str(), s.image.as_str()]);
        m.value.as_ref().map(|v| v.value).unwrap_or_default()
    };
    assert!(value("container_memory_usage_bytes") > 0);
    assert!(value("container_memory_working_set_bytes") <= value("container_memory_usage_bytes"));
    assert_eq!(value("container_processes"), 3, "sh and its two sleeps");
    assert!(value("container_threads") >= 3);
    assert_eq!(value("container_spec_memory_limit_bytes"), 64 << 20);
    assert!(metrics.iter().all(|m| descriptors.iter().any(|d| d.name == m.name)), "every metric is described");
    let pod_stats = rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest { pod_sandbox_id: pod.clone() })
        .await
        .unwrap()
        .into_inner()
        .stats
        .and_then(|s| s.linux)
        .and_then(|l| l.process)
        .and_then(|p| p.process_count)
        .map(|c| c.value);
    assert_eq!(pod_stats, Some(value("container_threads")), "the pod's tasks");

    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    let pods =
        rt.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {}).await.unwrap().into_inner().pod_metrics;
    assert!(pods.iter().all(|p| p.pod_sandbox_id != pod), "a stopped pod has no metrics");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}
