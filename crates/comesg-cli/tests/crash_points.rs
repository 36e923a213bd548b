//! Fault injection: a participant killed at an exact step of each protocol
//! (crash points, `COMESG_CRASH_AT`, compiled into the test build only),
//! and the survivors go on with every message accounted for.

mod util;

use std::time::Duration;

use comesg::{ChannelOptions, CopipeOptions, RecvError, Rights, SendError};
use util::{Counter, KernelProc, Peer};

const SIGABRT: i32 = 6;

fn crashes(p: &mut Peer) {
    use std::os::unix::process::ExitStatusExt;
    let st = p.wait(Duration::from_secs(60));
    assert_eq!(st.signal(), Some(SIGABRT), "the peer did not stop at its crash point: {st:?}");
}

/// Sequence numbers of the "ID SEQ" messages of `seq-send` (16 bytes).
fn seq_of(m: &[u8]) -> u64 {
    u64::from_le_bytes(m[4..12].try_into().unwrap())
}

fn msg(id: u32, seq: u64) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..4].copy_from_slice(&id.to_le_bytes());
    m[4..12].copy_from_slice(&seq.to_le_bytes());
    m
}

#[test]
fn a_channel_sender_killed_at_each_step_loses_at_most_its_message() {
    for (point, delivered) in [("channel.send.claimed", 49u64), ("channel.send.published", 50)] {
        let k = KernelProc::start("crash-ch-send");
        let conn = k.connect();
        let opts = ChannelOptions { slot_size: 16, slots: 128, rights: Rights::RECV, ..Default::default() };
        let ch = conn.create_channel("/cr/ch", opts).unwrap();
        let at = format!("{point}@50");
        let mut p = k.peer_env(&["seq-send", "/cr/ch", "--id", "1", "--count", "100"], &[("COMESG_CRASH_AT", &at)]);
        crashes(&mut p);
        let mut got = Vec::new();
        while let Ok(m) = ch.recv_vec_timeout(Duration::from_millis(200)) {
            got.push(seq_of(&m));
        }
        assert_eq!(got, (0..delivered).collect::<Vec<_>>(), "{point}");
        let e = ch.stats().unwrap();
        // The sender started 50 messages: each was received or counted lost.
        assert_eq!(got.len() as u64 + e.lost, 50, "{point}: received + lost");
        // The channel goes on for the next sender.
        let mut q = k.peer(&["seq-send", "/cr/ch", "--id", "2", "--count", "10"]);
        assert!(q.wait(Duration::from_secs(60)).success());
        for s in 0..10 {
            assert_eq!(seq_of(&ch.recv_vec_timeout(Duration::from_secs(10)).unwrap()), s, "{point}");
        }
    }
}

#[test]
fn a_channel_receiver_killed_holding_a_message_loses_only_that_one() {
    let k = KernelProc::start("crash-ch-recv");
    let conn = k.connect();
    let ch = conn.create_channel("/cr/ch", ChannelOptions { slot_size: 16, slots: 128, ..Default::default() }).unwrap();
    let mut p = k.peer_env(&["seq-recv", "/cr/ch"], &[("COMESG_CRASH_AT", "channel.recv.claimed@20")]);
    for s in 0..100 {
        ch.send(&msg(1, s)).unwrap();
    }
    crashes(&mut p);
    let mut mine = 0u64;
    while ch.recv_vec_timeout(Duration::from_millis(200)).is_ok() {
        mine += 1;
    }
    let e = ch.stats().unwrap();
    assert_eq!((e.sent_msgs, e.lost), (100, 1), "one message died with its receiver");
    assert_eq!(e.received_msgs, 99, "19 by the dead receiver, {mine} here");
    assert_eq!(mine, 80);
}

#[test]
fn a_pipe_sender_killed_before_and_after_copying() {
    for (point, delivered) in [("pipe.send.claimed", 4u64), ("pipe.send.filled", 5)] {
        let k = KernelProc::start("crash-pipe-send");
        let conn = k.connect();
        let pipe =
            conn.create_copipe("/cr/p", CopipeOptions { buffer: 16, rights: Rights::RECV, ..Default::default() });
        let pipe = pipe.unwrap();
        let at = format!("{point}@5");
        let mut p = k.peer_env(&["seq-send", "/cr/p", "--id", "1", "--count", "10"], &[("COMESG_CRASH_AT", &at)]);
        let mut got = Vec::new();
        let mut b = [0u8; 16];
        loop {
            match pipe.recv_timeout(&mut b, Duration::from_secs(30)) {
                Ok(n) => got.push(seq_of(&b[..n])),
                // Its only sender died: end of file, not a hang.
                Err(RecvError::Closed) => break,
                Err(e) => panic!("{point}: {e}"),
            }
        }
        crashes(&mut p);
        assert_eq!(got, (0..delivered).collect::<Vec<_>>(), "{point}");
    }
}

