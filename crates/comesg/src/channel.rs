//! COCHANNEL handles: the data path, in the caller's own process.

use std::time::{Duration, Instant};

use comesg_proto::{Entry, HandleId, Name, PortGrant, PortSpec, Rights};
use comesg_shm::channel::{blocking, Geometry, Lease, Ring, RingError, Side};
use comesg_sys::bell::Bell;
use comesg_sys::mapping::{Access, Mapping};
use comesg_sys::OwnedFd;

pub use comesg_shm::channel::{RecvSlot, SendLoan};

use crate::copoll::{Interest, Readiness};
use crate::{Connection, Error, RecvError, SendError};

/// A handle to a COCHANNEL: a bounded ring of fixed-size slots in shared
/// memory, many senders and many receivers, each message received by exactly
/// one receiver.
///
/// Sending and receiving run entirely in this process: no system call unless
/// a side has to sleep (spin first, then futex). Rights are enforced by the
/// mappings: without SEND the message data is mapped read-only, without RECV
/// the receivers' state is.
///
/// Dropping the handle releases its reference in the kernel.
#[derive(Debug)]
pub struct Channel {
    ring: Ring,
    conn: Connection,
    handle: HandleId,
    name: Name,
    rights: Rights,
    send_holder: Option<u32>,
    recv_holder: Option<u32>,
}

impl Channel {
    pub(crate) fn attach(conn: Connection, name: Name, g: PortGrant, fds: Vec<OwnedFd>) -> Result<Channel, Error> {
        // If anything below fails, dropping `release` gives the handle back.
        let release = Release { conn: &conn, handle: Some(g.handle) };
        let PortSpec::Channel(spec) = g.spec else {
            return Err(Error::WrongKind { name, found: g.spec.kind() });
        };
        let geo = Geometry { slot_size: spec.slot_size, slots: spec.slots, max_holders: g.max_holders };
        geo.validate().map_err(|e| Error::Protocol(e.to_string()))?;
        let [s, r, bell]: [OwnedFd; 3] =
            fds.try_into().map_err(|v: Vec<_>| Error::Protocol(format!("expected 3 fds, got {}", v.len())))?;
        let access = |right| {
            if g.rights.contains(right) {
                Access::ReadWrite
            } else {
                Access::ReadOnly
            }
        };
        let s = Mapping::map(&s, geo.sender_segment_len(), access(Rights::SEND))?;
        let r = Mapping::map(&r, geo.receiver_segment_len(), access(Rights::RECV))?;
        let mut ring = Ring::new(geo, s, r).map_err(|e| Error::Protocol(e.to_string()))?;
        ring.set_bell(Bell::from_fd(bell));
        std::mem::forget(release);
        Ok(Channel {
            ring,
            conn,
            handle: g.handle,
            name,
            rights: g.rights,
            send_holder: g.send_holder,
            recv_holder: g.recv_holder,
        })
    }

    pub(crate) fn handle_ref_inner(&self) -> (&Connection, HandleId) {
        (&self.conn, self.handle)
    }

    /// The channel's name when it was opened.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// This handle's rights.
    pub fn rights(&self) -> Rights {
        self.rights
    }

    /// Largest message in bytes.
    #[inline]
    pub fn slot_size(&self) -> usize {
        self.ring.geometry().slot_size as usize
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.ring.geometry().slots as usize
    }

    #[inline]
    fn sender(&self) -> Result<u32, SendError> {
        // Not `ok_or(SendError::NoRight)`: that builds the error on every
        // call and then drops it, and the error type's drop glue is an out
        // of line call on the data path (3% of a 64 B stream).
        match self.send_holder {
            Some(h) => Ok(h),
            None => Err(SendError::NoRight),
        }
    }

    #[inline]
    fn receiver(&self) -> Result<u32, RecvError> {
        match self.recv_holder {
            Some(h) => Ok(h),
            None => Err(RecvError::NoRight),
        }
    }

    #[inline]
    fn send_until(&self, msg: &[u8], deadline: Option<Instant>) -> Result<(), SendError> {
        let h = self.sender()?;
        // `blocking::send` refuses a message longer than a slot before it
        // claims one.
        Ok(blocking::send(&self.ring, h, msg, deadline)?)
    }

    /// Sends one message, waiting while the channel is full.
    #[inline]
    pub fn send(&self, msg: &[u8]) -> Result<(), SendError> {
        self.send_until(msg, None)
    }

    /// Sends one message, waiting at most `timeout` for a free slot.
    #[inline]
    pub fn send_timeout(&self, msg: &[u8], timeout: Duration) -> Result<(), SendError> {
        self.send_until(msg, crate::deadline(timeout))
    }

    /// Sends one message if a slot is free now ([`SendError::Full`] otherwise).
    #[inline]
    pub fn try_send(&self, msg: &[u8]) -> Result<(), SendError> {
        let h = self.sender()?;
        Ok(self.ring.try_send(h, msg)?)
    }

