//! copoll: waiting on many ports at once.
//!
//! Every port has a *bell*, an eventfd that the microkernel hands to each of
//! its holders. A [`Copoll`] registers a duplicate of each port's bell in an
//! epoll set, edge-triggered. Before it sleeps, it checks each port it is
//! not yet registered on (shared memory reads only), registers as a poller
//! in the port's shared memory (a counter beside the sleeper counter the
//! blocking calls use), forces a barrier, and checks again; whoever then
//! makes the port ready (a sender publishing, a receiver freeing a slot, a
//! worker finishing a call, an unlock, the microkernel on a holder's death)
//! sees the registration and rings the bell. So a ready port is reported at
//! once, an idle one costs nothing, and the data path of a port nobody polls
//! makes no extra system call.
//!
//! Readiness is level-triggered, as `poll(2)`: a port is reported by every
//! [`Copoll::wait`] for as long as it is ready. A registration is undone
//! when its bell rings (and made again when the port is next found not
//! ready), so a busy port does not make its senders ring for a poller that
//! is already awake.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use comesg_sys::bell::Bell;
use comesg_sys::poll::{Poller, Ready};
use comesg_sys::{AsFd, OwnedFd};

/// Longest sleep between re-checks when the Linux kernel refuses the
/// barrier that makes registration race-free (`membarrier`).
const NAP: Duration = Duration::from_millis(1);

/// What a poller waits for on a port.
///
/// ```
/// use comesg::Interest;
/// let both = Interest::READABLE | Interest::WRITABLE;
/// assert!(both.is_readable() && both.is_writable());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interest(u8);

impl Interest {
    /// A receive (or lock, or a call's response) would not wait.
    pub const READABLE: Interest = Interest(1);
    /// A send (or lock) would not wait.
    pub const WRITABLE: Interest = Interest(2);

    /// Whether it includes [`Interest::READABLE`].
    pub fn is_readable(self) -> bool {
        self.0 & 1 != 0
    }

    /// Whether it includes [`Interest::WRITABLE`].
    pub fn is_writable(self) -> bool {
        self.0 & 2 != 0
    }
}

impl std::ops::BitOr for Interest {
    type Output = Interest;
    fn bitor(self, o: Interest) -> Interest {
        Interest(self.0 | o.0)
    }
}

/// What a port is ready for now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// A receive (lock, response) would not wait.
    pub readable: bool,
    /// A send (lock) would not wait.
    pub writable: bool,
    /// The other side is gone: no more senders (for a receiver) or no more
    /// receivers (for a sender), after at least one came; a coservice's
    /// provider is gone.
    pub closed: bool,
    /// The port cannot be polled for what was asked (this handle lacks the
    /// right) or its shared state is corrupt; the operation itself says why.
    pub error: bool,
}

impl Readiness {
    /// Whether anything is to be reported.
    pub fn any(self) -> bool {
        self.readable || self.writable || self.closed || self.error
    }
}

/// One port's readiness, as [`Copoll::wait`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    token: u64,
    ready: Readiness,
}

impl Event {
    /// The token the port was added with.
    pub fn token(&self) -> u64 {
        self.token
    }
    /// A receive (or lock, or a call's response) would not wait.
    pub fn is_readable(&self) -> bool {
        self.ready.readable
    }
    /// A send (or lock) would not wait.
    pub fn is_writable(&self) -> bool {
        self.ready.writable
    }
    /// The other side has gone (see [`Readiness::closed`]).
    pub fn is_closed(&self) -> bool {
        self.ready.closed
    }
    /// The port cannot be polled for what was asked (see [`Readiness::error`]).
    pub fn is_error(&self) -> bool {
        self.ready.error
    }
    /// All of it.
    pub fn readiness(&self) -> Readiness {
        self.ready
    }
}

pub(crate) mod sealed {
    use super::{Interest, Readiness};
    use comesg_sys::bell::Bell;

    /// What copoll and the async functions need of a port. Sealed: only the
    /// library's port types implement it.
    pub trait Source: Sync {
        /// The port's bell.
        fn bell(&self) -> Option<&Bell>;
        /// Readiness now, from shared memory.
        fn readiness(&self, interest: Interest) -> Readiness;
        /// Registers as a poller for `interest`.
        fn arm(&self, interest: Interest);
        /// Undoes one [`Source::arm`].
        fn disarm(&self, interest: Interest);
        /// A poller starts watching (a pipe keeps its offer open while any
        /// does).
        fn register(&self, _interest: Interest) {}
        /// Undoes one [`Source::register`] (a pipe withdraws its offer when
        /// the last one goes).
        fn forget(&self, _interest: Interest) {}
        /// Whether readiness for `interest` may come without a bell: a
        /// channel's claims wait for a holder to leave a claim it made
        /// under a lease (see `comesg_shm`'s `lease`). Waiters then look
        /// again after a nap.
        fn settling(&self, _interest: Interest) -> bool {
            false
        }
    }
}

