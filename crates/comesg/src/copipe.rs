//! COPIPE handles: synchronous, one copy, anycast; also a byte stream.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use comesg_proto::{Name, PipeSpec, PortGrant, PortSpec, Rights};
use comesg_shm::pipe::{Pipe, PipeError, PipeLayout, Watch};
use comesg_sys::mapping::{Access, Mapping};
use comesg_sys::OwnedFd;

use crate::held::Held;
use crate::{Connection, Error, RecvError, SendError};

/// A handle to a COPIPE: a receiver offers its buffer, a sender copies one
/// message straight into it, and the send returns only once the receiver
/// has it. Each message goes to one receiver.
///
/// `Read` and `Write` make it a byte stream: writes are cut into messages of
/// at most the buffer size; a read returns end of file once every sender has
/// gone, and a write fails with `BrokenPipe` once every receiver has.
///
/// ```no_run
/// use std::io::Write;
/// let conn = comesg::Connection::connect_default()?;
/// let mut out = conn.create_copipe("/app/stream", Default::default())?;
/// out.write_all(b"bytes for whoever reads")?;   // blocks until read
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Copipe {
    pipe: Pipe,
    sender: Option<u32>,
    slot: Option<u32>,
    /// One offer at a time per receiver handle; also the leftover of a
    /// message a `read` could not take whole.
    recv_state: Mutex<Leftover>,
    /// What this end has seen of senders (end of file comes only after
    /// one) and of receivers (broken pipe likewise).
    senders_seen: Watch,
    receivers_seen: Watch,
    /// Poll registrations and async waits, which rely on this handle's
    /// offer being open. While any is there, a receive that gives up leaves
    /// the offer open, and this handle's sends skip it (they would wait for
    /// themselves); the last one out withdraws it (unless a receive in
    /// progress uses it).
    pollers: AtomicU32,
    /// Messages in `stash` (so that a receive looks at it without a lock).
    stashed: AtomicU32,
    /// The last poller left while `recv_state` was held: whoever holds it
    /// withdraws the offer on the way out (see [`StateGuard`]).
    withdraw_pending: AtomicBool,
    /// Messages senders put into this handle's offer that were taken out
    /// when the last user of the offer went (so those senders could go on),
    /// for the next receives.
    stash: Mutex<VecDeque<Vec<u8>>>,
    /// Async sends cancelled before their receiver took the message: looked
    /// at again, so a receiver that died meanwhile gets its slot back.
    #[cfg(feature = "tokio")]
    pub(crate) orphans: Mutex<Vec<comesg_shm::pipe::Filled>>,
    held: Held,
    name: Name,
    rights: Rights,
}

/// `recv_state` held; on the way out, does a withdrawal the last poller
/// left pending because the state was held at the time.
struct StateGuard<'a> {
    pipe: &'a Copipe,
    guard: Option<std::sync::MutexGuard<'a, Leftover>>,
}

impl std::ops::Deref for StateGuard<'_> {
    type Target = Leftover;
    fn deref(&self) -> &Leftover {
        self.guard.as_deref().unwrap_or_else(|| unreachable!("taken only in drop"))
    }
}

impl std::ops::DerefMut for StateGuard<'_> {
    fn deref_mut(&mut self) -> &mut Leftover {
        self.guard.as_deref_mut().unwrap_or_else(|| unreachable!("taken only in drop"))
    }
}

impl Drop for StateGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        // After unlocking: a poller that found the state held set the flag
        // before it tried the lock, so one of us sees the other.
        // A load first: the swap, a locked instruction, only when set.
        if self.pipe.withdraw_pending.load(SeqCst) && self.pipe.withdraw_pending.swap(false, SeqCst) {
            self.pipe.withdraw_if_unused();
        }
    }
}

#[derive(Debug, Default)]
struct Leftover {
    buf: Vec<u8>,
    at: usize,
    eof: bool,
}

