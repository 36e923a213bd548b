//! Setting up each link (this process's end, the peer process's end), and
//! the loops that measure it.

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use comesg::{Connection, Kernel, KernelConfig};
use comesg_bench::report::{percentiles, LatencyRow, ThroughputRow};
use comesg_sys::mapping::{Access, Mapping};

use crate::comesg_side::{self, Wait};
use crate::endpoint::{other, set_header, Endpoint, Kind};
use crate::iceoryx2_side::{self, Wait as IceWait};
use crate::report::Report;
use crate::spin::{self, Spin};

/// Message sizes of the round trips and streams.
pub const SIZES: [usize; 3] = [64, 4096, 65536];

/// Arguments of the peer process.
#[derive(Debug, Clone, clap::Args)]
pub struct PeerArgs {
    /// What it is the far end of.
    #[arg(long, value_enum)]
    kind: Kind,
    /// Name prefix of the link's ports or services.
    #[arg(long)]
    base: String,
    /// Largest message.
    #[arg(long)]
    size: usize,
    /// The comesg kernel's socket.
    #[arg(long)]
    socket: PathBuf,
    /// The run's tag (iceoryx2's prefix).
    #[arg(long)]
    tag: String,
    /// CPU to pin to.
    #[arg(long)]
    cpu: Option<usize>,
    /// Inherited fd of the spin segment.
    #[arg(long)]
    fd: Option<i32>,
}

/// The peer process: builds its end, says "ready", then obeys "echo N",
/// "sink N LOAN" and "exit" lines on stdin, answering "done" to each.
pub fn peer(a: PeerArgs) -> io::Result<()> {
    if let Some(c) = a.cpu {
        comesg_sys::process::pin_to_cpu(c)?;
    }
    let mut out = io::stdout().lock();
    // Kept alive while the peer runs.
    let mut _node = None;
    let mut ep: Box<dyn Endpoint> = match a.kind {
        Kind::Spin => {
            let fd = comesg_sys::process::inherited_fd(a.fd.ok_or_else(|| other("--fd missing"))?)?;
            Box::new(Spin::new(Mapping::map(&fd, spin::SEGMENT, Access::ReadWrite)?, false))
        }
        Kind::Cochannel | Kind::CochannelBlocking | Kind::CochannelCopoll => {
            let conn = Connection::connect(&a.socket).map_err(other)?;
            Box::new(comesg_side::open(&conn, &a.base, comesg_wait(a.kind))?)
        }
        Kind::Coservice => {
            let conn = Connection::connect(&a.socket).map_err(other)?;
            let provider = comesg_side::provide(&conn, &a.base, a.size)?;
            writeln!(out, "ready")?;
            out.flush()?;
            // The provider's worker serves; this thread reports each batch
            // done once the worker has served every call so far.
            let served = || provider.worker_calls().iter().sum::<u64>();
            let mut expected = 0;
            let mut line = String::new();
            while io::stdin().read_line(&mut line)? > 0 {
                match line.split_whitespace().collect::<Vec<_>>()[..] {
                    ["echo", n] => expected += n.parse::<u64>().map_err(|_| other("bad command"))?,
                    _ => return Ok(()),
                }
                while served() < expected {
                    std::thread::sleep(Duration::from_millis(1));
                }
                writeln!(out, "done")?;
                out.flush()?;
                line.clear();
            }
            return Ok(());
        }
        Kind::Iceoryx2 | Kind::Iceoryx2Event | Kind::Iceoryx2Waitset => {
            let node = iceoryx2_side::node(&a.tag)?;
            let end = iceoryx2_side::PubSubEnd::new(&node, &a.base, a.size, ice_wait(a.kind), false)?;
            _node = Some(node);
            Box::new(end)
        }
        Kind::Iceoryx2Rr => {
            let node = iceoryx2_side::node(&a.tag)?;
            let end = iceoryx2_side::RrServer::new(&node, &a.base, a.size)?;
            _node = Some(node);
            Box::new(end)
        }
    };
    ep.ready()?;
    writeln!(out, "ready")?;
    out.flush()?;
    let mut buf = vec![0u8; a.size.max(8)];
    let mut line = String::new();
    loop {
        line.clear();
        if io::stdin().read_line(&mut line)? == 0 {
            return Ok(());
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok()).ok_or_else(|| other("bad command"));
        match words.first().copied() {
            Some("echo") => {
                for _ in 0..num(1)? {
                    ep.echo()?;
                }
            }
            Some("sink") => {
                let (n, size, loan) = (num(1)?, num(2)? as usize, num(3)? == 1);
                let first = num(4)?;
                for i in 0..n {
                    let h = ep.recv(&mut buf[..size], loan)?;
                    if h != first + i {
                        return Err(other(format!("message {} came as {h}: lost or reordered", first + i)));
                    }
                }
                let mut ack = [0u8; 8];
                set_header(&mut ack, first + n);
                ep.send(&ack, false)?;
            }
            _ => return Ok(()),
        }
        writeln!(out, "done")?;
        out.flush()?;
    }
}

