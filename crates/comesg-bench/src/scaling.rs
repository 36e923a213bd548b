//! How cost grows with load (`comesg bench --scaling`).
//!
//! - **Anycast**: N senders and N receivers, each its own process, on one
//!   COCHANNEL (N = 1, 2, 4, 8). Round trips: each sender sends a ping
//!   carrying its index into the shared channel, whichever receiver takes it
//!   echoes it on that sender's reply channel. Throughput: every sender
//!   streams, the receivers share the stream; total messages per second, and
//!   the receivers' counts must add up to what was sent.
//! - **Control path**: create + open + close of a COCHANNEL by name, with
//!   10 to 10,000 other named objects in the kernel, and with 1 to 1,000
//!   clients connected to it.
//!
//! Processes are not pinned here: with more processes than CPUs, pinning
//! would measure the scheduler's queue, not comesg.

use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout};
use std::time::{Duration, Instant};

use comesg::{ChannelOptions, Connection, Rights};
use serde::Serialize;

use crate::report::{human_ns, percentiles};

/// Senders (and as many receivers) on the anycast channel.
pub const PAIRS: [u32; 4] = [1, 2, 4, 8];
/// Named objects alive while the control path is timed.
pub const OBJECTS: [u32; 4] = [10, 100, 1_000, 10_000];
/// Connected clients while the control path is timed.
pub const CLIENTS: [u32; 4] = [1, 10, 100, 1_000];

/// Descriptors the kernel holds per COCHANNEL: each of the two segments
/// read-write and read-only, and its bell twice (for the object and for its
/// own view of the ring).
const FDS_PER_CHANNEL: u64 = 6;
/// First byte of a message that tells a receiver to stop.
const STOP: u8 = 0xff;
const MSG: usize = 64;

/// One anycast figure.
#[derive(Debug, Clone, Serialize)]
pub struct AnycastRow {
    /// Senders, and receivers, on the channel.
    pub pairs: u32,
    /// Median over the senders of each sender's median round trip.
    pub rt_median_ns: f64,
    /// Worst 99th percentile round trip of any sender.
    pub rt_p99_ns: f64,
    /// Messages per second, all senders together.
    pub msgs_per_s: f64,
}

/// One control-path figure.
#[derive(Debug, Clone, Serialize)]
pub struct ControlRow {
    /// Named objects in the kernel besides the one being cycled.
    pub objects: u32,
    /// How many of them are COCHANNELs (the rest, beyond what the kernel's
    /// descriptor limit lets it hold, are namespaces).
    pub channels: u32,
    /// Clients connected to the kernel.
    pub clients: u32,
    /// Median create, by name, of a new COCHANNEL.
    pub create_ns: f64,
    /// Median open of it by name.
    pub open_ns: f64,
    /// Median close of one handle.
    pub close_ns: f64,
    /// Whole create + open + close cycles per second.
    pub cycles_per_s: f64,
}

/// Everything `comesg bench --scaling` measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScalingReport {
    /// Round trips and throughput against the number of senders/receivers.
    pub anycast: Vec<AnycastRow>,
    /// Control path against the number of named objects (one client).
    pub by_objects: Vec<ControlRow>,
    /// Control path against the number of connected clients (100 objects).
    pub by_clients: Vec<ControlRow>,
    /// Where it ran.
    pub machine: String,
}

/// How to run the scaling benchmark.
#[derive(Debug, Clone)]
pub struct ScalingConfig {
    /// The `comesg` executable (started as `comesg __peer anycast ...`).
    pub exe: PathBuf,
    /// Fewer samples (seconds rather than a minute).
    pub short: bool,
    /// Progress lines on stderr.
    pub progress: bool,
}

