//! copoll across processes: ports of every kind, made ready by another
//! process in an order this one does not know, are each reported once; a
//! thousand channels in one poll set likewise.

mod util;

use std::time::{Duration, Instant};

use comesg::{
    ChannelOptions, CocarrierOptions, ComutexOptions, CopipeOptions, Copoll, Event, Interest, Pollable, Rights,
};
use util::KernelProc;

fn seed() -> u64 {
    let s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    println!("seed {s} (replay: make-ready --seed {s})");
    s
}

fn go_channel(conn: &comesg::Connection, path: &str) -> comesg::Channel {
    conn.create_channel(path, ChannelOptions { slot_size: 16, slots: 4, ..Default::default() }).unwrap()
}

#[test]
fn ports_of_every_kind_made_ready_in_random_order_are_each_reported_once() {
    let k = KernelProc::start("copoll-kinds");
    let conn = k.connect();
    let go = go_channel(&conn, "/cp/go");
    let recv_only = ChannelOptions { slot_size: 64, slots: 8, rights: Rights::RECV, ..Default::default() };
    let chans: Vec<_> = (0..3).map(|i| conn.create_channel(&format!("/cp/ch{i}"), recv_only).unwrap()).collect();
    let copts = CocarrierOptions { arena: 1 << 16, max_message: 1024, rights: Rights::RECV, ..Default::default() };
    let carriers: Vec<_> = (0..2).map(|i| conn.create_cocarrier(&format!("/cp/car{i}"), copts).unwrap()).collect();
    let popts = CopipeOptions { buffer: 64, rights: Rights::RECV, ..Default::default() };
    let pipes: Vec<_> = (0..2).map(|i| conn.create_copipe(&format!("/cp/pipe{i}"), popts).unwrap()).collect();
    let mutexes: Vec<_> =
        (0..2).map(|i| conn.create_comutex(&format!("/cp/mx{i}"), ComutexOptions::default()).unwrap()).collect();

    // Tokens are indices into this list, which the helper shuffles.
    let mut specs = Vec::new();
    specs.extend((0..3).map(|i| format!("channel:/cp/ch{i}")));
    specs.extend((0..2).map(|i| format!("carrier:/cp/car{i}")));
    specs.extend((0..2).map(|i| format!("pipe:/cp/pipe{i}")));
    specs.extend((0..2).map(|i| format!("comutex:/cp/mx{i}")));
    specs.push("service:/cp/svc".into());
    let seed = seed().to_string();
    let mut args = vec!["poll", "make-ready", "--go", "/cp/go", "--seed", &seed];
    args.extend(specs.iter().map(String::as_str));
    let mut peer = k.peer(&args);

    // The helper serves the service now; our call waits for its turn.
    let svc = conn.service("/cp/svc").unwrap();
    let call = svc.start(b"call 9").unwrap();

    let mut poll = Copoll::new().unwrap();
    let mut ports: Vec<&dyn Pollable> = Vec::new();
    ports.extend(chans.iter().map(|c| c as &dyn Pollable));
    ports.extend(carriers.iter().map(|c| c as &dyn Pollable));
    ports.extend(pipes.iter().map(|c| c as &dyn Pollable));
    ports.extend(mutexes.iter().map(|c| c as &dyn Pollable));
    ports.push(&call);
    for (t, p) in ports.iter().enumerate() {
        poll.add_dyn(*p, t as u64, Interest::READABLE).unwrap();
    }
    // Nothing is ready before the helper starts.
    let mut events = Vec::new();
    assert_eq!(poll.wait(&mut events, Some(Duration::from_millis(50))).unwrap(), 0, "{events:?}");

    go.send(b"go").unwrap();
    let out = peer.collect();
    let n = ports.len();
    let mut seen = vec![0u32; n];
    let mut reported = Vec::new();
    let mut locks = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.contains(&0) {
        assert!(Instant::now() < deadline, "not all ports reported: {seen:?}");
        poll.wait(&mut events, Some(Duration::from_secs(1))).unwrap();
        for e in &events {
            let t = e.token() as usize;
            assert!(e.is_readable() && !e.is_error() && !e.is_closed(), "token {t}: {e:?}");
            seen[t] += 1;
            reported.push(t);
            // Consume what made it ready, so it is not ready any more.
            let got = match t {
                0..=2 => String::from_utf8(chans[t].try_recv_vec().unwrap()).unwrap(),
                3..=4 => String::from_utf8(carriers[t - 3].try_recv().unwrap().to_vec()).unwrap(),
                5..=6 => {
                    let mut b = [0u8; 64];
                    let len = pipes[t - 5].try_recv(&mut b).unwrap();
                    String::from_utf8(b[..len].to_vec()).unwrap()
                }
                7..=8 => {
                    // Hold it: a free lock stays ready.
                    locks.push(mutexes[t - 7].try_lock().unwrap());
                    t.to_string()
                }
                _ => {
                    // Its response stays ready until taken, after the poll.
                    assert!(poll.remove(e.token()));
                    t.to_string()
                }
            };
            assert_eq!(got, t.to_string(), "port {t} carried another port's message");
        }
    }
    // None is reported again once consumed.
    assert_eq!(poll.wait(&mut events, Some(Duration::from_millis(200))).unwrap(), 0, "{events:?}");
    assert!(seen.iter().all(|&c| c == 1), "{seen:?}");
    drop(poll);
    drop(locks);
    assert_eq!(call.wait().unwrap(), b"call 9");
    go.send(b"bye").unwrap();
    assert!(peer.wait(Duration::from_secs(30)).success());
    let order = out.join().unwrap();
    println!("made ready: {order:?}\nreported:   {reported:?}");
}

