//! A TCP proxy in front of a registry that can misbehave on purpose: cut every connection after N response
//! bytes (a registry dying mid-layer), flip one byte (a corrupted transfer), or trickle (a pull slow enough to be
//! killed halfway). It also counts the response bytes it forwarded, to check that a layer was fetched once.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

const NEVER: u64 = u64::MAX;

#[derive(Default)]
struct Knobs {
    cut_after: AtomicU64,
    corrupt_at: AtomicU64,
    delay_ms_per_chunk: AtomicU64,
    served: AtomicU64,
}

pub struct Proxy {
    port: u16,
    knobs: Arc<Knobs>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let knobs = Arc::new(Knobs::default());
        knobs.cut_after.store(NEVER, Ordering::SeqCst);
        knobs.corrupt_at.store(NEVER, Ordering::SeqCst);
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (knobs, stop) = (Arc::clone(&knobs), Arc::clone(&stop));
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) else { continue };
                    let knobs = Arc::clone(&knobs);
                    std::thread::spawn(move || serve(client, upstream, knobs));
                }
            })
        };
        Proxy { port, knobs, stop, accept: Some(accept) }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Closes each connection once it has forwarded this many response bytes.
    pub fn cut_after(&self, bytes: u64) {
        self.knobs.cut_after.store(bytes, Ordering::SeqCst);
    }

    /// Flips the response byte at this offset of each connection.
    pub fn corrupt_at(&self, offset: u64) {
        self.knobs.corrupt_at.store(offset, Ordering::SeqCst);
    }

    /// Sleeps this long before forwarding each 16 KiB chunk of a response.
    pub fn delay_per_chunk(&self, ms: u64) {
        self.knobs.delay_ms_per_chunk.store(ms, Ordering::SeqCst);
    }

    pub fn behave(&self) {
        self.cut_after(NEVER);
        self.corrupt_at(NEVER);
        self.delay_per_chunk(0);
    }

    /// Response bytes forwarded so far, over all connections.
    pub fn served(&self) -> u64 {
        self.knobs.served.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn serve(client: TcpStream, upstream: TcpStream, knobs: Arc<Knobs>) {
    let (Ok(client_read), Ok(upstream_write)) = (client.try_clone(), upstream.try_clone()) else { return };
    // Requests pass untouched.
    let requests = std::thread::spawn(move || {
        let (mut from, mut to) = (client_read, upstream_write);
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
    let (mut from, mut to) = (upstream, client);
    let mut buf = vec![0u8; 16 << 10];
    let mut forwarded: u64 = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let delay = knobs.delay_ms_per_chunk.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        let corrupt = knobs.corrupt_at.load(Ordering::SeqCst);
        if corrupt >= forwarded && corrupt < forwarded + n as u64 {
            buf[(corrupt - forwarded) as usize] ^= 0xff;
        }
        let cut = knobs.cut_after.load(Ordering::SeqCst);
        let n = if forwarded + n as u64 > cut { (cut - forwarded.min(cut)) as usize } else { n };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        forwarded += n as u64;
        knobs.served.fetch_add(n as u64, Ordering::SeqCst);
        if forwarded >= cut {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
    let _ = requests.join();
}