fn comesg_wait(k: Kind) -> Wait {
    match k {
        Kind::CochannelBlocking => Wait::Blocking,
        Kind::CochannelCopoll => Wait::Copoll,
        _ => Wait::Poll,
    }
}

fn ice_wait(k: Kind) -> IceWait {
    match k {
        Kind::Iceoryx2Event => IceWait::Listener,
        Kind::Iceoryx2Waitset => IceWait::Waitset,
        _ => IceWait::Poll,
    }
}

/// One link: this process's end and the peer process.
struct Link {
    kind: Kind,
    ep: Box<dyn Endpoint>,
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
    seq: u64,
    // Kept alive while the link is measured.
    _conn: Option<Connection>,
    _node: Option<iceoryx2::node::Node<iceoryx2::prelude::ipc::Service>>,
}

impl Link {
    fn command(&mut self, cmd: &str) -> io::Result<()> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()
    }
    fn done(&mut self) -> io::Result<()> {
        let mut l = String::new();
        self.out.read_line(&mut l)?;
        match l.trim() {
            "done" => Ok(()),
            l => Err(other(format!("{} peer said {l:?}", self.kind.name()))),
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.command("exit");
        comesg_bench::report::reap(&mut self.child, Duration::from_secs(5));
    }
}

struct Setup<'a> {
    socket: &'a Path,
    tag: String,
    peer_cpu: Option<usize>,
    progress: bool,
    links: u32,
}

