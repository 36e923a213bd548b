//! The COPIPE rendezvous: synchronous, one copy.
//!
//! Every receiver handle owns one **slot**: a state word and a buffer. To
//! receive, it *offers* its buffer; a sender *claims* one open offer (exactly
//! one sender per offer: compare-and-swap), copies the message straight into
//! the buffer (the only copy), marks it *filled*, and waits until the
//! receiver has *taken* it. A send returns only once a receiver has the
//! message. Receivers are anycast: a sender takes whichever offer it finds.
//!
//! Two segments:
//! - **control** (every holder maps it read-write): a header with the live
//!   sender and receiver counts (written by the microkernel), the offer
//!   bell, attach counts and the count of senders polling for an offer,
//!   then one 64-byte line per slot: state (u64), length (u32), bell (u32),
//!   receiver-sleeping (u32), sender-sleeping (u32), receiver-polling (u32);
//! - **data** (senders read-write, receivers read-only): the buffers, each
//!   starting a cache line.
//!
//! Slot state, one u64: kind (3 bits) | generation (13) | offer number (32) |
//! sender holder (16). `IDLE(n)` (offers up to `n` are over), `OFFERED(n)`,
//! `CLAIMED(n, h)`, `FILLED(n, h)`, `DEAD` (the receiver is gone) and
//! `DEAD_HELD(n, h)` (it died while sender `h` held its offer). The
//! microkernel moves a dead receiver's slot to `DEAD` (or `DEAD_HELD`) and a
//! new receiver's to `IDLE` of the next generation; it does not reuse a
//! `DEAD_HELD` slot until the sender has acknowledged it (moved it to `DEAD`)
//! or died. So a sender waiting on its filled offer sees either its own
//! `FILLED` (wait), its own `DEAD_HELD` (not delivered), or anything else
//! (taken). A dead sender's `CLAIMED` goes back to `OFFERED`.
//!
//! A sender whose deadline passes before its receiver took the message
//! (the receiver left its offer open for a poller, or is slow) withdraws
//! it: `FILLED(n, h)` back to `OFFERED(n + 1)`, by compare-and-swap against
//! the receiver's take (`FILLED` to `IDLE`), so exactly one of the two wins:
//! either the receiver has the message and the send succeeds, or nobody
//! has it and the send times out. The new offer number keeps a receiver
//! that copied the withdrawn message from mistaking a later fill for it.
//!
//! The header also counts sender and receiver *attaches* ever made, so that
//! an end that has not yet seen the other side waits for it (as a FIFO does)
//! rather than reporting it gone.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::time::Instant;

use comesg_sys::bell::Bell;
use comesg_sys::futex::{self, Wake};
use comesg_sys::mapping::{Access, Mapping};

const LINE: usize = 64;
/// Largest buffer per receiver (64 MiB).
pub const MAX_BUFFER: u32 = 64 << 20;
/// Most receivers of one pipe.
pub const MAX_RECEIVERS: u32 = 1024;
/// Spin rounds before sleeping.
const SPIN: u32 = 2048;
/// Spin rounds a receiver waits while a sender copies into its buffer
/// (some milliseconds) before sleeping.
const SPIN_WHILE_COPYING: u32 = 1 << 18;
/// How long a `try` send that found an open offer waits for its receiver
/// to take the message before withdrawing it: long enough for a receiver
/// that sleeps in a poll to wake up and take it.
pub const TRY_TAKE_GRACE: std::time::Duration = std::time::Duration::from_millis(10);

const IDLE: u64 = 0;
const OFFERED: u64 = 1;
const CLAIMED: u64 = 2;
const FILLED: u64 = 3;
const DEAD: u64 = 4;
/// The receiver died while a sender (`h`) held its offer (claimed or
/// filled): the slot stays out of use until that sender has seen it (or is
/// gone itself), so that a stale sender never writes into a reused buffer
/// and never mistakes a new receiver's state for "taken".
const DEAD_HELD: u64 = 5;

/// A decoded slot state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    kind: u64,
    gen: u64,
    n: u32,
    h: u16,
}

impl State {
    fn decode(w: u64) -> State {
        State { kind: w >> 61, gen: (w >> 48) & 0x1fff, n: (w >> 16) as u32, h: w as u16 }
    }
    fn encode(self) -> u64 {
        self.kind << 61 | (self.gen & 0x1fff) << 48 | (self.n as u64) << 16 | self.h as u64
    }
    fn with(self, kind: u64, n: u32, h: u16) -> u64 {
        State { kind, n, h, ..self }.encode()
    }
}

/// Shape of a COPIPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeLayout {
    /// Bytes of each receiver's buffer (largest message).
    pub buffer: u32,
    /// Most receivers at once (one slot each).
    pub receivers: u32,
}

/// Why a pipe shape is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a pipe has 1..={MAX_RECEIVERS} receivers with buffers of 1..={MAX_BUFFER} bytes (got {receivers} of {buffer})"
)]
pub struct PipeLayoutError {
    buffer: u32,
    receivers: u32,
}

impl PipeLayout {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), PipeLayoutError> {
        if self.buffer == 0 || self.buffer > MAX_BUFFER || self.receivers == 0 || self.receivers > MAX_RECEIVERS {
            return Err(PipeLayoutError { buffer: self.buffer, receivers: self.receivers });
        }
        Ok(())
    }
    fn stride(&self) -> usize {
        (self.buffer as usize).next_multiple_of(LINE)
    }
    /// Bytes of the control segment.
    pub fn control_len(&self) -> usize {
        LINE + self.receivers as usize * LINE
    }
    /// Bytes of the data segment.
    pub fn data_len(&self) -> usize {
        self.receivers as usize * self.stride()
    }
}

