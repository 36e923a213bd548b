//! Cancellation safety: a receive future dropped at random moments while
//! another process sends never loses or repeats a message, for every port
//! kind that receives.

mod util;

use std::time::Duration;

use comesg::{ChannelOptions, CocarrierOptions, CopipeOptions, Rights};
use util::KernelProc;

const COUNT: u64 = 2000;

/// Random pauses for the `select!` that races each receive.
struct Rng(u64);

impl Rng {
    fn pause(&mut self) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_micros(self.0 % 400)
    }
}

/// Receives with `recv` raced against a random timer until COUNT messages
/// came; checks they are "0 0", "0 1", ... in order, and returns how many
/// receives were cancelled.
fn drain<F, Fut>(mut recv: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<u8>>,
{
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let (mut next, mut cancelled) = (0u64, 0u64);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while next < COUNT {
            assert!(tokio::time::Instant::now() < deadline, "stuck at message {next}");
            tokio::select! {
                m = recv() => {
                    assert_eq!(String::from_utf8(m).unwrap(), format!("0 {next}"), "lost or repeated");
                    next += 1;
                }
                _ = tokio::time::sleep(rng.pause()) => cancelled += 1,
            }
        }
        cancelled
    })
}

fn trickle(k: &KernelProc, path: &str) -> util::Peer {
    let count = COUNT.to_string();
    k.peer(&["poll", "trickle", path, "--id", "0", "--count", &count, "--pause-us", "150"])
}

#[test]
fn channel_receives_cancelled_at_random_lose_nothing() {
    let k = KernelProc::start("async-cancel-ch");
    let conn = k.connect();
    let opts = ChannelOptions { slot_size: 32, slots: 8, rights: Rights::RECV, ..Default::default() };
    let ch = conn.create_channel("/ac/ch", opts).unwrap();
    let mut peer = trickle(&k, "/ac/ch");
    let cancelled = drain(|| async { ch.recv_vec_async().await.unwrap() });
    println!("channel: {COUNT} messages in order, {cancelled} receives cancelled");
    assert!(cancelled > 0, "no receive was ever cancelled: the test proved nothing");
    assert!(peer.wait(Duration::from_secs(60)).success());
    assert!(ch.try_recv_vec().is_err(), "a message beyond the last");
}

#[test]
fn pipe_receives_cancelled_at_random_lose_nothing() {
    let k = KernelProc::start("async-cancel-pipe");
    let conn = k.connect();
    let opts = CopipeOptions { buffer: 32, rights: Rights::RECV, ..Default::default() };
    let pipe = conn.create_copipe("/ac/pipe", opts).unwrap();
    let mut peer = trickle(&k, "/ac/pipe");
    let cancelled = drain(|| async {
        let mut b = [0u8; 32];
        let n = pipe.recv_async(&mut b).await.unwrap();
        b[..n].to_vec()
    });
    println!("pipe: {COUNT} messages in order, {cancelled} receives cancelled");
    assert!(cancelled > 0, "no receive was ever cancelled: the test proved nothing");
    assert!(peer.wait(Duration::from_secs(60)).success());
}

#[test]
fn carrier_receives_cancelled_at_random_lose_nothing() {
    let k = KernelProc::start("async-cancel-car");
    let conn = k.connect();
    let opts = CocarrierOptions { arena: 1 << 16, max_message: 64, rights: Rights::RECV, ..Default::default() };
    let car = conn.create_cocarrier("/ac/car", opts).unwrap();
    let mut peer = trickle(&k, "/ac/car");
    let cancelled = drain(|| async { car.recv_async().await.unwrap().to_vec() });
    println!("carrier: {COUNT} messages in order, {cancelled} receives cancelled");
    assert!(cancelled > 0, "no receive was ever cancelled: the test proved nothing");
    assert!(peer.wait(Duration::from_secs(60)).success());
    assert!(car.try_recv().is_err(), "a message beyond the last");
}

#[test]
fn two_tasks_receiving_from_one_pipe_handle_with_cancellations_lose_nothing() {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};
    let k = KernelProc::start("async-cancel-pipe2");
    let conn = k.connect();
    let opts = CopipeOptions { buffer: 32, rights: Rights::RECV, ..Default::default() };
    let pipe = Arc::new(conn.create_copipe("/ac/pipe2", opts).unwrap());
    let mut peer = trickle(&k, "/ac/pipe2");
    let got: Arc<Mutex<HashSet<String>>> = Arc::default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cancelled = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for seed in [0x9e37_79b9_7f4a_7c15u64, 0x2545_f491_4f6c_dd1d] {
            let (pipe, got) = (pipe.clone(), got.clone());
            tasks.spawn(async move {
                let (mut rng, mut cancelled) = (Rng(seed), 0u64);
                let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
                while got.lock().unwrap().len() < COUNT as usize {
                    assert!(tokio::time::Instant::now() < deadline, "stuck at {}", got.lock().unwrap().len());
                    let mut b = [0u8; 32];
                    tokio::select! {
                        n = pipe.recv_async(&mut b) => {
                            let n = match n {
                                Ok(n) => n,
                                // The sender is done and gone: end of file.
                                Err(comesg::RecvError::Closed) => break,
                                Err(e) => panic!("{e}"),
                            };
                            let m = String::from_utf8(b[..n].to_vec()).unwrap();
                            assert!(got.lock().unwrap().insert(m.clone()), "{m} delivered twice");
                        }
                        _ = tokio::time::sleep(rng.pause()) => cancelled += 1,
                    }
                }
                cancelled
            });
        }
        let mut total = 0;
        while let Some(c) = tasks.join_next().await {
            total += c.unwrap();
        }
        total
    });
    let got = got.lock().unwrap();
    for seq in 0..COUNT {
        assert!(got.contains(&format!("0 {seq}")), "message {seq} lost");
    }
    println!("pipe, two tasks on one handle: {COUNT} messages once each, {cancelled} receives cancelled");
    assert!(peer.wait(Duration::from_secs(60)).success());
}
