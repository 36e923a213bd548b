//! Coservice call slots and the service header.
//!
//! A coservice is a COCHANNEL of requests (callers send, the provider's
//! workers receive: anycast, so whichever worker is idle takes the next
//! call) plus one **call segment per caller**, shared by that caller and the
//! provider only. A call goes:
//!
//! 1. the caller writes the request into a free slot of its call segment and
//!    sets the slot `PENDING`;
//! 2. it sends a [`Ticket`] (its caller number, slot, call number) on the
//!    request channel;
//! 3. a worker receives the ticket, claims the slot (`PENDING` to
//!    `RUNNING`, compare-and-swap, so a forged or repeated ticket runs
//!    nothing twice), runs the handler, writes the response over the request,
//!    and sets the slot `DONE`, waking the caller only if it sleeps;
//! 4. the caller, spinning and then sleeping on the slot's state word, reads
//!    the response and frees the slot.
//!
//! No step makes a wake-up call while the other side is spinning. A caller
//! can only write its own call segment, so it can neither read nor answer
//! another caller's calls; a forged ticket names a slot that is not
//! `PENDING` (dropped) or a real pending call (run once, as it would be).
//!
//! Call segment layout: line 0 holds `dead` (u32, set by the microkernel
//! when the provider is gone) and `caller_gone` (u32, set when the caller
//! is); then `slots` slots, each a
//! 64-byte header (state u32, waiting u32, length u32, worker u32, call
//! number u64) followed by `slot_size` data bytes, line-aligned. `waiting`
//! has bit 0 set while the caller sleeps on the state word and bit 1 while
//! it polls (then the worker rings the service's bell).
//!
//! Service header (provider writes, callers map read-only): line 0 holds
//! the departure count at offset 8 (u64, bumped by the microkernel when a
//! caller goes, so that workers look for segments to drop);
//! then one line per worker with its call count.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::time::Instant;

use comesg_sys::futex::{self, Wake};
use comesg_sys::mapping::{Access, Mapping};

const LINE: usize = 64;
/// Largest request or response (1 MiB).
pub const MAX_CALL: u32 = 1 << 20;
/// Most call slots per caller.
pub const MAX_CALL_SLOTS: u32 = 1024;
/// Most workers per service.
pub const MAX_WORKERS: u32 = 256;

const FREE: u32 = 0;
const PENDING: u32 = 1;
const RUNNING: u32 = 2;
const DONE: u32 = 3;
/// The provider went before the call was done (set by the microkernel).
const DEAD: u32 = 4;

/// Spin rounds after which a waiting caller starts fetching the response
/// (not at once: the worker is still reading the request from that line).
const PREFETCH_AFTER: u32 = 8;

/// `waiting` bits: the caller sleeps on the state word; it polls.
const SLEEPING: u32 = 1;
const POLLING: u32 = 2;

/// Where a call stands ([`CallSegment::call_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// Posted or running.
    Running,
    /// The response is ready.
    Done,
    /// The provider went before finishing it.
    Dead,
    /// The slot holds a state no honest peer writes.
    Corrupt,
}

/// Shape of a call segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLayout {
    /// Calls a caller may have in flight.
    pub slots: u32,
    /// Largest request or response in bytes.
    pub slot_size: u32,
}

/// Why a call shape is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("call slots must be 1..={MAX_CALL_SLOTS} of 1..={MAX_CALL} bytes (got {slots} of {slot_size})")]
pub struct CallLayoutError {
    slots: u32,
    slot_size: u32,
}

impl CallLayout {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), CallLayoutError> {
        if self.slots == 0 || self.slots > MAX_CALL_SLOTS || self.slot_size == 0 || self.slot_size > MAX_CALL {
            return Err(CallLayoutError { slots: self.slots, slot_size: self.slot_size });
        }
        Ok(())
    }

    fn stride(&self) -> usize {
        LINE + (self.slot_size as usize).next_multiple_of(LINE)
    }

    /// Bytes of a call segment.
    pub fn segment_len(&self) -> usize {
        LINE + self.slots as usize * self.stride()
    }
}

/// What a call ticket on the request channel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The caller's number in the service.
    pub caller: u32,
    /// Slot in its call segment.
    pub slot: u32,
    /// The call's number (for tracing; the slot state decides).
    pub call: u64,
}