/// A message copied into a receiver's offer, not yet known to be taken
/// ([`Pipe::try_fill`]).
#[derive(Debug)]
pub struct Filled {
    r: u32,
    claimed: State,
}

/// What can go wrong on a pipe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipeError {
    /// No receiver is waiting (try forms) or no sender has filled the offer.
    #[error("no peer is ready")]
    WouldBlock,
    /// The deadline passed.
    #[error("timed out")]
    TimedOut,
    /// No receivers (sending) or no senders and nothing in flight
    /// (receiving) are left.
    #[error("the other side has gone")]
    Closed,
    /// The receiver that had the message died before taking it: the message
    /// was not delivered.
    #[error("the receiver died before taking the message")]
    ReceiverDied,
    /// The message is longer than a receiver's buffer.
    #[error("message of {len} bytes exceeds the {buffer}-byte buffer")]
    TooLong {
        /// Message length.
        len: usize,
        /// Buffer size.
        buffer: u32,
    },
    /// This handle lacks the right (or has no slot).
    #[error("this handle has no right to do that")]
    NoRight,
    /// Shared state holds a value no honest peer writes.
    #[error("pipe state corrupt: {0}")]
    Corrupt(&'static str),
}

/// One mapping of a COPIPE's two segments.
#[derive(Debug)]
pub struct Pipe {
    layout: PipeLayout,
    control: Mapping,
    data: Mapping,
    /// The port's bell, rung for pollers.
    bell: Option<Bell>,
}

impl Pipe {
    /// Wraps the mappings (control read-write; data read-write for senders).
    pub fn new(layout: PipeLayout, control: Mapping, data: Mapping) -> Result<Pipe, PipeError> {
        layout.validate().map_err(|_| PipeError::Corrupt("invalid layout"))?;
        if control.len() < layout.control_len() || data.len() < layout.data_len() {
            return Err(PipeError::Corrupt("segment shorter than its layout"));
        }
        if control.access() != Access::ReadWrite {
            return Err(PipeError::Corrupt("control segment mapped read-only"));
        }
        Ok(Pipe { layout, control, data, bell: None })
    }

    /// Gives the pipe the port's bell, rung on every rendezvous step while
    /// someone polls.
    pub fn set_bell(&mut self, bell: Bell) {
        self.bell = Some(bell);
    }

    /// The port's bell, if it has one.
    pub fn bell_fd(&self) -> Option<&Bell> {
        self.bell.as_ref()
    }

    fn ring_bell(&self) {
        if let Some(b) = &self.bell {
            b.ring();
        }
    }

    /// The pipe's shape.
    pub fn layout(&self) -> PipeLayout {
        self.layout
    }

    /// The data segment's mapping (for tests that try to write it).
    pub fn data_mapping(&self) -> &Mapping {
        &self.data
    }

    fn w32(&self, off: usize) -> &AtomicU32 {
        &self.control.words32()[off / 4]
    }
    fn senders(&self) -> &AtomicU32 {
        self.w32(0)
    }
    fn receivers(&self) -> &AtomicU32 {
        self.w32(4)
    }
    fn offer_bell(&self) -> &AtomicU32 {
        self.w32(8)
    }
    fn offer_sleepers(&self) -> &AtomicU32 {
        self.w32(12)
    }
    fn sender_attaches(&self) -> &AtomicU32 {
        self.w32(16)
    }
    fn receiver_attaches(&self) -> &AtomicU32 {
        self.w32(20)
    }
    fn offer_pollers(&self) -> &AtomicU32 {
        self.w32(24)
    }

    /// Sender and receiver attaches made so far (a handle notes them when
    /// it opens; see [`Watch`]).
    pub fn attaches(&self) -> (u32, u32) {
        (self.sender_attaches().load(SeqCst), self.receiver_attaches().load(SeqCst))
    }
    fn state(&self, r: u32) -> &AtomicU64 {
        &self.control.words()[(LINE + r as usize * LINE) / 8]
    }
    fn len(&self, r: u32) -> &AtomicU32 {
        self.w32(LINE + r as usize * LINE + 8)
    }
    fn bell(&self, r: u32) -> &AtomicU32 {
        self.w32(LINE + r as usize * LINE + 12)
    }
    fn recv_waiting(&self, r: u32) -> &AtomicU32 {
        self.w32(LINE + r as usize * LINE + 16)
    }
    fn send_waiting(&self, r: u32) -> &AtomicU32 {
        self.w32(LINE + r as usize * LINE + 20)
    }
    fn recv_polling(&self, r: u32) -> &AtomicU32 {
        self.w32(LINE + r as usize * LINE + 24)
    }
    fn buffer(&self, r: u32) -> *mut u8 {
        // SAFETY: r < receivers (callers check), so the buffer lies in the
        // data mapping (data_len covers every slot).
        unsafe { self.data.as_ptr().add(r as usize * self.layout.stride()) }
    }

    fn check_slot(&self, r: u32) -> Result<(), PipeError> {
        if r < self.layout.receivers {
            Ok(())
        } else {
            Err(PipeError::NoRight)
        }
    }

