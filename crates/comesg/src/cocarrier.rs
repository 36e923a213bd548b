//! COCARRIER handles: messages of any size that nobody can change after
//! sending, read in place by the receiver.

use std::time::{Duration, Instant};

use comesg_proto::{
    CarrierSpec, HandleId, KernelError, Name, PortGrant, PortSpec, Reply, Request, Rights, TakenHandle,
};
use comesg_shm::carrier::{ArenaReader, Descriptor, SealedBuilder, SealedView, DESCRIPTOR, SEALED};
use comesg_shm::channel::{blocking, Geometry, Ring};
use comesg_sys::mapping::{Access, Mapping};
use comesg_sys::OwnedFd;

use crate::held::Held;
use crate::{Connection, Error, RecvError, SendError};

/// How to create a COCARRIER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CocarrierOptions {
    /// Bytes of the arena holding messages in flight.
    pub arena: u64,
    /// Largest message.
    pub max_message: u64,
    /// Most receivers at once.
    pub receivers: u32,
    /// Messages each receiver may have queued (a power of two).
    pub queue: u32,
    /// Rights of the creator's handle.
    pub rights: Rights,
    /// Permission bits: `w` lets others send, `r` lets them receive.
    pub mode: u32,
    /// Lives with no holders until unlinked.
    pub persistent: bool,
    /// Fail if the name exists (otherwise open the existing carrier).
    pub exclusive: bool,
}

impl Default for CocarrierOptions {
    fn default() -> Self {
        CocarrierOptions {
            arena: 256 << 20,
            max_message: 64 << 20,
            receivers: 16,
            queue: 64,
            rights: Rights::SEND,
            mode: 0o600,
            persistent: false,
            exclusive: false,
        }
    }
}

#[derive(Debug)]
struct ReceiverEnd {
    arena: ArenaReader,
    delivery: Ring,
    release: Ring,
}

/// A handle to a COCARRIER. A send hands the message to the microkernel,
/// which copies it once into an arena that only it can write; a receiver
/// reads it in place, through a read-only mapping, for as long as it holds
/// the [`CarrierMessage`]. Once `send` returns, no process can change the
/// message: the sender never had the arena mapped, receivers map it
/// read-only, and the memory is sealed against every new writable mapping.
///
/// ```no_run
/// let conn = comesg::Connection::connect_default()?;
/// let tx = conn.create_cocarrier("/app/frames", Default::default())?;
/// tx.send(&vec![7u8; 8 << 20])?;          // one copy, by the microkernel
/// // elsewhere, with RECV:
/// // let msg = rx.recv()?;   // &[u8] in place, immutable while held
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Cocarrier {
    conn: Connection,
    held: Held,
    name: Name,
    spec: CarrierSpec,
    rights: Rights,
    end: Option<ReceiverEnd>,
    /// Releases the queue had no room for; retried on the next release or
    /// receive.
    pending: std::sync::Mutex<Vec<u64>>,
    /// The carrier's bell (pollers watch it).
    bell: comesg_sys::bell::Bell,
}

/// This handle's holder record in its own delivery ring (the microkernel
/// is the sender there).
const RECEIVER: u32 = 0;

/// A handle that can travel in a carrier message.
pub trait Attachable {
    /// Its connection and handle number.
    fn handle_ref(&self) -> (&Connection, HandleId);
}

impl Attachable for crate::Channel {
    fn handle_ref(&self) -> (&Connection, HandleId) {
        self.handle_ref_inner()
    }
}

impl Attachable for Cocarrier {
    fn handle_ref(&self) -> (&Connection, HandleId) {
        (self.held.conn(), self.held.id())
    }
}

impl Attachable for crate::Copipe {
    fn handle_ref(&self) -> (&Connection, HandleId) {
        self.held_ref()
    }
}

impl Attachable for crate::Comutex {
    fn handle_ref(&self) -> (&Connection, HandleId) {
        self.held_ref()
    }
}

