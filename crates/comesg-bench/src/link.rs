//! One end of a two-way message link, for every transport measured.
//! Benchmarks drive every transport through this one trait so that each is
//! measured by the same loop. The streams' loops are the trait's provided
//! methods, compiled once per transport as a user's own loop would be: a
//! virtual call per message cost the COCHANNEL 64 B stream a quarter of its
//! rate (two pinned processes, 38-44 M msgs/s one `send` per message from
//! a plain loop, 29-33 M through `dyn Link`), a cost of the harness, not of
//! the transport.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use comesg::Channel;
use comesg_sys::mapping::Mapping;
use comesg_sys::{futex, seqpacket, AsFd, OwnedFd};

/// A two-way message link.
pub trait Link {
    /// Sends one message.
    fn send(&mut self, msg: &[u8]) -> io::Result<()>;
    /// Receives one message of `buf.len()` bytes (the benchmarks always know
    /// the size).
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()>;

    /// Sends `msg` `n` times, one [`Link::send`] each.
    fn send_many(&mut self, msg: &[u8], n: u64) -> io::Result<()> {
        for _ in 0..n {
            self.send(msg)?;
        }
        Ok(())
    }

    /// Receives `n` messages of `buf.len()` bytes, one [`Link::recv`] each.
    fn recv_many(&mut self, buf: &mut [u8], n: u64) -> io::Result<()> {
        for _ in 0..n {
            self.recv(buf)?;
        }
        Ok(())
    }
}

/// Offsets (in 64-bit words) of the two flag words in the shared segment,
/// a cache line apart in each direction.
const WORD_A: usize = 0;
const WORD_B: usize = 16;

/// Raw shared-memory spin ping-pong: a store and a busy-wait on one word
/// each way, no payload. The hardware limit.
pub struct SpinLink {
    seg: Mapping,
    out: usize,
    inp: usize,
    sent: u64,
    seen: u64,
}

impl SpinLink {
    /// The end that writes word A (`first`) or word B.
    pub fn new(seg: Mapping, first: bool) -> SpinLink {
        let (out, inp) = if first { (WORD_A, WORD_B) } else { (WORD_B, WORD_A) };
        SpinLink { seg, out, inp, sent: 0, seen: 0 }
    }
    fn word(&self, i: usize) -> &AtomicU64 {
        &self.seg.words()[i]
    }
}

impl Link for SpinLink {
    fn send(&mut self, _msg: &[u8]) -> io::Result<()> {
        self.sent += 1;
        self.word(self.out).store(self.sent, Ordering::Release);
        Ok(())
    }
    fn recv(&mut self, _buf: &mut [u8]) -> io::Result<()> {
        let want = self.seen + 1;
        while self.word(self.inp).load(Ordering::Acquire) < want {
            std::hint::spin_loop();
        }
        self.seen = want;
        Ok(())
    }
}

/// Futex wait/wake ping-pong: the sleeping path, no spinning at all.
pub struct FutexLink {
    seg: Mapping,
    out: usize,
    inp: usize,
    sent: u32,
    seen: u32,
}

impl FutexLink {
    /// The end that writes word A (`first`) or word B.
    pub fn new(seg: Mapping, first: bool) -> FutexLink {
        let (out, inp) = if first { (WORD_A, WORD_B) } else { (WORD_B, WORD_A) };
        FutexLink { seg, out, inp, sent: 0, seen: 0 }
    }
    fn word(&self, i: usize) -> &AtomicU32 {
        &self.seg.words32()[i * 2]
    }
}

impl Link for FutexLink {
    fn send(&mut self, _msg: &[u8]) -> io::Result<()> {
        self.sent = self.sent.wrapping_add(1);
        self.word(self.out).store(self.sent, Ordering::Release);
        futex::wake(self.word(self.out), 1);
        Ok(())
    }
    fn recv(&mut self, _buf: &mut [u8]) -> io::Result<()> {
        let want = self.seen.wrapping_add(1);
        loop {
            let v = self.word(self.inp).load(Ordering::Acquire);
            if v == want {
                break;
            }
            futex::wait(self.word(self.inp), v, Some(Duration::from_secs(10)));
        }
        self.seen = want;
        Ok(())
    }
}

/// A pair of pipes.
pub struct PipeLink {
    /// Read end.
    pub rx: std::fs::File,
    /// Write end.
    pub tx: std::fs::File,
}

impl Link for PipeLink {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.tx.write_all(msg)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.rx.read_exact(buf)
    }
}