    /// Rings a slot's bell: bump, and wake whoever sleeps on it.
    fn ring(&self, r: u32) {
        self.bell(r).fetch_add(1, SeqCst);
        if self.recv_waiting(r).load(SeqCst) != 0 || self.send_waiting(r).load(SeqCst) != 0 {
            futex::wake_all(self.bell(r));
        }
        if self.recv_polling(r).load(SeqCst) != 0 {
            self.ring_bell();
        }
    }

    fn ring_offers(&self) {
        self.offer_bell().fetch_add(1, SeqCst);
        if self.offer_sleepers().load(SeqCst) != 0 {
            futex::wake_all(self.offer_bell());
        }
        if self.offer_pollers().load(SeqCst) != 0 {
            self.ring_bell();
        }
    }

    /// Sleeps on `bell` unless `ready` holds after registering in `flag`.
    fn nap(bell: &AtomicU32, flag: &AtomicU32, deadline: Option<Instant>, ready: impl Fn() -> bool) -> bool {
        let seen = bell.load(SeqCst);
        flag.fetch_add(1, SeqCst);
        let timed_out = if ready() {
            false
        } else {
            let t = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match t {
                Some(t) if t.is_zero() => true,
                t => futex::wait(bell, seen, t) == Wake::TimedOut,
            }
        };
        flag.fetch_sub(1, SeqCst);
        timed_out && deadline.is_some_and(|d| Instant::now() >= d)
    }

    // ---- sending ----

    /// Sends `msg` to one receiver (as sender holder `h`) and returns once
    /// the receiver has taken it. Without a deadline it waits for a
    /// receiver; `try_first` makes it give up at once when no offer is open.
    /// Broken pipe ([`PipeError::Closed`]) is no receiver left after one was
    /// seen (`watch`).
    pub fn send(
        &self,
        h: u32,
        msg: &[u8],
        deadline: Option<Instant>,
        try_first: bool,
        watch: &Watch,
    ) -> Result<(), PipeError> {
        self.send_skipping(h, msg, deadline, try_first, watch, None)
    }

    /// [`Pipe::send`] that never takes the offer of slot `skip` (the
    /// sender's own handle's, kept open by a poller in the same handle: a
    /// send into it would wait for itself).
    pub fn send_skipping(
        &self,
        h: u32,
        msg: &[u8],
        deadline: Option<Instant>,
        try_first: bool,
        watch: &Watch,
        skip: Option<u32>,
    ) -> Result<(), PipeError> {
        if self.data.access() != Access::ReadWrite || h > u16::MAX as u32 {
            return Err(PipeError::NoRight);
        }
        if msg.len() > self.layout.buffer as usize {
            return Err(PipeError::TooLong { len: msg.len(), buffer: self.layout.buffer });
        }
        let start = h.wrapping_mul(0x9e37_79b9) % self.layout.receivers;
        let closed = || watch.gone(self.receivers().load(SeqCst), self.receiver_attaches().load(SeqCst));
        let mut spins = 0u32;
        loop {
            if let Some((r, claimed)) = self.claim_offer(h as u16, start, skip) {
                crate::fault::point("pipe.send.claimed");
                match self.fill(r, claimed, msg) {
                    Some(()) => {
                        crate::fault::point("pipe.send.filled");
                        let give_up = if try_first { Some(Instant::now() + TRY_TAKE_GRACE) } else { deadline };
                        return self.await_taken(r, claimed, give_up).map_err(|e| match e {
                            PipeError::TimedOut if try_first => PipeError::WouldBlock,
                            e => e,
                        });
                    }
                    // The receiver died while we copied: try another.
                    None => continue,
                }
            }
            if closed() {
                return Err(PipeError::Closed);
            }
            if try_first {
                return Err(PipeError::WouldBlock);
            }
            if spins < SPIN && crate::spin::pause(spins, deadline) {
                spins += 1;
                continue;
            }
            let open = || {
                (0..self.layout.receivers)
                    .any(|r| Some(r) != skip && State::decode(self.state(r).load(SeqCst)).kind == OFFERED)
            };
            if Self::nap(self.offer_bell(), self.offer_sleepers(), deadline, || open() || closed()) {
                return Err(PipeError::TimedOut);
            }
            // Woken: look again, spinning, before sleeping again.
            spins = 0;
        }
    }

    fn claim_offer(&self, h: u16, start: u32, skip: Option<u32>) -> Option<(u32, State)> {
        let n = self.layout.receivers;
        for k in 0..n {
            let r = (start + k) % n;
            if Some(r) == skip {
                continue;
            }
            let w = self.state(r).load(Acquire);
            let s = State::decode(w);
            if s.kind == OFFERED {
                let claimed = s.with(CLAIMED, s.n, h);
                if self.state(r).compare_exchange(w, claimed, AcqRel, Relaxed).is_ok() {
                    return Some((r, State::decode(claimed)));
                }
            }
        }
        None
    }

    /// Copies into the claimed buffer and marks it filled; `None` if the
    /// receiver died meanwhile (then nothing was delivered).
    fn fill(&self, r: u32, claimed: State, msg: &[u8]) -> Option<()> {
        // SAFETY: the offer is claimed by us (CAS above), so no honest peer
        // writes the buffer, and the receiver reads it only once FILLED (a
        // slot whose receiver died while we hold it is not reused until we
        // let go of it); the length was checked against the buffer size.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), self.buffer(r), msg.len()) };
        self.len(r).store(msg.len() as u32, Relaxed);
        let filled = claimed.with(FILLED, claimed.n, claimed.h);
        match self.state(r).compare_exchange(claimed.encode(), filled, AcqRel, Acquire) {
            Ok(_) => {
                self.ring(r);
                Some(())
            }
            Err(now) => {
                self.let_go(r, now, claimed);
                None
            }
        }
    }