/// A handle taken from a carrier message.
#[derive(Debug)]
#[non_exhaustive]
// A channel holds its ring's process-local cache lines inline (the data
// path reads them on every call); a handle is taken once per carrier
// message and moved out at once, so its size costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Handle {
    /// A COCHANNEL.
    Channel(crate::Channel),
    /// A COPIPE.
    Pipe(crate::Copipe),
    /// A COCARRIER.
    Carrier(Cocarrier),
    /// A comutex.
    Comutex(crate::Comutex),
    /// A service, to call.
    Service(crate::ServiceClient),
}

impl Handle {
    fn from_grant(conn: &Connection, t: TakenHandle, fds: Vec<OwnedFd>) -> Result<Handle, Error> {
        let name = t.name.unwrap_or_else(Name::root);
        let c = conn.clone();
        Ok(match t.grant.spec {
            PortSpec::Channel(_) => Handle::Channel(crate::Channel::attach(c, name, t.grant, fds)?),
            PortSpec::Pipe(_) => Handle::Pipe(crate::Copipe::attach(c, name, t.grant, fds)?),
            PortSpec::Carrier(_) => Handle::Carrier(Cocarrier::attach(c, name, t.grant, fds)?),
            PortSpec::Mutex(_) => Handle::Comutex(crate::Comutex::attach(c, name, t.grant, fds)?),
            PortSpec::Service(_) => Handle::Service(crate::ServiceClient::attach(c, name, t.grant, fds)?),
        })
    }
}

/// A received message, read in place; released (its space returned) when
/// dropped.
#[derive(Debug)]
pub struct CarrierMessage<'a> {
    carrier: &'a Cocarrier,
    d: Descriptor,
    body: Body<'a>,
    /// Given up: not released when dropped.
    abandoned: bool,
}

#[derive(Debug)]
enum Body<'a> {
    /// In the carrier's arena.
    Arena(&'a [u8]),
    /// Built in place by its sender, in a sealed memfd of its own.
    Sealed(SealedView),
}

/// A message being built in place ([`Cocarrier::build`]): write it, then
/// send it. Sending seals its memory: from then on nobody, the sender
/// included, can change it, and no copy is made.
#[derive(Debug)]
pub struct Building<'a> {
    carrier: &'a Cocarrier,
    b: SealedBuilder,
}

impl Building<'_> {
    /// The message's bytes, to write.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.b.bytes_mut()
    }

    /// Seals and sends it (waiting while no receiver has room).
    pub fn send(self) -> Result<(), SendError> {
        self.send_with(&[])
    }

    /// Seals and sends it with handles, as [`Cocarrier::send_with`].
    pub fn send_with(self, handles: &[(&dyn Attachable, Rights)]) -> Result<(), SendError> {
        self.send_until(handles, None, false)
    }

    /// Like [`Building::send_with`], waiting at most `timeout` for a
    /// receiver with room ([`SendError::TimedOut`]; zero: [`SendError::Full`]
    /// at once). The message is sealed either way.
    pub fn send_timeout(self, handles: &[(&dyn Attachable, Rights)], timeout: Duration) -> Result<(), SendError> {
        if timeout.is_zero() {
            return self.send_until(handles, None, true);
        }
        self.send_until(handles, crate::deadline(timeout), false)
    }

    fn send_until(
        self,
        handles: &[(&dyn Attachable, Rights)],
        deadline: Option<Instant>,
        once: bool,
    ) -> Result<(), SendError> {
        let c = self.carrier;
        let len = self.b.bytes_len();
        let attach = c.attach_list(handles)?;
        let fd = self.b.seal().map_err(|e| SendError::Control(format!("cannot seal the message: {e}")))?;
        let req = || Request::CarrierSendSealed { handle: c.held.id(), len, attach: attach.clone() };
        c.submit(req, &[comesg_sys::AsFd::as_fd(&fd)], true, deadline, once)
    }
}

