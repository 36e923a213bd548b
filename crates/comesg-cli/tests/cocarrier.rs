//! COCARRIER across real processes: exactly-once delivery, the promise that
//! nobody can change a message after sending (tested by trying), no leaks
//! over 100,000 messages, and receivers killed holding messages.

mod util;

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use comesg::{CocarrierOptions, Rights};
use util::{text, KernelProc};

fn opts(arena: u64, queue: u32) -> CocarrierOptions {
    CocarrierOptions { arena, max_message: arena / 2, queue, persistent: true, ..Default::default() }
}

fn entry(k: &KernelProc, path: &str) -> comesg::Entry {
    k.connect().list(path).unwrap().pop().unwrap()
}

#[test]
fn three_senders_three_receivers_every_message_exactly_once() {
    let k = KernelProc::start("car-once");
    drop(k.connect().create_cocarrier("/it/c/once", opts(1 << 20, 64)).unwrap());
    let mut receivers: Vec<_> = (0..3).map(|_| k.peer(&["seq-recv", "/it/c/once", "--idle", "3"])).collect();
    let outs: Vec<_> = receivers.iter_mut().map(|r| r.collect()).collect();
    let n = 2000u64;
    let mut senders: Vec<_> = (0..3)
        .map(|id| k.peer(&["seq-send", "/it/c/once", "--id", &id.to_string(), "--count", &n.to_string()]))
        .collect();
    for s in &mut senders {
        assert!(s.wait(Duration::from_secs(120)).success());
    }
    let mut seen = HashSet::new();
    for (r, out) in receivers.iter_mut().zip(outs) {
        assert!(r.wait(Duration::from_secs(60)).success());
        for l in out.join().unwrap() {
            if !l.starts_with("done") {
                assert!(seen.insert(l.clone()), "delivered twice: {l}");
            }
        }
    }
    assert_eq!(seen.len() as u64, 3 * n);
    let e = entry(&k, "/it/c/once");
    assert_eq!((e.sent_msgs, e.received_msgs, e.arena_used), (3 * n, 3 * n, 0), "all released");
}

#[test]
fn nobody_can_change_a_message_after_it_is_sent() {
    let k = KernelProc::start("car-immut");
    let conn = k.connect();
    let tx = conn.create_cocarrier("/it/c/imm", opts(1 << 20, 16)).unwrap();
    let rx = conn.open_cocarrier("/it/c/imm", Rights::RECV).unwrap();

    // The sender changing its own buffer after sending changes nothing.
    let mut buf = vec![1u8; 4096];
    tx.send(&buf).unwrap();
    buf.fill(2);
    let m = rx.recv().unwrap();
    assert!(m.iter().all(|&b| b == 1), "the message is the bytes at send time");

    // The receiver's mapping cannot be made writable.
    let map = rx.arena_mapping().unwrap();
    assert!(map.try_make_writable().is_err(), "mprotect to writable refused");
    // Nor can the arena be opened for writing some other way: as root,
    // through /proc/self/map_files (which needs CAP_SYS_ADMIN), the open
    // works but the seal refuses every write and writable mapping.
    if comesg_sys::process::uid() == 0 {
        let start = map.as_ptr() as usize;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps.lines().find(|l| l.starts_with(&format!("{start:x}-"))).expect("arena in /proc/self/maps");
        let range = line.split_whitespace().next().unwrap();
        let path = format!("/proc/self/map_files/{range}");
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&path).expect("root opens map_files");
        assert!(std::io::Write::write(&mut &f, b"x").is_err(), "write(2) refused by F_SEAL_FUTURE_WRITE");
        let len = map.len();
        assert!(
            comesg_sys::mapping::Mapping::map(&f, len, comesg_sys::mapping::Access::ReadWrite).is_err(),
            "writable mapping refused by F_SEAL_FUTURE_WRITE"
        );
    } else {
        eprintln!("not root: skipping the /proc/self/map_files reopen check");
    }
    assert!(m.iter().all(|&b| b == 1));
    drop(m);

    // A receiver in another process that writes its view dies by SIGSEGV.
    let mut poker = k.peer(&["poke-carrier", "/it/c/imm"]);
    let out = poker.collect();
    tx.send(b"poke me").unwrap();
    let st = poker.wait(Duration::from_secs(30));
    assert_eq!(st.signal(), Some(11), "SIGSEGV, got {st:?}");
    assert_eq!(out.join().unwrap(), vec!["got 7"], "it received, then could not write");
}

