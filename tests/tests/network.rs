//! Pod networking end to end: real pods on the test's own bridge, subnet and nft table, talking to an "outside
//! world" namespace the test creates (198.18.0.0/15, and 2001:db8::/32 over IPv6). Nothing leaves this machine
//! and nothing is left behind.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use reef_tests::cri::pull;
use reef_tests::image::{Compression, ImageBuilder, busybox_layer};
use reef_tests::netns::{Outside, host_port, http_get, udp_echo_in};
use reef_tests::push::push_image;
use reef_tests::reefd::Reefd;
use reef_tests::registry::Registry;
use reef_tests::require_e2e;
use tonic::Code;
use tonic::transport::Channel;

type Rt = RuntimeServiceClient<Channel>;

struct Setup {
    reefd: Reefd,
    _registry: Registry,
    image: String,
    logs: tempfile::TempDir,
}

async fn setup(network: &str) -> Setup {
    setup_on(network, Reefd::start_with_network).await
}

/// Dual stack: the run's own IPv6 subnet too.
async fn setup_dual(network: &str) -> Setup {
    setup_on(network, Reefd::start_dual_stack).await
}

async fn setup_on(network: &str, start: fn(&str, &str) -> Reefd) -> Setup {
    let registry = Registry::start();
    let image = ImageBuilder::new().layer(busybox_layer(), Compression::Gzip).build();
    push_image(&registry.addr(), "busybox", "1", &image, None);
    let reefd = start(&format!("[registry]\ninsecure = [\"{}\"]\n", registry.addr()), network);
    let name = format!("{}/busybox:1", registry.addr());
    pull(&mut reefd.images().await, &name).await.expect("pull busybox");
    Setup { reefd, _registry: registry, image: name, logs: tempfile::tempdir().expect("log dir") }
}

fn tcp(container_port: i32, host_port: u16) -> cri::PortMapping {
    cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port,
        host_port: host_port as i32,
        host_ip: String::new(),
    }
}

fn pod_config(s: &Setup, name: &str, ports: Vec<cri::PortMapping>) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "net".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: s.logs.path().join(name).display().to_string(),
        port_mappings: ports,
        ..Default::default()
    }
}

async fn run_pod(rt: &mut Rt, config: &cri::PodSandboxConfig) -> Result<String, tonic::Status> {
    rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}

async fn pod_status(rt: &mut Rt, id: &str) -> cri::PodSandboxStatus {
    rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false })
        .await
        .expect("PodSandboxStatus")
        .into_inner()
        .status
        .expect("status")
}

async fn pod_ip(rt: &mut Rt, id: &str) -> String {
    pod_status(rt, id).await.network.map(|n| n.ip).unwrap_or_default()
}

/// A running busybox container in the pod, running `script`.
async fn start(rt: &mut Rt, s: &Setup, pod: &str, sandbox: &cri::PodSandboxConfig, script: &str) -> String {
    std::fs::create_dir_all(&sandbox.log_directory).expect("log dir");
    let config = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: "main".into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: s.image.clone(), ..Default::default() }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: "main.log".into(),
        ..Default::default()
    };
    let id = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(sandbox.clone()),
        })
        .await
        .expect("CreateContainer")
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("StartContainer");
    id
}

