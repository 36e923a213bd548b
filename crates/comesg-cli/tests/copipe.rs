//! COPIPE across real processes: exactly-once delivery among several
//! senders and receivers, a 1 GiB byte stream checked by hash, end of file
//! and broken pipe when the other side dies, and the CLI.

mod util;

use std::collections::HashSet;
use std::time::Duration;

use comesg::{CopipeOptions, EntryKind, PortKind, RecvError, Rights, SendError};
use util::{text, KernelProc};

fn create(k: &KernelProc, path: &str, buffer: u32) -> comesg::Copipe {
    let opts = CopipeOptions { buffer, receivers: 8, rights: Rights::SEND, persistent: true, ..Default::default() };
    k.connect().create_copipe(path, opts).unwrap()
}

#[test]
fn three_senders_three_receivers_every_message_exactly_once() {
    let k = KernelProc::start("pipe-once");
    drop(create(&k, "/it/p/once", 64));
    let mut receivers: Vec<_> = (0..3).map(|_| k.peer(&["seq-recv", "/it/p/once", "--idle", "3"])).collect();
    let outs: Vec<_> = receivers.iter_mut().map(|r| r.collect()).collect();
    let n = 3000u64;
    let mut senders: Vec<_> = (0..3)
        .map(|id| k.peer(&["seq-send", "/it/p/once", "--id", &id.to_string(), "--count", &n.to_string()]))
        .collect();
    for s in &mut senders {
        assert!(s.wait(Duration::from_secs(120)).success());
    }
    let mut seen = HashSet::new();
    let mut per = Vec::new();
    for (r, out) in receivers.iter_mut().zip(outs) {
        assert!(r.wait(Duration::from_secs(60)).success());
        let lines = out.join().unwrap();
        let mut got = 0;
        for l in &lines {
            if l.starts_with("done") {
                continue;
            }
            assert!(seen.insert(l.clone()), "delivered twice: {l}");
            got += 1;
        }
        per.push(got);
    }
    println!("messages per receiver: {per:?}");
    assert_eq!(seen.len() as u64, 3 * n, "every message arrived");
    for id in 0..3 {
        for s in 0..n {
            assert!(seen.contains(&format!("{id} {s}")), "missing {id} {s}");
        }
    }
}

#[test]
fn a_gigabyte_streams_through_read_and_write_intact() {
    let k = KernelProc::start("pipe-stream");
    drop(create(&k, "/it/p/stream", 1 << 20));
    let mut reader = k.peer(&["stream-read", "/it/p/stream"]);
    let out = reader.collect();
    let bytes = (1u64 << 30).to_string();
    let mut writer = k.peer(&["stream-write", "/it/p/stream", "--bytes", &bytes, "--seed", "7"]);
    let wrote = writer.collect();
    assert!(writer.wait(Duration::from_secs(300)).success());
    assert!(reader.wait(Duration::from_secs(60)).success(), "the reader saw end of file");
    let wrote = wrote.join().unwrap();
    let read = out.join().unwrap();
    let w: Vec<&str> = wrote[0].split_whitespace().collect();
    let r: Vec<&str> = read[0].split_whitespace().collect();
    assert_eq!((w[0], r[0]), ("wrote", "read"));
    assert_eq!(w[1], bytes);
    assert_eq!(r[1..], w[1..], "same length and hash on both sides");
}

#[test]
fn a_blocked_receiver_sees_end_of_file_when_the_last_sender_is_killed() {
    let k = KernelProc::start("pipe-eof");
    drop(create(&k, "/it/p/eof", 64));
    let conn = k.connect();
    let rx = conn.open_copipe("/it/p/eof", Rights::RECV).unwrap();
    let mut sender = k.peer(&["hold-pipe", "/it/p/eof", "--rights", "s"]);
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        rx.recv_timeout(&mut buf, Duration::from_secs(60))
    });
    std::thread::sleep(Duration::from_millis(200));
    sender.kill9();
    assert_eq!(t.join().unwrap(), Err(RecvError::Closed));
}

#[test]
fn a_blocked_sender_sees_a_broken_pipe_when_the_last_receiver_is_killed() {
    let k = KernelProc::start("pipe-broken");
    let tx = create(&k, "/it/p/broken", 64);
    let mut receiver = k.peer(&["hold-pipe", "/it/p/broken", "--rights", "r"]);
    let t = std::thread::spawn(move || tx.send_timeout(b"never taken", Duration::from_secs(60)));
    std::thread::sleep(Duration::from_millis(200));
    receiver.kill9();
    assert_eq!(t.join().unwrap(), Err(SendError::Closed));
}

/// A receiver that opened its offer (by polling) and does not take: a
/// timed send gives up at its deadline and withdraws the message (nobody
/// ever receives it), instead of waiting for the receiver; the offer stays
/// open, and the next send is received exactly once.
#[test]
fn a_timed_send_into_an_offer_nobody_takes_times_out_and_is_never_delivered() {
    let k = KernelProc::start("pipe-withdraw");
    let tx = create(&k, "/it/p/withdraw", 64);
    let mut receiver = k.peer(&["offer-pipe", "/it/p/withdraw", "--hold-ms", "2000"]);
    let lines = receiver.collect();
    let (done, answers) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let first = tx.send_timeout(b"first", Duration::from_millis(300));
        let second = tx.send_timeout(b"second", Duration::from_secs(60));
        let _ = done.send((first, second));
    });
    // Bounded: a send stuck past its deadline fails here, not by hanging.
    let (first, second) = answers.recv_timeout(Duration::from_secs(30)).expect("the sends returned");
    assert_eq!(first, Err(SendError::TimedOut));
    assert_eq!(second, Ok(()));
    assert_eq!(lines.join().unwrap(), ["take second"]);
}