/// Roles of `comesg __peer anycast-*` (each also takes `--socket`).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AnycastRole {
    /// Receive pings from REQ and echo each on `REPLIES-<index>`, until a
    /// stop message.
    AnycastEcho {
        /// The shared channel.
        req: String,
        /// Prefix of the reply channels.
        #[arg(long)]
        replies: String,
        /// How many reply channels.
        #[arg(long)]
        senders: u32,
        /// The kernel's socket.
        #[arg(long)]
        socket: PathBuf,
    },
    /// After "go" on stdin, time COUNT round trips; print "MEDIAN P99".
    AnycastPing {
        /// The shared channel.
        req: String,
        /// This sender's reply channel.
        #[arg(long)]
        reply: String,
        /// This sender's index (echoed back).
        #[arg(long)]
        index: u8,
        /// Round trips to time.
        #[arg(long)]
        count: u64,
        /// The kernel's socket.
        #[arg(long)]
        socket: PathBuf,
    },
    /// After "go" on stdin, send COUNT messages; print "done".
    AnycastSend {
        /// The shared channel.
        path: String,
        /// Messages to send.
        #[arg(long)]
        count: u64,
        /// The kernel's socket.
        #[arg(long)]
        socket: PathBuf,
    },
    /// Receive until a stop message; print how many came before it.
    AnycastSink {
        /// The shared channel.
        path: String,
        /// The kernel's socket.
        #[arg(long)]
        socket: PathBuf,
    },
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn wait_go() -> io::Result<()> {
    let mut line = String::new();
    io::stdin().read_line(&mut line)?;
    match line.trim() {
        "go" => Ok(()),
        l => Err(other(format!("expected go, got {l:?}"))),
    }
}

/// Runs one anycast role in this process.
pub fn peer(role: AnycastRole) -> io::Result<()> {
    let socket = match &role {
        AnycastRole::AnycastEcho { socket, .. }
        | AnycastRole::AnycastPing { socket, .. }
        | AnycastRole::AnycastSend { socket, .. }
        | AnycastRole::AnycastSink { socket, .. } => socket.clone(),
    };
    let conn = Connection::connect(&socket).map_err(other)?;
    let mut out = io::stdout().lock();
    let mut buf = [0u8; MSG];
    match role {
        AnycastRole::AnycastEcho { req, replies, senders, .. } => {
            let rx = conn.open_channel(&req, Rights::RECV).map_err(other)?;
            let tx = (0..senders)
                .map(|i| conn.open_channel(&format!("{replies}-{i}"), Rights::SEND).map_err(other))
                .collect::<io::Result<Vec<_>>>()?;
            writeln!(out, "ready")?;
            out.flush()?;
            loop {
                let n = rx.recv(&mut buf).map_err(other)?;
                if n == 0 || buf[0] == STOP {
                    return Ok(());
                }
                let back = tx.get(usize::from(buf[0])).ok_or_else(|| other("ping from an unknown sender"))?;
                back.send(&buf[..n]).map_err(other)?;
            }
        }
        AnycastRole::AnycastPing { req, reply, index, count, .. } => {
            let tx = conn.open_channel(&req, Rights::SEND).map_err(other)?;
            let rx = conn.open_channel(&reply, Rights::RECV).map_err(other)?;
            writeln!(out, "ready")?;
            out.flush()?;
            wait_go()?;
            let msg = [index; MSG];
            let mut samples = Vec::with_capacity(count as usize);
            for i in 0..count + count / 10 {
                let t = Instant::now();
                tx.send(&msg).map_err(other)?;
                rx.recv(&mut buf).map_err(other)?;
                if buf[0] != index {
                    return Err(other("reply carries another sender's index"));
                }
                if i >= count / 10 {
                    samples.push(t.elapsed().as_nanos() as f64);
                }
            }
            let (median, p99) = percentiles(&mut samples);
            writeln!(out, "{median} {p99}")?;
        }
        AnycastRole::AnycastSend { path, count, .. } => {
            let tx = conn.open_channel(&path, Rights::SEND).map_err(other)?;
            writeln!(out, "ready")?;
            out.flush()?;
            wait_go()?;
            let msg = [0u8; MSG];
            for _ in 0..count {
                tx.send(&msg).map_err(other)?;
            }
            writeln!(out, "done")?;
        }
        AnycastRole::AnycastSink { path, .. } => {
            let rx = conn.open_channel(&path, Rights::RECV).map_err(other)?;
            writeln!(out, "ready")?;
            out.flush()?;
            let mut n = 0u64;
            loop {
                let len = rx.recv(&mut buf).map_err(other)?;
                if len > 0 && buf[0] == STOP {
                    break;
                }
                n += 1;
            }
            writeln!(out, "{n}")?;
        }
    }
    out.flush()
}