impl Ticket {
    /// Bytes of an encoded ticket.
    pub const LEN: usize = 16;

    /// Encodes the ticket.
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&self.caller.to_le_bytes());
        b[4..8].copy_from_slice(&self.slot.to_le_bytes());
        b[8..].copy_from_slice(&self.call.to_le_bytes());
        b
    }

    /// Decodes a ticket (any 16 bytes decode; the slot state is the check).
    pub fn decode(b: &[u8]) -> Option<Ticket> {
        let b: &[u8; 16] = b.try_into().ok()?;
        let word = |r: std::ops::Range<usize>| b[r].iter().rev().fold(0u64, |a, &x| a << 8 | x as u64);
        Some(Ticket { caller: word(0..4) as u32, slot: word(4..8) as u32, call: word(8..16) })
    }
}

/// Why waiting for a response ended without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitEnd {
    /// The deadline passed (the call may still run).
    TimedOut,
    /// The provider is gone.
    Dead,
    /// The slot holds a state no honest peer writes.
    Corrupt,
}

/// One mapping of a caller's call segment.
#[derive(Debug)]
pub struct CallSegment {
    map: Mapping,
    layout: CallLayout,
}

impl CallSegment {
    /// Wraps a read-write mapping of a segment of `layout`.
    pub fn new(layout: CallLayout, map: Mapping) -> Result<CallSegment, &'static str> {
        layout.validate().map_err(|_| "invalid call layout")?;
        if map.len() < layout.segment_len() {
            return Err("call segment shorter than its layout");
        }
        if map.access() != Access::ReadWrite {
            return Err("call segment mapped read-only");
        }
        Ok(CallSegment { map, layout })
    }

    /// The shape.
    pub fn layout(&self) -> CallLayout {
        self.layout
    }

    fn word32(&self, off: usize) -> &AtomicU32 {
        &self.map.words32()[off / 4]
    }

    fn slot_off(&self, slot: u32) -> usize {
        LINE + slot as usize * self.layout.stride()
    }

    fn state(&self, slot: u32) -> &AtomicU32 {
        self.word32(self.slot_off(slot))
    }

    fn waiting(&self, slot: u32) -> &AtomicU32 {
        self.word32(self.slot_off(slot) + 4)
    }

    fn len(&self, slot: u32) -> &AtomicU32 {
        self.word32(self.slot_off(slot) + 8)
    }

    fn worker(&self, slot: u32) -> &AtomicU32 {
        self.word32(self.slot_off(slot) + 12)
    }

    fn data(&self, slot: u32) -> *mut u8 {
        // SAFETY: slot < slots (callers check), so the data lies inside the
        // mapping (segment_len covers every slot's header and data).
        unsafe { self.map.as_ptr().add(self.slot_off(slot) + LINE) }
    }

    fn check_slot(&self, slot: u32) -> Result<(), &'static str> {
        if slot < self.layout.slots {
            Ok(())
        } else {
            Err("slot out of range")
        }
    }

    /// Whether the microkernel marked the caller gone (its provider then
    /// drops the segment).
    pub fn caller_gone(&self) -> bool {
        self.word32(4).load(Acquire) != 0
    }

    /// Marks the caller gone (microkernel).
    pub fn mark_caller_gone(&self) {
        self.word32(4).store(1, Release);
    }

    /// Whether the microkernel marked the provider gone.
    pub fn is_dead(&self) -> bool {
        self.word32(0).load(SeqCst) != 0
    }

    /// Marks the provider gone and wakes every sleeping caller (microkernel).
    /// Every unfinished call's state word becomes `DEAD`: a caller sleeps
    /// on that word, so one about to sleep finds it changed and returns
    /// rather than sleeping through the wake-up.
    pub fn mark_dead(&self) {
        self.word32(0).store(1, SeqCst);
        for s in 0..self.layout.slots {
            let state = self.state(s);
            let mut cur = state.load(SeqCst);
            while cur == PENDING || cur == RUNNING {
                match state.compare_exchange(cur, DEAD, SeqCst, SeqCst) {
                    Ok(_) => break,
                    Err(now) => cur = now,
                }
            }
            if self.waiting(s).load(SeqCst) & SLEEPING != 0 {
                futex::wake_all(state);
            }
        }
    }

    // ---- caller side ----

    /// Writes `req` into free slot `slot` and marks it pending. The caller
    /// owns `slot` (its private free list says so).
    pub fn post(&self, slot: u32, req: &[u8]) -> Result<(), &'static str> {
        self.check_slot(slot)?;
        if req.len() > self.layout.slot_size as usize {
            return Err("request longer than a call slot");
        }
        // SAFETY: the slot is FREE and owned by this caller; no honest
        // worker touches it until it is PENDING.
        unsafe { std::ptr::copy_nonoverlapping(req.as_ptr(), self.data(slot), req.len()) };
        self.len(slot).store(req.len() as u32, Relaxed);
        self.state(slot).store(PENDING, Release);
        crate::fault::point("service.call.posted");
        Ok(())
    }

    /// Waits until the call in `slot` is done, spinning first, then
    /// sleeping on the state word. `Ok` means the response is ready.
    pub fn wait_done(&self, slot: u32, deadline: Option<Instant>) -> Result<(), WaitEnd> {
        self.check_slot(slot).map_err(|_| WaitEnd::Corrupt)?;
        let state = self.state(slot);
        let mut spin = crate::spin::Spin::new(deadline);
        loop {
            match state.load(Acquire) {
                DONE => return Ok(()),
                DEAD => return Err(WaitEnd::Dead),
                PENDING | RUNNING => {}
                _ => return Err(WaitEnd::Corrupt),
            }
            // Fetch the response's first line while waiting, so that it
            // arrives alongside the DONE state instead of after it (as a
            // COCHANNEL receiver does with the next message's data line).
            if spin.rounds() >= PREFETCH_AFTER {
                comesg_sys::hint::prefetch::<false>(self.data(slot));
            }
            if spin.rounds() % 64 == 63 && self.is_dead() {
                return Err(WaitEnd::Dead);
            }
            if !spin.round() {
                break;
            }
        }
        loop {
            // Dekker with the worker's DONE store and the kernel's DEAD
            // store: register, then re-check; they store, then check us.
            // Both change the word we sleep on, so a store between our
            // check and our sleep makes the sleep return at once.
            self.waiting(slot).store(SLEEPING, SeqCst);
            let seen = state.load(SeqCst);
            let dead = self.is_dead();
            let r = match seen {
                DONE => Some(Ok(())),
                DEAD => Some(Err(WaitEnd::Dead)),
                PENDING | RUNNING if dead => Some(Err(WaitEnd::Dead)),
                PENDING | RUNNING => None,
                _ => Some(Err(WaitEnd::Corrupt)),
            };
            if let Some(r) = r {
                self.waiting(slot).store(0, Relaxed);
                return r;
            }
            let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let woke = match timeout {
                Some(t) if t.is_zero() => Wake::TimedOut,
                t => futex::wait(state, seen, t),
            };
            self.waiting(slot).store(0, Relaxed);
            if woke == Wake::TimedOut && deadline.is_some_and(|d| Instant::now() >= d) {
                return match state.load(Acquire) {
                    DONE => Ok(()),
                    _ => Err(WaitEnd::TimedOut),
                };
            }
        }
    }

    /// The response in `slot` (after [`CallSegment::wait_done`]) and the
    /// worker that wrote it; copies it out and frees the slot.
    pub fn take_response(&self, slot: u32) -> Result<(Vec<u8>, u32), &'static str> {
        self.check_slot(slot)?;
        if self.state(slot).load(Acquire) != DONE {
            return Err("response not ready");
        }
        let len = self.len(slot).load(Relaxed);
        if len > self.layout.slot_size {
            self.state(slot).store(FREE, Release);
            return Err("response length exceeds the call slot");
        }
        // SAFETY: DONE means the worker finished writing and no honest
        // worker writes the slot again until it is PENDING; `len` is checked.
        let v = unsafe { std::slice::from_raw_parts(self.data(slot), len as usize) }.to_vec();
        let worker = self.worker(slot).load(Relaxed);
        self.state(slot).store(FREE, Release);
        Ok((v, worker))
    }

    /// Takes back a call no worker has started. Returns false if a worker
    /// already has it (the slot then stays busy until it is done).
    pub fn cancel(&self, slot: u32) -> bool {
        self.check_slot(slot).is_ok() && self.state(slot).compare_exchange(PENDING, FREE, AcqRel, Relaxed).is_ok()
    }

    /// Frees a slot whose call finished after its caller stopped waiting.
    /// Returns whether the slot is free now.
    pub fn reclaim(&self, slot: u32) -> bool {
        self.check_slot(slot).is_ok() && self.state(slot).compare_exchange(DONE, FREE, AcqRel, Relaxed).is_ok()
    }

    // ---- worker side ----

    /// Claims the pending call in `slot` for a worker; `None` if it is not
    /// pending (a stale or forged ticket). Returns the request.
    pub fn claim(&self, slot: u32) -> Option<Vec<u8>> {
        self.check_slot(slot).ok()?;
        // The request's first line comes from the caller's core, as the
        // state line does: ask for both at once rather than one after the
        // other (the compare-and-swap holds back every later load).
        comesg_sys::hint::prefetch::<false>(self.data(slot));
        self.state(slot).compare_exchange(PENDING, RUNNING, AcqRel, Relaxed).ok()?;
        crate::fault::point("service.worker.running");
        let len = self.len(slot).load(Relaxed).min(self.layout.slot_size) as usize;
        // SAFETY: RUNNING is ours; the caller does not write a slot it has
        // posted; `len` is clamped to the slot.
        Some(unsafe { std::slice::from_raw_parts(self.data(slot), len) }.to_vec())
    }

    /// Where the call in `slot` stands, for a poller.
    pub fn call_state(&self, slot: u32) -> CallState {
        if self.check_slot(slot).is_err() {
            return CallState::Corrupt;
        }
        match self.state(slot).load(SeqCst) {
            DONE => CallState::Done,
            DEAD => CallState::Dead,
            PENDING | RUNNING if self.is_dead() => CallState::Dead,
            PENDING | RUNNING => CallState::Running,
            _ => CallState::Corrupt,
        }
    }

    /// Registers the caller as polling `slot`: the worker that completes
    /// it rings the service's bell. Re-check [`CallSegment::call_state`]
    /// after this, before sleeping.
    pub fn arm(&self, slot: u32) {
        if self.check_slot(slot).is_ok() {
            self.waiting(slot).fetch_or(POLLING, SeqCst);
        }
    }

    /// Undoes [`CallSegment::arm`].
    pub fn disarm(&self, slot: u32) {
        if self.check_slot(slot).is_ok() {
            self.waiting(slot).fetch_and(!POLLING, SeqCst);
        }
    }

    /// Writes the response to the call claimed in `slot` and wakes the
    /// caller if it sleeps (or rings `bell` if it polls). A response longer
    /// than a slot is cut.
    pub fn complete(&self, slot: u32, worker: u32, resp: &[u8], bell: Option<&comesg_sys::bell::Bell>) {
        if self.check_slot(slot).is_err() || self.state(slot).load(Relaxed) != RUNNING {
            return;
        }
        let n = resp.len().min(self.layout.slot_size as usize);
        // SAFETY: the slot is RUNNING, claimed by this worker; the range lies
        // in the slot's data.
        unsafe { std::ptr::copy_nonoverlapping(resp.as_ptr(), self.data(slot), n) };
        self.len(slot).store(n as u32, Relaxed);
        self.worker(slot).store(worker, Relaxed);
        self.state(slot).store(DONE, SeqCst);
        let waiting = self.waiting(slot).load(SeqCst);
        if waiting & SLEEPING != 0 {
            futex::wake_all(self.state(slot));
        }
        if waiting & POLLING != 0 {
            if let Some(b) = bell {
                b.ring();
            }
        }
    }
}

