//! Coservices across real processes: a provider with a worker pool, many
//! caller processes, and the deaths of either side.

mod util;

use std::time::{Duration, Instant};

use comesg::{CallError, EntryKind, PortKind};
use util::{text, KernelProc};

fn entry(k: &KernelProc, path: &str) -> comesg::Entry {
    k.connect().list(path).unwrap().pop().unwrap()
}

#[test]
fn four_workers_answer_eight_caller_processes_exactly_once() {
    let k = KernelProc::start("svc-many");
    let _provider = k.peer(&["serve", "/it/svc/echo", "--workers", "4"]);
    let count = 2000u64;
    let mut callers: Vec<_> = (0..8)
        .map(|id| {
            let pipeline = if id % 2 == 0 { "1" } else { "4" };
            k.peer(&[
                "call-many",
                "/it/svc/echo",
                "--id",
                &id.to_string(),
                "--count",
                &count.to_string(),
                "--pipeline",
                pipeline,
            ])
        })
        .collect();
    let outs: Vec<_> = callers.iter_mut().map(|c| c.collect()).collect();
    let mut by_worker = std::collections::BTreeMap::<String, u64>::new();
    for (c, out) in callers.iter_mut().zip(outs) {
        assert!(c.wait(Duration::from_secs(120)).success());
        let lines = out.join().unwrap();
        assert_eq!(lines.last().map(String::as_str), Some(&*format!("done {count}")), "{lines:?}");
        let mut answered = 0;
        for l in &lines[..lines.len() - 1] {
            let mut it = l.split_whitespace().skip(1);
            let (w, n) = (it.next().unwrap().to_string(), it.next().unwrap().parse::<u64>().unwrap());
            answered += n;
            *by_worker.entry(w).or_default() += n;
        }
        assert_eq!(answered, count, "every call of this caller answered once: {lines:?}");
    }
    println!("calls per worker: {by_worker:?}");
    assert_eq!(by_worker.values().sum::<u64>(), 8 * count);
    assert!(by_worker.len() >= 2, "calls went to more than one worker: {by_worker:?}");
    let e = entry(&k, "/it/svc/echo");
    assert_eq!(e.kind, EntryKind::Port(PortKind::Service));
    assert_eq!(e.worker_calls.iter().sum::<u64>(), 8 * count, "ls counts every call: {:?}", e.worker_calls);
    let ls = text(&k.cli(&["ls", "/it/svc"]));
    assert!(ls.contains("service") && ls.contains("4 workers"), "{ls}");
}

#[test]
fn provider_killed_mid_call_fails_the_call_and_the_name_can_be_served_again() {
    let k = KernelProc::start("svc-death");
    let mut provider = k.peer(&["serve", "/it/svc/d", "--workers", "2"]);
    let conn = k.connect();
    let svc = conn.service("/it/svc/d").unwrap();
    let first = svc.call(b"x").unwrap();
    assert!(first == b"w0:x" || first == b"w1:x", "{first:?}");
    assert!(std::ptr::eq(&*svc, &*conn.service("/it/svc/d").unwrap()), "discovery is cached");
    let hung = svc.start(b"hang").unwrap();
    let also = svc.start(b"queued").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    provider.kill9();
    let t = Instant::now();
    assert_eq!(hung.wait_timeout(Duration::from_secs(30)), Err(CallError::ServiceGone));
    let queued = also.wait_timeout(Duration::from_secs(30));
    assert!(matches!(queued, Ok(_) | Err(CallError::ServiceGone)), "{queued:?}");
    println!("callers learnt of the provider's death in {:?}", t.elapsed());
    assert_eq!(svc.call(b"later"), Err(CallError::ServiceGone));
    // A new provider registers the dead name; discovery finds it.
    let _again = k.peer(&["serve", "/it/svc/d", "--workers", "1"]);
    let svc2 = conn.service("/it/svc/d").unwrap();
    assert_eq!(svc2.call(b"y").unwrap(), b"w0:y");
}

