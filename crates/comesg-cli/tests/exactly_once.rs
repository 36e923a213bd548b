//! N senders x M receivers, each its own process, through a microkernel
//! running as its own process: every message is received exactly once, and
//! each receiver sees each sender's messages in order.

mod util;

use std::collections::HashMap;
use std::time::Duration;

use util::KernelProc;

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

    let mut seen: HashMap<(u32, u64), usize> = HashMap::new();
    let mut per_receiver = Vec::new();
    for (r, reader) in readers.into_iter().enumerate() {
        let lines = reader.join().unwrap();
        assert!(receivers[r].wait(Duration::from_secs(30)).success());
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
    let total = SENDERS as u64 * PER_SENDER;
    assert_eq!(seen.len() as u64, total, "messages missing (per receiver: {per_receiver:?})");
    assert!(seen.values().all(|&c| c == 1), "a message was delivered twice");
    assert!(per_receiver.iter().all(|&n| n > 0), "anycast should spread work: {per_receiver:?}");

    // The kernel's counters agree.
    let e = k.connect().list("/it/once").unwrap().pop().unwrap();
    assert_eq!((e.sent_msgs, e.received_msgs, e.lost, e.depth), (total, total, 0, 0));
}