    /// After our offer's receiver died: release the quarantined slot.
    fn let_go(&self, r: u32, now: u64, claimed: State) {
        let s = State::decode(now);
        if s.kind == DEAD_HELD && s.h == claimed.h && s.n == claimed.n {
            let _ = self.state(r).compare_exchange(now, s.with(DEAD, s.n, 0), AcqRel, Relaxed);
            self.ring(r);
        }
    }

    // ---- sending in two halves (async senders) ----

    /// The first half of a send that must not wait: claims an open offer
    /// (not slot `skip`'s) and copies `msg` into it. `Ok(None)`: no offer
    /// is open now. The receiver has the message once [`Pipe::taken`] says so.
    pub fn try_fill(&self, h: u32, msg: &[u8], skip: Option<u32>, watch: &Watch) -> Result<Option<Filled>, PipeError> {
        if self.data.access() != Access::ReadWrite || h > u16::MAX as u32 {
            return Err(PipeError::NoRight);
        }
        if msg.len() > self.layout.buffer as usize {
            return Err(PipeError::TooLong { len: msg.len(), buffer: self.layout.buffer });
        }
        let start = h.wrapping_mul(0x9e37_79b9) % self.layout.receivers;
        // Bounded: each round either fills, finds no offer, or saw a
        // receiver die mid-copy (each receiver at most once per offer).
        for _ in 0..=self.layout.receivers {
            let Some((r, claimed)) = self.claim_offer(h as u16, start, skip) else {
                let closed = watch.gone(self.receivers().load(SeqCst), self.receiver_attaches().load(SeqCst));
                return if closed { Err(PipeError::Closed) } else { Ok(None) };
            };
            if self.fill(r, claimed, msg).is_some() {
                return Ok(Some(Filled { r, claimed }));
            }
        }
        Ok(None)
    }

    /// The second half: whether the receiver has taken the message
    /// (`Some(Ok)`), died before taking it (`Some(Err(ReceiverDied))`; the
    /// slot is let go), or not yet (`None`).
    pub fn taken(&self, f: &Filled) -> Option<Result<(), PipeError>> {
        let filled = f.claimed.with(FILLED, f.claimed.n, f.claimed.h);
        let w = self.state(f.r).load(Acquire);
        if w == filled {
            return None;
        }
        let s = State::decode(w);
        if s.kind == DEAD_HELD && s.h == f.claimed.h && s.n == f.claimed.n {
            self.let_go(f.r, w, f.claimed);
            return Some(Err(PipeError::ReceiverDied));
        }
        Some(Ok(()))
    }

    /// Registers a poller for [`Pipe::taken`] (the receiver's take rings).
    pub fn arm_taken(&self, f: &Filled) {
        self.recv_polling(f.r).fetch_add(1, SeqCst);
    }

