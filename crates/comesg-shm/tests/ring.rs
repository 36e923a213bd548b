//! Ring invariants: sequential model checks (property tests), concurrent
//! exactly-once delivery, rights of read-only mappings, crash repair.

use std::collections::VecDeque;
use std::sync::Arc;

use comesg_shm::channel::{blocking, Geometry, Ring, RingError, Side};
use comesg_sys::mapping::{Access, Mapping};
use comesg_sys::memfd;
use proptest::prelude::*;

struct Fds {
    s: comesg_sys::OwnedFd,
    r: comesg_sys::OwnedFd,
    geo: Geometry,
}

fn segments(geo: Geometry) -> Fds {
    let s = memfd::create_segment("t-s", geo.sender_segment_len() as u64).unwrap();
    let r = memfd::create_segment("t-r", geo.receiver_segment_len() as u64).unwrap();
    Fds { s, r, geo }
}

fn map(f: &Fds, s: Access, r: Access) -> Ring {
    let so = if s == Access::ReadOnly { memfd::reopen_read_only(&f.s).unwrap() } else { f.s.try_clone().unwrap() };
    let ro = if r == Access::ReadOnly { memfd::reopen_read_only(&f.r).unwrap() } else { f.r.try_clone().unwrap() };
    Ring::new(
        f.geo,
        Mapping::map(&so, f.geo.sender_segment_len(), s).unwrap(),
        Mapping::map(&ro, f.geo.receiver_segment_len(), r).unwrap(),
    )
    .unwrap()
}

fn ring(slot_size: u32, slots: u32) -> (Fds, Ring) {
    let f = segments(Geometry { slot_size, slots, max_holders: 8 });
    let r = map(&f, Access::ReadWrite, Access::ReadWrite);
    r.initialize().unwrap();
    (f, r)
}

#[derive(Debug, Clone)]
enum Op {
    Send(u8),
    Recv,
    Loan { send: bool },
    Peek { release: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        any::<u8>().prop_map(Op::Send),
        Just(Op::Recv),
        any::<bool>().prop_map(|send| Op::Loan { send }),
        any::<bool>().prop_map(|release| Op::Peek { release }),
    ]
}