/// How to create a COPIPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopipeOptions {
    /// Bytes of each receiver's buffer: the largest message.
    pub buffer: u32,
    /// Most receivers at once.
    pub receivers: u32,
    /// Rights of the creator's handle.
    pub rights: Rights,
    /// Permission bits: `w` lets others send, `r` lets them receive.
    pub mode: u32,
    /// Lives with no holders until unlinked.
    pub persistent: bool,
    /// Fail if the name exists (otherwise open the existing pipe).
    pub exclusive: bool,
}

impl Default for CopipeOptions {
    fn default() -> Self {
        CopipeOptions {
            buffer: 1 << 20,
            receivers: 16,
            rights: Rights::SEND,
            mode: 0o600,
            persistent: false,
            exclusive: false,
        }
    }
}

impl From<PipeError> for SendError {
    fn from(e: PipeError) -> Self {
        match e {
            PipeError::WouldBlock => SendError::Full,
            PipeError::TimedOut => SendError::TimedOut,
            PipeError::Closed => SendError::Closed,
            PipeError::ReceiverDied => SendError::ReceiverDied,
            PipeError::TooLong { len, buffer } => SendError::TooLong { len, slot_size: buffer },
            PipeError::NoRight => SendError::NoRight,
            PipeError::Corrupt(c) => SendError::Corrupt(c),
        }
    }
}

impl From<PipeError> for RecvError {
    fn from(e: PipeError) -> Self {
        match e {
            PipeError::WouldBlock => RecvError::Empty,
            PipeError::TimedOut => RecvError::TimedOut,
            PipeError::Closed => RecvError::Closed,
            PipeError::NoRight => RecvError::NoRight,
            PipeError::ReceiverDied | PipeError::TooLong { .. } => RecvError::Corrupt("impossible receive error"),
            PipeError::Corrupt(c) => RecvError::Corrupt(c),
        }
    }
}

impl crate::copoll::sealed::Source for Copipe {
    fn bell(&self) -> Option<&comesg_sys::bell::Bell> {
        self.pipe.bell_fd()
    }

    fn readiness(&self, interest: crate::Interest) -> crate::Readiness {
        let mut out = crate::Readiness::default();
        if interest.is_readable() {
            // A receive in progress on another thread holds the state and
            // takes what comes; do not wait for it.
            let rest = self.try_state().is_some_and(|left| left.at < left.buf.len());
            let pending = rest || self.stashed.load(SeqCst) > 0;
            match self.slot.map(|r| self.pipe.recv_readiness(r, &self.senders_seen)) {
                // The rest of a message a `read` could not take whole, or
                // one a poller gave up on.
                Some(_) if pending => out.readable = true,
                Some(Ok((ready, closed))) => (out.readable, out.closed) = (ready, closed),
                _ => out.error = true,
            }
        }
        if interest.is_writable() {
            if self.sender.is_some() {
                let (ready, closed) = self.pipe.send_readiness(&self.receivers_seen, self.own_offer());
                out.writable = ready;
                out.closed |= closed;
            } else {
                out.error = true;
            }
        }
        out
    }

    fn arm(&self, interest: crate::Interest) {
        if let (true, Some(r)) = (interest.is_readable(), self.slot) {
            // A receiver is readable only once a sender fills its offer.
            let _ = self.pipe.open_offer(r);
            let _ = self.pipe.arm(Some(r));
        }
        if interest.is_writable() && self.sender.is_some() {
            let _ = self.pipe.arm(None);
        }
    }

    fn disarm(&self, interest: crate::Interest) {
        if let (true, Some(r)) = (interest.is_readable(), self.slot) {
            self.pipe.disarm(Some(r));
        }
        if interest.is_writable() && self.sender.is_some() {
            self.pipe.disarm(None);
        }
    }

    fn register(&self, interest: crate::Interest) {
        if interest.is_readable() && self.slot.is_some() {
            self.pollers.fetch_add(1, SeqCst);
        }
    }

    fn forget(&self, interest: crate::Interest) {
        if interest.is_readable() {
            self.last_poller_out();
        }
    }
}

