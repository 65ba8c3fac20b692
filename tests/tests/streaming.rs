//! The streaming server, driven by real clients: a SPDY/3.1 client written against the protocol (tests/src/spdy.rs)
//! and tokio-tungstenite for WebSocket, against a real reefd running real busybox containers.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use reef_tests::cri::pull;
use reef_tests::image::{Compression, ImageBuilder, busybox_layer};
use reef_tests::push::push_image;
use reef_tests::reefd::Reefd;
use reef_tests::registry::Registry;
use reef_tests::require_e2e;
use reef_tests::spdy::{self, Client, Frame};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tonic::Code;
use tonic::transport::Channel;

struct Setup {
    reefd: Reefd,
    _registry: Registry,
    image: String,
    _logs: tempfile::TempDir,
    rt: RuntimeServiceClient<Channel>,
    pod: String,
    sandbox: cri::PodSandboxConfig,
    /// The pod's containers share its PID namespace.
    shared_pid: bool,
    /// The pod uses the node's network namespace.
    host_network: bool,
}

async fn setup(name: &str, extra: &str) -> Setup {
    setup_pod(name, extra, false, false).await
}

async fn setup_pod(name: &str, extra: &str, shared_pid: bool, host_network: bool) -> Setup {
    let registry = Registry::start();
    let image = ImageBuilder::new().layer(busybox_layer(), Compression::Gzip).build();
    push_image(&registry.addr(), "busybox", "1", &image, None);
    let reefd = Reefd::start(&format!("{extra}\n[registry]\ninsecure = [\"{}\"]\n", registry.addr()));
    let image = format!("{}/busybox:1", registry.addr());
    pull(&mut reefd.images().await, &image).await.expect("pull busybox");
    let logs = tempfile::tempdir().expect("log dir");
    let sandbox = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: logs.path().display().to_string(),
        linux: (shared_pid || host_network).then(|| cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption {
                    pid: if shared_pid { cri::NamespaceMode::Pod } else { cri::NamespaceMode::Container } as i32,
                    network: if host_network { cri::NamespaceMode::Node } else { cri::NamespaceMode::Pod } as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut rt = reefd.runtime().await;
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(sandbox.clone()), runtime_handler: String::new() })
        .await
        .expect("RunPodSandbox")
        .into_inner()
        .pod_sandbox_id;
    Setup { reefd, _registry: registry, image, _logs: logs, rt, pod, sandbox, shared_pid, host_network }
}

impl Setup {
    /// A running container with `script` as its command.
    async fn container(&mut self, name: &str, script: &str) -> String {
        self.container_with(name, script, false, false, false).await
    }

    async fn container_with(&mut self, name: &str, script: &str, stdin: bool, stdin_once: bool, tty: bool) -> String {
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(cri::ImageSpec { image: self.image.clone(), ..Default::default() }),
            command: vec!["sh".into(), "-c".into(), script.into()],
            log_path: format!("{name}.log"),
            stdin,
            stdin_once,
            tty,
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        pid: if self.shared_pid { cri::NamespaceMode::Pod } else { cri::NamespaceMode::Container }
                            as i32,
                        network: if self.host_network { cri::NamespaceMode::Node } else { cri::NamespaceMode::Pod }
                            as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: self.pod.clone(),
                config: Some(config),
                sandbox_config: Some(self.sandbox.clone()),
            })
            .await
            .expect("CreateContainer")
            .into_inner()
            .container_id;
        self.rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("start");
        id
    }

    async fn exec_url(&mut self, id: &str, cmd: &[&str], stdin: bool, tty: bool) -> String {
        self.rt
            .exec(cri::ExecRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                tty,
                stdin,
                stdout: true,
                stderr: !tty,
            })
            .await
            .expect("Exec")
            .into_inner()
            .url
    }
}

