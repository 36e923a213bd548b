//! Waiting on a COCHANNEL: spin first, then sleep on a futex.
//!
//! Waking a sleeping process costs about 300 times a spinning hand-off on
//! the machines this runs on, so a blocked operation first spins ([`Spin`]:
//! a sender retries, a receiver watches the next message's stamp), then
//! registers as a sleeper and waits on the other side's sequence word. A
//! sender or receiver that completes an operation checks the sleeper count
//! and only then makes the `futex` wake call: with nobody asleep the data
//! path makes no system call. The completing side has only a compiler
//! fence between its publication and that check; a sleeper forces the
//! barrier on it with `membarrier`, except before the first sleep of a
//! wait, which is a short nap instead (see `wait`).

use std::sync::atomic::Ordering::{Acquire, SeqCst};
use std::time::Instant;

use comesg_sys::futex::{self, Wake};

use super::ring::{RecvClaim, Ring, RingError, SendClaim, Side, Straight};
use super::slip::Slip;
use crate::spin::Spin;

/// Spin rounds after which a waiting receiver prefetches the next message's
/// data line, so that when the message comes its data arrives alongside its
/// stamp rather than after it (about a fifth off a 64-byte round trip). Not
/// from the first round: a receiver that trails a streaming sender by a
/// message or two would pull each line away from the sender mid-write.
const PREFETCH_AFTER: u32 = 8;

/// Longest sleep without the heavy barrier: the first sleep of a wait, and
/// every sleep when the kernel refuses `membarrier`.
const NAP: std::time::Duration = std::time::Duration::from_millis(1);

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
#[inline]
pub fn claim_send(ring: &Ring, holder: u32, deadline: Option<Instant>) -> Result<SendClaim, WaitError> {
    claim_send_by(ring, holder, || deadline)
}

/// Like [`claim_send`], working the deadline out only if the ring is full:
/// a deadline that needs the clock then costs nothing when no wait is
/// needed (`Instant::now` takes 25-40 ns on the VMs this runs on).
#[inline]
pub fn claim_send_by(
    ring: &Ring,
    holder: u32,
    deadline: impl FnOnce() -> Option<Instant>,
) -> Result<SendClaim, WaitError> {
    match ring.try_claim_send(holder) {
        Err(RingError::Full) => {
            wait(ring, Side::Send, holder, deadline(), RingError::Full, || ring.try_claim_send(holder))
        }
        r => r.map_err(WaitError::Ring),
    }
}

/// Claims a message, waiting while the ring is empty.
#[inline]
pub fn claim_recv(ring: &Ring, holder: u32, deadline: Option<Instant>) -> Result<RecvClaim, WaitError> {
    claim_recv_by(ring, holder, || deadline)
}

/// Like [`claim_recv`], working the deadline out only if the ring is empty
/// (see [`claim_send_by`]).
#[inline]
pub fn claim_recv_by(
    ring: &Ring,
    holder: u32,
    deadline: impl FnOnce() -> Option<Instant>,
) -> Result<RecvClaim, WaitError> {
    match ring.try_claim_recv(holder) {
        Err(RingError::Empty) => {
            wait(ring, Side::Recv, holder, deadline(), RingError::Empty, || ring.try_claim_recv(holder))
        }
        r => r.map_err(WaitError::Ring),
    }
}

/// Times a lone receiver goes round waiting for a message and taking it
/// before it leaves the rest to the general path. Each round is a message
/// seen and then not found where it was, which only a hostile sender
/// rewriting stamps can cause.
const STRAIGHT_ROUNDS: u32 = 16;

/// Receives one message into `buf`, waiting while the ring is empty;
/// returns its length (truncated into `buf` as [`Ring::try_recv`] does).
///
/// A lone receiver (see `lease`) waits for the next message without
/// claiming it, then claims, copies and releases it in one inlined piece
/// ([`Ring::try_recv_sole`]); everyone else claims through
/// [`claim_recv`]. The claim made inside the waiting loop came back to the
/// caller through memory and calls: between two processes, the 64 B round
/// trip was tens of nanoseconds longer that way (see docs/cochannel.md).
#[inline]
pub fn recv(ring: &Ring, holder: u32, buf: &mut [u8], deadline: Option<Instant>) -> Result<usize, WaitError> {
    recv_by(ring, holder, buf, || deadline)
}

/// Like [`recv`], working the deadline out only if the ring is empty (see
/// [`claim_send_by`]).
#[inline]
pub fn recv_by(
    ring: &Ring,
    holder: u32,
    buf: &mut [u8],
    deadline: impl FnOnce() -> Option<Instant>,
) -> Result<usize, WaitError> {
    let mut deadline = Lazy::new(deadline);
    for _ in 0..STRAIGHT_ROUNDS {
        match ring.try_recv_sole(holder, buf) {
            Straight::Done(r) => return r.map_err(WaitError::Ring),
            Straight::Wait => await_message(ring, holder, deadline.get())?,
            Straight::General => break,
        }
    }
    let claim = claim_recv_by(ring, holder, || deadline.get())?;
    let len = claim.len();
    let n = len.min(buf.len());
    buf[..n].copy_from_slice(&ring.slot(&claim)[..n]);
    ring.release(claim)?;
    Ok(len)
}

