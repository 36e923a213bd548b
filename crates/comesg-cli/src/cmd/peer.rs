//! `comesg __peer ROLE`: helper processes that benchmarks and tests start,
//! so that every multi-process scenario runs real, separate processes of the
//! real binary. Each prints `ready` on stdout once it holds what it needs.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use comesg::{RecvError, Rights};
use comesg_sys::mapping::{Access, Mapping};

use super::port::AnyPort;
use super::Outcome;
use crate::SocketArg;

/// Arguments of `comesg __peer`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, clap::Subcommand)]
enum Role {
    /// Send COUNT messages tagged (ID, sequence number), 16 bytes each.
    SeqSend {
        path: String,
        #[arg(long)]
        id: u32,
        #[arg(long)]
        count: u64,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Receive tagged messages and print "ID SEQ" per message until none
    /// came for IDLE seconds; then print "done N".
    SeqRecv {
        path: String,
        #[arg(long, default_value_t = 2.0)]
        idle: f64,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Open PATH with RIGHTS ("s", "r" or "sr") and hold it until killed;
    /// with --create, create it first (not persistent).
    Hold {
        path: String,
        #[arg(long, default_value = "sr")]
        rights: String,
        #[arg(long)]
        create: bool,
        #[arg(long, default_value_t = 64)]
        slot_size: u32,
        #[arg(long, default_value_t = 16)]
        slots: u32,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Play the attacker: open PATH with RECV through the raw protocol,
    /// keep every fd the kernel grants, and try to gain write access to
    /// each read-only segment (reopen through /proc/self/fd, map writable,
    /// mprotect). Prints one line per attempt: "... denied" or "... ALLOWED".
    Escalate {
        path: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Open up to COUNT connections (stopping at the first refusal), print
    /// "connected K" and "refused: ERROR|none", then "ready", then flood
    /// the kernel with pings from eight threads until killed.
    ConnectMany {
        #[arg(long)]
        count: usize,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Play a hostile holder: open the channel PATH with both rights and
    /// write random words at random places of both its segments (indices,
    /// slot stamps, holder records, data) for SECONDS, then print "done".
    Scribble {
        path: String,
        #[arg(long)]
        seconds: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Fork after using the process's shared connection; the child must
    /// get a connection of its own and never talk over the parent's. Prints
    /// one line per check, then "child exit CODE" and "parent ok".
    ForkCheck {
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Claim a slot for sending (a zero-copy loan) and die holding it.
    HoldSendClaim {
        path: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Claim a message for receiving (in place) and die holding it.
    HoldRecvClaim {
        path: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Open PATH with RIGHTS and store into the SEGMENT mapping ("sender" or
    /// "receiver" of a channel, "pipe-data" of a pipe): dies by SIGSEGV if
    /// the mapping is read-only.
    Poke {
        path: String,
        #[arg(long)]
        rights: String,
        #[arg(long)]
        segment: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Add 1 to the shared counter at PATH COUNT times, one lock each
    /// (recovering it if an owner died); print "done".
    Count {
        path: String,
        #[arg(long)]
        count: u64,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Lock the comutex at PATH and hold it until killed; with --in-update,
    /// first mark the shared counter as mid-update (`dirty` = 1).
    HoldLock {
        path: String,
        #[arg(long)]
        in_update: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// After "ready", lock and unlock the comutex at PATH COUNT times, then
    /// print "done" (for counting system calls from outside).
    LockLoop {
        path: String,
        #[arg(long)]
        count: u64,
        /// Pin to this CPU first.
        #[arg(long)]
        cpu: Option<usize>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Register the service PATH with WORKERS workers answering
    /// `w<worker>:<request>`; a request "hang" never returns. Serves until
    /// killed.
    Serve {
        path: String,
        #[arg(long, default_value_t = 4)]
        workers: u32,
        /// Request queue length (tickets waiting for a worker).
        #[arg(long, default_value_t = 1024)]
        queue: u32,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Call the service PATH COUNT times with `<id>-<i>`, PIPELINE calls in
    /// flight, checking each response; print "worker W N" per worker and
    /// "done N", or "error E" on the first failure.
    CallMany {
        path: String,
        #[arg(long)]
        id: u32,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 1)]
        pipeline: usize,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Write BYTES pseudo-random bytes (from SEED) to the pipe PATH through
    /// `std::io::Write`, then print "wrote N HASH".
    StreamWrite {
        path: String,
        #[arg(long)]
        bytes: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Read the pipe PATH through `std::io::Read` to end of file, then print
    /// "read N HASH".
    StreamRead {
        path: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Open the pipe PATH with RIGHTS and hold it until killed.
    HoldPipe {
        path: String,
        #[arg(long, default_value = "s")]
        rights: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Open the pipe PATH for receiving, register it in a poll set (which
    /// opens its offer), leave it unread for HOLD_MS, then take whatever a
    /// sender left there without waiting: print "take MSG" or "take none".
    OfferPipe {
        path: String,
        #[arg(long)]
        hold_ms: u64,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Receive one message from the carrier PATH, print "got N", then try
    /// to write into it through the arena mapping: dies by SIGSEGV.
    PokeCarrier {
        path: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Receive COUNT messages from the carrier PATH and hold them (unreleased)
    /// until killed.
    HoldCarrier {
        path: String,
        #[arg(long, default_value_t = 1)]
        count: u32,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Send COUNT messages of mixed sizes through the carrier PATH from one
    /// thread and receive (and drop) them on another, checking order; print
    /// "fds BEFORE AFTER maps BEFORE AFTER" counted in this process.
    CarrierChurn {
        path: String,
        #[arg(long)]
        count: u64,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Receive one message from the carrier PATH, take the handles it
    /// carries and use the first (a channel): print "attached N", "rights R",
    /// the next message received on it ("got M"), and what a send on it
    /// returns ("send: ...").
    TakeHandle {
        path: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Benchmark peers.
    Bench(comesg_bench::peer::PeerArgs),
    /// Benchmark: receive with one way of waiting, print wake-up latency.
    WakeRecv(comesg_bench::wakeup::WakeArgs),
    /// Processes of the anycast scaling benchmark.
    #[command(flatten)]
    Anycast(comesg_bench::scaling::AnycastRole),
    /// Helpers for the copoll and async tests.
    #[command(subcommand)]
    Poll(super::peer_poll::PollRole),
}

fn fd_and_map_counts() -> (usize, usize) {
    let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
    let maps = std::fs::read_to_string("/proc/self/maps").map(|m| m.lines().count()).unwrap_or(0);
    (fds, maps)
}

/// A running hash of a byte stream, fed in any chunking (word-wise where it
/// can, so that a gigabyte hashes quickly even in a debug build).
#[derive(Default)]
pub struct StreamHash {
    h: u64,
    pending: Vec<u8>,
}

impl StreamHash {
    fn word(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(0x0100_0000_01b3).rotate_left(29);
    }
    /// Feeds bytes.
    pub fn update(&mut self, mut b: &[u8]) {
        while !self.pending.is_empty() && !b.is_empty() {
            self.pending.push(b[0]);
            b = &b[1..];
            if self.pending.len() == 8 {
                let w = u64::from_le_bytes(self.pending[..8].try_into().unwrap_or_default());
                self.word(w);
                self.pending.clear();
            }
        }
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        self.pending.extend_from_slice(chunks.remainder());
    }
    /// The hash so far (pending bytes included).
    pub fn finish(&self) -> u64 {
        let mut tail = [0u8; 8];
        tail[..self.pending.len()].copy_from_slice(&self.pending);
        (self.h ^ u64::from_le_bytes(tail)).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ self.pending.len() as u64
    }
}

/// The shared value the comutex tests and the tour use.
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Counter {
    /// The count.
    pub n: u64,
    /// 1 while an update is half done.
    pub dirty: u64,
}

/// Locks `obj`, repairing it if its previous owner died mid-update.
pub fn lock_counter(
    obj: &comesg::SharedObject<Counter>,
) -> Result<comesg::SharedGuard<'_, Counter>, comesg::LockError<()>> {
    match obj.lock() {
        Ok(g) => Ok(g),
        Err(comesg::LockError::OwnerDied(mut g)) => {
            // The dead owner may have been mid-update: roll it back.
            g.dirty = 0;
            g.mark_consistent()?;
            Ok(g)
        }
        Err(e) => Err(e.map(|_| ())),
    }
}

fn rights(s: &str) -> Rights {
    let mut r = Rights::NONE;
    if s.contains('s') {
        r = r | Rights::SEND;
    }
    if s.contains('r') {
        r = r | Rights::RECV;
    }
    r
}

fn ready() {
    println!("ready");
    let _ = std::io::stdout().flush();
}

fn park() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

pub fn run(a: Args) -> Outcome {
    match a.role {
        Role::SeqSend { path, id, count, socket } => {
            let ch = AnyPort::open(&socket.connect()?, &path, Rights::SEND)?;
            ready();
            for seq in 0..count {
                let mut m = [0u8; 16];
                m[..4].copy_from_slice(&id.to_le_bytes());
                m[4..12].copy_from_slice(&seq.to_le_bytes());
                loop {
                    match ch.send(&m) {
                        // A pipe's receiver died before taking it: it was
                        // not delivered, so sending it again is safe.
                        Err(comesg::SendError::ReceiverDied) => continue,
                        r => break r?,
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Role::SeqRecv { path, idle, socket } => {
            let ch = AnyPort::open(&socket.connect()?, &path, Rights::RECV)?;
            ready();
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut buf = vec![0u8; ch.size()];
            let mut n = 0u64;
            loop {
                match ch.recv_timeout(&mut buf, Duration::from_secs_f64(idle)) {
                    Ok(16) => {
                        let id = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
                        let mut s = [0u8; 8];
                        s.copy_from_slice(&buf[4..12]);
                        writeln!(out, "{id} {}", u64::from_le_bytes(s))?;
                        n += 1;
                    }
                    Ok(len) => writeln!(out, "bad-length {len}")?,
                    Err(RecvError::TimedOut | RecvError::Closed) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            writeln!(out, "done {n}")?;
            Ok(ExitCode::SUCCESS)
        }
        Role::Hold { path, rights: r, create, slot_size, slots, socket } => {
            let conn = socket.connect()?;
            let _ch = if create {
                let opts = comesg::ChannelOptions {
                    slot_size,
                    slots,
                    rights: rights(&r),
                    exclusive: true,
                    ..Default::default()
                };
                conn.create_channel(&path, opts)?
            } else {
                conn.open_channel(&path, rights(&r))?
            };
            ready();
            park()
        }
        Role::HoldSendClaim { path, socket } => {
            let ch = socket.connect()?.open_channel(&path, Rights::SEND)?;
            let mut loan = ch.loan()?;
            loan.as_mut_slice()[..4].copy_from_slice(b"half");
            ready();
            park()
        }
        Role::HoldRecvClaim { path, socket } => {
            let ch = socket.connect()?.open_channel(&path, Rights::RECV)?;
            let _slot = ch.recv_in_place()?;
            ready();
            park()
        }
        Role::Poke { path, rights: r, segment, socket } if segment == "pipe-data" => {
            let p = socket.connect()?.open_copipe(&path, rights(&r))?;
            ready();
            if let Some(w) = p.data_mapping().words().last() {
                w.store(0xdead_beef, std::sync::atomic::Ordering::Relaxed);
            }
            println!("wrote");
            Ok(ExitCode::SUCCESS)
        }
        Role::Poke { path, rights: r, segment, socket } => {
            let ch = socket.connect()?.open_channel(&path, rights(&r))?;
            let (s, rseg) = ch.segments();
            let m = if segment == "sender" { s } else { rseg };
            ready();
            // The last word of the segment: slot data (sender) or a free
            // stamp (receiver). A read-only mapping faults here.
            let words = m.words();
            if let Some(w) = words.last() {
                w.store(0xdead_beef, std::sync::atomic::Ordering::Relaxed);
            }
            println!("wrote");
            Ok(ExitCode::SUCCESS)
        }
        Role::Scribble { path, seconds, seed, socket } => {
            let ch = socket.connect()?.open_channel(&path, Rights::ALL)?;
            let (s, r) = ch.segments();
            let segs = [s.words(), r.words()];
            ready();
            // xorshift64*: reproducible from the seed.
            let mut x = seed.max(1);
            let mut next = move || {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                x.wrapping_mul(0x2545_f491_4f6c_dd1d)
            };
            let end = std::time::Instant::now() + Duration::from_secs_f64(seconds);
            let mut writes = 0u64;
            while std::time::Instant::now() < end {
                for _ in 0..1000 {
                    let seg = segs[(next() & 1) as usize];
                    let at = (next() % seg.len().max(1) as u64) as usize;
                    // Small values and all-ones as well as noise: they hit
                    // the edge cases of indices and counts.
                    let v = match next() % 4 {
                        0 => next() % 64,
                        1 => u64::MAX,
                        _ => next(),
                    };
                    if let Some(w) = seg.get(at) {
                        w.store(v, std::sync::atomic::Ordering::Relaxed);
                        writes += 1;
                    }
                }
                std::thread::yield_now();
            }
            println!("done {writes}");
            Ok(ExitCode::SUCCESS)
        }
        Role::ForkCheck { socket } => {
            let path = socket.path();
            let conn = comesg::Connection::shared_at(&path)?;
            conn.ping()?;
            ready();
            let code = comesg_sys::process::in_forked_child(|| {
                // The inherited connection refuses to talk for the child...
                let inherited = match conn.ping() {
                    Err(e) => format!("refused ({e})"),
                    Ok(()) => "ANSWERED".into(),
                };
                println!("child, inherited connection: {inherited}");
                // ...and the process's connection is a new one of its own.
                let ok = match comesg::Connection::shared_at(&path) {
                    Ok(c) if !c.same_as(&conn) => c.ping().is_ok(),
                    _ => false,
                };
                println!("child, own connection: {}", if ok { "works" } else { "FAILED" });
                if ok && !conn.is_live() {
                    0
                } else {
                    1
                }
            })?;
            println!("child exit {code}");
            // The parent's connection is undisturbed.
            conn.ping()?;
            let same = comesg::Connection::shared_at(&path)?.same_as(&conn);
            println!("parent ok, same connection: {same}");
            Ok(ExitCode::SUCCESS)
        }
        Role::ConnectMany { count, socket } => {
            let mut held = Vec::new();
            let mut refused = None;
            for _ in 0..count {
                match comesg::Connection::connect(&socket.path()) {
                    Ok(c) => held.push(c),
                    Err(e) => {
                        refused = Some(e.to_string());
                        break;
                    }
                }
            }
            println!("connected {}", held.len());
            println!("refused: {}", refused.as_deref().unwrap_or("none"));
            ready();
            let flooders: Vec<_> =
                held.iter().take(8).cloned().map(|c| std::thread::spawn(move || while c.ping().is_ok() {})).collect();
            drop(flooders);
            park()
        }
        Role::Escalate { path, socket } => {
            let conn = socket.connect()?;
            let name = comesg::Name::try_from(path.clone()).map_err(|e| comesg::Error::Protocol(e.to_string()))?;
            let (reply, fds) = conn.request(comesg_proto::Request::Open { name, rights: Rights::RECV })?;
            if let comesg_proto::Reply::Error(e) = reply {
                return Err(comesg::Error::Kernel(e).into());
            }
            for (i, fd) in fds.iter().enumerate() {
                let len = comesg_sys::memfd::size(fd)? as usize;
                if len == 0 || comesg_sys::memfd::is_writable(fd)? {
                    continue; // a bell, or a segment this right may write
                }
                let verdict = |r: std::io::Result<()>| match r {
                    Ok(()) => "ALLOWED".to_string(),
                    Err(e) => format!("denied ({e})"),
                };
                let reopen = verdict(comesg_sys::memfd::reopen_read_write(fd).map(drop));
                let chmod = verdict(comesg_sys::memfd::chmod_writable(fd));
                let map = verdict(Mapping::map(fd, len, Access::ReadWrite).map(drop));
                let protect = verdict(Mapping::map(fd, len, Access::ReadOnly).and_then(|m| m.try_make_writable()));
                println!(
                    "fd {i} read-only, {len} bytes: reopen rw {reopen}; chmod {chmod}; map rw {map}; mprotect rw {protect}"
                );
            }
            println!("done");
            Ok(ExitCode::SUCCESS)
        }
        Role::Count { path, count, socket } => {
            let obj = socket.connect()?.open_shared::<Counter>(&path)?;
            ready();
            for _ in 0..count {
                lock_counter(&obj).map_err(comesg::Error::from)?.n += 1;
            }
            println!("done");
            Ok(ExitCode::SUCCESS)
        }
        Role::HoldLock { path, in_update, socket } => {
            let conn = socket.connect()?;
            if in_update {
                let obj = conn.open_shared::<Counter>(&path)?;
                let mut g = lock_counter(&obj).map_err(comesg::Error::from)?;
                g.dirty = 1;
                ready();
                park()
            }
            let m = conn.open_comutex(&path)?;
            let _g = m.lock().map_err(|e| comesg::Error::from(e.map(|_| ())))?;
            ready();
            park()
        }
        Role::LockLoop { path, count, cpu, socket } => {
            if let Some(c) = cpu {
                comesg_sys::process::pin_to_cpu(c)?;
            }
            let m = socket.connect()?.open_comutex(&path)?;
            ready();
            for _ in 0..count {
                drop(m.lock().map_err(|e| comesg::Error::from(e.map(|_| ())))?);
            }
            println!("done");
            Ok(ExitCode::SUCCESS)
        }
        Role::Serve { path, workers, queue, socket } => {
            let conn = socket.connect()?;
            let opts = comesg::ServiceOptions { workers, queue, ..Default::default() };
            let _svc = conn.serve(&path, opts, |c| {
                if c.request == b"hang" {
                    park()
                }
                let mut v = format!("w{}:", c.worker).into_bytes();
                v.extend_from_slice(c.request);
                v
            })?;
            ready();
            park()
        }
        Role::CallMany { path, id, count, pipeline, socket } => {
            let conn = socket.connect()?;
            let svc = conn.service(&path)?;
            ready();
            let mut per_worker = std::collections::BTreeMap::<String, u64>::new();
            let mut i = 0;
            while i < count {
                let batch: Vec<u64> = (i..count.min(i + pipeline.max(1) as u64)).collect();
                let mut pending = Vec::new();
                for &k in &batch {
                    match svc.start(format!("{id}-{k}").as_bytes()) {
                        Ok(p) => pending.push((k, p)),
                        Err(e) => {
                            println!("error {e}");
                            return Ok(ExitCode::FAILURE);
                        }
                    }
                }
                for (k, p) in pending {
                    let resp = match p.wait() {
                        Ok(r) => String::from_utf8_lossy(&r).into_owned(),
                        Err(e) => {
                            println!("error {e}");
                            return Ok(ExitCode::FAILURE);
                        }
                    };
                    let Some((worker, body)) = resp.split_once(':') else {
                        println!("error malformed response {resp:?}");
                        return Ok(ExitCode::FAILURE);
                    };
                    if body != format!("{id}-{k}") {
                        println!("error response {resp:?} to call {id}-{k}");
                        return Ok(ExitCode::FAILURE);
                    }
                    *per_worker.entry(worker.to_string()).or_default() += 1;
                }
                i += batch.len() as u64;
            }
            for (w, n) in per_worker {
                println!("worker {w} {n}");
            }
            println!("done {count}");
            Ok(ExitCode::SUCCESS)
        }
        Role::StreamWrite { path, bytes, seed, socket } => {
            let pipe = socket.connect()?.open_copipe(&path, Rights::SEND)?;
            ready();
            let mut x = seed | 1;
            let mut chunk = vec![0u8; 1 << 20];
            let (mut left, mut hash) = (bytes, StreamHash::default());
            let mut w = &pipe;
            while left > 0 {
                for c in chunk.chunks_exact_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    c.copy_from_slice(&x.to_le_bytes());
                }
                // Odd sizes, so that reads and writes do not line up.
                let n = (left as usize).min(chunk.len() - (x % 4096) as usize);
                hash.update(&chunk[..n]);
                w.write_all(&chunk[..n])?;
                left -= n as u64;
            }
            println!("wrote {bytes} {:016x}", hash.finish());
            Ok(ExitCode::SUCCESS)
        }
        Role::StreamRead { path, socket } => {
            let pipe = socket.connect()?.open_copipe(&path, Rights::RECV)?;
            ready();
            let mut buf = vec![0u8; 300_000];
            let (mut total, mut hash) = (0u64, StreamHash::default());
            let mut r = &pipe;
            loop {
                let n = std::io::Read::read(&mut r, &mut buf)?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                total += n as u64;
            }
            println!("read {total} {:016x}", hash.finish());
            Ok(ExitCode::SUCCESS)
        }
        Role::HoldPipe { path, rights: r, socket } => {
            let _p = socket.connect()?.open_copipe(&path, rights(&r))?;
            ready();
            park()
        }
        Role::OfferPipe { path, hold_ms, socket } => {
            let p = socket.connect()?.open_copipe(&path, Rights::RECV)?;
            let mut poll = comesg::Copoll::new()?;
            poll.add(&p, 1, comesg::Interest::READABLE)?;
            // A wait arms the registration: the offer opens and stays open.
            poll.wait(&mut Vec::new(), Some(Duration::from_millis(1)))?;
            ready();
            std::thread::sleep(Duration::from_millis(hold_ms));
            let mut buf = vec![0u8; p.buffer_size()];
            match p.try_recv(&mut buf) {
                Ok(n) => println!("take {}", String::from_utf8_lossy(&buf[..n])),
                Err(RecvError::Empty) => println!("take none"),
                Err(e) => return Err(e.into()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Role::PokeCarrier { path, socket } => {
            let c = socket.connect()?.open_cocarrier(&path, Rights::RECV)?;
            ready();
            let m = c.recv()?;
            println!("got {}", m.len());
            let _ = std::io::stdout().flush();
            if let Some(map) = c.arena_mapping() {
                map.words()[0].store(0xdead_beef, std::sync::atomic::Ordering::Relaxed);
            }
            println!("wrote");
            Ok(ExitCode::SUCCESS)
        }
        Role::HoldCarrier { path, count, socket } => {
            let c = socket.connect()?.open_cocarrier(&path, Rights::RECV)?;
            ready();
            let mut held = Vec::new();
            for _ in 0..count {
                held.push(c.recv()?);
            }
            println!("holding {}", held.len());
            let _ = std::io::stdout().flush();
            park()
        }
        Role::CarrierChurn { path, count, socket } => {
            let conn = socket.connect()?;
            // Shared with the sender thread, so that it is still open when
            // the fds are counted again.
            let tx = std::sync::Arc::new(conn.open_cocarrier(&path, Rights::SEND)?);
            let rx = conn.open_cocarrier(&path, Rights::RECV)?;
            tx.send(b"warm up")?;
            drop(rx.recv()?);
            // A thread that allocates, joined: glibc keeps its stack and
            // malloc arena for the next thread, so the sender below adds no
            // mappings of its own to the count.
            std::thread::spawn(|| std::hint::black_box(vec![0u8; 70_000]).len())
                .join()
                .map_err(|_| "warm-up thread")?;
            let before = fd_and_map_counts();
            ready();
            let txs = tx.clone();
            let sender = std::thread::spawn(move || -> Result<(), comesg::SendError> {
                let mut x = 12345u64;
                let mut data = vec![0u8; 70_000];
                for i in 0..count {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let len = match i % 100 {
                        0 => 65_536 + (x % 4096) as usize,
                        1..=9 => (x % 16_384) as usize,
                        _ => (x % 256) as usize,
                    };
                    data[..8].copy_from_slice(&i.to_le_bytes());
                    txs.send(&data[..len.max(8)])?;
                }
                Ok(())
            });
            for i in 0..count {
                let m = rx.recv_timeout(Duration::from_secs(60))?;
                if m.len() < 8 || m[..8] != i.to_le_bytes() {
                    println!("error message {i} out of order");
                    return Ok(ExitCode::FAILURE);
                }
            }
            sender.join().map_err(|_| "sender thread panicked")??;
            let after = fd_and_map_counts();
            println!("fds {} {} maps {} {}", before.0, after.0, before.1, after.1);
            Ok(ExitCode::SUCCESS)
        }
        Role::TakeHandle { path, socket } => {
            let c = socket.connect()?.open_cocarrier(&path, Rights::RECV)?;
            ready();
            let m = c.recv()?;
            println!("attached {}", m.attached());
            let handles = m.take_handles()?;
            drop(m);
            let Some(comesg::Handle::Channel(ch)) = handles.into_iter().next() else {
                println!("no channel");
                return Ok(ExitCode::FAILURE);
            };
            println!("rights {}", ch.rights());
            let _ = std::io::stdout().flush();
            let got = ch.recv_vec_timeout(Duration::from_secs(30))?;
            println!("got {}", String::from_utf8_lossy(&got));
            match ch.try_send(b"x") {
                Ok(()) => println!("send: ok"),
                Err(e) => println!("send: {e}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Role::Bench(args) => {
            comesg_bench::peer::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Role::Poll(role) => super::peer_poll::run(role),
        Role::WakeRecv(a) => {
            comesg_bench::wakeup::receive(a)?;
            Ok(ExitCode::SUCCESS)
        }
        Role::Anycast(role) => {
            comesg_bench::scaling::peer(role)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
