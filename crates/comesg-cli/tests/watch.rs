//! Watching objects: the events another process's death, an unlink and a
//! last close cause reach `comesg watch` and the library's watcher, in
//! order, blocking, timed, non-blocking and on tokio.

mod util;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use comesg::{ChannelOptions, EventKind, Rights};
use util::KernelProc;

#[test]
fn comesg_watch_prints_a_holders_death_the_unlink_and_the_end() {
    let k = KernelProc::start("watch-cli");
    let conn = k.connect();
    let opts = ChannelOptions { slot_size: 16, slots: 4, rights: Rights::RECV, ..Default::default() };
    let ch = conn.create_channel("/w/ch", opts).unwrap();
    let mut watch = Command::new(util::exe())
        .args(["watch", "/w/ch", "--count", "5", "--socket"])
        .arg(&k.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(watch.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "watching /w/ch");

    let mut sender = k.peer(&["hold", "/w/ch", "--rights", "s"]);
    let pid = sender.pid();
    sender.kill9();
    util::eventually(Duration::from_secs(10), "the sender's handle released", || {
        conn.list("/w/ch").unwrap()[0].holders.len() == 1
    });
    conn.unlink("/w/ch").unwrap();
    drop(ch);

    let rest: Vec<String> = out.lines().map_while(Result::ok).collect();
    assert!(util::wait_status(&mut watch, Duration::from_secs(30)).success());
    assert_eq!(
        rest,
        vec![
            format!("/w/ch: holder pid {pid} gone"),
            "/w/ch: no more senders".to_string(),
            "/w/ch: name unlinked".to_string(),
            "/w/ch: no more receivers".to_string(),
            "/w/ch: destroyed".to_string(),
        ]
    );
}

#[test]
fn a_watcher_learns_of_a_service_providers_death_blocking_timed_and_async() {
    let k = KernelProc::start("watch-lib");
    let mut provider = k.peer(&["serve", "/w/svc", "--workers", "1"]);
    let conn = k.connect();
    let w = conn.watch("/w/svc").unwrap();
    // Nothing happened yet: the non-blocking and timed forms say so.
    assert_eq!(w.try_next().unwrap(), None);
    assert_eq!(w.next_timeout(Duration::from_millis(50)).unwrap(), None);
    let pid = provider.pid();
    provider.kill9();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let events = rt.block_on(async {
        let mut seen = Vec::new();
        loop {
            let e = tokio::time::timeout(Duration::from_secs(30), w.next_async()).await.unwrap().unwrap();
            assert_eq!(e.name.as_str(), "/w/svc");
            seen.push(e.what);
            if e.what == EventKind::Destroyed {
                return seen;
            }
        }
    });
    assert_eq!(
        events,
        vec![EventKind::HolderGone { pid }, EventKind::ServiceGone, EventKind::NoReceivers, EventKind::Destroyed]
    );
    // Nothing follows Destroyed.
    assert!(matches!(w.try_next(), Err(comesg::Error::WatchEnded)));
    // A name nobody may read, or that does not exist, cannot be watched.
    assert!(matches!(conn.watch("/w/none"), Err(comesg::Error::Kernel(comesg::KernelError::NotFound(_)))));
}