    /// Undoes [`Pipe::arm_taken`], unless the slot has gone to a new
    /// receiver since (its poll count was reset then, and is the new
    /// receiver's now).
    pub fn disarm_taken(&self, f: &Filled) {
        if State::decode(self.state(f.r).load(SeqCst)).gen == f.claimed.gen {
            let _ = self.recv_polling(f.r).fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1));
        }
    }

    /// Waits until the receiver of slot `r` has taken our message; past
    /// `deadline`, withdraws it instead (`TimedOut`: nobody has it).
    fn await_taken(&self, r: u32, claimed: State, deadline: Option<Instant>) -> Result<(), PipeError> {
        let filled = claimed.with(FILLED, claimed.n, claimed.h);
        let mut spins = 0u32;
        loop {
            let w = self.state(r).load(Acquire);
            if w != filled {
                let s = State::decode(w);
                if s.kind == DEAD_HELD && s.h == claimed.h && s.n == claimed.n {
                    self.let_go(r, w, claimed);
                    return Err(PipeError::ReceiverDied);
                }
                // Anything else means the receiver took it: it moved the
                // slot on, and only then could it die or the slot be reused.
                return Ok(());
            }
            if spins < SPIN && crate::spin::pause(spins, deadline) {
                spins += 1;
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let reopened = claimed.with(OFFERED, claimed.n.wrapping_add(1), 0);
                if self.state(r).compare_exchange(filled, reopened, AcqRel, Acquire).is_ok() {
                    // The offer is open again for whoever sends next.
                    self.ring_offers();
                    return Err(PipeError::TimedOut);
                }
                // The receiver took it (or died) first: look again.
                continue;
            }
            if Self::nap(self.bell(r), self.send_waiting(r), deadline, || self.state(r).load(SeqCst) != filled) {
                // Timed out asleep: withdraw on the next round.
                spins = SPIN;
            }
        }
    }

    // ---- receiving ----

    /// Receives into `buf` through slot `r`: offers the buffer (or keeps the
    /// offer a previous timed-out call left open), waits until a sender
    /// fills it, copies the message out and returns its full length (only
    /// `buf.len()` bytes of a longer message are copied, as `recv(2)` with
    /// `MSG_TRUNC` does).
    ///
    /// End of file ([`PipeError::Closed`]) is no sender left after this
    /// receiver has seen one (`watch`), as a FIFO's reader waits for a first
    /// writer. `try_first` keeps the offer open only briefly: long enough for
    /// a sender already waiting to take it.
    pub fn recv(
        &self,
        r: u32,
        buf: &mut [u8],
        deadline: Option<Instant>,
        try_first: bool,
        watch: &Watch,
    ) -> Result<usize, PipeError> {
        self.recv_keeping(r, buf, deadline, try_first, watch, &|| false)
    }

    /// [`Pipe::recv`] that, when `keep_offer()` says so as it gives up, leaves the offer open
    /// it gives up (a poller of the same handle still relies on it).
    pub fn recv_keeping(
        &self,
        r: u32,
        buf: &mut [u8],
        deadline: Option<Instant>,
        try_first: bool,
        watch: &Watch,
        keep_offer: &dyn Fn() -> bool,
    ) -> Result<usize, PipeError> {
        self.check_slot(r)?;
        let closed = || watch.gone(self.senders().load(SeqCst), self.sender_attaches().load(SeqCst));
        let st = self.state(r);
        let w = st.load(Acquire);
        let s = State::decode(w);
        match s.kind {
            IDLE => {
                if closed() {
                    return Err(PipeError::Closed);
                }
                let offered = s.with(OFFERED, s.n.wrapping_add(1), 0);
                // A poller of this handle may open it first: then it is open.
                if st.compare_exchange(w, offered, AcqRel, Relaxed).is_ok() {
                    self.ring_offers();
                }
            }
            OFFERED | CLAIMED | FILLED => {}
            _ => return Err(PipeError::Corrupt("receiver slot is dead")),
        }
        // A try keeps the offer open for a spin, or, when senders sleep
        // waiting for offers, for as long as waking one takes.
        let deadline = if try_first {
            let grace = if self.offer_sleepers().load(SeqCst) > 0 { 500 } else { 20 };
            Some(Instant::now() + std::time::Duration::from_micros(grace))
        } else {
            deadline
        };
        let mut spins = 0u32;
        let mut expired = false;
        loop {
            let w = st.load(Acquire);
            let s = State::decode(w);
            match s.kind {
                FILLED => {
                    watch.saw.store(true, Relaxed);
                    crate::fault::point("pipe.recv.filled");
                    match self.take(r, w, buf)? {
                        Some(n) => return Ok(n),
                        // The sender withdrew it at its deadline: our offer
                        // is open again.
                        None => continue,
                    }
                }
                // A sender is copying into our buffer right now: spin
                // through a large copy (waking from a futex costs more than
                // copying a megabyte here), then sleep, until the deadline.
                // The offer cannot be withdrawn now; the copy goes on, and
                // the next receive through this handle takes the message
                // (or the sender withdraws it at its own deadline).
                CLAIMED => {
                    let late = spins.is_multiple_of(64) && deadline.is_some_and(|d| Instant::now() >= d);
                    let late = late
                        || (spins >= SPIN_WHILE_COPYING
                            && Self::nap(self.bell(r), self.recv_waiting(r), deadline, || st.load(SeqCst) != w));
                    if late {
                        return Err(if try_first { PipeError::WouldBlock } else { PipeError::TimedOut });
                    }
                    if spins < SPIN_WHILE_COPYING {
                        // This branch looks at the deadline itself (above).
                        crate::spin::pause(spins, None);
                        spins += 1;
                    }
                    continue;
                }
                OFFERED => {
                    let closed = closed();
                    expired |= deadline.is_some_and(|d| Instant::now() >= d);
                    if closed || expired {
                        // Withdraw the offer, unless a sender claims it first
                        // (or a poller keeps it open).
                        if keep_offer() || st.compare_exchange(w, s.with(IDLE, s.n, 0), AcqRel, Relaxed).is_ok() {
                            return Err(if closed {
                                PipeError::Closed
                            } else if try_first {
                                PipeError::WouldBlock
                            } else {
                                PipeError::TimedOut
                            });
                        }
                        continue;
                    }
                }
                // Withdrawn under us (a poller of this handle that was the
                // last user of the offer): open it again.
                IDLE => {
                    if st.compare_exchange(w, s.with(OFFERED, s.n.wrapping_add(1), 0), AcqRel, Relaxed).is_ok() {
                        self.ring_offers();
                    }
                    continue;
                }
                _ => return Err(PipeError::Corrupt("receiver slot in an impossible state")),
            }
            if spins < SPIN || try_first {
                // The deadline is looked at once the offer is in (above).
                crate::spin::pause(spins, None);
                spins += 1;
                continue;
            }
            let ready = || State::decode(st.load(SeqCst)).kind != OFFERED || closed();
            if Self::nap(self.bell(r), self.recv_waiting(r), deadline, ready) {
                expired = true;
            }
        }
    }

    /// Copies the message of filled state `filled` out and moves the slot
    /// on. `Ok(None)`: the state changed under us (its sender withdrew it,
    /// or another receive of this handle took it), so the copy is void.
    fn take(&self, r: u32, filled: u64, buf: &mut [u8]) -> Result<Option<usize>, PipeError> {
        let len = self.len(r).load(Relaxed) as usize;
        if len > self.layout.buffer as usize {
            return Err(PipeError::Corrupt("message length exceeds the buffer"));
        }
        let n = len.min(buf.len());
        // SAFETY: FILLED means the sender finished writing; the range lies
        // in the buffer (length checked).
        unsafe { std::ptr::copy_nonoverlapping(self.buffer(r), buf.as_mut_ptr(), n) };
        let s = State::decode(filled);
        if self.state(r).compare_exchange(filled, s.with(IDLE, s.n, 0), AcqRel, Relaxed).is_err() {
            return Ok(None);
        }
        self.ring(r);
        Ok(Some(len))
    }

    // ---- polling ----

    /// Receiver slot `r`'s readiness: ready when a sender has filled its
    /// offer; closed at end of file (no sender left, nothing in flight).
    pub fn recv_readiness(&self, r: u32, watch: &Watch) -> Result<(bool, bool), PipeError> {
        self.check_slot(r)?;
        let kind = State::decode(self.state(r).load(SeqCst)).kind;
        match kind {
            FILLED => Ok((true, false)),
            IDLE | OFFERED | CLAIMED => {
                let closed =
                    kind != CLAIMED && watch.gone(self.senders().load(SeqCst), self.sender_attaches().load(SeqCst));
                Ok((false, closed))
            }
            _ => Err(PipeError::Corrupt("receiver slot is dead")),
        }
    }

    /// Opens slot `r`'s offer for a poller (a later receive takes what a
    /// sender puts there); already open or filled is fine.
    pub fn open_offer(&self, r: u32) -> Result<(), PipeError> {
        self.check_slot(r)?;
        let st = self.state(r);
        let w = st.load(Acquire);
        let s = State::decode(w);
        if s.kind == IDLE && st.compare_exchange(w, s.with(OFFERED, s.n.wrapping_add(1), 0), AcqRel, Relaxed).is_ok() {
            self.ring_offers();
        }
        Ok(())
    }

    /// Withdraws slot `r`'s open offer. If a sender has filled it (or
    /// fills it meanwhile: a sender copying is waited for, up to a second),
    /// takes the message into `stash` (so the sender, which waits until a
    /// receiver has it, goes on) and returns its length.
    pub fn withdraw_offer(&self, r: u32, stash: &mut Vec<u8>) -> Option<usize> {
        self.check_slot(r).ok()?;
        let st = self.state(r);
        let give_up = Instant::now() + std::time::Duration::from_secs(1);
        loop {
            let w = st.load(Acquire);
            let s = State::decode(w);
            match s.kind {
                OFFERED => {
                    if st.compare_exchange(w, s.with(IDLE, s.n, 0), AcqRel, Relaxed).is_ok() {
                        return None;
                    }
                }
                FILLED => {
                    stash.resize(self.layout.buffer as usize, 0);
                    match self.take(r, w, stash) {
                        Ok(Some(n)) => {
                            stash.truncate(n);
                            return Some(n);
                        }
                        // Withdrawn by its sender: withdraw the offer.
                        Ok(None) => continue,
                        Err(_) => return None,
                    }
                }
                CLAIMED if Instant::now() < give_up => std::thread::yield_now(),
                _ => return None,
            }
        }
    }

    /// Takes the message a sender filled into slot `r`'s offer, if there is
    /// one; `None` if not (or if another receive of this handle took it
    /// first). Never waits and never opens or withdraws the offer.
    pub fn try_take(&self, r: u32, buf: &mut [u8]) -> Option<Result<usize, PipeError>> {
        if let Err(e) = self.check_slot(r) {
            return Some(Err(e));
        }
        let w = self.state(r).load(Acquire);
        if State::decode(w).kind != FILLED {
            return None;
        }
        self.take(r, w, buf).transpose()
    }

    /// A sender's readiness: ready when some receiver's offer (other than
    /// slot `skip`'s) is open; closed (broken pipe) when no receiver is left.
    pub fn send_readiness(&self, watch: &Watch, skip: Option<u32>) -> (bool, bool) {
        let open = (0..self.layout.receivers)
            .any(|r| Some(r) != skip && State::decode(self.state(r).load(SeqCst)).kind == OFFERED);
        let closed = !open && watch.gone(self.receivers().load(SeqCst), self.receiver_attaches().load(SeqCst));
        (open, closed)
    }

    /// Registers a poller: for a receiver slot `Some(r)` (rung when it is
    /// filled), for a sender `None` (rung when an offer opens).
    pub fn arm(&self, slot: Option<u32>) -> Result<(), PipeError> {
        let w = match slot {
            Some(r) => {
                self.check_slot(r)?;
                self.recv_polling(r)
            }
            None => self.offer_pollers(),
        };
        w.fetch_add(1, SeqCst);
        Ok(())
    }

    /// Undoes one [`Pipe::arm`].
    pub fn disarm(&self, slot: Option<u32>) {
        let w = match slot {
            Some(r) if self.check_slot(r).is_ok() => self.recv_polling(r),
            Some(_) => return,
            None => self.offer_pollers(),
        };
        let _ = w.fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1));
    }

    // ---- microkernel ----

    /// Counts a sender in or out (`attached`: a new one came); the last one
    /// out wakes every receiver (they see end of file).
    pub fn set_senders(&self, n: u32, attached: bool) {
        if attached {
            self.sender_attaches().fetch_add(1, SeqCst);
        }
        self.senders().store(n, SeqCst);
        if n == 0 {
            for r in 0..self.layout.receivers {
                self.ring(r);
            }
        }
    }

    /// Counts a receiver in or out (`attached`: a new one came); every
    /// change wakes senders waiting for offers (the last one out: they see
    /// a broken pipe).
    pub fn set_receivers(&self, n: u32, attached: bool) {
        if attached {
            self.receiver_attaches().fetch_add(1, SeqCst);
        }
        self.receivers().store(n, SeqCst);
        self.ring_offers();
    }

    /// Whether slot `r` may be given to a new receiver: not while a sender
    /// still holds the offer its dead receiver had.
    pub fn slot_free(&self, r: u32) -> bool {
        r < self.layout.receivers && State::decode(self.state(r).load(SeqCst)).kind != DEAD_HELD
    }

    /// Prepares slot `r` for a new receiver: a new generation, idle.
    pub fn reset_slot(&self, r: u32) -> Result<(), PipeError> {
        self.check_slot(r)?;
        let s = State::decode(self.state(r).load(SeqCst));
        let fresh = State { kind: IDLE, gen: s.gen.wrapping_add(1), n: s.n, h: 0 };
        self.state(r).store(fresh.encode(), SeqCst);
        // A dead receiver's poll registrations go with its slot.
        self.recv_polling(r).store(0, SeqCst);
        self.ring(r);
        Ok(())
    }

    /// A receiver's handle is gone: its slot becomes `DEAD`, or `DEAD_HELD`
    /// if a sender holds its offer (that sender learns the message was not
    /// taken). Returns whether the slot is held (not reusable yet).
    pub fn receiver_gone(&self, r: u32) -> Result<bool, PipeError> {
        self.check_slot(r)?;
        let st = self.state(r);
        // Bounded: a holder that keeps rewriting the word gets DEAD stored.
        for _ in 0..1000 {
            let w = st.load(SeqCst);
            let s = State::decode(w);
            let (kind, h) = match s.kind {
                CLAIMED | FILLED => (DEAD_HELD, s.h),
                _ => (DEAD, 0),
            };
            if st.compare_exchange(w, s.with(kind, s.n, h), SeqCst, SeqCst).is_ok() {
                self.ring(r);
                return Ok(kind == DEAD_HELD);
            }
        }
        let s = State::decode(st.load(SeqCst));
        st.store(s.with(DEAD, s.n, 0), SeqCst);
        self.ring(r);
        Ok(false)
    }

    /// A sender's handle (holder `h`) is gone: offers it had claimed but not
    /// filled open again for other senders, and slots it held for dead
    /// receivers are freed. Returns how many offers reopened.
    pub fn sender_gone(&self, h: u32) -> u32 {
        let mut reopened = 0;
        for r in 0..self.layout.receivers {
            let st = self.state(r);
            let w = st.load(SeqCst);
            let s = State::decode(w);
            if s.h as u32 != h {
                continue;
            }
            let next = match s.kind {
                CLAIMED => s.with(OFFERED, s.n, 0),
                DEAD_HELD => s.with(DEAD, s.n, 0),
                _ => continue,
            };
            if st.compare_exchange(w, next, SeqCst, SeqCst).is_ok() {
                if s.kind == CLAIMED {
                    reopened += 1;
                    self.ring_offers();
                }
                self.ring(r);
            }
        }
        reopened
    }
}

