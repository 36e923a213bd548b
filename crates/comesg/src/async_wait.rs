//! Async send, receive, lock and call on tokio (feature `tokio`).
//!
//! Each async operation first tries its non-blocking form. When that would
//! wait, it registers the port's bell with the tokio reactor (a duplicate
//! fd, edge-triggered, like [`crate::Copoll`]), registers as a poller in the
//! port's shared memory, tries again, and only then yields to the runtime:
//! no thread waits, and an idle port costs no CPU. Whoever makes the port
//! ready rings the bell and the task is woken.
//!
//! Every future here is cancellation-safe: the only `.await` is on the
//! bell, and the operation itself is the synchronous try form, which either
//! completes (taking a message, a slot or the lock) within one poll or
//! changes nothing. Dropping a pending `recv_async` never loses a message.
#![allow(unsafe_code)]

use std::io;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use crate::copoll::{sealed::Source, Armed, Interest};
use crate::{Channel, Cocarrier, Comutex, ComutexGuard, Copipe, LockError, LockResult, RecvError, SendError};

/// Longest sleep between re-checks when the Linux kernel refuses the
/// barrier that makes registration race-free.
const NAP: Duration = Duration::from_millis(1);

/// Undoes what a poller left in place (a pipe's open offer) however the
/// wait ends, cancelled included.
struct Forget<'a> {
    src: &'a dyn Source,
    interest: Interest,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.src.forget(self.interest);
    }
}

/// Runs `attempt` until it gives an answer (`Some`), sleeping on the port's
/// bell in between.
pub(crate) async fn until_ready<T, E: From<io::Error>>(
    src: &dyn Source,
    interest: Interest,
    mut attempt: impl FnMut() -> Option<Result<T, E>>,
) -> Result<T, E> {
    if let Some(r) = attempt() {
        return r;
    }
    src.register(interest);
    let _forget = Forget { src, interest };
    let bell = src.bell().ok_or_else(|| io::Error::other("this port has no bell"))?;
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other("an async comesg call needs a tokio runtime").into());
    }
    let dup = bell.dup_fd()?;
    // SAFETY: `dup` is an open fd that the AsyncFd owns from here on; it is
    // never replaced, and closed only when the AsyncFd drops.
    let fd = unsafe { AsyncFd::register_with_interest(dup, tokio::io::Interest::READABLE) }.map_err(io::Error::from)?;
    loop {
        let (armed, trusted) = Armed::new(src, interest);
        if let Some(r) = attempt() {
            return r;
        }
        if trusted && !src.settling(interest) {
            let mut ready = fd.readable().await?;
            ready.clear_ready();
        } else {
            // The registration may have raced a change: look again soon.
            if let Ok(ready) = tokio::time::timeout(NAP, fd.readable()).await {
                ready?.clear_ready();
            }
        }
        drop(armed);
        if let Some(r) = attempt() {
            return r;
        }
    }
}

/// Runs `attempt` until it gives an answer, sleeping until `fd` is
/// readable in between (level: the attempt drains what is there).
pub(crate) async fn readable<T, E: From<io::Error>>(
    fd: std::os::fd::BorrowedFd<'_>,
    mut attempt: impl FnMut() -> Option<Result<T, E>>,
) -> Result<T, E> {
    if let Some(r) = attempt() {
        return r;
    }
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other("an async comesg call needs a tokio runtime").into());
    }
    let dup = fd.try_clone_to_owned()?;
    // SAFETY: `dup` is an open fd that the AsyncFd owns from here on; it is
    // never replaced, and closed only when the AsyncFd drops.
    let afd =
        unsafe { AsyncFd::register_with_interest(dup, tokio::io::Interest::READABLE) }.map_err(io::Error::from)?;
    loop {
        let mut ready = afd.readable().await?;
        match attempt() {
            Some(r) => return r,
            None => ready.clear_ready(),
        }
    }
}

fn recv_step<T>(r: Result<T, RecvError>) -> Option<Result<T, RecvError>> {
    match r {
        Err(RecvError::Empty) => None,
        r => Some(r),
    }
}

fn send_step(r: Result<(), SendError>) -> Option<Result<(), SendError>> {
    match r {
        Err(SendError::Full) => None,
        r => Some(r),
    }
}

impl From<io::Error> for RecvError {
    fn from(e: io::Error) -> Self {
        RecvError::Reactor(e.to_string())
    }
}

impl From<io::Error> for SendError {
    fn from(e: io::Error) -> Self {
        SendError::Reactor(e.to_string())
    }
}

impl Channel {
    /// Receives one message into `buf` (see [`Channel::recv`]), waiting
    /// without a thread. Cancellation-safe.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let conn = comesg::Connection::connect_default()?;
    /// let rx = conn.open_channel("/app/jobs", comesg::Rights::RECV)?;
    /// let mut buf = vec![0u8; rx.slot_size()];
    /// let n = rx.recv_async(&mut buf).await?;
    /// # Ok(()) }
    /// ```
    pub async fn recv_async(&self, buf: &mut [u8]) -> Result<usize, RecvError> {
        until_ready(self, Interest::READABLE, || recv_step(self.try_recv(buf))).await
    }

    /// Receives one message as a new `Vec`, waiting without a thread.
    pub async fn recv_vec_async(&self) -> Result<Vec<u8>, RecvError> {
        until_ready(self, Interest::READABLE, || recv_step(self.try_recv_vec())).await
    }

    /// Sends one message, waiting without a thread while the channel is
    /// full. Cancellation-safe: a cancelled send sent nothing.
    pub async fn send_async(&self, msg: &[u8]) -> Result<(), SendError> {
        until_ready(self, Interest::WRITABLE, || send_step(self.try_send(msg))).await
    }
}