/// A started peer: its stdin (for "go") and its stdout lines.
struct Proc {
    child: Child,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Proc {
    fn start(exe: &Path, socket: &Path, role: &str, args: &[String]) -> io::Result<Proc> {
        let (child, out, stdin) = crate::locks::spawn_peer(exe, role, args, socket, true)?;
        let stdin = stdin.ok_or_else(|| other("no peer stdin"))?;
        Ok(Proc { child, stdin, out })
    }
    fn go(&mut self) -> io::Result<()> {
        self.stdin.write_all(b"go\n")?;
        self.stdin.flush()
    }
    fn line(&mut self) -> io::Result<String> {
        let mut l = String::new();
        self.out.read_line(&mut l)?;
        Ok(l.trim().to_string())
    }
    fn finish(mut self) -> io::Result<()> {
        let st = self.child.wait()?;
        if st.success() {
            Ok(())
        } else {
            Err(other(format!("anycast peer failed: {st}")))
        }
    }
}

/// A peer left running when a run fails is killed, so that it neither
/// outlives the benchmark nor holds its output pipes open.
impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn channel_opts(slots: u32) -> ChannelOptions {
    ChannelOptions { slot_size: MSG as u32, slots, exclusive: true, ..Default::default() }
}

fn anycast_round_trips(conn: &Connection, exe: &Path, socket: &Path, pairs: u32, count: u64) -> io::Result<(f64, f64)> {
    let base = format!("/scaling/{}/rt{pairs}", comesg_sys::process::pid());
    let req = conn.create_channel(&format!("{base}/req"), channel_opts(256)).map_err(other)?;
    let replies = (0..pairs)
        .map(|i| conn.create_channel(&format!("{base}/rep-{i}"), channel_opts(64)).map_err(other))
        .collect::<io::Result<Vec<_>>>()?;
    let mut echoes = Vec::new();
    for _ in 0..pairs {
        let args = [format!("{base}/req"), "--replies".into(), format!("{base}/rep")];
        let args: Vec<String> = args.into_iter().chain(["--senders".into(), pairs.to_string()]).collect();
        echoes.push(Proc::start(exe, socket, "anycast-echo", &args)?);
    }
    let mut pings = Vec::new();
    for i in 0..pairs {
        let args = [
            format!("{base}/req"),
            "--reply".into(),
            format!("{base}/rep-{i}"),
            "--index".into(),
            i.to_string(),
            "--count".into(),
            count.to_string(),
        ];
        pings.push(Proc::start(exe, socket, "anycast-ping", &args)?);
    }
    for p in &mut pings {
        p.go()?;
    }
    let (mut medians, mut worst) = (Vec::new(), 0f64);
    for mut p in pings {
        let l = p.line()?;
        let mut f = l.split_whitespace().map(str::parse::<f64>);
        match (f.next(), f.next()) {
            (Some(Ok(m)), Some(Ok(p99))) => {
                medians.push(m);
                worst = worst.max(p99);
            }
            _ => return Err(other(format!("ping said {l:?}"))),
        }
        p.finish()?;
    }
    for _ in 0..pairs {
        req.send(&[STOP; MSG]).map_err(other)?;
    }
    for e in echoes {
        e.finish()?;
    }
    drop(replies);
    Ok((percentiles(&mut medians).0, worst))
}

fn anycast_throughput(conn: &Connection, exe: &Path, socket: &Path, pairs: u32, per_sender: u64) -> io::Result<f64> {
    let path = format!("/scaling/{}/tp{pairs}", comesg_sys::process::pid());
    let ch = conn.create_channel(&path, channel_opts(4096)).map_err(other)?;
    let mut sinks = Vec::new();
    for _ in 0..pairs {
        sinks.push(Proc::start(exe, socket, "anycast-sink", std::slice::from_ref(&path))?);
    }
    let mut senders = Vec::new();
    for _ in 0..pairs {
        let args = [path.clone(), "--count".into(), per_sender.to_string()];
        senders.push(Proc::start(exe, socket, "anycast-send", &args)?);
    }
    let t = Instant::now();
    for s in &mut senders {
        s.go()?;
    }
    for mut s in senders {
        let l = s.line()?;
        if l != "done" {
            return Err(other(format!("sender said {l:?}")));
        }
        s.finish()?;
    }
    // Queued behind every message: each receiver takes one and stops.
    for _ in 0..pairs {
        ch.send(&[STOP; MSG]).map_err(other)?;
    }
    let mut total = 0u64;
    for mut s in sinks {
        let l = s.line()?;
        total += l.parse::<u64>().map_err(|_| other(format!("receiver said {l:?}")))?;
        s.finish()?;
    }
    let secs = t.elapsed().as_secs_f64();
    let sent = per_sender * u64::from(pairs);
    if total != sent {
        return Err(other(format!("{pairs} senders sent {sent} messages, the receivers got {total}")));
    }
    Ok(total as f64 / secs)
}

/// Timings of create + open + close cycles, gathered over several rounds.
#[derive(Default)]
struct Cycles {
    create: Vec<f64>,
    open: Vec<f64>,
    close: Vec<f64>,
    cycles: u32,
    secs: f64,
}

impl Cycles {
    /// Creates a COCHANNEL at `path`, opens it again, closes both handles,
    /// `n` times (the name goes dead at each close and is created again, as
    /// a restarted service would).
    fn run(&mut self, conn: &Connection, path: &str, n: u32) -> io::Result<()> {
        let start = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            let ch = conn.create_channel(path, channel_opts(4)).map_err(other)?;
            let t1 = Instant::now();
            let again = conn.open_channel(path, Rights::RECV).map_err(other)?;
            let t2 = Instant::now();
            again.close().map_err(other)?;
            let t3 = Instant::now();
            ch.close().map_err(other)?;
            self.create.push((t1 - t).as_nanos() as f64);
            self.open.push((t2 - t1).as_nanos() as f64);
            self.close.push((t3 - t2).as_nanos() as f64);
        }
        self.secs += start.elapsed().as_secs_f64();
        self.cycles += n;
        Ok(())
    }

