//! In-process round trips through two COCHANNEL rings between two pinned
//! threads, interleaved with a raw spin ping-pong so that the ratio holds on
//! a noisy machine. A developer's probe of the ring alone (no kernel, no
//! processes); `comesg bench` is the benchmark of record. The rings' sides
//! are leased to their lone holders and messages go through
//! `blocking::send` and `blocking::recv`, the calls `Channel` makes: a
//! probe that called the claim functions itself measured a path no
//! channel takes (they were not inlined into it).
//!
//! `cargo bench -p comesg-shm --bench ring_pingpong`; with `RING_TRACE=1`
//! each stream also prints its rate and the ring's depth every 65,536
//! messages (how the slow phases near an empty or full ring were found,
//! see `channel::slip`); with `RING_RT_ONLY=1` it measures the round trips
//! alone (a few seconds), for paired runs of two builds.

use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use comesg_shm::channel::{blocking, Geometry, Ring, Side};
use comesg_sys::mapping::{Access, Mapping};
use comesg_sys::memfd;

fn ring(slots: u32) -> Ring {
    ring_of(64, slots)
}

/// A ring whose sides are leased to their lone holders (sender 0,
/// receiver 1), as the microkernel grants them, so the probe takes the
/// path a channel with one sender and one receiver takes.
fn leased(ring: Ring) -> Ring {
    ring.set_lease(Side::Send, Some(0)).unwrap();
    ring.set_lease(Side::Recv, Some(1)).unwrap();
    ring
}

fn ring_of(slot_size: u32, slots: u32) -> Ring {
    let geo = Geometry { slot_size, slots, max_holders: 4 };
    let s = memfd::create_segment("bench", geo.sender_segment_len() as u64).unwrap();
    let r = memfd::create_segment("bench", geo.receiver_segment_len() as u64).unwrap();
    let ring = Ring::new(
        geo,
        Mapping::map(&s, geo.sender_segment_len(), Access::ReadWrite).unwrap(),
        Mapping::map(&r, geo.receiver_segment_len(), Access::ReadWrite).unwrap(),
    )
    .unwrap();
    ring.initialize().unwrap();
    ring
}

const N: u64 = 50_000;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Spin,
    Ring,
}

fn once(mode: Mode, c0: usize, c1: usize) -> f64 {
    let ping = Arc::new(leased(ring(64)));
    let pong = Arc::new(leased(ring(64)));
    let flags: Arc<Vec<AtomicU64>> = Arc::new((0..16).map(|_| AtomicU64::new(0)).collect());
    let go = Arc::new(Barrier::new(2));
    let (p2, q2, f2, g2) = (ping.clone(), pong.clone(), flags.clone(), go.clone());
    let t = std::thread::spawn(move || {
        let _ = comesg_sys::process::pin_to_cpu(c1);
        g2.wait();
        let mut buf = [0u8; 64];
        for i in 1..=N {
            if mode == Mode::Spin {
                while f2[0].load(Acquire) != i {
                    std::hint::spin_loop();
                }
                f2[8].store(i, Release);
            } else {
                blocking::recv(&p2, 1, &mut buf, None).unwrap();
                blocking::send(&q2, 0, &buf, None).unwrap();
            }
        }
    });
    let _ = comesg_sys::process::pin_to_cpu(c0);
    go.wait();
    let mut buf = [0u8; 64];
    let t0 = Instant::now();
    for i in 1..=N {
        if mode == Mode::Spin {
            flags[0].store(i, Release);
            while flags[8].load(Acquire) != i {
                std::hint::spin_loop();
            }
        } else {
            blocking::send(&ping, 0, &buf, None).unwrap();
            blocking::recv(&pong, 1, &mut buf, None).unwrap();
        }
    }
    let ns = t0.elapsed().as_nanos() as f64 / N as f64;
    t.join().unwrap();
    ns
}

/// Messages per line of the stream trace.
const TRACE_CHUNK: u64 = 1 << 16;

