//! Waiting on a COCHANNEL: spin first, then sleep on a futex.
//!
//! Waking a sleeping process costs about 300 times a spinning hand-off on
//! the machines this runs on, so a blocked operation first retries in a busy
//! loop for [`SPIN`], then registers as a sleeper and waits on the other
//! side's sequence word. A sender or receiver that completes an operation
//! checks the sleeper count (after a sequentially consistent write, so the
//! check and the sleeper's registration cannot both miss each other) and
//! only then makes the `futex` wake call: with nobody asleep the data path
//! makes no system call.

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use comesg_sys::futex::{self, Wake};

use super::ring::{RecvClaim, Ring, RingError, SendClaim, Side};

/// How long a blocked operation busy-waits before it sleeps.
pub const SPIN: Duration = Duration::from_micros(20);

/// Why a waiting operation gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The deadline passed.
    #[error("timed out")]
    TimedOut,
    /// The ring refused the operation.
    #[error(transparent)]
    Ring(#[from] RingError),
}

/// Claims a slot for sending, waiting while the ring is full.
pub fn claim_send(
    ring: &Ring,
    holder: u32,
    deadline: Option<Instant>,
) -> Result<SendClaim, WaitError> {
    wait(ring, Side::Send, holder, deadline, RingError::Full, || {
        ring.try_claim_send(holder)
    })
}

/// Claims a message, waiting while the ring is empty.
pub fn claim_recv(
    ring: &Ring,
    holder: u32,
    deadline: Option<Instant>,
) -> Result<RecvClaim, WaitError> {
    wait(ring, Side::Recv, holder, deadline, RingError::Empty, || {
        ring.try_claim_recv(holder)
    })
}

fn wait<T>(
    ring: &Ring,
    side: Side,
    holder: u32,
    deadline: Option<Instant>,
    would_block: RingError,
    mut attempt: impl FnMut() -> Result<T, RingError>,
) -> Result<T, WaitError> {
    let again = |r: Result<T, RingError>| -> Option<Result<T, WaitError>> {
        match r {
            Err(e) if e == would_block => None,
            r => Some(r.map_err(WaitError::Ring)),
        }
    };
    if let Some(r) = again(attempt()) {
        return r;
    }
    let start = Instant::now();
    let spin_until = start + SPIN;
    let mut n = 0u32;
    loop {
        std::hint::spin_loop();
        if let Some(r) = again(attempt()) {
            return r;
        }
        n += 1;
        if n % 16 == 0 {
            let now = Instant::now();
            if now >= spin_until || deadline.is_some_and(|d| now >= d) {
                break;
            }
        }
    }
    // Sleep. A sender sleeps on the receivers' sequence word and the other
    // way round; each registers in its own segment.
    let (seq, sleepers) = match side {
        Side::Send => (ring.space_seq(), ring.send_waiters()),
        Side::Recv => (ring.data_seq(), ring.recv_waiters()),
    };
    let mine = ring.rec_waiting(side, holder);
    loop {
        sleepers.fetch_add(1, SeqCst);
        mine.fetch_add(1, SeqCst);
        let seen = seq.load(SeqCst);
        let result = again(attempt());
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let woke = match (&result, timeout) {
            (None, Some(t)) if t.is_zero() => Wake::TimedOut,
            (None, t) => futex::wait(seq, seen, t),
            (Some(_), _) => Wake::Retry,
        };
        sleepers.fetch_sub(1, SeqCst);
        mine.fetch_sub(1, SeqCst);
        if let Some(r) = result {
            return r;
        }
        if woke == Wake::TimedOut {
            // A wake-up may have raced the timeout: take the message (or
            // slot) it was for rather than strand it.
            return again(attempt()).unwrap_or(Err(WaitError::TimedOut));
        }
    }
}
