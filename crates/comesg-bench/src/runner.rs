//! The parent side of the benchmark: sets up each link, starts the peer
//! process, measures, and collects the report.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use comesg::{ChannelOptions, Connection, Kernel, KernelConfig, Rights};
use comesg_sys::mapping::{Access, Mapping};
use comesg_sys::process::set_inheritable;
use comesg_sys::{memfd, seqpacket, AsFd, AsRawFd, OwnedFd};

use crate::link::{
    CarrierLink, ChannelLink, CopipeLink, FutexLink, Link, PipeLink, SeqpacketLink, ServiceLink, SpinLink,
    StreamRpcLink,
};
use crate::peer::{Transport, CMD_ECHO, CMD_EXIT, CMD_SINK, FLAG_SEGMENT};
use crate::report::{percentiles, LatencyRow, Report, ThroughputRow};

/// How to run the benchmark.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The `comesg` executable, started as `comesg __peer bench ...`.
    pub exe: PathBuf,
    /// Longer, steadier runs (several times the default).
    pub long: bool,
    /// Only the quick subset the tour shows.
    pub short: bool,
    /// Progress lines on stderr.
    pub progress: bool,
}

/// Message sizes of the throughput runs.
pub const SIZES: [usize; 3] = [64, 4096, 65536];
/// Sizes for the transports that carry large messages (and their baseline).
pub const SIZES_LARGE: [usize; 5] = [64, 4096, 65536, 1 << 20, 16 << 20];
/// Size of the round-trip messages.
pub const PING: usize = 64;

struct Plan {
    rt_fast: u64,
    rt_slow: u64,
    /// Interleaved rounds of the round trips.
    rt_rounds: u64,
    /// Interleaved rounds of the one-way streams.
    rounds: u64,
    budget: Duration,
    lock_samples: usize,
    lock_contended: u64,
    wake_samples: usize,
}

struct Peer {
    child: Child,
    ctl: std::fs::File,
    ready: std::fs::File,
}

impl Peer {
    fn command(&mut self, cmd: u8, n: u64, size: usize) -> io::Result<()> {
        let mut b = [0u8; 17];
        b[0] = cmd;
        b[1..9].copy_from_slice(&n.to_le_bytes());
        b[9..17].copy_from_slice(&(size as u64).to_le_bytes());
        self.ctl.write_all(&b)
    }
    fn wait_done(&mut self) -> io::Result<()> {
        let mut b = [0u8; 1];
        self.ready.read_exact(&mut b)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.command(CMD_EXIT, 0, 0);
        crate::report::reap(&mut self.child, Duration::from_secs(2));
    }
}

struct Setup<'a> {
    exe: &'a Path,
    socket: &'a Path,
    cpus: Option<(usize, usize)>,
    progress: bool,
}

