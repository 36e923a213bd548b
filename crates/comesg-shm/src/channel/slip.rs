//! Temporal slipping: a streaming receiver (or a sender on a full ring)
//! keeps some distance from the other side instead of trailing it by one
//! message.
//!
//! Sender and receiver of a 64-byte stream run at nearly the same speed
//! (16-20 ns a message each on the machines this runs on), so the ring's
//! depth wanders, and once it is near empty it tends to stay there: the
//! receiver then reads every slot's lines while the sender is still
//! writing them, and each side waits on the other core for every message.
//! A two-thread stream traced every 65,536 messages ran at 35-42 M msgs/s
//! while the depth stayed above about 30, and at 12-25 M for as long as it
//! stayed near zero, which could be the whole run. The same holds at a
//! full ring, with the sender trailing the receiver.
//!
//! So a side that has to wait while messages are streaming first waits
//! for the position `distance` past its next one to become ready (without
//! touching the lines in between), then works through the whole run
//! uncontended; FastForward (Giacomoni et al., PPoPP 2008) calls this
//! temporal slipping. Streaming is recognised from the previous wait of
//! this process on this side: it ended after a few rounds and followed
//! several messages handled without waiting. A request/response exchange
//! waits before every message, so it never slips. A slip gives up as soon
//! as the other side's counter stops moving between two looks
//! (every [`PAUSES_PER_CLOCK`] pauses, about 200 ns), and in any case after
//! [`NS_PER_MESSAGE`] for each position of the distance, the pace of a
//! sender too slow for the contention to matter. A stream that stops or
//! pauses mid-slip therefore delays the messages already sent by at most
//! two such looks, and the next wait does not slip. The state is the
//! process's, shared by its threads on the ring (so one thread's verdict
//! can make another slip, for as long as the other side keeps moving);
//! a ring whose waits should never slip, such as a service's request
//! queue, turns it off ([`Ring::set_slipping`]).

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::ring::{Ring, Side};

/// Most positions a slipping side stays behind (a quarter of the ring at
/// most).
pub const MAX_DISTANCE: u64 = 128;

/// A slip gives up after this long per position of its distance.
pub const NS_PER_MESSAGE: u64 = 50;

/// A wait that succeeds within this many spin rounds saw the other side
/// hand over at once: it is streaming.
const SHORT_ROUNDS: u32 = 16;

/// Positions handled since the previous wait that mark a stream (a
/// request/response exchange waits at every position).
const MIN_RUN: u64 = 4;

/// Pauses between two looks at the clock and at the other side's
/// progress while slipping (a pause takes 10-40 ns on recent x86).
pub const PAUSES_PER_CLOCK: u32 = 16;

/// One wait's slipping: decided from the previous wait when the wait
/// begins, recorded when it ends.
pub(super) struct Slip<'a> {
    ring: &'a Ring,
    side: Side,
    /// The next position when this wait began.
    start: u64,
    /// Positions handled since the previous wait of this side.
    run: u64,
    /// This wait slipped and the other side did not keep up.
    gave_up: bool,
    /// Whether the state stored when this wait began says to slip.
    slipping: bool,
}

