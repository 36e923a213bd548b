//! Async lock and call across processes: a comutex another process holds
//! (and dies holding), and a coservice in another process, each awaited on
//! tokio without a thread per wait.

mod util;

use std::sync::Arc;
use std::time::Duration;

use comesg::{CallError, ComutexOptions, LockError};
use util::KernelProc;

#[test]
fn lock_async_waits_for_another_process_and_learns_of_its_death() {
    let k = KernelProc::start("async-lock");
    let conn = k.connect();
    let m = conn.create_comutex("/ao/mx", ComutexOptions::default()).unwrap();
    let mut holder = k.peer(&["hold-lock", "/ao/mx"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // Held elsewhere: the lock does not come within a while...
        let r = tokio::time::timeout(Duration::from_millis(200), m.lock_async()).await;
        assert!(r.is_err(), "locked a comutex another process holds");
        // ...and comes once the holder dies, with the news of its death.
        let waiter = m.lock_async();
        holder.kill9();
        match tokio::time::timeout(Duration::from_secs(30), waiter).await {
            Ok(Err(LockError::OwnerDied(g))) => {
                g.mark_consistent().unwrap();
            }
            other => panic!("expected OwnerDied, got {other:?}"),
        }
        // Free now: an async lock takes it at once.
        drop(m.lock_async().await.unwrap());
    });
}

#[test]
fn calls_async_from_many_tasks_reach_a_provider_in_another_process() {
    let k = KernelProc::start("async-call");
    let _provider = k.peer(&["serve", "/ao/svc", "--workers", "2"]);
    let conn = k.connect();
    let svc = conn.service("/ao/svc").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let results = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..20 {
            let svc: Arc<comesg::ServiceClient> = svc.clone();
            tasks.spawn(async move {
                let mut n = 0;
                for i in 0..50 {
                    let req = format!("{t}-{i}");
                    let resp = svc.call_async(req.as_bytes()).await.unwrap();
                    let resp = String::from_utf8(resp).unwrap();
                    assert!(resp.ends_with(&format!(":{req}")), "{req} answered with {resp}");
                    n += 1;
                }
                n
            });
        }
        let mut total = 0;
        while let Some(n) = tasks.join_next().await {
            total += n.unwrap();
        }
        total
    });
    assert_eq!(results, 1000);
    // The provider's death reaches a waiting call.
    drop(_provider);
    let r = rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), svc.call_async(b"after")).await });
    assert!(matches!(r, Ok(Err(CallError::ServiceGone))), "{r:?}");
}

#[test]
fn pipe_sends_async_from_many_tasks_each_reach_the_receiver_once() {
    let k = KernelProc::start("async-pipe-send");
    let conn = k.connect();
    let opts = comesg::CopipeOptions { buffer: 16, receivers: 2, ..Default::default() };
    let pipe = Arc::new(conn.create_copipe("/ao/pipe", opts).unwrap());
    let mut rx = k.peer(&["seq-recv", "/ao/pipe", "--idle", "3"]);
    let out = rx.collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for id in 0..4u32 {
            let pipe = pipe.clone();
            tasks.spawn(async move {
                for seq in 0..100u64 {
                    let mut m = [0u8; 16];
                    m[..4].copy_from_slice(&id.to_le_bytes());
                    m[4..12].copy_from_slice(&seq.to_le_bytes());
                    pipe.send_async(&m).await.unwrap();
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    });
    // Every send returned once the receiver had the message: close, so the
    // receiver sees end of file.
    drop(pipe);
    assert!(rx.wait(Duration::from_secs(60)).success());
    let lines = out.join().unwrap();
    assert_eq!(lines.last().map(String::as_str), Some("done 400"), "{:?}", &lines[lines.len().saturating_sub(3)..]);
    let mut seen: Vec<&String> = lines[..400].iter().collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 400, "a message arrived twice");
}