/// Sends one message, waiting while the ring is full. A lone sender with a
/// free slot sends in one inlined piece ([`Ring::try_send_sole`]).
#[inline]
pub fn send(ring: &Ring, holder: u32, msg: &[u8], deadline: Option<Instant>) -> Result<(), WaitError> {
    if let Some(r) = ring.try_send_sole(holder, msg) {
        return r.map_err(WaitError::Ring);
    }
    // Before claiming: a claimed slot left unpublished would stop the
    // receivers there until this holder is repaired.
    let slot_size = ring.geometry().slot_size;
    if msg.len() > slot_size as usize {
        return Err(WaitError::Ring(RingError::TooLong { len: msg.len(), slot_size }));
    }
    let mut claim = claim_send(ring, holder, deadline)?;
    ring.write(&mut claim, msg)?;
    Ok(ring.publish(claim, msg.len())?)
}

/// A deadline worked out on first use.
struct Lazy<F> {
    f: Option<F>,
    deadline: Option<Instant>,
}

impl<F: FnOnce() -> Option<Instant>> Lazy<F> {
    fn new(f: F) -> Lazy<F> {
        Lazy { f: Some(f), deadline: None }
    }

    fn get(&mut self) -> Option<Instant> {
        if let Some(f) = self.f.take() {
            self.deadline = f();
        }
        self.deadline
    }
}

/// Waits until the next position to receive shows something other than
/// the previous lap (a message, as a rule), without claiming it: the
/// spin, watch, slip and sleep of [`claim_recv`]'s wait.
fn await_message(ring: &Ring, holder: u32, deadline: Option<Instant>) -> Result<(), WaitError> {
    wait(ring, Side::Recv, holder, deadline, RingError::Empty, || match ring.next_recv_watch() {
        Some(_) => Err(RingError::Empty),
        None => Ok(()),
    })
}

#[cold]
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
    // The callers made the first attempt already (outside this cold path).
    let slip = Slip::begin(ring, side, deadline);
    let mut spin = Spin::new(deadline);
    'spin: loop {
        // A receiver whose next stamp still shows the previous lap watches
        // only that word, one load a round, until it changes; then (or at
        // once, when the stamp shows anything else) it makes the full
        // attempt, as a sender does every round. A round of the full
        // attempt is some tens of instructions, and a hand-off is seen that
        // much later: with the watch, in-process round trips went from
        // 1.73-2.24x to 1.55-1.86x the spin ping-pong (seven interleaved
        // pairs of `ring_pingpong` runs, lower in each).
        let watch = if side == Side::Recv { ring.next_recv_watch() } else { None };
        match watch {
            Some((stamp, seen, data)) => {
                while stamp.load(Acquire) == seen {
                    if spin.rounds() >= PREFETCH_AFTER {
                        comesg_sys::hint::prefetch::<false>(data);
                    }
                    if !spin.round() {
                        break 'spin;
                    }
                }
            }
            None if !spin.round() => break,
            None => {}
        }
        if let Some(r) = again(attempt()) {
            slip.end(Some(spin.rounds()));
            return r;
        }
        if ring.lease_busy(side) {
            // Each attempt spun already, waiting for a holder to leave its
            // claim: nap instead (below).
            break;
        }
    }
    slip.end(None);
    // Sleep. A sender sleeps on the receivers' sequence word and the other
    // way round; each registers in its own segment.
    let (seq, sleepers) = match side {
        Side::Send => (ring.space_seq(), ring.send_waiters()),
        Side::Recv => (ring.data_seq(), ring.recv_waiters()),
    };
    let mine = ring.rec_waiting(side, holder);
    let mut first = true;
    loop {
        // The shared count first and our own record second (and the other
        // way round on the way out): if we die between the two, repair
        // subtracts what the record says, which is then at most what we
        // added. The count may stay one too high, which costs spare wake-ups;
        // one too low would strand another sleeper.
        sleepers.fetch_add(1, SeqCst);
        mine.fetch_add(1, SeqCst);
        let seen = seq.load(SeqCst);
        // Force a barrier on every process on the fast side, so that a
        // message published before it is seen by the re-check below and one
        // published after it sees us registered. If the kernel refuses,
        // sleep in short naps instead of trusting the wake-up.
        //
        // Not before the first sleep of a wait, which is a nap instead: the
        // barrier interrupts every CPU running a registered process, and on
        // a virtual machine it takes 18-20 us whenever another CPU is busy,
        // paid at every hand-off of a request/reply exchange slower than the
        // spin. Without it a wake-up can be missed only if the message's
        // publication was still in its sender's store buffer (nanoseconds)
        // when we registered; the nap bounds what that costs.
        let trusted = !first && comesg_sys::barrier::heavy();
        first = false;
        let result = again(attempt());
        let mut timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        // Nor while claims wait for a holder to leave a claim it made
        // under a lease (see `lease`): nobody wakes us when it does. Read
        // after the attempt, which may have found it so.
        if !trusted || ring.lease_busy(side) {
            timeout = Some(timeout.map_or(NAP, |t| t.min(NAP)));
        }
        let woke = match (&result, timeout) {
            (None, Some(t)) if t.is_zero() => Wake::TimedOut,
            (None, t) => futex::wait(seq, seen, t),
            (Some(_), _) => Wake::Retry,
        };
        mine.fetch_sub(1, SeqCst);
        sleepers.fetch_sub(1, SeqCst);
        if let Some(r) = result {
            return r;
        }
        if woke == Wake::TimedOut && deadline.is_some_and(|d| Instant::now() >= d) {
            // A wake-up may have raced the timeout: take the message (or
            // slot) it was for rather than strand it.
            return again(attempt()).unwrap_or(Err(WaitError::TimedOut));
        }
        // Woken: most likely for us, so try before registering again. The
        // barrier is only needed on the way to sleep, and it interrupts
        // every CPU running a registered process (an IPI each, costly in a
        // virtual machine).
        if let Some(r) = again(attempt()) {
            return r;
        }
    }
}