/// What an end has seen of the other side, for telling "gone" from "not
/// yet come": the other side is gone when none is left and either this end
/// saw one or one attached after this end opened.
#[derive(Debug, Default)]
pub struct Watch {
    /// This end has seen the other side (set on every rendezvous).
    pub saw: std::sync::atomic::AtomicBool,
    /// The other side's attach count when this end opened.
    pub attaches_at_open: u32,
}

impl Watch {
    /// A watch for an end opened when the other side had made `attaches`.
    pub fn new(attaches: u32) -> Watch {
        Watch { saw: Default::default(), attaches_at_open: attaches }
    }

    fn gone(&self, live: u32, attaches: u32) -> bool {
        if live > 0 {
            self.saw.store(true, Relaxed);
            return false;
        }
        self.saw.load(Relaxed) || attaches != self.attaches_at_open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use comesg_sys::memfd;
    use std::sync::Arc;

    fn pipe(layout: PipeLayout) -> Pipe {
        let c = memfd::create_segment("c", layout.control_len() as u64).unwrap();
        let d = memfd::create_segment("d", layout.data_len() as u64).unwrap();
        Pipe::new(
            layout,
            Mapping::map(&c, layout.control_len(), Access::ReadWrite).unwrap(),
            Mapping::map(&d, layout.data_len(), Access::ReadWrite).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn state_round_trips() {
        let s = State { kind: FILLED, gen: 0x1abc, n: u32::MAX, h: 65535 };
        assert_eq!(State::decode(s.encode()), s);
    }

    #[test]
    fn a_send_waits_for_a_receiver_and_returns_once_taken() {
        let p = Arc::new(pipe(PipeLayout { buffer: 16, receivers: 2 }));
        p.set_senders(1, true);
        p.set_receivers(1, true);
        let w = Watch::default();
        assert_eq!(p.send(0, b"x", None, true, &w), Err(PipeError::WouldBlock));
        assert_eq!(p.send(0, &[0; 17], None, false, &w), Err(PipeError::TooLong { len: 17, buffer: 16 }));
        let p2 = p.clone();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            let n = p2.recv(1, &mut buf, None, false, &Default::default()).unwrap();
            buf[..n].to_vec()
        });
        p.send(0, b"hello", None, false, &w).unwrap();
        assert_eq!(t.join().unwrap(), b"hello");
        let mut buf = [0u8; 16];
        let saw = Watch::default();
        let d = Instant::now() + std::time::Duration::from_millis(20);
        assert_eq!(p.recv(1, &mut buf, Some(d), false, &saw), Err(PipeError::TimedOut));
        assert_eq!(p.recv(1, &mut buf, None, true, &saw), Err(PipeError::WouldBlock));
        p.set_senders(0, false);
        assert_eq!(p.recv(1, &mut buf, None, false, &saw), Err(PipeError::Closed));
        // A receiver that never saw a sender waits for one instead.
        let fresh = Watch::new(p.attaches().0);
        let d = Instant::now() + std::time::Duration::from_millis(20);
        assert_eq!(p.recv(1, &mut buf, Some(d), false, &fresh), Err(PipeError::TimedOut));
    }

    /// A sender whose deadline passes while its message sits in an offer
    /// races the receiver's take: in every round exactly one of "the send
    /// succeeded" and "the message was never received" holds.
    #[test]
    fn a_withdrawn_message_is_never_received_and_a_taken_one_is_never_withdrawn() {
        let p = Arc::new(pipe(PipeLayout { buffer: 16, receivers: 1 }));
        p.set_senders(1, true);
        p.set_receivers(1, true);
        let w = Watch::default();
        let (mut delivered, mut withdrawn) = (0, 0);
        for round in 0..300u32 {
            p.open_offer(0).unwrap();
            let p2 = p.clone();
            let rx = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_micros(u64::from(round * 7919 % 300)));
                let mut buf = [0u8; 16];
                match p2.try_take(0, &mut buf) {
                    Some(Ok(n)) => Some(buf[..n].to_vec()),
                    Some(Err(e)) => panic!("take failed: {e}"),
                    None => None,
                }
            });
            let msg = round.to_le_bytes();
            // Mostly deadlines inside the receiver's delay; every tenth one
            // generous, so that deliveries happen even on a loaded machine.
            let patience = if round % 10 == 0 { 50_000 } else { 100 };
            let d = Instant::now() + std::time::Duration::from_micros(patience);
            let sent = p.send(0, &msg, Some(d), false, &w);
            let got = rx.join().unwrap();
            match sent {
                Ok(()) => {
                    assert_eq!(got.as_deref(), Some(&msg[..]), "round {round}: sent but not received");
                    delivered += 1;
                }
                Err(PipeError::TimedOut) => {
                    assert_eq!(got, None, "round {round}: timed out but received");
                    // The offer is open again, and nothing is in it.
                    assert_eq!(State::decode(p.state(0).load(SeqCst)).kind, OFFERED, "round {round}");
                    withdrawn += 1;
                }
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        // Both outcomes happened, so both sides of the race were exercised.
        assert!(delivered > 0 && withdrawn > 0, "delivered {delivered}, withdrawn {withdrawn}");
        // A try send into an offer nobody takes gives up after its grace.
        let t0 = Instant::now();
        assert_eq!(p.send(0, b"try", None, true, &w), Err(PipeError::WouldBlock));
        assert!(t0.elapsed() >= TRY_TAKE_GRACE);
        assert_eq!(p.try_take(0, &mut [0u8; 16]), None, "withdrawn");
    }