impl CarrierMessage<'_> {
    /// How many handles came with the message.
    pub fn attached(&self) -> usize {
        self.d.attached as usize
    }

    /// Takes the handles that came with the message, as handles of this
    /// process (one request to the microkernel). A second call returns none.
    pub fn take_handles(&self) -> Result<Vec<Handle>, Error> {
        if self.d.attached == 0 {
            return Ok(Vec::new());
        }
        let c = self.carrier;
        let mut out = Vec::new();
        loop {
            let reply = c.conn.request(Request::CarrierTake { handle: c.held.id(), msg: self.d.id });
            match reply.map_err(|e| e.for_handle(&c.name))? {
                (Reply::Taken(taken), mut fds) => {
                    let full = taken.len() >= comesg_proto::TAKE_BATCH;
                    // Every grant becomes a handle, even after one fails:
                    // the kernel granted them all, and a handle that cannot
                    // be attached gives its grant back as it fails.
                    let mut failed = None;
                    for t in taken {
                        let n = (t.fds as usize).min(fds.len());
                        let mine: Vec<OwnedFd> = fds.drain(..n).collect();
                        match Handle::from_grant(&c.conn, t, mine) {
                            Ok(h) => out.push(h),
                            Err(e) => {
                                failed.get_or_insert(e);
                            }
                        }
                    }
                    if let Some(e) = failed {
                        return Err(e);
                    }
                    if !full {
                        return Ok(out);
                    }
                }
                (Reply::Error(e), _) => return Err(Error::Kernel(e)),
                (other, _) => return Err(Error::Protocol(format!("expected Taken, got {other:?}"))),
            }
        }
    }
}

impl std::ops::Deref for CarrierMessage<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.body {
            Body::Arena(b) => b,
            Body::Sealed(v) => v.bytes(),
        }
    }
}

impl CarrierMessage<'_> {
    /// Gives the message up without releasing it: it stays held by this
    /// handle until the handle closes (or the process dies), when the
    /// microkernel frees it and counts it lost. A forwarder that holds a
    /// message until its far side confirms delivery uses this when the far
    /// side is gone. (`RecvSlot::abandon` is the same for COCHANNEL.)
    pub fn abandon(mut self) {
        self.abandoned = true;
    }
}

impl Drop for CarrierMessage<'_> {
    fn drop(&mut self) {
        if !self.abandoned {
            self.carrier.release(self.d.id);
        }
    }
}

fn release_slots(queue: u32) -> u32 {
    queue.saturating_mul(2).clamp(16, 1 << 20)
}

fn ring(geo: Geometry, s: &OwnedFd, r: &OwnedFd, send: bool) -> Result<Ring, Error> {
    let (sa, ra) = if send { (Access::ReadWrite, Access::ReadOnly) } else { (Access::ReadOnly, Access::ReadWrite) };
    let s = Mapping::map(s, geo.sender_segment_len(), sa)?;
    let r = Mapping::map(r, geo.receiver_segment_len(), ra)?;
    Ring::new(geo, s, r).map_err(|e| Error::Protocol(e.to_string()))
}

impl crate::copoll::sealed::Source for Cocarrier {
    fn bell(&self) -> Option<&comesg_sys::bell::Bell> {
        Some(&self.bell)
    }

    fn readiness(&self, interest: crate::Interest) -> crate::Readiness {
        let mut out = crate::Readiness::default();
        if interest.is_readable() {
            match &self.end {
                Some(e) => {
                    out = crate::channel::ring_readiness(&e.delivery, None, Some(RECEIVER), crate::Interest::READABLE)
                }
                None => out.error = true,
            }
        }
        if interest.is_writable() {
            // Sends go through the microkernel, which queues or refuses.
            out.writable = self.rights.contains(Rights::SEND);
            out.error |= !out.writable;
        }
        out
    }

    fn arm(&self, interest: crate::Interest) {
        if let (true, Some(e)) = (interest.is_readable(), &self.end) {
            crate::channel::ring_arm(&e.delivery, None, Some(RECEIVER), crate::Interest::READABLE, true);
        }
    }

    fn disarm(&self, interest: crate::Interest) {
        if let (true, Some(e)) = (interest.is_readable(), &self.end) {
            crate::channel::ring_arm(&e.delivery, None, Some(RECEIVER), crate::Interest::READABLE, false);
        }
    }

    fn settling(&self, interest: crate::Interest) -> bool {
        match (interest.is_readable(), &self.end) {
            (true, Some(e)) => crate::channel::ring_settling(&e.delivery, crate::Interest::READABLE),
            _ => false,
        }
    }
}