#[test]
fn the_cli_creates_sends_and_receives_on_a_pipe() {
    let k = KernelProc::start("pipe-cli");
    assert!(k.cli(&["create", "/it/p/cli", "--kind", "pipe", "--buffer", "128"]).status.success());
    let e = k.connect().list("/it/p/cli").unwrap().pop().unwrap();
    assert_eq!(e.kind, EntryKind::Port(PortKind::Pipe));
    let recv = std::process::Command::new(util::exe())
        .args(["recv", "/it/p/cli", "--count", "2", "--timeout", "30", "--socket"])
        .arg(&k.socket)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A pipe's send waits for a receiver: send once the receiver holds it,
    // so that a receiver that failed to start shows as such, not as a hang.
    let pid = recv.id();
    let mut recv = Some(recv);
    let attached = |k: &KernelProc| {
        k.connect().list("/it/p/cli").unwrap().pop().is_some_and(|e| e.holders.iter().any(|h| h.pid == pid))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !attached(&k) {
        if std::time::Instant::now() > deadline {
            let out = util::wait_output(recv.take().unwrap(), Duration::from_secs(5));
            panic!("the receiver never held the pipe: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let sent = k.cli(&["send", "/it/p/cli", "one", "two"]);
    assert!(sent.status.success(), "{sent:?}");
    let got = util::wait_output(recv.take().unwrap(), Duration::from_secs(60));
    assert_eq!(text(&got), "one\ntwo\n");
    assert!(text(&k.cli(&["ls", "/it/p"])).contains("pipe"));
}

#[test]
fn a_reader_sees_end_of_file_after_a_short_lived_writer_and_empty_messages_are_not_eof() {
    let k = KernelProc::start("pipe-short");
    drop(create(&k, "/it/p/short", 64));
    let conn = k.connect();
    let mut rx = conn.open_copipe("/it/p/short", Rights::RECV).unwrap();
    // The writer comes after the reader, sends an empty message and one
    // line, and leaves; the reader never saw it live before the data came.
    let writer = std::thread::spawn({
        let k_socket = k.socket.clone();
        move || {
            let conn = comesg::Connection::connect(&k_socket).unwrap();
            let tx = conn.open_copipe("/it/p/short", Rights::SEND).unwrap();
            tx.send(b"").unwrap();
            tx.send(b"last").unwrap();
        }
    });
    let mut all = Vec::new();
    std::io::Read::read_to_end(&mut rx, &mut all).unwrap();
    writer.join().unwrap();
    assert_eq!(all, b"last", "the empty message did not end the stream, and end of file came");
}

#[test]
fn a_receive_only_handle_cannot_write_message_data() {
    use std::os::unix::process::ExitStatusExt;
    let k = KernelProc::start("pipe-rights");
    drop(create(&k, "/it/p/rights", 64));
    let mut recv_only = k.peer(&["poke", "/it/p/rights", "--rights", "r", "--segment", "pipe-data"]);
    let st = recv_only.wait(Duration::from_secs(30));
    assert_eq!(st.signal(), Some(11), "a RECV-only handle's write to pipe data: SIGSEGV, got {st:?}");
    let mut sender = k.peer(&["poke", "/it/p/rights", "--rights", "s", "--segment", "pipe-data"]);
    assert!(sender.wait(Duration::from_secs(30)).success(), "a SEND handle may write its buffers");
}

#[test]
fn survivors_go_on_when_a_sender_and_a_receiver_are_killed_mid_stream() {
    let k = KernelProc::start("pipe-kill");
    drop(create(&k, "/it/p/kill", 64));
    let mut doomed_rx = k.peer(&["seq-recv", "/it/p/kill", "--idle", "30"]);
    let mut rx = k.peer(&["seq-recv", "/it/p/kill", "--idle", "3"]);
    let out = rx.collect();
    let _doomed_out = doomed_rx.collect();
    let mut doomed_tx = k.peer(&["seq-send", "/it/p/kill", "--id", "9", "--count", "100000000"]);
    let n = 20_000u64;
    let mut tx = k.peer(&["seq-send", "/it/p/kill", "--id", "1", "--count", &n.to_string()]);
    std::thread::sleep(Duration::from_millis(200));
    doomed_tx.kill9();
    doomed_rx.kill9();
    assert!(tx.wait(Duration::from_secs(120)).success(), "the surviving sender finished");
    assert!(rx.wait(Duration::from_secs(60)).success(), "the surviving receiver finished");
    let lines = out.join().unwrap();
    let mine: Vec<&String> = lines.iter().filter(|l| l.starts_with("1 ")).collect();
    let distinct: HashSet<&String> = mine.iter().copied().collect();
    assert_eq!(distinct.len(), mine.len(), "no message twice");
    assert!(!mine.is_empty());
    println!("the surviving receiver got {} of the surviving sender's {n}", mine.len());
    assert!(lines.last().is_some_and(|l| l.starts_with("done")));
}
