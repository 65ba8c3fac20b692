//! The "outside world" of network tests: a network namespace of the test's own, wired to the host by a veth pair
//! with addresses from 198.18.0.0/15 (benchmarking space, routed nowhere but on this machine). The host end is
//! `host_ip`, the far end `outside_ip`; over IPv6 `host_ip6` and `outside_ip6`, from the documentation prefix
//! 2001:db8::/32 (routed nowhere either). Everything is removed on drop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub struct Outside {
    pub name: String,
    pub host_veth: String,
    pub host_ip: Ipv4Addr,
    pub outside_ip: Ipv4Addr,
    pub host_ip6: Ipv6Addr,
    pub outside_ip6: Ipv6Addr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).stderr(Stdio::piped()).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Outside {
    pub fn create() -> Outside {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let k = (pid.wrapping_mul(7).wrapping_add(n)) % 512;
        let (b, c) = (18 + k / 256, k % 256);
        let o = Outside {
            name: format!("reef-ow-{pid}-{n}"),
            host_veth: format!("ow{pid:x}n{n}"),
            host_ip: Ipv4Addr::new(198, b as u8, c as u8, 1),
            outside_ip: Ipv4Addr::new(198, b as u8, c as u8, 2),
            host_ip6: Ipv6Addr::new(0x2001, 0xdb8, (pid & 0xffff) as u16, n as u16, 0, 0, 0, 1),
            outside_ip6: Ipv6Addr::new(0x2001, 0xdb8, (pid & 0xffff) as u16, n as u16, 0, 0, 0, 2),
        };
        ip(&["netns", "add", &o.name]);
        ip(&["-n", &o.name, "link", "set", "lo", "up"]);
        ip(&["link", "add", &o.host_veth, "type", "veth", "peer", "name", "eth0", "netns", &o.name]);
        ip(&["addr", "add", &format!("{}/24", o.host_ip), "dev", &o.host_veth]);
        ip(&["link", "set", &o.host_veth, "up"]);
        ip(&["-n", &o.name, "addr", "add", &format!("{}/24", o.outside_ip), "dev", "eth0"]);
        ip(&["-n", &o.name, "link", "set", "eth0", "up"]);
        // nodad: usable at once, no second of tentative state.
        ip(&["-6", "addr", "add", &format!("{}/64", o.host_ip6), "dev", &o.host_veth, "nodad"]);
        ip(&["-n", &o.name, "-6", "addr", "add", &format!("{}/64", o.outside_ip6), "dev", "eth0", "nodad"]);
        o
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// Runs `f` on a thread inside the outside namespace (only that thread moves).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
        in_netns(&self.path(), f)
    }

    /// Sends `payload` to `to` from the outside until an answer comes back (5 tries); the answer and its source.
    pub fn udp_exchange(&self, to: SocketAddr, payload: &'static [u8]) -> Option<(Vec<u8>, SocketAddr)> {
        self.run(move || {
            let s = UdpSocket::bind("0.0.0.0:0").expect("udp socket");
            s.set_read_timeout(Some(Duration::from_millis(400))).expect("timeout");
            let mut buf = [0u8; 1500];
            for _ in 0..5 {
                let _ = s.send_to(payload, to);
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    return Some((buf[..n].to_vec(), from));
                }
            }
            None
        })
        .join()
        .expect("udp exchange")
    }

    /// Listens on `outside_ip:port` and returns the address of the first peer that connects within `timeout`.
    pub fn accept_one(&self, port: u16, timeout: Duration) -> std::thread::JoinHandle<Option<SocketAddr>> {
        self.accept_one_at(IpAddr::V4(self.outside_ip), port, timeout)
    }

    /// Like `accept_one`, on `outside_ip6`.
    pub fn accept_one6(&self, port: u16, timeout: Duration) -> std::thread::JoinHandle<Option<SocketAddr>> {
        self.accept_one_at(IpAddr::V6(self.outside_ip6), port, timeout)
    }

    fn accept_one_at(&self, ip: IpAddr, port: u16, timeout: Duration) -> std::thread::JoinHandle<Option<SocketAddr>> {
        let addr = SocketAddr::from((ip, port));
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = self.run(move || {
            let listener = TcpListener::bind(addr).expect("listen outside");
            listener.set_nonblocking(true).expect("nonblocking");
            let _ = tx.send(());
            let deadline = std::time::Instant::now() + timeout;
            while std::time::Instant::now() < deadline {
                if let Ok((_, peer)) = listener.accept() {
                    return Some(peer);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        });
        let _ = rx.recv_timeout(Duration::from_secs(5));
        handle
    }

    /// An HTTP GET from the outside namespace; the body, or the error.
    pub fn http_get(&self, to: SocketAddr) -> Result<String, String> {
        self.run(move || http_get(to)).join().unwrap_or_else(|_| Err("panicked".into()))
    }
}

/// Runs `f` on a new thread inside the network namespace at `path` (a pod's pin, a test's namespace).
pub fn in_netns<T: Send + 'static>(
    path: &std::path::Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = std::fs::File::open(path).unwrap_or_else(|e| panic!("open netns {}: {e}", path.display()));
    std::thread::spawn(move || {
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("enter the netns");
        f()
    })
}

/// A UDP echo server on `port` inside the network namespace at `path`, for `lifetime`; returns how many datagrams
/// it echoed. Returns once it is bound.
pub fn udp_echo_in(path: &std::path::Path, port: u16, lifetime: Duration) -> std::thread::JoinHandle<usize> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = in_netns(path, move || {
        let s = UdpSocket::bind(("0.0.0.0", port)).expect("bind the echo server");
        s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        let _ = tx.send(());
        let deadline = std::time::Instant::now() + lifetime;
        let (mut buf, mut echoed) = ([0u8; 1500], 0);
        while std::time::Instant::now() < deadline {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
                echoed += 1;
            }
        }
        echoed
    });
    let _ = rx.recv_timeout(Duration::from_secs(5));
    handle
}

/// A minimal HTTP/1.0 GET; returns the body.
pub fn http_get(to: SocketAddr) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3)).map_err(|e| format!("connect {to}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| format!("read from {to}: {e}"))?;
    Ok(out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or(out))
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_veth]).stderr(Stdio::null()).status();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// A host port for a test: outside the ephemeral range, so that the DNAT rule never catches a connection some
/// other test makes to a port the kernel handed out.
pub fn host_port() -> u16 {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    loop {
        let p = 20000
            + ((std::process::id().wrapping_mul(13).wrapping_add(n * 101) + rand::random::<u32>() % 97) % 10000) as u16;
        if TcpListener::bind(("0.0.0.0", p)).is_ok() && UdpSocket::bind(("0.0.0.0", p)).is_ok() {
            return p;
        }
    }
}
