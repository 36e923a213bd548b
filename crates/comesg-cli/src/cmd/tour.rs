//! `comesg tour`: what comesg is, shown in one minute with real processes.
//!
//! It connects to the microkernel (starting one if none runs), creates a
//! channel, starts two sender and two receiver processes on it, shows
//! `comesg ls` while they hold it, and checks that every message arrived
//! exactly once; then a writer process streams bytes to a reader process
//! through a COPIPE; then an 8 MiB frame goes through a COCARRIER to a
//! receiver that finds it cannot write it; then two processes share a counter through a comutex and
//! one dies holding it; then a service with a worker pool answers two caller
//! processes and its provider is killed; then one process waits on four
//! ports of four kinds at once (copoll) while another makes them ready. It
//! ends with a short benchmark against the baselines.

use std::collections::HashSet;
use std::error::Error;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Instant;

use comesg::ChannelOptions;

use super::peer::{lock_counter, Counter};
use super::Outcome;
use crate::SocketArg;

/// Arguments of `comesg tour`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Messages each sender sends.
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Skip the closing benchmark.
    #[arg(long)]
    no_bench: bool,
    #[command(flatten)]
    socket: SocketArg,
}

fn peer(
    exe: &std::path::Path,
    socket: &std::path::Path,
    args: &[&str],
) -> std::io::Result<(Child, BufReader<std::process::ChildStdout>)> {
    let mut child = Command::new(exe)
        .arg("__peer")
        .args(args)
        .arg("--socket")
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let out = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
    let mut out = BufReader::new(out);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if line.trim() != "ready" {
        return Err(std::io::Error::other(format!("peer did not start: {line:?}")));
    }
    Ok((child, out))
}

fn pipe_part(conn: &comesg::Connection, exe: &Path, sock: &Path, ns: &str) -> Result<bool, Box<dyn Error>> {
    let path = format!("{ns}/stream");
    println!("\n-- COPIPE: a byte stream, one copy straight into the reader's buffer --");
    let opts = comesg::CopipeOptions { buffer: 1 << 20, receivers: 1, exclusive: true, ..Default::default() };
    let creator = conn.create_copipe(&path, opts)?;
    let bytes: u64 = 256 << 20;
    let (mut reader, rout) = peer(exe, sock, &["stream-read", &path])?;
    let (mut writer, wout) = peer(exe, sock, &["stream-write", &path, "--bytes", &bytes.to_string()])?;
    // The writer is the only sender left once the creator's handle goes:
    // the reader sees end of file when the writer finishes.
    drop(creator);
    let t = Instant::now();
    let wrote = wout.lines().collect::<Result<Vec<String>, _>>()?;
    let read = rout.lines().collect::<Result<Vec<String>, _>>()?;
    let secs = t.elapsed().as_secs_f64();
    writer.wait()?;
    reader.wait()?;
    let field = |v: &[String], i: usize| v.first().and_then(|l| l.split_whitespace().nth(i).map(str::to_string));
    let same = field(&wrote, 1).is_some() && field(&wrote, 1) == field(&read, 1) && field(&wrote, 2) == field(&read, 2);
    println!(
        "a writer process streamed {} MiB to a reader process through std::io::Write/Read in {:.0} ms ({:.1} GB/s, including generating and hashing the bytes)",
        bytes >> 20,
        secs * 1e3,
        bytes as f64 / secs / 1e9
    );
    println!("same length and hash on both sides: {}", if same { "yes" } else { "NO" });
    Ok(same)
}