/// A connected `SOCK_SEQPACKET` socket.
pub struct SeqpacketLink {
    /// The socket.
    pub fd: OwnedFd,
}

impl Link for SeqpacketLink {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        seqpacket::send(self.fd.as_fd(), msg, &[])
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        match seqpacket::recv(self.fd.as_fd(), buf)? {
            Some(r) if r.len == buf.len() => Ok(()),
            Some(r) => Err(io::Error::other(format!("short record: {} of {}", r.len, buf.len()))),
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

/// Request/response over a UNIX stream socket: each message is a 4-byte
/// little-endian length and the bytes, as a typical RPC framing does.
pub struct StreamRpcLink {
    s: std::os::unix::net::UnixStream,
    out: Vec<u8>,
}

impl StreamRpcLink {
    /// Wraps a connected stream socket.
    pub fn new(fd: OwnedFd) -> StreamRpcLink {
        StreamRpcLink { s: fd.into(), out: Vec::new() }
    }
}

impl Link for StreamRpcLink {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.out.clear();
        self.out.extend_from_slice(&(msg.len() as u32).to_le_bytes());
        self.out.extend_from_slice(msg);
        self.s.write_all(&self.out)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len)?;
        if u32::from_le_bytes(len) as usize != buf.len() {
            return Err(io::Error::other("unexpected frame length"));
        }
        self.s.read_exact(buf)
    }
}

/// Coservice calls: `send` makes the call, `recv` hands over its response.
pub struct ServiceLink {
    /// The service.
    pub client: std::sync::Arc<comesg::ServiceClient>,
    /// The last response.
    pub resp: Vec<u8>,
}

impl Link for ServiceLink {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.resp = self.client.call(msg).map_err(io::Error::other)?;
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        if self.resp.len() != buf.len() {
            return Err(io::Error::other("unexpected response length"));
        }
        buf.copy_from_slice(&self.resp);
        Ok(())
    }
}

/// Two COCHANNELs, one each way, with blocking (spin-then-futex) calls.
pub struct ChannelLink {
    /// Outgoing channel (SEND).
    pub tx: Channel,
    /// Incoming channel (RECV).
    pub rx: Channel,
}

impl Link for ChannelLink {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.tx.send(msg).map_err(io::Error::other)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.rx.recv(buf).map(|_| ()).map_err(io::Error::other)
    }
}

/// Two COPIPEs, one each way: each send returns once the other side has
/// the message.
pub struct CopipeLink {
    /// Outgoing pipe (SEND).
    pub tx: comesg::Copipe,
    /// Incoming pipe (RECV).
    pub rx: comesg::Copipe,
}

impl Link for CopipeLink {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.tx.send(msg).map_err(io::Error::other)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        match self.rx.recv(buf) {
            Ok(n) if n == buf.len() => Ok(()),
            Ok(n) => Err(io::Error::other(format!("short message: {n} of {}", buf.len()))),
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

/// Two COCARRIERs, one each way: the microkernel copies each message once;
/// the receiver reads every byte of it in place (summing its words: a
/// carrier's receiver needs no copy of its own), and copies out only what
/// the caller's buffer asks for when it is small (a ping).
pub struct CarrierLink {
    /// Outgoing carrier (SEND).
    pub tx: comesg::Cocarrier,
    /// Incoming carrier (RECV).
    pub rx: comesg::Cocarrier,
    /// Build each message in place (a fresh sealed memfd, no copy by the
    /// kernel) instead of a copy send.
    pub inplace: bool,
}

impl Link for CarrierLink {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        if self.inplace {
            // The message is built where it will be read: writing it is
            // the sender's work, as it would be into any buffer.
            let mut m = self.tx.build(msg.len()).map_err(io::Error::other)?;
            m.as_mut_slice().copy_from_slice(msg);
            return m.send().map_err(io::Error::other);
        }
        self.tx.send(msg).map_err(io::Error::other)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let m = self.rx.recv().map_err(io::Error::other)?;
        if m.len() != buf.len() {
            return Err(io::Error::other(format!("short message: {} of {}", m.len(), buf.len())));
        }
        let mut sum = 0u64;
        let mut words = m.chunks_exact(8);
        for w in &mut words {
            sum = sum.wrapping_add(u64::from_le_bytes(w.try_into().unwrap_or_default()));
        }
        for &b in words.remainder() {
            sum = sum.wrapping_add(b as u64);
        }
        std::hint::black_box(sum);
        if buf.len() <= 4096 {
            buf.copy_from_slice(&m);
        }
        Ok(())
    }
}