impl Setup<'_> {
    fn start(&mut self, kind: Kind, size: usize) -> io::Result<Link> {
        self.links += 1;
        let base = format!("cvi/{}/{}-{}-{size}", self.tag, self.links, kind.name());
        let mut conn = None;
        let mut node = None;
        let mut inherit = None;
        let ep: Option<Box<dyn Endpoint>> = match kind {
            Kind::Spin => {
                let seg = comesg_sys::memfd::create_segment("comesg-vs-spin", spin::SEGMENT as u64)?;
                let m = Mapping::map(&seg, spin::SEGMENT, Access::ReadWrite)?;
                inherit = Some(seg);
                Some(Box::new(Spin::new(m, true)))
            }
            Kind::Cochannel | Kind::CochannelBlocking | Kind::CochannelCopoll => {
                let c = Connection::connect(self.socket).map_err(other)?;
                let ends = comesg_side::create(&c, &format!("/{base}"), size, comesg_wait(kind))?;
                conn = Some(c);
                Some(Box::new(ends))
            }
            // The provider registers the service in the peer; opened below.
            Kind::Coservice => None,
            Kind::Iceoryx2 | Kind::Iceoryx2Event | Kind::Iceoryx2Waitset => {
                let n = iceoryx2_side::node(&self.tag)?;
                let end = iceoryx2_side::PubSubEnd::new(&n, &base, size, ice_wait(kind), true)?;
                node = Some(n);
                Some(Box::new(end))
            }
            Kind::Iceoryx2Rr => {
                let n = iceoryx2_side::node(&self.tag)?;
                let end = iceoryx2_side::RrClient::new(&n, &base, size)?;
                node = Some(n);
                Some(Box::new(end))
            }
        };
        let path = if kind == Kind::Coservice || kind.name().starts_with("cochannel") {
            format!("/{base}")
        } else {
            base.clone()
        };
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["__peer", "--kind", kind.name(), "--base", &path, "--size", &size.to_string()]);
        cmd.arg("--socket").arg(self.socket).args(["--tag", &self.tag]);
        if let Some(c) = self.peer_cpu {
            cmd.args(["--cpu", &c.to_string()]);
        }
        if let Some(fd) = &inherit {
            cmd.args(["--fd", &fd.as_raw_fd().to_string()]);
            comesg_sys::process::set_inheritable(fd.as_fd(), true)?;
        }
        let spawned = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn();
        drop(inherit);
        let mut child = spawned?;
        let stdin = child.stdin.take().ok_or_else(|| other("no peer stdin"))?;
        let mut out = BufReader::new(child.stdout.take().ok_or_else(|| other("no peer stdout"))?);
        let mut l = String::new();
        out.read_line(&mut l)?;
        if l.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            return Err(other(format!("{} peer did not start (said {l:?})", kind.name())));
        }
        let mut ep = match ep {
            Some(ep) => ep,
            None => {
                let c = Connection::connect(self.socket).map_err(other)?;
                let svc = comesg_side::Service::open(&c, &path)?;
                conn = Some(c);
                Box::new(svc)
            }
        };
        ep.ready()?;
        if self.progress {
            eprintln!("  {} ({} B)", kind.name(), size);
        }
        Ok(Link { kind, ep, child, stdin, out, seq: 0, _conn: conn, _node: node })
    }
}

/// Times `n` round trips one by one (after a tenth as many unrecorded).
fn round_trips(link: &mut Link, n: u64, size: usize, samples: &mut Vec<f64>) -> io::Result<()> {
    let warm = (n / 10).max(10);
    let mut msg = vec![0u8; size];
    let mut back = vec![0u8; size];
    link.command(&format!("echo {}", warm + n))?;
    for i in 0..warm + n {
        let seq = link.seq;
        link.seq += 1;
        set_header(&mut msg, seq);
        let t = Instant::now();
        link.ep.send(&msg, false)?;
        let h = link.ep.recv(&mut back, true)?;
        let ns = t.elapsed().as_nanos() as f64;
        if h != seq {
            return Err(other(format!("{}: sent {seq}, {h} came back", link.kind.name())));
        }
        if i >= warm {
            samples.push(ns);
        }
    }
    link.done()
}

/// Streams `n` messages one way; the peer checks each arrives, in order,
/// and acknowledges the last.
fn stream(link: &mut Link, n: u64, size: usize, loan: bool) -> io::Result<Duration> {
    let mut msg = vec![0x5au8; size];
    let mut ack = [0u8; 8];
    let first = link.seq;
    link.command(&format!("sink {n} {size} {} {first}", u8::from(loan)))?;
    let t = Instant::now();
    for i in 0..n {
        set_header(&mut msg, first + i);
        link.ep.send(&msg, loan)?;
    }
    let h = link.ep.recv(&mut ack, false)?;
    let d = t.elapsed();
    link.seq = first + n;
    if h != first + n {
        return Err(other(format!("{}: wrong acknowledgement {h}", link.kind.name())));
    }
    link.done()?;
    Ok(d)
}

/// Streams for about `budget` (a short run first picks the count).
fn throughput(link: &mut Link, size: usize, loan: bool, budget: Duration) -> io::Result<f64> {
    let probe = ((32usize << 20) / size).clamp(100, 20_000) as u64;
    let per = stream(link, probe, size, loan)?.as_secs_f64() / probe as f64;
    let n = ((budget.as_secs_f64() / per.max(1e-9)) as u64).clamp(probe, 50_000_000);
    Ok(n as f64 / stream(link, n, size, loan)?.as_secs_f64())
}

