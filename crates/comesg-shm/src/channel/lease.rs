//! The sole holder's lease: while a side of a channel has one holder, that
//! holder claims slots with plain stores instead of compare-and-swap.
//!
//! Every claim is a locked compare-and-swap (see `ring`), and a locked
//! instruction waits until every older store has left the store buffer,
//! including the previous message's lines, which the other side's core has
//! just pulled away. In a 64-byte stream between two threads that wait was
//! the largest single cost: with both claims made by plain stores (unsound
//! with two holders a side; measured for the estimate only) four
//! alternated runs of `cargo bench -p comesg-shm --bench ring_pingpong`
//! streamed 33-46 M msgs/s with 48-byte messages against 23-31 M. Most
//! channels have one sender and one receiver, so the microkernel, which
//! knows every holder, grants a side's **lease** to its holder while it is
//! the only one, and revokes it when a second one attaches.
//!
//! Two things must be exclusive for a plain store to stand in for the
//! compare-and-swap: the holder (no other holder of the side claims) and,
//! within its process, the thread (a handle may be shared by threads).
//!
//! - **Holders.** The lease word (line 1 of the side's segment, written by
//!   the microkernel) names the holder and an epoch that every change
//!   bumps. The microkernel revokes before it replies to the second
//!   holder's attach, so the newcomer sees the revocation. Every holder of
//!   the side (the old one too) settles each revocation before its next
//!   claim: it waits until the old holder is out of any claim it began
//!   under the lease (below). That takes a few dozen instructions of the
//!   old holder's; if it takes longer (the holder was descheduled or
//!   stopped inside its claim, or a hostile peer of the side forged the
//!   words), the claim reports `Full` or `Empty` for now, so no caller
//!   waits past its deadline. The microkernel grants again when the side is
//!   back to one holder, after repairing any holder that died.
//! - **Threads.** The first thread of a process that claims through a ring
//!   object becomes its owner, whether or not the lease is granted; only
//!   the owner uses the lease. Another thread that claims through the same
//!   object hands it over to shared use for good: it marks it draining,
//!   forces the barrier, waits (bounded, as above) until the owner is out
//!   of its claim, and marks it shared; threads claim by compare-and-swap
//!   only once it is shared. While it drains, claims report `Full` or
//!   `Empty`, and any thread's next claim finishes the handover.
//!
//! While claims wait so ([`Ring::lease_busy`]), nobody wakes a waiter when
//! the wait ends; blocking, `copoll` and async waiters nap instead.
//!
//! The wait is an asymmetric Dekker handshake. The lease holder's owner
//! thread writes its holder record's `claiming` word, then (only a compiler
//! fence between) checks lease and owner, claims, and clears `claiming`.
//! The revoker has changed the lease or the owner first, then forces a
//! barrier on every thread of every process that uses channels
//! (`membarrier`, see `comesg_sys::barrier::heavy`), then waits for
//! `claiming` to read 0: either the owner's write was visible to it, or the
//! owner's check comes after the barrier and sees the change. Where the
//! kernel refuses `membarrier`, the microkernel grants no lease. A revoker
//! whose own barrier fails (a seccomp filter, say) sleeps a millisecond
//! instead: far longer than a store takes to leave a store buffer, but a
//! matter of timing, not a guarantee.
//!
//! Not covered: a forked child that claims through a handle it inherited
//! (its parent's holder, claiming beside the parent; see
//! docs/lifecycle.md), and a signal handler that claims through a handle
//! whose owner thread it interrupted inside a claim.

use std::sync::atomic::Ordering::*;
use std::time::Duration;

use super::ring::{RingError, Side};
use super::Ring;

/// The lease word's flag: granted to the holder in the low 32 bits.
pub(super) const GRANTED: u64 = 1 << 63;
/// The bits a holder compares: flag and holder, not the epoch.
const MATCH: u64 = GRANTED | 0xffff_ffff;
/// Epochs take 31 bits; 0 means "never granted".
const EPOCH_MASK: u64 = 0x7fff_ffff;

/// Owner value of a ring object that threads share.
const SHARED: u64 = u64::MAX;
/// Owner value while a second thread's handover waits for the owner to
/// leave its claim; it becomes `SHARED` after.
const DRAINING: u64 = u64::MAX - 1;