/// Runs `script` in the container; its exit code and output (stdout then stderr).
async fn exec(rt: &mut Rt, container: &str, script: &str) -> (i32, String) {
    let out = rt
        .exec_sync(cri::ExecSyncRequest {
            container_id: container.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 10,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    (out.exit_code, format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

const HTTPD: &str = "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www";

/// Retries until the server answers (it starts asynchronously) or 10 s pass.
async fn get_eventually(f: impl Fn() -> Result<String, String>) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f() {
            Ok(body) => return Ok(body),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The links on the test's bridge.
fn bridge_ports(reefd: &Reefd) -> Vec<String> {
    sh("ip", &["-o", "link", "show", "master", &reefd.net.bridge])
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n).to_string()))
        .collect()
}

fn leases(reefd: &Reefd) -> Vec<String> {
    std::fs::read_dir(reefd.root().join("network/leases"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

fn table(reefd: &Reefd) -> String {
    sh("nft", &["list", "table", "inet", &reefd.net.nft_table])
}

async fn stop_and_remove(rt: &mut Rt, id: &str) {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id.into() }).await.expect("StopPodSandbox");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id.into() }).await.expect("RemovePodSandbox");
}

/// Veths are deleted in the background after StopPodSandbox (the address and the lease go at once).
fn wait_no_bridge_ports(reefd: &Reefd) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ports = bridge_ports(reefd);
        if ports.is_empty() || Instant::now() > deadline {
            return ports;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_nothing_left(reefd: &Reefd) {
    assert_eq!(wait_no_bridge_ports(reefd), Vec::<String>::new(), "no veth left on the bridge");
    assert_eq!(leases(reefd), Vec::<String>::new(), "no lease left");
    let deadline = Instant::now() + Duration::from_secs(5);
    // No hostPort rule of either family.
    let has_dnat = || ["dnat ip to", "dnat ip6 to"].iter().any(|d| table(reefd).contains(d));
    while has_dnat() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!has_dnat(), "no hostPort rule left: {}", table(reefd));
    let dir = reefd.root().parent().map(|p| p.to_path_buf()).unwrap_or_default();
    assert_eq!(reef_tests::pod::mounts_under(&dir), 0, "no pinned namespace left");
}

#[tokio::test]
async fn pods_reach_the_outside_masqueraded_serve_host_ports_and_each_other() {
    require_e2e!();
    let s = setup("mtu = 1400\n").await;
    let outside = Outside::create();
    let mut rt = s.reefd.runtime().await;
    let hp = host_port();

    let web_config = pod_config(&s, "web", vec![tcp(8080, hp)]);
    let web = run_pod(&mut rt, &web_config).await.expect("RunPodSandbox");
    let web_ip = pod_ip(&mut rt, &web).await;
    assert!(web_ip.starts_with(s.reefd.net.subnet.rsplit_once('.').unwrap().0), "{web_ip} in {}", s.reefd.net.subnet);
    let server = start(&mut rt, &s, &web, &web_config, HTTPD).await;

    let (_, hosts) = exec(&mut rt, &server, "cat /etc/hosts").await;
    assert!(hosts.contains(&format!("{web_ip}\tweb")), "/etc/hosts names the pod's IP: {hosts}");
    let (_, link) = exec(&mut rt, &server, "ip -o link show eth0; ip route").await;
    assert!(link.contains("mtu 1400") && link.contains(&format!("default via {}", s.reefd.net.gateway())), "{link}");

    // hostPort from another host, from the node itself through 127.0.0.1 and through its own address.
    let from_outside = SocketAddr::from((outside.host_ip, hp));
    let body = get_eventually(|| outside.http_get(from_outside)).await.expect("hostPort from outside");
    assert_eq!(body.trim(), "hello-from-web");
    let local: SocketAddr = format!("127.0.0.1:{hp}").parse().unwrap();
    assert_eq!(get_eventually(|| http_get(local)).await.expect("hostPort via 127.0.0.1").trim(), "hello-from-web");
    assert_eq!(
        get_eventually(|| http_get(from_outside)).await.expect("hostPort via the node's IP").trim(),
        "hello-from-web"
    );
    // Host to pod, directly.
    let direct: SocketAddr = format!("{web_ip}:8080").parse().unwrap();
    assert_eq!(get_eventually(|| http_get(direct)).await.expect("host to pod").trim(), "hello-from-web");

    // A connection from a pod to the outside world arrives from the node's address (SNAT).
    let client_config = pod_config(&s, "client", vec![]);
    let client = run_pod(&mut rt, &client_config).await.expect("RunPodSandbox client");
    let shell = start(&mut rt, &s, &client, &client_config, "exec sleep 300").await;
    let accepted = outside.accept_one(9000, Duration::from_secs(10));
    let (code, out) = exec(&mut rt, &shell, &format!("echo hi | nc {} 9000", outside.outside_ip)).await;
    assert_eq!(code, 0, "{out}");
    let peer = accepted.join().unwrap().expect("the outside saw a connection");
    assert_eq!(peer.ip(), std::net::IpAddr::V4(outside.host_ip), "masqueraded behind the node's address");

    // Pod to pod, and a pod to its neighbour's hostPort through the node (hairpin through the bridge).
    let (code, out) = exec(&mut rt, &shell, &format!("wget -qO- http://{web_ip}:8080/")).await;
    assert_eq!((code, out.trim()), (0, "hello-from-web"));
    let (code, out) = exec(&mut rt, &shell, &format!("wget -qO- http://{}:{hp}/", outside.host_ip)).await;
    assert_eq!((code, out.trim()), (0, "hello-from-web"), "a pod reaching a hostPort through the node");
    let (code, out) = exec(&mut rt, &server, &format!("wget -qO- http://{}:{hp}/", outside.host_ip)).await;
    assert_eq!((code, out.trim()), (0, "hello-from-web"), "a pod reaching its own hostPort (hairpin)");

    assert_eq!(bridge_ports(&s.reefd).len(), 2);
    for pod in [&web, &client] {
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.to_string() }).await.expect("stop");
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.to_string() }).await.expect("stop again");
        assert_eq!(pod_ip(&mut rt, pod).await, "", "a stopped pod has no IP");
    }
    assert!(http_get(local).is_err(), "the hostPort went with the pod");
    for pod in [&web, &client] {
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod.to_string() }).await.expect("remove");
    }
    assert_nothing_left(&s.reefd);
}