proptest! {
    /// Any sequence of operations behaves like a bounded FIFO queue in which
    /// a cancelled loan holds its slot (as `None`) until a receiver passes it.
    ///
    /// With `lease`, the plain sends and receives hold their sides' leases,
    /// so they take the lone holder's straight path wherever it applies and
    /// the general one around cancelled slots (the loans and peeks claim
    /// as other holders, one at a time).
    #[test]
    fn behaves_like_a_bounded_fifo(ops in proptest::collection::vec(op(), 1..400), slots_log in 1u32..5, lease: bool) {
        let cap = 1usize << slots_log;
        let (_f, ring) = ring(16, cap as u32);
        if lease {
            ring.set_lease(Side::Send, Some(1)).unwrap();
            ring.set_lease(Side::Recv, Some(2)).unwrap();
        }
        let mut model: VecDeque<Option<Vec<u8>>> = VecDeque::new();
        let mut n = 0u32;
        for op in ops {
            match op {
                Op::Send(len) => {
                    let msg: Vec<u8> = (0..(len % 17)).map(|i| i ^ n as u8).collect();
                    n += 1;
                    match ring.try_send(1, &msg) {
                        Ok(()) => { prop_assert!(msg.len() <= 16); prop_assert!(model.len() < cap); model.push_back(Some(msg)) }
                        Err(RingError::Full) => prop_assert_eq!(model.len(), cap),
                        Err(RingError::TooLong { .. }) => prop_assert!(msg.len() > 16),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                }
                Op::Recv => {
                    let mut buf = [0u8; 16];
                    match ring.try_recv(2, &mut buf) {
                        Ok(len) => prop_assert_eq!(Some(buf[..len].to_vec()), pop(&mut model)),
                        Err(RingError::Empty) => prop_assert_eq!(pop(&mut model), None),
                        Err(e) => prop_assert!(false, "unexpected {e}"),
                    }
                }
                Op::Loan { send } => match ring.try_claim_send(3) {
                    Ok(claim) => {
                        let mut loan = comesg_shm::channel::SendLoan::new(&ring, claim);
                        loan.as_mut_slice()[..3].copy_from_slice(b"abc");
                        if send { loan.send(3).unwrap(); model.push_back(Some(b"abc".to_vec())); } else { model.push_back(None) }
                    }
                    Err(RingError::Full) => prop_assert_eq!(model.len(), cap),
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                },
                Op::Peek { release } => match ring.try_claim_recv(4) {
                    Ok(claim) => {
                        let slot = comesg_shm::channel::RecvSlot::new(&ring, claim);
                        prop_assert_eq!(Some(slot.to_vec()), pop(&mut model));
                        if release { slot.release().unwrap() }
                    }
                    Err(RingError::Empty) => prop_assert_eq!(pop(&mut model), None),
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                },
            }
            prop_assert_eq!(ring.stats().depth as usize, model.len());
        }
    }
}

/// What a receiver gets from the model: cancelled slots are passed over.
fn pop(model: &mut VecDeque<Option<Vec<u8>>>) -> Option<Vec<u8>> {
    while let Some(front) = model.pop_front() {
        if front.is_some() {
            return front;
        }
    }
    None
}

#[test]
fn concurrent_senders_and_receivers_deliver_each_message_once() {
    let (_f, ring) = ring(16, 64);
    let ring = Arc::new(ring);
    const SENDERS: u32 = 3;
    const PER: u64 = 20_000;
    let mut handles = Vec::new();
    for s in 0..SENDERS {
        let ring = ring.clone();
        handles.push(std::thread::spawn(move || {
            for seq in 0..PER {
                let mut msg = [0u8; 16];
                msg[..4].copy_from_slice(&s.to_le_bytes());
                msg[4..12].copy_from_slice(&seq.to_le_bytes());
                let mut claim = blocking::claim_send(&ring, s, None).unwrap();
                ring.write(&mut claim, &msg).unwrap();
                ring.publish(claim, 16).unwrap();
            }
        }));
    }
    let total = SENDERS as u64 * PER;
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut recv = Vec::new();
    for r in 0..3u32 {
        let ring = ring.clone();
        let got = got.clone();
        recv.push(std::thread::spawn(move || {
            let mut mine = Vec::new();
            loop {
                let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
                match blocking::claim_recv(&ring, 4 + r, Some(deadline)) {
                    Ok(c) => {
                        let m = ring.slot(&c);
                        let s = u32::from_le_bytes(m[..4].try_into().unwrap());
                        let q = u64::from_le_bytes(m[4..12].try_into().unwrap());
                        mine.push((s, q));
                        ring.release(c).unwrap();
                    }
                    Err(blocking::WaitError::TimedOut) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            got.lock().unwrap().extend(mine);
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    for h in recv {
        h.join().unwrap();
    }
    let mut got = got.lock().unwrap().clone();
    assert_eq!(got.len() as u64, total);
    got.sort();
    got.dedup();
    assert_eq!(got.len() as u64, total, "duplicates");
}

#[test]
fn read_only_sides_are_refused_without_faulting() {
    let f = segments(Geometry { slot_size: 8, slots: 4, max_holders: 4 });
    let kernel = map(&f, Access::ReadWrite, Access::ReadWrite);
    kernel.initialize().unwrap();
    let rx = map(&f, Access::ReadOnly, Access::ReadWrite);
    let tx = map(&f, Access::ReadWrite, Access::ReadOnly);
    assert_eq!(rx.try_send(0, b"x"), Err(RingError::NoRight(Side::Send)));
    assert_eq!(tx.try_recv(0, &mut [0; 8]), Err(RingError::NoRight(Side::Recv)));
    tx.try_send(0, b"hi").unwrap();
    let mut buf = [0; 8];
    assert_eq!(rx.try_recv(1, &mut buf), Ok(2));
}

#[test]
fn repair_finishes_a_dead_senders_and_a_dead_receivers_claims() {
    let (_f, ring) = ring(8, 4);
    ring.try_send(0, b"one").unwrap();
    let stuck = ring.try_claim_send(5).unwrap();
    let _ = stuck; // a bare claim has no Drop: the slot stays claimed, as if its holder died
    ring.try_send(0, b"three").unwrap();
    let mut buf = [0; 8];
    assert_eq!(ring.try_recv(1, &mut buf), Ok(3));
    assert_eq!(ring.try_recv(1, &mut buf), Err(RingError::Empty), "blocked behind the claim");
    assert_eq!(ring.repair_holder(Side::Send, 5), Ok(1));
    assert_eq!(ring.try_recv(1, &mut buf), Ok(5));
    assert_eq!(&buf[..5], b"three");

    ring.try_send(0, b"four").unwrap();
    let held = ring.try_claim_recv(6).unwrap();
    let _ = held; // likewise: as if the receiver died holding it
    for _ in 0..3 {
        ring.try_send(0, b"x").unwrap();
    }
    assert_eq!(ring.try_send(0, b"x"), Err(RingError::Full), "slot held by the dead receiver");
    assert_eq!(ring.repair_holder(Side::Recv, 6), Ok(1));
    ring.try_send(0, b"y").unwrap();
    for want in [&b"x"[..], b"x", b"x", b"y"] {
        let n = ring.try_recv(1, &mut buf).unwrap();
        assert_eq!(&buf[..n], want);
    }
}

#[test]
fn scribbled_stamps_give_errors_not_faults() {
    let f = segments(Geometry { slot_size: 8, slots: 4, max_holders: 4 });
    let ring = map(&f, Access::ReadWrite, Access::ReadWrite);
    ring.initialize().unwrap();
    // Overwrite the whole sender segment with junk, as a hostile sender could.
    let m = Mapping::map(&f.s, f.geo.sender_segment_len(), Access::ReadWrite).unwrap();
    for (i, chunk) in (0..m.len()).step_by(8).enumerate() {
        let w = comesg_shm_test_word(&m, chunk);
        w.store(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1), std::sync::atomic::Ordering::Relaxed);
    }
    let mut buf = [0; 8];
    for _ in 0..100 {
        match ring.try_recv(1, &mut buf) {
            Ok(n) => assert!(n <= 8),
            Err(RingError::Corrupt(_)) | Err(RingError::Empty) => {}
            Err(e) => panic!("unexpected {e}"),
        }
        let _ = ring.try_send(0, b"abc");
    }
}

fn comesg_shm_test_word(m: &Mapping, off: usize) -> &std::sync::atomic::AtomicU64 {
    &m.words()[off / 8]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random shapes of concurrent use (threads per side, ring size, message
    /// counts, zero-copy or copy): every message is received exactly once,
    /// in order per sender, and the ring ends empty.
    #[test]
    fn concurrent_use_delivers_exactly_once(
        senders in 1u32..4,
        receivers in 1u32..4,
        slots_log in 1u32..6,
        per in 1u64..3000,
        zero_copy in any::<bool>(),
    ) {
        let (_f, ring) = ring(16, 1 << slots_log);
        let ring = Arc::new(ring);
        let done = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let tx: Vec<_> = (0..senders).map(|s| {
            let (ring, done) = (ring.clone(), done.clone());
            std::thread::spawn(move || {
                for seq in 0..per {
                    let mut msg = [0u8; 12];
                    msg[..4].copy_from_slice(&s.to_le_bytes());
                    msg[4..].copy_from_slice(&seq.to_le_bytes());
                    let claim = blocking::claim_send(&ring, s, None).unwrap();
                    if zero_copy {
                        let mut loan = comesg_shm::channel::SendLoan::new(&ring, claim);
                        loan.as_mut_slice()[..12].copy_from_slice(&msg);
                        loan.send(12).unwrap();
                    } else {
                        let mut claim = claim;
                        ring.write(&mut claim, &msg).unwrap();
                        ring.publish(claim, 12).unwrap();
                    }
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
        }).collect();
        let rx: Vec<_> = (0..receivers).map(|r| {
            let (ring, done) = (ring.clone(), done.clone());
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(20);
                    match blocking::claim_recv(&ring, 4 + r, Some(deadline)) {
                        Ok(c) => {
                            let m = ring.slot(&c);
                            let s = u32::from_le_bytes(m[..4].try_into().unwrap());
                            let q = u64::from_le_bytes(m[4..12].try_into().unwrap());
                            ring.release(c).unwrap();
                            got.push((s, q));
                        }
                        Err(blocking::WaitError::TimedOut) => {
                            if done.load(std::sync::atomic::Ordering::SeqCst) == senders && ring.stats().depth == 0 {
                                return got;
                            }
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        }).collect();
        for t in tx { t.join().unwrap(); }
        let mut all = Vec::new();
        for t in rx {
            let got = t.join().unwrap();
            // Per receiver, each sender's messages come in order.
            let mut last = std::collections::HashMap::new();
            for &(s, q) in &got {
                if let Some(p) = last.insert(s, q) { prop_assert!(q > p); }
            }
            all.extend(got);
        }
        let total = senders as u64 * per;
        prop_assert_eq!(all.len() as u64, total);
        all.sort();
        all.dedup();
        prop_assert_eq!(all.len() as u64, total);
        prop_assert_eq!(ring.stats().depth, 0);
    }
}

/// A sender that dies after publishing but before releasing its claim word
/// left a delivered (or being delivered) message: repair must not count it
/// lost nor burn the next lap, and the ring must keep going.
#[test]
fn repair_after_a_sender_died_between_publish_and_release() {
    for consumed in [false, true] {
        let (f, ring) = ring(8, 4);
        let claim_word = |i: usize| &ring.segments().0.words()[(f.geo.claims_offset() + i * 8) / 8];
        let mut buf = [0u8; 8];
        ring.try_send(5, b"m").unwrap(); // position 4, slot 0
                                         // As if holder 5 died just before its claim-word store.
        claim_word(0).store(comesg_shm::channel::stamp::claimed_at(5, 4), std::sync::atomic::Ordering::SeqCst);
        let held = if consumed {
            assert_eq!(ring.try_recv(1, &mut buf), Ok(1));
            None
        } else {
            Some(ring.try_claim_recv(1).unwrap()) // a receiver is reading it during repair
        };
        assert_eq!(ring.repair_holder(Side::Send, 5), Ok(0), "the message was published: nothing lost");
        if let Some(c) = held {
            assert_eq!(ring.slot(&c), b"m");
            ring.release(c).unwrap();
        }
        for lap in 0..3u8 {
            for k in 0..4u8 {
                ring.try_send(0, &[lap, k]).unwrap();
            }
            for k in 0..4u8 {
                assert_eq!(ring.try_recv(1, &mut buf), Ok(2));
                assert_eq!(&buf[..2], &[lap, k]);
            }
        }
    }
}

/// Many dead holders repaired in one pass.
#[test]
fn repair_of_several_holders_at_once() {
    let (_f, ring) = ring(8, 8);
    let a = ring.try_claim_send(1).unwrap();
    let b = ring.try_claim_send(2).unwrap();
    let _ = (a, b);
    ring.try_send(0, b"ok").unwrap();
    assert_eq!(ring.repair_holders(Side::Send, &[1, 2]), Ok(2));
    let mut buf = [0u8; 8];
    assert_eq!(ring.try_recv(3, &mut buf), Ok(2));
    assert_eq!(ring.try_recv(3, &mut buf), Err(RingError::Empty));
}

/// Senders that pause between messages make receivers go to sleep over and
/// over, with several senders publishing out of order: no wake-up may be
/// lost (a stranded message would make a receiver time out while others
/// are still to come).
#[test]
fn sleeping_receivers_are_always_woken() {
    let (_f, ring) = ring(16, 8);
    let ring = Arc::new(ring);
    const SENDERS: u32 = 3;
    const PER: u64 = 1500;
    let total = SENDERS as u64 * PER;
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let rx: Vec<_> = (0..3u32)
        .map(|r| {
            let (ring, received) = (ring.clone(), received.clone());
            std::thread::spawn(move || loop {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                match blocking::claim_recv(&ring, 4 + r, Some(deadline)) {
                    // An empty message means: stop.
                    Ok(c) if c.is_empty() => return ring.release(c).unwrap(),
                    Ok(c) => {
                        ring.release(c).unwrap();
                        received.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(blocking::WaitError::TimedOut) => {
                        let got = received.load(std::sync::atomic::Ordering::SeqCst);
                        panic!("receiver {r} slept 5 s with {got} of {total} received: a wake-up was lost");
                    }
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect();
    let tx: Vec<_> = (0..SENDERS)
        .map(|s| {
            let ring = ring.clone();
            std::thread::spawn(move || {
                let mut x = 0x9E37_79B9u32.wrapping_mul(s + 1);
                for _ in 0..PER {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    if x.is_multiple_of(4) {
                        std::thread::sleep(std::time::Duration::from_micros(u64::from(x % 200)));
                    }
                    let mut c = blocking::claim_send(&ring, s, None).unwrap();
                    ring.write(&mut c, b"x").unwrap();
                    ring.publish(c, 1).unwrap();
                }
            })
        })
        .collect();
    for t in tx {
        t.join().unwrap();
    }
    for _ in 0..3 {
        ring.try_send(0, b"").unwrap();
    }
    for t in rx {
        t.join().unwrap();
    }
    assert_eq!(received.load(std::sync::atomic::Ordering::SeqCst), total);
}

/// The out-of-order case, made deterministic: with two receivers asleep,
/// position p+1 is published while p is still being written; the one
/// receiver woken for it finds the head unready and sleeps again. When p is
/// published, both messages must reach the two receivers.
#[test]
fn out_of_order_publish_wakes_enough_receivers() {
    let (_f, ring) = ring(16, 8);
    let ring = Arc::new(ring);
    let first = ring.try_claim_send(0).unwrap(); // position p, held
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for r in 0..2u32 {
        let (ring, done_tx) = (ring.clone(), done_tx.clone());
        std::thread::spawn(move || {
            // No deadline: only a wake-up (or the watchdog's rescue) ends it.
            let c = blocking::claim_recv(&ring, 4 + r, None).unwrap();
            ring.release(c).unwrap();
            let _ = done_tx.send(r);
        });
    }
    std::thread::sleep(std::time::Duration::from_millis(100)); // both asleep
    ring.try_send(1, b"second").unwrap(); // p+1 published first
    std::thread::sleep(std::time::Duration::from_millis(100)); // its wake-up is spent
    ring.publish(first, 0).unwrap(); // now p
    for _ in 0..2 {
        // Watchdog: a receiver still asleep after 5 s beside a ready message
        // was never woken. Rescue it with more messages, then fail.
        if done_rx.recv_timeout(std::time::Duration::from_secs(5)).is_err() {
            let _ = ring.try_send(1, b"rescue");
            let _ = ring.try_send(1, b"rescue");
            panic!("a receiver was left asleep beside a ready message");
        }
    }
}

/// A sender that lags (or dies) between publishing and releasing its claim
/// word, while its message is received and the ring laps: the next lap's
/// sender takes the word over instead of skipping the position, so nothing
/// is stranded.
#[test]
fn a_lagging_claim_release_does_not_wedge_the_ring() {
    let (f, ring) = ring(8, 2);
    let claim_word = |i: usize| &ring.segments().0.words()[(f.geo.claims_offset() + i * 8) / 8];
    let mut buf = [0u8; 8];
    ring.try_send(5, b"a").unwrap(); // position 2, slot 0
                                     // As if holder 5 were preempted before its claim-word store.
    claim_word(0).store(comesg_shm::channel::stamp::claimed_at(5, 2), std::sync::atomic::Ordering::SeqCst);
    assert_eq!(ring.try_recv(1, &mut buf), Ok(1));
    ring.try_send(0, b"b").unwrap(); // position 3, slot 1
    assert_eq!(ring.try_recv(1, &mut buf), Ok(1));
    ring.try_send(0, b"c").unwrap(); // position 4, slot 0 again
    assert_eq!(ring.try_recv(1, &mut buf), Ok(1), "position 4 must carry the message");
    assert_eq!(&buf[..1], b"c");
    // Repair of the "dead" laggard changes nothing now.
    assert_eq!(ring.repair_holder(Side::Send, 5), Ok(0));
    for k in 0..6u8 {
        ring.try_send(0, &[k]).unwrap();
        assert_eq!(ring.try_recv(1, &mut buf), Ok(1));
        assert_eq!(buf[0], k);
    }
}

#[test]
fn a_deadline_is_worked_out_only_when_the_claim_must_wait() {
    let (_f, r) = ring(64, 4);
    let mut asked = 0;
    let mut c = blocking::claim_send_by(&r, 0, || {
        asked += 1;
        None
    })
    .unwrap();
    r.write(&mut c, b"m").unwrap();
    r.publish(c, 1).unwrap();
    let c = blocking::claim_recv_by(&r, 1, || {
        asked += 1;
        None
    })
    .unwrap();
    r.release(c).unwrap();
    assert_eq!(asked, 0, "no claim waited");
    // Empty now: the wait asks once, and its deadline has passed.
    let e = blocking::claim_recv_by(&r, 1, || {
        asked += 1;
        Some(std::time::Instant::now())
    });
    assert_eq!(e.unwrap_err(), blocking::WaitError::TimedOut);
    assert_eq!(asked, 1);
    // The same for a one-piece receive, by a lone receiver and otherwise.
    for lease in [false, true] {
        if lease && !comesg_sys::barrier::register() {
            continue;
        }
        r.set_lease(Side::Recv, lease.then_some(1)).unwrap();
        let mut buf = [0u8; 64];
        for round in 0..2 {
            r.try_send(0, b"m").unwrap();
            let mut asked = 0;
            let n = blocking::recv_by(&r, 1, &mut buf, || {
                asked += 1;
                None
            });
            assert_eq!((n, asked), (Ok(1), 0), "lease {lease}, round {round}: no wait");
            let e = blocking::recv_by(&r, 1, &mut buf, || {
                asked += 1;
                Some(std::time::Instant::now())
            });
            assert_eq!((e, asked), (Err(blocking::WaitError::TimedOut), 1), "lease {lease}, round {round}");
        }
    }
}

#[test]
fn a_lone_holders_straight_path_takes_only_its_own_cases() {
    use comesg_shm::channel::Straight;
    let (_f, ring) = ring(16, 4);
    let mut buf = [0u8; 16];
    // No lease: the general path decides, and nothing changes.
    assert!(matches!(ring.try_recv_sole(2, &mut buf), Straight::General));
    assert!(ring.try_send_sole(1, b"x").is_none());
    assert_eq!(ring.stats().depth, 0);
    if !comesg_sys::barrier::register() {
        return; // no lease without membarrier
    }
    ring.set_lease(Side::Send, Some(1)).unwrap();
    ring.set_lease(Side::Recv, Some(2)).unwrap();
    // The first claim makes this thread the owner (general path); from
    // then on the straight path applies.
    assert_eq!(ring.try_recv(2, &mut buf), Err(RingError::Empty));
    ring.try_send(1, b"first").unwrap();
    assert!(matches!(ring.try_recv_sole(2, &mut buf), Straight::Done(Ok(5))));
    assert_eq!(&buf[..5], b"first");
    assert!(matches!(ring.try_recv_sole(2, &mut buf), Straight::Wait), "empty");
    // Another holder than the lease's takes the general path.
    assert!(matches!(ring.try_recv_sole(3, &mut buf), Straight::General));
    assert!(ring.try_send_sole(3, b"x").is_none());
    // Too long for a slot, or no free slot: the general path says why.
    assert!(ring.try_send_sole(1, &[0u8; 17]).is_none());
    for i in 0..4u8 {
        assert!(matches!(ring.try_send_sole(1, &[i; 16]), Some(Ok(()))));
    }
    assert!(ring.try_send_sole(1, b"x").is_none());
    assert_eq!(ring.try_send(1, b"x"), Err(RingError::Full));
    // A message longer than the buffer is truncated, its length reported.
    let mut short = [9u8; 4];
    assert!(matches!(ring.try_recv_sole(2, &mut short), Straight::Done(Ok(16))));
    assert_eq!(short, [0u8; 4]);
    // Another thread of this process does not own the ring object's sides.
    std::thread::scope(|t| {
        t.spawn(|| {
            let mut buf = [0u8; 16];
            assert!(matches!(ring.try_recv_sole(2, &mut buf), Straight::General));
            assert!(ring.try_send_sole(1, b"x").is_none());
        });
    });
    for i in 1..4u8 {
        assert!(matches!(ring.try_recv_sole(2, &mut buf), Straight::Done(Ok(16))));
        assert_eq!(buf, [i; 16]);
    }
    // A cancelled loan leaves a skipped slot: the general path passes it.
    let loan = comesg_shm::channel::SendLoan::new(&ring, ring.try_claim_send(1).unwrap());
    drop(loan);
    ring.try_send(1, b"after").unwrap();
    assert!(matches!(ring.try_recv_sole(2, &mut buf), Straight::General));
    assert_eq!(ring.try_recv(2, &mut buf), Ok(5));
    assert_eq!(&buf[..5], b"after");
    assert_eq!(ring.stats().depth, 0);
    // A blocking send of a message too long for a slot claims nothing.
    let e = blocking::send(&ring, 1, &[0u8; 17], None);
    assert_eq!(e, Err(blocking::WaitError::Ring(RingError::TooLong { len: 17, slot_size: 16 })));
    blocking::send(&ring, 1, b"last", None).unwrap();
    assert_eq!(blocking::recv(&ring, 2, &mut buf, None), Ok(4));
}

#[test]
fn a_lone_receiver_waits_for_the_next_message_and_keeps_its_deadline() {
    if !comesg_sys::barrier::register() {
        return;
    }
    let (_f, ring) = ring(16, 4);
    ring.set_lease(Side::Send, Some(1)).unwrap();
    ring.set_lease(Side::Recv, Some(2)).unwrap();
    let ring = Arc::new(ring);
    let mut buf = [0u8; 16];
    // The first wait makes this thread the owner (general path); the
    // second waits as a lone receiver (without claiming).
    for _ in 0..2 {
        let t = std::time::Instant::now();
        let deadline = Some(t + std::time::Duration::from_millis(30));
        assert_eq!(blocking::recv(&ring, 2, &mut buf, deadline), Err(blocking::WaitError::TimedOut));
        assert!(t.elapsed() >= std::time::Duration::from_millis(30));
    }
    assert!(ring.lease(Side::Recv) != comesg_shm::channel::Lease::None);
    // A sender that comes later (after the receiver went to sleep) wakes it.
    let sender = {
        let ring = ring.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            for i in 0..1000u32 {
                blocking::send(&ring, 1, &i.to_le_bytes(), None).unwrap();
            }
        })
    };
    for i in 0..1000u32 {
        assert_eq!(blocking::recv(&ring, 2, &mut buf, None), Ok(4));
        assert_eq!(buf[..4], i.to_le_bytes());
    }
    sender.join().unwrap();
}