impl Copipe {
    pub(crate) fn attach(conn: Connection, name: Name, g: PortGrant, fds: Vec<OwnedFd>) -> Result<Copipe, Error> {
        let held = Held::new(conn, g.handle, &name);
        let PortSpec::Pipe(spec) = g.spec else {
            return Err(Error::WrongKind { name, found: g.spec.kind() });
        };
        let layout = PipeLayout { buffer: spec.buffer, receivers: spec.receivers };
        layout.validate().map_err(|e| Error::Protocol(e.to_string()))?;
        let [c, d, bell]: [OwnedFd; 3] =
            fds.try_into().map_err(|v: Vec<_>| Error::Protocol(format!("expected 3 fds, got {}", v.len())))?;
        let data_access = if g.rights.contains(Rights::SEND) { Access::ReadWrite } else { Access::ReadOnly };
        let mut pipe = Pipe::new(
            layout,
            Mapping::map(&c, layout.control_len(), Access::ReadWrite)?,
            Mapping::map(&d, layout.data_len(), data_access)?,
        )
        .map_err(|e| Error::Protocol(e.to_string()))?;
        pipe.set_bell(comesg_sys::bell::Bell::from_fd(bell));
        let attaches = pipe.attaches();
        Ok(Copipe {
            pipe,
            sender: g.send_holder,
            slot: g.recv_holder,
            recv_state: Mutex::new(Leftover::default()),
            senders_seen: Watch::new(attaches.0),
            receivers_seen: Watch::new(attaches.1),
            pollers: AtomicU32::new(0),
            stashed: AtomicU32::new(0),
            withdraw_pending: AtomicBool::new(false),
            stash: Mutex::new(VecDeque::new()),
            #[cfg(feature = "tokio")]
            orphans: Mutex::new(Vec::new()),
            held,
            name,
            rights: g.rights,
        })
    }

    pub(crate) fn held_ref(&self) -> (&Connection, comesg_proto::HandleId) {
        (self.held.conn(), self.held.id())
    }

    /// Its name when it was opened.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// This handle's rights.
    pub fn rights(&self) -> Rights {
        self.rights
    }

    /// The pipe's shape.
    pub fn spec(&self) -> PipeSpec {
        let l = self.pipe.layout();
        PipeSpec { buffer: l.buffer, receivers: l.receivers }
    }

    /// Largest message in bytes.
    pub fn buffer_size(&self) -> usize {
        self.pipe.layout().buffer as usize
    }

    fn send_until(&self, msg: &[u8], deadline: Option<Instant>, try_first: bool) -> Result<(), SendError> {
        // Matched, not `ok_or`: see `Channel::sender`.
        let Some(h) = self.sender else { return Err(SendError::NoRight) };
        Ok(self.pipe.send_skipping(h, msg, deadline, try_first, &self.receivers_seen, self.own_offer())?)
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn pipe_ref(&self) -> &Pipe {
        &self.pipe
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn sender_holder(&self) -> Option<u32> {
        self.sender
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn receivers_watch(&self) -> &Watch {
        &self.receivers_seen
    }

    /// This handle's own slot while a poller keeps its offer open: its
    /// sends must not take it (they would wait for themselves).
    pub(crate) fn own_offer(&self) -> Option<u32> {
        self.slot.filter(|_| self.pollers.load(SeqCst) > 0)
    }

    /// After the offer of slot `r` may have been withdrawn: a poller that
    /// came meanwhile relies on it, so open it again.
    fn reopen_for_pollers(&self, r: u32) {
        if self.pollers.load(SeqCst) > 0 {
            let _ = self.pipe.open_offer(r);
        }
    }

    /// A poller leaves; the last one withdraws the offer (now, or, if
    /// `recv_state` is held, through whoever holds it).
    fn last_poller_out(&self) {
        if self.pollers.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)) == Ok(1) {
            self.withdraw_if_unused();
        }
    }

    /// Withdraws the offer if no poller relies on it, taking a message a
    /// sender put there meanwhile into the stash. If `recv_state` is held,
    /// leaves it to the holder (which looks when it lets go).
    fn withdraw_if_unused(&self) {
        let Some(r) = self.slot else { return };
        self.withdraw_pending.store(true, SeqCst);
        let Some(state) = self.try_state() else { return };
        self.withdraw_pending.store(false, SeqCst);
        if self.pollers.load(SeqCst) > 0 {
            return;
        }
        let mut m = Vec::new();
        let late = self.pipe.withdraw_offer(r, &mut m).is_some();
        if late {
            self.stash.lock().unwrap_or_else(|p| p.into_inner()).push_back(m);
            self.stashed.fetch_add(1, SeqCst);
        }
        // A poller that came meanwhile relies on an open offer, and on the
        // stash: open it again only now, and wake it.
        self.reopen_for_pollers(r);
        drop(state);
        if late {
            if let Some(b) = self.pipe.bell_fd() {
                b.ring();
            }
        }
    }

    /// `recv_state`, waiting for it.
    fn state(&self) -> StateGuard<'_> {
        StateGuard { pipe: self, guard: Some(self.recv_state.lock().unwrap_or_else(|p| p.into_inner())) }
    }