impl Setup<'_> {
    /// Builds both ends of a link; the peer's end is described by fds and
    /// names passed on its command line.
    fn start(&self, t: Transport, max_size: usize, tag: &str) -> io::Result<(Box<dyn Link>, Peer)> {
        let mut child_fds: Vec<OwnedFd> = Vec::new();
        let mut extra: Vec<String> = Vec::new();
        let mine: Box<dyn Link> = match t {
            Transport::Spin | Transport::Futex => {
                let seg = memfd::create_segment("comesg-bench-flags", FLAG_SEGMENT as u64)?;
                let m = Mapping::map(&seg, FLAG_SEGMENT, Access::ReadWrite)?;
                child_fds.push(seg);
                if t == Transport::Spin {
                    Box::new(SpinLink::new(m, true))
                } else {
                    Box::new(FutexLink::new(m, true))
                }
            }
            Transport::BareRing => {
                let seg = memfd::create_segment("comesg-bench-bare-ring", crate::bare_ring::SEGMENT as u64)?;
                let m = Mapping::map(&seg, crate::bare_ring::SEGMENT, Access::ReadWrite)?;
                crate::bare_ring::BareRingLink::initialize(&m);
                child_fds.push(seg);
                Box::new(crate::bare_ring::BareRingLink::new(m, true))
            }
            Transport::Pipe => {
                let (r1, w1) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
                let (r2, w2) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
                child_fds.push(r1);
                child_fds.push(w2);
                Box::new(PipeLink { rx: r2.into(), tx: w1.into() })
            }
            Transport::Seqpacket => {
                let (a, b) = seqpacket::pair()?;
                child_fds.push(b);
                Box::new(SeqpacketLink { fd: a })
            }
            Transport::UdsRpc => {
                let (a, b) = std::os::unix::net::UnixStream::pair()?;
                child_fds.push(b.into());
                Box::new(StreamRpcLink::new(a.into()))
            }
            Transport::Cocarrier | Transport::CocarrierInplace => {
                let conn = Connection::connect(self.socket).map_err(io::Error::other)?;
                let pid = comesg_sys::process::pid();
                let ping = format!("/bench/{pid}/{tag}/{}-ping", t.name());
                let pong = format!("/bench/{pid}/{tag}/{}-pong", t.name());
                // Room for a few messages in flight, so the kernel's copy of
                // one overlaps the receiver's reading of the one before.
                let arena = (4 * max_size as u64).max(1 << 20);
                let big = comesg::CocarrierOptions {
                    arena,
                    max_message: max_size as u64,
                    receivers: 2,
                    queue: 64,
                    ..Default::default()
                };
                let tx = conn.create_cocarrier(&ping, big).map_err(io::Error::other)?;
                let small = comesg::CocarrierOptions {
                    arena: 1 << 20,
                    max_message: PING.max(max_size.min(4096)) as u64,
                    rights: Rights::RECV,
                    ..big
                };
                let rx = conn.create_cocarrier(&pong, small).map_err(io::Error::other)?;
                extra = vec!["--socket".into(), self.socket.display().to_string(), "--rx-name".into(), ping];
                extra.extend(["--tx-name".into(), pong]);
                Box::new(CarrierLink { tx, rx, inplace: t == Transport::CocarrierInplace })
            }
            Transport::Copipe => {
                let conn = Connection::connect(self.socket).map_err(io::Error::other)?;
                let pid = comesg_sys::process::pid();
                let ping = format!("/bench/{pid}/{tag}/pipe-ping");
                let pong = format!("/bench/{pid}/{tag}/pipe-pong");
                let big = comesg::CopipeOptions { buffer: max_size as u32, receivers: 2, ..Default::default() };
                let tx = conn.create_copipe(&ping, big).map_err(io::Error::other)?;
                let small =
                    comesg::CopipeOptions { buffer: PING.max(max_size.min(4096)) as u32, rights: Rights::RECV, ..big };
                let rx = conn.create_copipe(&pong, small).map_err(io::Error::other)?;
                extra = vec!["--socket".into(), self.socket.display().to_string(), "--rx-name".into(), ping];
                extra.extend(["--tx-name".into(), pong]);
                Box::new(CopipeLink { tx, rx })
            }
            Transport::Coservice => {
                let name = format!("/bench/{}/{tag}/svc", comesg_sys::process::pid());
                extra = vec!["--socket".into(), self.socket.display().to_string(), "--rx-name".into(), name.clone()];
                Box::new(DeferredService { socket: self.socket.to_owned(), name, link: None })
            }
            Transport::Cochannel => {
                let conn = Connection::connect(self.socket).map_err(io::Error::other)?;
                let pid = comesg_sys::process::pid();
                let ping = format!("/bench/{pid}/{tag}/ping");
                let pong = format!("/bench/{pid}/{tag}/pong");
                let slots = match max_size {
                    s if s <= 64 && tag == "rt" => 64,
                    s if s <= 64 => 4096,
                    s if s <= 4096 => 1024,
                    _ => 256,
                };
                let opts = ChannelOptions { slot_size: max_size as u32, slots, exclusive: true, ..Default::default() };
                let tx = conn.create_channel(&ping, opts).map_err(io::Error::other)?;
                let back = ChannelOptions { slot_size: PING.max(max_size.min(4096)) as u32, slots: 256, ..opts };
                let rx = conn.create_channel(&pong, back).map_err(io::Error::other)?;
                extra = vec!["--socket".into(), self.socket.display().to_string(), "--rx-name".into(), ping];
                extra.extend(["--tx-name".into(), pong]);
                let tx = narrow(tx, &conn, Rights::SEND)?;
                let rx = narrow(rx, &conn, Rights::RECV)?;
                Box::new(ChannelLink { tx, rx })
            }
        };
        let (ctl_r, ctl_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let (rdy_r, rdy_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let mut cmd = Command::new(self.exe);
        cmd.args(["__peer", "bench", "--transport", t.name()]);
        cmd.arg("--ctl").arg(ctl_r.as_raw_fd().to_string());
        cmd.arg("--ready").arg(rdy_w.as_raw_fd().to_string());
        cmd.arg("--max-size").arg(max_size.to_string());
        if let Some((_, c)) = self.cpus {
            cmd.arg("--cpu").arg(c.to_string());
        }
        if !child_fds.is_empty() {
            cmd.arg("--fds");
            for f in &child_fds {
                cmd.arg(f.as_raw_fd().to_string());
            }
        }
        cmd.args(&extra).stdin(Stdio::null());
        let inherit: Vec<_> = child_fds.iter().chain([&ctl_r, &rdy_w]).collect();
        for f in &inherit {
            set_inheritable(f.as_fd(), true)?;
        }
        let spawned = cmd.spawn();
        for f in &inherit {
            set_inheritable(f.as_fd(), false)?;
        }
        let child = spawned?;
        drop(child_fds);
        drop(ctl_r);
        drop(rdy_w);
        let mut peer = Peer { child, ctl: ctl_w.into(), ready: rdy_r.into() };
        let mut b = [0u8; 1];
        peer.ready.read_exact(&mut b).map_err(|e| io::Error::other(format!("{} peer did not start: {e}", t.name())))?;
        if self.progress {
            eprintln!("  {} ({tag})", t.name());
        }
        Ok((mine, peer))
    }
}

/// The caller's end of a coservice link: the peer registers the service
/// after it starts, so the caller opens it on first use.
struct DeferredService {
    socket: PathBuf,
    name: String,
    link: Option<ServiceLink>,
}

impl DeferredService {
    fn link(&mut self) -> io::Result<&mut ServiceLink> {
        if self.link.is_none() {
            let conn = Connection::connect(&self.socket).map_err(io::Error::other)?;
            let client = conn.service(&self.name).map_err(io::Error::other)?;
            self.link = Some(ServiceLink { client, resp: Vec::new() });
        }
        self.link.as_mut().ok_or_else(|| io::Error::other("service link"))
    }
}

impl Link for DeferredService {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        self.link()?.send(msg)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.link()?.recv(buf)
    }
}

