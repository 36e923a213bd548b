//! The COCHANNEL ring: Vyukov's bounded MPMC queue (D. Vyukov, "Bounded MPMC
//! queue", 1024cores.net, 2010; crossbeam's `flavors/array.rs` is the best
//! known Rust rendering), reshaped for two trust domains and for crash repair.
//!
//! Vyukov keeps one sequence word per slot that both sides write. Here it is
//! split in two so that each side writes only its own segment:
//! - the **full stamp** (sender segment) says which position the slot holds;
//! - the **free stamp** (receiver segment) says which position may be
//!   written next.
//!
//! Both sides claim a slot by compare-and-swap **on a per-slot word**,
//! writing their holder index into it ([`stamp::claimed_at`]), and only then
//! advance the shared `tail`/`head` counter (any thread that sees a claimed
//! slot helps advance it). Senders claim on a **claim word** that only
//! senders touch, so the slot's full stamp, on which a waiting receiver
//! spins, is written exactly once per message, by a plain store; a
//! compare-and-swap there would have to wrest the line from the spinning
//! receiver first. Receivers claim on the free stamp itself (senders read
//! it only once per cache line of slots, see `Ring::known_free`).
//!
//! So at every instant the microkernel can tell which holder owns an
//! unfinished slot, and when a holder dies it finishes the slot for it: a
//! sender's claim becomes a `SKIP` stamp (receivers pass over it), a
//! receiver's claim frees the slot. Either counts as one lost message; no
//! message is ever delivered twice.
//!
//! The winner of a claim advances the counter with a plain store. A late store
//! can move the counter backwards, which is harmless: every position below
//! the true counter has a stamp that no claim accepts, so threads only help
//! it forward again.
//!
//! Every word read from shared memory is checked before use; a value no
//! honest peer can produce is reported as [`RingError::Corrupt`], and no
//! index ever leaves the mapped segment (indices are masked positions, never
//! values read from shared memory).
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

use comesg_sys::bell::Bell;
use comesg_sys::mapping::{Access, Mapping};

use super::geometry::{Geometry, LINE, SLOT_HEADER};
use super::lease::LocalLease;
use super::stamp::{self, decode_free, decode_full, Free, Full};

/// Which side of the channel a holder is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Writes messages (sender segment writable).
    Send,
    /// Reads messages (receiver segment writable).
    Recv,
}

/// What can go wrong with a ring operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// No message is ready.
    #[error("no message is ready")]
    Empty,
    /// Every slot holds a message not yet received.
    #[error("every slot is in use")]
    Full,
    /// The message does not fit a slot.
    #[error("message of {len} bytes exceeds the {slot_size}-byte slot")]
    TooLong {
        /// Length asked for.
        len: usize,
        /// Slot size of the channel.
        slot_size: u32,
    },
    /// This mapping of the ring lacks write access to the side needed.
    #[error("this handle has no right to {0:?} on this channel")]
    NoRight(Side),
    /// Shared state holds a value that no honest peer writes.
    #[error("channel shared state is corrupt: {0}")]
    Corrupt(&'static str),
}

/// A sender's claim on a slot, to be published or cancelled.
#[derive(Debug)]
pub struct SendClaim {
    pos: u64,
    index: usize,
    holder: u32,
}

/// A receiver's claim on a slot holding a message, to be released.
#[derive(Debug)]
pub struct RecvClaim {
    pos: u64,
    index: usize,
    holder: u32,
    len: usize,
}

impl RecvClaim {
    /// Length of the message in the slot.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Counters read from the ring (shared memory; approximate under races).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Next position a sender claims.
    pub tail: u64,
    /// Next position a receiver claims.
    pub head: u64,
    /// Messages sent and not yet received (`tail - head`, clamped).
    pub depth: u64,
}

/// Counters of one holder record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HolderCounters {
    /// Messages sent or received through this holder.
    pub msgs: u64,
    /// Payload bytes.
    pub bytes: u64,
}

/// Most consecutive failed attempts before an operation calls the ring
/// corrupt. Honest contention never comes close.
const MIN_ATTEMPTS: u64 = 1 << 16;

/// One mapping of a COCHANNEL's two segments.
#[derive(Debug)]
pub struct Ring {
    geo: Geometry,
    s: Mapping,
    r: Mapping,
    cap: u64,
    mask: u64,
    stride: usize,
    // Offsets and rights computed once: the data path reads them per call.
    slots_off: usize,
    claims_off: usize,
    free_off: usize,
    can_send: bool,
    can_recv: bool,
    /// Positions this process has seen free, packed as `end << 8 | count`:
    /// `[end - count, end)`. Process-local memory, not shared.
    free_hint: OwnLine,
    /// Each side's slipping state in this process (see `slip`), senders'
    /// first; written when a wait begins and when its verdict changes.
    /// Process-local, not shared.
    slip: SlipLine,
    /// Whether waits on this mapping may slip (see [`Ring::set_slipping`]).
    may_slip: bool,
    /// This process's view of the sole holders' leases (see `lease`).
    lease: LocalLease,
    /// The port's bell, rung for pollers (see `readiness`).
    bell: Option<Bell>,
}

/// A word on a cache line of its own. The free hint is written by a
/// sending thread while threads of the same process that receive through
/// the same handle read the ring's other fields on every call: sharing
/// their line, each hint update cost them a miss.
#[derive(Debug)]
#[repr(align(64))]
struct OwnLine(AtomicU64);

/// The two slipping states, on a line apart from the free hint, which
/// every send reads.
#[derive(Debug)]
#[repr(align(64))]
struct SlipLine([AtomicU64; 2]);

/// Bits of the free hint that count positions (see `Ring::known_free`).
const HINT_COUNT_BITS: u32 = 8;
const HINT_MAX_COUNT: u64 = (1 << HINT_COUNT_BITS) - 1;

/// Free stamps per cache line.
const FREE_PER_LINE: u64 = (LINE / 8) as u64;

pub(super) enum SendStep {
    Claim(u64),
    Full,
    Advance,
    Reload,
}

pub(super) enum RecvStep {
    Claim { skip: bool },
    Empty,
    Advance,
    Reload,
}

/// What a lone holder's one-piece operation found (see
/// [`Ring::try_recv_sole`]).
#[derive(Debug)]
pub enum Straight<T> {
    /// Done, one way or the other.
    Done(T),
    /// Nothing to take yet: the ring is empty the way a running ring is.
    /// Wait for the next message (as [`super::blocking::recv`] does) and
    /// try again.
    Wait,
    /// Not this path's case (no lease, another thread, a skipped or odd
    /// slot): take the general one, which sorts every case out.
    General,
}