#[test]
fn a_hundred_thousand_messages_leak_nothing() {
    let k = KernelProc::start("car-leak");
    drop(k.connect().create_cocarrier("/it/c/leak", opts(8 << 20, 256)).unwrap());
    // A process of its own, so that nothing else opens fds or maps memory
    // while it counts them.
    let mut churn = k.peer(&["carrier-churn", "/it/c/leak", "--count", "100000"]);
    let out = churn.collect();
    assert!(churn.wait(Duration::from_secs(600)).success());
    let out = out.join().unwrap();
    let f: Vec<&str> = out[0].split_whitespace().collect();
    assert_eq!(f[0], "fds", "{out:?}");
    assert_eq!((f[1], f[4]), (f[2], f[5]), "fds and mappings as before: {out:?}");
    let e = entry(&k, "/it/c/leak");
    println!("{out:?}, kernel: sent {} released {} arena used {}", e.sent_msgs, e.received_msgs, e.arena_used);
    assert_eq!(e.sent_msgs, 100_001);
    // The last releases are collected on the kernel's next carrier request
    // (or when the handles closed): the arena is empty.
    assert_eq!(e.arena_used, 0, "arena space all returned");
}

#[test]
fn a_receiver_killed_holding_messages_frees_them_and_others_go_on() {
    let k = KernelProc::start("car-death");
    let conn = k.connect();
    let tx = conn.create_cocarrier("/it/c/d", opts(1 << 20, 16)).unwrap();
    let mut holder = k.peer(&["hold-carrier", "/it/c/d", "--count", "2"]);
    for i in 0..2u8 {
        tx.send(&[i; 1000]).unwrap();
    }
    let mut line = String::new();
    std::io::BufRead::read_line(holder.out.as_mut().unwrap(), &mut line).unwrap();
    assert_eq!(line.trim(), "holding 2");
    assert_eq!(entry(&k, "/it/c/d").arena_used, 2048);
    holder.kill9();
    util::eventually(Duration::from_secs(10), "the dead receiver's messages to be freed", || {
        let e = entry(&k, "/it/c/d");
        e.arena_used == 0 && e.lost == 2
    });
    let rx = conn.open_cocarrier("/it/c/d", Rights::RECV).unwrap();
    tx.send(b"after").unwrap();
    assert_eq!(&*rx.recv_timeout(Duration::from_secs(10)).unwrap(), b"after");
}

