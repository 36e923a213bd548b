//! 64 B coservice calls between two pinned threads of one process (a
//! provider's worker and a caller) through an embedded microkernel, beside
//! COCHANNEL round trips between the same two CPUs: a developer's probe of
//! the call path, easy to profile with `perf record`. `comesg bench` (two
//! processes) is the benchmark of record.
//!
//! `cargo run --release -p comesg-bench --example service_round_trip`

use std::time::Instant;

use comesg::{ChannelOptions, Connection, Kernel, KernelConfig, Rights, ServiceOptions};

const CALLS: usize = 200_000;
const ROUNDS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cpus = comesg_sys::process::allowed_cpus();
    let (mine, theirs) = (cpus[0], *cpus.get(1).unwrap_or(&cpus[0]));
    let dir = std::env::temp_dir().join(format!("comesg-svc-rt-{}", std::process::id()));
    let socket = dir.join("kernel.sock");
    let kernel = Kernel::spawn(KernelConfig::new(&socket))?;
    let conn = Connection::connect(&socket)?;
    // The worker thread starts pinned where this thread is when it serves.
    comesg_sys::process::pin_to_cpu(theirs)?;
    let opts = ServiceOptions { workers: 1, slot_size: 64, call_slots: 4, queue: 64, mode: 0o600 };
    let svc = conn.serve("/probe/echo", opts, |c| c.request.to_vec())?;
    let ping = ChannelOptions { slot_size: 64, slots: 64, exclusive: true, ..Default::default() };
    let (a, b) = (conn.create_channel("/probe/ping", ping)?, conn.create_channel("/probe/pong", ping)?);
    let (ping_rx, pong_tx) =
        (conn.open_channel("/probe/ping", Rights::RECV)?, conn.open_channel("/probe/pong", Rights::SEND)?);
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..CALLS * ROUNDS {
            if ping_rx.recv(&mut buf).is_err() || pong_tx.send(&buf).is_err() {
                break;
            }
        }
    });
    comesg_sys::process::pin_to_cpu(mine)?;
    let client = conn.service("/probe/echo")?;
    let (ping_tx, pong_rx) =
        (conn.open_channel("/probe/ping", Rights::SEND)?, conn.open_channel("/probe/pong", Rights::RECV)?);
    let (mut calls, mut trips) = (Vec::new(), Vec::new());
    let mut buf = [7u8; 64];
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for _ in 0..CALLS {
            let r = client.call(&buf)?;
            buf[..r.len()].copy_from_slice(&r);
        }
        calls.push(t.elapsed().as_nanos() as f64 / CALLS as f64);
        let t = Instant::now();
        for _ in 0..CALLS {
            ping_tx.send(&buf)?;
            pong_rx.recv(&mut buf)?;
        }
        trips.push(t.elapsed().as_nanos() as f64 / CALLS as f64);
    }
    let _ = echo.join();
    let (c, r) = (median(calls), median(trips));
    println!("64 B: call {c:.0} ns, COCHANNEL round trip {r:.0} ns, call / round trip {:.2}", c / r);
    drop((svc, a, b, client, conn, kernel));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