#[test]
fn a_thousand_channels_in_one_poll_set_each_reported_once() {
    const N: u32 = 1000;
    let k = KernelProc::start("copoll-many");
    let _ = comesg_sys::process::raise_nofile_limit();
    let conn = k.connect();
    let go = go_channel(&conn, "/cpm/go");
    let opts = ChannelOptions { slot_size: 16, slots: 2, rights: Rights::RECV, ..Default::default() };
    let chans: Vec<_> = (0..N).map(|i| conn.create_channel(&format!("/cpm/c/{i}"), opts).unwrap()).collect();
    let mut poll = Copoll::new().unwrap();
    for (i, c) in chans.iter().enumerate() {
        poll.add(c, i as u64, Interest::READABLE).unwrap();
    }
    assert_eq!(poll.len(), N as usize);
    let seed = seed().to_string();
    let count = N.to_string();
    let mut peer = k
        .peer(&["poll", "scatter", "/cpm/c", "--count", &count, "--seed", &seed, "--go", "/cpm/go", "--gap-us", "100"]);
    let out = peer.collect();
    // Register on every channel before the first message comes, so that
    // (nearly) every one is found through its bell, not by the first look.
    let mut events: Vec<Event> = Vec::new();
    assert_eq!(poll.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
    go.send(b"go").unwrap();
    let started = Instant::now();
    let mut seen = vec![0u32; N as usize];
    let (mut left, mut waits) = (N, 0u32);
    while left > 0 {
        assert!(started.elapsed() < Duration::from_secs(120), "{left} channels never reported");
        poll.wait(&mut events, Some(Duration::from_secs(1))).unwrap();
        waits += 1;
        for e in &events {
            let i = e.token() as usize;
            assert!(e.is_readable(), "{e:?}");
            assert_eq!(chans[i].try_recv_vec().unwrap(), i.to_string().as_bytes());
            seen[i] += 1;
            left -= 1;
        }
    }
    assert_eq!(poll.wait(&mut events, Some(Duration::from_millis(200))).unwrap(), 0);
    assert!(seen.iter().all(|&c| c == 1));
    println!("{N} channels reported in {:?} over {waits} waits", started.elapsed());
    drop(poll);
    go.send(b"bye").unwrap();
    assert!(peer.wait(Duration::from_secs(30)).success());
    assert_eq!(out.join().unwrap(), vec!["sent"]);
}

#[test]
fn a_port_that_stays_ready_does_not_hide_others() {
    let k = KernelProc::start("copoll-starve");
    let conn = k.connect();
    let busy = conn.create_channel("/cps/busy", ChannelOptions { slot_size: 16, slots: 4, ..Default::default() });
    let busy = busy.unwrap();
    let opts = ChannelOptions { slot_size: 16, slots: 4, rights: Rights::RECV, ..Default::default() };
    let quiet = conn.create_channel("/cps/quiet", opts).unwrap();
    let mut poll = Copoll::new().unwrap();
    poll.add(&busy, 1, Interest::READABLE).unwrap();
    poll.add(&quiet, 2, Interest::READABLE).unwrap();
    let mut events = Vec::new();
    // Both registered and asleep (a wait that sleeps a little consumes the
    // edges registration itself reports); then the busy one gets a message
    // it keeps.
    assert_eq!(poll.wait(&mut events, Some(Duration::from_millis(50))).unwrap(), 0);
    busy.send(b"stays").unwrap();
    for _ in 0..3 {
        poll.wait(&mut events, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(events.iter().map(|e| e.token()).collect::<Vec<_>>(), vec![1]);
    }
    // Now the quiet one rings while the busy one is still ready.
    let mut peer = k.peer(&["poll", "trickle", "/cps/quiet", "--id", "0", "--count", "1"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "the quiet channel was never reported");
        poll.wait(&mut events, Some(Duration::from_secs(1))).unwrap();
        assert!(events.iter().any(|e| e.token() == 1), "the busy channel is still ready: {events:?}");
        if events.iter().any(|e| e.token() == 2) {
            break;
        }
    }
    assert_eq!(quiet.try_recv_vec().unwrap(), b"0 0");
    assert!(peer.wait(Duration::from_secs(30)).success());
}

#[test]
fn pipe_offers_survive_other_registrations_and_a_given_up_poll_keeps_the_message() {
    let k = KernelProc::start("copoll-pipe");
    let conn = k.connect();
    let pipe = conn.create_copipe("/cpp/p", CopipeOptions { buffer: 32, rights: Rights::ALL, ..Default::default() });
    let pipe = pipe.unwrap();
    let mut events = Vec::new();
    {
        // Two registrations on one handle; removing one keeps the offer
        // the other relies on.
        let mut poll = Copoll::new().unwrap();
        poll.add(&pipe, 1, Interest::READABLE).unwrap();
        poll.add(&pipe, 2, Interest::READABLE).unwrap();
        assert_eq!(poll.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0, "{events:?}");
        assert!(poll.remove(1));
        // This handle can send too: its own open offer must not be taken
        // (the send would wait for itself), so nobody is there to receive.
        assert!(matches!(pipe.try_send(b"self"), Err(comesg::SendError::Full)), "sent into its own offer");
        let mut peer = k.peer(&["poll", "trickle", "/cpp/p", "--id", "7", "--count", "1"]);
        assert_eq!(poll.wait(&mut events, Some(Duration::from_secs(30))).unwrap(), 1, "{events:?}");
        assert_eq!(events[0].token(), 2);
        assert!(events[0].is_readable());
        // Give up without receiving: the sender, which returns only once a
        // receiver has the message, must not be left waiting.
        drop(poll);
        assert!(peer.wait(Duration::from_secs(30)).success(), "the sender was left waiting");
    }
    let mut b = [0u8; 32];
    let n = pipe.try_recv(&mut b).unwrap();
    assert_eq!(&b[..n], b"7 0", "the message was kept for the next receive");
}
