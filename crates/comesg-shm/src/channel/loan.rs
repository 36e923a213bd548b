//! Zero-copy access to COCHANNEL slots as typed loans.
//!
//! A [`SendLoan`] is a claimed, unpublished slot: write the message in place,
//! then [`SendLoan::send`] it. Dropping the loan without sending gives the
//! slot back (receivers skip it), so a half-written message is never
//! delivered. A [`RecvSlot`] is a claimed message read in place; dropping it
//! frees the slot for senders.

use std::ops::Deref;

use super::ring::{RecvClaim, Ring, RingError, SendClaim};

/// A slot loaned to a sender for writing in place.
#[derive(Debug)]
pub struct SendLoan<'a> {
    ring: &'a Ring,
    claim: Option<SendClaim>,
}

impl<'a> SendLoan<'a> {
    /// Wraps a claim made on `ring`.
    #[inline]
    pub fn new(ring: &'a Ring, claim: SendClaim) -> Self {
        SendLoan { ring, claim: Some(claim) }
    }

    /// The slot's whole data area, to write the message into. It holds
    /// whatever the previous message left there.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match self.claim.as_mut() {
            Some(c) => self.ring.slot_mut(c),
            None => &mut [],
        }
    }

    /// Bytes the slot can hold.
    pub fn capacity(&self) -> usize {
        self.ring.geometry().slot_size as usize
    }

    /// Publishes the first `len` bytes of the slot as one message.
    #[inline]
    pub fn send(mut self, len: usize) -> Result<(), RingError> {
        match self.claim.take() {
            Some(c) => self.ring.publish(c, len),
            None => Ok(()),
        }
    }
}

impl Drop for SendLoan<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(c) = self.claim.take() {
            let _ = self.ring.cancel(c);
        }
    }
}

/// A received message, read in place from its slot.
#[derive(Debug)]
pub struct RecvSlot<'a> {
    ring: &'a Ring,
    claim: Option<RecvClaim>,
}

impl<'a> RecvSlot<'a> {
    /// Wraps a claim made on `ring`.
    #[inline]
    pub fn new(ring: &'a Ring, claim: RecvClaim) -> Self {
        RecvSlot { ring, claim: Some(claim) }
    }

    /// Frees the slot for senders, reporting a corrupt ring if a peer
    /// tampered with the claim. Dropping does the same but cannot report.
    #[inline]
    pub fn release(mut self) -> Result<(), RingError> {
        match self.claim.take() {
            Some(c) => self.ring.release(c),
            None => Ok(()),
        }
    }

    /// Gives the message up without finishing it: the slot stays claimed by
    /// this holder until its handle closes (or its process dies), when the
    /// microkernel frees it and counts the message lost. A forwarder that
    /// keeps a message claimed until its far side confirms delivery uses
    /// this when the far side is gone, so nothing is delivered twice and
    /// the loss shows in the port's statistics.
    #[inline]
    pub fn abandon(mut self) {
        self.claim = None;
    }
}

impl Deref for RecvSlot<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.claim {
            Some(c) => self.ring.slot(c),
            None => &[],
        }
    }
}

impl Drop for RecvSlot<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(c) = self.claim.take() {
            let _ = self.ring.release(c);
        }
    }
}
