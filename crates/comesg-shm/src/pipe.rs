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
//!   sender and receiver counts (written by the microkernel) and the offer
//!   bell, then one 64-byte line per slot: state (u64), length (u32), bell
//!   (u32), receiver-sleeping (u32), sender-sleeping (u32);
//! - **data** (senders read-write, receivers read-only): the buffers, each
//!   starting a cache line.
//!
//! Slot state, one u64: kind (3 bits) | generation (13) | offer number (32) |
//! sender holder (16). `IDLE(n)` (offers up to `n` are over), `OFFERED(n)`,
//! `CLAIMED(n, h)`, `FILLED(n, h)`, `DEAD` (the receiver is gone). The
//! microkernel moves a dead receiver's slot to `DEAD` and a new receiver's to
//! `IDLE` of the next generation, so a sender that waits on a slot can tell
//! "taken" (same generation, offer number at or past its own, not `DEAD`)
//! from "receiver gone". A dead sender's `CLAIMED` goes back to `OFFERED`.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::time::Instant;

use comesg_sys::futex::{self, Wake};
use comesg_sys::mapping::{Access, Mapping};

const LINE: usize = 64;
/// Largest buffer per receiver (64 MiB).
pub const MAX_BUFFER: u32 = 64 << 20;
/// Most receivers of one pipe.
pub const MAX_RECEIVERS: u32 = 1024;
/// Spin rounds before sleeping.
const SPIN: u32 = 2048;

