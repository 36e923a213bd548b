//! Comutexes: named cross-process mutexes that survive a dead owner.

use std::marker::PhantomData;
use std::time::Duration;

use comesg_proto::{HandleId, MutexSpec, Name, PortGrant, PortSpec};
use comesg_shm::comutex::{Layout, Locked, MutexError, MutexGuard, RobustMutex};
use comesg_sys::mapping::{Access, Mapping};
use comesg_sys::OwnedFd;

use crate::{Connection, Error};

/// Why a lock attempt did not give a clean guard.
///
/// [`LockError::OwnerDied`] carries the guard: the lock *is* held, but the
/// previous owner died holding it, so the value it protects may be half
/// updated. Repair it, then call `mark_consistent` on the guard before it
/// drops; a guard dropped without that leaves the comutex
/// [`LockError::NotRecoverable`] for everyone (as `EOWNERDEAD` does for
/// robust pthread mutexes).
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum LockError<G> {
    /// Acquired, but the previous owner died holding it.
    #[error("the previous owner died holding the comutex")]
    OwnerDied(G),
    /// Held by someone else (`try_lock`).
    #[error("comutex is held")]
    WouldBlock,
    /// Still held when the timeout passed.
    #[error("timed out waiting for the comutex")]
    TimedOut,
    /// A previous owner died and its successor did not mark the value
    /// consistent: the comutex cannot be locked again.
    #[error("comutex is not recoverable")]
    NotRecoverable,
    /// This thread already holds it.
    #[error("this thread already holds the comutex")]
    WouldDeadlock,
    /// The lock's shared state was corrupted by a peer.
    #[error("comutex state corrupt: {0}")]
    Corrupt(String),
    /// The async runtime could not watch the comutex (`lock_async`).
    #[error("the async runtime could not watch the comutex: {0}")]
    Reactor(String),
}

impl<G> std::fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            LockError::WouldBlock => f.write_str("WouldBlock"),
            LockError::TimedOut => f.write_str("TimedOut"),
            LockError::NotRecoverable => f.write_str("NotRecoverable"),
            LockError::WouldDeadlock => f.write_str("WouldDeadlock"),
            LockError::Corrupt(s) => write!(f, "Corrupt({s:?})"),
            LockError::Reactor(s) => write!(f, "Reactor({s:?})"),
        }
    }
}

impl<G> LockError<G> {
    /// Maps the guard an [`LockError::OwnerDied`] carries.
    pub fn map<H>(self, f: impl FnOnce(G) -> H) -> LockError<H> {
        match self {
            LockError::OwnerDied(g) => LockError::OwnerDied(f(g)),
            LockError::WouldBlock => LockError::WouldBlock,
            LockError::TimedOut => LockError::TimedOut,
            LockError::NotRecoverable => LockError::NotRecoverable,
            LockError::WouldDeadlock => LockError::WouldDeadlock,
            LockError::Corrupt(s) => LockError::Corrupt(s),
            LockError::Reactor(s) => LockError::Reactor(s),
        }
    }
}

impl<G> From<MutexError> for LockError<G> {
    fn from(e: MutexError) -> Self {
        match e {
            MutexError::WouldBlock => LockError::WouldBlock,
            MutexError::TimedOut => LockError::TimedOut,
            MutexError::NotRecoverable => LockError::NotRecoverable,
            MutexError::WouldDeadlock => LockError::WouldDeadlock,
            e => LockError::Corrupt(e.to_string()),
        }
    }
}

/// The result of a lock attempt.
pub type LockResult<G> = Result<G, LockError<G>>;

/// A handle to a comutex: a named mutex shared by processes.
///
/// Uncontended `lock` and unlock are one atomic instruction each, with no
/// system call; a contended locker sleeps in the Linux kernel. If the owner
/// dies holding it (killed, crashed, or its thread exited), the next locker
/// gets [`LockError::OwnerDied`].
///
/// ```no_run
/// use comesg::{Connection, LockError};
/// let conn = Connection::connect_default()?;
/// let m = conn.create_comutex("/app/lock", Default::default())?;
/// let guard = match m.lock() {
///     Ok(g) => g,
///     Err(LockError::OwnerDied(g)) => {
///         // repair whatever the lock protects, then:
///         g.mark_consistent()?;
///         g
///     }
///     Err(e) => return Err(e.map(|_| ()).into()),
/// };
/// drop(guard); // unlocks
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Comutex {
    mutex: RobustMutex,
    spec: MutexSpec,
    held: crate::held::Held,
    name: Name,
}

