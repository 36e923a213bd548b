//! Lock benchmarks: an uncontended comutex beside `std::sync::Mutex` in the
//! same process and the same rounds, and a comutex two processes fight over.

use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use comesg::{ComutexOptions, Connection};

use crate::report::{percentiles, LatencyRow};

/// Lock+unlock pairs per timed sample.
const BATCH: u32 = 1000;

fn per_pair(mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..BATCH {
        f();
    }
    t.elapsed().as_nanos() as f64 / BATCH as f64
}

fn row(transport: &str, samples: &mut [f64]) -> LatencyRow {
    let (median_ns, p99_ns) = percentiles(samples);
    LatencyRow { transport: transport.into(), size: 0, median_ns, p99_ns }
}

/// Starts `comesg __peer ARGS --socket S [--cpu C]` and waits for its
/// "ready" line.
pub(crate) fn start_peer(
    exe: &Path,
    args: &[&str],
    socket: &Path,
    cpu: Option<usize>,
) -> io::Result<(Child, BufReader<ChildStdout>)> {
    let (role, rest) = args.split_first().ok_or_else(|| io::Error::other("no peer role"))?;
    let mut rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
    if let Some(c) = cpu {
        rest.extend(["--cpu".into(), c.to_string()]);
    }
    let (child, out, _) = spawn_peer(exe, role, &rest, socket, false)?;
    Ok((child, out))
}

/// Starts `comesg __peer ROLE ARGS --socket S`, with its stdin piped to the
/// caller if `stdin`, and waits for its "ready" line.
pub(crate) fn spawn_peer(
    exe: &Path,
    role: &str,
    args: &[String],
    socket: &Path,
    stdin: bool,
) -> io::Result<(Child, BufReader<ChildStdout>, Option<ChildStdin>)> {
    let mut cmd = Command::new(exe);
    cmd.arg("__peer").arg(role).args(args).arg("--socket").arg(socket);
    let input = if stdin { Stdio::piped() } else { Stdio::null() };
    let mut child = cmd.stdin(input).stdout(Stdio::piped()).spawn()?;
    let mut out = BufReader::new(child.stdout.take().ok_or_else(|| io::Error::other("no peer stdout"))?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        return Err(io::Error::other(format!("{role} peer said {line:?}")));
    }
    let input = child.stdin.take();
    Ok((child, out, input))
}

fn lock_failed<G>(e: comesg::LockError<G>) -> io::Error {
    io::Error::other(e.map(|_| ()).to_string())
}

/// Uncontended lock+unlock: `comutex` and `std_mutex` rows, in interleaved
/// samples so that both see the same machine state.
pub fn uncontended(conn: &Connection, samples: usize) -> io::Result<[LatencyRow; 2]> {
    let path = format!("/bench/{}/lock", comesg_sys::process::pid());
    let m = conn.create_comutex(&path, ComutexOptions::default()).map_err(io::Error::other)?;
    let std_m = std::sync::Mutex::new(0u64);
    let (mut co, mut st) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    let mut failed = None;
    for _ in 0..samples {
        co.push(per_pair(|| match m.lock() {
            Ok(g) => drop(std::hint::black_box(g)),
            Err(e) => failed = Some(lock_failed(e)),
        }));
        st.push(per_pair(|| {
            let mut g = std_m.lock().unwrap_or_else(|p| p.into_inner());
            *std::hint::black_box(&mut *g) += 1;
        }));
        if let Some(e) = failed.take() {
            return Err(e);
        }
    }
    Ok([row("comutex", &mut co), row("std_mutex", &mut st)])
}

/// Two processes (this one and `exe __peer lock-loop`) each take and drop
/// one comutex `count` times: nanoseconds per lock+unlock under contention.
pub fn contended(
    conn: &Connection,
    exe: &Path,
    socket: &Path,
    cpu: Option<usize>,
    count: u64,
) -> io::Result<LatencyRow> {
    let path = format!("/bench/{}/contended", comesg_sys::process::pid());
    let m = conn.create_comutex(&path, ComutexOptions::default()).map_err(io::Error::other)?;
    let (mut child, mut out) = start_peer(exe, &["lock-loop", &path, "--count", &count.to_string()], socket, cpu)?;
    let mut line = String::new();
    let t = Instant::now();
    for _ in 0..count {
        drop(m.lock().map_err(lock_failed)?);
    }
    line.clear();
    out.read_line(&mut line)?;
    let ns = t.elapsed().as_nanos() as f64 / (2 * count) as f64;
    let st = child.wait()?;
    if !st.success() || line.trim() != "done" {
        return Err(io::Error::other(format!("lock-loop peer failed: {st}, {line:?}")));
    }
    Ok(LatencyRow { transport: "comutex_contended".into(), size: 0, median_ns: ns, p99_ns: ns })
}