/// Opens the streams client-go opens for an exec, in its order: error, stdin, stdout, stderr, resize.
async fn open_exec_streams(client: &mut Client, stdin: bool, stderr: bool, tty: bool) -> Vec<(String, u32)> {
    let mut kinds = vec!["error"];
    if stdin {
        kinds.push("stdin");
    }
    kinds.push("stdout");
    if stderr {
        kinds.push("stderr");
    }
    if tty {
        kinds.push("resize");
    }
    let mut ids = Vec::new();
    for kind in kinds {
        let id = client.open(&[("streamType", kind)]).await.expect("open stream");
        ids.push((kind.to_string(), id));
    }
    ids
}

fn stream(ids: &[(String, u32)], kind: &str) -> u32 {
    ids.iter().find(|(k, _)| k == kind).map(|(_, id)| *id).expect("stream")
}

fn status_json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("status {:?}: {e}", String::from_utf8_lossy(bytes)))
}

#[tokio::test]
async fn spdy_exec_echoes_stdin_and_reports_the_exit_code_as_kubelet_does() {
    require_e2e!();
    let mut s = setup("spdyexec", "").await;
    let id = s.container("main", "sleep 1000").await;
    let url = s.exec_url(&id, &["sh", "-c", "cat; echo oops >&2; exit 3"], true, false).await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let (mut client, reply) =
        Client::connect(&url, &["v4.channel.k8s.io", "v3.channel.k8s.io"]).await.expect("SPDY upgrade");
    assert_eq!(reply.header("X-Stream-Protocol-Version"), Some("v4.channel.k8s.io"));
    assert_eq!(reply.header("Upgrade"), Some("SPDY/3.1"));
    let ids = open_exec_streams(&mut client, true, true, false).await;
    client.send(stream(&ids, "stdin"), b"hello over spdy\n", false).await.unwrap();
    client.send(stream(&ids, "stdin"), b"", true).await.unwrap();
    let got = spdy::collect(&mut client, Duration::from_secs(10)).await;
    assert_eq!(got.data.get(&stream(&ids, "stdout")).map(|d| &d[..]), Some(&b"hello over spdy\n"[..]));
    assert_eq!(got.data.get(&stream(&ids, "stderr")).map(|d| &d[..]), Some(&b"oops\n"[..]));
    let status = status_json(&got.data[&stream(&ids, "error")]);
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "3");
    assert!(got.fin.contains(&stream(&ids, "stdout")) && got.fin.contains(&stream(&ids, "error")));
    assert!(got.goaway, "the server ends the connection with GOAWAY");

    // The token was single-use.
    let err = Client::connect(&url, &["v4.channel.k8s.io"]).await.err().expect("a used token is refused");
    assert_eq!(err.status, 404);
    let (base, _) = url.rsplit_once('/').unwrap();
    let err = Client::connect(&format!("{base}/made-up-token"), &["v4.channel.k8s.io"]).await.err().unwrap();
    assert_eq!(err.status, 404);
}

