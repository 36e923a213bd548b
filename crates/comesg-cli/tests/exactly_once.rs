//! N senders x M receivers, each its own process, through a microkernel
//! running as its own process: every message is received exactly once, and
//! each receiver sees each sender's messages in order; also while a sole
//! sender and a sole receiver lose their leases and get them back.

mod util;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use comesg::Rights;
use util::{eventually, KernelProc};

/// Each receiver's "ID SEQ" lines (and its closing "done N"): how often
/// each (sender, sequence) arrived, and how many each receiver took.
/// Fails if a receiver saw one sender's messages out of order.
fn tally(receivers: Vec<Vec<String>>) -> (HashMap<(u32, u64), usize>, Vec<usize>) {
    let mut seen: HashMap<(u32, u64), usize> = HashMap::new();
    let mut per_receiver = Vec::new();
    for (r, lines) in receivers.into_iter().enumerate() {
        let mut last: HashMap<u32, u64> = HashMap::new();
        let mut n = 0;
        for line in lines {
            let mut it = line.split_whitespace();
            let (a, b) = (it.next().unwrap(), it.next().unwrap());
            if a == "done" {
                assert_eq!(b.parse::<usize>().unwrap(), n);
                continue;
            }
            assert_ne!(a, "bad-length", "a message arrived with the wrong length");
            let (id, seq): (u32, u64) = (a.parse().unwrap(), b.parse().unwrap());
            if let Some(prev) = last.insert(id, seq) {
                assert!(seq > prev, "receiver {r} saw sender {id} out of order: {prev} then {seq}");
            }
            *seen.entry((id, seq)).or_default() += 1;
            n += 1;
        }
        per_receiver.push(n);
    }
    (seen, per_receiver)
}

#[test]
fn three_senders_two_receivers_every_message_exactly_once() {
    const SENDERS: u32 = 3;
    const RECEIVERS: usize = 2;
    const PER_SENDER: u64 = 30_000;
    let k = KernelProc::start("once");
    let out = k.cli(&["create", "/it/once", "--slot-size", "64", "--slots", "64"]);
    assert!(out.status.success(), "{out:?}");

    let mut receivers: Vec<_> = (0..RECEIVERS).map(|_| k.peer(&["seq-recv", "/it/once", "--idle", "3"])).collect();
    let readers: Vec<_> = receivers.iter_mut().map(|r| r.collect()).collect();
    let count = PER_SENDER.to_string();
    let mut senders: Vec<_> =
        (0..SENDERS).map(|id| k.peer(&["seq-send", "/it/once", "--id", &id.to_string(), "--count", &count])).collect();
    for s in &mut senders {
        assert!(s.wait(Duration::from_secs(120)).success());
    }

    let lines = readers.into_iter().map(|r| r.join().unwrap()).collect();
    for r in &mut receivers {
        assert!(r.wait(Duration::from_secs(30)).success());
    }
    let (seen, per_receiver) = tally(lines);
    let total = SENDERS as u64 * PER_SENDER;
    assert_eq!(seen.len() as u64, total, "messages missing (per receiver: {per_receiver:?})");
    assert!(seen.values().all(|&c| c == 1), "a message was delivered twice");
    assert!(per_receiver.iter().all(|&n| n > 0), "anycast should spread work: {per_receiver:?}");

    // The kernel's counters agree.
    let e = k.connect().list("/it/once").unwrap().pop().unwrap();
    assert_eq!((e.sent_msgs, e.received_msgs, e.lost, e.depth), (total, total, 0, 0));
}

/// Sets its flag when dropped, a panic's unwinding included.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Relaxed);
    }
}

/// One tagged message as `seq-recv` expects it: sender id, sequence.
fn tagged(id: u32, seq: u64) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..4].copy_from_slice(&id.to_le_bytes());
    m[4..12].copy_from_slice(&seq.to_le_bytes());
    m
}

#[test]
fn sole_holders_lose_their_leases_mid_stream_and_nothing_is_lost() {
    const FIRST: u64 = 20_000;
    const OTHER: u64 = 30_000;
    let k = KernelProc::start("lease");
    let out = k.cli(&["create", "/it/lease", "--slot-size", "64", "--slots", "64"]);
    assert!(out.status.success(), "{out:?}");
    let conn = k.connect();
    let tx = conn.open_channel("/it/lease", Rights::SEND).unwrap();
    assert!(tx.sole_sender(), "the only sender holds the senders' lease");

    // A sole receiver takes the messages under its lease; a thread of this
    // process sends them under its own, without pause, while a second
    // receiver and a second sender attach: the microkernel revokes both
    // leases before it answers them, with claims under them in flight.
    let mut first = k.peer(&["seq-recv", "/it/lease", "--idle", "3"]);
    let mut readers = vec![first.collect()];
    let sent = AtomicU64::new(0);
    let other_done = AtomicBool::new(false);
    let mut second = None;
    let mut mine = 0;
    std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            // Until the other sender is done, so the two overlap.
            let mut seq = 0;
            while !other_done.load(Relaxed) {
                tx.send(&tagged(0, seq)).unwrap();
                seq += 1;
                sent.store(seq, Relaxed);
            }
            // Alone again: the lease comes back, and more go under it.
            eventually(Duration::from_secs(10), "the lease granted again", || tx.sole_sender());
            for _ in 0..FIRST {
                tx.send(&tagged(0, seq)).unwrap();
                seq += 1;
            }
            seq
        });
        // Should an assertion below fail, the sender still stops.
        let _stop = StopOnDrop(&other_done);
        eventually(Duration::from_secs(60), "the first messages sent", || sent.load(Relaxed) >= FIRST);
        let mut r = k.peer(&["seq-recv", "/it/lease", "--idle", "3"]);
        readers.push(r.collect());
        second = Some(r);
        let count = OTHER.to_string();
        let mut other = k.peer(&["seq-send", "/it/lease", "--id", "1", "--count", &count]);
        assert!(!tx.sole_sender(), "a second sender attached: the lease is revoked");
        assert!(other.wait(Duration::from_secs(120)).success());
        other_done.store(true, Relaxed);
        mine = sender.join().unwrap();
    });

    let lines = readers.into_iter().map(|r| r.join().unwrap()).collect();
    for r in [Some(&mut first), second.as_mut()].into_iter().flatten() {
        assert!(r.wait(Duration::from_secs(30)).success());
    }
    let (seen, per_receiver) = tally(lines);
    assert!(mine > 2 * FIRST);
    assert_eq!(seen.len() as u64, mine + OTHER, "messages missing (per receiver: {per_receiver:?})");
    assert!(seen.values().all(|&c| c == 1), "a message was delivered twice");
    assert!((0..mine).all(|s| seen.contains_key(&(0, s))) && (0..OTHER).all(|s| seen.contains_key(&(1, s))));
    let e = conn.list("/it/lease").unwrap().pop().unwrap();
    assert_eq!((e.sent_msgs, e.received_msgs, e.lost, e.depth), (mine + OTHER, mine + OTHER, 0, 0));
}
