//! Crash points for fault-injection tests.
//!
//! With the cargo feature `fault-injection`, [`point`] aborts the process
//! when it reaches the crash point named in the environment variable
//! `COMESG_CRASH_AT` (`NAME`, or `NAME@N` for its N-th visit), so a test can
//! kill a participant at an exact step of a protocol rather than hope a
//! random kill lands there. Without the feature it compiles to nothing.
//!
//! | point | step |
//! |---|---|
//! | `channel.send.claimed` | a sender has claimed a slot, not yet published |
//! | `channel.send.published` | the message is published, sleeping receivers not yet checked for |
//! | `channel.recv.claimed` | a receiver has claimed a message, not yet released the slot |
//! | `pipe.send.claimed` | a sender has claimed a receiver's offer, not yet copied |
//! | `pipe.send.filled` | the message is in the receiver's buffer, not yet taken |
//! | `pipe.recv.filled` | a receiver sees its offer filled, not yet taken it |
//! | `service.call.posted` | a caller has posted a request, not yet sent its ticket |
//! | `service.worker.running` | a worker has claimed a call, not yet answered |
//! | `carrier.recv.taken` | a COCARRIER receiver holds a message (its descriptor taken off the delivery queue), not yet released |
//! | `carrier.recv.released` | the receiver has queued the message's release, the kernel has not yet collected it |
//! | `comutex.lock.acquired` | a locker holds the comutex, its critical section not yet begun |
//! | `comutex.unlock.entered` | the critical section is done, the unlock not yet made |
//! | `comutex.consistent.entered` | a locker that found the owner dead is recovering, not yet marked the state consistent |
//! | `control.request.sent` | a request is sent to the microkernel, its reply not yet read (a COCARRIER send: the kernel is about to read the sender's memory) |

/// Aborts the process if `name` is the crash point `COMESG_CRASH_AT` names
/// (and this is the visit it names). Inlined to one load and a branch when
/// no crash point is named: the data path passes several per message, and
/// the `comesg` binary (benchmarks included) is built with the feature.
#[cfg(feature = "fault-injection")]
#[inline(always)]
pub fn point(name: &'static str) {
    use std::sync::atomic::Ordering;
    if STATE.load(Ordering::Relaxed) != NONE_NAMED {
        armed_point(name);
    }
}

/// [`point`]'s state: [`UNREAD`] until the environment is read, then
/// [`NONE_NAMED`] or [`ONE_NAMED`].
#[cfg(feature = "fault-injection")]
static STATE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(UNREAD);
#[cfg(feature = "fault-injection")]
const UNREAD: u8 = 0;
#[cfg(feature = "fault-injection")]
const NONE_NAMED: u8 = 1;
#[cfg(feature = "fault-injection")]
const ONE_NAMED: u8 = 2;

#[cfg(feature = "fault-injection")]
#[cold]
#[inline(never)]
fn armed_point(name: &'static str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static VISITS: AtomicU64 = AtomicU64::new(0);
    let target = TARGET.get_or_init(|| {
        let v = std::env::var("COMESG_CRASH_AT").ok()?;
        Some(match v.split_once('@') {
            Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1)),
            None => (v, 1),
        })
    });
    STATE.store(if target.is_some() { ONE_NAMED } else { NONE_NAMED }, Ordering::Relaxed);
    if let Some((n, k)) = target {
        if n == name && VISITS.fetch_add(1, Ordering::SeqCst) + 1 == *k {
            eprintln!("comesg: crash point {name} reached: aborting");
            std::process::abort();
        }
    }
}

/// A crash point: nothing, without the `fault-injection` feature.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &'static str) {}