impl Cocarrier {
    /// Receives one message in place, waiting without a thread.
    /// Cancellation-safe.
    pub async fn recv_async(&self) -> Result<crate::CarrierMessage<'_>, RecvError> {
        until_ready(self, Interest::READABLE, || recv_step(self.try_recv())).await
    }

    /// Sends one message; while no receiver has room, retries after a
    /// growing pause (up to 2 ms) without blocking the runtime. Each try is
    /// one short request to the microkernel.
    pub async fn send_async(&self, msg: &[u8]) -> Result<(), SendError> {
        let mut nap = Duration::from_micros(20);
        loop {
            match self.try_send(msg) {
                Err(SendError::Full) => {}
                r => return r,
            }
            tokio::time::sleep(nap).await;
            nap = (nap * 2).min(Duration::from_millis(2));
        }
    }
}

impl Copipe {
    /// Receives one message into `buf`, waiting without a thread: the
    /// handle's offer stays open while it waits, and is withdrawn if the
    /// future is dropped (a message a sender already put there is kept for
    /// the next receive: none is lost).
    pub async fn recv_async(&self, buf: &mut [u8]) -> Result<usize, RecvError> {
        until_ready(self, Interest::READABLE, || {
            let Some(r) = self.receiver_slot() else { return Some(Err(RecvError::NoRight)) };
            // A blocking receive on another thread owns the offer while it
            // runs: it takes what comes, and the take rings the bell.
            let _one = self.recv_lock()?;
            // The stash first, under the lock: it holds older messages.
            if let Some(m) = self.take_stashed() {
                let n = m.len().min(buf.len());
                buf[..n].copy_from_slice(&m[..n]);
                return Some(Ok(m.len()));
            }
            if let Some(got) = self.pipe_ref().try_take(r, buf) {
                return Some(got.map_err(RecvError::from));
            }
            let st = self.readiness(Interest::READABLE);
            if st.closed {
                Some(Err(RecvError::Closed))
            } else if st.error {
                Some(Err(RecvError::Corrupt("pipe receiver slot in an impossible state")))
            } else {
                None
            }
        })
        .await
    }
}

impl Comutex {
    /// Locks, waiting without a thread while another holds it (in any
    /// process). The guard is not `Send`: hold it within one task poll, or
    /// use a current-thread runtime.
    pub async fn lock_async(&self) -> LockResult<ComutexGuard<'_>> {
        let r = until_ready(self, Interest::READABLE, || match self.try_lock() {
            Err(LockError::WouldBlock) => None,
            r => Some(r.map_err(AsyncLockError)),
        })
        .await;
        r.map_err(|e| e.0)
    }
}

/// Carries a lock error through [`until_ready`], which needs `From<io::Error>`.
struct AsyncLockError<G>(LockError<G>);

impl<G> From<io::Error> for AsyncLockError<G> {
    fn from(e: io::Error) -> Self {
        AsyncLockError(LockError::Reactor(e.to_string()))
    }
}

/// A pipe message filled into a receiver's offer, waiting to be taken: a
/// port to wait on. Dropped early (the send cancelled), it still lets go of
/// a slot whose receiver died (the message is delivered if the receiver
/// takes it; the sender only stops waiting to hear so).
struct Taken<'a> {
    pipe: &'a Copipe,
    filled: Option<comesg_shm::pipe::Filled>,
}

impl Taken<'_> {
    fn check(&self) -> Option<Result<(), comesg_shm::pipe::PipeError>> {
        self.filled.as_ref().and_then(|f| self.pipe.pipe_ref().taken(f))
    }
}

impl Source for Taken<'_> {
    fn bell(&self) -> Option<&comesg_sys::bell::Bell> {
        self.pipe.pipe_ref().bell_fd()
    }
    fn readiness(&self, _interest: Interest) -> crate::Readiness {
        crate::Readiness { readable: self.check().is_some(), ..Default::default() }
    }
    fn arm(&self, _interest: Interest) {
        if let Some(f) = &self.filled {
            self.pipe.pipe_ref().arm_taken(f);
        }
    }
    fn disarm(&self, _interest: Interest) {
        if let Some(f) = &self.filled {
            self.pipe.pipe_ref().disarm_taken(f);
        }
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        // Not taken yet: look again at later sends, so that a receiver that
        // dies holding it gets its slot back (see `Pipe::taken`).
        if let Some(f) = self.filled.take().filter(|f| self.pipe.pipe_ref().taken(f).is_none()) {
            self.pipe.orphans.lock().unwrap_or_else(|p| p.into_inner()).push(f);
        }
    }
}

impl Copipe {
    /// Sends one message without a thread waiting: waits for an open offer,
    /// copies the message into it, and waits until the receiver has it, all
    /// on the runtime. Cancelled before a receiver was chosen, nothing was
    /// sent; cancelled after, the message is delivered when that receiver
    /// takes it (or not, if it dies first).
    pub async fn send_async(&self, msg: &[u8]) -> Result<(), SendError> {
        let h = self.sender_holder().ok_or(SendError::NoRight)?;
        self.orphans.lock().unwrap_or_else(|p| p.into_inner()).retain(|f| self.pipe_ref().taken(f).is_none());
        let filled = until_ready(self, Interest::WRITABLE, || {
            match self.pipe_ref().try_fill(h, msg, self.own_offer(), self.receivers_watch()) {
                Ok(Some(f)) => Some(Ok(f)),
                Ok(None) => None,
                Err(e) => Some(Err(SendError::from(e))),
            }
        })
        .await?;
        let mut taken = Taken { pipe: self, filled: Some(filled) };
        let r = until_ready(&taken, Interest::READABLE, || taken.check().map(|r| r.map_err(SendError::from))).await;
        taken.filled = None; // answered: nothing left to look at
        r
    }
}
