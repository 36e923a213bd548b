//! `comesg __peer poll ...`: helper processes for the copoll and async
//! tests. Each makes ports ready from another process, in an order the test
//! does not know in advance.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use comesg::{Connection, Rights, ServiceOptions};

use super::port::AnyPort;
use super::Outcome;
use crate::SocketArg;

/// What a poll helper does.
#[derive(Debug, clap::Subcommand)]
pub enum PollRole {
    /// Make each of PORTS ready once, in an order shuffled by SEED, GAP_US
    /// microseconds apart. A port is "KIND:PATH" with KIND one of channel,
    /// carrier, pipe (each gets one message "T" where T is its index),
    /// comutex (locked from the start, unlocked at its turn) and service
    /// (served from the start; the one call it gets is answered at its
    /// turn). Prints "ready" once it holds everything, waits for a message
    /// on the channel GO, then prints "order T1 T2 ..." and waits on GO
    /// again before it exits.
    MakeReady {
        #[arg(long)]
        go: String,
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value_t = 2000)]
        gap_us: u64,
        ports: Vec<String>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Once a message comes on GO, send one message ("I") to each channel
    /// PREFIX/I for I in 0..COUNT, in an order shuffled by SEED, GAP_US
    /// microseconds apart; then wait on GO again before exiting.
    Scatter {
        prefix: String,
        #[arg(long)]
        count: u32,
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value_t = 0)]
        gap_us: u64,
        #[arg(long)]
        go: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Send COUNT messages "ID SEQ" to the port PATH (any kind that sends),
    /// or with --ports N to ports PATH/FIRST..PATH/FIRST+N picked at
    /// random, with a pause of up to PAUSE_US microseconds (random) after
    /// each. Prints "done" at the end.
    Trickle {
        path: String,
        #[arg(long, default_value_t = 0)]
        first: u32,
        #[arg(long, default_value_t = 0)]
        ports: u32,
        #[arg(long)]
        id: u32,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 0)]
        pause_us: u64,
        #[command(flatten)]
        socket: SocketArg,
    },
}

/// A small deterministic shuffle (xorshift), so a failing order can be
/// replayed from the seed the test prints.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut x = seed | 1;
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

fn say(s: &str) {
    println!("{s}");
    let _ = std::io::stdout().flush();
}

/// A gate the service handler waits at until its turn.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }
    fn wait(&self) {
        let mut g = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while !*g {
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

enum Port {
    Channel(Box<comesg::Channel>),
    Carrier(Box<comesg::Cocarrier>),
    Pipe(Arc<comesg::Copipe>),
    Comutex(comesg::Comutex),
    Service { _provider: comesg::Provider, gate: Arc<Gate> },
}

fn open(conn: &Connection, spec: &str) -> Result<Port, Box<dyn std::error::Error>> {
    let (kind, path) = spec.split_once(':').ok_or("a port is KIND:PATH")?;
    Ok(match kind {
        "channel" => Port::Channel(Box::new(conn.open_channel(path, Rights::SEND)?)),
        "carrier" => Port::Carrier(Box::new(conn.open_cocarrier(path, Rights::SEND)?)),
        "pipe" => Port::Pipe(Arc::new(conn.open_copipe(path, Rights::SEND)?)),
        "comutex" => Port::Comutex(conn.open_comutex(path)?),
        "service" => {
            let gate = Arc::new(Gate::default());
            let g = gate.clone();
            let opts = ServiceOptions { workers: 1, ..Default::default() };
            let p = conn.serve(path, opts, move |c| {
                g.wait();
                c.request.to_vec()
            })?;
            Port::Service { _provider: p, gate }
        }
        other => return Err(format!("unknown kind {other}").into()),
    })
}

/// Runs a poll helper.
pub fn run(role: PollRole) -> Outcome {
    match role {
        PollRole::MakeReady { go, seed, gap_us, ports, socket } => {
            let conn = socket.connect()?;
            let go = conn.open_channel(&go, Rights::RECV)?;
            let ports = ports.iter().map(|p| open(&conn, p)).collect::<Result<Vec<_>, _>>()?;
            // Lock every comutex now (guards stay on this thread: they are
            // not Send), to unlock each at its turn.
            let mut guards: Vec<Option<comesg::ComutexGuard<'_>>> = ports
                .iter()
                .map(|p| match p {
                    Port::Comutex(m) => m.lock().ok(),
                    _ => None,
                })
                .collect();
            say("ready");
            go.recv_vec()?;
            let order = shuffled(ports.len(), seed);
            let mut pipes = Vec::new();
            for &t in &order {
                std::thread::sleep(Duration::from_micros(gap_us));
                let msg = t.to_string();
                match &ports[t] {
                    Port::Channel(c) => c.send(msg.as_bytes())?,
                    Port::Carrier(c) => c.send(msg.as_bytes())?,
                    // A pipe send returns once the receiver has taken it.
                    Port::Pipe(p) => {
                        let p = p.clone();
                        pipes.push(std::thread::spawn(move || p.send(msg.as_bytes())));
                    }
                    Port::Comutex(_) => drop(guards[t].take()),
                    Port::Service { gate, .. } => gate.open(),
                }
            }
            for p in pipes {
                p.join().map_err(|_| "pipe sender panicked")??;
            }
            let order: Vec<String> = order.iter().map(|t| t.to_string()).collect();
            say(&format!("order {}", order.join(" ")));
            go.recv_vec()?;
            Ok(ExitCode::SUCCESS)
        }
        PollRole::Scatter { prefix, count, seed, gap_us, go, socket } => {
            let conn = socket.connect()?;
            let go = conn.open_channel(&go, Rights::RECV)?;
            let chans = (0..count)
                .map(|i| conn.open_channel(&format!("{prefix}/{i}"), Rights::SEND))
                .collect::<Result<Vec<_>, _>>()?;
            say("ready");
            go.recv_vec()?;
            for i in shuffled(chans.len(), seed) {
                if gap_us > 0 {
                    std::thread::sleep(Duration::from_micros(gap_us));
                }
                chans[i].send(i.to_string().as_bytes())?;
            }
            say("sent");
            go.recv_vec()?;
            Ok(ExitCode::SUCCESS)
        }
        PollRole::Trickle { path, first, ports, id, count, pause_us, socket } => {
            let conn = socket.connect()?;
            let targets = if ports == 0 {
                vec![AnyPort::open(&conn, &path, Rights::SEND)?]
            } else {
                (first..first + ports)
                    .map(|i| AnyPort::open(&conn, &format!("{path}/{i}"), Rights::SEND))
                    .collect::<Result<Vec<_>, _>>()?
            };
            say("ready");
            let mut x = u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            for seq in 0..count {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                targets[(x % targets.len() as u64) as usize].send(format!("{id} {seq}").as_bytes())?;
                if pause_us > 0 {
                    std::thread::sleep(Duration::from_micros((x >> 20) % pause_us));
                }
            }
            say("done");
            Ok(ExitCode::SUCCESS)
        }
    }
}
