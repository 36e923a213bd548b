//! The bridge's cost, measured across two hosts made of network namespaces
//! joined by veth, in one run, beside the engine it rides on:
//!
//! - 64 B round trip: TCP, plain Zenoh publish/subscribe, plain Zenoh
//!   query/reply, a COCHANNEL through the bridges, a coservice call
//!   through the bridges;
//! - one-way throughput at 64 B and 64 KiB: plain Zenoh publish/subscribe
//!   (reliable, blocking on congestion, as the bridge publishes) and a
//!   COCHANNEL through the bridges.
//!
//! `cargo bench -p comesg-bridge [-- --json] [-- --quick]`; needs root
//! (network namespaces) and `comesg` built beside it
//! (`cargo build --release -p comesg-cli`). Every helper is this program
//! again, started inside a namespace with `--role`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use comesg::{ChannelOptions, Connection, Rights, ServiceOptions};
use zenoh::qos::CongestionControl;
use zenoh::Wait;

const ZPORT: u16 = 7450;
const BPORT: u16 = 7447;

struct Plan {
    rt_iters: usize,
    small_msgs: usize,
    big_msgs: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--role") {
        role(&args[i + 1..]);
        return;
    }
    let json = args.iter().any(|a| a == "--json");
    let quick = args.iter().any(|a| a == "--quick");
    let plan = if quick {
        Plan { rt_iters: 300, small_msgs: 20_000, big_msgs: 300 }
    } else {
        // 12,000 large messages (0.8 GB): with 3,000 the figure of either
        // transport moved by half from run to run.
        Plan { rt_iters: 3000, small_msgs: 200_000, big_msgs: 12_000 }
    };
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("the bridge benchmark needs root (network namespaces)");
        std::process::exit(2);
    }
    let net = Testbed::new();
    let rows = run(&net, &plan);
    report(&rows, json);
}

// ---- the two hosts --------------------------------------------------------

struct Testbed {
    ns: [String; 2],
    ip: [String; 2],
    dir: PathBuf,
    procs: std::cell::RefCell<Vec<Child>>,
}

fn sh(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip");
    assert!(st.success(), "ip {}", args.join(" "));
}

impl Testbed {
    fn new() -> Testbed {
        let id = std::process::id() % 100_000;
        let ns = [format!("cbb{id}a"), format!("cbb{id}b")];
        let ip = ["10.250.77.1".to_string(), "10.250.77.2".to_string()];
        let veth = [format!("cvb{id}a"), format!("cvb{id}b")];
        sh(&["netns", "add", &ns[0]]);
        sh(&["netns", "add", &ns[1]]);
        sh(&["link", "add", &veth[0], "netns", &ns[0], "type", "veth", "peer", "name", &veth[1], "netns", &ns[1]]);
        for i in 0..2 {
            sh(&["-n", &ns[i], "addr", "add", &format!("{}/24", ip[i]), "dev", &veth[i]]);
            sh(&["-n", &ns[i], "link", "set", &veth[i], "up"]);
            sh(&["-n", &ns[i], "link", "set", "lo", "up"]);
        }
        let dir = std::env::temp_dir().join(format!("comesg-bridge-bench-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Testbed { ns, ip, dir, procs: Default::default() }
    }

    fn socket(&self, host: usize) -> PathBuf {
        self.dir.join(format!("h{host}.sock"))
    }

    fn cmd(&self, host: usize, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns[host]]).arg(program);
        c
    }

    /// Starts a long-lived process on `host`, killed at the end.
    fn keep(&self, mut c: Command) {
        let child = c.stdin(Stdio::null()).stdout(Stdio::null()).spawn().expect("spawn");
        self.procs.borrow_mut().push(child);
    }