#[tokio::test]
async fn dual_stack_pods_get_both_families_serve_host_ports_over_v6_and_are_masqueraded() {
    require_e2e!();
    let s = setup_dual("").await;
    let outside = Outside::create();
    let mut rt = s.reefd.runtime().await;
    let hp = host_port();
    let (prefix6, gateway6) = s.reefd.net.prefix6_and_gateway6();

    let web_config = pod_config(&s, "web", vec![tcp(8080, hp)]);
    let web = run_pod(&mut rt, &web_config).await.expect("RunPodSandbox");
    let net = pod_status(&mut rt, &web).await.network.expect("network status");
    assert!(net.ip.starts_with(s.reefd.net.subnet.rsplit_once('.').unwrap().0), "{} is the v4 address", net.ip);
    let extra: Vec<String> = net.additional_ips.iter().map(|i| i.ip.clone()).collect();
    assert_eq!(extra.len(), 1, "one IPv6 address besides the IPv4 one: {extra:?}");
    let web6 = extra[0].clone();
    let in_subnet6 = web6.parse::<std::net::Ipv6Addr>().is_ok_and(|a| a.segments()[..4] == prefix6);
    assert!(in_subnet6, "{web6} in {}", s.reefd.net.subnet6);
    let server = start(&mut rt, &s, &web, &web_config, HTTPD).await;

    let (_, hosts) = exec(&mut rt, &server, "cat /etc/hosts").await;
    assert!(hosts.contains(&format!("{}\tweb\n", net.ip)) && hosts.contains(&format!("{web6}\tweb\n")), "{hosts}");
    let (_, addr) = exec(&mut rt, &server, "ip -6 addr show dev eth0; ip -6 route").await;
    let line = addr.lines().find(|l| l.contains(&format!("{web6}/64"))).unwrap_or_default();
    assert!(!line.is_empty() && !line.contains("tentative"), "usable at once: {addr}");
    assert!(addr.contains(&format!("default via {gateway6}")), "{addr}");

    // The hostPort from another host over IPv6, and host to pod over IPv6 directly.
    let from_outside = SocketAddr::from((outside.host_ip6, hp));
    let body = get_eventually(|| outside.http_get(from_outside)).await.expect("v6 hostPort from outside");
    assert_eq!(body.trim(), "hello-from-web");
    let v4_from_outside = SocketAddr::from((outside.host_ip, hp));
    assert_eq!(outside.http_get(v4_from_outside).expect("v4 hostPort too").trim(), "hello-from-web");
    let direct: SocketAddr = format!("[{web6}]:8080").parse().unwrap();
    assert_eq!(get_eventually(|| http_get(direct)).await.expect("host to pod over v6").trim(), "hello-from-web");
    let rules = table(&s.reefd);
    assert!(rules.contains("dnat ip6 to") && rules.contains("dnat ip to"), "one inet table, both families: {rules}");

    // Pod to pod over IPv6, and a pod's IPv6 connection out arrives from the node's IPv6 address (SNAT).
    let client_config = pod_config(&s, "client", vec![]);
    let client = run_pod(&mut rt, &client_config).await.expect("RunPodSandbox client");
    let shell = start(&mut rt, &s, &client, &client_config, "exec sleep 300").await;
    let (code, out) = exec(&mut rt, &shell, &format!("wget -qO- http://[{web6}]:8080/")).await;
    assert_eq!((code, out.trim()), (0, "hello-from-web"), "pod to pod over v6");
    let accepted = outside.accept_one6(9000, Duration::from_secs(10));
    let (code, out) = exec(&mut rt, &shell, &format!("echo hi | nc {} 9000", outside.outside_ip6)).await;
    assert_eq!(code, 0, "{out}");
    let peer = accepted.join().unwrap().expect("the outside saw a v6 connection");
    assert_eq!(peer.ip(), std::net::IpAddr::V6(outside.host_ip6), "masqueraded behind the node's v6 address");

    assert_eq!(leases(&s.reefd).len(), 4, "a v4 and a v6 lease per pod: {:?}", leases(&s.reefd));
    for pod in [&web, &client] {
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.to_string() }).await.expect("stop");
        let net = pod_status(&mut rt, pod).await.network.unwrap_or_default();
        assert!(net.ip.is_empty() && net.additional_ips.is_empty(), "a stopped pod has no IP: {net:?}");
    }
    assert!(outside.http_get(from_outside).is_err(), "the v6 hostPort went with the pod");
    for pod in [&web, &client] {
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod.to_string() }).await.expect("remove");
    }
    assert_nothing_left(&s.reefd);
}