    /// `recv_state` if nobody holds it.
    fn try_state(&self) -> Option<StateGuard<'_>> {
        let guard = match self.recv_state.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(StateGuard { pipe: self, guard: Some(guard) })
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn receiver_slot(&self) -> Option<u32> {
        self.slot
    }

    /// The receive lock without waiting for it (`None`: a receive on
    /// another thread holds it).
    #[cfg(feature = "tokio")]
    pub(crate) fn recv_lock(&self) -> Option<impl Sized + '_> {
        self.try_state()
    }

    /// The oldest message taken out of a withdrawn offer, if any.
    pub(crate) fn take_stashed(&self) -> Option<Vec<u8>> {
        if self.stashed.load(SeqCst) == 0 {
            return None;
        }
        let m = self.stash.lock().unwrap_or_else(|p| p.into_inner()).pop_front()?;
        self.stashed.fetch_sub(1, SeqCst);
        Some(m)
    }

    /// One receive through this handle's slot (the caller holds
    /// `recv_state`). While pollers rely on the offer, giving up leaves it
    /// open; one that came just as it was withdrawn gets it reopened.
    fn recv_raw(&self, r: u32, buf: &mut [u8], deadline: Option<Instant>, try_first: bool) -> Result<usize, PipeError> {
        let keep = || self.pollers.load(SeqCst) > 0;
        let got = self.pipe.recv_keeping(r, buf, deadline, try_first, &self.senders_seen, &keep);
        if got.is_err() {
            self.reopen_for_pollers(r);
        }
        got
    }

    /// Sends one message, waiting for a receiver; returns once a receiver
    /// has it. [`SendError::Closed`] once every receiver has gone (after
    /// this handle saw one: before the first comes, it waits).
    pub fn send(&self, msg: &[u8]) -> Result<(), SendError> {
        self.send_until(msg, None, false)
    }

    /// Sends one message if a receiver is offering now ([`SendError::Full`]
    /// otherwise). The receiver then has up to 10 ms to take it (enough for
    /// one asleep in a poll to wake); if it does not, the message is
    /// withdrawn, never delivered, and the result is [`SendError::Full`] too.
    pub fn try_send(&self, msg: &[u8]) -> Result<(), SendError> {
        self.send_until(msg, None, true)
    }

    /// Like [`Copipe::send`], giving up once `timeout` has passed without a
    /// receiver taking the message. A message already copied into a
    /// receiver's buffer but not taken by then (the receiver left its offer
    /// open for a poll and is busy elsewhere) is withdrawn: a
    /// [`SendError::TimedOut`] always means that nobody received it.
    pub fn send_timeout(&self, msg: &[u8], timeout: Duration) -> Result<(), SendError> {
        self.send_until(msg, crate::deadline(timeout), false)
    }

    fn recv_until(&self, buf: &mut [u8], deadline: Option<Instant>, try_first: bool) -> Result<usize, RecvError> {
        let Some(r) = self.slot else { return Err(RecvError::NoRight) };
        let _one_offer = self.state();
        if let Some(m) = self.take_stashed() {
            let n = m.len().min(buf.len());
            buf[..n].copy_from_slice(&m[..n]);
            return Ok(m.len());
        }
        Ok(self.recv_raw(r, buf, deadline, try_first)?)
    }

    /// Receives one message into `buf`, waiting for a sender; returns the
    /// message's full length. Only `buf.len()` bytes of a longer message
    /// are copied (as `recv(2)` with `MSG_TRUNC`); a buffer of
    /// [`Copipe::buffer_size`] always suffices. [`RecvError::Closed`] once
    /// every sender has gone (after this handle saw one: before the first
    /// sender comes, it waits, as a FIFO's reader does). Do not mix with
    /// `Read` on one handle: `read` may hold the rest of a message.
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, RecvError> {
        self.recv_until(buf, None, false)
    }

    /// Like [`Copipe::recv`], but returns [`RecvError::Empty`] unless a
    /// sender takes the offer at once.
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<usize, RecvError> {
        self.recv_until(buf, None, true)
    }

    /// Like [`Copipe::recv`], giving up after `timeout`.
    pub fn recv_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<usize, RecvError> {
        self.recv_until(buf, crate::deadline(timeout), false)
    }

    /// Receives one message as a new `Vec`.
    pub fn recv_vec(&self) -> Result<Vec<u8>, RecvError> {
        let mut v = vec![0u8; self.buffer_size()];
        let n = self.recv(&mut v)?;
        v.truncate(n);
        Ok(v)
    }

    /// Closes the handle (dropping closes too, silently).
    pub fn close(self) -> Result<(), Error> {
        self.held.close()
    }

    /// The data segment's mapping (for tests that show a RECV-only handle
    /// cannot write message data).
    #[doc(hidden)]
    pub fn data_mapping(&self) -> &Mapping {
        self.pipe.data_mapping()
    }

    fn read_stream(&self, out: &mut [u8]) -> io::Result<usize> {
        let r = self.slot.ok_or_else(|| io::Error::new(io::ErrorKind::PermissionDenied, "no RECV right"))?;
        let mut left = self.state();
        if left.at >= left.buf.len() {
            if let Some(m) = self.take_stashed() {
                left.buf = m;
                left.at = 0;
            }
        }
        if left.at < left.buf.len() {
            let n = (left.buf.len() - left.at).min(out.len());
            out[..n].copy_from_slice(&left.buf[left.at..left.at + n]);
            left.at += n;
            return Ok(n);
        }
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            // An empty message is not end of file: wait for the next one.
            match self.read_message(r, out, &mut left)? {
                0 if !left.eof => continue,
                n => return Ok(n),
            }
        }
    }

    fn read_message(&self, r: u32, out: &mut [u8], left: &mut Leftover) -> io::Result<usize> {
        let got = if out.len() >= self.buffer_size() {
            // Straight into the caller's buffer: the only copy out.
            self.recv_raw(r, out, None, false)
        } else {
            let mut tmp = std::mem::take(&mut left.buf);
            tmp.resize(self.buffer_size(), 0);
            let res = self.recv_raw(r, &mut tmp, None, false);
            if let Ok(len) = res {
                let n = len.min(out.len());
                out[..n].copy_from_slice(&tmp[..n]);
                tmp.truncate(len);
                left.buf = tmp;
                left.at = n;
                return Ok(n);
            }
            left.buf = tmp;
            left.buf.clear();
            left.at = 0;
            res
        };
        match got {
            Ok(n) => Ok(n),
            Err(PipeError::Closed) => {
                left.eof = true;
                Ok(0)
            }
            Err(e) => Err(io::Error::other(e)),
        }
    }

    fn write_stream(&self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let n = data.len().min(self.buffer_size());
        match self.send(&data[..n]) {
            Ok(()) => Ok(n),
            Err(SendError::Closed) => Err(io::ErrorKind::BrokenPipe.into()),
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

impl io::Read for &Copipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_stream(buf)
    }
}

impl io::Read for Copipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_stream(buf)
    }
}

impl io::Write for &Copipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_stream(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl io::Write for Copipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_stream(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