    fn row(mut self, objects: u32, channels: u32, clients: u32) -> ControlRow {
        ControlRow {
            objects,
            channels,
            clients,
            create_ns: percentiles(&mut self.create).0,
            open_ns: percentiles(&mut self.open).0,
            close_ns: percentiles(&mut self.close).0,
            cycles_per_s: f64::from(self.cycles) / self.secs.max(1e-9),
        }
    }
}

/// Named objects held in the kernel while the control path is timed:
/// COCHANNELs as far as the kernel's descriptor limit allows, namespaces
/// beyond that.
struct Population<'a> {
    conn: &'a Connection,
    prefix: String,
    channel_cap: usize,
    channels: Vec<comesg::Channel>,
    names: Vec<String>,
}

impl Population<'_> {
    fn grow_to(&mut self, n: usize) -> io::Result<()> {
        while self.names.len() < n {
            let path = format!("{}/o{}", self.prefix, self.names.len());
            if self.channels.len() < self.channel_cap {
                self.channels.push(self.conn.create_channel(&path, channel_opts(4)).map_err(other)?);
            } else {
                self.conn.mkdir(&path, 0o700).map_err(other)?;
            }
            self.names.push(path);
        }
        Ok(())
    }

    /// Removes every object and name, dead ones included.
    fn clear(&mut self) -> io::Result<()> {
        self.channels.clear();
        for n in self.names.drain(..) {
            match self.conn.unlink(&n) {
                Ok(()) | Err(comesg::Error::Kernel(comesg::KernelError::NotFound(_))) => {}
                Err(e) => return Err(other(e)),
            }
        }
        Ok(())
    }
}