/// One-way stream of `n` 64-byte messages through a 4096-slot ring; msgs/s.
fn stream(n: u64, size: usize, slots: u32, c0: usize, c1: usize) -> f64 {
    let ch = Arc::new(leased(ring_of(size as u32, slots)));
    let go = Arc::new(Barrier::new(2));
    let (c2, g2) = (ch.clone(), go.clone());
    let t = std::thread::spawn(move || {
        let _ = comesg_sys::process::pin_to_cpu(c1);
        g2.wait();
        let mut buf = [0u8; 64];
        for _ in 0..n {
            blocking::recv(&c2, 1, &mut buf[..size], None).unwrap();
        }
    });
    let _ = comesg_sys::process::pin_to_cpu(c0);
    go.wait();
    let buf = [7u8; 64];
    let trace = std::env::var_os("RING_TRACE").is_some();
    let mut chunks = Vec::new();
    let t0 = Instant::now();
    let mut last = t0;
    for k in 1..=n {
        blocking::send(&ch, 0, &buf[..size], None).unwrap();
        if trace && k % TRACE_CHUNK == 0 {
            let now = Instant::now();
            chunks.push(format!("{:.0}@{}", TRACE_CHUNK as f64 / (now - last).as_secs_f64() / 1e6, ch.stats().depth));
            last = now;
        }
    }
    t.join().unwrap();
    if trace {
        println!("  M msgs/s @ depth, every {TRACE_CHUNK} messages: {}", chunks.join(" "));
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

/// Per-side costs: a thread on one CPU fills a 4096-slot ring that a thread
/// on the other CPU drained last (so every line moves between cores), then
/// the other drains it. Nanoseconds per message for each.
fn sides(c0: usize, c1: usize) -> (f64, f64) {
    let ch = Arc::new(ring_of(64, 4096));
    let mut fill = Vec::new();
    let mut drain = Vec::new();
    for _ in 0..20 {
        let c2 = ch.clone();
        let _ = comesg_sys::process::pin_to_cpu(c0);
        let t0 = Instant::now();
        for _ in 0..4096 {
            c2.try_send(0, &[7u8; 64]).unwrap();
        }
        fill.push(t0.elapsed().as_nanos() as f64 / 4096.0);
        let d = std::thread::spawn(move || {
            let _ = comesg_sys::process::pin_to_cpu(c1);
            let mut buf = [0u8; 64];
            let t0 = Instant::now();
            for _ in 0..4096 {
                c2.try_recv(1, &mut buf).unwrap();
            }
            t0.elapsed().as_nanos() as f64 / 4096.0
        });
        drain.push(d.join().unwrap());
    }
    fill.sort_by(f64::total_cmp);
    drain.sort_by(f64::total_cmp);
    (fill[10], drain[10])
}

fn main() {
    // Read the CPU set once: pinning narrows this thread's own set.
    let cpus = comesg_sys::process::allowed_cpus();
    let (c0, c1) = (cpus[0], *cpus.get(1).unwrap_or(&cpus[0]));
    let rounds = 9;
    let (mut spin, mut ring) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        spin.push(once(Mode::Spin, c0, c1));
        ring.push(once(Mode::Ring, c0, c1));
    }
    if std::env::var_os("RING_RT_ONLY").is_some() {
        report_round_trips(spin, ring, rounds);
        return;
    }
    {
        // One thread, no other core: the instruction cost of the data path.
        let r = leased(ring_of(64, 64));
        let mut buf = [0u8; 64];
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t0 = Instant::now();
            for _ in 0..1_000_000 {
                blocking::send(&r, 0, &buf, None).unwrap();
                blocking::recv(&r, 1, &mut buf, None).unwrap();
            }
            best = best.min(t0.elapsed().as_nanos() as f64 / 1e6);
        }
        println!("one thread, send + receive of 64 B: {best:.1} ns");
    }
    let (f, d) = sides(c0, c1);
    println!("per side, 64 B, lines from the other core: send {f:.1} ns/msg, receive {d:.1} ns/msg");
    for (size, slots) in [(48, 4096), (64, 256), (64, 4096)] {
        let mut rates: Vec<f64> = (0..5).map(|_| stream(2_000_000, size, slots, c0, c1)).collect();
        rates.sort_by(f64::total_cmp);
        println!("one-way stream, {slots} slots of {size} B, in-process: median {:.1} M msgs/s", rates[2] / 1e6);
    }
    report_round_trips(spin, ring, rounds);
}

/// Prints the round trips' medians and the median per-round ratio (spin
/// and ring rounds adjacent in time).
fn report_round_trips(mut spin: Vec<f64>, mut ring: Vec<f64>, rounds: usize) {
    let mut ratios: Vec<f64> = spin.iter().zip(&ring).map(|(s, r)| r / s).collect();
    ratios.sort_by(f64::total_cmp);
    spin.sort_by(f64::total_cmp);
    ring.sort_by(f64::total_cmp);
    println!(
        "round trip, 64 B, in-process: spin median {:.0} ns, ring median {:.0} ns, ring/spin per-round median {:.2}x (min {:.2}x)",
        spin[rounds / 2],
        ring[rounds / 2],
        ratios[rounds / 2],
        ratios[0]
    );
}