#[test]
fn a_pipe_receiver_killed_with_the_message_in_its_buffer_tells_the_sender() {
    let k = KernelProc::start("crash-pipe-recv");
    let conn = k.connect();
    let pipe = conn.create_copipe("/cr/p", CopipeOptions { buffer: 16, ..Default::default() }).unwrap();
    let mut p = k.peer_env(&["seq-recv", "/cr/p", "--idle", "30"], &[("COMESG_CRASH_AT", "pipe.recv.filled@5")]);
    for s in 0..4 {
        pipe.send(&msg(1, s)).unwrap();
    }
    // The fifth reaches its buffer; the receiver dies before taking it.
    assert_eq!(pipe.send(&msg(1, 4)), Err(SendError::ReceiverDied));
    crashes(&mut p);
    // Not delivered, so it can go again, to the next receiver.
    let mut q = k.peer(&["seq-recv", "/cr/p", "--idle", "1"]);
    let out = q.collect();
    for s in 4..10 {
        pipe.send(&msg(1, s)).unwrap();
    }
    drop(pipe);
    assert!(q.wait(Duration::from_secs(60)).success());
    let lines = out.join().unwrap();
    let want: Vec<String> = (4..10).map(|s| format!("1 {s}")).chain(["done 6".to_string()]).collect();
    assert_eq!(lines, want);
}

#[test]
fn a_provider_killed_mid_call_fails_that_call_and_a_caller_killed_mid_post_harms_nobody() {
    let k = KernelProc::start("crash-svc");
    let mut provider =
        k.peer_env(&["serve", "/cr/svc", "--workers", "1"], &[("COMESG_CRASH_AT", "service.worker.running@3")]);
    let conn = k.connect();
    let svc = conn.service("/cr/svc").unwrap();
    assert!(svc.call(b"a").is_ok());
    assert!(svc.call(b"b").is_ok());
    assert_eq!(svc.call_timeout(b"c", Duration::from_secs(30)), Err(comesg::CallError::ServiceGone));
    crashes(&mut provider);
    drop(svc);

    // A caller that dies between posting its request and sending the
    // ticket: the provider never sees the call and serves others on.
    let _again = conn
        .serve("/cr/svc2", Default::default(), |c| [format!("w{}:", c.worker).as_bytes(), c.request].concat())
        .unwrap();
    let mut caller = k.peer_env(
        &["call-many", "/cr/svc2", "--id", "1", "--count", "5"],
        &[("COMESG_CRASH_AT", "service.call.posted@2")],
    );
    crashes(&mut caller);
    let other = k.connect().service("/cr/svc2").unwrap();
    assert!(other.call(b"still here").unwrap().ends_with(b":still here"));
}

#[test]
fn a_carrier_sender_killed_with_its_send_request_in_flight_leaves_the_kernel_serving() {
    let k = KernelProc::start("crash-car-send");
    let conn = k.connect();
    let opts = comesg::CocarrierOptions { arena: 1 << 20, max_message: 64, rights: Rights::RECV, ..Default::default() };
    let car = conn.create_cocarrier("/cr/car", opts).unwrap();
    // Its requests: hello, the kind lookup, the open, then one per message:
    // the tenth request is the seventh message's send.
    let mut p = k.peer_env(
        &["seq-send", "/cr/car", "--id", "1", "--count", "20"],
        &[("COMESG_CRASH_AT", "control.request.sent@10")],
    );
    crashes(&mut p);
    let mut got = Vec::new();
    while let Ok(m) = car.recv_timeout(Duration::from_millis(300)) {
        got.push(seq_of(&m));
    }
    // The kernel read the message before or after the sender died: it was
    // delivered whole or not at all, never in part, never twice.
    assert!(got == (0..6).collect::<Vec<_>>() || got == (0..7).collect::<Vec<_>>(), "{got:?}");
    // And it serves on.
    let mut q = k.peer(&["seq-send", "/cr/car", "--id", "2", "--count", "5"]);
    assert!(q.wait(Duration::from_secs(60)).success());
    for s in 0..5 {
        assert_eq!(seq_of(&car.recv_timeout(Duration::from_secs(10)).unwrap()), s);
    }
}