/// Runs everything; `scale` multiplies every sample count (1 by default).
pub fn run(scale: f64, progress: bool) -> io::Result<Report> {
    let tag = comesg_sys::process::pid().to_string();
    let dir = std::env::temp_dir().join(format!("comesg-vs-iceoryx2-{tag}"));
    let socket = dir.join("kernel.sock");
    let kernel = Kernel::spawn(KernelConfig::new(&socket)).map_err(other)?;
    let cpus = comesg_sys::process::allowed_cpus();
    let pinned = (cpus.len() >= 2).then(|| (cpus[0], cpus[1]));
    if let Some((mine, _)) = pinned {
        comesg_sys::process::pin_to_cpu(mine)?;
    }
    let mut setup = Setup { socket: &socket, tag: tag.clone(), peer_cpu: pinned.map(|p| p.1), progress, links: 0 };
    let result = measure(&mut setup, scale);
    drop(kernel);
    iceoryx2_side::clean_up(&tag);
    let _ = std::fs::remove_dir_all(&dir);
    let mut report = result?;
    report.machine = comesg_bench::report::machine_line(pinned, cpus.len());
    Ok(report)
}

fn count(scale: f64, n: u64) -> u64 {
    ((n as f64 * scale) as u64).max(200)
}

fn measure(setup: &mut Setup<'_>, scale: f64) -> io::Result<Report> {
    let mut report = Report::default();
    let rounds = 5;
    // Round trips in interleaved rounds, so a change in the machine's state
    // (these VMs' vCPUs move between host cores) hits every transport alike.
    for size in SIZES {
        let kinds: &[Kind] = if size == 64 {
            &[
                Kind::Spin,
                Kind::Cochannel,
                Kind::Iceoryx2,
                Kind::CochannelBlocking,
                Kind::CochannelCopoll,
                Kind::Iceoryx2Event,
                Kind::Iceoryx2Waitset,
                Kind::Coservice,
                Kind::Iceoryx2Rr,
            ]
        } else {
            &[
                Kind::Cochannel,
                Kind::Iceoryx2,
                Kind::CochannelBlocking,
                Kind::CochannelCopoll,
                Kind::Iceoryx2Event,
                Kind::Iceoryx2Waitset,
            ]
        };
        let mut links = Vec::new();
        for &k in kinds {
            links.push((setup.start(k, size)?, Vec::new()));
        }
        for _ in 0..rounds {
            for (link, samples) in links.iter_mut() {
                let asleep = matches!(link.kind, Kind::CochannelCopoll | Kind::Iceoryx2Event | Kind::Iceoryx2Waitset);
                let n = match (asleep, size) {
                    (true, _) => 10_000,
                    (false, 64) => 200_000,
                    (false, _) => 20_000,
                };
                round_trips(link, count(scale, n) / rounds, size, samples)?;
            }
        }
        for (link, mut samples) in links {
            let (median_ns, p99_ns) = percentiles(&mut samples);
            report.latency.push(LatencyRow {
                transport: link.kind.name().into(),
                size: size as u64,
                median_ns,
                p99_ns,
            });
        }
    }
    let budget = Duration::from_secs_f64((0.4 * scale).clamp(0.05, 2.0));
    for size in SIZES {
        for (kind, loan) in
            [(Kind::Cochannel, true), (Kind::Iceoryx2, true), (Kind::Cochannel, false), (Kind::Iceoryx2, false)]
        {
            let mut link = setup.start(kind, size)?;
            let msgs_per_s = throughput(&mut link, size, loan, budget)?;
            let name = if loan { format!("{}_loan", kind.name()) } else { kind.name().to_string() };
            report.throughput.push(ThroughputRow {
                transport: name,
                size: size as u64,
                msgs_per_s,
                gb_per_s: msgs_per_s * size as f64 / 1e9,
            });
        }
    }
    Ok(report)
}