impl Ring {
    /// Wraps the two mappings of a channel of geometry `geo`.
    pub fn new(geo: Geometry, sender_seg: Mapping, receiver_seg: Mapping) -> Result<Ring, RingError> {
        geo.validate().map_err(|_| RingError::Corrupt("invalid geometry"))?;
        if sender_seg.len() < geo.sender_segment_len() || receiver_seg.len() < geo.receiver_segment_len() {
            return Err(RingError::Corrupt("segment shorter than its geometry"));
        }
        comesg_sys::barrier::register();
        Ok(Ring {
            geo,
            can_send: sender_seg.access() == Access::ReadWrite,
            can_recv: receiver_seg.access() == Access::ReadWrite,
            s: sender_seg,
            r: receiver_seg,
            cap: geo.slots as u64,
            mask: geo.slots as u64 - 1,
            stride: geo.stride(),
            slots_off: geo.slots_offset(),
            claims_off: geo.claims_offset(),
            free_off: geo.free_offset(),
            free_hint: OwnLine(AtomicU64::new(0)),
            slip: SlipLine([AtomicU64::new(0), AtomicU64::new(0)]),
            may_slip: true,
            lease: LocalLease::default(),
            bell: None,
        })
    }

    /// Lets waits on this mapping slip behind a stream (the default) or
    /// not. A stream's rate gains from slipping, but a slip can hold back
    /// a message that is ready for a few hundred nanoseconds (see
    /// `channel::slip`): a queue of requests, where each one's latency
    /// matters more than the rate, turns it off.
    pub fn set_slipping(&mut self, on: bool) {
        self.may_slip = on;
    }

    /// Whether waits on this mapping may slip.
    #[inline]
    pub(super) fn may_slip(&self) -> bool {
        self.may_slip
    }

    /// Gives the ring the port's bell, rung whenever a message or a free
    /// slot appears while a poller is registered.
    pub fn set_bell(&mut self, bell: Bell) {
        self.bell = Some(bell);
    }

    /// The port's bell, if it has one.
    pub fn bell(&self) -> Option<&Bell> {
        self.bell.as_ref()
    }

    /// Rings the bell (pollers re-check).
    #[cold]
    pub(super) fn ring_bell(&self) {
        if let Some(b) = &self.bell {
            b.ring();
        }
    }

    /// Writes the initial state into fresh (zeroed) segments. Only the
    /// microkernel calls this, before handing the segments out.
    pub fn initialize(&self) -> Result<(), RingError> {
        self.writable(Side::Send)?;
        self.writable(Side::Recv)?;
        for i in 0..self.geo.slots as usize {
            // Position `i` (one lap before the first real position) is done.
            self.stamp(i).store(stamp::complete(i as u64), Relaxed);
            self.claim(i).store(stamp::complete(i as u64), Relaxed);
            self.free(i).store(self.cap + i as u64, Relaxed);
        }
        self.tail().store(self.cap, Relaxed);
        self.head().store(self.cap, Release);
        Ok(())
    }

    /// The sender and receiver segments' mappings, for inspection and for
    /// tests that play a hostile peer.
    pub fn segments(&self) -> (&Mapping, &Mapping) {
        (&self.s, &self.r)
    }

    /// The channel's geometry.
    pub fn geometry(&self) -> Geometry {
        self.geo
    }

    /// Whether this mapping may act as `side`.
    pub fn can(&self, side: Side) -> bool {
        self.writable(side).is_ok()
    }

    #[inline]
    pub(super) fn writable(&self, side: Side) -> Result<(), RingError> {
        let ok = match side {
            Side::Send => self.can_send,
            Side::Recv => self.can_recv,
        };
        if ok {
            Ok(())
        } else {
            Err(RingError::NoRight(side))
        }
    }

    // ---- word accessors: offsets come only from the trusted geometry ----