#[test]
fn a_carrier_receiver_killed_at_each_step_loses_at_most_the_message_it_held() {
    // (crash point, messages the dead receiver finished, messages lost)
    let steps =
        [("channel.recv.claimed", 19u64, 1u64), ("carrier.recv.taken", 19, 1), ("carrier.recv.released", 20, 0)];
    for (point, finished, lost) in steps {
        let k = KernelProc::start("crash-car-recv");
        let conn = k.connect();
        // This process receives too (from the start, so that the dead one's
        // queued messages go to it), with room for every message in each
        // receiver's queue and share of the arena: nothing waits.
        let opts = comesg::CocarrierOptions {
            arena: 1 << 20,
            max_message: 64,
            queue: 128,
            rights: Rights::ALL,
            ..Default::default()
        };
        let car = conn.create_cocarrier("/cr/car", opts).unwrap();
        let at = format!("{point}@20");
        let mut p = k.peer_env(&["seq-recv", "/cr/car", "--idle", "30"], &[("COMESG_CRASH_AT", &at)]);
        for s in 0..100 {
            car.send(&msg(1, s)).unwrap();
        }
        crashes(&mut p);
        let mut got = std::collections::BTreeSet::new();
        while let Ok(m) = car.recv_timeout(Duration::from_millis(300)) {
            assert!(got.insert(seq_of(&m)), "{point}: message {} delivered twice", seq_of(&m));
        }
        let e = conn.list("/cr/car").unwrap().pop().unwrap();
        assert_eq!(e.lost, lost, "{point}: lost");
        assert_eq!(got.len() as u64 + finished + lost, 100, "{point}: received here + by the dead + lost = sent");
        // The carrier goes on for the next receiver.
        let mut q = k.peer(&["seq-recv", "/cr/car", "--idle", "1"]);
        let out = q.collect();
        drop(car);
        let other = k.connect().open_cocarrier("/cr/car", Rights::SEND).unwrap();
        other.send(&msg(2, 0)).unwrap();
        assert!(q.wait(Duration::from_secs(60)).success());
        assert_eq!(out.join().unwrap(), ["2 0", "done 1"], "{point}");
    }
}

#[test]
fn a_comutex_owner_killed_at_each_step_leaves_the_count_whole() {
    // (crash point, increments the dead process finished)
    for (point, finished) in [("comutex.lock.acquired", 49u64), ("comutex.unlock.entered", 50)] {
        let k = KernelProc::start("crash-mutex");
        let conn = k.connect();
        let obj = conn.create_shared::<Counter>("/cr/count", Default::default()).unwrap();
        let at = format!("{point}@50");
        let mut dead = k.peer_env(&["count", "/cr/count", "--count", "100"], &[("COMESG_CRASH_AT", &at)]);
        crashes(&mut dead);
        let mut next = k.peer(&["count", "/cr/count", "--count", "100"]);
        assert!(next.wait(Duration::from_secs(60)).success(), "{point}: the survivor finishes");
        let g = obj.lock().expect("consistent again after the survivor's recovery");
        assert_eq!((g.n, g.dirty), (finished + 100, 0), "{point}");
        drop(g);
        let e = conn.list("/cr/count").unwrap().pop().unwrap();
        assert_eq!(e.owner_deaths, 1, "{point}: one death, seen once");
    }
}

#[test]
fn a_comutex_recoverer_killed_before_marking_it_consistent_hands_the_recovery_on() {
    let k = KernelProc::start("crash-mutex-recover");
    let conn = k.connect();
    let obj = conn.create_shared::<Counter>("/cr/count", Default::default()).unwrap();
    obj.lock().unwrap().n = 7;
    let mut holder = k.peer(&["hold-lock", "/cr/count", "--in-update"]);
    holder.kill9();
    // The first to lock finds the owner dead and dies in turn while
    // recovering: the state is still "owner died", not unrecoverable.
    let mut recoverer =
        k.peer_env(&["count", "/cr/count", "--count", "10"], &[("COMESG_CRASH_AT", "comutex.consistent.entered")]);
    crashes(&mut recoverer);
    let mut next = k.peer(&["count", "/cr/count", "--count", "100"]);
    assert!(next.wait(Duration::from_secs(60)).success());
    let g = obj.lock().expect("recovered by the survivor");
    assert_eq!((g.n, g.dirty), (107, 0));
    drop(g);
    assert_eq!(conn.list("/cr/count").unwrap().pop().unwrap().owner_deaths, 2);
}