/// Spins (about 15 ns each here) a claim waits for a holder to leave its
/// claim (a revocation, a handover) before it reports the ring busy for
/// now.
const SETTLE_SPINS: u32 = 2_000;

/// How long a revoker whose barrier failed waits before it trusts what it
/// reads of the old holder's `claiming` word.
const UNFENCED_GRACE: Duration = Duration::from_millis(1);

/// What a claim reports while it must wait for a holder to leave its
/// claim: "try again", as for a full or empty ring.
fn busy(side: Side) -> RingError {
    match side {
        Side::Send => RingError::Full,
        Side::Recv => RingError::Empty,
    }
}

fn epoch(word: u64) -> u32 {
    ((word >> 32) & EPOCH_MASK) as u32
}

fn next_epoch(word: u64) -> u64 {
    match (epoch(word) as u64 + 1) & EPOCH_MASK {
        0 => 1,
        e => e,
    }
}

thread_local! {
    /// Its address tells threads apart (never 0, `SHARED` or
    /// `DRAINING`). A thread that starts after the owner ended may get the
    /// same address and so inherit ownership, which is harmless: the owner
    /// is gone.
    static TOKEN: u8 = const { 0 };
}

#[inline]
fn thread_token() -> u64 {
    TOKEN.with(|t| t as *const u8 as u64)
}

/// This process's view of one ring's leases, per side: the owner thread and
/// the revocations settled. Process-local, not shared.
#[derive(Debug, Default)]
pub(super) struct LocalLease {
    owner: [std::sync::atomic::AtomicU64; 2],
    /// The last revocation whose old holder was seen out of its claim.
    checked: [std::sync::atomic::AtomicU32; 2],
    /// The last revocation the barrier was forced for.
    fenced: [std::sync::atomic::AtomicU32; 2],
    /// Whether the barrier of the handover to shared use was forced.
    handover_fenced: [std::sync::atomic::AtomicBool; 2],
}

/// A side's lease as the microkernel last set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Never granted.
    None,
    /// Granted to this holder.
    Granted {
        /// The sole holder.
        holder: u32,
        /// Bumped by every change.
        epoch: u32,
    },
    /// Revoked from this holder.
    Revoked {
        /// The last holder it was granted to.
        holder: u32,
        /// Bumped by every change.
        epoch: u32,
    },
}

impl Ring {
    /// Grants `side`'s lease to `sole`, its only holder, or revokes it
    /// (`None`); only the microkernel calls this, whenever the side's
    /// holders change, and before it replies to the holder that changed
    /// them. Without a working `membarrier` it never grants.
    pub fn set_lease(&self, side: Side, sole: Option<u32>) -> Result<(), RingError> {
        self.writable(side)?;
        let word = self.lease_word(side);
        let w = word.load(SeqCst);
        let next = match sole.filter(|_| comesg_sys::barrier::register()) {
            Some(h) => {
                self.check_holder(h)?;
                if w & MATCH == GRANTED | h as u64 {
                    return Ok(());
                }
                GRANTED | next_epoch(w) << 32 | h as u64
            }
            None if w & GRANTED == 0 => return Ok(()),
            None => next_epoch(w) << 32 | (w & 0xffff_ffff),
        };
        word.store(next, SeqCst);
        Ok(())
    }

    /// `side`'s lease as the segment says.
    pub fn lease(&self, side: Side) -> Lease {
        let w = self.lease_word(side).load(Acquire);
        let (holder, epoch) = (w as u32, epoch(w));
        match (w & GRANTED != 0, epoch) {
            (true, _) => Lease::Granted { holder, epoch },
            (false, 0) => Lease::None,
            (false, _) => Lease::Revoked { holder, epoch },
        }
    }