const IDLE: u64 = 0;
const OFFERED: u64 = 1;
const CLAIMED: u64 = 2;
const FILLED: u64 = 3;
const DEAD: u64 = 4;

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
        Ok(Pipe { layout, control, data })
    }

    /// The pipe's shape.
    pub fn layout(&self) -> PipeLayout {
        self.layout
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
    }

    fn ring_offers(&self) {
        self.offer_bell().fetch_add(1, SeqCst);
        if self.offer_sleepers().load(SeqCst) != 0 {
            futex::wake_all(self.offer_bell());
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
    pub fn send(&self, h: u32, msg: &[u8], deadline: Option<Instant>, try_first: bool) -> Result<(), PipeError> {
        if self.data.access() != Access::ReadWrite || h > u16::MAX as u32 {
            return Err(PipeError::NoRight);
        }
        if msg.len() > self.layout.buffer as usize {
            return Err(PipeError::TooLong { len: msg.len(), buffer: self.layout.buffer });
        }
        let start = h.wrapping_mul(0x9e37_79b9) % self.layout.receivers;
        let mut spins = 0u32;
        loop {
            if let Some((r, claimed)) = self.claim_offer(h as u16, start) {
                match self.fill(r, claimed, msg)? {
                    Some(()) => return self.await_taken(r, claimed),
                    // The receiver died while we copied: try another.
                    None => continue,
                }
            }
            if self.receivers().load(Acquire) == 0 {
                return Err(PipeError::Closed);
            }
            if try_first {
                return Err(PipeError::WouldBlock);
            }
            if spins < SPIN {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let open = || (0..self.layout.receivers).any(|r| State::decode(self.state(r).load(SeqCst)).kind == OFFERED);
            let ready = || open() || self.receivers().load(SeqCst) == 0;
            if Self::nap(self.offer_bell(), self.offer_sleepers(), deadline, ready) {
                return Err(PipeError::TimedOut);
            }
        }
    }

    fn claim_offer(&self, h: u16, start: u32) -> Option<(u32, State)> {
        let n = self.layout.receivers;
        for k in 0..n {
            let r = (start + k) % n;
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
    /// receiver died meanwhile.
    fn fill(&self, r: u32, claimed: State, msg: &[u8]) -> Result<Option<()>, PipeError> {
        // SAFETY: the offer is claimed by us (CAS above), so no honest peer
        // writes the buffer, and the receiver reads it only once FILLED; the
        // length was checked against the buffer size.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), self.buffer(r), msg.len()) };
        self.len(r).store(msg.len() as u32, Relaxed);
        let filled = claimed.with(FILLED, claimed.n, claimed.h);
        if self.state(r).compare_exchange(claimed.encode(), filled, AcqRel, Acquire).is_err() {
            return Ok(None);
        }
        self.ring(r);
        Ok(Some(()))
    }

    fn await_taken(&self, r: u32, claimed: State) -> Result<(), PipeError> {
        let filled = claimed.with(FILLED, claimed.n, claimed.h);
        let taken = |w: u64| {
            let s = State::decode(w);
            if s.gen != claimed.gen || s.kind == DEAD {
                Some(Err(PipeError::ReceiverDied))
            } else if w == filled {
                None
            } else {
                Some(Ok(()))
            }
        };
        let mut spins = 0u32;
        loop {
            if let Some(r) = taken(self.state(r).load(Acquire)) {
                return r;
            }
            if spins < SPIN {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            Self::nap(self.bell(r), self.send_waiting(r), None, || taken(self.state(r).load(SeqCst)).is_some());
        }
    }

    // ---- receiving ----

    /// Receives into `buf` through slot `r`: offers the buffer (or keeps the
    /// offer a previous timed-out call left open), waits until a sender
    /// fills it, copies the message out and returns its length (cut to
    /// `buf`, as `recv(2)` does).
    ///
    /// End of file ([`PipeError::Closed`]) is no sender left *after* this
    /// receiver has seen one (`saw_sender`, kept by the caller across
    /// calls), as a FIFO's reader waits for a first writer.
    pub fn recv(
        &self,
        r: u32,
        buf: &mut [u8],
        deadline: Option<Instant>,
        try_first: bool,
        saw_sender: &std::sync::atomic::AtomicBool,
    ) -> Result<usize, PipeError> {
        self.check_slot(r)?;
        let closed = || {
            if self.senders().load(SeqCst) > 0 {
                saw_sender.store(true, Relaxed);
                false
            } else {
                saw_sender.load(Relaxed)
            }
        };
        let st = self.state(r);
        let w = st.load(Acquire);
        let s = State::decode(w);
        match s.kind {
            IDLE => {
                if closed() {
                    return Err(PipeError::Closed);
                }
                let offered = s.with(OFFERED, s.n.wrapping_add(1), 0);
                if st.compare_exchange(w, offered, AcqRel, Relaxed).is_err() {
                    return Err(PipeError::Corrupt("receiver slot changed under its owner"));
                }
                self.ring_offers();
            }
            OFFERED | CLAIMED | FILLED => {}
            _ => return Err(PipeError::Corrupt("receiver slot is dead")),
        }
        let mut spins = 0u32;
        let mut last_try = try_first;
        loop {
            let w = st.load(Acquire);
            let s = State::decode(w);
            match s.kind {
                FILLED => return self.take(r, w, buf),
                CLAIMED => {}
                OFFERED => {
                    let closed = closed();
                    let expired = last_try || deadline.is_some_and(|d| Instant::now() >= d);
                    if closed || expired {
                        // Withdraw the offer, unless a sender claims it first.
                        if st.compare_exchange(w, s.with(IDLE, s.n, 0), AcqRel, Relaxed).is_ok() {
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
                _ => return Err(PipeError::Corrupt("receiver slot in an impossible state")),
            }
            if try_first {
                // One more look after a short spin: a sender may be copying.
                if spins < SPIN {
                    spins += 1;
                    std::hint::spin_loop();
                    continue;
                }
                last_try = true;
                continue;
            }
            if spins < SPIN {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let ready = || State::decode(st.load(SeqCst)).kind != OFFERED || closed();
            if Self::nap(self.bell(r), self.recv_waiting(r), deadline, ready) {
                last_try = true;
            }
        }
    }

    fn take(&self, r: u32, filled: u64, buf: &mut [u8]) -> Result<usize, PipeError> {
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
            return Err(PipeError::Corrupt("filled slot changed under its receiver"));
        }
        self.ring(r);
        Ok(len)
    }

    // ---- microkernel ----

    /// Counts a sender in or out; the last one out wakes every receiver
    /// (they see end of file).
    pub fn set_senders(&self, n: u32) {
        self.senders().store(n, SeqCst);
        if n == 0 {
            for r in 0..self.layout.receivers {
                self.ring(r);
            }
        }
    }

    /// Counts a receiver in or out; the last one out wakes every sender
    /// (they see a broken pipe).
    pub fn set_receivers(&self, n: u32) {
        self.receivers().store(n, SeqCst);
        self.ring_offers();
    }

    /// Prepares slot `r` for a new receiver: a new generation, idle.
    pub fn reset_slot(&self, r: u32) -> Result<(), PipeError> {
        self.check_slot(r)?;
        let s = State::decode(self.state(r).load(SeqCst));
        let fresh = State { kind: IDLE, gen: s.gen.wrapping_add(1), n: s.n, h: 0 };
        self.state(r).store(fresh.encode(), SeqCst);
        self.ring(r);
        Ok(())
    }

    /// A receiver's handle is gone: its slot becomes `DEAD`, and a sender
    /// waiting on it learns that its message was not taken.
    pub fn receiver_gone(&self, r: u32) -> Result<(), PipeError> {
        self.check_slot(r)?;
        let st = self.state(r);
        let mut w = st.load(SeqCst);
        loop {
            let s = State::decode(w);
            match st.compare_exchange(w, s.with(DEAD, s.n, 0), SeqCst, SeqCst) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        self.ring(r);
        Ok(())
    }

    /// A sender's handle (holder `h`) is gone: offers it had claimed but not
    /// filled open again for other senders. Returns how many.
    pub fn sender_gone(&self, h: u32) -> u32 {
        let mut reopened = 0;
        for r in 0..self.layout.receivers {
            let st = self.state(r);
            let w = st.load(SeqCst);
            let s = State::decode(w);
            if s.kind == CLAIMED
                && s.h as u32 == h
                && st.compare_exchange(w, s.with(OFFERED, s.n, 0), SeqCst, SeqCst).is_ok()
            {
                reopened += 1;
                self.ring(r);
                self.ring_offers();
            }
        }
        reopened
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
        p.set_senders(1);
        p.set_receivers(1);
        assert_eq!(p.send(0, b"x", None, true), Err(PipeError::WouldBlock));
        assert_eq!(p.send(0, &[0; 17], None, false), Err(PipeError::TooLong { len: 17, buffer: 16 }));
        let p2 = p.clone();
        let t = std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            let n = p2.recv(1, &mut buf, None, false, &Default::default()).unwrap();
            buf[..n].to_vec()
        });
        p.send(0, b"hello", None, false).unwrap();
        assert_eq!(t.join().unwrap(), b"hello");
        let mut buf = [0u8; 16];
        let saw = std::sync::atomic::AtomicBool::new(false);
        let d = Instant::now() + std::time::Duration::from_millis(20);
        assert_eq!(p.recv(1, &mut buf, Some(d), false, &saw), Err(PipeError::TimedOut));
        assert_eq!(p.recv(1, &mut buf, None, true, &saw), Err(PipeError::WouldBlock));
        p.set_senders(0);
        assert_eq!(p.recv(1, &mut buf, None, false, &saw), Err(PipeError::Closed));
        // A receiver that never saw a sender waits for one instead.
        let fresh = std::sync::atomic::AtomicBool::new(false);
        let d = Instant::now() + std::time::Duration::from_millis(20);
        assert_eq!(p.recv(1, &mut buf, Some(d), false, &fresh), Err(PipeError::TimedOut));
    }

    #[test]
    fn deaths_reopen_offers_and_fail_waiting_senders() {
        let p = Arc::new(pipe(PipeLayout { buffer: 16, receivers: 1 }));
        p.set_senders(2);
        p.set_receivers(1);
        // A receiver offers; sender 5 claims and "dies" before filling.
        let offered = State { kind: OFFERED, gen: 0, n: 1, h: 0 };
        p.state(0).store(offered.encode(), SeqCst);
        assert!(p.claim_offer(5, 0).is_some());
        assert_eq!(p.sender_gone(5), 1);
        assert_eq!(State::decode(p.state(0).load(SeqCst)).kind, OFFERED);
        // Another sender fills; the receiver dies before taking.
        let p2 = p.clone();
        let t = std::thread::spawn(move || p2.send(1, b"m", None, false));
        while State::decode(p.state(0).load(SeqCst)).kind != FILLED {
            std::thread::yield_now();
        }
        p.receiver_gone(0).unwrap();
        assert_eq!(t.join().unwrap(), Err(PipeError::ReceiverDied));
        p.reset_slot(0).unwrap();
        assert_eq!(State::decode(p.state(0).load(SeqCst)), State { kind: IDLE, gen: 1, n: 1, h: 0 });
    }
}