#[test]
fn a_caller_killed_mid_stream_leaves_the_service_serving_others() {
    let k = KernelProc::start("svc-caller");
    let _provider = k.peer(&["serve", "/it/svc/c", "--workers", "2"]);
    let mut doomed = k.peer(&["call-many", "/it/svc/c", "--id", "9", "--count", "100000000", "--pipeline", "8"]);
    std::thread::sleep(Duration::from_millis(200));
    doomed.kill9();
    util::eventually(Duration::from_secs(10), "the dead caller's reference to go", || entry(&k, "/it/svc/c").refs == 1);
    let conn = k.connect();
    let svc = conn.service("/it/svc/c").unwrap();
    for i in 0..100 {
        let r = svc.call_timeout(format!("{i}").as_bytes(), Duration::from_secs(10)).unwrap();
        assert!(r.ends_with(format!(":{i}").as_bytes()));
    }
    // A second provider for a live name is refused.
    assert!(conn.serve("/it/svc/c", Default::default(), |c| c.request.to_vec()).is_err());
}

#[test]
fn the_cli_serves_and_calls() {
    let k = KernelProc::start("svc-cli");
    let mut server = std::process::Command::new(util::exe())
        .args(["serve", "/it/svc/up", "--upper", "--socket"])
        .arg(&k.socket)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    util::eventually(Duration::from_secs(10), "the service to be registered", || {
        k.connect()
            .list("/it/svc/up")
            .is_ok_and(|v| v.first().is_some_and(|e| e.kind == EntryKind::Port(PortKind::Service)))
    });
    let out = k.cli(&["call", "/it/svc/up", "hello", "world"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out), "HELLO\nWORLD\n");
    let _ = server.kill();
    let _ = server.wait();
    let out = k.cli(&["call", "/it/svc/up", "x", "--timeout", "5"]);
    assert!(!out.status.success());
}

#[test]
fn calls_started_without_waiting_are_answered_on_other_threads_and_never_block() {
    let k = KernelProc::start("svc-owned");
    let _provider = k.peer(&["serve", "/it/svc/owned", "--workers", "2"]);
    let conn = k.connect();
    let svc = conn.service("/it/svc/owned").unwrap();
    let waiters: Vec<_> = (0..8)
        .map(|n| {
            let call = svc.try_start_owned(format!("req{n}").as_bytes()).unwrap().expect("room in an idle service");
            std::thread::spawn(move || (n, call.wait()))
        })
        .collect();
    for w in waiters {
        let (n, r) = w.join().unwrap();
        let r = String::from_utf8(r.unwrap()).unwrap();
        assert!(r.starts_with('w') && r.ends_with(&format!(":req{n}")), "call {n} got {r}");
    }
    assert!(matches!(svc.try_start_owned(&vec![0u8; 1 << 20]), Err(CallError::TooLong { .. })));

    // With every worker stuck, starting more never waits: it ends in a
    // full request queue (4 tickets, 16 call slots per handle) or, on
    // the handle that has them all in flight, in Busy.
    let _small = k.peer(&["serve", "/it/svc/small", "--workers", "1", "--queue", "4"]);
    let small = conn.service("/it/svc/small").unwrap();
    let _stuck = small.try_start_owned(b"hang").unwrap().unwrap();
    let mut started = Vec::new();
    let full = loop {
        match small.try_start_owned(b"x") {
            Ok(Some(c)) => started.push(c),
            Ok(None) => break true,
            Err(CallError::Busy(_)) => break false,
            Err(e) => panic!("{e}"),
        }
    };
    // 4 tickets: 3 behind the hanging call, or 4 once the worker took it.
    assert!(full, "the queue filled before the call slots did ({} started)", started.len());
    assert!((3..=4).contains(&started.len()), "{} started before the queue was full", started.len());
    let second = conn.service("/it/svc/owned").unwrap();
    let mut slots = Vec::new();
    let busy = loop {
        match second.try_start_owned(b"hang") {
            Ok(Some(c)) => slots.push(c),
            Ok(None) => break false,
            Err(CallError::Busy(n)) => break n == 16,
            Err(e) => panic!("{e}"),
        }
    };
    assert!(busy, "16 call slots, then Busy ({} started)", slots.len());
}
