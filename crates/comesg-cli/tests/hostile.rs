//! A hostile holder scribbles random words over every byte of a channel's
//! shared segments it can write (it holds both rights, so both segments)
//! while honest processes use that channel and another one. The honest
//! clients of the scribbled channel may get errors or lose messages, but
//! none may panic or die of a signal; the other channel delivers every
//! message exactly once; and the microkernel, which maps and repairs the
//! same segments, keeps serving.

mod util;

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use util::KernelProc;

/// An honest process ended well enough: success, or a clean error exit
/// (1) — never a panic (101) or a signal it did not get from us.
fn clean(st: ExitStatus, killed_by_us: bool) -> bool {
    match (st.code(), st.signal()) {
        (Some(0 | 1), _) => true,
        (None, Some(9)) => killed_by_us,
        _ => false,
    }
}

#[test]
fn a_scribbler_hurts_only_the_channel_it_holds() {
    let k = KernelProc::start("hostile");
    for p in ["/it/hostile/shared", "/it/hostile/other"] {
        let o = k.cli(&["create", p, "--slot-size", "64", "--slots", "32"]);
        assert!(o.status.success(), "{o:?}");
    }
    // Honest traffic on both channels, then the scribbler on one.
    let mut other_rx = k.peer(&["seq-recv", "/it/hostile/other", "--idle", "5"]);
    let other_lines = other_rx.collect();
    let mut other_tx = k.peer(&["seq-send", "/it/hostile/other", "--id", "7", "--count", "200000"]);
    let mut shared_rx: Vec<_> = (0..2).map(|_| k.peer(&["seq-recv", "/it/hostile/shared", "--idle", "2"])).collect();
    let shared_lines: Vec<_> = shared_rx.iter_mut().map(|p| p.collect()).collect();
    let mut shared_tx: Vec<_> = (0..2)
        .map(|id| k.peer(&["seq-send", "/it/hostile/shared", "--id", &id.to_string(), "--count", "1000000"]))
        .collect();
    let mut scribblers: Vec<_> = (1..=2)
        .map(|seed| k.peer(&["scribble", "/it/hostile/shared", "--seconds", "3", "--seed", &seed.to_string()]))
        .collect();
    for s in &mut scribblers {
        assert!(s.wait(Duration::from_secs(60)).success(), "the scribbler itself failed");
    }

    // The other channel: every message, once, in order.
    assert!(other_tx.wait(Duration::from_secs(120)).success());
    assert!(other_rx.wait(Duration::from_secs(60)).success());
    let lines = other_lines.join().unwrap();
    let mut seen = HashSet::new();
    let mut last = None;
    for l in lines.iter().filter(|l| !l.starts_with("done")) {
        let seq: u64 = l.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(last.is_none_or(|p| seq > p), "out of order on the other channel");
        last = Some(seq);
        assert!(seen.insert(seq), "delivered twice on the other channel");
    }
    assert_eq!(seen.len(), 200_000, "the other channel lost messages");

    // The scribbled channel's honest clients: a clean end, or stuck on a
    // ring that looks full or empty for ever (then we kill them).
    for p in shared_tx.iter_mut().chain(shared_rx.iter_mut()) {
        let st = match util::try_wait_for(&mut p.child, Duration::from_secs(5)) {
            Some(st) => (st, false),
            None => {
                p.kill9();
                (p.child.wait().unwrap(), true)
            }
        };
        assert!(clean(st.0, st.1), "an honest client of the scribbled channel ended badly: {:?}", st.0);
        eprintln!("honest client of the scribbled channel: {:?}{}", st.0, if st.1 { " (stuck; killed)" } else { "" });
    }
    for r in shared_lines {
        let lines = r.join().unwrap_or_default();
        eprintln!("a receiver of the scribbled channel: {} lines, last {:?}", lines.len(), lines.last());
    }

    // The kernel survived, serves, and repairs on the departures above.
    let conn = k.connect();
    conn.ping().unwrap();
    let entries = conn.list("/it/hostile").unwrap();
    assert_eq!(entries.len(), 2, "{entries:?}");
    let o = k.cli(&["send", "/it/hostile/other", "after"]);
    assert!(o.status.success(), "{o:?}");
}
