//! A hostile holder in the same address space: one thread scribbles random
//! words over both segments of a COCHANNEL (indices, stamps, claim words,
//! lengths, futex words, holder records, data) while honest threads send and
//! receive with timeouts. They must get messages or typed errors, never a
//! panic, a hang or a memory access outside the segments. The cross-process
//! version is `comesg-cli/tests/hostile.rs`; this one exists so that a
//! sanitizer can watch every access (`cargo test -p comesg-shm --test
//! hostile` under `-Zsanitizer=address`; see `docs/permissions.md`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use comesg_shm::channel::blocking::{self, WaitError};
use comesg_shm::channel::{Geometry, Ring, RingError};
use comesg_sys::mapping::{Access, Mapping};
use comesg_sys::memfd;

fn mapped(fd: &comesg_sys::OwnedFd, len: usize) -> Mapping {
    Mapping::map(fd, len, Access::ReadWrite).unwrap()
}

/// xorshift64*: reproducible from the seed.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed.max(1);
    move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The scribbler's rounds, for `run_for`: each writes a plausible state
/// (`set_up`, as a liar would, to lead the honest threads deep into their
/// normal paths), then up to `most` random words at random places of the
/// segment `pick` chooses (small numbers and all-ones among the noise), and
/// lets the honest threads run into them. Returns (rounds, writes).
fn scribble(
    segs: [&[AtomicU64]; 2],
    seed: u64,
    run_for: Duration,
    most: u64,
    pick: impl Fn(u64) -> usize,
    set_up: impl Fn(),
) -> (u64, u64) {
    let mut next = rng(seed);
    let end = Instant::now() + run_for;
    let (mut writes, mut rounds) = (0u64, 0u64);
    while Instant::now() < end {
        set_up();
        rounds += 1;
        std::thread::sleep(Duration::from_micros(200));
        for _ in 0..next() % most + 1 {
            let seg = segs[pick(next())];
            let at = (next() % seg.len() as u64) as usize;
            let v = match next() % 4 {
                0 => next() % 64,
                1 => u64::MAX,
                _ => next(),
            };
            seg[at].store(v, Relaxed);
            writes += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    (rounds, writes)
}

#[test]
fn honest_threads_survive_a_scribbler_on_the_same_channel() {
    let geo = Geometry { slot_size: 48, slots: 16, max_holders: 4 };
    let s = memfd::create_segment("hostile-s", geo.sender_segment_len() as u64).unwrap();
    let r = memfd::create_segment("hostile-r", geo.receiver_segment_len() as u64).unwrap();
    let ring = |s: &comesg_sys::OwnedFd, r: &comesg_sys::OwnedFd| {
        Ring::new(geo, mapped(s, geo.sender_segment_len()), mapped(r, geo.receiver_segment_len())).unwrap()
    };
    let first = ring(&s, &r);
    first.initialize().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let run_for = Duration::from_millis(1500);

    let mut threads = Vec::new();
    for (seed, role) in [(1u64, 0u32), (2, 0), (3, 1), (4, 1)] {
        let honest = ring(&s, &r);
        let (stop, outcomes) = (stop.clone(), outcomes.clone());
        threads.push(std::thread::spawn(move || {
            let mut next = rng(seed);
            let mut buf = [0u8; 48];
            while !stop.load(Relaxed) {
                let deadline = Some(Instant::now() + Duration::from_millis(5));
                let r = if role == 0 {
                    let len = (next() % 49) as usize;
                    blocking::claim_send(&honest, role, deadline).and_then(|mut c| {
                        honest.write(&mut c, &buf[..len])?;
                        Ok(honest.publish(c, len)?)
                    })
                } else {
                    blocking::claim_recv(&honest, role, deadline).and_then(|c| {
                        let n = c.len();
                        assert!(n <= 48, "a length past the slot reached the caller");
                        buf[..n].copy_from_slice(&honest.slot(&c)[..n]);
                        Ok(honest.release(c)?)
                    })
                };
                let k = match r {
                    Ok(()) => 0,
                    Err(WaitError::TimedOut) => 1,
                    Err(WaitError::Ring(RingError::Corrupt(_))) => 2,
                    Err(e) => panic!("an error no hostile write should cause: {e:?}"),
                };
                outcomes[k].fetch_add(1, Relaxed);
            }
        }));
    }

    // The scribbler: its own mapping of both segments; its plausible state
    // is the initial one.
    let (ms, mr) = (mapped(&s, geo.sender_segment_len()), mapped(&r, geo.receiver_segment_len()));
    let liar = ring(&s, &r);
    let (rounds, writes) =
        scribble([ms.words(), mr.words()], 99, run_for, 8, |x| (x & 1) as usize, || liar.initialize().unwrap());
    stop.store(true, Relaxed);
    for t in threads {
        t.join().expect("an honest thread panicked");
    }
    let [ok, timed_out, corrupt] = [0, 1, 2].map(|i| outcomes[i].load(Relaxed));
    println!(
        "{rounds} rounds, {writes} hostile writes; honest operations: {ok} ok, {timed_out} timed out, {corrupt} corrupt"
    );
    assert!(ok > 0 && corrupt > 0, "the honest threads both made progress and met the damage");
}

// Back in the default run now that every pipe call keeps its deadline
// (a sender withdraws a message nobody took; a receiver whose offer a
// sender is filling gives up at its deadline): before, a sender that had
// filled an offer waited for its receiver whatever the scribbler left,
// and CI hung on this test twice.
#[test]
fn honest_threads_survive_a_scribbler_on_the_same_pipe() {
    use comesg_shm::pipe::{Pipe, PipeError, PipeLayout, Watch};
    let layout = PipeLayout { buffer: 32, receivers: 2 };
    let c = memfd::create_segment("hostile-c", layout.control_len() as u64).unwrap();
    let d = memfd::create_segment("hostile-d", layout.data_len() as u64).unwrap();
    let pipe = || Pipe::new(layout, mapped(&c, layout.control_len()), mapped(&d, layout.data_len())).unwrap();
    // What the microkernel sets up: two receivers' slots, both sides live.
    let liar = pipe();
    let set_up = || {
        for r in 0..2 {
            let _ = liar.reset_slot(r);
        }
        liar.set_senders(2, true);
        liar.set_receivers(2, true);
    };
    set_up();
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let mut threads = Vec::new();
    for (seed, send, me) in [(1u64, true, 0u32), (2, true, 1), (3, false, 0), (4, false, 1)] {
        let honest = pipe();
        let (stop, outcomes) = (stop.clone(), outcomes.clone());
        threads.push((
            send,
            std::thread::spawn(move || {
                let mut next = rng(seed);
                let watch = Watch::new(0);
                let mut buf = [0u8; 32];
                while !stop.load(Relaxed) {
                    let deadline = Some(Instant::now() + Duration::from_millis(5));
                    let r = if send {
                        let len = (next() % 33) as usize;
                        honest.send(me, &buf[..len], deadline, false, &watch).map(|()| len)
                    } else {
                        honest.recv(me, &mut buf, deadline, false, &watch)
                    };
                    let k = match r {
                        // A length is the message's, and may exceed what was
                        // copied (as recv(2) with MSG_TRUNC); the copy itself
                        // never leaves the buffer.
                        Ok(_) => 0,
                        Err(
                            PipeError::TimedOut | PipeError::WouldBlock | PipeError::Closed | PipeError::ReceiverDied,
                        ) => 1,
                        Err(PipeError::Corrupt(_)) => 2,
                        Err(e) => panic!("an error no hostile write should cause: {e:?}"),
                    };
                    outcomes[k].fetch_add(1, Relaxed);
                }
            }),
        ));
    }
    let (mc, md) = (mapped(&c, layout.control_len()), mapped(&d, layout.data_len()));
    // The control segment (states, lengths, futex words) mostly.
    let pick = |x: u64| usize::from(x.is_multiple_of(4));
    let (rounds, writes) = scribble([mc.words(), md.words()], 77, Duration::from_millis(1500), 4, pick, set_up);
    stop.store(true, Relaxed);
    // Every honest call has a deadline, and keeps it whatever the scribbler
    // left behind: a sender whose message sits untaken in an offer
    // withdraws it, a receiver whose offer a "sender" claimed gives up.
    let end = Instant::now() + Duration::from_secs(10);
    while !threads.iter().all(|(_, t)| t.is_finished()) {
        assert!(Instant::now() < end, "an honest thread still waits 10 s after the scribbler stopped");
        std::thread::sleep(Duration::from_millis(1));
    }
    for (_, t) in threads {
        t.join().expect("an honest thread panicked");
    }
    let [ok, other, corrupt] = [0, 1, 2].map(|i| outcomes[i].load(Relaxed));
    println!(
        "{rounds} rounds, {writes} hostile writes; honest operations: {ok} ok, {other} refused, {corrupt} corrupt"
    );
    assert!(ok > 0, "the honest threads made progress between the writes");
}
