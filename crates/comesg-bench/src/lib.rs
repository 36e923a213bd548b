//! The comesg benchmark.
//!
//! Two processes, pinned to different CPUs where the machine has two, move
//! messages through each transport with the same loop:
//! - **latency**: ping-pong round trips, each timed on its own; median and p99;
//! - **throughput**: one-way streams of N messages, timed from the first send
//!   to the receiver's acknowledgement of the last.
//!
//! Baselines measured in the same run: a raw shared-memory spin ping-pong
//! (the hardware limit), a bare Vyukov ring in shared memory (what COCHANNEL
//! builds on, with nothing added), futex wait/wake, a pipe, a UNIX
//! `SOCK_SEQPACKET` socket, and single-threaded `memcpy`. The report prints every figure's
//! ratio to them, because on a shared, noisy machine only ratios from one run
//! compare.
//!
//! **Locks** (rows of size 0): uncontended comutex lock+unlock beside
//! `std::sync::Mutex`, and a comutex two processes take turns on.

pub mod bare_ring;
pub mod link;
mod locks;
pub mod peer;
pub mod report;
mod runner;
pub mod scaling;
pub mod wakeup;

pub use report::{LatencyRow, Report, ThroughputRow};
pub use runner::{run, BenchConfig};