    /// Loans a free slot for writing a message in place (zero copy), waiting
    /// while the channel is full. Write into [`SendLoan::as_mut_slice`], then
    /// [`SendLoan::send`]; dropping the loan sends nothing.
    ///
    /// ```no_run
    /// # let conn = comesg::Connection::connect_default()?;
    /// # let ch = conn.open_channel("/demo", comesg::Rights::SEND)?;
    /// let mut loan = ch.loan()?;
    /// let n = {
    ///     let buf = loan.as_mut_slice();
    ///     buf[..5].copy_from_slice(b"hello");
    ///     5
    /// };
    /// loan.send(n)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn loan(&self) -> Result<SendLoan<'_>, SendError> {
        self.loan_until(None)
    }

    /// Like [`Channel::loan`] but gives up after `timeout`.
    pub fn loan_timeout(&self, timeout: Duration) -> Result<SendLoan<'_>, SendError> {
        self.loan_until(crate::deadline(timeout))
    }

    /// Like [`Channel::loan`] but does not wait.
    #[inline]
    pub fn try_loan(&self) -> Result<SendLoan<'_>, SendError> {
        let h = self.sender()?;
        Ok(SendLoan::new(&self.ring, self.ring.try_claim_send(h)?))
    }

    #[inline]
    fn loan_until(&self, deadline: Option<Instant>) -> Result<SendLoan<'_>, SendError> {
        let h = self.sender()?;
        Ok(SendLoan::new(&self.ring, blocking::claim_send(&self.ring, h, deadline)?))
    }

    #[inline]
    fn recv_until(&self, buf: &mut [u8], deadline: Option<Instant>) -> Result<usize, RecvError> {
        let h = self.receiver()?;
        Ok(blocking::recv(&self.ring, h, buf, deadline)?)
    }

    /// Receives one message into `buf`, waiting until one arrives; returns
    /// its length. If the message is longer than `buf`, the rest is dropped
    /// (as `recv(2)` does for datagrams); a buffer of [`Channel::slot_size`]
    /// bytes always suffices.
    #[inline]
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, RecvError> {
        self.recv_until(buf, None)
    }

    /// Like [`Channel::recv`] but gives up after `timeout`.
    #[inline]
    pub fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<usize, RecvError> {
        self.recv_until(buf, crate::deadline(timeout))
    }

    /// Like [`Channel::recv`] but returns [`RecvError::Empty`] at once when
    /// no message is waiting.
    #[inline]
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<usize, RecvError> {
        let h = self.receiver()?;
        Ok(self.ring.try_recv(h, buf)?)
    }

    /// Like [`Channel::recv_vec`], giving up after `timeout`.
    pub fn recv_vec_timeout(&self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        let slot = self.slot_until(crate::deadline(timeout))?;
        let v = slot.to_vec();
        slot.release()?;
        Ok(v)
    }

    /// Like [`Channel::recv_vec`] but returns [`RecvError::Empty`] at once
    /// when no message is waiting.
    pub fn try_recv_vec(&self) -> Result<Vec<u8>, RecvError> {
        let slot = self.try_recv_in_place()?;
        let v = slot.to_vec();
        slot.release()?;
        Ok(v)
    }

    /// Receives one message as a new `Vec`.
    pub fn recv_vec(&self) -> Result<Vec<u8>, RecvError> {
        let slot = self.slot_until(None)?;
        let v = slot.to_vec();
        slot.release()?;
        Ok(v)
    }

    #[inline]
    fn slot_until(&self, deadline: Option<Instant>) -> Result<RecvSlot<'_>, RecvError> {
        let h = self.receiver()?;
        Ok(RecvSlot::new(&self.ring, blocking::claim_recv(&self.ring, h, deadline)?))
    }

    /// Receives one message in place (zero copy): the slot stays claimed
    /// until the returned guard is dropped. Waits until a message arrives.
    #[inline]
    pub fn recv_in_place(&self) -> Result<RecvSlot<'_>, RecvError> {
        self.slot_until(None)
    }

    /// Like [`Channel::recv_in_place`] but gives up after `timeout`.
    pub fn recv_in_place_timeout(&self, timeout: Duration) -> Result<RecvSlot<'_>, RecvError> {
        self.slot_until(crate::deadline(timeout))
    }

    /// Like [`Channel::recv_in_place`] but does not wait.
    #[inline]
    pub fn try_recv_in_place(&self) -> Result<RecvSlot<'_>, RecvError> {
        let h = self.receiver()?;
        Ok(RecvSlot::new(&self.ring, self.ring.try_claim_recv(h)?))
    }

    /// The mappings of the sender and receiver segments. Not for normal use:
    /// tests use it to show that the operating system refuses writes a
    /// handle has no right to make.
    #[doc(hidden)]
    pub fn segments(&self) -> (&Mapping, &Mapping) {
        self.ring.segments()
    }

    /// Whether this handle is the channel's only sender and so holds the
    /// senders' lease: the first thread that sends through it claims slots
    /// with plain stores, without a locked instruction (docs/cochannel.md,
    /// "Sole holders"; a handle that threads share claims by
    /// compare-and-swap). The microkernel revokes the lease when a second
    /// sender attaches and grants it again when one is left.
    pub fn sole_sender(&self) -> bool {
        self.holds_lease(Side::Send, self.send_holder)
    }

    /// Whether this handle is the channel's only receiver (see
    /// [`Channel::sole_sender`]).
    pub fn sole_receiver(&self) -> bool {
        self.holds_lease(Side::Recv, self.recv_holder)
    }

    fn holds_lease(&self, side: Side, holder: Option<u32>) -> bool {
        matches!((self.ring.lease(side), holder), (Lease::Granted { holder: h, .. }, Some(mine)) if h == mine)
    }

    /// Messages waiting, read from shared memory.
    pub fn depth(&self) -> u64 {
        self.ring.stats().depth
    }

    /// The kernel's view of this channel (references, holders, totals), if
    /// it still has a name.
    pub fn stats(&self) -> Result<Entry, Error> {
        let mut v = self.conn.list(self.name.as_str()).map_err(|e| e.for_handle(&self.name))?;
        v.pop().ok_or_else(|| Error::Protocol("empty listing".into()))
    }

    /// Closes the handle, reporting whether the kernel acknowledged it
    /// (dropping closes too, silently).
    pub fn close(mut self) -> Result<(), Error> {
        let r = self.conn.close_handle(self.handle).map_err(|e| e.for_handle(&self.name));
        self.handle = CLOSED;
        r
    }
}