impl Cocarrier {
    pub(crate) fn attach(conn: Connection, name: Name, g: PortGrant, fds: Vec<OwnedFd>) -> Result<Cocarrier, Error> {
        let held = Held::new(conn.clone(), g.handle, &name);
        let PortSpec::Carrier(spec) = g.spec else {
            return Err(Error::WrongKind { name, found: g.spec.kind() });
        };
        let mut fds = fds;
        let bell = fds.pop().ok_or_else(|| Error::Protocol("grant without the port's bell".into()))?;
        let bell = comesg_sys::bell::Bell::from_fd(bell);
        let end = if g.rights.contains(Rights::RECV) {
            let [a, ds, dr, rs, rr]: [OwnedFd; 5] =
                fds.try_into().map_err(|v: Vec<_>| Error::Protocol(format!("expected 6 fds, got {}", v.len() + 1)))?;
            let arena_len = usize::try_from(spec.arena).map_err(|_| Error::Protocol("arena too large".into()))?;
            let dgeo = Geometry { slot_size: DESCRIPTOR as u32, slots: spec.queue, max_holders: 2 };
            let mut delivery = ring(dgeo, &ds, &dr, false)?;
            delivery.set_bell(bell.try_clone()?);
            let rgeo = Geometry { slot_size: 8, slots: release_slots(spec.queue), max_holders: 2 };
            Some(ReceiverEnd {
                arena: ArenaReader::map(&a, arena_len)?,
                delivery,
                release: ring(rgeo, &rs, &rr, true)?,
            })
        } else {
            None
        };
        if g.rights.contains(Rights::SEND) {
            // Where Yama limits process_vm_readv to ancestors, let the
            // microkernel read our messages.
            comesg_sys::remote::allow_reader(conn.kernel_pid());
        }
        Ok(Cocarrier { conn, held, name, spec, rights: g.rights, end, pending: Default::default(), bell })
    }

    /// Its name when it was opened.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Its shape.
    pub fn spec(&self) -> CarrierSpec {
        self.spec
    }

    /// This handle's rights.
    pub fn rights(&self) -> Rights {
        self.rights
    }

    fn send_until(&self, msg: &[u8], deadline: Option<Instant>, once: bool) -> Result<(), SendError> {
        self.send_full(msg, &[], deadline, once)
    }

    fn send_full(
        &self,
        msg: &[u8],
        handles: &[(&dyn Attachable, Rights)],
        deadline: Option<Instant>,
        once: bool,
    ) -> Result<(), SendError> {
        if !self.rights.contains(Rights::SEND) {
            return Err(SendError::NoRight);
        }
        let attach = self.attach_list(handles)?;
        if msg.len() as u64 > self.spec.max_message {
            let max = u32::try_from(self.spec.max_message).unwrap_or(u32::MAX);
            return Err(SendError::TooLong { len: msg.len(), slot_size: max });
        }
        let req = || Request::CarrierSend {
            handle: self.held.id(),
            addr: msg.as_ptr() as u64,
            len: msg.len() as u64,
            attach: attach.clone(),
        };
        // No reply timeout: the kernel reads `msg` whenever it gets to the
        // request, so the buffer must stay ours until it answers.
        match self.submit(req, &[], false, deadline, once) {
            // The kernel may not read our memory (ptrace rules): build the
            // message in place instead (one copy by us, into fresh pages).
            Err(SendError::Refused(KernelError::CannotRead(_))) => {
                let mut b = self.build(msg.len())?;
                b.as_mut_slice().copy_from_slice(msg);
                b.send_until(handles, deadline, once)
            }
            r => r,
        }
    }

