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
        Proc::start_args(exe, &[], socket)
    }

    fn start_args(exe: &str, args: &[&str], socket: &PathBuf) -> Proc {
        let mut child = Command::new(exe)
            .args(args)
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
/// this test as a dependency); None if there is no gcc and the caller
/// said to skip.
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
        Err(e) if std::env::var_os("COMESG_NO_GCC").is_some() => {
            eprintln!("SKIP: no gcc ({e}) and COMESG_NO_GCC is set");
            None
        }
        Err(e) => panic!("gcc not found ({e}): install it, or set COMESG_NO_GCC=1 to skip the C example"),
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

#[test]
fn channel_producer_and_workers() {
    let (_k, socket) = kernel("channel");
    let mut a = Proc::start_args(env!("CARGO_BIN_EXE_channel-worker"), &["A"], &socket);
    assert_eq!(a.first_line(), "A ready");
    let mut b = Proc::start_args(env!("CARGO_BIN_EXE_channel-worker"), &["B"], &socket);
    assert_eq!(b.first_line(), "B ready");
    let producer = Proc::start_args(env!("CARGO_BIN_EXE_channel-producer"), &["20", "2"], &socket);
    assert_eq!(producer.finish(Duration::from_secs(60)), vec!["sent 20 jobs"]);
    let mut jobs = Vec::new();
    for (name, w) in [("A", a), ("B", b)] {
        let lines = w.finish(Duration::from_secs(60));
        let (last, done) = lines.split_last().unwrap();
        assert_eq!(last, &format!("{name} did {} jobs", done.len()));
        for l in done {
            let n = l.strip_prefix(&format!("{name} job ")).unwrap_or_else(|| panic!("{l}"));
            jobs.push(n.parse::<u32>().unwrap());
        }
    }
    jobs.sort_unstable();
    assert_eq!(jobs, (1..=20).collect::<Vec<_>>(), "every job done exactly once");
}

#[test]
fn carrier_camera_and_viewer() {
    let (_k, socket) = kernel("carrier");
    let mut viewer = Proc::start(env!("CARGO_BIN_EXE_carrier-viewer"), &socket);
    assert_eq!(viewer.first_line(), "viewer ready");
    let camera = Proc::start(env!("CARGO_BIN_EXE_carrier-camera"), &socket);
    assert_eq!(
        camera.finish(Duration::from_secs(60)),
        vec!["viewer saw frame 1", "viewer saw frame 2", "viewer saw frame 3"]
    );
    assert_eq!(
        viewer.finish(Duration::from_secs(60)),
        (1..=3).map(|i| format!("frame {i}: 1048576 bytes, intact: yes")).collect::<Vec<_>>()
    );
}

#[test]
fn pipe_streams_a_file() {
    let (_k, socket) = kernel("pipe");
    let dir = socket.parent().unwrap().to_path_buf();
    let (input, output) = (dir.join("original.bin"), dir.join("copy.bin"));
    // 5 MB that is not all one byte, so a misplaced piece would show.
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&input, &data).unwrap();
    let mut save = Proc::start_args(env!("CARGO_BIN_EXE_pipe-save"), &[output.to_str().unwrap()], &socket);
    assert!(save.first_line().starts_with("saving to "));
    let cat = Proc::start_args(env!("CARGO_BIN_EXE_pipe-cat"), &[input.to_str().unwrap()], &socket);
    assert_eq!(cat.finish(Duration::from_secs(60)), vec!["sent 5000000 bytes"]);
    let lines = save.finish(Duration::from_secs(60));
    assert!(lines[0].starts_with("saved 5000000 bytes, checksum "), "{lines:?}");
    assert!(std::fs::read(&output).unwrap() == data, "the copy differs from the original");
}

#[test]
fn comutex_counter() {
    let (_k, socket) = kernel("comutex");
    let mut keeper = Proc::start_args(env!("CARGO_BIN_EXE_counter-keeper"), &["30000"], &socket);
    assert_eq!(keeper.first_line(), "counter ready");
    let adders: Vec<Proc> =
        (0..3).map(|_| Proc::start_args(env!("CARGO_BIN_EXE_counter-add"), &["10000"], &socket)).collect();
    for a in adders {
        assert_eq!(a.finish(Duration::from_secs(120)), vec!["added 10000"]);
    }
    assert_eq!(keeper.finish(Duration::from_secs(60)), vec!["counter reached 30000"]);
}

#[test]
fn service_worker_pool() {
    let (_k, socket) = kernel("service");
    let mut provider = Proc::start_args(env!("CARGO_BIN_EXE_service-provider"), &["4", "40"], &socket);
    assert_eq!(provider.first_line(), "serving with 4 workers");
    let clients: Vec<Proc> =
        (0..2).map(|_| Proc::start_args(env!("CARGO_BIN_EXE_service-client"), &["20"], &socket)).collect();
    for c in clients {
        assert_eq!(c.finish(Duration::from_secs(60)), vec!["20 of 20 answers right"]);
    }
    let lines = provider.finish(Duration::from_secs(60));
    assert!(lines.len() == 1 && lines[0].starts_with("served 40 calls on "), "{lines:?}");
}

#[test]
fn shared_pose() {
    let (_k, socket) = kernel("shared");
    let mut reader = Proc::start(env!("CARGO_BIN_EXE_pose-reader"), &socket);
    assert_eq!(reader.first_line(), "reader ready");
    let writer = Proc::start(env!("CARGO_BIN_EXE_pose-writer"), &socket);
    assert_eq!(writer.finish(Duration::from_secs(60)), vec!["published 100 poses"]);
    let lines = reader.finish(Duration::from_secs(60));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].starts_with("saw pose 100; 0 torn of "), "{lines:?}");
}