fn carrier_part(conn: &comesg::Connection, exe: &Path, sock: &Path, ns: &str) -> Result<bool, Box<dyn Error>> {
    let path = format!("{ns}/frames");
    println!("\n-- COCARRIER: big messages nobody can change after sending --");
    let opts = comesg::CocarrierOptions {
        arena: 64 << 20,
        max_message: 16 << 20,
        exclusive: true,
        persistent: false,
        ..Default::default()
    };
    let tx = conn.create_cocarrier(&path, opts)?;
    let (mut poker, pout) = peer(exe, sock, &["poke-carrier", &path])?;
    let frame = vec![0x5au8; 8 << 20];
    let t = Instant::now();
    tx.send(&frame)?;
    let sent = t.elapsed();
    let got = pout.lines().next().transpose()?.unwrap_or_default().replace("got ", "");
    let st = poker.wait()?;
    use std::os::unix::process::ExitStatusExt;
    let segv = st.signal() == Some(11);
    println!(
        "sent an 8 MiB frame in {:.1} ms (the microkernel copied it once into an arena only it can write)",
        sent.as_secs_f64() * 1e3
    );
    println!(
        "a receiver process read it in place ({got} bytes), then tried to write into it: {}",
        if segv { "killed by SIGSEGV (its mapping is read-only)" } else { "NOT stopped" }
    );
    Ok(segv && got == (8 << 20).to_string())
}

/// Returns whether all went as expected, and the shared object (kept open
/// so that the listing at the end shows it).
fn comutex_part(
    conn: &comesg::Connection,
    exe: &Path,
    sock: &Path,
    ns: &str,
) -> Result<(bool, comesg::SharedObject<Counter>), Box<dyn Error>> {
    let path = format!("{ns}/counter");
    println!("\n-- comutex: a shared counter, locked across processes --");
    let obj = conn.create_shared::<Counter>(&path, comesg::ComutexOptions { exclusive: true, ..Default::default() })?;
    let n = 50_000u64;
    let mut counters = Vec::new();
    for _ in 0..2 {
        counters.push(peer(exe, sock, &["count", &path, "--count", &n.to_string()])?);
    }
    for (mut c, out) in counters {
        // Read its last line ("done"), or it writes into a closed pipe.
        let _ = out.lines().count();
        c.wait()?;
    }
    let total = lock_counter(&obj)?.n;
    println!("2 processes x {n} locked increments: counter = {total} (expected {})", 2 * n);
    let (mut holder, _) = peer(exe, sock, &["hold-lock", &path, "--in-update"])?;
    holder.kill()?;
    holder.wait()?;
    let recovered = match obj.lock() {
        Err(comesg::LockError::OwnerDied(mut g)) => {
            println!(
                "a process killed (SIGKILL) mid-update: the next lock reports OwnerDied, sees dirty = {}",
                g.dirty
            );
            g.dirty = 0;
            g.mark_consistent()?;
            println!("repaired it and marked it consistent; the comutex stays usable");
            true
        }
        Ok(_) => false,
        Err(e) => return Err(e.map(|_| ()).into()),
    };
    Ok((total == 2 * n && recovered, obj))
}