impl crate::copoll::sealed::Source for Channel {
    fn bell(&self) -> Option<&Bell> {
        self.ring.bell()
    }

    fn readiness(&self, interest: Interest) -> Readiness {
        ring_readiness(&self.ring, self.send_holder, self.recv_holder, interest)
    }

    fn arm(&self, interest: Interest) {
        ring_arm(&self.ring, self.send_holder, self.recv_holder, interest, true);
    }

    fn disarm(&self, interest: Interest) {
        ring_arm(&self.ring, self.send_holder, self.recv_holder, interest, false);
    }

    fn settling(&self, interest: Interest) -> bool {
        ring_settling(&self.ring, interest)
    }
}

/// Whether a ring's claims for `interest` wait for a holder to leave a
/// claim it made under a lease (see [`Ring::lease_busy`]).
pub(crate) fn ring_settling(ring: &Ring, interest: Interest) -> bool {
    (interest.is_readable() && ring.lease_busy(Side::Recv)) || (interest.is_writable() && ring.lease_busy(Side::Send))
}

/// A ring's readiness for a handle with these holder records (`None`: no
/// right on that side, which is an error to poll for).
pub(crate) fn ring_readiness(ring: &Ring, send: Option<u32>, recv: Option<u32>, interest: Interest) -> Readiness {
    let mut r = Readiness::default();
    // A claim would report the ring busy until a revocation settles: not
    // ready yet (the poller naps, see `Source::settling`).
    if interest.is_readable() {
        match (recv, ring.recv_ready().map(|r| r && ring.lease_settled(Side::Recv))) {
            (Some(_), Ok(true)) => r.readable = true,
            (Some(_), Ok(false)) => r.closed |= ring.peers_gone(Side::Recv),
            _ => r.error = true,
        }
    }
    if interest.is_writable() {
        match (send, ring.send_ready().map(|r| r && ring.lease_settled(Side::Send))) {
            (Some(_), Ok(true)) => r.writable = true,
            (Some(_), Ok(false)) => r.closed |= ring.peers_gone(Side::Send),
            _ => r.error = true,
        }
    }
    r
}

/// Registers (`on`) or unregisters as a poller of a ring.
pub(crate) fn ring_arm(ring: &Ring, send: Option<u32>, recv: Option<u32>, interest: Interest, on: bool) {
    let sides = [(interest.is_readable(), Side::Recv, recv), (interest.is_writable(), Side::Send, send)];
    for (asked, side, holder) in sides {
        if let (true, Some(h)) = (asked, holder) {
            if on {
                let _ = ring.arm(side, h);
            } else {
                ring.disarm(side, h);
            }
        }
    }
}

/// Handle numbers start at 1; 0 marks a handle already closed.
const CLOSED: HandleId = HandleId(0);

impl Drop for Channel {
    fn drop(&mut self) {
        if self.handle != CLOSED {
            let _ = self.conn.close_handle(self.handle);
        }
    }
}

struct Release<'a> {
    conn: &'a Connection,
    handle: Option<HandleId>,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = self.conn.close_handle(h);
        }
    }
}

impl From<RingError> for Error {
    fn from(e: RingError) -> Self {
        Error::Protocol(e.to_string())
    }
}