    /// Whether this thread may claim on `side` for `holder` with plain
    /// stores. If so it has announced the claim, and must call
    /// [`Ring::lease_leave`] once the claim is made or given up. While a
    /// revocation or a handover between threads waits for a holder to
    /// leave its claim, claims report `Full` or `Empty` (see
    /// [`Ring::lease_busy`]).
    #[inline(always)]
    pub(super) fn lease_enter(&self, side: Side, holder: u32) -> Result<bool, RingError> {
        let local = self.local_lease();
        let lease = self.lease_word(side);
        let w = lease.load(Acquire);
        if self.unsettled(side, w) {
            self.settle_revocation(side, w)?;
        }
        // Ownership is settled whatever the lease says, so that a thread
        // that claims by compare-and-swap now is never overtaken by one
        // that claims by plain store once a lease comes.
        let owner = &local.owner[side as usize];
        let o = owner.load(Acquire);
        if o == SHARED {
            return Ok(false);
        }
        let me = thread_token();
        if o != me && !self.take_ownership(side, holder, me)? {
            return Ok(false);
        }
        if w & MATCH != GRANTED | holder as u64 {
            return Ok(false);
        }
        Ok(self.announce(side, holder, me))
    }

    /// [`Ring::lease_enter`] for the case that matters on the data path:
    /// `holder` holds the lease and this thread owns the ring object's
    /// side. True if the claim is announced (then [`Ring::lease_leave`] is
    /// due); false, with nothing announced, in every other case, which
    /// [`Ring::lease_enter`] then sorts out.
    #[inline(always)]
    pub(super) fn lease_enter_sole(&self, side: Side, holder: u32) -> bool {
        self.lease_word(side).load(Acquire) & MATCH == GRANTED | holder as u64 && {
            let me = thread_token();
            self.local_lease().owner[side as usize].load(Acquire) == me && self.announce(side, holder, me)
        }
    }

    /// Announces a claim by owner thread `me` under `holder`'s lease, then
    /// checks lease and owner again: true if both still hold; false, with
    /// the announcement withdrawn, if either changed meanwhile.
    #[inline(always)]
    fn announce(&self, side: Side, holder: u32, me: u64) -> bool {
        let claiming = self.rec_claiming(side, holder);
        claiming.store(1, Relaxed);
        // The revoker forces the full barrier (see the module doc).
        comesg_sys::barrier::light();
        if self.local_lease().owner[side as usize].load(Relaxed) == me
            && self.lease_word(side).load(Acquire) & MATCH == GRANTED | holder as u64
        {
            return true;
        }
        claiming.store(0, Release);
        false
    }

    /// Ends a claim begun under the lease (see [`Ring::lease_enter`]).
    #[inline(always)]
    pub(super) fn lease_leave(&self, side: Side, holder: u32) {
        self.rec_claiming(side, holder).store(0, Release);
    }

    /// Whether claims on `side` wait for a holder to leave a claim it made
    /// under a lease (a revocation not yet settled, or a handover between
    /// threads): a claim that failed may then go through without anybody
    /// waking the waiter, so waiters nap instead of sleeping until woken.
    pub fn lease_busy(&self, side: Side) -> bool {
        self.unsettled(side, self.lease_word(side).load(Acquire))
            || self.local_lease().owner[side as usize].load(Acquire) == DRAINING
    }

    /// Settles a revocation on `side` for a probe that does not claim
    /// (readiness): whether a claim may go ahead now.
    pub fn lease_settled(&self, side: Side) -> bool {
        let w = self.lease_word(side).load(Acquire);
        !self.unsettled(side, w) || self.settle_revocation(side, w).is_ok()
    }

    /// Whether lease word `w` is a revocation this process has not seen
    /// the old holder out of its claim for yet.
    #[inline(always)]
    fn unsettled(&self, side: Side, w: u64) -> bool {
        w & GRANTED == 0 && epoch(w) != self.local_lease().checked[side as usize].load(Acquire)
    }

    /// Makes this thread the owner of the ring object's `side` if nobody
    /// is; if another thread is, hands the object over to shared use once
    /// that thread is out of any claim under the lease. Whether this thread
    /// owns it; `Full` or `Empty` while the handover waits.
    #[cold]
    fn take_ownership(&self, side: Side, holder: u32, me: u64) -> Result<bool, RingError> {
        let local = self.local_lease();
        let owner = &local.owner[side as usize];
        loop {
            match owner.load(Acquire) {
                o if o == me => return Ok(true),
                SHARED => return Ok(false),
                DRAINING => return self.finish_handover(side, holder).map(|()| false),
                0 => {
                    if owner.compare_exchange(0, me, AcqRel, Acquire).is_ok() {
                        return Ok(true);
                    }
                }
                o => {
                    if owner.compare_exchange(o, DRAINING, AcqRel, Acquire).is_ok() {
                        // Where this process's barrier registration failed
                        // the owner's announcement is followed by a full
                        // fence already (see `barrier::light`).
                        if comesg_sys::barrier::register() {
                            self.fence_claimants();
                        }
                        local.handover_fenced[side as usize].store(true, Release);
                        return self.finish_handover(side, holder).map(|()| false);
                    }
                }
            }
        }
    }

