//! A microkernel out of file descriptors: connections it cannot accept wait
//! in the backlog without making it spin, and once descriptors are free
//! again it accepts new clients.

mod util;

use std::process::{Command, Stdio};
use std::time::Duration;

/// User plus system CPU time of `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name (which may contain spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// The kernel process, killed and reaped however the test ends.
struct Kernel(std::process::Child);

impl Drop for Kernel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn out_of_descriptors_the_kernel_waits_instead_of_spinning() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("SKIP: prlimit (util-linux) not found");
        return;
    }
    let dir = util::unique_dir("nofile");
    let socket = dir.join("kernel.sock");
    let kernel = Command::new("prlimit")
        .arg("--nofile=48:48")
        .arg(util::exe())
        .args(["kernel", "--log", "error", "--socket"])
        .arg(&socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let kernel = Kernel(kernel);
    util::eventually(Duration::from_secs(10), "kernel up", || comesg::Connection::connect(&socket).is_ok());
    // Far more connections than 48 descriptors allow (each accepted client
    // costs the kernel its socket and a pidfd).
    let held: Vec<_> = (0..60).filter_map(|_| comesg_sys::seqpacket::connect(&socket).ok()).collect();
    assert!(held.len() >= 30, "connections queue in the backlog: {}", held.len());
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(kernel.0.id());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(kernel.0.id()) - before;
    // A spinning loop would use about one second (100 ticks) here.
    assert!(used < 30, "the kernel used {used} ticks of CPU in one second while out of descriptors");
    drop(held);
    util::eventually(Duration::from_secs(10), "a new client is served again", || {
        comesg::Connection::connect(&socket).is_ok_and(|c| c.ping().is_ok())
    });
    drop(kernel);
    let _ = std::fs::remove_dir_all(&dir);
}