/// Reopens a channel the bench created with exactly the rights it uses, so
/// the measured handle is what a real sender or receiver holds.
fn narrow(ch: comesg::Channel, conn: &Connection, rights: Rights) -> io::Result<comesg::Channel> {
    let name = ch.name().to_string();
    let narrowed = conn.open_channel(&name, rights).map_err(io::Error::other)?;
    drop(ch);
    Ok(narrowed)
}

/// Cost of reading the clock twice, subtracted from each timed round trip.
fn clock_overhead() -> f64 {
    let mut v: Vec<f64> = (0..2001)
        .map(|_| {
            let a = Instant::now();
            let b = Instant::now();
            (b - a).as_nanos() as f64
        })
        .collect();
    percentiles(&mut v).0
}

/// Times `n` round trips one by one, appending to `samples`.
fn round_trips(
    link: &mut dyn Link,
    peer: &mut Peer,
    n: u64,
    size: usize,
    overhead: f64,
    samples: &mut Vec<f64>,
) -> io::Result<()> {
    let mut buf = vec![0u8; size];
    let warm = (n / 10).max(10);
    peer.command(CMD_ECHO, warm + n, size)?;
    for _ in 0..warm {
        link.send(&buf)?;
        link.recv(&mut buf)?;
    }
    for _ in 0..n {
        let t = Instant::now();
        link.send(&buf)?;
        link.recv(&mut buf)?;
        samples.push(((t.elapsed().as_nanos() as f64) - overhead).max(1.0));
    }
    peer.wait_done()
}

