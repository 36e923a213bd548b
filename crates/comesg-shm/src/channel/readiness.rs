//! Readiness of a COCHANNEL for pollers: whether a receive or a send would
//! go through now, whether the other side is gone, and registering as a
//! poller so that the side that changes this rings the port's bell.
//!
//! The probes only read: they walk the ring the way a claim would, from a
//! local copy of the counter, and never write a shared word. Registration
//! mirrors a sleeper's (see `blocking`): count in the shared word, then in
//! the holder's own record (so repair can forget a dead poller), a heavy
//! barrier, and a re-check by the caller.

use std::sync::atomic::Ordering::*;

use super::ring::{RecvStep, Ring, RingError, SendStep, Side};

impl Ring {
    /// Whether a receive would find a message now. Walks past slots that
    /// other receivers hold or that dead senders skipped, as a claim would.
    pub fn recv_ready(&self) -> Result<bool, RingError> {
        let cap = self.geometry().slots as u64;
        let mut pos = self.head().load(Acquire);
        for _ in 0..=cap {
            let i = (pos & (cap - 1)) as usize;
            match self.recv_step(pos, i)? {
                RecvStep::Claim { skip: false } if self.free(i).load(Acquire) == pos => return Ok(true),
                RecvStep::Empty => return Ok(false),
                RecvStep::Claim { .. } | RecvStep::Advance | RecvStep::Reload => {}
            }
            pos = pos.wrapping_add(1);
        }
        // A whole lap held by other receivers: nothing for us now.
        Ok(false)
    }

    /// Whether a send would find a free slot now.
    pub fn send_ready(&self) -> Result<bool, RingError> {
        let cap = self.geometry().slots as u64;
        let mut pos = self.tail().load(Acquire);
        for _ in 0..=cap {
            match self.send_step(pos, (pos & (cap - 1)) as usize)? {
                SendStep::Claim(_) => return Ok(true),
                SendStep::Full => return Ok(false),
                SendStep::Advance | SendStep::Reload => {}
            }
            pos = pos.wrapping_add(1);
        }
        Ok(false)
    }

    /// Whether every holder of the other side has gone, after at least
    /// one came (as a FIFO's reader waits for a first writer). `side` is
    /// the asker's.
    pub fn peers_gone(&self, side: Side) -> bool {
        let (live, attaches) = match side {
            Side::Recv => self.senders_live(),
            Side::Send => self.receivers_live(),
        };
        attaches.load(SeqCst) > 0 && live.load(SeqCst) == 0
    }

    /// Records the live holder count and attaches ever of `side`; only the
    /// microkernel calls this, after attaching or detaching a holder.
    pub fn set_live(&self, side: Side, live: u32, attaches: u32) -> Result<(), RingError> {
        self.writable(side)?;
        let (l, a) = match side {
            Side::Send => self.senders_live(),
            Side::Recv => self.receivers_live(),
        };
        a.store(attaches, SeqCst);
        l.store(live, SeqCst);
        Ok(())
    }

    /// Registers holder `h` on `side` as a poller: from here on, whoever
    /// makes this side ready rings the bell. The caller then runs a heavy
    /// barrier and re-checks before it sleeps.
    pub fn arm(&self, side: Side, h: u32) -> Result<(), RingError> {
        self.writable(side)?;
        self.check_holder(h)?;
        let total = match side {
            Side::Send => self.send_pollers(),
            Side::Recv => self.recv_pollers(),
        };
        // The shared count first, our record second (and the other way round
        // in `disarm`): a poller dying between the two leaves the count one
        // too high (spare rings), never too low.
        total.fetch_add(1, SeqCst);
        self.rec_polling(side, h).fetch_add(1, SeqCst);
        Ok(())
    }

    /// Undoes one [`Ring::arm`].
    pub fn disarm(&self, side: Side, h: u32) {
        if self.writable(side).is_err() || self.check_holder(h).is_err() {
            return;
        }
        let total = match side {
            Side::Send => self.send_pollers(),
            Side::Recv => self.recv_pollers(),
        };
        let mine = self.rec_polling(side, h);
        if mine.fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1)).is_ok() {
            let _ = total.fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1));
        }
    }
}