    #[inline]
    fn word64(m: &Mapping, off: usize) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= m.len());
        // SAFETY: `off` is 8-aligned and inside the mapping (asserted above and
        // guaranteed by the geometry checked in `new`); the mapping lives as
        // long as `&self`; AtomicU64 has no invalid bit patterns, and loads on
        // a read-only mapping are plain loads on x86-64 and aarch64.
        unsafe { &*(m.as_ptr().add(off) as *const AtomicU64) }
    }

    #[inline]
    fn word32(m: &Mapping, off: usize) -> &AtomicU32 {
        debug_assert!(off.is_multiple_of(4) && off + 4 <= m.len());
        // SAFETY: as in `word64`, for a 4-aligned 4-byte word.
        unsafe { &*(m.as_ptr().add(off) as *const AtomicU32) }
    }

    #[inline]
    pub(super) fn tail(&self) -> &AtomicU64 {
        Self::word64(&self.s, 0)
    }
    /// Futex word receivers sleep on (sender segment).
    #[inline]
    pub(crate) fn data_seq(&self) -> &AtomicU32 {
        Self::word32(&self.s, LINE)
    }
    #[inline]
    pub(crate) fn send_waiters(&self) -> &AtomicU32 {
        Self::word32(&self.s, LINE + 4)
    }
    /// Pollers waiting for a free slot (sender segment).
    #[inline]
    pub(super) fn send_pollers(&self) -> &AtomicU32 {
        Self::word32(&self.s, LINE + 8)
    }
    /// Live SEND holders and SEND attaches ever (sender segment, written
    /// by the microkernel).
    #[inline]
    pub(super) fn senders_live(&self) -> (&AtomicU32, &AtomicU32) {
        (Self::word32(&self.s, LINE + 12), Self::word32(&self.s, LINE + 16))
    }
    /// The side's lease word (see `lease`), in its own segment: written by
    /// the microkernel, read by every claim of that side.
    #[inline]
    pub(super) fn lease_word(&self, side: Side) -> &AtomicU64 {
        Self::word64(self.seg(side), LINE + 24)
    }
    #[inline]
    pub(super) fn local_lease(&self) -> &LocalLease {
        &self.lease
    }
    #[inline]
    pub(super) fn head(&self) -> &AtomicU64 {
        Self::word64(&self.r, 0)
    }
    /// Futex word senders sleep on (receiver segment).
    #[inline]
    pub(crate) fn space_seq(&self) -> &AtomicU32 {
        Self::word32(&self.r, LINE)
    }
    #[inline]
    pub(crate) fn recv_waiters(&self) -> &AtomicU32 {
        Self::word32(&self.r, LINE + 4)
    }
    /// Pollers waiting for a message (receiver segment).
    #[inline]
    pub(super) fn recv_pollers(&self) -> &AtomicU32 {
        Self::word32(&self.r, LINE + 8)
    }
    /// Live RECV holders and RECV attaches ever (receiver segment, written
    /// by the microkernel).
    #[inline]
    pub(super) fn receivers_live(&self) -> (&AtomicU32, &AtomicU32) {
        (Self::word32(&self.r, LINE + 12), Self::word32(&self.r, LINE + 16))
    }
    #[inline]
    fn record(&self, h: u32) -> usize {
        debug_assert!(h < self.geo.max_holders);
        2 * LINE + h as usize * super::geometry::HOLDER_RECORD
    }
    #[inline]
    fn seg(&self, side: Side) -> &Mapping {
        match side {
            Side::Send => &self.s,
            Side::Recv => &self.r,
        }
    }
    #[inline]
    fn rec_msgs(&self, side: Side, h: u32) -> &AtomicU64 {
        Self::word64(self.seg(side), self.record(h))
    }
    #[inline]
    fn rec_bytes(&self, side: Side, h: u32) -> &AtomicU64 {
        Self::word64(self.seg(side), self.record(h) + 8)
    }
    #[inline]
    pub(crate) fn rec_waiting(&self, side: Side, h: u32) -> &AtomicU32 {
        Self::word32(self.seg(side), self.record(h) + 16)
    }
    /// Poll registrations of holder `h` (so repair can forget a dead one's).
    #[inline]
    pub(super) fn rec_polling(&self, side: Side, h: u32) -> &AtomicU32 {
        Self::word32(self.seg(side), self.record(h) + 20)
    }
    /// Nonzero while holder `h` claims under its lease (see `lease`).
    #[inline]
    pub(super) fn rec_claiming(&self, side: Side, h: u32) -> &AtomicU32 {
        Self::word32(self.seg(side), self.record(h) + 24)
    }
    #[inline]
    fn header_off(&self, i: usize) -> usize {
        debug_assert!(i < self.geo.slots as usize);
        self.slots_off + i * self.stride
    }
    /// A slot's data follows its header line (see `geometry`).
    #[inline]
    fn slot_off(&self, i: usize) -> usize {
        self.header_off(i) + SLOT_HEADER
    }
    #[inline]
    pub(super) fn stamp(&self, i: usize) -> &AtomicU64 {
        Self::word64(&self.s, self.header_off(i))
    }
    #[inline]
    pub(super) fn claim(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < self.geo.slots as usize);
        Self::word64(&self.s, self.claims_off + i * 8)
    }
    #[inline]
    fn len_word(&self, i: usize) -> &AtomicU32 {
        Self::word32(&self.s, self.header_off(i) + 8)
    }
    #[inline]
    pub(super) fn free(&self, i: usize) -> &AtomicU64 {
        debug_assert!(i < self.geo.slots as usize);
        Self::word64(&self.r, self.free_off + i * 8)
    }
    #[inline]
    fn data_ptr(&self, i: usize) -> *mut u8 {
        let off = self.slot_off(i);
        debug_assert!(off + self.geo.slot_size as usize <= self.s.len());
        // SAFETY: the slot's data lies inside the sender mapping (geometry).
        unsafe { self.s.as_ptr().add(off) }
    }

    #[inline]
    pub(super) fn check_holder(&self, h: u32) -> Result<(), RingError> {
        if h < self.geo.max_holders {
            Ok(())
        } else {
            Err(RingError::Corrupt("holder index out of range"))
        }
    }

    // ---- sending ----

    /// Bound on consecutive steps of one claim: helping a counter forward
    /// past a whole lap of claimed or skipped slots is honest, so the bound
    /// grows with the ring.
    #[inline]
    pub(super) fn max_attempts(&self) -> u64 {
        MIN_ATTEMPTS + 4 * self.cap
    }

    /// Whether this process has already seen slot `pos % slots` free for
    /// `pos`. That stays true until some sender claims `pos`, and the claim's
    /// compare-and-swap on the claim word checks exactly that, so senders may
    /// skip reading the free stamp (a line the receivers keep writing) for
    /// positions they learnt about in bulk.
    #[inline]
    fn known_free(&self, pos: u64) -> bool {
        let h = self.free_hint.0.load(Acquire);
        let (end, count) = (h >> HINT_COUNT_BITS, h & HINT_MAX_COUNT);
        pos < end && pos >= end.wrapping_sub(count)
    }

    /// Remembers that the positions `[end - count, end)` were seen free.
    #[inline]
    fn remember_free(&self, end: u64, count: u64) {
        if end < 1 << (64 - HINT_COUNT_BITS) {
            self.free_hint.0.store(end << HINT_COUNT_BITS | count.min(HINT_MAX_COUNT), Release);
        }
    }

    /// Reads the free stamps after `pos` that share its cache line (already
    /// fetched) and remembers the run of them that are free for consecutive
    /// positions.
    fn learn_free(&self, pos: u64) {
        let mut n = 1;
        while n < FREE_PER_LINE {
            let p = pos.wrapping_add(n);
            let i = (p & self.mask) as usize;
            if i.is_multiple_of(FREE_PER_LINE as usize) || self.free(i).load(Acquire) != p {
                break;
            }
            n += 1;
        }
        self.remember_free(pos.wrapping_add(n), n);
    }

    /// Called by a sender that just claimed `pos`, the first slot of a line
    /// of free stamps: if it knows the rest of that line free, it reads the
    /// next line (prefetched a line earlier) and remembers its free run too,
    /// then prefetches the line after. So a sender reads free stamps a line
    /// before it needs them, never waiting on the receivers' core for them;
    /// and the receivers take each line back before they write it (see
    /// `try_claim_recv`), after the sender's read, so they do not wait for
    /// ours either. With a sender reading each line just before its
    /// receiver wrote it, both waited on the other core once per line: an
    /// in-process 64 B round trip whose sender skipped the read altogether
    /// (unsound, for the measurement only) was 25-28 ns faster in four
    /// interleaved runs; reading ahead took about 14 ns off it (median of
    /// 15 paired runs).
    fn learn_ahead(&self, pos: u64) {
        let line = FREE_PER_LINE;
        let h = self.free_hint.0.load(Acquire);
        let (end, count) = (h >> HINT_COUNT_BITS, h & HINT_MAX_COUNT);
        // The hint runs exactly to the end of this line and covers all of
        // it, `pos` included (the line's first slot).
        if end == pos.wrapping_add(line) && count >= line {
            let mut e = end;
            while e.wrapping_sub(end) < line && self.free((e & self.mask) as usize).load(Acquire) == e {
                e = e.wrapping_add(1);
            }
            self.remember_free(e, e.wrapping_sub(pos.wrapping_add(1)));
        }
        let ahead = (pos.wrapping_add(2 * line) & self.mask) as usize;
        comesg_sys::hint::prefetch::<false>(self.free(ahead) as *const AtomicU64 as *const u8);
    }

    #[inline]
    pub(super) fn send_step(&self, pos: u64, i: usize) -> Result<SendStep, RingError> {
        let prev = pos.wrapping_sub(self.cap);
        let full = self.claim(i).load(Acquire);
        let free = if self.known_free(pos) {
            pos
        } else {
            let f = self.free(i).load(Acquire);
            if f == pos {
                self.learn_free(pos);
            }
            f
        };
        Ok(match (decode_full(full), decode_free(free)) {
            // Previous lap done and received: the slot is ours to claim.
            (Full::Done { pos: p, .. }, Free::For(f)) if p == prev && f == pos => SendStep::Claim(full),
            // Previous lap done, not yet received (or being received).
            (Full::Done { pos: p, .. }, Free::For(f)) if p == prev && f == prev => SendStep::Full,
            (Full::Done { pos: p, .. }, Free::Claimed(_)) if p == prev => SendStep::Full,
            // Position already taken (being written, or published with the
            // claim word still up): our view of `tail` is behind.
            (Full::Claimed(_), _) if stamp::claim_is_for(full, pos) => SendStep::Advance,
            // A sender is still writing the previous lap, or has published
            // it (its claim word stays up) and it is not yet received.
            (Full::Claimed(_), Free::For(f)) if f == prev => SendStep::Full,
            // The previous lap's sender published and its message was
            // received; its claim word stays up until a sender of this lap
            // takes it over, here.
            (Full::Claimed(_), Free::For(f)) if f == pos && stamp::claim_is_for(full, prev) => SendStep::Claim(full),
            // ... and a receiver is reading it.
            (Full::Claimed(_), Free::Claimed(_)) if stamp::claim_is_for(full, prev) => SendStep::Full,
            // Claimed for a later lap: `pos` was claimed long ago, and
            // `tail` went back (a late plain store): help it forward.
            (Full::Claimed(_), _) if stamp::claim_is_after(full, pos, self.cap) => SendStep::Advance,
            (Full::Done { pos: p, .. }, _)
                if p.wrapping_sub(pos) < (1 << 60) && p.wrapping_sub(pos).is_multiple_of(self.cap) =>
            {
                SendStep::Advance
            }
            (_, Free::For(f)) if f.wrapping_sub(pos) < (1 << 60) && f != pos => SendStep::Reload,
            (Full::Claimed(_), Free::Claimed(_)) => SendStep::Reload,
            _ => return Err(RingError::Corrupt("slot stamps out of sequence")),
        })
    }

    /// Claims the next slot for `holder` without waiting.
    // Always inlined, with `try_claim_recv`: called out of line, the claim
    // came back through memory, stored as 8-byte fields and read back as
    // 16-byte ones, which the store buffer cannot forward. Each call then
    // waited for every older store to reach the cache, including the
    // `tail`/`head` store that had just missed. A 64 B stream to a
    // receiver calling through `dyn Link` (as `comesg bench` does) measured
    // 6-8 M msgs/s that way, and 17-34 M with both claims inlined.
    #[inline(always)]
    pub fn try_claim_send(&self, holder: u32) -> Result<SendClaim, RingError> {
        self.writable(Side::Send)?;
        self.check_holder(holder)?;
        if let Some(claim) = self.claim_send_sole(holder) {
            return Ok(claim);
        }
        self.claim_send_leased(holder)
    }

    /// The general claim, after the straight one declined: under the lease
    /// when [`Ring::lease_enter`] sorts out that it applies.
    #[inline(always)]
    fn claim_send_leased(&self, holder: u32) -> Result<SendClaim, RingError> {
        let sole = self.lease_enter(Side::Send, holder)?;
        let r = self.claim_send(holder, sole);
        if sole {
            self.lease_leave(Side::Send, holder);
        }
        r
    }

    /// A lone sender's claim, inlined whole into its caller: when this
    /// thread holds the side's lease and the next slot is free the way a
    /// running ring leaves it, claims it; otherwise `None`, having changed
    /// nothing, and [`Ring::claim_send`] sorts the case out. It accepts
    /// exactly the slots `send_step` would (`Claim`), given a free stamp
    /// for `pos`.
    ///
    #[inline(always)]
    fn claim_send_sole(&self, holder: u32) -> Option<SendClaim> {
        if !self.lease_enter_sole(Side::Send, holder) {
            return None;
        }
        let pos = self.tail().load(Acquire);
        let i = (pos & self.mask) as usize;
        let prev = pos.wrapping_sub(self.cap);
        let full = self.claim(i).load(Acquire);
        let free = self.known_free(pos) || {
            let f = decode_free(self.free(i).load(Acquire)) == Free::For(pos);
            if f {
                self.learn_free(pos);
            }
            f
        };
        let ready = free
            && match decode_full(full) {
                Full::Done { pos: p, .. } => p == prev,
                Full::Claimed(_) => stamp::claim_is_for(full, prev),
            };
        // Not `ready.then(..)`: the closure was compiled out of line.
        let claim = if ready {
            self.claim(i).store(stamp::claimed_at(holder, pos), Release);
            Some(self.claimed_send(pos, i, holder))
        } else {
            None
        };
        self.lease_leave(Side::Send, holder);
        claim
    }

    /// What follows a sender's winning claim of position `pos` (slot `i`):
    /// moves `tail` on and reads ahead.
    #[inline(always)]
    fn claimed_send(&self, pos: u64, i: usize, holder: u32) -> SendClaim {
        self.tail().store(pos.wrapping_add(1), Release);
        if i.is_multiple_of(FREE_PER_LINE as usize) {
            self.learn_ahead(pos);
        }
        // Start taking the lines of a later message now, so that a
        // streaming sender's stores find them here instead of each waiting
        // for the other core.
        let ahead = (pos.wrapping_add(AHEAD) & self.mask) as usize;
        comesg_sys::hint::prefetch::<true>(self.data_ptr(ahead));
        comesg_sys::hint::prefetch::<true>(self.stamp(ahead) as *const AtomicU64 as *const u8);
        crate::fault::point("channel.send.claimed");
        SendClaim { pos, index: i, holder }
    }

    /// [`Ring::try_claim_send`]'s walk; `sole` when this thread holds the
    /// side's lease and may claim with a plain store (see `lease`).
    #[inline(always)]
    fn claim_send(&self, holder: u32, sole: bool) -> Result<SendClaim, RingError> {
        let tail = self.tail();
        let mut pos = tail.load(Acquire);
        let start = pos;
        for _ in 0..self.max_attempts() {
            let i = (pos & self.mask) as usize;
            match self.send_step(pos, i)? {
                SendStep::Claim(seen) => {
                    let mine = stamp::claimed_at(holder, pos);
                    let won = if sole {
                        self.claim(i).store(mine, Release);
                        true
                    } else {
                        self.claim(i).compare_exchange(seen, mine, AcqRel, Relaxed).is_ok()
                    };
                    if won {
                        return Ok(self.claimed_send(pos, i, holder));
                    }
                    pos = tail.load(Acquire);
                }
                SendStep::Full => {
                    let now = tail.load(Acquire);
                    if now == pos {
                        return Err(RingError::Full);
                    }
                    pos = now;
                }
                SendStep::Advance => {
                    let _ = tail.compare_exchange(pos, pos.wrapping_add(1), AcqRel, Relaxed);
                    pos = tail.load(Acquire);
                }
                SendStep::Reload => pos = tail.load(Acquire),
            }
        }
        // Out of attempts. If other senders moved the tail meanwhile, this
        // one only kept losing races on a full ring: honest contention, so
        // report the ring full (the caller waits and tries again). If
        // nothing moved, the stamps never let anyone claim: corrupt.
        if tail.load(Acquire) != start {
            return Err(RingError::Full);
        }
        Err(RingError::Corrupt("no progress claiming a slot"))
    }

    /// The claimed slot's data area (`slot_size` bytes).
    #[inline]
    pub fn slot_mut<'a>(&'a self, claim: &'a mut SendClaim) -> &'a mut [u8] {
        // SAFETY: the slot is claimed by this holder, so no honest peer reads
        // or writes it until it is published; the range lies in the writable
        // sender mapping (claims are only made through a writable one). The
        // `&mut SendClaim` borrow keeps the slice unique.
        unsafe { std::slice::from_raw_parts_mut(self.data_ptr(claim.index), self.geo.slot_size as usize) }
    }

    /// Copies `bytes` into the claimed slot.
    #[inline]
    pub fn write(&self, claim: &mut SendClaim, bytes: &[u8]) -> Result<(), RingError> {
        if bytes.len() > self.geo.slot_size as usize {
            return Err(RingError::TooLong { len: bytes.len(), slot_size: self.geo.slot_size });
        }
        self.slot_mut(claim)[..bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    /// Publishes the claimed slot holding a message of `len` bytes, and wakes
    /// a sleeping receiver if there is one.
    #[inline]
    pub fn publish(&self, claim: SendClaim, len: usize) -> Result<(), RingError> {
        if len > self.geo.slot_size as usize {
            self.finish_send(&claim, stamp::skipped(claim.pos))?;
            return Err(RingError::TooLong { len, slot_size: self.geo.slot_size });
        }
        self.publish_checked(claim, len)
    }

    /// [`Ring::publish`] of a length already checked against the slot.
    #[inline(always)]
    fn publish_checked(&self, claim: SendClaim, len: usize) -> Result<(), RingError> {
        self.len_word(claim.index).store(len as u32, Relaxed);
        self.finish_send(&claim, stamp::complete(claim.pos))?;
        bump(self.rec_msgs(Side::Send, claim.holder), 1);
        bump(self.rec_bytes(Side::Send, claim.holder), len as u64);
        Ok(())
    }

    /// Gives the claimed slot up without a message.
    pub fn cancel(&self, claim: SendClaim) -> Result<(), RingError> {
        self.finish_send(&claim, stamp::skipped(claim.pos))
    }

    #[inline(always)]
    fn finish_send(&self, claim: &SendClaim, word: u64) -> Result<(), RingError> {
        // Nobody else moves the claim word before this stamp is published
        // (a sender of the next lap takes it over only once the slot was
        // received), so a load checks it.
        let cw = self.claim(claim.index);
        if cw.load(Relaxed) != stamp::claimed_at(claim.holder, claim.pos) {
            return Err(RingError::Corrupt("sender's claim was taken over"));
        }
        self.stamp(claim.index).store(word, Release);
        crate::fault::point("channel.send.published");
        // The claim word stays up: the next lap's sender claims over it once
        // the slot is free again (see `send_step`), and repair tells a
        // published claim by its stamp. Releasing it here would cost a
        // locked instruction, which waits for this message's lines to reach
        // this core: measured 8.8 -> 10.5 M msgs/s in-process without it.
        // Dekker with a receiver going to sleep: it registers, then runs a
        // heavy barrier, then re-checks; we publish, then (light barrier)
        // check for sleepers. One of us sees the other.
        comesg_sys::barrier::light();
        if self.recv_waiters().load(Relaxed) > 0 {
            self.wake_receivers(claim.pos);
        }
        if self.recv_pollers().load(Relaxed) > 0 {
            self.ring_bell();
        }
        Ok(())
    }

    /// Claims, copies and publishes in one go, without waiting.
    #[inline]
    pub fn try_send(&self, holder: u32, bytes: &[u8]) -> Result<(), RingError> {
        if bytes.len() > self.geo.slot_size as usize {
            return Err(RingError::TooLong { len: bytes.len(), slot_size: self.geo.slot_size });
        }
        if let Some(r) = self.try_send_sole(holder, bytes) {
            return r;
        }
        // Not `try_claim_send`: the straight claim was just declined.
        self.writable(Side::Send)?;
        self.check_holder(holder)?;
        let mut claim = self.claim_send_leased(holder)?;
        self.write(&mut claim, bytes)?;
        self.publish(claim, bytes.len())
    }

    /// Claims, copies and publishes in one inlined piece when a lone
    /// sender's claim goes through (`claim_send_sole`); `None`,
    /// with nothing sent, when the caller must take the general path (no
    /// right, no lease, a full ring, a message longer than a slot).
    #[inline(always)]
    pub fn try_send_sole(&self, holder: u32, bytes: &[u8]) -> Option<Result<(), RingError>> {
        if !self.can_send || holder >= self.geo.max_holders || bytes.len() > self.geo.slot_size as usize {
            return None;
        }
        let claim = self.claim_send_sole(holder)?;
        // SAFETY: the slot is claimed by this holder (no honest peer reads
        // or writes it until it is published), `bytes` fits in it (checked
        // above), and it lies in the sender mapping, writable (`can_send`).
        unsafe { copy_bytes(bytes.as_ptr(), self.data_ptr(claim.index), bytes.len()) };
        Some(self.publish_checked(claim, bytes.len()))
    }

    // ---- receiving ----

    #[inline]
    pub(super) fn recv_step(&self, pos: u64, i: usize) -> Result<RecvStep, RingError> {
        let full = self.stamp(i).load(Acquire);
        Ok(match decode_full(full) {
            Full::Done { pos: p, skip } if p == pos => RecvStep::Claim { skip },
            Full::Done { pos: p, .. } if p == pos.wrapping_sub(self.cap) => RecvStep::Empty,
            Full::Done { pos: p, .. }
                if p.wrapping_sub(pos) < (1 << 60) && p.wrapping_sub(pos).is_multiple_of(self.cap) =>
            {
                RecvStep::Advance
            }
            Full::Claimed(_) => match decode_free(self.free(i).load(Acquire)) {
                // A sender is writing position `pos`.
                Free::For(f) if f == pos => RecvStep::Empty,
                // Claimed for a later lap: our view of `head` is behind.
                Free::For(f) if f.wrapping_sub(pos) < (1 << 60) => RecvStep::Advance,
                Free::Claimed(_) => RecvStep::Reload,
                Free::For(_) => return Err(RingError::Corrupt("slot stamps out of sequence")),
            },
            Full::Done { .. } => RecvStep::Reload,
        })
    }

    /// Claims the next message for `holder` without waiting.
    // Always inlined: see `try_claim_send`.
    #[inline(always)]
    pub fn try_claim_recv(&self, holder: u32) -> Result<RecvClaim, RingError> {
        self.writable(Side::Recv)?;
        self.check_holder(holder)?;
        match self.claim_recv_sole(holder) {
            Straight::Done(r) => return r,
            Straight::Wait => return Err(RingError::Empty),
            Straight::General => {}
        }
        self.claim_recv_leased(holder)
    }

    /// The general claim, after the straight one declined (see
    /// [`Ring::claim_send_leased`]).
    #[inline(always)]
    fn claim_recv_leased(&self, holder: u32) -> Result<RecvClaim, RingError> {
        let sole = self.lease_enter(Side::Recv, holder)?;
        let r = self.claim_recv(holder, sole);
        if sole {
            self.lease_leave(Side::Recv, holder);
        }
        r
    }

    /// A lone receiver's claim, inlined whole into its caller (see
    /// [`Ring::claim_send_sole`]): when this thread holds the side's lease
    /// and the next slot holds a message, claims it; [`Straight::Wait`]
    /// when the slot still holds the previous lap (empty);
    /// [`Straight::General`], having changed nothing, in every other case.
    #[inline(always)]
    fn claim_recv_sole(&self, holder: u32) -> Straight<Result<RecvClaim, RingError>> {
        if !self.lease_enter_sole(Side::Recv, holder) {
            return Straight::General;
        }
        let pos = self.head().load(Acquire);
        let i = (pos & self.mask) as usize;
        let full = self.stamp(i).load(Acquire);
        let free = self.free(i);
        // As the general walk does for a sole receiver: check the free stamp
        // as the compare-and-swap would (a hostile sender may forge the
        // full stamp).
        let message = matches!(decode_full(full), Full::Done { pos: p, skip: false } if p == pos);
        let r = if message && free.load(Relaxed) == pos {
            free.store(stamp::claimed(holder), Release);
            Straight::Done(self.claimed_message(pos, i, holder))
        } else if matches!(decode_full(full), Full::Done { pos: p, .. } if p == pos.wrapping_sub(self.cap)) {
            Straight::Wait
        } else {
            Straight::General
        };
        self.lease_leave(Side::Recv, holder);
        r
    }

    /// What follows a receiver's winning claim of position `pos` (slot
    /// `i`): moves `head` on and reads ahead.
    #[inline(always)]
    fn claimed_recv(&self, pos: u64, i: usize) {
        self.head().store(pos.wrapping_add(1), Release);
        if i % FREE_PER_LINE as usize == FREE_PER_LINE as usize / 2 {
            // Take the next line of free stamps back from the senders now,
            // after their read of it (see `learn_ahead`) and before our
            // first write.
            let next = (pos.wrapping_add(FREE_PER_LINE / 2) & self.mask) as usize;
            comesg_sys::hint::prefetch::<true>(self.free(next) as *const AtomicU64 as *const u8);
        }
        crate::fault::point("channel.recv.claimed");
    }

    /// [`Ring::claimed_recv`] for a slot that holds a message: the claim,
    /// with its checked length.
    #[inline(always)]
    fn claimed_message(&self, pos: u64, i: usize, holder: u32) -> Result<RecvClaim, RingError> {
        self.claimed_recv(pos, i);
        let claim = RecvClaim { pos, index: i, holder, len: 0 };
        let len = self.len_word(i).load(Relaxed) as usize;
        if len > self.geo.slot_size as usize {
            self.finish_recv(&claim)?;
            return Err(RingError::Corrupt("message length exceeds slot"));
        }
        Ok(RecvClaim { len, ..claim })
    }

    /// [`Ring::try_claim_recv`]'s walk; `sole` as in `claim_send`.
    #[inline(always)]
    fn claim_recv(&self, holder: u32, sole: bool) -> Result<RecvClaim, RingError> {
        let head = self.head();
        let mut pos = head.load(Acquire);
        let start = pos;
        for _ in 0..self.max_attempts() {
            let i = (pos & self.mask) as usize;
            match self.recv_step(pos, i)? {
                RecvStep::Claim { skip } => {
                    // A sole receiver checks the free stamp as the
                    // compare-and-swap would (`recv_step` read only the full
                    // stamp, which a hostile sender may have forged).
                    let won = if sole {
                        let free = self.free(i);
                        free.load(Relaxed) == pos && {
                            free.store(stamp::claimed(holder), Release);
                            true
                        }
                    } else {
                        self.free(i).compare_exchange(pos, stamp::claimed(holder), AcqRel, Relaxed).is_ok()
                    };
                    if won {
                        if skip {
                            self.claimed_recv(pos, i);
                            self.finish_recv(&RecvClaim { pos, index: i, holder, len: 0 })?;
                            pos = head.load(Acquire);
                            continue;
                        }
                        return self.claimed_message(pos, i, holder);
                    }
                    let _ = head.compare_exchange(pos, pos.wrapping_add(1), AcqRel, Relaxed);
                    pos = head.load(Acquire);
                }
                RecvStep::Empty => {
                    let now = head.load(Acquire);
                    if now == pos {
                        return Err(RingError::Empty);
                    }
                    pos = now;
                }
                RecvStep::Advance => {
                    let _ = head.compare_exchange(pos, pos.wrapping_add(1), AcqRel, Relaxed);
                    pos = head.load(Acquire);
                }
                RecvStep::Reload => pos = head.load(Acquire),
            }
        }
        // As for senders: other receivers moving the head is contention.
        if head.load(Acquire) != start {
            return Err(RingError::Empty);
        }
        Err(RingError::Corrupt("no progress claiming a message"))
    }

    /// For a receiver about to wait: the stamp word of the next position to
    /// receive, its value now, and that slot's data, when the stamp still
    /// shows the previous lap (no message yet). Publishing changes the
    /// word, so the receiver polls the one word until it changes, and
    /// prefetches the data meanwhile. `None` when the stamp shows anything
    /// else: the receiver should attempt at once.
    #[inline]
    pub(super) fn next_recv_watch(&self) -> Option<(&AtomicU64, u64, *const u8)> {
        let pos = self.head().load(Relaxed);
        let i = (pos & self.mask) as usize;
        let stamp = self.stamp(i);
        let seen = stamp.load(Acquire);
        match decode_full(seen) {
            Full::Done { pos: p, .. } if p == pos.wrapping_sub(self.cap) => Some((stamp, seen, self.data_ptr(i))),
            _ => None,
        }
    }

    /// This process's slipping state for `side` (see `slip`).
    #[inline]
    pub(super) fn slip_state(&self, side: Side) -> &AtomicU64 {
        &self.slip.0[side as usize]
    }

    /// The next position `side` claims (`tail` or `head`), as last stored.
    #[inline]
    pub(super) fn next_position(&self, side: Side) -> u64 {
        match side {
            Side::Send => self.tail().load(Relaxed),
            Side::Recv => self.head().load(Relaxed),
        }
    }

    /// The next position the other side claims: `head` for a sender,
    /// `tail` for a receiver.
    #[inline]
    pub(super) fn other_position(&self, side: Side) -> u64 {
        match side {
            Side::Send => self.head().load(Relaxed),
            Side::Recv => self.tail().load(Relaxed),
        }
    }

    /// Whether position `d` past the next one `side` claims is ready for
    /// it already: for a receiver, that message is published; for a
    /// sender, that slot is free.
    #[inline]
    pub(super) fn ready_ahead(&self, side: Side, d: u64) -> bool {
        let pos = self.next_position(side).wrapping_add(d);
        let i = (pos & self.mask) as usize;
        match side {
            Side::Send => self.free(i).load(Acquire) == pos,
            Side::Recv => {
                matches!(decode_full(self.stamp(i).load(Acquire)), Full::Done { pos: p, .. } if p == pos)
            }
        }
    }

    /// The claimed message's bytes, in place (read-only for receivers).
    #[inline]
    pub fn slot<'a>(&'a self, claim: &'a RecvClaim) -> &'a [u8] {
        debug_assert!(claim.len <= self.geo.slot_size as usize);
        // SAFETY: the slot is claimed by this receiver and was published, so
        // no honest sender writes it until it is released; `len` was checked
        // against the slot size; the range lies in the sender mapping.
        unsafe { std::slice::from_raw_parts(self.data_ptr(claim.index), claim.len) }
    }

    /// Releases a claimed message's slot to senders, waking a sleeping sender
    /// if there is one.
    #[inline(always)]
    pub fn release(&self, claim: RecvClaim) -> Result<(), RingError> {
        self.finish_recv(&claim)?;
        bump(self.rec_msgs(Side::Recv, claim.holder), 1);
        bump(self.rec_bytes(Side::Recv, claim.holder), claim.len as u64);
        Ok(())
    }

    #[inline(always)]
    fn finish_recv(&self, claim: &RecvClaim) -> Result<(), RingError> {
        let next = claim.pos.wrapping_add(self.cap);
        let fr = self.free(claim.index);
        if fr.load(Relaxed) != stamp::claimed(claim.holder) {
            return Err(RingError::Corrupt("receiver's claim was taken over"));
        }
        fr.store(next, Release);
        comesg_sys::barrier::light();
        if self.send_waiters().load(Relaxed) > 0 {
            self.wake_senders(next);
        }
        if self.send_pollers().load(Relaxed) > 0 {
            self.ring_bell();
        }
        Ok(())
    }

    /// Receives into `buf` without waiting; returns the message's length.
    ///
    /// Like `recv(2)` on a datagram socket with `MSG_TRUNC`: if the message is
    /// longer than `buf`, the rest is discarded and the full length returned.
    #[inline]
    pub fn try_recv(&self, holder: u32, buf: &mut [u8]) -> Result<usize, RingError> {
        match self.try_recv_sole(holder, buf) {
            Straight::Done(r) => return r,
            Straight::Wait => return Err(RingError::Empty),
            Straight::General => {}
        }
        // Not `try_claim_recv`: the straight claim was just declined.
        self.writable(Side::Recv)?;
        self.check_holder(holder)?;
        let claim = self.claim_recv_leased(holder)?;
        let len = claim.len;
        let n = len.min(buf.len());
        buf[..n].copy_from_slice(&self.slot(&claim)[..n]);
        self.release(claim)?;
        Ok(len)
    }

    /// Claims, copies out and releases in one inlined piece when a lone
    /// receiver's claim goes through (`claim_recv_sole`): the
    /// message's length (truncated into `buf` as [`Ring::try_recv`] does).
    /// [`Straight::Wait`] when the ring is empty, [`Straight::General`]
    /// when the caller must take the general path; both with nothing taken.
    #[inline(always)]
    pub fn try_recv_sole(&self, holder: u32, buf: &mut [u8]) -> Straight<Result<usize, RingError>> {
        if !self.can_recv || holder >= self.geo.max_holders {
            return Straight::General;
        }
        let claim = match self.claim_recv_sole(holder) {
            Straight::Done(Ok(claim)) => claim,
            Straight::Done(Err(e)) => return Straight::Done(Err(e)),
            Straight::Wait => return Straight::Wait,
            Straight::General => return Straight::General,
        };
        let len = claim.len;
        let n = len.min(buf.len());
        // SAFETY: the slot is claimed by this receiver and holds `len >= n`
        // bytes (checked against the slot size), and `buf` has room for
        // `n`. `buf` cannot be this slot: no honest holder hands out a
        // reference into a slot another holder claimed (a loan is of a
        // slot its sender claimed, a different one).
        unsafe { copy_bytes(self.data_ptr(claim.index), buf.as_mut_ptr(), n) };
        Straight::Done(self.release(claim).map(|()| len))
    }

    // ---- observation and repair (microkernel) ----

    /// Positions and depth.
    pub fn stats(&self) -> RingStats {
        let tail = self.tail().load(Acquire);
        let head = self.head().load(Acquire);
        let depth = tail.saturating_sub(head).min(self.cap);
        RingStats { tail, head, depth }
    }

    /// Counters of holder record `h` on `side`.
    pub fn holder_counters(&self, side: Side, h: u32) -> HolderCounters {
        if h >= self.geo.max_holders {
            return HolderCounters::default();
        }
        HolderCounters { msgs: self.rec_msgs(side, h).load(Relaxed), bytes: self.rec_bytes(side, h).load(Relaxed) }
    }

    /// Clears holder record `h` on `side` before it is handed to a new holder.
    pub fn reset_holder(&self, side: Side, h: u32) -> Result<(), RingError> {
        self.writable(side)?;
        self.check_holder(h)?;
        self.rec_msgs(side, h).store(0, Relaxed);
        self.rec_bytes(side, h).store(0, Relaxed);
        self.rec_waiting(side, h).store(0, Relaxed);
        self.rec_polling(side, h).store(0, Relaxed);
        // A holder that died inside a claim under its lease leaves this
        // up; a revoker waits for it to come down.
        self.rec_claiming(side, h).store(0, Release);
        Ok(())
    }

    /// Finishes every slot that holder `h` on `side` left claimed (it died or
    /// closed mid-operation), forgets its sleeping registrations, and wakes
    /// every sleeper on both sides so that nobody waits on its account.
    /// Returns the number of messages lost. Only the microkernel, which maps
    /// both segments writable, calls this, and only once `h` can no longer run.
    pub fn repair_holder(&self, side: Side, h: u32) -> Result<u64, RingError> {
        self.repair_holders(side, &[h])
    }

    /// [`Ring::repair_holder`] for several holders of one side, in one pass
    /// over the ring.
    pub fn repair_holders(&self, side: Side, holders: &[u32]) -> Result<u64, RingError> {
        self.writable(Side::Send)?;
        self.writable(Side::Recv)?;
        for &h in holders {
            self.check_holder(h)?;
        }
        let mut dead = vec![false; self.geo.max_holders as usize];
        for &h in holders {
            dead[h as usize] = true;
        }
        let is_dead = |word: u64| match decode_full(word) {
            Full::Claimed(h) => dead.get(h as usize).copied().unwrap_or(false),
            Full::Done { .. } => false,
        };
        let mut lost = 0;
        for i in 0..self.geo.slots as usize {
            lost += match side {
                Side::Send => {
                    let cw = self.claim(i).load(Acquire);
                    if is_dead(cw) {
                        self.repair_send_claim(i, cw)
                    } else {
                        0
                    }
                }
                Side::Recv => {
                    let fw = self.free(i).load(Acquire);
                    if is_dead(fw) {
                        self.repair_recv_claim(i, fw)
                    } else {
                        0
                    }
                }
            };
        }
        for &h in holders {
            // Forget the dead holder's sleeping registrations.
            let waiting = self.rec_waiting(side, h).swap(0, SeqCst);
            let total = match side {
                Side::Send => self.send_waiters(),
                Side::Recv => self.recv_waiters(),
            };
            let _ = total.fetch_update(SeqCst, SeqCst, |v| Some(v.saturating_sub(waiting)));
            let polling = self.rec_polling(side, h).swap(0, SeqCst);
            let total = match side {
                Side::Send => self.send_pollers(),
                Side::Recv => self.recv_pollers(),
            };
            let _ = total.fetch_update(SeqCst, SeqCst, |v| Some(v.saturating_sub(polling)));
        }
        self.wake_everyone();
        Ok(lost)
    }

    /// A dead sender's claim word `cw` on slot `i`: find the position it was
    /// for, skip it if it was never published, and release the claim word.
    fn repair_send_claim(&self, i: usize, cw: u64) -> u64 {
        let st = self.stamp(i);
        let seen = st.load(Acquire);
        let Full::Done { pos: published, .. } = decode_full(seen) else { return 0 };
        // The claim is for the position the slot is free for, or (if the
        // sender died after publishing and a receiver already took it) the
        // one before; the claim word's position bits say which.
        let pos = match decode_free(self.free(i).load(Acquire)) {
            Free::For(f) if stamp::claim_is_for(cw, f) => f,
            Free::For(f) if stamp::claim_is_for(cw, f.wrapping_sub(self.cap)) => f.wrapping_sub(self.cap),
            Free::Claimed(_) => published,
            Free::For(_) => return 0,
        };
        let mut lost = 0;
        if published == pos.wrapping_sub(self.cap)
            && st.compare_exchange(seen, stamp::skipped(pos), SeqCst, Relaxed).is_ok()
        {
            // Never published: receivers pass over the position.
            lost = 1;
        }
        let _ = self.claim(i).compare_exchange(cw, stamp::complete(pos), SeqCst, Relaxed);
        lost
    }

    /// A dead receiver's claim `fw` on slot `i`: free the slot; the message
    /// it was reading is lost (never handed to anyone else).
    fn repair_recv_claim(&self, i: usize, fw: u64) -> u64 {
        let Full::Done { pos, skip } = decode_full(self.stamp(i).load(Acquire)) else { return 0 };
        let next = pos.wrapping_add(self.cap);
        u64::from(self.free(i).compare_exchange(fw, next, SeqCst, Relaxed).is_ok() && !skip)
    }

    /// Wakes sleeping receivers after `pos` was published. One suffices when
    /// `pos` is the next to receive and nothing after it is ready; otherwise
    /// (several senders publishing out of order) wake them all, or a wake-up
    /// spent on a receiver that finds the head still being written would
    /// leave another asleep beside a ready message.
    #[cold]
    fn wake_receivers(&self, pos: u64) {
        let seq = self.data_seq();
        seq.fetch_add(1, SeqCst);
        let next = pos.wrapping_add(1);
        let next_ready = matches!(
            decode_full(self.stamp((next & self.mask) as usize).load(Acquire)),
            Full::Done { pos: p, .. } if p == next
        );
        if self.head().load(Acquire) == pos && !next_ready {
            comesg_sys::futex::wake(seq, 1);
        } else {
            comesg_sys::futex::wake_all(seq);
        }
    }

    /// Wakes sleeping senders after a slot became free for position `freed`;
    /// one suffices when it is the next position to claim and the slot after
    /// it is not also free.
    #[cold]
    fn wake_senders(&self, freed: u64) {
        let seq = self.space_seq();
        seq.fetch_add(1, SeqCst);
        let next = freed.wrapping_add(1);
        let next_free = self.free((next & self.mask) as usize).load(Acquire) == next;
        if self.tail().load(Acquire) == freed && !next_free {
            comesg_sys::futex::wake(seq, 1);
        } else {
            comesg_sys::futex::wake_all(seq);
        }
    }

    /// Wakes every sleeper on both sides (they re-check and sleep again).
    pub fn wake_everyone(&self) {
        if self.can(Side::Send) {
            self.data_seq().fetch_add(1, SeqCst);
        }
        if self.can(Side::Recv) {
            self.space_seq().fetch_add(1, SeqCst);
        }
        comesg_sys::futex::wake_all(self.data_seq());
        comesg_sys::futex::wake_all(self.space_seq());
        self.ring_bell();
    }
}

/// How many positions ahead of its claim a sender starts fetching lines
/// for writing (measured: 2 gains most on a 64 B stream; more gains nothing).
const AHEAD: u64 = 2;

/// Copies `n` bytes from `src` to `dst`; up to 64 inline, in two
/// overlapping moves of the largest power of two not above `n`, as
/// `memcpy` does after its call and size dispatch.
///
/// # Safety
/// `src` must be valid for reading and `dst` for writing `n` bytes, and
/// the two ranges must not overlap.
#[inline(always)]
unsafe fn copy_bytes(src: *const u8, dst: *mut u8, n: usize) {
    use std::ptr::{read_unaligned as rd, write_unaligned as wr};
    // SAFETY (all arms): each move reads `[src, src + k)` and
    // `[src + n - k, src + n)` with `k <= n`, inside the caller's ranges.
    unsafe {
        match n {
            32..=64 => {
                let (a, b) = (rd(src as *const [u8; 32]), rd(src.add(n - 32) as *const [u8; 32]));
                wr(dst as *mut [u8; 32], a);
                wr(dst.add(n - 32) as *mut [u8; 32], b);
            }
            16..=31 => {
                let (a, b) = (rd(src as *const [u8; 16]), rd(src.add(n - 16) as *const [u8; 16]));
                wr(dst as *mut [u8; 16], a);
                wr(dst.add(n - 16) as *mut [u8; 16], b);
            }
            8..=15 => {
                let (a, b) = (rd(src as *const u64), rd(src.add(n - 8) as *const u64));
                wr(dst as *mut u64, a);
                wr(dst.add(n - 8) as *mut u64, b);
            }
            4..=7 => {
                let (a, b) = (rd(src as *const u32), rd(src.add(n - 4) as *const u32));
                wr(dst as *mut u32, a);
                wr(dst.add(n - 4) as *mut u32, b);
            }
            0..=3 => {
                for k in 0..n {
                    *dst.add(k) = *src.add(k);
                }
            }
            _ => std::ptr::copy_nonoverlapping(src, dst, n),
        }
    }
}

/// Adds to a per-holder counter. Only threads of the holder's own process
/// write it, so a plain load and store is enough; a rare lost update between
/// two threads of one process sharing a handle only blurs a statistic.
#[inline]
fn bump(word: &AtomicU64, by: u64) {
    word.store(word.load(Relaxed).wrapping_add(by), Relaxed);
}

#[cfg(test)]
mod tests {
    use super::copy_bytes;

    #[test]
    fn copy_bytes_copies_every_length_exactly() {
        let src: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
        for n in 0..=130 {
            for offset in [0, 1, 7] {
                let mut dst = vec![0xAAu8; 160];
                // SAFETY: `src` holds at least `offset + n` bytes and `dst`
                // `8 + n`; they are separate vectors.
                unsafe { copy_bytes(src.as_ptr().add(offset), dst.as_mut_ptr().add(8), n) };
                assert_eq!(&dst[8..8 + n], &src[offset..offset + n], "length {n}, offset {offset}");
                assert!(dst[..8].iter().chain(&dst[8 + n..]).all(|&b| b == 0xAA), "wrote outside, length {n}");
            }
        }
    }
}
