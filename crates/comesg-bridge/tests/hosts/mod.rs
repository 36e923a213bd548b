//! Two hosts on one machine: two network namespaces joined by a veth pair,
//! each with its own microkernel (a `comesg kernel` process), its own
//! bridge (a `comesg-bridge` process) and its own address. Everything is
//! killed and the namespaces removed on drop.
//!
//! Needs root (CI has it); without it, [`TwoHosts::new`] says so and the
//! test returns early.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The bridge under test.
pub fn bridge_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_comesg-bridge"))
}

/// The `comesg` tool, built beside the bridge (`cargo test --workspace`
/// builds it; so does `cargo build -p comesg-cli`).
pub fn comesg_exe() -> PathBuf {
    let p = bridge_exe().with_file_name("comesg");
    assert!(p.exists(), "{} is missing: run `cargo build -p comesg-cli` (or test with --workspace)", p.display());
    p
}

static N: AtomicU32 = AtomicU32::new(0);

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd).args(args).output().map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// One host: a namespace, an address, a kernel, maybe a bridge.
pub struct Host {
    pub name: String,
    pub ns: String,
    pub addr: String,
    pub socket: PathBuf,
    kernel: Child,
    bridge: Option<Child>,
    bridge_args: Vec<String>,
    log: PathBuf,
    children: Vec<Child>,
}

impl Host {
    fn start(name: &str, ns: &str, addr: &str, dir: &std::path::Path) -> Host {
        let socket = dir.join(format!("{name}.sock"));
        let kernel = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(comesg_exe())
            .args(["kernel", "--log", "warn", "--socket"])
            .arg(&socket)
            .stdin(Stdio::null())
            .spawn()
            .expect("start kernel");
        let deadline = Instant::now() + Duration::from_secs(10);
        while comesg::Connection::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "kernel of {name} did not come up");
            std::thread::sleep(Duration::from_millis(10));
        }
        Host {
            name: name.into(),
            ns: ns.into(),
            addr: addr.into(),
            socket,
            kernel,
            bridge: None,
            bridge_args: Vec::new(),
            log: dir.join(format!("{name}-bridge.log")),
            children: Vec::new(),
        }
    }

    /// A command run inside this host's namespace.
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// Starts this host's bridge with `args` (besides socket and host name).
    pub fn start_bridge(&mut self, args: &[&str]) {
        self.bridge_args = args.iter().map(|s| s.to_string()).collect();
        self.restart_bridge();
    }

    /// Starts the bridge again with the same arguments, appending to its log.
    pub fn restart_bridge(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = self
            .command(&bridge_exe())
            .arg("--socket")
            .arg(&self.socket)
            .args(["--host", &self.name])
            .args(&self.bridge_args)
            .env("RUST_LOG", "info,zenoh=warn,zenoh_transport=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start bridge");
        self.bridge = Some(child);
    }

    /// The bridge's pid.
    pub fn bridge_pid(&self) -> Option<u32> {
        self.bridge.as_ref().map(Child::id)
    }

    /// SIGKILLs the bridge (the `ip netns exec` wrapper execs it, so the
    /// child is the bridge itself).
    pub fn kill_bridge(&mut self) {
        if let Some(mut b) = self.bridge.take() {
            let _ = b.kill();
            let _ = b.wait();
        }
    }

    /// What the bridge logged so far.
    pub fn bridge_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `comesg ARGS --socket S` inside the namespace, stdout and stderr
    /// piped, stdin as given.
    fn comesg(&self, args: &[&str], stdin: Stdio) -> Child {
        self.command(&comesg_exe())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `comesg ARGS --socket S` inside the namespace, to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        wait_output(self.comesg(args, Stdio::null()), Duration::from_secs(120))
    }

    /// `comesg ARGS --socket S` inside the namespace, running on (stdin
    /// piped, for `send`).
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.comesg(args, Stdio::piped())
    }

    /// Waits until `comesg ls PATH` shows a live object there.
    pub fn wait_for_name(&self, path: &str, limit: Duration) {
        eventually(limit, &format!("{path} on {}", self.name), || {
            let o = self.cli(&["ls", path]);
            let t = text(&o);
            o.status.success() && t.lines().any(|l| l.starts_with(path) && !l.contains(" dead "))
        });
    }

    /// The port's statistics as this host's kernel reports them.
    pub fn stats(&self, path: &str) -> comesg::Entry {
        let conn = comesg::Connection::connect(&self.socket).expect("connect");
        conn.list(path).expect("list").into_iter().find(|e| e.name.as_str() == path).expect("entry")
    }

    /// Keeps a child to kill on drop.
    pub fn adopt(&mut self, c: Child) {
        self.children.push(c);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.kill_bridge();
        let _ = self.kernel.kill();
        let _ = self.kernel.wait();
    }
}