    /// Sends a send request until the kernel takes it, backing off while it
    /// answers that no receiver has room.
    fn submit(
        &self,
        req: impl Fn() -> Request,
        fds: &[comesg_sys::BorrowedFd<'_>],
        reply_timeout: bool,
        deadline: Option<Instant>,
        once: bool,
    ) -> Result<(), SendError> {
        let mut nap = Duration::from_micros(20);
        loop {
            match self.conn.request_full(req(), reply_timeout, fds) {
                Ok((Reply::Done, _)) => return Ok(()),
                Ok((Reply::Error(KernelError::WouldBlock(_)), _)) => {}
                Ok((Reply::Error(e), _)) => return Err(SendError::Refused(e)),
                Ok((other, _)) => return Err(SendError::Control(format!("unexpected reply {other:?}"))),
                Err(Error::KernelGone) => return Err(SendError::HandleLost(self.name.clone())),
                Err(e) => return Err(SendError::Control(e.to_string())),
            }
            if once {
                return Err(SendError::Full);
            }
            if deadline.is_some_and(|d| Instant::now() + nap > d) {
                return Err(SendError::TimedOut);
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(2));
        }
    }

    fn attach_list(&self, handles: &[(&dyn Attachable, Rights)]) -> Result<Vec<(HandleId, Rights)>, SendError> {
        let mut attach = Vec::with_capacity(handles.len());
        for (h, rights) in handles {
            let (conn, id) = h.handle_ref();
            if !conn.same_as(&self.conn) {
                return Err(SendError::Refused(KernelError::InvalidArgument(
                    "a handle to attach must come from the carrier's own connection".into(),
                )));
            }
            attach.push((id, *rights));
        }
        Ok(attach)
    }

    /// Starts a message of `len` bytes built in place: no copy is ever
    /// made. It pays for fresh pages, so it suits messages that would be
    /// built in a fresh buffer anyway.
    ///
    /// ```no_run
    /// # let conn = comesg::Connection::connect_default()?;
    /// # let tx = conn.open_cocarrier("/app/frames", comesg::Rights::SEND)?;
    /// let mut m = tx.build(4096)?;
    /// m.as_mut_slice().fill(7);
    /// m.send()?; // sealed: unchangeable from here on
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(&self, len: usize) -> Result<Building<'_>, SendError> {
        if !self.rights.contains(Rights::SEND) {
            return Err(SendError::NoRight);
        }
        if len as u64 > self.spec.max_message {
            let max = u32::try_from(self.spec.max_message).unwrap_or(u32::MAX);
            return Err(SendError::TooLong { len, slot_size: max });
        }
        let b =
            SealedBuilder::create(len).map_err(|e| SendError::Control(format!("cannot create the message: {e}")))?;
        Ok(Building { carrier: self, b })
    }

    /// Sends one message (any size up to the carrier's limit), waiting while
    /// no receiver has room. When it returns, the message is in the arena
    /// and nobody can change it.
    pub fn send(&self, msg: &[u8]) -> Result<(), SendError> {
        self.send_until(msg, None, false)
    }