/// One process waits on a channel, a carrier, a pipe and a comutex at
/// once, while another makes them ready in an order it picks.
fn copoll_part(conn: &comesg::Connection, exe: &Path, sock: &Path, ns: &str) -> Result<bool, Box<dyn Error>> {
    use comesg::{Interest, Pollable, Rights};
    println!("\n-- copoll: one process waits on four ports of four kinds at once --");
    let go = format!("{ns}/poll-go");
    let go_ch = conn.create_channel(&go, ChannelOptions { slot_size: 16, slots: 4, ..Default::default() })?;
    let ch = conn.create_channel(
        &format!("{ns}/poll-channel"),
        ChannelOptions { slot_size: 64, slots: 8, rights: Rights::RECV, ..Default::default() },
    )?;
    let car = conn.create_cocarrier(
        &format!("{ns}/poll-carrier"),
        comesg::CocarrierOptions { arena: 1 << 16, max_message: 64, rights: Rights::RECV, ..Default::default() },
    )?;
    let pipe = conn.create_copipe(
        &format!("{ns}/poll-pipe"),
        comesg::CopipeOptions { buffer: 64, rights: Rights::RECV, ..Default::default() },
    )?;
    let mx = conn.create_comutex(&format!("{ns}/poll-comutex"), Default::default())?;
    let ports: [(&str, &dyn Pollable); 4] = [("channel", &ch), ("carrier", &car), ("pipe", &pipe), ("comutex", &mx)];
    let specs: Vec<String> = ports.iter().map(|(k, _)| format!("{k}:{ns}/poll-{k}")).collect();
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64;
    let mut args = vec!["poll", "make-ready", "--go", go.as_str(), "--gap-us", "20000"];
    let seed = seed.to_string();
    args.extend(["--seed", seed.as_str()]);
    args.extend(specs.iter().map(String::as_str));
    let (mut child, _out) = peer(exe, sock, &args)?;
    let mut poll = comesg::Copoll::new()?;
    for (t, (_, p)) in ports.iter().enumerate() {
        poll.add_dyn(*p, t as u64, Interest::READABLE)?;
    }
    println!("another process holds the comutex and will make each port ready, 20 ms apart, in an order it picks");
    go_ch.send(b"go")?;
    let started = Instant::now();
    let (mut seen, mut lock) = ([0u32; 4], None);
    while seen.contains(&0) && started.elapsed() < std::time::Duration::from_secs(30) {
        let mut events = Vec::new();
        poll.wait(&mut events, Some(std::time::Duration::from_secs(5)))?;
        for e in &events {
            let t = e.token() as usize;
            seen[t] += 1;
            match t {
                0 => drop(ch.try_recv_vec()),
                1 => drop(car.try_recv()),
                2 => drop(pipe.try_recv(&mut [0u8; 64])),
                _ => lock = mx.try_lock().ok(),
            }
            println!("  {:>6.1} ms  {} is ready", started.elapsed().as_secs_f64() * 1e3, ports[t].0);
        }
    }
    drop(poll);
    drop(lock);
    let ok = seen.iter().all(|&n| n == 1);
    println!("each reported once, found through its bell (no polling loop): {}", if ok { "yes" } else { "NO" });
    go_ch.send(b"bye")?;
    child.wait()?;
    Ok(ok)
}

fn service_part(conn: &comesg::Connection, exe: &Path, sock: &Path, ns: &str) -> Result<bool, Box<dyn Error>> {
    let path = format!("{ns}/echo");
    println!("\n-- coservice: a provider with 4 workers, 2 caller processes --");
    let (mut provider, _) = peer(exe, sock, &["serve", &path, "--workers", "4"])?;
    let mut callers = Vec::new();
    for id in 0..2 {
        let (child, out) =
            peer(exe, sock, &["call-many", &path, "--id", &id.to_string(), "--count", "5000", "--pipeline", "4"])?;
        callers.push((child, std::thread::spawn(move || out.lines().collect::<Result<Vec<String>, _>>())));
    }
    let mut ok = true;
    for (mut c, out) in callers {
        let lines = out.join().map_err(|_| "caller output thread panicked")??;
        ok &= c.wait()?.success() && lines.last().is_some_and(|l| l == "done 5000");
    }
    println!("\n$ comesg ls {ns}");
    print!("{}", super::ls::table(&conn.list(ns)?));
    let svc = conn.service(&path)?;
    println!("calling it from here: {:?}", String::from_utf8_lossy(&svc.call(b"hello")?));
    provider.kill()?;
    provider.wait()?;
    let after = svc.call(b"hello again");
    println!(
        "after kill -9 of the provider, a call returns: {}",
        after.as_ref().map_or_else(|e| e.to_string(), |_| "a response?!".into())
    );
    Ok(ok && after == Err(comesg::CallError::ServiceGone))
}

