//! Spinning before sleeping: how long a waiter spins, how it polls, and when
//! it gives its CPU way.
//!
//! Waking a sleeping process costs hundreds of times a spinning hand-off, so
//! a waiter spins first; but a spinner holds its CPU, and where there are
//! more runnable threads than CPUs a thread woken onto that CPU waits behind
//! it. So a spin polls back to back at first, then pauses between polls,
//! then yields between polls, and stops after [`SPIN_TIME`] ([`Spin`]).
//! Loops that count their own rounds (COPIPE's) use [`pause`], which
//! yields the same way.

use std::time::{Duration, Instant};

/// How long a waiter spins before it sleeps. A time rather than a count of
/// rounds, so that a lighter round does not shorten it.
pub const SPIN_TIME: Duration = Duration::from_micros(50);

/// How long a spin holds its CPU before it calls `sched_yield` between
/// polls (counted from the end of the tight rounds). With more runnable
/// threads than CPUs, a thread woken onto a spinner's CPU otherwise waits
/// for the spinner's time slice to end: between two bridges on a 2-CPU
/// machine, every hop of a round trip waited so, 50-80 us each (`perf
/// sched timehist`), and the round trip went from 2.1-2.8x to 1.5-2.2x
/// plain Zenoh's when spinners yielded. With nobody waiting for the CPU the
/// call returns at once.
pub const YIELD_AFTER: Duration = Duration::from_micros(2);

/// Rounds that poll without a `pause` in between, before the rest pause
/// between polls.
pub const TIGHT_ROUNDS: u32 = 256;

/// Rounds of a counted spin ([`pause`]) before it starts to yield: a few
/// microseconds of `pause` instructions (their length differs between
/// CPUs, 10 to 50 ns).
pub const YIELD_ROUNDS: u32 = 256;

/// One round of a spin that counts its own rounds (`round` from 0): a
/// `pause`, and past [`YIELD_ROUNDS`] a `sched_yield` every 64 rounds, for
/// the reason given at [`YIELD_AFTER`]. Returns false, without pausing,
/// once `deadline` has passed (looked at every 64 rounds: a yield can cost
/// a time slice, so a spin of a fixed count could overshoot it).
#[inline]
pub fn pause(round: u32, deadline: Option<Instant>) -> bool {
    if round.is_multiple_of(64) {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        if round >= YIELD_ROUNDS {
            std::thread::yield_now();
        }
    }
    std::hint::spin_loop();
    true
}

/// Counts the rounds of a spinning wait and says when to stop.
pub struct Spin {
    n: u32,
    since: Option<Instant>,
    deadline: Option<Instant>,
}

impl Spin {
    /// A spin that also stops at `deadline`.
    pub fn new(deadline: Option<Instant>) -> Spin {
        Spin { n: 0, since: None, deadline }
    }

    /// Rounds so far.
    pub fn rounds(&self) -> u32 {
        self.n
    }

    /// Ends a round: pauses after the first [`TIGHT_ROUNDS`] (those poll
    /// back to back, so that a hand-off is seen sooner: measured, a 64 B
    /// round trip between two processes 250 -> 220 ns, one-way throughput
    /// unchanged), yields the CPU every 64 rounds once past
    /// [`YIELD_AFTER`], and returns false once [`SPIN_TIME`] or the
    /// deadline has passed. The clock is read every 64 rounds, and during
    /// the tight rounds only by a caller with a deadline.
    #[inline]
    pub fn round(&mut self) -> bool {
        self.n = self.n.wrapping_add(1);
        let tight = self.n <= TIGHT_ROUNDS;
        if !tight {
            std::hint::spin_loop();
        }
        if !self.n.is_multiple_of(64) || (tight && self.deadline.is_none()) {
            return true;
        }
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            return false;
        }
        if tight {
            return true;
        }
        let spun = now.duration_since(*self.since.get_or_insert(now));
        if spun >= YIELD_AFTER {
            std::thread::yield_now();
        }
        spun < SPIN_TIME
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rounds_until_stop(spin: &mut Spin) -> u32 {
        while spin.round() {}
        spin.n
    }

    #[test]
    fn spin_stops_after_its_time_not_before() {
        let t = Instant::now();
        let n = rounds_until_stop(&mut Spin::new(None));
        assert!(n > TIGHT_ROUNDS, "stopped during the tight rounds ({n})");
        assert!(t.elapsed() >= SPIN_TIME, "stopped after {:?}", t.elapsed());
    }

    #[test]
    fn spin_stops_at_a_passed_deadline_even_in_the_tight_rounds() {
        assert_eq!(rounds_until_stop(&mut Spin::new(Some(Instant::now()))), 64);
    }

    #[test]
    fn a_counted_spin_stops_at_a_passed_deadline_and_not_before() {
        assert!(!pause(64, Some(Instant::now())));
        assert!(pause(63, Some(Instant::now())), "the deadline is looked at every 64 rounds");
        assert!((0..1024).all(|r| pause(r, Some(Instant::now() + Duration::from_secs(3600)))));
        assert!((0..1024).all(|r| pause(r, None)));
    }

    #[test]
    fn spin_keeps_going_before_a_far_deadline() {
        let mut spin = Spin::new(Some(Instant::now() + Duration::from_secs(3600)));
        assert!((0..TIGHT_ROUNDS).all(|_| spin.round()));
    }
}
