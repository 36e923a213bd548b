//! Soak: for a fixed number of rounds, clients of every kind (channel,
//! pipe and carrier senders and receivers, a service provider and its
//! callers, comutex users) come and go, and about half of each round's
//! processes are killed with SIGKILL at a random moment. Afterwards the
//! microkernel holds exactly the descriptors and mappings it held before,
//! its objects have no holders left, `/dev/shm` is as it was, and it still
//! serves. `COMESG_SOAK_ROUNDS` runs longer (default 8).

mod util;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use util::KernelProc;

/// xorshift64*: reproducible rounds from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn count_entries(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn mappings(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).map(|m| m.lines().count()).unwrap_or(0)
}

/// `comesg ARGS --socket S`, output discarded (its exit status is what
/// counts).
fn spawn(k: &KernelProc, args: &[&str]) -> Child {
    Command::new(util::exe())
        .args(args)
        .arg("--socket")
        .arg(&k.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn clients_that_come_go_and_die_leave_the_kernel_as_it_was() {
    let rounds: u64 = std::env::var("COMESG_SOAK_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(8);
    let k = KernelProc::start("soak");
    let kernel_pid = k.child.id();
    for args in [
        vec!["create", "/it/soak/ch", "--slot-size", "64", "--slots", "64"],
        vec!["create", "/it/soak/pipe", "--kind", "pipe", "--buffer", "4096"],
        vec!["create", "/it/soak/car", "--kind", "carrier", "--arena", "1048576", "--max-message", "4096"],
        vec!["create", "/it/soak/lock", "--kind", "comutex"],
    ] {
        let o = k.cli(&args);
        assert!(o.status.success(), "{o:?}");
    }
    // Let the kernel settle after the creates' clients left.
    std::thread::sleep(Duration::from_millis(200));
    let fds_before = count_entries(&format!("/proc/{kernel_pid}/fd"));
    let maps_before = mappings(kernel_pid);
    let shm_before = count_entries("/dev/shm");

    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut started, mut killed, mut failed_cleanly) = (0u64, 0u64, 0u64);
    let t0 = Instant::now();
    for round in 0..rounds {
        let mut procs: Vec<Child> = Vec::new();
        for port in ["/it/soak/ch", "/it/soak/pipe", "/it/soak/car"] {
            procs.push(spawn(&k, &["__peer", "seq-recv", port, "--idle", "1"]));
            let count = (200 + rng.below(2000)).to_string();
            procs.push(spawn(&k, &["__peer", "seq-send", port, "--id", &round.to_string(), "--count", &count]));
        }
        procs.push(spawn(&k, &["serve", "/it/soak/svc", "--workers", "2"]));
        procs.push(spawn(&k, &["call", "/it/soak/svc", "a", "b", "c", "--timeout", "2"]));
        procs.push(spawn(&k, &["__peer", "lock-loop", "/it/soak/lock", "--count", "20000"]));
        started += procs.len() as u64;
        std::thread::sleep(Duration::from_millis(10 + rng.below(90)));
        for p in procs.iter_mut() {
            if rng.below(2) == 0 {
                let _ = p.kill();
                killed += 1;
            }
        }
        // The rest finish (receivers after an idle second) or are ended
        // (the provider serves until killed).
        let deadline = Instant::now() + Duration::from_millis(2500);
        for mut p in procs {
            match util::try_wait_for(&mut p, deadline.saturating_duration_since(Instant::now())) {
                Some(st) if st.code().is_some_and(|c| c != 0) => failed_cleanly += 1,
                Some(_) => {}
                None => {
                    let _ = p.kill();
                    let _ = p.wait();
                    killed += 1;
                }
            }
        }
    }
    eprintln!(
        "soak: {rounds} rounds, {started} processes, {killed} killed, {failed_cleanly} ended with an error, {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // The kernel notices every departure (pidfds, hang-ups) on its own
    // time: wait until its descriptors are back, then compare everything.
    util::eventually(Duration::from_secs(20), "the kernel's descriptors back to where they began", || {
        count_entries(&format!("/proc/{kernel_pid}/fd")) == fds_before
    });
    assert_eq!(mappings(kernel_pid), maps_before, "the kernel's mappings");
    assert_eq!(count_entries("/dev/shm"), shm_before, "/dev/shm");
    let conn = k.connect();
    conn.ping().unwrap();
    for e in conn.list("/it/soak").unwrap() {
        let name = e.name.to_string();
        if name.ends_with("/svc") {
            // The provider is gone (killed or ended): the name is dead.
            assert_eq!(e.kind, comesg::EntryKind::Dead, "{e:?}");
        } else {
            assert!(e.holders.is_empty(), "{name} still has holders: {:?}", e.holders);
        }
    }
    // And the channel still works, once what the dead left in it is drained.
    let ch = conn.open_channel("/it/soak/ch", comesg::Rights::ALL).unwrap();
    let mut buf = [0u8; 64];
    let mut left = 0;
    while ch.try_recv(&mut buf).is_ok() {
        left += 1;
    }
    ch.send(b"after the soak").unwrap();
    let n = ch.recv_timeout(&mut buf, Duration::from_secs(5)).unwrap();
    assert_eq!(&buf[..n], b"after the soak", "({left} messages were left in it)");
}
