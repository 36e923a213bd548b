//! Runs every example as the separate processes its README describes, with
//! the microkernel in a process of its own, and checks what they print: no
//! example can rot.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// A process of the example set, killed when dropped.
struct Proc {
    child: Child,
    out: Option<BufReader<ChildStdout>>,
}

impl Proc {
    fn start(exe: &str, socket: &PathBuf) -> Proc {
        let mut child = Command::new(exe)
            .env("COMESG_SOCKET", socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{exe}: {e}"));
        let out = child.stdout.take().map(BufReader::new);
        Proc { child, out }
    }

    /// Its first line (it prints one when it is ready).
    fn first_line(&mut self) -> String {
        let mut line = String::new();
        self.out.as_mut().unwrap().read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    /// The rest of its output, once it exited successfully (with a watchdog).
    fn finish(mut self, limit: Duration) -> Vec<String> {
        let out = self.out.take().unwrap();
        let reader = std::thread::spawn(move || out.lines().map_while(Result::ok).collect::<Vec<_>>());
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "example did not finish in {limit:?}");
            std::thread::sleep(Duration::from_millis(10));
        };
        let lines = reader.join().unwrap();
        assert!(status.success(), "{status}: {lines:?}");
        lines
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The microkernel in its own process, on a socket of this test's own.
fn kernel(tag: &str) -> (Proc, PathBuf) {
    let dir = std::env::temp_dir().join(format!("comesg-example-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("kernel.sock");
    let mut k = Proc::start(env!("CARGO_BIN_EXE_example-kernel"), &socket);
    assert_eq!(k.first_line(), "ready");
    (k, socket)
}

#[test]
fn copoll_watch_and_poke() {
    let (_k, socket) = kernel("copoll");
    let mut watch = Proc::start(env!("CARGO_BIN_EXE_copoll-watch"), &socket);
    assert_eq!(watch.first_line(), "waiting on a channel, a carrier and a pipe");
    let poke = Proc::start(env!("CARGO_BIN_EXE_copoll-poke"), &socket);
    assert_eq!(poke.finish(Duration::from_secs(60)), vec!["sent 2 jobs, 1 frame, 1 log line"]);
    let lines = watch.finish(Duration::from_secs(60));
    for want in [
        "channel: job 1",
        "channel: job 2",
        "carrier: a frame of 1048576 bytes, first byte 7",
        "pipe: log line 1",
        "channel: every sender has gone",
        "carrier: every sender has gone",
        "pipe: every sender has gone",
        "done",
    ] {
        assert!(lines.iter().any(|l| l == want), "missing {want:?} in {lines:?}");
    }
}

#[test]
fn tokio_server_and_client() {
    let (_k, socket) = kernel("tokio");
    let mut server = Proc::start(env!("CARGO_BIN_EXE_tokio-server"), &socket);
    assert_eq!(server.first_line(), "serving 8 sensors and /examples/tokio/upper");
    let client = Proc::start(env!("CARGO_BIN_EXE_tokio-client"), &socket);
    assert_eq!(
        client.finish(Duration::from_secs(60)),
        vec!["upper says HELLO FROM TOKIO", "sent 100 readings to each of 8 sensors"]
    );
    let lines = server.finish(Duration::from_secs(60));
    let want: Vec<String> = (0..8).map(|i| format!("sensor {i}: 100 readings, sum {}", 5050 * (i + 1))).collect();
    assert_eq!(lines, want);
}

/// Compiles `c/sensor.c` with gcc against `libcomesg_c.so` (built beside
/// this test as a dependency); None if there is no gcc.
fn build_sensor(dir: &std::path::Path) -> Option<PathBuf> {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = dir.join("sensor");
    let gcc = Command::new("gcc")
        .args(["-Wall", "-Wextra", "-Werror", "-O2", "-o"])
        .arg(&out)
        .arg(root.join("c/sensor.c"))
        .arg("-I")
        .arg(root.join("../crates/comesg-c/include"))
        .arg("-L")
        .arg(&deps)
        .arg(format!("-Wl,-rpath,{}", deps.display()))
        .arg("-lcomesg_c")
        .output();
    match gcc {
        Ok(o) => {
            assert!(o.status.success(), "gcc: {}", String::from_utf8_lossy(&o.stderr));
            Some(out)
        }
        Err(e) => {
            eprintln!("SKIP: no gcc ({e})");
            None
        }
    }
}

#[test]
fn c_sensor_and_rust_partner() {
    let (_k, socket) = kernel("c");
    let Some(sensor) = build_sensor(socket.parent().unwrap()) else { return };
    let mut partner = Proc::start(env!("CARGO_BIN_EXE_c-partner"), &socket);
    assert_eq!(partner.first_line(), "waiting for readings");
    let sensor = Proc::start(sensor.to_str().unwrap(), &socket);
    assert_eq!(sensor.finish(Duration::from_secs(60)), vec!["partner says: 5 readings, average 22.00"]);
    assert_eq!(
        partner.finish(Duration::from_secs(60)),
        vec!["reading 21.5", "reading 22.0", "reading 22.5", "reading 23.0", "reading 21.0", "the sensor said bye"]
    );
}