    #[test]
    fn deaths_reopen_offers_and_fail_waiting_senders() {
        let p = Arc::new(pipe(PipeLayout { buffer: 16, receivers: 1 }));
        p.set_senders(2, true);
        p.set_receivers(1, true);
        // A receiver offers; sender 5 claims and "dies" before filling.
        let offered = State { kind: OFFERED, gen: 0, n: 1, h: 0 };
        p.state(0).store(offered.encode(), SeqCst);
        assert!(p.claim_offer(5, 0, None).is_some());
        assert_eq!(p.sender_gone(5), 1);
        assert_eq!(State::decode(p.state(0).load(SeqCst)).kind, OFFERED);
        // Another sender fills; the receiver dies before taking: the slot
        // stays held until the sender has seen it.
        let p2 = p.clone();
        let t = std::thread::spawn(move || p2.send(1, b"m", None, false, &Watch::default()));
        while State::decode(p.state(0).load(SeqCst)).kind != FILLED {
            std::thread::yield_now();
        }
        assert_eq!(p.receiver_gone(0), Ok(true));
        assert_eq!(t.join().unwrap(), Err(PipeError::ReceiverDied));
        assert!(p.slot_free(0), "the sender let go");
        p.reset_slot(0).unwrap();
        assert_eq!(State::decode(p.state(0).load(SeqCst)), State { kind: IDLE, gen: 1, n: 1, h: 0 });
        // A receiver that took its message and then died: the sender still
        // waiting sees "taken", not "died".
        p.state(0).store(State { kind: FILLED, gen: 1, n: 2, h: 3 }.encode(), SeqCst);
        let claimed = State { kind: CLAIMED, gen: 1, n: 2, h: 3 };
        p.state(0).store(State { kind: IDLE, gen: 1, n: 2, h: 0 }.encode(), SeqCst);
        assert_eq!(p.receiver_gone(0), Ok(false));
        assert_eq!(p.await_taken(0, claimed, None), Ok(()));
    }
}
