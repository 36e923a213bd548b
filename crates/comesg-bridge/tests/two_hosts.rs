//! Two hosts (network namespaces joined by veth), each with its own
//! microkernel and bridge: messages and calls cross between them exactly
//! once, a killed bridge is noticed and recovered from, rights stay
//! narrowed, and hostile frames are rejected.

mod hosts;

use std::collections::HashSet;
use std::io::Read;
use std::time::{Duration, Instant};

use hosts::{collect, eventually, feed, text, wait_output, TwoHosts};

const SETTLE: Duration = Duration::from_secs(20);

/// Every line once, and the set of them.
fn unique(lines: &[String]) -> HashSet<String> {
    let set: HashSet<String> = lines.iter().cloned().collect();
    assert_eq!(set.len(), lines.len(), "a message arrived twice");
    set
}

/// Each sender's messages (`PREFIX-N`) arrived in the order it sent them.
fn in_order_per_sender(lines: &[String]) {
    let mut last: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for l in lines {
        let (sender, n) = l.rsplit_once('-').expect("PREFIX-N");
        let n: u64 = n.parse().expect("number");
        if let Some(prev) = last.insert(sender, n) {
            assert!(n > prev, "{sender}: {n} arrived after {prev}");
        }
    }
}

fn create(host: &hosts::Host, path: &str, slots: &str) {
    let o = host.cli(&["create", path, "--kind", "channel", "--slot-size", "64", "--slots", slots]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Senders on hb and a receiver on ha, then a sender on ha and receivers
/// on both hosts: every message exactly once, in order per sender where
/// the receivers sit on one host, and some of the second batch crossed.
fn both_ways(h: &TwoHosts, path: &str, senders: usize, per_sender: usize, spread: usize) {
    let remote = format!("/net/ha{path}");
    let mut recv_a = h.a.spawn(&["recv", path, "--timeout", "5"]);
    let got_a = collect(&mut recv_a);
    std::thread::sleep(Duration::from_millis(500));
    let mut sent = HashSet::new();
    let mut running = Vec::new();
    for s in 0..senders {
        let mut c = h.b.spawn(&["send", &remote]);
        let lines: Vec<String> = (0..per_sender).map(|i| format!("b{s}-{i}")).collect();
        sent.extend(lines.iter().cloned());
        feed(&mut c, lines);
        running.push(c);
    }
    for c in running {
        let o = wait_output(c, Duration::from_secs(120));
        assert!(o.status.success(), "sender: {}\n{}", text(&o), h.logs());
    }
    let _ = wait_output(recv_a, Duration::from_secs(120));
    let got = got_a.join().unwrap();
    in_order_per_sender(&got);
    let got = unique(&got);
    assert_eq!(got, sent, "hb to ha: {} of {} arrived\n{}", got.len(), sent.len(), h.logs());

    let mut recv_a = h.a.spawn(&["recv", path, "--timeout", "5"]);
    let mut recv_b = h.b.spawn(&["recv", &remote, "--timeout", "5"]);
    let (got_a, got_b) = (collect(&mut recv_a), collect(&mut recv_b));
    // hb's bridge asks for messages once it sees its receiver.
    std::thread::sleep(Duration::from_millis(1000));
    let mut sender = h.a.spawn(&["send", path]);
    let lines: Vec<String> = (0..spread).map(|i| format!("a-{i}")).collect();
    let sent: HashSet<String> = lines.iter().cloned().collect();
    feed(&mut sender, lines);
    let o = wait_output(sender, Duration::from_secs(120));
    assert!(o.status.success(), "sender: {}", text(&o));
    let _ = wait_output(recv_a, Duration::from_secs(120));
    let _ = wait_output(recv_b, Duration::from_secs(120));
    let (got_a, got_b) = (got_a.join().unwrap(), got_b.join().unwrap());
    eprintln!("{path}: receivers on ha got {}, on hb {}", got_a.len(), got_b.len());
    let mut all = got_a.clone();
    all.extend(got_b.iter().cloned());
    let all = unique(&all);
    assert_eq!(all, sent, "{} of {} arrived\n{}", all.len(), sent.len(), h.logs());
    assert!(!got_b.is_empty(), "nothing crossed to hb's receiver\n{}", h.logs());
    let e = h.a.stats(path);
    assert_eq!(e.lost, 0, "{e:?}");
    assert_eq!(e.depth, 0, "{e:?}");
}

#[test]
fn channel_messages_cross_both_ways_exactly_once() {
    let Some(mut h) = TwoHosts::new("channel") else { return };
    create(&h.a, "/app/ch", "64");
    h.bridges(&["--export", "/app"], &[]);
    h.b.wait_for_name("/net/ha/app/ch", SETTLE);
    both_ways(&h, "/app/ch", 2, 1000, 3000);
}

#[test]
fn carrier_messages_cross_both_ways_exactly_once() {
    let Some(mut h) = TwoHosts::new("carrier") else { return };
    let o = h.a.cli(&[
        "create",
        "/app/frames",
        "--kind",
        "carrier",
        "--arena",
        "4194304",
        "--max-message",
        "65536",
        "--queue",
        "64",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    h.bridges(&["--export", "/app"], &[]);
    h.b.wait_for_name("/net/ha/app/frames", SETTLE);
    both_ways(&h, "/app/frames", 1, 1000, 2000);
}

/// Which bridge a kill test kills.
#[derive(Clone, Copy, PartialEq)]
enum Victim {
    /// ha's, which exports the channel.
    Exporter,
    /// hb's, which imports it.
    Importer,
}

/// A sender on ha streams 20,000 messages to a receiver on hb; `victim`'s
/// bridge is SIGKILLed mid-stream, the other side notices within seconds,
/// the bridge restarts and traffic resumes. Nothing arrives twice or out
/// of order, and what did not arrive is counted lost at ha (the taker's
/// window bounds it; a message whose acknowledgement died with a bridge may
/// be both received and counted).
fn kill_mid_stream(tag: &str, victim: Victim) {
    let Some(mut h) = TwoHosts::new(tag) else { return };
    create(&h.a, "/app/ch", "64");
    h.bridges(&["--export", "/app"], &[]);
    h.b.wait_for_name("/net/ha/app/ch", SETTLE);

    let mut watch = h.b.spawn(&["watch", "/net/ha/app/ch"]);
    let events = hosts::lines(&mut watch);
    let mut recv_b = h.b.spawn(&["recv", "/net/ha/app/ch", "--timeout", "20"]);
    let got_b = collect(&mut recv_b);
    std::thread::sleep(Duration::from_millis(1000));
    let total = 20_000;
    let mut sender = h.a.spawn(&["send", "/app/ch"]);
    let feeder = {
        let mut stdin = sender.stdin.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            for i in 0..total {
                if writeln!(stdin, "m-{i}").is_err() {
                    break;
                }
            }
        })
    };
    eventually(Duration::from_secs(60), "messages to cross", || h.b.stats("/net/ha/app/ch").received_msgs > 2000);
    let killed = Instant::now();
    match victim {
        Victim::Exporter => {
            h.a.kill_bridge();
            // hb's bridge notices at once (the connection closes; a silent
            // host would take the lease, 3 s), drops its handles on the
            // mirror, and the watcher there sees the senders go, as for a
            // local sender's death.
            loop {
                let left = Duration::from_secs(10).checked_sub(killed.elapsed()).unwrap_or_default();
                match events.recv_timeout(left) {
                    Ok(e) if e.contains("no more senders") => break,
                    Ok(_) => {}
                    Err(_) => panic!("no event on hb within 10 s of the kill\n{}", h.logs()),
                }
            }
            eprintln!("hb's watcher saw ha's bridge gone {:?} after the kill", killed.elapsed());
        }
        Victim::Importer => {
            h.b.kill_bridge();
            // ha's bridge notices, closes its taker with the messages it had
            // on their way still claimed, and ha's kernel counts them lost.
            eventually(Duration::from_secs(10), "ha to notice", || {
                h.a.bridge_log().contains("the bridge of hb has gone")
            });
            eprintln!("ha noticed hb's bridge gone {:?} after the kill", killed.elapsed());
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    // Restarted, the bridge reopens what is still held (hb's mirror, held
    // by its receiver) and carries on.
    match victim {
        Victim::Exporter => h.a.restart_bridge(),
        Victim::Importer => h.b.restart_bridge(),
    }
    feeder.join().unwrap();
    let o = wait_output(sender, Duration::from_secs(180));
    assert!(o.status.success(), "sender: {}", text(&o));
    let _ = wait_output(recv_b, Duration::from_secs(180));
    let got = got_b.join().unwrap();
    in_order_per_sender(&got);
    let got = unique(&got);
    let sent: HashSet<String> = (0..total).map(|i| format!("m-{i}")).collect();
    assert!(got.is_subset(&sent));
    let a = h.a.stats("/app/ch");
    eprintln!("received on hb {}, lost at ha {}, left in ha's ring {}", got.len(), a.lost, a.depth);
    assert_eq!(a.depth, 0, "traffic did not resume\n{}", h.logs());
    assert!(a.lost <= 32, "{a:?}");
    assert!(got.len() as u64 + a.lost >= total as u64, "{} + {} < {total}\n{}", got.len(), a.lost, h.logs());
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn a_killed_exporting_bridge_is_noticed_loses_nothing_twice_and_traffic_resumes() {
    kill_mid_stream("kill", Victim::Exporter);
}

#[test]
fn a_killed_importing_bridge_leaves_its_messages_counted_lost_at_the_exporter() {
    kill_mid_stream("killimp", Victim::Importer);
}

#[test]
fn a_service_is_called_across_hosts_and_its_death_is_seen() {
    let Some(mut h) = TwoHosts::new("service") else { return };
    h.bridges(&["--export", "/app"], &[]);
    let mut provider = h.a.spawn(&["serve", "/app/upper", "--upper"]);
    h.b.wait_for_name("/net/ha/app/upper", SETTLE);
    let o = h.b.cli(&["call", "/net/ha/app/upper", "hello", "across"]);
    assert!(o.status.success(), "{}\n{}", text(&o), h.logs());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "HELLO\nACROSS\n");

    // The provider dies: within seconds the import is gone too and a call
    // says so, as it would for a local provider (a call caught in between
    // fails as a failed handler; none hangs).
    let _ = provider.kill();
    let _ = provider.wait();
    let start = Instant::now();
    let mut last = String::new();
    while !(last.contains("dead name") || last.contains("gone")) {
        assert!(start.elapsed() < Duration::from_secs(10), "the import did not go: {last}\n{}", h.logs());
        let o = h.b.cli(&["call", "/net/ha/app/upper", "again"]);
        assert!(!o.status.success() || String::from_utf8_lossy(&o.stdout) == "AGAIN\n");
        last = text(&o);
    }
    eprintln!("service death seen across hosts after {:?}: {}", start.elapsed(), last.trim());

    // A new provider on ha: the same name works again on hb, unchanged.
    let provider = h.a.spawn(&["serve", "/app/upper", "--upper"]);
    h.a.adopt(provider);
    eventually(SETTLE, "the import to come back", || {
        let o = h.b.cli(&["call", "/net/ha/app/upper", "back"]);
        o.status.success() && String::from_utf8_lossy(&o.stdout) == "BACK\n"
    });
}

#[test]
fn rights_stay_narrow_and_hostile_frames_are_rejected() {
    let Some(mut h) = TwoHosts::new("hostile") else { return };
    create(&h.a, "/app/ch", "64");
    create(&h.a, "/app/wo", "64");
    create(&h.a, "/app/ro", "64");
    h.bridges(&["--export", "/app", "--export", "/app/wo=send", "--export", "/app/ro=recv"], &["--import-mode", "066"]);
    for p in ["/net/ha/app/ch", "/net/ha/app/wo", "/net/ha/app/ro"] {
        h.b.wait_for_name(p, SETTLE);
    }
    // Modes on hb say what the export allows: wo only w, ro only r.
    assert_eq!(h.b.stats("/net/ha/app/wo").mode & 0o077, 0o022);
    assert_eq!(h.b.stats("/net/ha/app/ro").mode & 0o077, 0o044);

    // A send-only export: a receiver on hb gets nothing of what ha sends.
    let o = h.a.cli(&["send", "/app/wo", "secret"]);
    assert!(o.status.success());
    let o = h.b.cli(&["recv", "/net/ha/app/wo", "--timeout", "2"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("secret"), "{}", text(&o));
    // A receive-only export: what hb sends stays on hb.
    let o = h.b.cli(&["send", "/net/ha/app/ro", "intrusion"]);
    assert!(o.status.success());
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(h.a.stats("/app/ro").sent_msgs, 0);

    // A hostile Zenoh peer on hb's network publishes into ha's inbox.
    let helper = std::env::current_exe().unwrap();
    let mut c =
        h.b.command(&helper)
            .args(["--exact", "hostile_peer", "--include-ignored", "--nocapture"])
            .env("HOSTILE_CONNECT", format!("tcp/{}:7447", h.a.addr))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let st = hosts::wait_output(
        std::mem::replace(&mut c, std::process::Command::new("true").spawn().unwrap()),
        Duration::from_secs(60),
    );
    let _ = c.wait();
    assert!(st.status.success(), "{}", text(&st));
    std::thread::sleep(Duration::from_millis(1000));
    let log = h.a.bridge_log();
    for what in [
        "rejected a frame from the network",
        "which is not exported",
        "rejected a 10000-byte message",
        "exported without send",
        "refused hb messages from /app/wo",
        "claiming to come from",
        "whose bridge is not up",
        "numbered 18446744073709551615",
    ] {
        assert!(log.contains(what), "no {what:?} in ha's log:\n{log}");
    }
    assert_eq!(h.a.stats("/app/ro").sent_msgs, 0);
    assert_eq!(h.a.stats("/app/wo").received_msgs, 0, "the secret left ha");

    // Both bridges and kernels still serve: an honest message crosses.
    let mut r = h.a.spawn(&["recv", "/app/ch", "--count", "1", "--timeout", "20"]);
    let o = h.b.cli(&["send", "/net/ha/app/ch", "still-here"]);
    assert!(o.status.success());
    let mut out = String::new();
    r.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    let _ = r.wait();
    assert_eq!(out, "still-here\n", "{}", h.logs());
}

/// Run by the test above inside hb's namespace: a Zenoh peer that speaks
/// the bridges' key space with bad intent.
#[test]
#[ignore = "a helper, run inside a namespace by rights_stay_narrow_and_hostile_frames_are_rejected"]
fn hostile_peer() {
    use comesg_bridge::wire::{Body, Dir, Frame};
    use zenoh::Wait;
    let Ok(connect) = std::env::var("HOSTILE_CONNECT") else { return };
    let net = comesg_bridge::NetConfig { connect: vec![connect], lease_ms: 3000, ..Default::default() };
    let session = comesg_bridge::net::open(&net).expect("zenoh");
    std::thread::sleep(Duration::from_millis(1500));
    let inbox = comesg_bridge::wire::inbox("ha");
    let put = |bytes: Vec<u8>| session.put(&inbox, bytes).wait().expect("put");
    let frame = |from: &str, body: Body| Frame { from: from.into(), body }.encode();
    put(b"\xff\xff\xff\xff garbage".to_vec());
    put(vec![]);
    put(frame("hb", Body::Msg { port: "/app/nope".into(), dir: Dir::Up, stream: 1, seq: 1, msgs: vec![&b"x"[..]] }));
    put(frame(
        "hb",
        Body::Msg { port: "/app/ch".into(), dir: Dir::Up, stream: 2, seq: 1, msgs: vec![&b"ok"[..], &[7; 10_000]] },
    ));
    put(frame("hb", Body::Msg { port: "/app/ro".into(), dir: Dir::Up, stream: 3, seq: 1, msgs: vec![&b"x"[..]] }));
    put(frame("hb", Body::Demand { port: "/app/wo".into(), on: true }));
    put(frame("ha", Body::Demand { port: "/app/ch".into(), on: true }));
    put(frame("../x", Body::Demand { port: "/app/ch".into(), on: true }));
    put(frame("hb", Body::Ack { port: "/app/ch".into(), dir: Dir::Down, stream: 9, upto: u64::MAX }));
    put(frame("ghost", Body::Demand { port: "/app/ch".into(), on: true }));
    put(frame(
        "hb",
        Body::Msg { port: "/app/ch".into(), dir: Dir::Up, stream: 4, seq: u64::MAX, msgs: vec![&b"x"[..]] },
    ));
    std::thread::sleep(Duration::from_millis(500));
    let _ = session.close().wait();
}