#[test]
fn the_cli_sends_and_receives_on_a_carrier() {
    let k = KernelProc::start("car-cli");
    assert!(k
        .cli(&["create", "/it/c/cli", "--kind", "carrier", "--arena", "1048576", "--max-message", "65536"])
        .status
        .success());
    let recv = std::process::Command::new(util::exe())
        .args(["recv", "/it/c/cli", "--count", "2", "--timeout", "30", "--socket"])
        .arg(&k.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    util::eventually(Duration::from_secs(10), "the receiver to attach", || entry(&k, "/it/c/cli").refs == 1);
    assert!(k.cli(&["send", "/it/c/cli", "one", "two"]).status.success());
    assert_eq!(text(&util::wait_output(recv, Duration::from_secs(60))), "one\ntwo\n");
    assert!(text(&k.cli(&["ls", "/it/c"])).contains("carrier"));
}

#[test]
fn a_handle_passed_in_a_message_works_in_the_receiver_and_cannot_be_widened() {
    let k = KernelProc::start("car-pass");
    let conn = k.connect();
    let tx = conn.create_cocarrier("/it/c/pass", opts(1 << 20, 16)).unwrap();
    let jobs = conn.create_channel("/it/c/jobs", Default::default()).unwrap();
    let refs = |k: &KernelProc| entry(k, "/it/c/jobs").refs;
    assert_eq!(refs(&k), 1);

    // Widening is refused: a RECV-only handle cannot pass SEND.
    let recv_only = conn.open_channel("/it/c/jobs", Rights::RECV).unwrap();
    let widen = tx.send_with(b"x", &[(&recv_only, Rights::ALL)]);
    assert!(
        matches!(widen, Err(comesg::SendError::Refused(comesg::KernelError::PermissionDenied { ref name, .. })) if name.as_str() == "/it/c/jobs"),
        "{widen:?}"
    );
    drop(recv_only);

    let mut taker = k.peer(&["take-handle", "/it/c/pass"]);
    let out = taker.collect();
    tx.send_with(b"your queue", &[(&jobs, Rights::RECV)]).unwrap();
    jobs.send(b"job 1").unwrap();
    assert!(taker.wait(Duration::from_secs(60)).success());
    let out = out.join().unwrap();
    assert_eq!(out, vec!["attached 1", "rights -r", "got job 1", "send: this handle has no SEND right"], "{out:?}");
    util::eventually(Duration::from_secs(10), "the taker's reference to go", || refs(&k) == 1);

    // In flight, the message holds a reference; dropped unread, it gives
    // it back.
    let rx = conn.open_cocarrier("/it/c/pass", Rights::RECV).unwrap();
    tx.send_with(b"unread", &[(&jobs, Rights::SEND)]).unwrap();
    assert_eq!(refs(&k), 2, "the handle in flight counts");
    let m = rx.recv().unwrap();
    assert_eq!(m.attached(), 1);
    drop(m);
    tx.send(b"nudge").unwrap(); // the kernel collects releases on its next carrier request
    assert_eq!(refs(&k), 1, "a message dropped unread released its handle");
    drop(rx.recv().unwrap());
    // A carrier cannot carry itself.
    assert!(tx.send_with(b"me", &[(&tx, Rights::SEND)]).is_err());
}

#[test]
fn a_message_built_in_place_travels_without_a_copy() {
    let k = KernelProc::start("car-build");
    let conn = k.connect();
    let tx = conn.create_cocarrier("/it/c/build", opts(1 << 20, 16)).unwrap();
    let mut receiver = k.peer(&["seq-recv", "/it/c/build", "--idle", "2"]);
    let out = receiver.collect();
    assert!(tx.build(1 << 20).is_err(), "over the carrier's limit");
    let mut big = tx.build(400_000).unwrap();
    big.as_mut_slice().fill(1);
    big.send().unwrap();
    let mut small = tx.build(16).unwrap();
    small.as_mut_slice().copy_from_slice(&[2, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    small.send().unwrap();
    assert_eq!(entry(&k, "/it/c/build").arena_used, 0, "built messages take no arena space");
    assert!(receiver.wait(Duration::from_secs(30)).success());
    assert_eq!(out.join().unwrap(), vec!["bad-length 400000", "2 6", "done 1"]);
    let e = entry(&k, "/it/c/build");
    assert_eq!((e.sent_msgs, e.received_msgs), (2, 2));
}

#[test]
fn a_sender_whose_memory_the_kernel_may_not_read_falls_back_to_building_in_place() {
    let k = KernelProc::start_with_env("car-fallback", &[("COMESG_KERNEL_REFUSE_PEER_READ", "1")]);
    let conn = k.connect();
    let tx = conn.create_cocarrier("/it/c/fb", opts(1 << 20, 16)).unwrap();
    let rx = conn.open_cocarrier("/it/c/fb", Rights::RECV).unwrap();
    tx.send(b"still delivered").unwrap();
    let m = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(&*m, b"still delivered");
    let e = entry(&k, "/it/c/fb");
    assert_eq!((e.sent_msgs, e.arena_used), (1, 0), "sent as a sealed memfd, not through the arena");
}