/// Lets this process (and the kernel it starts) hold as many descriptors
/// as it may.
fn room_for_fds(want: u64) -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.maximum.is_some_and(|m| m < want) {
        // Needs CAP_SYS_RESOURCE; without it the hard limit stays.
        let _ = setrlimit(Resource::Nofile, rustix::process::Rlimit { current: Some(want), maximum: Some(want) });
        lim = getrlimit(Resource::Nofile);
    }
    let _ = comesg_sys::process::raise_nofile_limit();
    lim.maximum.unwrap_or(u64::MAX)
}

fn control_path(cfg: &ScalingConfig, socket: &Path, report: &mut ScalingReport) -> io::Result<()> {
    let conn = Connection::connect(socket).map_err(other)?;
    let pid = comesg_sys::process::pid();
    let limit = room_for_fds(FDS_PER_CHANNEL * u64::from(OBJECTS[3]) + 2 * u64::from(CLIENTS[3]) + 1024);
    // The kernel's fds per COCHANNEL, plus clients' sockets and
    // pidfds and some room.
    let cap = (limit.saturating_sub(2 * u64::from(CLIENTS[3]) + 512) / FDS_PER_CHANNEL) as usize;
    let (rounds, per_round) = if cfg.short { (1, 300) } else { (4, 500) };
    let mut by_objects: Vec<Cycles> = OBJECTS.iter().map(|_| Cycles::default()).collect();
    let mut by_clients: Vec<Cycles> = CLIENTS.iter().map(|_| Cycles::default()).collect();
    let mut pop = Population {
        conn: &conn,
        prefix: format!("/scaling/{pid}/objects"),
        channel_cap: cap,
        channels: Vec::new(),
        names: Vec::new(),
    };
    // Rounds, each going through every size: a change in the machine's
    // state during the run hits every size alike.
    for round in 0..rounds {
        if cfg.progress {
            eprintln!("  control path, round {} of {rounds}", round + 1);
        }
        for (i, &objects) in OBJECTS.iter().enumerate() {
            pop.grow_to(objects as usize)?;
            by_objects[i].run(&conn, &format!("/scaling/{pid}/probe-o{objects}"), per_round)?;
        }
        pop.clear()?;
        pop.grow_to(100)?;
        let mut idle = Vec::new();
        for (i, &clients) in CLIENTS.iter().enumerate() {
            while idle.len() + 1 < clients as usize {
                idle.push(Connection::connect(socket).map_err(other)?);
            }
            by_clients[i].run(&conn, &format!("/scaling/{pid}/probe-c{clients}"), per_round)?;
        }
        drop(idle);
        pop.clear()?;
    }
    let channels = |n: u32| n.min(cap as u32);
    for (c, &objects) in by_objects.into_iter().zip(OBJECTS.iter()) {
        report.by_objects.push(c.row(objects, channels(objects), 1));
    }
    for (c, &clients) in by_clients.into_iter().zip(CLIENTS.iter()) {
        report.by_clients.push(c.row(100, channels(100), clients));
    }
    Ok(())
}