fn stream(link: &mut dyn Link, peer: &mut Peer, n: u64, size: usize) -> io::Result<Duration> {
    let buf = vec![0x5au8; size];
    let mut ack = [0u8; 1];
    peer.command(CMD_SINK, n, size)?;
    let t = Instant::now();
    link.send_many(&buf, n)?;
    link.recv(&mut ack)?;
    let d = t.elapsed();
    peer.wait_done()?;
    Ok(d)
}

/// Streams for about `budget`: calibration runs pick the count.
///
/// Each stream starts by waking the peer, asleep on its command pipe, and
/// on these VMs that wake-up alone takes 60 us to a few ms, while a fixed
/// probe of 2000 small messages is under 100 us of work. So the probe
/// grows until it takes a twentieth of the budget, and the count it picks
/// is not shrunk by a slow wake-up.
fn throughput(link: &mut dyn Link, peer: &mut Peer, size: usize, budget: Duration) -> io::Result<(f64, f64)> {
    // Start at about 64 MiB at most: 2000 small messages, a few big ones.
    let mut probe = ((64usize << 20) / size.max(1)).clamp(4, 2000) as u64;
    let mut d = stream(link, peer, probe, size)?;
    while d < budget / 20 && probe < 5_000_000 {
        probe *= 4;
        d = stream(link, peer, probe, size)?;
    }
    let per = d.as_secs_f64() / probe as f64;
    let n = ((budget.as_secs_f64() / per.max(1e-9)) as u64).clamp(probe, 50_000_000);
    let d = stream(link, peer, n, size)?;
    let msgs = n as f64 / d.as_secs_f64();
    Ok((msgs, msgs * size as f64 / 1e9))
}

fn memcpy_row(size: usize, budget: Duration) -> ThroughputRow {
    let src = vec![0xa5u8; size];
    let mut dst = vec![0u8; size];
    dst.copy_from_slice(&src);
    let mut n = 0u64;
    let t = Instant::now();
    while t.elapsed() < budget {
        for _ in 0..64 {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
        }
        n += 64;
    }
    let msgs = n as f64 / t.elapsed().as_secs_f64();
    ThroughputRow {
        transport: "memcpy".into(),
        size: size as u64,
        msgs_per_s: msgs,
        gb_per_s: msgs * size as f64 / 1e9,
    }
}