#[tokio::test]
async fn udp_host_ports_work_and_a_taken_host_port_is_refused() {
    require_e2e!();
    let s = setup("").await;
    let outside = Outside::create();
    let mut rt = s.reefd.runtime().await;
    let hp = host_port();
    let udp = cri::PortMapping {
        protocol: cri::Protocol::Udp as i32,
        container_port: 5353,
        host_port: hp as i32,
        host_ip: String::new(),
    };
    let config = pod_config(&s, "dns", vec![udp.clone()]);
    let pod = run_pod(&mut rt, &config).await.expect("RunPodSandbox");
    // busybox has no UDP server, so the test serves UDP from inside the pod's own network namespace.
    let pod_netns = s.reefd.root().parent().unwrap().join("state/pods").join(&pod[..16]).join("ns/net");
    let echo = udp_echo_in(&pod_netns, 5353, Duration::from_secs(3));
    let (answer, from) = outside
        .udp_exchange(SocketAddr::from((outside.host_ip, hp)), b"ping-over-udp")
        .expect("an answer through the hostPort");
    assert_eq!(answer, b"ping-over-udp");
    assert_eq!(from, SocketAddr::from((outside.host_ip, hp)), "the answer comes back from the host port");
    assert!(echo.join().unwrap() >= 1);

    let ports_before = bridge_ports(&s.reefd).len();
    let leases_before = leases(&s.reefd).len();
    let second = pod_config(&s, "dns-2", vec![udp.clone()]);
    let err = run_pod(&mut rt, &second).await.expect_err("the host port is taken");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains(&format!("0.0.0.0:{hp}/udp")) && err.message().contains(&pod), "{}", err.message());
    assert_eq!(bridge_ports(&s.reefd).len(), ports_before, "the refused pod left no veth");
    assert_eq!(leases(&s.reefd).len(), leases_before, "nor a lease");
    // The same number over TCP is another port.
    let tcp_pod = run_pod(&mut rt, &pod_config(&s, "dns-3", vec![tcp(53, hp)])).await.expect("TCP on the same number");
    let mut bad = pod_config(&s, "bad", vec![tcp(80, 0)]);
    bad.port_mappings[0].host_port = 70000;
    assert_eq!(run_pod(&mut rt, &bad).await.unwrap_err().code(), Code::InvalidArgument);

    stop_and_remove(&mut rt, &pod).await;
    stop_and_remove(&mut rt, &tcp_pod).await;
    // Once the holder is gone, the port is free again.
    let again = run_pod(&mut rt, &second).await.expect("the port is free again");
    stop_and_remove(&mut rt, &again).await;
    assert_nothing_left(&s.reefd);
}