impl<'a> Slip<'a> {
    /// Begins a wait of `side`, slipping first if the previous wait found
    /// a stream.
    pub(super) fn begin(ring: &'a Ring, side: Side, deadline: Option<Instant>) -> Slip<'a> {
        let state = ring.slip_state(side).load(Relaxed);
        let start = ring.next_position(side);
        // No previous wait (state 0): no run to judge by.
        let run = if state == 0 { 0 } else { start.wrapping_sub(state >> 1) };
        let distance = Self::distance(ring);
        let may = ring.may_slip() && distance >= MIN_RUN;
        let mut slip = Slip { ring, side, start, run, gave_up: false, slipping: may && state & 1 == 1 };
        if slip.slipping {
            slip.gave_up = !slip.slip(distance, deadline);
            slip.slipping = !slip.gave_up;
        }
        // Stored now, while nothing has arrived: `end` stores again only
        // when its verdict differs, which in a request/response exchange
        // it never does. Stored at the end of every wait instead, it made
        // the in-process 64 B round trip 8-27 ns slower than without
        // slipping (medians over paired runs); stored here, the difference
        // is within the noise.
        ring.slip_state(side).store(start << 1 | slip.slipping as u64, Relaxed);
        slip
    }

    fn distance(ring: &Ring) -> u64 {
        MAX_DISTANCE.min(ring.geometry().slots as u64 / 4)
    }

    /// Waits until the position `distance` ahead is ready; false if the
    /// other side stopped moving, or kept too slow a pace, or the deadline
    /// came.
    fn slip(&self, distance: u64, deadline: Option<Instant>) -> bool {
        let limit = Duration::from_nanos(distance * NS_PER_MESSAGE);
        let began = Instant::now();
        let mut other = self.ring.other_position(self.side);
        let mut pauses = 0u32;
        loop {
            if self.ring.ready_ahead(self.side, distance) {
                return true;
            }
            std::hint::spin_loop();
            pauses = pauses.wrapping_add(1);
            if pauses.is_multiple_of(PAUSES_PER_CLOCK) {
                let now = Instant::now();
                let moved = self.ring.other_position(self.side);
                if moved == other || now.duration_since(began) >= limit || deadline.is_some_and(|d| now >= d) {
                    return false;
                }
                other = moved;
            }
        }
    }

    /// Ends the wait after `rounds` spin rounds (`None`: it went to sleep),
    /// deciding whether the next wait slips.
    pub(super) fn end(self, rounds: Option<u32>) {
        // A sender waits only at a full ring, which a request/response
        // exchange never fills, so it needs no run to tell a stream; at a
        // full ring a streaming sender gets one slot a wait.
        let run = self.side == Side::Send || self.run >= MIN_RUN;
        let streaming = self.ring.may_slip() && !self.gave_up && rounds.is_some_and(|r| r <= SHORT_ROUNDS) && run;
        if streaming != self.slipping {
            self.ring.slip_state(self.side).store(self.start << 1 | streaming as u64, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Geometry;

    /// A fresh 64-slot ring: slips keep 16 positions of distance.
    fn ring() -> Ring {
        ring_of(Geometry { slot_size: 64, slots: 64, max_holders: 2 })
    }

    fn ring_of(geo: Geometry) -> Ring {
        crate::channel::testing::views(geo, 1).remove(0)
    }

    fn pass(ring: &Ring, n: usize) {
        for _ in 0..n {
            ring.try_send(0, b"m").unwrap();
            ring.try_recv(1, &mut [0u8; 64]).unwrap();
        }
    }

    fn slipping(ring: &Ring, side: Side) -> bool {
        ring.slip_state(side).load(Relaxed) & 1 == 1
    }

    #[test]
    fn a_receiver_slips_after_a_stream_and_never_in_request_response() {
        let ring = ring();
        // Request/response: one message between waits, each handed over at
        // once. Never a slip.
        for _ in 0..10 {
            Slip::begin(&ring, Side::Recv, None).end(Some(0));
            pass(&ring, 1);
            assert!(!slipping(&ring, Side::Recv));
        }
        // Several messages without a wait, then one that came within a few
        // rounds: a stream.
        pass(&ring, 5);
        Slip::begin(&ring, Side::Recv, None).end(Some(SHORT_ROUNDS));
        assert!(slipping(&ring, Side::Recv));
        // A wait that went on spinning, or went to sleep, ends it, even
        // after a slip that the sender kept up with.
        for ending in [Some(SHORT_ROUNDS + 1), None] {
            publish_ahead(&ring);
            let slip = Slip::begin(&ring, Side::Recv, None);
            assert!(!slip.gave_up && slip.slipping);
            slip.end(ending);
            assert!(!slipping(&ring, Side::Recv), "{ending:?}");
            // Working through the stretch, then a quick wait: a stream again.
            drain(&ring);
            Slip::begin(&ring, Side::Recv, None).end(Some(SHORT_ROUNDS));
            assert!(slipping(&ring, Side::Recv));
        }
    }

    /// Publishes messages up to the slipping distance past the next one.
    fn publish_ahead(ring: &Ring) {
        for _ in 0..=Slip::distance(ring) {
            ring.try_send(0, b"m").unwrap();
        }
    }

    fn drain(ring: &Ring) {
        while ring.try_recv(1, &mut [0u8; 64]).is_ok() {}
    }

    #[test]
    fn a_ring_that_may_not_slip_never_does() {
        let mut ring = ring();
        ring.set_slipping(false);
        ring.slip_state(Side::Recv).store(1, Relaxed);
        // Nothing is sent: a slip would give up, so none was made.
        let slip = Slip::begin(&ring, Side::Recv, None);
        assert!(!slip.gave_up && !slip.slipping);
    }

    #[test]
    fn a_slipping_stream_delivers_every_message_once_in_order() {
        let geo = Geometry { slot_size: 64, slots: 256, max_holders: 2 };
        let ring = std::sync::Arc::new(ring_of(geo));
        const N: u64 = 300_000;
        let tx = ring.clone();
        let sender = std::thread::spawn(move || {
            for k in 0..N {
                let mut c = crate::channel::blocking::claim_send(&tx, 0, None).unwrap();
                tx.write(&mut c, &k.to_le_bytes()).unwrap();
                tx.publish(c, 8).unwrap();
            }
        });
        for k in 0..N {
            let c = crate::channel::blocking::claim_recv(&ring, 1, None).unwrap();
            assert_eq!(ring.slot(&c), k.to_le_bytes());
            ring.release(c).unwrap();
        }
        sender.join().unwrap();
        assert!(ring.try_recv(1, &mut [0u8; 64]).is_err());
    }

    #[test]
    fn a_slip_waits_for_the_position_ahead_and_gives_up_when_it_does_not_come() {
        let ring = ring();
        let distance = Slip::distance(&ring);
        assert_eq!(distance, 16);
        Slip::begin(&ring, Side::Recv, None).end(Some(0));
        pass(&ring, 5);
        Slip::begin(&ring, Side::Recv, None).end(Some(0));
        assert!(slipping(&ring, Side::Recv));
        // Nothing more is sent: the slip gives up, and the next wait does
        // not slip.
        let slip = Slip::begin(&ring, Side::Recv, None);
        assert!(slip.gave_up);
        slip.end(Some(0));
        assert!(!slipping(&ring, Side::Recv));
        // With the position `distance` ahead published, it returns at once.
        pass(&ring, 5);
        Slip::begin(&ring, Side::Recv, None).end(Some(0));
        publish_ahead(&ring);
        let slip = Slip::begin(&ring, Side::Recv, None);
        assert!(!slip.gave_up);
        slip.end(Some(0));
        // Its own verdict: no run since the previous wait, so not a stream.
        assert!(!slipping(&ring, Side::Recv));
        // The receiver works through the stretch; the quick wait after it
        // marks a stream again.
        drain(&ring);
        ring.try_send(0, b"m").unwrap();
        Slip::begin(&ring, Side::Recv, None).end(Some(0));
        assert!(slipping(&ring, Side::Recv));
    }

    #[test]
    fn a_sender_at_a_full_ring_slips_until_a_stretch_is_free() {
        let ring = ring();
        // A sender waits only at a full ring: a quick wait means a stream.
        Slip::begin(&ring, Side::Send, None).end(Some(1));
        assert!(slipping(&ring, Side::Send));
        while ring.try_send(0, b"m").is_ok() {}
        let slip = Slip::begin(&ring, Side::Send, None);
        assert!(slip.gave_up, "nothing was received");
        slip.end(Some(1));
        Slip::begin(&ring, Side::Send, None).end(Some(1));
        for _ in 0..=Slip::distance(&ring) {
            ring.try_recv(1, &mut [0u8; 64]).unwrap();
        }
        assert!(!Slip::begin(&ring, Side::Send, None).gave_up);
    }

    #[test]
    fn a_slip_stops_at_the_deadline() {
        let ring = ring();
        ring.slip_state(Side::Recv).store(1, Relaxed);
        let slip = Slip::begin(&ring, Side::Recv, Some(Instant::now()));
        assert!(slip.gave_up);
    }
}