/// A port that [`Copoll`] can watch: [`crate::Channel`],
/// [`crate::Cocarrier`], [`crate::Copipe`], [`crate::Comutex`],
/// [`crate::SharedObject`] and a coservice call in flight
/// ([`crate::PendingCall`]; remove it from the set once it is reported, to
/// take its response: it stays ready until then).
///
/// | port | readable | writable | closed |
/// |---|---|---|---|
/// | channel | a message waits (RECV) | a slot is free (SEND) | no sender / no receiver left |
/// | carrier | a message waits (RECV) | always (the kernel queues or refuses) | no sender left |
/// | pipe | a sender filled this receiver's offer | some receiver offers | end of file / broken pipe |
/// | comutex, shared object | the lock is free | the lock is free | never |
/// | call in flight | the response (or the provider's death) is in | never | the provider has gone |
///
/// Polling a pipe for reading opens this handle's offer, as a receive
/// would: a sender may fill it, and then waits until this handle receives.
/// Removing the pipe from the poll set withdraws an offer nobody took.
pub trait Pollable: sealed::Source {}

impl<T: sealed::Source + ?Sized> Pollable for T {}

/// Registration that is undone when dropped (async waits use it, so that a
/// cancelled wait leaves nothing behind).
#[cfg(feature = "tokio")]
pub(crate) struct Armed<'a> {
    src: &'a dyn sealed::Source,
    interest: Interest,
}

#[cfg(feature = "tokio")]
impl<'a> Armed<'a> {
    /// Registers, then forces the barrier; returns false if the barrier was
    /// refused (the caller must then not sleep long).
    pub(crate) fn new(src: &'a dyn sealed::Source, interest: Interest) -> (Armed<'a>, bool) {
        src.arm(interest);
        let trusted = comesg_sys::barrier::heavy();
        (Armed { src, interest }, trusted)
    }
}

#[cfg(feature = "tokio")]
impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.src.disarm(self.interest);
    }
}

struct Entry<'a> {
    src: &'a dyn sealed::Source,
    interest: Interest,
    token: u64,
    fd: OwnedFd,
    armed: bool,
    queued: bool,
}

/// A set of ports to wait on, of any kinds.
///
/// ```no_run
/// use comesg::{Connection, Copoll, Interest, Rights};
/// use std::time::Duration;
///
/// let conn = Connection::connect_default()?;
/// let a = conn.open_channel("/app/a", Rights::RECV)?;
/// let b = conn.open_cocarrier("/app/b", Rights::RECV)?;
/// let mut poll = Copoll::new()?;
/// poll.add(&a, 1, Interest::READABLE)?;
/// poll.add(&b, 2, Interest::READABLE)?;
/// let mut events = Vec::new();
/// poll.wait(&mut events, Some(Duration::from_secs(1)))?;
/// for e in &events {
///     match e.token() {
///         1 => println!("channel: {:?}", a.try_recv_vec()),
///         _ => println!("carrier: {:?}", b.try_recv().map(|m| m.len())),
///     }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Copoll<'a> {
    ep: Poller,
    entries: Vec<Option<Entry<'a>>>,
    free: Vec<usize>,
    by_token: HashMap<u64, usize>,
    queue: Vec<usize>,
    buf: Vec<Ready>,
}

impl std::fmt::Debug for Copoll<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Copoll").field("ports", &self.by_token.len()).finish()
    }
}