#[tokio::test]
async fn a_hundred_pods_get_unique_addresses_and_give_them_back() {
    require_e2e!();
    let s = setup("").await;
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let mut rt = s.reefd.runtime().await;
        let configs: Vec<cri::PodSandboxConfig> =
            (0..25).map(|i| pod_config(&s, &format!("p{worker}-{i}"), vec![])).collect();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for c in configs {
                let id = run_pod(&mut rt, &c).await.expect("RunPodSandbox");
                let ip = pod_ip(&mut rt, &id).await;
                out.push((id, ip));
            }
            out
        }));
    }
    let mut pods = Vec::new();
    for t in tasks {
        pods.extend(t.await.unwrap());
    }
    let ips: HashSet<&String> = pods.iter().map(|(_, ip)| ip).collect();
    assert_eq!(ips.len(), 100, "100 distinct addresses");
    assert!(!ips.contains(&String::new()));
    assert!(!ips.contains(&s.reefd.net.gateway()), "the gateway is never handed out");
    assert_eq!(leases(&s.reefd).len(), 100);
    assert_eq!(bridge_ports(&s.reefd).len(), 100);
    let mut rt = s.reefd.runtime().await;
    for (id, _) in &pods {
        stop_and_remove(&mut rt, id).await;
    }
    assert_nothing_left(&s.reefd);
}

#[tokio::test]
async fn a_sigkill_during_run_pod_sandbox_leaks_nothing_after_a_restart() {
    require_e2e!();
    let mut s = setup("").await;
    for round in 0..6u64 {
        let mut tasks = Vec::new();
        for i in 0..6 {
            let mut rt = s.reefd.runtime().await;
            let c = pod_config(&s, &format!("k{round}-{i}"), vec![tcp(80, host_port())]);
            tasks.push(tokio::spawn(async move { run_pod(&mut rt, &c).await }));
        }
        // Kill at a different point of the setups each round.
        tokio::time::sleep(Duration::from_millis(2 + round * 7)).await;
        s.reefd.kill9();
        for t in tasks {
            let _ = t.await;
        }
        s.reefd.spawn();
    }
    let mut rt = s.reefd.runtime().await;
    let pods = rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await.unwrap().into_inner().items;
    // What survived is whole: every listed pod that is ready has its address, veth and lease.
    for p in &pods {
        if p.state == cri::PodSandboxState::SandboxReady as i32 {
            assert!(!pod_ip(&mut rt, &p.id).await.is_empty(), "a ready pod has an IP");
        }
    }
    let ready = pods.iter().filter(|p| p.state == cri::PodSandboxState::SandboxReady as i32).count();
    assert_eq!(bridge_ports(&s.reefd).len(), ready, "one veth per ready pod, none half-made");
    assert_eq!(leases(&s.reefd).len(), ready, "one lease per ready pod");
    for p in &pods {
        stop_and_remove(&mut rt, &p.id).await;
    }
    assert_nothing_left(&s.reefd);
    assert!(
        std::fs::read_dir(s.reefd.root().join("network/pods")).map(|d| d.count()).unwrap_or(0) == 0,
        "no network record left"
    );
}

#[tokio::test]
async fn host_network_pods_use_the_node_namespace_and_get_no_veth() {
    require_e2e!();
    let s = setup("").await;
    let mut rt = s.reefd.runtime().await;
    let mut config = pod_config(&s, "hostnet", vec![]);
    config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = run_pod(&mut rt, &config).await.expect("RunPodSandbox");
    assert_eq!(pod_ip(&mut rt, &pod).await, "");
    assert!(bridge_ports(&s.reefd).is_empty(), "no veth for a host-network pod");
    let c = start(&mut rt, &s, &pod, &config, "exec sleep 300").await;
    let (_, links) = exec(&mut rt, &c, "cat /proc/net/dev").await;
    assert!(links.contains(&s.reefd.net.bridge), "the container sees the node's links: {links}");
    stop_and_remove(&mut rt, &pod).await;
    assert_nothing_left(&s.reefd);
}