/// Shape of a service header.
pub fn header_len(workers: u32) -> usize {
    LINE + workers as usize * LINE
}

/// One mapping of a service header.
#[derive(Debug)]
pub struct ServiceHeader {
    map: Mapping,
    workers: u32,
}

impl ServiceHeader {
    /// Wraps a mapping of a header for `workers` workers.
    pub fn new(workers: u32, map: Mapping) -> Result<ServiceHeader, &'static str> {
        if workers == 0 || workers > MAX_WORKERS {
            return Err("worker count out of range");
        }
        if map.len() < header_len(workers) {
            return Err("service header shorter than its layout");
        }
        Ok(ServiceHeader { map, workers })
    }

    /// Worker count.
    pub fn workers(&self) -> u32 {
        self.workers
    }

    fn word64(&self, off: usize) -> &AtomicU64 {
        &self.map.words()[off / 8]
    }

    /// Callers that have gone so far (bumped by the microkernel).
    pub fn departures(&self) -> u64 {
        self.word64(8).load(Acquire)
    }

    /// Records that a caller went (microkernel; read-write mapping).
    pub fn bump_departures(&self) {
        if self.map.access() == Access::ReadWrite {
            self.word64(8).fetch_add(1, Release);
        }
    }

    /// Adds one call to worker `w`'s count (provider).
    pub fn count_call(&self, w: u32) {
        if w < self.workers && self.map.access() == Access::ReadWrite {
            let c = self.word64(LINE + w as usize * LINE);
            c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
        }
    }

    /// Calls served per worker.
    pub fn calls(&self) -> Vec<u64> {
        (0..self.workers).map(|w| self.word64(LINE + w as usize * LINE).load(Relaxed)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use comesg_sys::memfd;

    fn seg(layout: CallLayout) -> CallSegment {
        let fd = memfd::create_segment("t", layout.segment_len() as u64).unwrap();
        CallSegment::new(layout, Mapping::map(&fd, layout.segment_len(), Access::ReadWrite).unwrap()).unwrap()
    }

    #[test]
    fn ticket_round_trips() {
        let t = Ticket { caller: 7, slot: 3, call: u64::MAX - 1 };
        assert_eq!(Ticket::decode(&t.encode()), Some(t));
        assert_eq!(Ticket::decode(&[0; 15]), None);
    }

    #[test]
    fn a_call_runs_once_and_stale_tickets_run_nothing() {
        let s = seg(CallLayout { slots: 2, slot_size: 16 });
        assert!(s.claim(0).is_none(), "free slot");
        s.post(0, b"ping").unwrap();
        assert_eq!(s.claim(0).as_deref(), Some(&b"ping"[..]));
        assert!(s.claim(0).is_none(), "already running");
        s.complete(0, 5, b"pong and more than sixteen bytes", None);
        s.wait_done(0, None).unwrap();
        let (resp, worker) = s.take_response(0).unwrap();
        assert_eq!((resp.as_slice(), worker), (&b"pong and more th"[..], 5));
        assert!(s.claim(0).is_none(), "freed");
        assert!(s.post(1, &[0; 17]).is_err());
        assert!(s.post(2, b"x").is_err());
        s.post(1, b"x").unwrap();
        assert!(s.cancel(1));
        assert!(s.claim(1).is_none());
    }

    #[test]
    fn a_sleeping_caller_is_woken_by_the_worker_and_by_death() {
        let s = std::sync::Arc::new(seg(CallLayout { slots: 2, slot_size: 16 }));
        s.post(0, b"a").unwrap();
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait_done(0, None));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(s.claim(0).is_some());
        s.complete(0, 0, b"b", None);
        assert_eq!(t.join().unwrap(), Ok(()));
        s.post(1, b"a").unwrap();
        let deadline = Instant::now() + std::time::Duration::from_millis(30);
        assert_eq!(s.wait_done(1, Some(deadline)), Err(WaitEnd::TimedOut));
        // The order that lost the wake-up before calls became DEAD: the
        // caller has registered and checked, then the kernel marks, then
        // the caller sleeps on the state it saw.
        let seen = s.state(1).load(SeqCst);
        s.mark_dead();
        assert_ne!(s.state(1).load(SeqCst), seen, "the word a caller sleeps on changed");
        assert_eq!(s.wait_done(1, None), Err(WaitEnd::Dead));
        assert!(s.claim(1).is_none() && !s.cancel(1));
        s.word32(0).store(0, SeqCst);
        s.post(1, b"a").unwrap();
        let s2 = s.clone();
        let t = std::thread::spawn(move || s2.wait_done(1, None));
        std::thread::sleep(std::time::Duration::from_millis(50));
        s.mark_dead();
        assert_eq!(t.join().unwrap(), Err(WaitEnd::Dead));
    }
}
