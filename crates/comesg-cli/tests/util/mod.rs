//! Shared helpers for the integration tests: every test runs the real
//! `comesg` binary as separate processes, on a socket path of its own, and
//! every wait has a watchdog.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The shared counter the CLI peers (`count`, `hold-lock`) lock: same
/// layout as their `Counter`.
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
pub struct Counter {
    /// The count.
    pub n: u64,
    /// 1 while an update is half done.
    pub dirty: u64,
}

/// The binary under test.
pub fn exe() -> &'static str {
    env!("CARGO_BIN_EXE_comesg")
}

static N: AtomicU32 = AtomicU32::new(0);

/// A fresh directory for one test's socket.
pub fn unique_dir(tag: &str) -> PathBuf {
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("comesg-it-{}-{n}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A microkernel running as its own process on a private socket; killed and
/// cleaned up on drop.
pub struct KernelProc {
    pub child: Child,
    pub socket: PathBuf,
    dir: PathBuf,
}

impl KernelProc {
    pub fn start(tag: &str) -> KernelProc {
        KernelProc::start_with_env(tag, &[])
    }

    /// A kernel started with extra environment variables.
    pub fn start_with_env(tag: &str, env: &[(&str, &str)]) -> KernelProc {
        KernelProc::spawn(tag, env, &[])
    }

    /// A kernel started with extra arguments (`--shared`).
    pub fn start_with_args(tag: &str, args: &[&str]) -> KernelProc {
        KernelProc::spawn(tag, &[], args)
    }

    fn spawn(tag: &str, env: &[(&str, &str)], args: &[&str]) -> KernelProc {
        let dir = unique_dir(tag);
        let socket = dir.join("kernel.sock");
        let child = Command::new(exe())
            .args(["kernel", "--log", "warn", "--socket"])
            .arg(&socket)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .spawn()
            .expect("start kernel");
        let k = KernelProc { child, socket, dir };
        k.wait_ready();
        k
    }

    /// Kills the kernel and starts a new one on the same socket.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Command::new(exe())
            .args(["kernel", "--log", "warn", "--socket"])
            .arg(&self.socket)
            .stdin(Stdio::null())
            .spawn()
            .expect("restart kernel");
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while comesg::Connection::connect(&self.socket).is_err() {
            assert!(Instant::now() < deadline, "kernel did not come up");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn connect(&self) -> comesg::Connection {
        comesg::Connection::connect(&self.socket).expect("connect")
    }

    /// `PREFIX.. comesg ARGS --socket S`, stdin closed, output piped.
    fn command(&self, prefix: &[&std::ffi::OsStr], args: &[&str]) -> Command {
        let (program, rest) = match prefix.split_first() {
            Some((p, rest)) => (*p, rest),
            None => (std::ffi::OsStr::new(exe()), &[][..]),
        };
        let mut c = Command::new(program);
        c.args(rest);
        if !prefix.is_empty() {
            c.arg(exe());
        }
        c.args(args).arg("--socket").arg(&self.socket);
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    /// Runs `PREFIX.. comesg ARGS --socket S` to completion (e.g. under
    /// `setpriv` as another user).
    pub fn cli_as(&self, prefix: &[&std::ffi::OsStr], args: &[&str]) -> Output {
        let child = self.command(prefix, args).spawn().unwrap();
        wait_output(child, Duration::from_secs(60))
    }

    /// Runs `comesg ARGS --socket S` to completion (with a watchdog).
    pub fn cli(&self, args: &[&str]) -> Output {
        let child = self.command(&[], args).spawn().unwrap();
        wait_output(child, Duration::from_secs(60))
    }

    /// Starts `comesg __peer ARGS --socket S` and waits for its `ready` line.
    pub fn peer(&self, args: &[&str]) -> Peer {
        self.peer_env(args, &[])
    }

    /// [`KernelProc::peer`] with extra environment variables (a crash point).
    pub fn peer_env(&self, args: &[&str], env: &[(&str, &str)]) -> Peer {
        let mut child = Command::new(exe())
            .arg("__peer")
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "peer {args:?} did not start");
        Peer { child, out: Some(out) }
    }
}

impl Drop for KernelProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A helper process started with `comesg __peer`.
pub struct Peer {
    pub child: Child,
    pub out: Option<BufReader<ChildStdout>>,
}

impl Peer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The rest of its stdout, read on a thread so it never blocks the peer.
    pub fn collect(&mut self) -> std::thread::JoinHandle<Vec<String>> {
        let out = self.out.take().unwrap();
        std::thread::spawn(move || out.lines().map_while(Result::ok).collect())
    }

    /// Waits for exit, with a watchdog.
    pub fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        wait_status(&mut self.child, limit)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_status(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut so, &mut v).ok();
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut se, &mut v).ok();
        v
    });
    let status = wait_status(&mut child, limit);
    Output { status, stdout: t1.join().unwrap(), stderr: t2.join().unwrap() }
}

pub fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Waits up to `limit` for `child` to exit; None if it is still running.
pub fn try_wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `f` until it returns true, failing after `limit`.
pub fn eventually(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn socket_exists(p: &Path) -> bool {
    p.exists()
}

/// Whether strace is installed (tests that count system calls skip, saying
/// so, without it).
pub fn have_strace() -> bool {
    if Command::new("strace").arg("-V").output().is_ok() {
        return true;
    }
    eprintln!("SKIPPED: strace is not installed (.ci/run installs it)");
    false
}

impl KernelProc {
    /// Runs `comesg __peer ARGS --socket S` under `strace -f -c` and returns
    /// the total number of system calls it made (printing the summary).
    pub fn syscalls_of_peer(&self, args: &[&str]) -> u64 {
        let dir = unique_dir("strace");
        let report = dir.join("strace.txt");
        let strace: [&std::ffi::OsStr; 5] =
            ["strace".as_ref(), "-f".as_ref(), "-c".as_ref(), "-o".as_ref(), report.as_os_str()];
        let mut peer_args = vec!["__peer"];
        peer_args.extend_from_slice(args);
        let child = self.command(&strace, &peer_args).spawn().expect("run strace");
        let out = wait_output(child, Duration::from_secs(120));
        assert!(out.status.success(), "{out:?}");
        let summary = std::fs::read_to_string(&report).unwrap();
        println!("strace -c of {args:?}:\n{summary}");
        let total = summary.lines().find(|l| l.trim_end().ends_with("total")).expect("strace total line");
        // "100.00    0.001234          12       100         3 total": calls
        // is the 4th column.
        total.split_whitespace().nth(3).and_then(|c| c.parse().ok()).expect("strace call count")
    }
}
