//! A reefd of the test's own: its own root, state dir, socket and config, killed and removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use reef_api::v1::reef_client::ReefClient;
use tempfile::TempDir;
use tonic::transport::Channel;

/// The cgroup driver a test's reefd runs with: `REEF_TEST_CGROUP_DRIVER` (`systemd`, or `cgroupfs`, the default).
/// Under systemd each test's reefd gets a slice of its own as its cgroup parent, stopped (scopes and all) when
/// the test ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

impl CgroupDriver {
    pub fn from_env() -> CgroupDriver {
        match std::env::var("REEF_TEST_CGROUP_DRIVER").as_deref() {
            Err(_) | Ok("") | Ok("cgroupfs") => CgroupDriver::Cgroupfs,
            Ok("systemd") => CgroupDriver::Systemd,
            Ok(other) => panic!("REEF_TEST_CGROUP_DRIVER={other:?}: expected systemd or cgroupfs"),
        }
    }
}

pub struct Reefd {
    /// A tmpfs mounted at the root dir, for disk-full tests; unmounted on drop.
    small_root: bool,
    pub driver: CgroupDriver,
    dir: TempDir,
    child: Option<Child>,
    /// TOML appended to the generated config (registry settings and the like).
    extra: String,
    /// This reefd's own bridge, subnet and nft table, removed on drop.
    pub net: NetNames,
    /// Keys added to the generated `[network]` table (mode, CNI dirs…).
    network_extra: String,
}

/// Network names no other test (in this process or another) uses at the same time.
#[derive(Debug, Clone)]
pub struct NetNames {
    pub bridge: String,
    pub nft_table: String,
    pub subnet: String,
    /// A ULA /64 of its own, for dual-stack tests (`Reefd::start_dual_stack`); never overlaps the host's fd00::/64.
    pub subnet6: String,
}

impl NetNames {
    pub fn unique() -> NetNames {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let pid = std::process::id();
        // 10.128.0.0/9 in /24s, spread by pid and counter: disjoint from each other test's and from the host's.
        let k = (pid.wrapping_mul(37).wrapping_add(n)) % (127 * 256);
        NetNames {
            bridge: format!("rb{pid:x}n{n}"),
            nft_table: format!("reef_e2e_{pid}_{n}"),
            subnet: format!("10.{}.{}.0/24", 128 + k / 256, k % 256),
            subnet6: format!("{}/64", std::net::Ipv6Addr::new(0xfd5e, (pid & 0xffff) as u16, n as u16, 0, 0, 0, 0, 0)),
        }
    }

    /// The bridge's address (the pods' gateway).
    pub fn gateway(&self) -> String {
        let base = self.subnet.split('/').next().unwrap_or_default();
        base.rsplit_once('.').map(|(a, _)| format!("{a}.1")).unwrap_or_default()
    }

    /// The first four groups of `subnet6`, which every pod IPv6 address shares, and the bridge's IPv6 address.
    pub fn prefix6_and_gateway6(&self) -> ([u16; 4], std::net::Ipv6Addr) {
        let net: std::net::Ipv6Addr =
            self.subnet6.split('/').next().and_then(|a| a.parse().ok()).unwrap_or(std::net::Ipv6Addr::UNSPECIFIED);
        let g = net.segments();
        ([g[0], g[1], g[2], g[3]], std::net::Ipv6Addr::new(g[0], g[1], g[2], g[3], 0, 0, 0, 1))
    }

    /// Removes the bridge (and with it every veth still on it) and the nft table.
    pub fn remove(&self) {
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).stderr(Stdio::null()).status();
        let _ = Command::new("nft").args(["delete", "table", "inet", &self.nft_table]).stderr(Stdio::null()).status();
    }
}

