//! A small synchronous rtnetlink client: one request, its ACK or its dump. Pod setup is a handful of messages, so
//! a blocking socket per call beats an async connection task (no runtime, nothing to keep alive across pods).

use std::os::fd::AsFd;
use std::path::Path;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::errno::Errno;

pub struct Rtnl {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

impl Rtnl {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Rtnl, Errno> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| io_errno(&e))?;
        socket.bind_auto().map_err(|e| io_errno(&e))?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(|e| io_errno(&e))?;
        Ok(Rtnl { socket, seq: 0, buf: Vec::with_capacity(64 * 1024) })
    }

    /// A socket inside the network namespace pinned at `netns`. A netlink socket stays in the namespace it was
    /// created in, so a short-lived thread enters it, opens the socket and leaves; reefd's own threads never move.
    pub fn open_in(netns: &Path) -> Result<Rtnl, Errno> {
        let ns = std::fs::File::open(netns).map_err(|e| io_errno(&e))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
                Rtnl::open()
            })
            .join()
            .unwrap_or(Err(Errno::EIO))
        })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32, Errno> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut bytes = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes, 0).map_err(|e| io_errno(&e))?;
        Ok(self.seq)
    }

    /// Reads replies to `seq` until the ACK (or error) or the end of a dump, collecting the messages.
    fn collect(&mut self, seq: u32) -> Result<Vec<RouteNetlinkMessage>, Errno> {
        let mut out = Vec::new();
        loop {
            self.buf.clear();
            self.socket.recv(&mut self.buf, 0).map_err(|e| io_errno(&e))?;
            let mut offset = 0;
            while offset < self.buf.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..])
                    .map_err(|_| Errno::EBADMSG)?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(Errno::EBADMSG);
                }
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(code) => Err(Errno::from_raw(-code.get())),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
            }
        }
    }

    /// Sends a change and waits for its ACK.
    pub fn request(&mut self, msg: RouteNetlinkMessage) -> Result<(), Errno> {
        let seq = self.send(msg, NLM_F_ACK)?;
        self.collect(seq).map(drop)
    }

    /// Creates something; fails with EEXIST when it is already there.
    pub fn create(&mut self, msg: RouteNetlinkMessage) -> Result<(), Errno> {
        let seq = self.send(msg, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)?;
        self.collect(seq).map(drop)
    }

    pub fn dump(&mut self, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, Errno> {
        let seq = self.send(msg, NLM_F_DUMP)?;
        self.collect(seq)
    }

    /// A single object (RTM_GET* without dump).
    pub fn get(&mut self, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, Errno> {
        let seq = self.send(msg, NLM_F_ACK)?;
        self.collect(seq)
    }
}