pub fn run(a: Args) -> Outcome {
    let exe = std::env::current_exe()?;
    let socket = a.socket.path();
    let fresh = comesg::Connection::connect(&socket).is_err();
    let conn = a.socket.connect()?;
    println!("== comesg tour ==\n");
    println!(
        "microkernel: pid {} on {} ({})",
        conn.kernel_pid(),
        socket.display(),
        if fresh { "just started it; it exits by itself when idle" } else { "already running" }
    );
    let me = std::process::id();
    let ns = format!("/tour/{me}");
    let path = format!("{ns}/jobs");
    let ch = conn
        .create_channel(&path, ChannelOptions { slot_size: 64, slots: 1024, exclusive: true, ..Default::default() })?;
    println!("created COCHANNEL {path}: {} slots of {} bytes, in two shared segments\n", ch.slots(), ch.slot_size());

    println!("starting 2 receivers and 2 senders, each its own process...");
    let sock = socket.clone();
    let mut receivers = Vec::new();
    for _ in 0..2 {
        let (child, out) = peer(&exe, &sock, &["seq-recv", &path, "--idle", "1.5"])?;
        // Drain each receiver's output as it comes, or its pipe fills and
        // it stops receiving.
        let reader = std::thread::spawn(move || out.lines().collect::<Result<Vec<String>, _>>());
        receivers.push((child, reader));
    }
    let count = a.messages.to_string();
    let mut senders = Vec::new();
    for id in 0..2 {
        senders.push(peer(&exe, &sock, &["seq-send", &path, "--id", &id.to_string(), "--count", &count])?.0);
    }
    println!("\n$ comesg ls {ns}   (while they run)");
    print!("{}", super::ls::table(&conn.list(&ns)?));

    let t = Instant::now();
    for mut s in senders {
        let st = s.wait()?;
        if !st.success() {
            return Err(format!("a sender failed: {st}").into());
        }
    }
    let sent_in = t.elapsed();
    let mut seen = HashSet::new();
    let mut dupes = 0u64;
    let mut per = Vec::new();
    for (mut child, reader) in receivers {
        let mut n = 0u64;
        let lines = reader.join().map_err(|_| "receiver output thread panicked")??;
        for line in lines {
            let mut it = line.split_whitespace();
            if let (Some(id), Some(seq)) = (it.next(), it.next()) {
                if id == "done" {
                    continue;
                }
                if !seen.insert((id.to_string(), seq.to_string())) {
                    dupes += 1;
                }
                n += 1;
            }
        }
        child.wait()?;
        per.push(n);
    }
    let total = 2 * a.messages;
    println!(
        "\nsenders sent {total} messages in {:.0} ms; receivers got {} and {} (anycast: each message to exactly one)",
        sent_in.as_secs_f64() * 1e3,
        per[0],
        per[1]
    );
    let mut ok = seen.len() as u64 == total && dupes == 0;
    println!(
        "every message received exactly once: {} ({} distinct, {} duplicates)",
        if ok { "yes" } else { "NO" },
        seen.len(),
        dupes
    );
    let e = ch.stats()?;
    println!("kernel's counters: sent {} received {} lost {}", e.sent_msgs, e.received_msgs, e.lost);
    drop(ch);
    let _ = conn.unlink(&path);

    ok &= pipe_part(&conn, &exe, &sock, &ns)?;
    ok &= carrier_part(&conn, &exe, &sock, &ns)?;
    let (counted, _counter) = comutex_part(&conn, &exe, &sock, &ns)?;
    ok &= counted;
    ok &= service_part(&conn, &exe, &sock, &ns)?;
    ok &= copoll_part(&conn, &exe, &sock, &ns)?;
    let _ = conn.unlink(&ns);

    if !a.no_bench {
        println!("\n== a short benchmark (two processes, pinned; full run: comesg bench) ==");
        let cfg = comesg_bench::BenchConfig { exe, long: false, short: true, progress: false };
        let report = comesg_bench::run(&cfg)?;
        print!("{}", report.table());
    }
    println!("\nnext: `comesg create /app/q`, then `comesg send /app/q hello` in one terminal and `comesg recv /app/q` in another.");
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