/// Runs the whole scaling benchmark.
pub fn run(cfg: &ScalingConfig) -> io::Result<ScalingReport> {
    let dir = std::env::temp_dir().join(format!("comesg-scaling-{}", comesg_sys::process::pid()));
    let socket = dir.join("kernel.sock");
    // Before the kernel starts, so that it inherits the limit.
    room_for_fds(FDS_PER_CHANNEL * u64::from(OBJECTS[3]) + 2 * u64::from(CLIENTS[3]) + 1024);
    // Its own process, as in use: it must hold every object's descriptors
    // under its own limit.
    let conn = Connection::connect_or_start(&socket, &cfg.exe, Duration::from_secs(2)).map_err(other)?;
    let kernel = rustix::process::Pid::from_raw(conn.kernel_pid() as i32);
    let n = comesg_sys::process::allowed_cpus().len();
    let mut report = ScalingReport { machine: crate::report::machine_line(None, n), ..Default::default() };
    let (rt_count, per_sender) = if cfg.short { (2_000, 100_000) } else { (20_000, 1_000_000) };
    for pairs in PAIRS {
        if cfg.progress {
            eprintln!("  anycast: {pairs} senders, {pairs} receivers");
        }
        let (rt_median_ns, rt_p99_ns) = anycast_round_trips(&conn, &cfg.exe, &socket, pairs, rt_count)?;
        let msgs_per_s = anycast_throughput(&conn, &cfg.exe, &socket, pairs, per_sender / u64::from(pairs))?;
        report.anycast.push(AnycastRow { pairs, rt_median_ns, rt_p99_ns, msgs_per_s });
    }
    let result = control_path(cfg, &socket, &mut report);
    drop(conn);
    if let Some(pid) = kernel {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let _ = std::fs::remove_dir_all(&dir);
    result.map(|()| report)
}

impl ScalingReport {
    /// The report as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The report as tables, each figure beside its ratio to the first row.
    pub fn table(&self) -> String {
        let mut out = format!("machine: {}\n\n", self.machine);
        out.push_str("Anycast on one COCHANNEL (64 B; N senders and N receivers, one process each)\n");
        out.push_str(&format!(
            "{:>4} {:>11} {:>8} {:>11} {:>14} {:>8}\n",
            "N", "rt median", "x N=1", "rt p99", "total msgs/s", "x N=1"
        ));
        let first = self.anycast.first().cloned();
        for r in &self.anycast {
            out.push_str(&format!(
                "{:>4} {:>11} {:>8} {:>11} {:>14} {:>8}\n",
                r.pairs,
                human_ns(r.rt_median_ns),
                first.as_ref().map(|f| format!("{:.2}x", r.rt_median_ns / f.rt_median_ns)).unwrap_or_default(),
                human_ns(r.rt_p99_ns),
                format!("{:.2} M", r.msgs_per_s / 1e6),
                first.as_ref().map(|f| format!("{:.2}x", r.msgs_per_s / f.msgs_per_s)).unwrap_or_default(),
            ));
        }
        control_table(&mut out, "Control path against named objects (one client)", "objects", &self.by_objects);
        control_table(&mut out, "Control path against connected clients (100 objects)", "clients", &self.by_clients);
        out
    }
}

fn control_table(out: &mut String, title: &str, what: &str, rows: &[ControlRow]) {
    out.push_str(&format!("\n{title}\n"));
    out.push_str(&format!(
        "{:>16} {:>10} {:>10} {:>10} {:>12} {:>8}\n",
        what, "create", "open", "close", "cycles/s", "cost x"
    ));
    let first = rows.first().map(|r| r.cycles_per_s);
    for r in rows {
        let n = match what {
            "objects" if r.channels < r.objects => format!("{} ({} ch)", r.objects, r.channels),
            "objects" => r.objects.to_string(),
            _ => r.clients.to_string(),
        };
        out.push_str(&format!(
            "{:>16} {:>10} {:>10} {:>10} {:>12.0} {:>8}\n",
            n,
            human_ns(r.create_ns),
            human_ns(r.open_ns),
            human_ns(r.close_ns),
            r.cycles_per_s,
            first.map(|f| format!("{:.2}x", f / r.cycles_per_s)).unwrap_or_default(),
        ));
    }
    if rows.iter().any(|r| r.channels < r.objects) {
        out.push_str(
            "  (ch: how many are COCHANNELs; the kernel's descriptor limit allows no more, the rest are namespaces)\n",
        );
    }
}
