//! A tokio program serving 100 ports from one task set, fed by several
//! processes: every message arrives once, and the program idles at no CPU.
//! (The only test in this file, so the process's CPU time is its own.)

mod util;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use comesg::{ChannelOptions, Rights};
use util::KernelProc;

const PORTS: u32 = 100;
const SENDERS: u32 = 4;
const EACH: u64 = 2000;

fn cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[test]
fn a_hundred_ports_served_by_one_task_set_from_several_processes() {
    let k = KernelProc::start("async-serve");
    let conn = k.connect();
    let opts = ChannelOptions { slot_size: 32, slots: 16, rights: Rights::RECV, ..Default::default() };
    let chans: Vec<_> =
        (0..PORTS).map(|i| Arc::new(conn.create_channel(&format!("/as/c/{i}"), opts).unwrap())).collect();
    let got: Arc<Mutex<HashSet<(u32, u64)>>> = Arc::default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for ch in &chans {
        let (ch, got) = (ch.clone(), got.clone());
        tasks.spawn_on(
            async move {
                loop {
                    let m = ch.recv_vec_async().await.unwrap();
                    let s = String::from_utf8(m).unwrap();
                    let (id, seq) = s.split_once(' ').unwrap();
                    let key = (id.parse().unwrap(), seq.parse().unwrap());
                    assert!(got.lock().unwrap().insert(key), "{key:?} delivered twice");
                }
            },
            rt.handle(),
        );
    }
    // Let every task reach its first wait, then measure an idle second.
    std::thread::sleep(Duration::from_millis(300));
    let c0 = cpu_time();
    std::thread::sleep(Duration::from_secs(1));
    let idle_before = cpu_time() - c0;

    let per = PORTS / SENDERS;
    let (each, pause) = (EACH.to_string(), "200".to_string());
    let mut peers: Vec<_> = (0..SENDERS)
        .map(|s| {
            let (first, ports, id) = ((s * per).to_string(), per.to_string(), s.to_string());
            k.peer(&[
                "poll",
                "trickle",
                "/as/c",
                "--first",
                &first,
                "--ports",
                &ports,
                "--id",
                &id,
                "--count",
                &each,
                "--pause-us",
                &pause,
            ])
        })
        .collect();
    let started = Instant::now();
    let total = (SENDERS as u64 * EACH) as usize;
    while got.lock().unwrap().len() < total {
        assert!(started.elapsed() < Duration::from_secs(120), "only {} of {total}", got.lock().unwrap().len());
        std::thread::sleep(Duration::from_millis(20));
    }
    let busy = started.elapsed();
    for p in &mut peers {
        assert!(p.wait(Duration::from_secs(60)).success());
    }
    // Idle again: 100 tasks waiting, no traffic.
    std::thread::sleep(Duration::from_millis(200));
    let c1 = cpu_time();
    std::thread::sleep(Duration::from_secs(1));
    let idle_after = cpu_time() - c1;
    println!(
        "{total} messages from {SENDERS} processes to {PORTS} ports in {busy:?}; \
         CPU time of this process over an idle second: {idle_before:?} before, {idle_after:?} after"
    );
    let got = got.lock().unwrap();
    for s in 0..SENDERS {
        for q in 0..EACH {
            assert!(got.contains(&(s, q)), "message {s} {q} never arrived");
        }
    }
    tasks.abort_all();
    drop(rt);
}