    /// Sends one message carrying handles to other objects, each with the
    /// rights to give (a subset of the handle's own: rights can be narrowed,
    /// never widened). The receiver takes them with
    /// [`CarrierMessage::take_handles`]; until then the message holds a
    /// reference to each object, and dropping it unread gives them back.
    ///
    /// ```no_run
    /// # let conn = comesg::Connection::connect_default()?;
    /// # let carrier = conn.open_cocarrier("/app/c", comesg::Rights::SEND)?;
    /// let jobs = conn.create_channel("/app/jobs", Default::default())?;
    /// carrier.send_with(b"here is your queue", &[(&jobs, comesg::Rights::RECV)])?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_with(&self, msg: &[u8], handles: &[(&dyn Attachable, Rights)]) -> Result<(), SendError> {
        self.send_full(msg, handles, None, false)
    }

    /// Like [`Cocarrier::send_with`], waiting at most `timeout` for a
    /// receiver with room ([`SendError::TimedOut`]; zero: [`SendError::Full`]
    /// at once).
    pub fn send_with_timeout(
        &self,
        msg: &[u8],
        handles: &[(&dyn Attachable, Rights)],
        timeout: Duration,
    ) -> Result<(), SendError> {
        if timeout.is_zero() {
            return self.send_full(msg, handles, None, true);
        }
        self.send_full(msg, handles, crate::deadline(timeout), false)
    }

    /// Like [`Cocarrier::send`], giving up after `timeout`.
    pub fn send_timeout(&self, msg: &[u8], timeout: Duration) -> Result<(), SendError> {
        self.send_until(msg, crate::deadline(timeout), false)
    }

    /// Sends one message if a receiver has room now ([`SendError::Full`]
    /// otherwise).
    pub fn try_send(&self, msg: &[u8]) -> Result<(), SendError> {
        self.send_until(msg, None, true)
    }

    fn end(&self) -> Result<&ReceiverEnd, RecvError> {
        self.end.as_ref().ok_or(RecvError::NoRight)
    }

    fn take(&self, claim: comesg_shm::channel::RecvClaim) -> Result<CarrierMessage<'_>, RecvError> {
        let end = self.end()?;
        let d = Descriptor::decode(end.delivery.slot(&claim));
        end.delivery.release(claim)?;
        comesg_shm::fault::point("carrier.recv.taken");
        let d = d.ok_or(RecvError::Corrupt("short carrier descriptor"))?;
        if d.off == SEALED {
            return match self.fetch_sealed(&d) {
                Ok(v) => Ok(CarrierMessage { carrier: self, d, body: Body::Sealed(v), abandoned: false }),
                Err(e) => {
                    self.release(d.id);
                    Err(e)
                }
            };
        }
        let Some(bytes) = end.arena.message(&d) else {
            self.release(d.id);
            return Err(RecvError::Corrupt("carrier descriptor outside the arena"));
        };
        Ok(CarrierMessage { carrier: self, d, body: Body::Arena(bytes), abandoned: false })
    }

    fn fetch_sealed(&self, d: &Descriptor) -> Result<SealedView, RecvError> {
        const CANNOT: RecvError = RecvError::Corrupt("cannot map a message built in place");
        match self.conn.request(Request::CarrierFetch { handle: self.held.id(), msg: d.id }) {
            Ok((Reply::Segment, mut fds)) if fds.len() == 1 => {
                let fd = fds.pop().ok_or(CANNOT)?;
                SealedView::map(&fd, usize::try_from(d.len).map_err(|_| CANNOT)?).map_err(|_| CANNOT)
            }
            Err(Error::KernelGone) => Err(RecvError::HandleLost(self.name.clone())),
            _ => Err(CANNOT),
        }
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<CarrierMessage<'_>, RecvError> {
        let end = self.end()?;
        let claim = blocking::claim_recv(&end.delivery, RECEIVER, deadline)?;
        self.take(claim)
    }

    /// Receives one message, in place, waiting until one comes.
    pub fn recv(&self) -> Result<CarrierMessage<'_>, RecvError> {
        self.recv_until(None)
    }

    /// Like [`Cocarrier::recv`], giving up after `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<CarrierMessage<'_>, RecvError> {
        self.recv_until(crate::deadline(timeout))
    }

    /// Like [`Cocarrier::recv`], but returns [`RecvError::Empty`] at once
    /// when no message is queued for this receiver.
    pub fn try_recv(&self) -> Result<CarrierMessage<'_>, RecvError> {
        let end = self.end()?;
        let claim = end.delivery.try_claim_recv(RECEIVER)?;
        self.take(claim)
    }

    /// Receives one message as a `Vec` (a copy).
    pub fn recv_vec(&self) -> Result<Vec<u8>, RecvError> {
        Ok(self.recv()?.to_vec())
    }

    fn release(&self, id: u64) {
        let Some(end) = &self.end else { return };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.push(id);
        for attempt in 0..2 {
            while let Some(&id) = pending.last() {
                if end.release.try_send(0, &id.to_le_bytes()).is_err() {
                    break;
                }
                comesg_shm::fault::point("carrier.recv.released");
                pending.pop();
            }
            if pending.is_empty() || attempt == 1 {
                break;
            }
            // The queue is full: have the kernel collect it, then retry.
            let _ = self.conn.request(Request::CarrierCollect { handle: self.held.id() });
        }
        // What is left goes with the next release (or when the handle
        // closes, when the kernel frees all this receiver held).
    }

    /// The read-only mapping of the arena (for tests that try to write it).
    #[doc(hidden)]
    pub fn arena_mapping(&self) -> Option<&Mapping> {
        self.end.as_ref().map(|e| e.arena.mapping())
    }

    /// Closes the handle (dropping closes too, silently).
    pub fn close(self) -> Result<(), Error> {
        self.held.close()
    }
}
