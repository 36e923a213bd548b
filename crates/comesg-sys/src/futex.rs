//! Process-shared futex wait and wake on a 32-bit word in shared memory.
//!
//! # References
//! - [`futex(2)`](https://man7.org/linux/man-pages/man2/futex.2.html)

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::io::Errno;
use rustix::thread::futex;

/// Why [`wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Woken, interrupted by a signal, or the word no longer held the expected
    /// value: the caller re-checks its condition.
    Retry,
    /// The timeout elapsed.
    TimedOut,
}

/// `futex(uaddr, FUTEX_WAIT, expected, timeout)` without `FUTEX_PRIVATE_FLAG`,
/// so that waiters and wakers in different processes meet on the same word.
///
/// Works on a read-only mapping: waiting needs only read access.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Wake {
    let ts = timeout.map(|d| rustix::time::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
        Err(Errno::TIMEDOUT) => Wake::TimedOut,
        _ => Wake::Retry,
    }
}

/// `futex(uaddr, FUTEX_WAKE, count)`: wakes up to `count` waiters on `word`.
/// Returns how many were woken.
pub fn wake(word: &AtomicU32, count: u32) -> usize {
    futex::wake(word, futex::Flags::empty(), count).unwrap_or(0)
}

/// Wakes every waiter on `word`.
pub fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}