    /// Waits, a bounded time, for the barrier of a handover and for the
    /// owner thread to leave its claim; then the ring object is shared.
    /// The owner's claim is a few dozen instructions, but its holder
    /// record lies in the side's segment, which a hostile peer of the side
    /// may write: past the bound the claim reports `Full` or `Empty`, and
    /// any thread's next claim finishes the handover.
    fn finish_handover(&self, side: Side, holder: u32) -> Result<(), RingError> {
        let local = self.local_lease();
        let fenced = &local.handover_fenced[side as usize];
        let claiming = self.rec_claiming(side, holder);
        let mut spins = 0;
        while !fenced.load(Acquire) || claiming.load(Acquire) != 0 {
            if spins == SETTLE_SPINS {
                return Err(busy(side));
            }
            std::hint::spin_loop();
            spins += 1;
        }
        let _ = local.owner[side as usize].compare_exchange(DRAINING, SHARED, AcqRel, Acquire);
        Ok(())
    }

    /// The revoker's half of the handshake, once per revocation: a barrier,
    /// then a short wait for the old holder's `claiming` word to read 0.
    /// Its claim is a few dozen instructions; if the word stays up longer
    /// (the holder was descheduled or stopped inside it, or a hostile peer
    /// of this side set it), the claim reports `Full` or `Empty` and the
    /// caller tries again later (a blocking one within its deadline): no
    /// claim waits here without bound.
    #[cold]
    fn settle_revocation(&self, side: Side, w: u64) -> Result<(), RingError> {
        let local = self.local_lease();
        let e = epoch(w);
        if local.fenced[side as usize].load(Acquire) != e {
            self.fence_claimants();
            local.fenced[side as usize].store(e, Release);
        }
        // A holder index out of range is a hostile peer's: there is no
        // record to wait on, and the claim's own checks catch the rest.
        let h = w as u32;
        if self.check_holder(h).is_ok() {
            let claiming = self.rec_claiming(side, h);
            let mut spins = 0;
            while claiming.load(Acquire) != 0 {
                if spins == SETTLE_SPINS {
                    return Err(busy(side));
                }
                std::hint::spin_loop();
                spins += 1;
            }
        }
        local.checked[side as usize].store(e, Release);
        Ok(())
    }