impl<'a> Copoll<'a> {
    /// An empty set.
    pub fn new() -> io::Result<Copoll<'a>> {
        Ok(Copoll {
            ep: Poller::new()?,
            entries: Vec::new(),
            free: Vec::new(),
            by_token: HashMap::new(),
            queue: Vec::new(),
            buf: Vec::new(),
        })
    }

    /// Number of ports in the set.
    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }

    /// Adds `port`, reported under `token` (unique in this set) when it is
    /// ready for `interest`. The same handle may be added more than once
    /// under different tokens.
    pub fn add<P: Pollable>(&mut self, port: &'a P, token: u64, interest: Interest) -> io::Result<()> {
        self.add_dyn(port, token, interest)
    }

    /// [`Copoll::add`] for a port behind `dyn Pollable`.
    pub fn add_dyn(&mut self, port: &'a dyn Pollable, token: u64, interest: Interest) -> io::Result<()> {
        if self.by_token.contains_key(&token) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("token {token} is in use")));
        }
        let src: &'a dyn sealed::Source = port;
        let bell: &Bell = src.bell().ok_or_else(|| io::Error::other("this port has no bell"))?;
        // A duplicate of our own: epoll keys registrations by fd, and the
        // same handle may be in several sets, or twice in this one.
        let fd = bell.dup_fd()?;
        let key = self.free.last().copied().unwrap_or(self.entries.len());
        self.ep.add_edge(fd.as_fd(), key as u64)?;
        if self.free.last() == Some(&key) {
            self.free.pop();
        }
        src.register(interest);
        let e = Entry { src, interest, token, fd, armed: false, queued: true };
        if key == self.entries.len() {
            self.entries.push(Some(e));
        } else {
            self.entries[key] = Some(e);
        }
        self.by_token.insert(token, key);
        self.queue.push(key);
        Ok(())
    }

    /// Removes the port added under `token`; returns whether there was one.
    pub fn remove(&mut self, token: u64) -> bool {
        let Some(key) = self.by_token.remove(&token) else { return false };
        if let Some(e) = self.entries.get_mut(key).and_then(Option::take) {
            self.ep.remove(e.fd.as_fd());
            Self::release(&e);
            self.free.push(key);
        }
        self.queue.retain(|&k| k != key);
        true
    }

    fn release(e: &Entry<'_>) {
        if e.armed {
            e.src.disarm(e.interest);
        }
        e.src.forget(e.interest);
    }

    /// Waits until at least one port is ready or `timeout` passes (`None`:
    /// no limit), and fills `events` with every ready port (each once).
    /// Returns how many.
    pub fn wait(&mut self, events: &mut Vec<Event>, timeout: Option<Duration>) -> io::Result<usize> {
        events.clear();
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        // Bells that rang since the last wait first: ports still ready from
        // before must not hide them.
        self.collect_rings(Some(Duration::ZERO))?;
        loop {
            let unready = self.check_queued(events);
            if !events.is_empty() {
                // Not armed yet: look at them again next time.
                for k in unready {
                    self.requeue(k);
                }
                return Ok(events.len());
            }
            // Register on every port found not ready, force the barrier
            // once for all of them, and look again.
            for &k in &unready {
                if let Some(e) = self.entries[k].as_mut() {
                    e.src.arm(e.interest);
                    e.armed = true;
                }
            }
            let mut trusted = unready.is_empty() || comesg_sys::barrier::heavy();
            for k in unready {
                let Some(e) = self.entries[k].as_mut() else { continue };
                let r = e.src.readiness(e.interest);
                if r.any() {
                    e.src.disarm(e.interest);
                    e.armed = false;
                    events.push(Event { token: e.token, ready: r });
                    self.requeue(k);
                }
            }
            if !events.is_empty() {
                return Ok(events.len());
            }
            trusted &= !self.entries.iter().flatten().any(|e| e.armed && e.src.settling(e.interest));
            let mut left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(0);
            }
            if !trusted {
                left = Some(left.map_or(NAP, |t| t.min(NAP)));
            }
            self.collect_rings(left)?;
            if !trusted {
                // The registrations may have raced a change: look at all.
                for k in 0..self.entries.len() {
                    self.requeue(k);
                }
            }
            if self.queue.is_empty() && deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(0);
            }
        }
    }

    /// Waits up to `timeout` for bells and queues the ports that rang.
    fn collect_rings(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.buf.clear();
        self.ep.wait(&mut self.buf, timeout)?;
        for i in 0..self.buf.len() {
            self.requeue(self.buf[i].token as usize);
        }
        Ok(())
    }

    fn requeue(&mut self, k: usize) {
        if let Some(Some(e)) = self.entries.get_mut(k) {
            if !e.queued {
                e.queued = true;
                self.queue.push(k);
            }
        }
    }

    /// Checks every queued port: ready ones go to `events` (and stay
    /// queued, level-triggered); the others are returned, unqueued.
    fn check_queued(&mut self, events: &mut Vec<Event>) -> Vec<usize> {
        let queued = std::mem::take(&mut self.queue);
        let mut unready = Vec::new();
        for k in queued {
            let Some(e) = self.entries[k].as_mut() else { continue };
            e.queued = false;
            if e.armed {
                e.src.disarm(e.interest);
                e.armed = false;
            }
            let r = e.src.readiness(e.interest);
            if r.any() {
                events.push(Event { token: e.token, ready: r });
                e.queued = true;
                self.queue.push(k);
            } else {
                unready.push(k);
            }
        }
        unready
    }
}

impl Drop for Copoll<'_> {
    fn drop(&mut self) {
        for e in self.entries.iter().flatten() {
            Self::release(e);
        }
    }
}
