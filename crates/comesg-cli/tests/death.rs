//! kill -9 at the worst moments: holders, receivers mid-receive, senders
//! mid-send. The kernel releases what the dead held, repairs the ring, and
//! nobody blocks forever.

mod util;

use std::time::Duration;

use comesg::{EntryKind, KernelError, Rights};
use util::{eventually, text, KernelProc};

fn entry(k: &KernelProc, path: &str) -> Option<comesg::Entry> {
    k.connect().list(path).ok().and_then(|mut v| v.pop())
}

#[test]
fn killed_holder_releases_its_reference_and_the_name_goes_dead() {
    let k = KernelProc::start("death-holder");
    let mut owner = k.peer(&["hold", "/it/d/ch", "--create"]);
    let mut other = k.peer(&["hold", "/it/d/ch", "--rights", "r"]);
    let e = entry(&k, "/it/d/ch").unwrap();
    assert_eq!(e.refs, 2);
    let pids: Vec<u32> = e.holders.iter().map(|h| h.pid).collect();
    assert!(pids.contains(&owner.pid()) && pids.contains(&other.pid()), "{pids:?}");
    let ls = text(&k.cli(&["ls", "/it/d"]));
    assert!(ls.contains(&format!("{}:sr", owner.pid())), "ls shows holders:\n{ls}");

    owner.kill9();
    eventually(Duration::from_secs(10), "the dead owner's reference to drop", || {
        entry(&k, "/it/d/ch").is_some_and(|e| e.refs == 1)
    });
    other.kill9();
    eventually(Duration::from_secs(10), "the name to go dead", || {
        entry(&k, "/it/d/ch").is_some_and(|e| e.kind == EntryKind::Dead)
    });
    let ls = text(&k.cli(&["ls", "/it/d"]));
    assert!(ls.lines().any(|l| l.starts_with("/it/d/ch") && l.contains("dead")), "ls shows the dead name:\n{ls}");
    match k.connect().open_channel("/it/d/ch", Rights::RECV) {
        Err(comesg::Error::Kernel(KernelError::DeadName(_))) => {}
        other => panic!("expected a dead name, got {other:?}"),
    }
    // Re-registering a dead name succeeds.
    let out = k.cli(&["create", "/it/d/ch", "--slots", "4"]);
    assert!(out.status.success(), "{out:?}");
    assert!(matches!(entry(&k, "/it/d/ch").unwrap().kind, EntryKind::Port(_)));
}

#[test]
fn receiver_killed_between_claim_and_release() {
    let k = KernelProc::start("death-recv");
    // Four slots: if the dead receiver's slot were never freed, senders
    // would block on it within one lap.
    assert!(k.cli(&["create", "/it/r", "--slot-size", "32", "--slots", "4"]).status.success());
    assert!(k.cli(&["send", "/it/r", "m1", "m2", "m3"]).status.success());
    let mut dying = k.peer(&["hold-recv-claim", "/it/r"]);
    dying.kill9();
    let got = k.cli(&["recv", "/it/r", "--count", "2", "--timeout", "10"]);
    assert_eq!(text(&got), "m2\nm3\n");
    eventually(Duration::from_secs(10), "the kernel to count the lost message", || {
        entry(&k, "/it/r").is_some_and(|e| e.lost == 1)
    });
    // A full lap and more goes through the repaired slot.
    let msgs: Vec<String> = (0..10).map(|i| format!("after{i}")).collect();
    let mut sender = std::process::Command::new(util::exe())
        .arg("send")
        .arg("/it/r")
        .args(&msgs)
        .arg("--socket")
        .arg(&k.socket)
        .spawn()
        .unwrap();
    let got = k.cli(&["recv", "/it/r", "--count", "10", "--timeout", "10"]);
    assert!(util::wait_status(&mut sender, Duration::from_secs(30)).success());
    assert_eq!(text(&got), msgs.iter().map(|m| format!("{m}\n")).collect::<String>());
}

#[test]
fn sender_killed_between_claim_and_publish() {
    let k = KernelProc::start("death-send");
    assert!(k.cli(&["create", "/it/s", "--slot-size", "32", "--slots", "4"]).status.success());
    assert!(k.cli(&["send", "/it/s", "before"]).status.success());
    let mut dying = k.peer(&["hold-send-claim", "/it/s"]);
    // Messages sent after the dead sender's claimed slot must not stay
    // stuck behind it.
    assert!(k.cli(&["send", "/it/s", "a", "b"]).status.success());
    dying.kill9();
    let got = k.cli(&["recv", "/it/s", "--count", "3", "--timeout", "10"]);
    assert_eq!(text(&got), "before\na\nb\n");
    eventually(Duration::from_secs(10), "the lost claim to be counted", || {
        entry(&k, "/it/s").is_some_and(|e| e.lost == 1 && e.depth == 0)
    });
    // The ring keeps working for several laps.
    let msgs: Vec<String> = (0..9).map(|i| format!("x{i}")).collect();
    let args: Vec<&str> = ["send", "/it/s"].into_iter().chain(msgs.iter().map(|s| s.as_str())).collect();
    let mut sender =
        std::process::Command::new(util::exe()).args(&args).arg("--socket").arg(&k.socket).spawn().unwrap();
    let got = k.cli(&["recv", "/it/s", "--count", "9", "--timeout", "10"]);
    assert!(util::wait_status(&mut sender, Duration::from_secs(30)).success());
    assert_eq!(text(&got).lines().count(), 9);
}

#[test]
fn persistent_channel_keeps_queued_messages_with_no_holders() {
    let k = KernelProc::start("persist");
    assert!(k.cli(&["create", "/it/p", "--slots", "8"]).status.success());
    assert!(k.cli(&["send", "/it/p", "kept"]).status.success());
    let e = entry(&k, "/it/p").unwrap();
    assert_eq!((e.refs, e.depth, e.persistent), (0, 1, true));
    assert_eq!(text(&k.cli(&["recv", "/it/p", "--count", "1", "--timeout", "5"])), "kept\n");
    assert!(k.cli(&["unlink", "/it/p"]).status.success());
    assert!(entry(&k, "/it/p").is_none(), "unlinked with no holders: gone");
}