#[tokio::test]
async fn spdy_exec_with_a_tty_gets_a_terminal_its_size_and_exit_zero() {
    require_e2e!();
    let mut s = setup("spdytty", "").await;
    let id = s.container("main", "sleep 1000").await;
    let script = "[ -t 0 ] && echo is-a-tty; read line; stty size; echo got:$line";
    let url = s.exec_url(&id, &["sh", "-c", script], true, true).await;
    let (mut client, _) = Client::connect(&url, &["v4.channel.k8s.io"]).await.expect("upgrade");
    let ids = open_exec_streams(&mut client, true, false, true).await;
    // Split across two frames, as a resize JSON may be.
    client.send(stream(&ids, "resize"), br#"{"Width":100,"#, false).await.unwrap();
    client.send(stream(&ids, "resize"), br#""Height":40}"#, false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.send(stream(&ids, "stdin"), b"typed\r", false).await.unwrap();
    let got = spdy::collect(&mut client, Duration::from_secs(10)).await;
    let out =
        String::from_utf8_lossy(got.data.get(&stream(&ids, "stdout")).map(|d| &d[..]).unwrap_or_default()).into_owned();
    assert!(out.contains("is-a-tty"), "{out:?}");
    assert!(out.contains("40 100"), "{out:?}");
    assert!(out.contains("got:typed"), "{out:?}");
    assert_eq!(status_json(&got.data[&stream(&ids, "error")])["status"], "Success");
}

#[tokio::test]
async fn spdy_negotiation_and_upgrade_failures_are_answered_like_kubelet() {
    require_e2e!();
    let mut s = setup("spdyneg", "").await;
    let id = s.container("main", "sleep 1000").await;
    let url = s.exec_url(&id, &["true"], false, false).await;
    let err = Client::connect(&url, &["v99.channel.k8s.io"]).await.err().expect("refused");
    assert_eq!(err.status, 403);
    assert!(err.body.contains("unable to negotiate protocol"), "{}", err.body);
    assert!(err.header("X-Accepted-Stream-Protocol-Versions").is_some());

    let url = s.exec_url(&id, &["true"], false, false).await;
    let (_, reply) = spdy::request(&url, "POST", &[("X-Stream-Protocol-Version", "v4.channel.k8s.io")]).await;
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("missing upgrade headers"), "{}", reply.body);

    // An oversized frame ends the connection instead of being buffered.
    let url = s.exec_url(&id, &["sleep", "30"], true, false).await;
    let (mut client, _) = Client::connect(&url, &["v4.channel.k8s.io"]).await.expect("upgrade");
    let ids = open_exec_streams(&mut client, true, true, false).await;
    let mut frame = stream(&ids, "stdin").to_be_bytes().to_vec();
    frame.extend_from_slice(&[0, 0x20, 0, 0]);
    client.write_raw(&frame).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), async { while client.next().await.is_some() {} }).await;
    assert!(ended.is_ok(), "the server closes a connection that sends a 2 MiB frame");

    // Unknown containers and bad requests fail at the CRI call.
    let bad =
        s.rt.exec(cri::ExecRequest {
            container_id: "nope".into(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::NotFound);
    let bad =
        s.rt.exec(cri::ExecRequest { container_id: id.clone(), cmd: vec!["true".into()], ..Default::default() })
            .await
            .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let bad =
        s.rt.exec(cri::ExecRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            tty: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

async fn ws_connect(
    url: &str,
    protocol: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut req = url.replace("http://", "ws://").into_client_request().unwrap();
    if !protocol.is_empty() {
        req.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.expect("websocket upgrade");
    if !protocol.is_empty() {
        assert_eq!(resp.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()), Some(protocol));
    }
    ws
}

/// Reads channel messages until the server closes; returns the bytes per channel.
async fn ws_collect<S>(ws: &mut S, base64: bool) -> Vec<Vec<u8>>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    use base64::Engine;
    let mut channels = vec![Vec::new(); 8];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(msg)) = ws.next().await {
            let (ch, data) = match msg {
                Message::Binary(b) if !b.is_empty() => (b[0] as usize, b[1..].to_vec()),
                Message::Text(t) if base64 && !t.is_empty() => {
                    let t = t.as_str();
                    let ch = (t.as_bytes()[0] - b'0') as usize;
                    (ch, base64::engine::general_purpose::STANDARD.decode(&t[1..]).expect("base64"))
                }
                Message::Close(_) => break,
                _ => continue,
            };
            if ch < channels.len() {
                channels[ch].extend(data);
            }
        }
    })
    .await;
    channels
}

#[tokio::test]
async fn websocket_exec_v5_closes_stdin_and_reports_the_exit_code() {
    require_e2e!();
    let mut s = setup("wsexec", "").await;
    let id = s.container("main", "sleep 1000").await;
    let url = s.exec_url(&id, &["sh", "-c", "cat; exit 7"], true, false).await;
    let mut ws = ws_connect(&url, "v5.channel.k8s.io").await;
    ws.send(Message::Binary([&[0u8][..], b"over websocket\n"].concat().into())).await.unwrap();
    // v5's close signal for stdin: cat sees the end of its input.
    ws.send(Message::Binary(vec![255u8, 0].into())).await.unwrap();
    let channels = ws_collect(&mut ws, false).await;
    assert_eq!(channels[1], b"over websocket\n");
    let status = status_json(&channels[3]);
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "7");
}

