//! Wake-up latency: how long a message takes to reach a receiver that is
//! asleep, when it waits in a blocking receive, in a copoll set, or in an
//! async receive on tokio.
//!
//! One process per way of waiting, each on its own COCHANNEL; the parent
//! sends to them in turn, a pause apart (long enough that every receiver
//! has stopped spinning and sleeps), each message carrying its send time
//! (`CLOCK_MONOTONIC`, the same clock in every process). The receiver
//! records arrival minus send time and prints the median and 99th
//! percentile when done.

use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use comesg::{ChannelOptions, Connection, Copoll, Interest, Rights};

use crate::report::{percentiles, LatencyRow};

/// How a receiver waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// `Channel::recv` (spin, then futex).
    Blocking,
    /// `Copoll::wait`, then `try_recv`.
    Copoll,
    /// `Channel::recv_vec_async` on a current-thread tokio runtime.
    Async,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Blocking => "blocking",
            Mode::Copoll => "copoll",
            Mode::Async => "async",
        }
    }
}

/// Pause between messages: blocking receivers spin for some tens of
/// microseconds before they sleep.
const GAP: Duration = Duration::from_micros(400);

fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Arguments of `comesg __peer wake-recv`.
#[derive(Debug, Clone, clap::Args)]
pub struct WakeArgs {
    /// Channel to receive from.
    pub path: String,
    /// How to wait.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// Messages to receive.
    #[arg(long)]
    pub count: usize,
    /// CPU to pin to.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// Kernel socket.
    #[arg(long)]
    pub socket: std::path::PathBuf,
}

fn latency_of(msg: &[u8]) -> f64 {
    let mut t = [0u8; 8];
    t.copy_from_slice(&msg[..8.min(msg.len())]);
    now_ns().saturating_sub(u64::from_le_bytes(t)) as f64
}

/// The receiving process: prints "ready", receives, prints "MEDIAN P99".
pub fn receive(a: WakeArgs) -> io::Result<()> {
    if let Some(c) = a.cpu {
        let _ = comesg_sys::process::pin_to_cpu(c);
    }
    let conn = Connection::connect(&a.socket).map_err(io::Error::other)?;
    let ch = conn.open_channel(&a.path, Rights::RECV).map_err(io::Error::other)?;
    let mut samples = Vec::with_capacity(a.count);
    println!("ready");
    match a.mode {
        Mode::Blocking => {
            let mut buf = [0u8; 64];
            for _ in 0..a.count {
                ch.recv(&mut buf).map_err(io::Error::other)?;
                samples.push(latency_of(&buf));
            }
        }
        Mode::Copoll => {
            let mut poll = Copoll::new()?;
            poll.add(&ch, 0, Interest::READABLE)?;
            let mut events = Vec::new();
            let mut buf = [0u8; 64];
            while samples.len() < a.count {
                poll.wait(&mut events, None)?;
                while ch.try_recv(&mut buf).is_ok() {
                    samples.push(latency_of(&buf));
                }
            }
        }
        Mode::Async => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                for _ in 0..a.count {
                    let m = ch.recv_vec_async().await.map_err(io::Error::other)?;
                    samples.push(latency_of(&m));
                }
                Ok::<_, io::Error>(())
            })?;
        }
    }
    let (median, p99) = percentiles(&mut samples);
    println!("{median} {p99}");
    Ok(())
}

struct Receiver {
    mode: Mode,
    tx: comesg::Channel,
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

/// Measures every mode, interleaved (one message to each in turn), `count`
/// messages each.
pub fn measure(
    conn: &Connection,
    exe: &Path,
    socket: &Path,
    cpu: Option<usize>,
    count: usize,
) -> io::Result<Vec<LatencyRow>> {
    let mut rx = Vec::new();
    for mode in [Mode::Blocking, Mode::Copoll, Mode::Async] {
        let path = format!("/bench/{}/wake-{}", comesg_sys::process::pid(), mode.name());
        let opts = ChannelOptions { slot_size: 64, slots: 64, exclusive: true, ..Default::default() };
        let tx = conn.create_channel(&path, opts).map_err(io::Error::other)?;
        let args = ["wake-recv", &path, "--mode", mode.name(), "--count", &count.to_string()];
        let (child, out) = crate::locks::start_peer(exe, &args, socket, cpu)?;
        rx.push(Receiver { mode, tx, child, out });
    }
    let mut msg = [0u8; 64];
    for _ in 0..count {
        for r in &rx {
            std::thread::sleep(GAP);
            msg[..8].copy_from_slice(&now_ns().to_le_bytes());
            r.tx.send(&msg).map_err(io::Error::other)?;
        }
    }
    let mut rows = Vec::new();
    for mut r in rx {
        let mut line = String::new();
        r.out.read_line(&mut line)?;
        let st = r.child.wait()?;
        let mut f = line.split_whitespace().map(str::parse::<f64>);
        match (f.next(), f.next()) {
            (Some(Ok(median_ns)), Some(Ok(p99_ns))) if st.success() => {
                rows.push(LatencyRow { transport: format!("{}_wake", r.mode.name()), size: 64, median_ns, p99_ns })
            }
            _ => return Err(io::Error::other(format!("wake-recv {} failed: {st}, {line:?}", r.mode.name()))),
        }
    }
    Ok(rows)
}