    /// Forces a full barrier on every thread of every process that uses
    /// channels. Where `membarrier` fails, sleeps instead: a store leaves a
    /// store buffer within microseconds, so after a millisecond the old
    /// holder's announcement is visible in practice, though nothing
    /// guarantees it.
    fn fence_claimants(&self) {
        if !comesg_sys::barrier::heavy() {
            std::thread::sleep(UNFENCED_GRACE);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::channel::{blocking, Geometry};

    /// `n` views of one fresh ring, as `n` processes would map it (each its
    /// own `Ring` object); the first is the microkernel's.
    fn views(n: usize) -> Vec<Ring> {
        crate::channel::testing::views(Geometry { slot_size: 64, slots: 64, max_holders: 4 }, n)
    }

    /// `lease_enter` on view 1's senders' side, from a thread of its own.
    fn enter_elsewhere(v: &Arc<Vec<Ring>>) -> Result<bool, RingError> {
        let v = v.clone();
        std::thread::spawn(move || v[1].lease_enter(Side::Send, 0)).join().unwrap()
    }

    fn tagged(id: u64, seq: u64) -> [u8; 16] {
        let mut m = [0u8; 16];
        m[..8].copy_from_slice(&id.to_le_bytes());
        m[8..].copy_from_slice(&seq.to_le_bytes());
        m
    }

    /// Sends alternately in one piece (a lone sender's straight path when
    /// it holds the lease) and by claim, write and publish.
    fn send_all(ring: &Ring, holder: u32, id: u64, seqs: std::ops::Range<u64>, progress: &AtomicU64) {
        for seq in seqs {
            if seq % 2 == 0 {
                blocking::send(ring, holder, &tagged(id, seq), None).unwrap();
            } else {
                let mut c = blocking::claim_send(ring, holder, None).unwrap();
                ring.write(&mut c, &tagged(id, seq)).unwrap();
                ring.publish(c, 16).unwrap();
            }
            progress.fetch_add(1, Relaxed);
        }
    }

    /// Receives until `received` reaches `total` (shared with other
    /// receivers), alternately in one piece and by claim and release; the
    /// (sender, sequence) pairs this receiver took, and checks they come
    /// in order per sender.
    fn receive(ring: &Ring, holder: u32, received: &AtomicU64, total: u64) -> Vec<(u64, u64)> {
        let mut got = Vec::new();
        let mut last: HashMap<u64, u64> = HashMap::new();
        let mut buf = [0u8; 64];
        while received.load(Relaxed) < total {
            let deadline = Some(Instant::now() + Duration::from_millis(5));
            if got.len() % 2 == 0 {
                let Ok(len) = blocking::recv(ring, holder, &mut buf, deadline) else { continue };
                assert_eq!(len, 16);
            } else {
                let Ok(c) = blocking::claim_recv(ring, holder, deadline) else { continue };
                buf[..c.len()].copy_from_slice(ring.slot(&c));
                assert_eq!(c.len(), 16);
                ring.release(c).unwrap();
            }
            let id = u64::from_le_bytes(buf[..8].try_into().unwrap());
            let seq = u64::from_le_bytes(buf[8..16].try_into().unwrap());
            if let Some(prev) = last.insert(id, seq) {
                assert!(seq > prev, "sender {id} out of order: {prev} then {seq}");
            }
            got.push((id, seq));
            received.fetch_add(1, Relaxed);
        }
        got
    }

    fn exactly_once(got: Vec<Vec<(u64, u64)>>, expected: &[(u64, u64)]) {
        let mut seen: HashMap<(u64, u64), u32> = HashMap::new();
        for m in got.into_iter().flatten() {
            *seen.entry(m).or_default() += 1;
        }
        assert!(seen.values().all(|&n| n == 1), "a message arrived twice");
        for &(id, n) in expected {
            assert!((0..n).all(|s| seen.contains_key(&(id, s))), "sender {id} lost messages");
        }
        assert_eq!(seen.len() as u64, expected.iter().map(|e| e.1).sum::<u64>());
    }

    fn wait_for(progress: &AtomicU64, n: u64) {
        while progress.load(Relaxed) < n {
            std::thread::yield_now();
        }
    }

    #[test]
    fn grants_and_revocations_bump_the_epoch() {
        let v = views(1);
        let k = &v[0];
        assert_eq!(k.lease(Side::Send), Lease::None);
        k.set_lease(Side::Send, None).unwrap();
        assert_eq!(k.lease(Side::Send), Lease::None, "nothing to revoke");
        if !comesg_sys::barrier::register() {
            k.set_lease(Side::Send, Some(2)).unwrap();
            assert_eq!(k.lease(Side::Send), Lease::None, "no lease without membarrier");
            return;
        }
        k.set_lease(Side::Send, Some(2)).unwrap();
        assert_eq!(k.lease(Side::Send), Lease::Granted { holder: 2, epoch: 1 });
        k.set_lease(Side::Send, Some(2)).unwrap();
        assert_eq!(k.lease(Side::Send), Lease::Granted { holder: 2, epoch: 1 }, "granting again changes nothing");
        k.set_lease(Side::Send, None).unwrap();
        assert_eq!(k.lease(Side::Send), Lease::Revoked { holder: 2, epoch: 2 });
        k.set_lease(Side::Send, Some(3)).unwrap();
        assert_eq!(k.lease(Side::Send), Lease::Granted { holder: 3, epoch: 3 });
        assert_eq!(k.lease(Side::Recv), Lease::None, "each side has its own");
        assert!(k.set_lease(Side::Send, Some(4)).is_err(), "holder out of range");
    }

    #[test]
    fn only_the_owner_thread_of_the_granted_holder_claims_plainly() {
        if !comesg_sys::barrier::register() {
            return;
        }
        let v = Arc::new(views(2));
        v[0].set_lease(Side::Send, Some(0)).unwrap();
        let ring = &v[1];
        assert_eq!(ring.lease_enter(Side::Send, 1), Ok(false), "another holder");
        assert_eq!(ring.lease_enter(Side::Recv, 0), Ok(false), "the other side was never granted");
        assert_eq!(ring.lease_enter(Side::Send, 0), Ok(true), "the granted holder's first thread");
        assert_eq!(ring.rec_claiming(Side::Send, 0).load(Relaxed), 1, "announced");
        ring.lease_leave(Side::Send, 0);
        assert_eq!(ring.rec_claiming(Side::Send, 0).load(Relaxed), 0);
        assert_eq!(ring.lease_enter(Side::Send, 0), Ok(true), "and again");
        ring.lease_leave(Side::Send, 0);
        assert_eq!(enter_elsewhere(&v), Ok(false), "a second thread shares the object: no lease for it");
        assert_eq!(ring.lease_enter(Side::Send, 0), Ok(false), "nor for the first, from then on");
        v[0].set_lease(Side::Send, None).unwrap();
        assert_eq!(v[0].lease_enter(Side::Send, 0), Ok(false), "revoked");
    }

    #[test]
    fn a_revocation_waits_for_the_old_holder_then_reports_busy() {
        if !comesg_sys::barrier::register() {
            return;
        }
        let v = Arc::new(views(2));
        v[0].set_lease(Side::Recv, Some(1)).unwrap();
        v[0].set_lease(Side::Recv, None).unwrap();
        v[1].try_send(0, b"waiting").unwrap();
        // Holder 1 stays inside a claim (stopped, or hostile): claims report
        // "nothing yet" rather than wait without bound, though a message is
        // there, and a timed receive keeps its deadline.
        v[0].rec_claiming(Side::Recv, 1).store(1, Relaxed);
        assert_eq!(v[1].lease_enter(Side::Recv, 0), Err(RingError::Empty));
        assert!(v[1].lease_busy(Side::Recv));
        assert!(!v[1].lease_settled(Side::Recv), "a readiness probe says: not yet");
        let deadline = Some(Instant::now() + Duration::from_millis(20));
        assert!(matches!(blocking::claim_recv(&v[1], 0, deadline), Err(blocking::WaitError::TimedOut)));
        // A receive with no deadline naps, and takes the message once the
        // holder is out: nobody wakes it.
        let v2 = v.clone();
        let waiter = std::thread::spawn(move || {
            let c = blocking::claim_recv(&v2[1], 0, None).unwrap();
            let got = v2[1].slot(&c).to_vec();
            v2[1].release(c).unwrap();
            got
        });
        std::thread::sleep(Duration::from_millis(20));
        v[0].rec_claiming(Side::Recv, 1).store(0, Relaxed);
        assert_eq!(waiter.join().unwrap(), b"waiting");
        assert!(!v[1].lease_busy(Side::Recv), "settled");
    }

    #[test]
    fn a_handover_to_shared_use_waits_for_the_owner_then_reports_busy() {
        let v = Arc::new(views(2));
        let ring = &v[1];
        assert_eq!(ring.lease_enter(Side::Send, 0), Ok(false), "this thread owns the view now");
        // As if this thread were inside a claim under a lease (or a hostile
        // peer of the side set the word): another thread's first claim
        // reports the ring full for now, without waiting on.
        ring.rec_claiming(Side::Send, 0).store(1, Relaxed);
        assert_eq!(enter_elsewhere(&v), Err(RingError::Full));
        assert!(ring.lease_busy(Side::Send), "handover under way");
        assert_eq!(ring.lease_enter(Side::Send, 0), Err(RingError::Full), "the owner too waits for it");
        ring.rec_claiming(Side::Send, 0).store(0, Relaxed);
        assert_eq!(enter_elsewhere(&v), Ok(false), "any thread finishes the handover");
        assert!(!ring.lease_busy(Side::Send));
        assert_eq!(ring.lease_enter(Side::Send, 0), Ok(false));
    }

    #[test]
    fn threads_that_shared_a_handle_before_a_grant_never_use_it() {
        if !comesg_sys::barrier::register() {
            return;
        }
        let v = Arc::new(views(2));
        assert_eq!(v[1].lease_enter(Side::Send, 0), Ok(false), "not granted: this thread owns it");
        assert_eq!(enter_elsewhere(&v), Ok(false), "another thread: shared");
        v[0].set_lease(Side::Send, Some(0)).unwrap();
        assert_eq!(v[1].lease_enter(Side::Send, 0), Ok(false), "granted, but shared");
        assert_eq!(enter_elsewhere(&v), Ok(false));
    }

    #[test]
    fn a_stream_goes_on_exactly_once_while_both_leases_are_revoked() {
        const FIRST: u64 = 150_000;
        const SECOND: u64 = 100_000;
        // Views: the microkernel, two senders, two receivers.
        let v = Arc::new(views(5));
        v[0].set_lease(Side::Send, Some(0)).unwrap();
        v[0].set_lease(Side::Recv, Some(0)).unwrap();
        let total = FIRST + SECOND;
        let (sent, received) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let spawn_recv = |view: usize, holder: u32| {
            let (v, received) = (v.clone(), received.clone());
            std::thread::spawn(move || receive(&v[view], holder, &received, total))
        };
        let first_recv = spawn_recv(3, 0);
        let first_send = {
            let (v, sent) = (v.clone(), sent.clone());
            std::thread::spawn(move || {
                let leased = v[1].lease_enter(Side::Send, 0) == Ok(true);
                if leased {
                    v[1].lease_leave(Side::Send, 0);
                }
                send_all(&v[1], 0, 0, 0..FIRST, &sent);
                leased
            })
        };
        // Mid-stream, as when a second sender and a second receiver attach.
        wait_for(&sent, FIRST / 4);
        v[0].set_lease(Side::Send, None).unwrap();
        v[0].set_lease(Side::Recv, None).unwrap();
        let second_recv = spawn_recv(4, 1);
        let other = AtomicU64::new(0);
        send_all(&v[2], 1, 1, 0..SECOND, &other);
        let leased = first_send.join().unwrap();
        assert_eq!(leased, comesg_sys::barrier::register(), "the first sender began under its lease");
        exactly_once(vec![first_recv.join().unwrap(), second_recv.join().unwrap()], &[(0, FIRST), (1, SECOND)]);
    }

    /// `threads` threads send `each` messages through one view and holder
    /// 0: the first from the start, the others once it has sent a quarter.
    /// The senders' lease goes to holder 0 from the start; or, with
    /// `grant_midway`, only at that point, after two threads began sharing
    /// the view without it. One receiver takes every message, each
    /// thread's in order and exactly once.
    fn shared_view_stream(threads: u64, each: u64, grant_midway: bool) {
        let v = Arc::new(views(3));
        if !grant_midway {
            v[0].set_lease(Side::Send, Some(0)).unwrap();
        }
        v[0].set_lease(Side::Recv, Some(0)).unwrap();
        let (sent, received) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let recv = {
            let (v, received) = (v.clone(), received.clone());
            std::thread::spawn(move || receive(&v[2], 0, &received, threads * each))
        };
        let spawn_send = |id: u64| {
            let (v, sent) = (v.clone(), sent.clone());
            std::thread::spawn(move || send_all(&v[1], 0, id, 0..each, &sent))
        };
        let mut senders = vec![spawn_send(0)];
        if grant_midway {
            senders.push(spawn_send(1));
        }
        wait_for(&sent, each / 4);
        if grant_midway {
            v[0].set_lease(Side::Send, Some(0)).unwrap();
        }
        senders.extend((senders.len() as u64..threads).map(spawn_send));
        for s in senders {
            s.join().unwrap();
        }
        assert_eq!(v[1].lease_enter(Side::Send, 0), Ok(false), "the view is shared now");
        let expected: Vec<_> = (0..threads).map(|id| (id, each)).collect();
        exactly_once(vec![recv.join().unwrap()], &expected);
    }

    #[test]
    fn threads_joining_a_handle_under_its_lease_stay_exactly_once() {
        // Two threads join at once: one waits for the owner to leave its
        // claim, the other for that wait to end.
        shared_view_stream(3, 100_000, false);
    }

    #[test]
    fn a_lease_granted_to_a_handle_threads_share_stays_unused() {
        shared_view_stream(2, 100_000, true);
    }
}