#[tokio::test]
async fn websocket_exec_base64_and_the_old_protocols() {
    require_e2e!();
    let mut s = setup("wsb64", "").await;
    let id = s.container("main", "sleep 1000").await;
    let url = s.exec_url(&id, &["sh", "-c", "echo hi; echo there >&2"], false, false).await;
    let mut ws = ws_connect(&url, "base64.channel.k8s.io").await;
    let channels = ws_collect(&mut ws, true).await;
    assert_eq!(channels[1], b"hi\n");
    assert_eq!(channels[2], b"there\n");
    // Before v4, success writes nothing on the error channel.
    assert!(channels[3].is_empty(), "{:?}", channels[3]);

    let url = s.exec_url(&id, &["sh", "-c", "exit 2"], false, false).await;
    let mut ws = ws_connect(&url, "v4.channel.k8s.io").await;
    let channels = ws_collect(&mut ws, false).await;
    assert_eq!(status_json(&channels[3])["details"]["causes"][0]["message"], "2");
}

/// Processes whose command line mentions `marker` (busybox runs `sleep` inside forks of its shell, so they all
/// carry the shell's command line).
fn sleeps(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_client_that_vanishes_mid_stream_leaves_no_process_or_fd_behind() {
    require_e2e!();
    let mut s = setup("vanish", "").await;
    let id = s.container("main", "sleep 1000").await;
    let reefd_pid = s.reefd.pid().expect("reefd pid");
    // A warm-up exec, so lazily opened descriptors are part of the baseline.
    let url = s.exec_url(&id, &["true"], false, false).await;
    let (mut c, _) = Client::connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
    open_exec_streams(&mut c, false, true, false).await;
    spdy::collect(&mut c, Duration::from_secs(10)).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = open_fds(reefd_pid);

    for (tty, marker) in [(false, "98761"), (true, "98762")] {
        let script = format!("sleep {marker} & sleep {marker}1 & echo ready; wait");
        let url = s.exec_url(&id, &["sh", "-c", &script], true, tty).await;
        let (mut client, _) = Client::connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
        let ids = open_exec_streams(&mut client, true, !tty, tty).await;
        let out = stream(&ids, "stdout");
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("ready") {
            match tokio::time::timeout(Duration::from_secs(10), client.next()).await.expect("output") {
                Some(Frame::Data { stream, data, .. }) if stream == out => seen.extend(data),
                Some(_) => {}
                None => panic!("connection ended early"),
            }
        }
        // A child caught mid-exec shows an empty command line for an instant, so this is polled too.
        eventually("the shell and its two background sleeps run", || sleeps(marker).len() >= 3).await;
        drop(client);
        eventually("the exec's processes are killed when its client goes away", || sleeps(marker).is_empty()).await;
    }
    eventually("reefd's descriptors return to their baseline", || open_fds(reefd_pid) <= baseline).await;
}

#[tokio::test]
async fn an_unused_url_expires() {
    require_e2e!();
    let mut s = setup("expire", "[streaming]\ntoken_ttl_seconds = 1\n").await;
    let id = s.container("main", "sleep 1000").await;
    let url = s.exec_url(&id, &["true"], false, false).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let err = Client::connect(&url, &["v4.channel.k8s.io"]).await.err().expect("an expired token is refused");
    assert_eq!(err.status, 404);
}

async fn port_forward_url(s: &mut Setup) -> String {
    s.rt.port_forward(cri::PortForwardRequest { pod_sandbox_id: s.pod.clone(), port: vec![8080] })
        .await
        .expect("PortForward")
        .into_inner()
        .url
}

/// A server in the pod on 127.0.0.1:8080 (its own loopback): answers each connection with `got:` and the
/// line it read.
const ECHO_SERVER: &str = "printf 'read x; echo got:$x\\n' > /tmp/h; nc -ll -p 8080 -e sh /tmp/h";

async fn wait_listening(s: &mut Setup, id: &str) {
    wait_listening_on(s, id, 8080).await
}

async fn wait_listening_on(s: &mut Setup, id: &str, port: u16) {
    for _ in 0..100 {
        let r =
            s.rt.exec_sync(cri::ExecSyncRequest {
                container_id: id.into(),
                cmd: vec!["sh".into(), "-c".into(), format!("netstat -ltn | grep -q :{port}")],
                timeout: 5,
            })
            .await
            .expect("ExecSync");
        if r.into_inner().exit_code == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the pod's server never listened");
}

#[tokio::test]
async fn spdy_port_forward_reaches_the_pods_loopback_both_ways() {
    require_e2e!();
    let mut s = setup("spdypf", "").await;
    let id = s.container("server", ECHO_SERVER).await;
    wait_listening(&mut s, &id).await;
    let url = port_forward_url(&mut s).await;
    let (mut client, reply) = Client::connect(&url, &["portforward.k8s.io"]).await.expect("upgrade");
    assert_eq!(reply.header("X-Stream-Protocol-Version"), Some("portforward.k8s.io"));
    for (request, line) in [("0", "first"), ("1", "second")] {
        let error = client.open(&[("streamType", "error"), ("port", "8080"), ("requestID", request)]).await.unwrap();
        let data = client.open(&[("streamType", "data"), ("port", "8080"), ("requestID", request)]).await.unwrap();
        client.send(data, format!("{line}\n").as_bytes(), false).await.unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no answer: {:?}", String::from_utf8_lossy(&got));
            match tokio::time::timeout(Duration::from_secs(10), client.next()).await.expect("frame") {
                Some(Frame::Data { stream, data: d, fin }) if stream == data => {
                    got.extend(d);
                    if fin {
                        break;
                    }
                }
                Some(Frame::Data { stream, data: d, .. }) if stream == error => {
                    assert!(d.is_empty(), "error: {}", String::from_utf8_lossy(&d))
                }
                Some(_) => {}
                None => panic!("connection closed"),
            }
        }
        assert_eq!(String::from_utf8_lossy(&got), format!("got:{line}\n"));
    }

    // Nothing listens on 9: the error stream says so, as kubelet words it.
    let error = client.open(&[("streamType", "error"), ("port", "9"), ("requestID", "2")]).await.unwrap();
    let _data = client.open(&[("streamType", "data"), ("port", "9"), ("requestID", "2")]).await.unwrap();
    let mut message = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(f) = client.next().await {
            if let Frame::Data { stream, data, fin } = f
                && stream == error
            {
                message.extend(data);
                if fin {
                    break;
                }
            }
        }
    })
    .await;
    let message = String::from_utf8_lossy(&message);
    assert!(message.contains("error forwarding port 9 to pod"), "{message}");
    // A stream without a port is refused.
    assert!(client.open(&[("streamType", "data")]).await.is_err());
}