/// Two hosts joined by a veth pair: `a` at 10.X.Y.1, `b` at 10.X.Y.2.
pub struct TwoHosts {
    pub a: Host,
    pub b: Host,
    namespaces: [String; 2],
    dir: PathBuf,
}

impl TwoHosts {
    /// Sets both hosts up, or says why not (not root, no `ip`) and returns
    /// None.
    pub fn new(tag: &str) -> Option<TwoHosts> {
        if rustix::process::geteuid().as_raw() != 0 {
            eprintln!("SKIPPED {tag}: network namespaces need root");
            return None;
        }
        if Command::new("ip").arg("-V").output().is_err() {
            eprintln!("SKIPPED {tag}: no `ip` (install iproute2)");
            return None;
        }
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let id = format!("{}{n}", pid % 100_000);
        let (nsa, nsb) = (format!("cbr{id}a"), format!("cbr{id}b"));
        let (va, vb) = (format!("cv{id}a"), format!("cv{id}b"));
        // A /24 of our own: 10.(100 + pid % 100).(n).0.
        let net = format!("10.{}.{}", 100 + pid % 100, n % 250);
        let (ipa, ipb) = (format!("{net}.1"), format!("{net}.2"));
        let setup = || -> Result<(), String> {
            run("ip", &["netns", "add", &nsa])?;
            run("ip", &["netns", "add", &nsb])?;
            run("ip", &["link", "add", &va, "netns", &nsa, "type", "veth", "peer", "name", &vb, "netns", &nsb])?;
            for (ns, dev, ip) in [(&nsa, &va, &ipa), (&nsb, &vb, &ipb)] {
                run("ip", &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev])?;
                run("ip", &["-n", ns, "link", "set", dev, "up"])?;
                run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
            }
            Ok(())
        };
        if let Err(e) = setup() {
            let _ = run("ip", &["netns", "del", &nsa]);
            let _ = run("ip", &["netns", "del", &nsb]);
            panic!("setting up network namespaces: {e}");
        }
        let dir = std::env::temp_dir().join(format!("comesg-bridge-it-{id}-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = Host::start("ha", &nsa, &ipa, &dir);
        let b = Host::start("hb", &nsb, &ipb, &dir);
        Some(TwoHosts { a, b, namespaces: [nsa, nsb], dir })
    }

    /// Starts both bridges: `a` listens, `b` listens and connects to `a`.
    pub fn bridges(&mut self, a_args: &[&str], b_args: &[&str]) {
        let la = format!("tcp/{}:7447", self.a.addr);
        let lb = format!("tcp/{}:7447", self.b.addr);
        let mut a: Vec<&str> = vec!["--listen", &la];
        a.extend_from_slice(a_args);
        self.a.start_bridge(&a);
        let mut b: Vec<&str> = vec!["--listen", &lb, "--connect", &la];
        b.extend_from_slice(b_args);
        self.b.start_bridge(&b);
    }

    /// Both bridges' logs, for a failure message.
    pub fn logs(&self) -> String {
        format!("--- ha bridge:\n{}\n--- hb bridge:\n{}", self.a.bridge_log(), self.b.bridge_log())
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        // Hosts first (their processes), then the namespaces.
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "pids", ns]).output().map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
        }
        for ns in &self.namespaces {
            let _ = run("ip", &["netns", "del", ns]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `child` to completion, killing it after `limit`.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("process ran over {limit:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// stdout and stderr of a finished process.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Polls `f` until it holds, failing after `limit`.
pub fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `lines` to a child's stdin and closes it.
pub fn feed(child: &mut Child, lines: impl IntoIterator<Item = String>) {
    let mut stdin = child.stdin.take().expect("stdin");
    for l in lines {
        if writeln!(stdin, "{l}").is_err() {
            break;
        }
    }
}

/// Reads a child's stdout lines on a thread.
pub fn collect(child: &mut Child) -> std::thread::JoinHandle<Vec<String>> {
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).collect())
}

/// A child's stdout lines as they come.
pub fn lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}