/// The reefd binary: `$REEFD_BIN`, else `<target>/debug/reefd` (build it first: `cargo build --bins`).
pub fn reefd_bin() -> PathBuf {
    if let Ok(p) = std::env::var("REEFD_BIN") {
        return p.into();
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug/reefd")
}

impl Reefd {
    /// Starts reefd with `extra` TOML appended to a config that puts every path in a fresh temporary directory.
    pub fn start(extra: &str) -> Reefd {
        Reefd::start_with_network(extra, "")
    }

    /// Like `start`, with `network` TOML keys added to the `[network]` table the harness writes.
    pub fn start_with_network(extra: &str, network: &str) -> Reefd {
        let dir = tempfile::Builder::new().prefix("reef-e2e-").tempdir().expect("reefd dir");
        Reefd::launch(dir, extra, NetNames::unique(), network.to_string(), false)
    }

    /// Like `start_with_network`, with the run's own IPv6 subnet configured too (dual stack).
    pub fn start_dual_stack(extra: &str, network: &str) -> Reefd {
        let net = NetNames::unique();
        let network = format!("subnet6 = \"{}\"\n{network}", net.subnet6);
        let dir = tempfile::Builder::new().prefix("reef-e2e-").tempdir().expect("reefd dir");
        Reefd::launch(dir, extra, net, network, false)
    }

    /// Like `start`, with the root dir on a tmpfs of `size` (e.g. "4m"), so that the disk fills up.
    pub fn start_with_small_root(extra: &str, size: &str) -> Reefd {
        let dir = tempfile::Builder::new().prefix("reef-e2e-").tempdir().expect("reefd dir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("root dir");
        nix::mount::mount(
            Some("tmpfs"),
            &root,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .expect("mount a tmpfs root");
        Reefd::launch(dir, extra, NetNames::unique(), String::new(), true)
    }

    /// Writes the config into `dir` and starts reefd on it, with the cgroup driver the environment asks for.
    fn launch(dir: tempfile::TempDir, extra: &str, net: NetNames, network_extra: String, small_root: bool) -> Reefd {
        let mut reefd = Reefd {
            small_root,
            driver: CgroupDriver::from_env(),
            dir,
            child: None,
            extra: extra.to_string(),
            net,
            network_extra,
        };
        reefd.write_config();
        reefd.spawn();
        reefd
    }

    fn write_config(&self) {
        let d = self.dir.path();
        let config = format!(
            "root_dir = \"{}\"\nstate_dir = \"{}\"\nsocket = \"{}\"\nlog_level = \"debug\"\ncgroup_parent = \"{}\"\n\
             cgroup_driver = \"{}\"\n{}\n\
             [network]\nbridge = \"{}\"\nsubnet = \"{}\"\nnft_table = \"{}\"\n{}\n",
            self.root().display(),
            d.join("state").display(),
            self.socket().display(),
            self.cgroup_parent(),
            match self.driver {
                CgroupDriver::Cgroupfs => "cgroupfs",
                CgroupDriver::Systemd => "systemd",
            },
            self.extra,
            self.net.bridge,
            self.net.subnet,
            self.net.nft_table,
            self.network_extra,
        );
        std::fs::write(self.config_path(), config).expect("write reefd config");
    }

    /// The test's own cgroup parent, removed with everything in it when the test ends: a directory below the
    /// hierarchy's root under cgroupfs, a top-level slice (`reefe2e<unique>.slice`) under systemd.
    pub fn cgroup_parent(&self) -> String {
        let name =
            self.dir.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "reef-e2e".into());
        match self.driver {
            CgroupDriver::Cgroupfs => name,
            // A dash is a level of systemd's slice tree: none in the name, so the slice is a child of the root.
            CgroupDriver::Systemd => {
                let unique = name.trim_start_matches("reef-e2e-").replace(|c: char| !c.is_ascii_alphanumeric(), "");
                format!("reefe2e{unique}.slice")
            }
        }
    }

    /// A pod's cgroup parent below the test's own, in the form kubelet sends for this driver: `/<parent>/<pod>`
    /// under cgroupfs, the systemd path `/<parent>.slice/<parent>-<pod>.slice` under systemd.
    pub fn pod_cgroup_parent(&self, pod: &str) -> String {
        let parent = self.cgroup_parent();
        match self.driver {
            CgroupDriver::Cgroupfs => format!("/{parent}/{pod}"),
            CgroupDriver::Systemd => {
                let stem = parent.trim_end_matches(".slice");
                format!("/{parent}/{stem}-{}.slice", pod.replace('-', "_"))
            }
        }
    }

    /// A container's cgroup, relative to the hierarchy's root, for a pod whose cgroup parent is `pod_parent`
    /// (`pod_cgroup_parent`, or `cgroup_parent` for a pod without one): `reef-<id>`, or `reef-<id>.scope`.
    pub fn container_cgroup(&self, pod_parent: &str, id: &str) -> String {
        let parent = pod_parent.trim_matches('/');
        match self.driver {
            CgroupDriver::Cgroupfs => format!("{parent}/reef-{id}"),
            CgroupDriver::Systemd => format!("{parent}/reef-{id}.scope"),
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("state/reef.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("reefd.log")).unwrap_or_default()
    }

    /// Starts reefd against the existing directories and waits for its socket to answer.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("reefd.log"))
            .expect("reefd log");
        let child = Command::new(reefd_bin())
            .arg("--config")
            .arg(self.config_path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", reefd_bin().display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("reefd exited at start with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("reefd did not listen on {} in time:\n{}", self.socket().display(), self.log());
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// SIGTERM, and the exit status once reefd is gone.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        child.wait().ok()
    }

    pub async fn channel(&self) -> Channel {
        connect(&self.socket()).await
    }

    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    pub async fn reef(&self) -> ReefClient<Channel> {
        ReefClient::new(self.channel().await)
    }

    /// Entries of `<root>/tmp`: work in progress that must not outlive a pull.
    pub fn leftover_tmp(&self) -> Vec<String> {
        match std::fs::read_dir(self.root().join("tmp")) {
            Ok(entries) => entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Stored blobs (manifests, indexes, configs).
    pub fn blob_files(&self) -> Vec<String> {
        match std::fs::read_dir(self.root().join("blobs/sha256")) {
            Ok(entries) => entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Unpacked layer directories.
    pub fn layer_dirs(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.root().join("layers")) {
            Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Kills the processes a test's reefd left running (pod monitors and their containers, found by the test's
/// directory on their command line) and unmounts what is mounted below that directory: a failed test must not
/// leak onto the machine.
fn clean_up_after(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else { continue };
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> =
        mountinfo.lines().filter_map(|l| l.split(' ').nth(4)).filter(|m| m.starts_with(&needle)).collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Kills every process in a cgroup tree (in each v1 hierarchy, or the v2 tree) and removes the tree, deepest
/// first: containers outlive a killed monitor, and their cgroup is how to find them.
pub fn remove_cgroup_tree(name: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else { return };
    let roots: Vec<PathBuf> =
        hierarchies.flatten().map(|h| h.path()).chain([PathBuf::from("/sys/fs/cgroup")]).collect();
    for _ in 0..50 {
        let mut busy = false;
        for root in &roots {
            let mut dirs = Vec::new();
            let mut stack = vec![root.join(name)];
            while let Some(d) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&d) else { continue };
                for pid in std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default().lines() {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        let _ =
                            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                        busy = true;
                    }
                }
                stack.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
                dirs.push(d);
            }
            for d in dirs.into_iter().rev() {
                let _ = std::fs::remove_dir(&d);
            }
        }
        if !busy {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops a test's slice under the systemd driver, and with it every scope and slice below it (their processes
/// killed), then clears what systemd still lists as failed: a failed test must leave no unit behind.
pub fn stop_slice(slice: &str) {
    let quiet = |args: &[&str]| {
        let _ = Command::new("systemctl").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
    };
    quiet(&["stop", slice]);
    // The scopes of containers that ended badly stay listed as failed; none but Reef's are named so.
    quiet(&["reset-failed", slice, "reef-*.scope"]);
}

impl Drop for Reefd {
    fn drop(&mut self) {
        self.kill9();
        clean_up_after(self.dir.path());
        if self.driver == CgroupDriver::Systemd {
            stop_slice(&self.cgroup_parent());
        }
        remove_cgroup_tree(&self.cgroup_parent());
        self.net.remove();
        if self.small_root {
            let _ = nix::mount::umount2(&self.root(), nix::mount::MntFlags::MNT_DETACH);
        }
        if std::thread::panicking() {
            eprintln!("--- reefd log ---\n{}", self.log());
        }
    }
}

pub async fn connect(socket: &Path) -> Channel {
    reef_api::connect_unix(reef_api::unix_endpoint(), socket).await.expect("connect to reefd")
}