#[tokio::test]
async fn websocket_port_forward_announces_the_port_and_carries_data_both_ways() {
    require_e2e!();
    let mut s = setup("wspf", "").await;
    let id = s.container("server", ECHO_SERVER).await;
    wait_listening(&mut s, &id).await;
    let url = port_forward_url(&mut s).await;
    let mut ws = ws_connect(&format!("{url}?port=8080"), "v4.channel.k8s.io").await;
    ws.send(Message::Binary([&[0u8][..], b"ws\n"].concat().into())).await.unwrap();
    let channels = ws_collect(&mut ws, false).await;
    // Each channel opens with the port, little-endian.
    assert_eq!(&channels[0][..2], &8080u16.to_le_bytes());
    assert_eq!(&channels[1][..2], &8080u16.to_le_bytes());
    assert_eq!(String::from_utf8_lossy(&channels[0][2..]), "got:ws\n");

    let url = port_forward_url(&mut s).await;
    let (_, reply) = spdy::request(
        &format!("{url}?port=http"),
        "GET",
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ],
    )
    .await;
    assert_eq!(reply.status, 400);
}

async fn attach_url(s: &mut Setup, id: &str, tty: bool) -> String {
    s.rt.attach(cri::AttachRequest { container_id: id.into(), stdin: true, tty, stdout: true, stderr: !tty })
        .await
        .expect("Attach")
        .into_inner()
        .url
}