/// A held comutex; unlocks when dropped. Not `Send`: the thread that locked
/// it must unlock it.
#[derive(Debug)]
pub struct ComutexGuard<'a> {
    inner: MutexGuard<'a>,
    _owner_thread: PhantomData<*const ()>,
}

impl ComutexGuard<'_> {
    /// After [`LockError::OwnerDied`]: declares the protected state
    /// consistent again, so that the comutex stays usable after this guard.
    pub fn mark_consistent(&self) -> Result<(), LockError<()>> {
        Ok(self.inner.mark_consistent()?)
    }

    /// Unlocks, reporting an error (dropping unlocks silently).
    pub fn unlock(self) -> Result<(), LockError<()>> {
        Ok(self.inner.unlock()?)
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.inner.bytes()
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        self.inner.bytes_mut()
    }
}

impl crate::copoll::sealed::Source for Comutex {
    fn bell(&self) -> Option<&comesg_sys::bell::Bell> {
        self.mutex.bell()
    }

    fn readiness(&self, _interest: crate::Interest) -> crate::Readiness {
        let free = self.mutex.is_free();
        crate::Readiness { readable: free, writable: free, ..Default::default() }
    }

    fn arm(&self, _interest: crate::Interest) {
        self.mutex.arm();
    }

    fn disarm(&self, _interest: crate::Interest) {
        self.mutex.disarm();
    }
}

impl Comutex {
    pub(crate) fn attach(conn: Connection, name: Name, g: PortGrant, fds: Vec<OwnedFd>) -> Result<Comutex, Error> {
        let held = crate::held::Held::new(conn, g.handle, &name);
        let PortSpec::Mutex(spec) = g.spec else {
            return Err(Error::WrongKind { name, found: g.spec.kind() });
        };
        let layout = Layout { data_size: spec.data_size, data_align: spec.data_align };
        layout.validate().map_err(|e| Error::Protocol(e.to_string()))?;
        let [fd, bell]: [OwnedFd; 2] =
            fds.try_into().map_err(|v: Vec<_>| Error::Protocol(format!("expected 2 fds, got {}", v.len())))?;
        let map = Mapping::map(&fd, layout.segment_len(), Access::ReadWrite)?;
        let mut mutex = RobustMutex::new(layout, map).map_err(|e| Error::Protocol(e.to_string()))?;
        mutex.set_bell(comesg_sys::bell::Bell::from_fd(bell));
        Ok(Comutex { mutex, spec, held, name })
    }

    pub(crate) fn held_ref(&self) -> (&Connection, HandleId) {
        (self.held.conn(), self.held.id())
    }

    /// Its name when it was opened.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Size, alignment and type fingerprint of the value it guards.
    pub fn spec(&self) -> MutexSpec {
        self.spec
    }

    #[inline]
    fn guard(r: Result<(MutexGuard<'_>, Locked), MutexError>) -> LockResult<ComutexGuard<'_>> {
        match r {
            Ok((inner, how)) => {
                let g = ComutexGuard { inner, _owner_thread: PhantomData };
                match how {
                    Locked::Clean => Ok(g),
                    Locked::OwnerDied => Err(LockError::OwnerDied(g)),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Locks, sleeping while another thread (in any process) holds it.
    #[inline]
    pub fn lock(&self) -> LockResult<ComutexGuard<'_>> {
        Self::guard(self.mutex.lock())
    }

    /// Locks if nobody holds it now ([`LockError::WouldBlock`] otherwise).
    #[inline]
    pub fn try_lock(&self) -> LockResult<ComutexGuard<'_>> {
        Self::guard(self.mutex.try_lock())
    }

    /// Locks, giving up after `timeout` ([`LockError::TimedOut`]).
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<ComutexGuard<'_>> {
        match crate::deadline(timeout) {
            Some(d) => Self::guard(self.mutex.lock_until(d)),
            None => Self::guard(self.mutex.lock()),
        }
    }

    /// Locks taken and owner deaths seen, read from shared memory.
    pub fn counters(&self) -> (u64, u64) {
        let s = self.mutex.stats();
        (s.locks, s.owner_deaths)
    }

    /// Closes the handle, reporting whether the kernel acknowledged it
    /// (dropping closes too, silently).
    pub fn close(self) -> Result<(), Error> {
        self.held.close()
    }

    /// The handle's number on its connection.
    pub fn handle(&self) -> HandleId {
        self.held.id()
    }
}