/// Runs the whole benchmark and returns its report.
pub fn run(cfg: &BenchConfig) -> io::Result<Report> {
    let plan = if cfg.long {
        Plan {
            rt_fast: 1_000_000,
            rt_slow: 50_000,
            rt_rounds: 30,
            rounds: 10,
            budget: Duration::from_millis(1500),
            lock_samples: 2000,
            lock_contended: 2_000_000,
            wake_samples: 5000,
        }
    } else if cfg.short {
        Plan {
            rt_fast: 50_000,
            rt_slow: 3_000,
            rt_rounds: 6,
            rounds: 3,
            budget: Duration::from_millis(120),
            lock_samples: 100,
            lock_contended: 100_000,
            wake_samples: 200,
        }
    } else {
        Plan {
            rt_fast: 300_000,
            rt_slow: 15_000,
            rt_rounds: 15,
            rounds: 5,
            budget: Duration::from_millis(300),
            lock_samples: 500,
            lock_contended: 500_000,
            wake_samples: 1500,
        }
    };
    let dir = std::env::temp_dir().join(format!("comesg-bench-{}", comesg_sys::process::pid()));
    let socket = dir.join("kernel.sock");
    let kernel = Kernel::spawn(KernelConfig::new(&socket)).map_err(io::Error::other)?;
    let allowed = comesg_sys::process::allowed_cpus();
    let cpus = (allowed.len() >= 2).then(|| (allowed[0], allowed[1]));
    if let Some((mine, _)) = cpus {
        comesg_sys::process::pin_to_cpu(mine)?;
    }
    let setup = Setup { exe: &cfg.exe, socket: &socket, cpus, progress: cfg.progress };
    let overhead = clock_overhead();
    let mut report = Report { machine: crate::report::machine_line(cpus, allowed.len()), ..Report::default() };

    // Round trips in interleaved rounds: every transport gets a slice of
    // each round, so a change in the machine's state (these VMs' two vCPUs
    // move between host cores) hits all of them alike and ratios hold.
    // The shared-memory transports come first, one after another, since
    // their ratios to each other are the finest: a slice of theirs takes
    // milliseconds, one of the system-call transports tenths of a second,
    // and the machine's state can change within a second. Many short
    // rounds rather than a few long ones, for the same reason.
    let latency_order = [
        Transport::Spin,
        Transport::Cochannel,
        Transport::Coservice,
        Transport::BareRing,
        Transport::Copipe,
        Transport::Futex,
        Transport::Pipe,
        Transport::Seqpacket,
        Transport::UdsRpc,
        Transport::Cocarrier,
    ];
    let mut pairs = Vec::new();
    for t in latency_order {
        let (link, peer) = setup.start(t, PING, "rt")?;
        pairs.push((t, link, peer, Vec::new()));
    }
    for _ in 0..plan.rt_rounds {
        for (t, link, peer, samples) in pairs.iter_mut() {
            let n = match t {
                Transport::Spin
                | Transport::BareRing
                | Transport::Cochannel
                | Transport::Coservice
                | Transport::Copipe => plan.rt_fast,
                _ => plan.rt_slow,
            } / plan.rt_rounds;
            round_trips(link.as_mut(), peer, n, PING, overhead, samples)?;
        }
    }
    for (t, _, _, mut samples) in pairs {
        let (median_ns, p99_ns) = percentiles(&mut samples);
        report.latency.push(LatencyRow { transport: t.name().into(), size: PING as u64, median_ns, p99_ns });
    }
    let streams = [
        Transport::BareRing,
        Transport::Pipe,
        Transport::Seqpacket,
        Transport::Cochannel,
        Transport::Copipe,
        Transport::Cocarrier,
        Transport::CocarrierInplace,
    ];
    // One-way streams in interleaved rounds too, for the same reason: every
    // (transport, size) streams for a slice of each round, and its median
    // round is reported.
    let mut live = Vec::new();
    for t in streams {
        let sizes = match t {
            Transport::Pipe | Transport::Copipe | Transport::Cocarrier | Transport::CocarrierInplace => {
                &SIZES_LARGE[..]
            }
            Transport::BareRing => &SIZES[..1],
            _ => &SIZES[..],
        };
        for &size in sizes {
            if cfg.short && size != 64 && t != Transport::Cochannel && size != 1 << 20 {
                continue;
            }
            let (link, peer) = setup.start(t, size, &format!("tp{size}"))?;
            live.push((t, size, link, peer, Vec::new()));
        }
    }
    let slice = plan.budget / plan.rounds as u32;
    for _ in 0..plan.rounds {
        for (_, size, link, peer, rates) in live.iter_mut() {
            rates.push(throughput(link.as_mut(), peer, *size, slice)?);
        }
    }
    for (t, size, _, _, mut rates) in live {
        rates.sort_by(|a: &(f64, f64), b| a.0.total_cmp(&b.0));
        let (msgs_per_s, gb_per_s) = rates.get(rates.len() / 2).copied().unwrap_or_default();
        report.throughput.push(ThroughputRow { transport: t.name().into(), size: size as u64, msgs_per_s, gb_per_s });
    }
    for size in SIZES_LARGE {
        report.throughput.push(memcpy_row(size, plan.budget / 2));
    }
    let conn = Connection::connect(&socket).map_err(io::Error::other)?;
    report.latency.extend(crate::locks::uncontended(&conn, plan.lock_samples)?);
    if setup.progress {
        eprintln!("  comutex (contended)");
    }
    let peer_cpu = cpus.map(|(_, c)| c);
    report.latency.push(crate::locks::contended(&conn, &cfg.exe, &socket, peer_cpu, plan.lock_contended)?);
    if setup.progress {
        eprintln!("  wake-up (blocking, copoll, async)");
    }
    report.wakeup = crate::wakeup::measure(&conn, &cfg.exe, &socket, peer_cpu, plan.wake_samples)?;
    drop(conn);
    drop(kernel);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}