/// Reads stdout frames until `want` shows up.
async fn read_until(client: &mut Client, stdout: u32, want: &str) -> String {
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(want) {
        match tokio::time::timeout(Duration::from_secs(10), client.next()).await {
            Ok(Some(Frame::Data { stream, data, .. })) if stream == stdout => seen.extend(data),
            Ok(Some(_)) => {}
            _ => panic!("no {want:?} in {:?}", String::from_utf8_lossy(&seen)),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn spdy_attach_joins_the_containers_stdio_and_leaves_it_running() {
    require_e2e!();
    let mut s = setup("attach", "").await;
    let script = "echo started; while read line; do echo echo:$line; done; echo bye; exit 4";
    let id = s.container_with("main", script, true, false, false).await;
    for word in ["one", "two"] {
        let url = attach_url(&mut s, &id, false).await;
        let (mut client, _) = Client::connect(&url, &["v4.channel.k8s.io"]).await.expect("upgrade");
        let ids = open_exec_streams(&mut client, true, true, false).await;
        client.send(stream(&ids, "stdin"), format!("{word}\n").as_bytes(), false).await.unwrap();
        read_until(&mut client, stream(&ids, "stdout"), &format!("echo:{word}")).await;
        // Leaving does not stop the container, and does not close its stdin (stdin_once is off).
        drop(client);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let st = s.rt.container_status(cri::ContainerStatusRequest { container_id: id.clone(), verbose: false });
        let st = st.await.unwrap().into_inner().status.unwrap();
        assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    }
    let log = std::fs::read_to_string(s._logs.path().join("main.log")).expect("log");
    assert!(log.contains("stdout F echo:one") && log.contains("stdout F echo:two"), "{log}");
}

#[tokio::test]
async fn attach_with_stdin_once_ends_with_the_containers_input() {
    require_e2e!();
    let mut s = setup("attachonce", "").await;
    let id = s.container_with("main", "while read line; do echo echo:$line; done; echo bye", true, true, false).await;
    let url = attach_url(&mut s, &id, false).await;
    let (mut client, _) = Client::connect(&url, &["v4.channel.k8s.io"]).await.expect("upgrade");
    let ids = open_exec_streams(&mut client, true, true, false).await;
    client.send(stream(&ids, "stdin"), b"last\n", true).await.unwrap();
    let got = spdy::collect(&mut client, Duration::from_secs(10)).await;
    let out = String::from_utf8_lossy(&got.data[&stream(&ids, "stdout")]).into_owned();
    assert!(out.contains("echo:last") && out.contains("bye"), "{out:?}");
    assert_eq!(status_json(&got.data[&stream(&ids, "error")])["status"], "Success");
}

#[tokio::test]
async fn websocket_attach_to_a_tty_container_resizes_its_terminal() {
    require_e2e!();
    let mut s = setup("attachtty", "").await;
    let script = "while read l; do [ -t 0 ] && echo tty; stty size; echo got:$l; done";
    let id = s.container_with("main", script, true, false, true).await;
    let url = attach_url(&mut s, &id, true).await;
    let mut ws = ws_connect(&url, "v4.channel.k8s.io").await;
    ws.send(Message::Binary([&[4u8][..], br#"{"Width":90,"Height":30}"#].concat().into())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send(Message::Binary([&[0u8][..], b"hi\r"].concat().into())).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Binary(b) = msg
                && b.first() == Some(&1)
            {
                out.extend_from_slice(&b[1..]);
                if String::from_utf8_lossy(&out).contains("got:hi") {
                    break;
                }
            }
        }
    })
    .await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("tty") && out.contains("30 90") && out.contains("got:hi"), "{out:?}");
}

/// rctl on a pty of the test's own, as a person at a terminal would run it.
struct PtyRctl {
    child: std::process::Child,
    master: std::fs::File,
    out: Vec<u8>,
}

impl PtyRctl {
    fn spawn(reefd: &Reefd, args: &[&str]) -> PtyRctl {
        let size = nix::pty::Winsize { ws_row: 24, ws_col: 80, ws_xpixel: 0, ws_ypixel: 0 };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let bin = reef_tests::reefd::reefd_bin().with_file_name("rctl");
        let slave = std::fs::File::from(pty.slave);
        let child = std::process::Command::new(&bin)
            .arg("--endpoint")
            .arg(reefd.socket())
            .args(args)
            .stdin(slave.try_clone().unwrap())
            .stdout(slave.try_clone().unwrap())
            .stderr(slave)
            .spawn()
            .expect("run rctl");
        let master = std::fs::File::from(pty.master);
        nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).unwrap();
        PtyRctl { child, master, out: Vec::new() }
    }

    fn type_in(&mut self, text: &[u8]) {
        use std::io::Write;
        self.master.write_all(text).expect("type");
    }

    /// Waits until the terminal shows `want`.
    async fn expect(&mut self, want: &str) {
        use std::io::Read;
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&self.out).contains(want) {
            assert!(Instant::now() < deadline, "no {want:?} on the terminal: {:?}", String::from_utf8_lossy(&self.out));
            match self.master.read(&mut buf) {
                Ok(n) if n > 0 => self.out.extend_from_slice(&buf[..n]),
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    async fn exit_code(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = std::io::Read::read(&mut self.master, &mut buf) {
                    self.out.extend_from_slice(&buf[..n]);
                }
                return status.code();
            }
            assert!(Instant::now() < deadline, "rctl did not exit: {:?}", String::from_utf8_lossy(&self.out));
            // Keep reading so rctl never blocks on a full terminal; what it printed is kept for `expect`.
            let mut buf = [0u8; 4096];
            if let Ok(n) = std::io::Read::read(&mut self.master, &mut buf) {
                self.out.extend_from_slice(&buf[..n]);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PtyRctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn rctl_exec_it_runs_a_shell_on_a_terminal_resizes_and_passes_the_exit_code() {
    require_e2e!();
    let mut s = setup("rctlexec", "").await;
    let id = s.container("main", "sleep 1000").await;
    let mut rctl = PtyRctl::spawn(&s.reefd, &["exec", "-it", &id, "sh"]);
    rctl.type_in(b"stty size; echo marker-$((40+2))\r");
    rctl.expect("24 80").await;
    rctl.expect("marker-42").await;
    // The local terminal changes size: SIGWINCH makes rctl pass it on.
    let size = nix::pty::Winsize { ws_row: 33, ws_col: 111, ws_xpixel: 0, ws_ypixel: 0 };
    set_size(&rctl.master, &size);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(rctl.child.id() as i32), nix::sys::signal::Signal::SIGWINCH)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    rctl.type_in(b"stty size\r");
    rctl.expect("33 111").await;
    rctl.type_in(b"exit 5\r");
    assert_eq!(rctl.exit_code().await, Some(5));
}

#[allow(unsafe_code)]
fn set_size(master: &std::fs::File, size: &nix::pty::Winsize) {
    use std::os::fd::AsRawFd;
    // SAFETY: TIOCSWINSZ reads one winsize through the pointer, which points at a live value.
    let ret = unsafe { nix::libc::ioctl(master.as_raw_fd(), nix::libc::TIOCSWINSZ, size as *const nix::pty::Winsize) };
    assert_eq!(ret, 0, "TIOCSWINSZ");
}

#[tokio::test]
async fn rctl_attach_detaches_with_ctrl_p_ctrl_q_and_leaves_the_container_running() {
    require_e2e!();
    let mut s = setup("rctlattach", "").await;
    let id = s.container_with("main", "while read l; do echo heard:$l; done", true, false, true).await;
    let mut rctl = PtyRctl::spawn(&s.reefd, &["attach", &id]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    rctl.type_in(b"hello\r");
    rctl.expect("heard:hello").await;
    rctl.type_in(&[0x10, 0x11]);
    assert_eq!(rctl.exit_code().await, Some(0));
    rctl.expect("read escape sequence").await;
    let st = s.rt.container_status(cri::ContainerStatusRequest { container_id: id.clone(), verbose: false });
    let st = st.await.unwrap().into_inner().status.unwrap();
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32, "detaching leaves it running");
}

#[tokio::test]
async fn rctl_run_it_attaches_before_start_and_rctl_port_forward_carries_tcp() {
    require_e2e!();
    let mut s = setup("rctlrun", "").await;
    let image = s.image.clone();
    let mut rctl =
        PtyRctl::spawn(&s.reefd, &["run", "-it", "--rm", &image, "sh", "-c", "echo first-line; read x; exit 9"]);
    rctl.expect("first-line").await;
    rctl.type_in(b"bye\r");
    assert_eq!(rctl.exit_code().await, Some(9));

    let id = s.container("server", ECHO_SERVER).await;
    wait_listening(&mut s, &id).await;
    let local = reef_tests::free_port();
    let bin = reef_tests::reefd::reefd_bin().with_file_name("rctl");
    let mut pf = std::process::Command::new(&bin)
        .arg("--endpoint")
        .arg(s.reefd.socket())
        .args(["port-forward", &s.pod, &format!("{local}:8080")])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("rctl port-forward");
    let mut answer = String::new();
    for _ in 0..100 {
        if let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", local)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            tcp.write_all(b"through-rctl\n").await.unwrap();
            let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut answer)).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = pf.kill();
    let _ = pf.wait();
    assert_eq!(answer, "got:through-rctl\n");
}

#[tokio::test]
async fn exec_into_a_pod_sharing_one_pid_namespace_sees_its_other_containers() {
    require_e2e!();
    let mut s = setup_pod("sharedexec", "", true, false).await;
    s.container("server", "exec sleep 12345").await;
    let id = s.container("main", "exec sleep 1000").await;
    let url = s.exec_url(&id, &["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"], false, false).await;
    let (mut client, _) = Client::connect(&url, &["v4.channel.k8s.io"]).await.expect("upgrade");
    let ids = open_exec_streams(&mut client, false, true, false).await;
    let got = spdy::collect(&mut client, Duration::from_secs(10)).await;
    let out =
        String::from_utf8_lossy(got.data.get(&stream(&ids, "stdout")).map(|d| &d[..]).unwrap_or_default()).into_owned();
    assert!(out.contains("sleep 12345") && out.contains("sleep 1000"), "{out:?}");
    assert_eq!(status_json(&got.data[&stream(&ids, "error")])["status"], "Success");
}

#[tokio::test]
async fn port_forward_to_a_host_network_pod_reaches_the_nodes_loopback() {
    require_e2e!();
    let mut s = setup_pod("hostpf", "", false, true).await;
    let port = reef_tests::free_port();
    let script = format!("printf 'read x; echo host:$x\\n' > /tmp/h; nc -ll -p {port} -e sh /tmp/h");
    let id = s.container("server", &script).await;
    wait_listening_on(&mut s, &id, port).await;
    let url = port_forward_url(&mut s).await;
    let mut ws = ws_connect(&format!("{url}?port={port}"), "v4.channel.k8s.io").await;
    ws.send(Message::Binary([&[0u8][..], b"node\n"].concat().into())).await.unwrap();
    let mut data = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(Message::Binary(b))) = ws.next().await {
            if b.first() == Some(&0) {
                data.extend_from_slice(&b[1..]);
                if data.ends_with(b"\n") && data.len() > 2 {
                    break;
                }
            }
        }
    })
    .await;
    assert_eq!(&data[..2], &port.to_le_bytes());
    assert_eq!(String::from_utf8_lossy(&data[2..]), "host:node\n");
}

#[tokio::test]
async fn with_a_certificate_the_streaming_server_speaks_only_tls() {
    require_e2e!();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let extra = format!("[streaming]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n", cert.display(), key.display());
    let mut s = setup("tls", &extra).await;
    let id = s.container("main", "sleep 1000").await;
    let url = s.exec_url(&id, &["true"], false, false).await;
    let rest = url.strip_prefix("https://").unwrap_or_else(|| panic!("an https URL: {url}"));
    let addr = &rest[..rest.find('/').unwrap()];

    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    roots.add(rustls::pki_types::CertificateDer::from_pem_file(&cert).unwrap()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("TLS handshake with the streaming server");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tls.write_all(format!("GET /exec/not-a-token HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_string(&mut reply)).await;
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");

    // Plain HTTP on the TLS port gets nothing served.
    let (_, plain) = spdy::request(&format!("http://{addr}/exec/not-a-token"), "GET", &[]).await;
    assert_ne!(plain.status, 404);
}