#[tokio::test]
async fn network_ready_reflects_the_bridge() {
    require_e2e!();
    let s = setup("").await;
    let mut rt = s.reefd.runtime().await;
    let ready = |st: cri::StatusResponse| {
        st.status.unwrap().conditions.into_iter().find(|c| c.r#type == "NetworkReady").expect("NetworkReady")
    };
    let c = ready(rt.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner());
    assert!(c.status, "{c:?}");
    sh("ip", &["link", "del", &s.reefd.net.bridge]);
    let c = ready(rt.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner());
    assert!(!c.status && c.reason == "NetworkPluginNotReady" && c.message.contains(&s.reefd.net.bridge), "{c:?}");
    // The next pod brings the bridge back.
    let pod = run_pod(&mut rt, &pod_config(&s, "revive", vec![])).await.expect("RunPodSandbox");
    assert!(ready(rt.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner()).status);
    stop_and_remove(&mut rt, &pod).await;
    assert_nothing_left(&s.reefd);
}

/// A CNI plugin of the test's own, first in the list: it records what it was given (stdin per command) and
/// answers ADD with an empty result, so the real plugins after it decide the pod's address.
fn recording_plugin(bin: &std::path::Path, out: &std::path::Path) {
    let script = format!(
        "#!/bin/sh\ncat > {out}/$CNI_COMMAND.json\necho \"$CNI_CONTAINERID $CNI_IFNAME $CNI_NETNS\" > {out}/$CNI_COMMAND.env\n[ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\"}}'\nexit 0\n",
        out = out.display()
    );
    let path = bin.join("record");
    std::fs::write(&path, script).expect("write the plugin");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
}

#[tokio::test]
async fn cni_mode_runs_the_plugins_and_deletes_even_after_a_restart() {
    require_e2e!();
    let cni = tempfile::tempdir().expect("cni dir");
    let (conf, bin, ipam, record) =
        (cni.path().join("net.d"), cni.path().join("bin"), cni.path().join("ipam"), cni.path().join("record"));
    for d in [&conf, &bin, &record] {
        std::fs::create_dir_all(d).unwrap();
    }
    recording_plugin(&bin, &record);
    let network = format!(
        "mode = \"cni\"\ncni_conf_dir = \"{}\"\ncni_bin_dirs = [\"{}\", \"/usr/lib/cni\", \"/opt/cni/bin\"]\n",
        conf.display(),
        bin.display()
    );
    let mut s = setup(&network).await;
    // The plugins' bridge and subnet are the harness's unique ones, so the harness removes the bridge on drop.
    let list = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "reef-e2e",
        "plugins": [
            {"type": "record", "capabilities": {"portMappings": true}},
            {"type": "bridge", "bridge": s.reefd.net.bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": s.reefd.net.subnet}]], "dataDir": ipam.display().to_string()}}
        ]
    });
    let mut rt = s.reefd.runtime().await;
    let ready = |st: cri::StatusResponse| {
        st.status.unwrap().conditions.into_iter().find(|c| c.r#type == "NetworkReady").unwrap()
    };
    let c = ready(rt.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner());
    assert!(!c.status && c.message.contains("no CNI network config"), "no config yet: {c:?}");
    std::fs::write(conf.join("10-reef.conflist"), list.to_string()).unwrap();
    assert!(ready(rt.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner()).status);

    let config = pod_config(&s, "cni-pod", vec![tcp(80, 18080)]);
    let pod = run_pod(&mut rt, &config).await.expect("RunPodSandbox in CNI mode");
    let ip = pod_ip(&mut rt, &pod).await;
    assert!(
        ip.starts_with(s.reefd.net.subnet.rsplit_once('.').unwrap().0),
        "{ip} from host-local in {}",
        s.reefd.net.subnet
    );
    let add: serde_json::Value = serde_json::from_slice(&std::fs::read(record.join("ADD.json")).unwrap()).unwrap();
    assert_eq!(
        add["runtimeConfig"]["portMappings"],
        serde_json::json!([{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}])
    );
    assert_eq!(add["name"], "reef-e2e");
    let env = std::fs::read_to_string(record.join("ADD.env")).unwrap();
    assert!(env.starts_with(&format!("{pod} eth0 ")), "{env}");
    assert!(ipam.join("reef-e2e").join(&ip).exists(), "host-local holds the lease");
    let c = start(&mut rt, &s, &pod, &config, "exec sleep 300").await;
    let (_, addr) = exec(&mut rt, &c, "ip -o addr show eth0; cat /etc/hosts").await;
    assert!(addr.contains(&format!("inet {ip}/")) && addr.contains(&format!("{ip}\tcni-pod")), "{addr}");
    let direct = exec(&mut rt, &c, &format!("ping -c1 -W2 {}", s.reefd.net.gateway())).await;
    assert_eq!(direct.0, 0, "the pod reaches the plugin's gateway: {}", direct.1);

    // DEL after a restart runs with what ADD saw, whatever the config says now.
    std::fs::remove_file(conf.join("10-reef.conflist")).unwrap();
    s.reefd.restart();
    let mut rt = s.reefd.runtime().await;
    stop_and_remove(&mut rt, &pod).await;
    let del: serde_json::Value = serde_json::from_slice(&std::fs::read(record.join("DEL.json")).unwrap()).unwrap();
    assert_eq!(del["prevResult"]["ips"][0]["address"].as_str().unwrap().split('/').next(), Some(ip.as_str()), "{del}");
    assert!(!ipam.join("reef-e2e").join(&ip).exists(), "host-local released the address");
    assert!(wait_no_bridge_ports(&s.reefd).is_empty(), "the plugin removed the veth");
    assert!(std::fs::read_dir(s.reefd.root().join("network/pods")).map(|d| d.count()).unwrap_or(0) == 0);
}

#[tokio::test]
async fn status_and_lists_answer_at_once_while_a_cni_plugin_hangs() {
    require_e2e!();
    let cni = tempfile::tempdir().expect("cni dir");
    let (conf, bin) = (cni.path().join("net.d"), cni.path().join("bin"));
    for d in [&conf, &bin] {
        std::fs::create_dir_all(d).unwrap();
    }
    // ADD hangs for a while, then fails; DEL (the failed pod's undo) answers at once.
    let plugin = bin.join("slow");
    std::fs::write(&plugin, "#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] && { sleep 4; exit 1; }\nexit 0\n")
        .unwrap();
    std::fs::set_permissions(&plugin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let list = serde_json::json!({"cniVersion": "1.0.0", "name": "slow", "plugins": [{"type": "slow"}]});
    std::fs::write(conf.join("10-slow.conflist"), list.to_string()).unwrap();
    let network = format!(
        "mode = \"cni\"\ncni_conf_dir = \"{}\"\ncni_bin_dirs = [\"{}\"]\ncni_timeout_seconds = 20\n",
        conf.display(),
        bin.display()
    );
    let s = setup(&network).await;
    let rt = s.reefd.runtime().await;
    // More hanging setups than reefd has async workers.
    let hanging: Vec<_> = (0..3)
        .map(|i| {
            let (mut rt, config) = (rt.clone(), pod_config(&s, &format!("hang{i}"), vec![]));
            tokio::spawn(async move { run_pod(&mut rt, &config).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut rt = rt.clone();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        rt.status(cri::StatusRequest { verbose: false }).await.expect("Status");
        rt.update_runtime_config(cri::UpdateRuntimeConfigRequest {
            runtime_config: Some(cri::RuntimeConfig {
                network_config: Some(cri::NetworkConfig { pod_cidr: s.reefd.net.subnet.clone() }),
            }),
        })
        .await
        .expect("UpdateRuntimeConfig");
        rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await.expect("ListPodSandbox");
        let took = started.elapsed();
        assert!(took < Duration::from_millis(500), "Status, UpdateRuntimeConfig and a list took {took:?}");
    }
    for h in hanging {
        assert!(h.await.unwrap().is_err(), "the plugin fails the pod");
    }
    let listed = rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await.unwrap().into_inner();
    assert!(listed.items.is_empty(), "{:?}", listed.items);
}