    /// Starts this program in `role` on `host`.
    fn helper(&self, host: usize, role: &[&str]) -> Helper {
        let me = std::env::current_exe().unwrap();
        let mut child =
            self.cmd(host, &me).arg("--role").args(role).stdin(Stdio::null()).stdout(Stdio::piped()).spawn().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Helper { child, out }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        for c in self.procs.borrow_mut().iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.ns {
            if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A helper process and its stdout, read line by line.
struct Helper {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Helper {
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("helper output");
        line.trim().to_string()
    }

    /// Waits for it to end; its remaining output.
    fn finish(mut self) -> String {
        let mut out = String::new();
        self.out.read_to_string(&mut out).unwrap();
        let st = self.child.wait().unwrap();
        assert!(st.success(), "helper failed: {out}");
        out.trim().to_string()
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- what is measured ------------------------------------------------------

/// One figure.
enum Row {
    Latency { transport: &'static str, size: usize, median_ns: f64, p99_ns: f64 },
    Throughput { transport: &'static str, size: usize, msgs_per_s: f64 },
}

fn parse_latency(s: &str) -> (f64, f64) {
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>().expect("number"));
    (it.next().unwrap(), it.next().unwrap())
}

fn run(net: &Testbed, plan: &Plan) -> Vec<Row> {
    let mut rows = Vec::new();
    let n = plan.rt_iters.to_string();

    // TCP.
    let mut server = net.helper(0, &["tcp-echo", &format!("{}:7460", net.ip[0])]);
    assert_eq!(server.line(), "ready");
    let (median_ns, p99_ns) = parse_latency(&net.helper(1, &["tcp-ping", &format!("{}:7460", net.ip[0]), &n]).finish());
    rows.push(Row::Latency { transport: "tcp", size: 64, median_ns, p99_ns });
    server.kill();

    // Plain Zenoh: the client measures round trips and floods; the server
    // echoes, answers queries and counts what arrives.
    let zlisten = format!("tcp/{}:{ZPORT}", net.ip[0]);
    let counts = [plan.small_msgs.to_string(), plan.big_msgs.to_string()];
    let mut zs = net.helper(0, &["z-server", &zlisten, &counts[0], &counts[1]]);
    assert_eq!(zs.line(), "ready");
    let out = net.helper(1, &["z-client", &zlisten, &n, &counts[0], &counts[1]]).finish();
    let mut lines = out.lines();
    let (median_ns, p99_ns) = parse_latency(lines.next().unwrap());
    rows.push(Row::Latency { transport: "zenoh", size: 64, median_ns, p99_ns });
    let (median_ns, p99_ns) = parse_latency(lines.next().unwrap());
    rows.push(Row::Latency { transport: "zenoh_query", size: 64, median_ns, p99_ns });
    for size in [64usize, 65536] {
        let msgs_per_s: f64 = zs.line().parse().unwrap();
        rows.push(Row::Throughput { transport: "zenoh", size, msgs_per_s });
    }
    zs.kill();

    // The bridge: kernels, bridges, then the same loops through ports.
    let comesg = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("comesg");
    assert!(comesg.exists(), "{} is missing: cargo build --release -p comesg-cli", comesg.display());
    let bridge = PathBuf::from(env!("CARGO_BIN_EXE_comesg-bridge"));
    for h in 0..2 {
        let mut c = net.cmd(h, &comesg);
        c.args(["kernel", "--log", "warn", "--socket"]).arg(net.socket(h));
        net.keep(c);
        wait_kernel(&net.socket(h));
    }
    let mut echo = net.helper(0, &["b-echo", net.socket(0).to_str().unwrap()]);
    assert_eq!(echo.line(), "ready");
    let blisten = format!("tcp/{}:{BPORT}", net.ip[0]);
    let mut a = net.cmd(0, &bridge);
    a.arg("--socket").arg(net.socket(0)).args(["--host", "ha", "--export", "/bench", "--listen", &blisten]);
    a.env("RUST_LOG", "warn");
    net.keep(a);
    let mut b = net.cmd(1, &bridge);
    b.arg("--socket").arg(net.socket(1)).args(["--host", "hb", "--connect", &blisten]);
    b.env("RUST_LOG", "warn");
    net.keep(b);
    let out = net.helper(1, &["b-client", net.socket(1).to_str().unwrap(), &n]).finish();
    let mut lines = out.lines();
    let (median_ns, p99_ns) = parse_latency(lines.next().unwrap());
    rows.push(Row::Latency { transport: "bridge", size: 64, median_ns, p99_ns });
    let (median_ns, p99_ns) = parse_latency(lines.next().unwrap());
    rows.push(Row::Latency { transport: "bridge_call", size: 64, median_ns, p99_ns });
    for (size, count) in [(64usize, plan.small_msgs), (65536, plan.big_msgs)] {
        let path = format!("/bench/data{size}");
        let mut sink = net.helper(0, &["b-sink", net.socket(0).to_str().unwrap(), &path, &count.to_string()]);
        assert_eq!(sink.line(), "ready");
        let flood = net.helper(
            1,
            &[
                "b-flood",
                net.socket(1).to_str().unwrap(),
                &format!("/net/ha{path}"),
                &count.to_string(),
                &size.to_string(),
            ],
        );
        let msgs_per_s: f64 = sink.finish().parse().unwrap();
        flood.finish();
        rows.push(Row::Throughput { transport: "bridge", size, msgs_per_s });
    }
    echo.kill();
    rows
}

fn wait_kernel(socket: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Connection::connect(socket).is_err() {
        assert!(Instant::now() < deadline, "kernel did not come up");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn human_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.1} us", ns / 1e3)
    }
}

fn report(rows: &[Row], json: bool) {
    let lat = |t: &str| {
        rows.iter().find_map(|r| match r {
            Row::Latency { transport, median_ns, .. } if *transport == t => Some(*median_ns),
            _ => None,
        })
    };
    let thr = |t: &str, s: usize| {
        rows.iter().find_map(|r| match r {
            Row::Throughput { transport, size, msgs_per_s } if *transport == t && *size == s => Some(*msgs_per_s),
            _ => None,
        })
    };
    if json {
        let mut l = Vec::new();
        let mut t = Vec::new();
        for r in rows {
            match r {
                Row::Latency { transport, size, median_ns, p99_ns } => l.push(format!(
                    "{{\"transport\":\"{transport}\",\"size\":{size},\"median_ns\":{median_ns:.0},\"p99_ns\":{p99_ns:.0}}}"
                )),
                Row::Throughput { transport, size, msgs_per_s } => t.push(format!(
                    "{{\"transport\":\"{transport}\",\"size\":{size},\"msgs_per_s\":{msgs_per_s:.0},\"gb_per_s\":{:.4}}}",
                    msgs_per_s * *size as f64 / 1e9
                )),
            }
        }
        println!("{{\"latency\":[{}],\"throughput\":[{}]}}", l.join(","), t.join(","));
        return;
    }
    println!("Across two network namespaces joined by veth (one run)\n");
    println!("{:<36} {:>12} {:>12}", "64 B round trip", "median", "p99");
    for r in rows {
        if let Row::Latency { transport, median_ns, p99_ns, .. } = r {
            let label = match *transport {
                "tcp" => "TCP",
                "zenoh" => "Zenoh publish/subscribe",
                "zenoh_query" => "Zenoh query/reply",
                "bridge" => "COCHANNEL through the bridges",
                "bridge_call" => "coservice call through the bridges",
                t => t,
            };
            println!("{label:<36} {:>12} {:>12}", human_ns(*median_ns), human_ns(*p99_ns));
        }
    }
    println!("\n{:<36} {:>14} {:>14}", "one-way throughput", "64 B msg/s", "64 KiB msg/s");
    for (label, t) in [("Zenoh publish/subscribe", "zenoh"), ("COCHANNEL through the bridges", "bridge")] {
        let f = |s| thr(t, s).map_or("-".into(), |v| format!("{v:.0}"));
        println!("{label:<36} {:>14} {:>14}", f(64), f(65536));
    }
    println!("\nTargets (ratios from this run):");
    let check = |what: &str, ratio: Option<f64>, bound: f64, le: bool| {
        if let Some(r) = ratio {
            let ok = if le { r <= bound } else { r >= bound };
            println!(
                "{}  {what}: {r:.2} (want {} {bound})",
                if ok { "MEETS" } else { "SHORT" },
                if le { "<=" } else { ">=" }
            );
        }
    };
    check(
        "bridge 64 B round trip / Zenoh pub/sub round trip",
        lat("bridge").zip(lat("zenoh")).map(|(a, b)| a / b),
        1.5,
        true,
    );
    check("bridge call / Zenoh query/reply", lat("bridge_call").zip(lat("zenoh_query")).map(|(a, b)| a / b), 1.5, true);
    for s in [64, 65536] {
        check(
            &format!("bridge {} one-way / Zenoh", if s == 64 { "64 B" } else { "64 KiB" }),
            thr("bridge", s).zip(thr("zenoh", s)).map(|(a, b)| a / b),
            0.8,
            false,
        );
    }
}

// ---- helpers, each in its own process inside a namespace -------------------

fn percentiles(mut v: Vec<u64>) -> String {
    v.sort_unstable();
    let median = v[v.len() / 2];
    let p99 = v[(v.len() * 99 / 100).min(v.len() - 1)];
    format!("{median} {p99}")
}

fn time_loop(n: usize, mut f: impl FnMut()) -> String {
    for _ in 0..n / 10 + 10 {
        f();
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f();
        v.push(t.elapsed().as_nanos() as u64);
    }
    percentiles(v)
}

fn zsession(listen: Option<&str>, connect: Option<&str>) -> zenoh::Session {
    let cfg = comesg_bridge::NetConfig {
        listen: listen.into_iter().map(String::from).collect(),
        connect: connect.into_iter().map(String::from).collect(),
        lease_ms: 3000,
        ..Default::default()
    };
    comesg_bridge::net::open(&cfg).expect("zenoh")
}

fn role(args: &[String]) {
    let a = |i: usize| args[i].as_str();
    match a(0) {
        "tcp-echo" => {
            let l = TcpListener::bind(a(1)).unwrap();
            println!("ready");
            std::io::stdout().flush().unwrap();
            let (mut s, _) = l.accept().unwrap();
            s.set_nodelay(true).unwrap();
            let mut buf = [0u8; 64];
            while s.read_exact(&mut buf).is_ok() {
                if s.write_all(&buf).is_err() {
                    break;
                }
            }
        }
        "tcp-ping" => {
            let mut s = TcpStream::connect(a(1)).unwrap();
            s.set_nodelay(true).unwrap();
            let mut buf = [7u8; 64];
            println!(
                "{}",
                time_loop(a(2).parse().unwrap(), || {
                    s.write_all(&buf).unwrap();
                    s.read_exact(&mut buf).unwrap();
                })
            );
        }
        "z-server" => {
            let session = zsession(Some(a(1)), None);
            let counts: [usize; 2] = [a(2).parse().unwrap(), a(3).parse().unwrap()];
            let pong =
                session.declare_publisher("bench/pong").congestion_control(CongestionControl::Block).wait().unwrap();
            let _echo = session
                .declare_subscriber("bench/ping")
                .callback(move |s| {
                    let _ = pong.put(s.payload().to_bytes().into_owned()).wait();
                })
                .wait()
                .unwrap();
            let _q = session
                .declare_queryable("bench/query")
                .callback(|q| {
                    let p = q.payload().map(|p| p.to_bytes().into_owned()).unwrap_or_default();
                    let _ = q.reply(q.key_expr().clone(), p).wait();
                })
                .wait()
                .unwrap();
            let mut sinks = Vec::new();
            for (i, size) in [64usize, 65536].into_iter().enumerate() {
                let (tx, rx) = std::sync::mpsc::channel::<Instant>();
                let want = counts[i];
                let seen = std::sync::atomic::AtomicUsize::new(0);
                let tx = std::sync::Mutex::new(tx);
                let sub = session
                    .declare_subscriber(format!("bench/data{size}"))
                    .callback(move |_| {
                        let seen = seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        let tx = tx.lock().unwrap();
                        if seen == 1 || seen == want {
                            let _ = tx.send(Instant::now());
                        }
                    })
                    .wait()
                    .unwrap();
                sinks.push((sub, rx, want));
            }
            println!("ready");
            std::io::stdout().flush().unwrap();
            for (_sub, rx, want) in &sinks {
                let first = rx.recv().unwrap();
                let last = rx.recv().unwrap();
                println!("{}", (*want - 1) as f64 / (last - first).as_secs_f64());
                std::io::stdout().flush().unwrap();
            }
            std::thread::sleep(Duration::from_secs(3600));
        }
        "z-client" => {
            let session = zsession(None, Some(a(1)));
            let n: usize = a(2).parse().unwrap();
            let counts: [usize; 2] = [a(3).parse().unwrap(), a(4).parse().unwrap()];
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(16);
            let tx = std::sync::Mutex::new(tx);
            let _sub = session
                .declare_subscriber("bench/pong")
                .callback(move |_| {
                    let _ = tx.lock().unwrap().send(());
                })
                .wait()
                .unwrap();
            let ping =
                session.declare_publisher("bench/ping").congestion_control(CongestionControl::Block).wait().unwrap();
            // Wait until the echo is reachable.
            loop {
                ping.put(vec![0u8; 64]).wait().unwrap();
                if rx.recv_timeout(Duration::from_millis(200)).is_ok() {
                    break;
                }
            }
            while rx.try_recv().is_ok() {}
            println!(
                "{}",
                time_loop(n, || {
                    ping.put(vec![1u8; 64]).wait().unwrap();
                    rx.recv().unwrap();
                })
            );
            println!(
                "{}",
                time_loop(n, || {
                    let r = session.get("bench/query").payload(vec![2u8; 64]).wait().unwrap();
                    r.recv().unwrap();
                })
            );
            for (i, size) in [64usize, 65536].into_iter().enumerate() {
                let p = session
                    .declare_publisher(format!("bench/data{size}"))
                    .congestion_control(CongestionControl::Block)
                    .wait()
                    .unwrap();
                for _ in 0..counts[i] {
                    p.put(vec![3u8; size]).wait().unwrap();
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        "b-echo" => {
            let conn = Connection::connect(Path::new(a(1))).unwrap();
            let opts = ChannelOptions { slot_size: 64, slots: 256, persistent: true, ..Default::default() };
            let ping = conn.create_channel("/bench/ping", opts).unwrap();
            let pong = conn.create_channel("/bench/pong", opts).unwrap();
            // Sized as docs/bridge.md advises, at about twice rate x
            // acknowledgement cycle (a taker keeps half the ring in flight):
            // 16 MiB for the 64 KiB stream (with 4 MiB it was window-bound).
            for (path, size, slots) in [("/bench/data64", 64, 4096), ("/bench/data65536", 65536, 256)] {
                let o = ChannelOptions { slot_size: size, slots, persistent: true, ..Default::default() };
                conn.create_channel(path, o).unwrap();
            }
            let _svc = conn
                .serve("/bench/svc", ServiceOptions { workers: 1, ..Default::default() }, |c| c.request.to_vec())
                .unwrap();
            println!("ready");
            std::io::stdout().flush().unwrap();
            let mut buf = [0u8; 64];
            loop {
                let n = ping.recv(&mut buf).unwrap();
                pong.send(&buf[..n]).unwrap();
            }
        }
        "b-client" => {
            let conn = Connection::connect(Path::new(a(1))).unwrap();
            let n: usize = a(2).parse().unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            let open = |p: &str, r| loop {
                match conn.open_channel(p, r) {
                    Ok(c) => break c,
                    Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                    Err(e) => panic!("{p}: {e}"),
                }
            };
            let ping = open("/net/ha/bench/ping", Rights::SEND);
            let pong = open("/net/ha/bench/pong", Rights::RECV);
            let mut buf = [0u8; 64];
            // Until the bridges carry both ways.
            loop {
                ping.send(&[0u8; 64]).unwrap();
                if pong.recv_timeout(&mut buf, Duration::from_millis(300)).is_ok() {
                    break;
                }
            }
            while pong.try_recv(&mut buf).is_ok() {}
            println!(
                "{}",
                time_loop(n, || {
                    ping.send(&[1u8; 64]).unwrap();
                    pong.recv(&mut buf).unwrap();
                })
            );
            let svc = loop {
                match conn.service("/net/ha/bench/svc") {
                    Ok(s) => break s,
                    Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                    Err(e) => panic!("svc: {e}"),
                }
            };
            println!(
                "{}",
                time_loop(n, || {
                    svc.call(&[2u8; 64]).unwrap();
                })
            );
        }
        "b-sink" => {
            let conn = Connection::connect(Path::new(a(1))).unwrap();
            let ch = conn.open_channel(a(2), Rights::RECV).unwrap();
            let want: usize = a(3).parse().unwrap();
            println!("ready");
            std::io::stdout().flush().unwrap();
            let mut buf = vec![0u8; ch.slot_size()];
            ch.recv(&mut buf).unwrap();
            let first = Instant::now();
            for _ in 1..want {
                ch.recv(&mut buf).unwrap();
            }
            println!("{}", (want - 1) as f64 / first.elapsed().as_secs_f64());
        }
        "b-flood" => {
            let conn = Connection::connect(Path::new(a(1))).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            let ch = loop {
                match conn.open_channel(a(2), Rights::SEND) {
                    Ok(c) => break c,
                    Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                    Err(e) => panic!("{}: {e}", a(2)),
                }
            };
            let n: usize = a(3).parse().unwrap();
            let msg = vec![3u8; a(4).parse().unwrap()];
            for _ in 0..n {
                ch.send(&msg).unwrap();
            }
            // Stay until the sink has them: closing early is fine (the
            // messages are queued), but the parent waits for both anyway.
        }
        other => panic!("unknown role {other}"),
    }
}
