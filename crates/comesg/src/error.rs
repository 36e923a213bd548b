//! Errors of the client library: one enum per kind of operation.

use std::io;
use std::path::PathBuf;

use comesg_proto::{KernelError, MutexSpec, Name, PortKind};
use comesg_shm::channel::blocking::WaitError;
use comesg_shm::channel::RingError;

/// A control operation (connect, create, open, list, close...) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No microkernel answered on the socket.
    #[error("cannot reach the comesg microkernel at {path}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The microkernel closed the connection (it exited or was killed).
    #[error("the comesg microkernel closed the connection")]
    KernelGone,
    /// The microkernel that granted this handle is gone (killed, or
    /// restarted since): the handle did not survive it. Its data path may
    /// still work; anything that needs the kernel fails with this error,
    /// which names the object so the caller knows what to open again.
    #[error("the handle to {name} did not survive its microkernel (killed or restarted): open {name} again")]
    HandleLost {
        /// The object the handle was for.
        name: Name,
    },
    /// The watched object was destroyed: no event follows `Destroyed`.
    #[error("the watched object is destroyed: no more events")]
    WatchEnded,
    /// The microkernel refused the request.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// The microkernel's answer made no sense (wrong version, wrong fds).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A system call failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The name is an object of another kind than the one asked for.
    #[error("{name} is a {found:?}, not the kind asked for")]
    WrongKind {
        /// The name.
        name: Name,
        /// What it is.
        found: PortKind,
    },
    /// A shared object's size, alignment or type differs from the type the
    /// caller opened it as.
    #[error("{name} holds a value of another type ({found:?}, expected {expected:?})")]
    TypeMismatch {
        /// The name.
        name: Name,
        /// The caller's type.
        expected: MutexSpec,
        /// The object's.
        found: MutexSpec,
    },
    /// A lock attempt failed (in a function that also talks to the kernel).
    #[error("lock failed: {0}")]
    Lock(#[from] crate::comutex::LockError<()>),
}

/// A send failed; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Every slot is full (non-blocking forms only).
    #[error("channel is full")]
    Full,
    /// The channel stayed full until the timeout.
    #[error("timed out waiting for a free slot")]
    TimedOut,
    /// The message is longer than a slot.
    #[error("message of {len} bytes exceeds the {slot_size}-byte slot")]
    TooLong {
        /// Message length.
        len: usize,
        /// Slot size.
        slot_size: u32,
    },
    /// The handle lacks the SEND right.
    #[error("this handle has no SEND right")]
    NoRight,
    /// No receiver is left (COPIPE: a broken pipe).
    #[error("no receivers are left")]
    Closed,
    /// The receiver that had the message died before taking it; it was not
    /// delivered (COPIPE).
    #[error("the receiver died before taking the message")]
    ReceiverDied,
    /// The microkernel that granted the handle is gone (killed or
    /// restarted): a COCARRIER send, which goes through it, cannot be made.
    /// Open the named object again.
    #[error("the handle to {0} did not survive its microkernel (killed or restarted): open it again")]
    HandleLost(Name),
    /// The microkernel refused the send (COCARRIER sends go through it):
    /// e.g. an attached handle asked for rights its holder lacks
    /// ([`KernelError::PermissionDenied`]).
    #[error("the microkernel refused the send: {0}")]
    Refused(KernelError),
    /// The send could not be made for another reason (the microkernel could
    /// not be reached, a message could not be sealed).
    #[error("send failed in the microkernel: {0}")]
    Control(String),
    /// A peer corrupted the channel's shared state.
    #[error("channel state corrupt: {0}")]
    Corrupt(&'static str),
    /// The async runtime could not watch the port (`*_async` forms).
    #[error("the async runtime could not watch the port: {0}")]
    Reactor(String),
}

/// A receive failed; nothing was received.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// No message is waiting (non-blocking forms only).
    #[error("channel is empty")]
    Empty,
    /// No message came before the timeout.
    #[error("timed out waiting for a message")]
    TimedOut,
    /// The handle lacks the RECV right.
    #[error("this handle has no RECV right")]
    NoRight,
    /// Every sender has gone and nothing is in flight: end of file (COPIPE).
    #[error("no senders are left")]
    Closed,
    /// The microkernel that granted the handle is gone (killed or
    /// restarted), and this message needs it (a COCARRIER message built in
    /// place is fetched through it). Open the named object again.
    #[error("the handle to {0} did not survive its microkernel (killed or restarted): open it again")]
    HandleLost(Name),
    /// A peer corrupted the channel's shared state (the message, if any, is lost).
    #[error("channel state corrupt: {0}")]
    Corrupt(&'static str),
    /// The async runtime could not watch the port (`*_async` forms).
    #[error("the async runtime could not watch the port: {0}")]
    Reactor(String),
}

impl Error {
    /// This error as seen by a handle to `name`: a kernel that is gone
    /// becomes [`Error::HandleLost`], naming the object.
    pub(crate) fn for_handle(self, name: &Name) -> Error {
        match self {
            Error::KernelGone => Error::HandleLost { name: name.clone() },
            e => e,
        }
    }
}

impl From<RingError> for SendError {
    fn from(e: RingError) -> Self {
        match e {
            RingError::Full => SendError::Full,
            RingError::TooLong { len, slot_size } => SendError::TooLong { len, slot_size },
            RingError::NoRight(_) => SendError::NoRight,
            RingError::Empty => SendError::Corrupt("empty on send"),
            RingError::Corrupt(c) => SendError::Corrupt(c),
        }
    }
}

impl From<WaitError> for SendError {
    fn from(e: WaitError) -> Self {
        match e {
            WaitError::TimedOut => SendError::TimedOut,
            WaitError::Ring(r) => r.into(),
        }
    }
}

impl From<RingError> for RecvError {
    fn from(e: RingError) -> Self {
        match e {
            RingError::Empty => RecvError::Empty,
            RingError::NoRight(_) => RecvError::NoRight,
            RingError::Full | RingError::TooLong { .. } => RecvError::Corrupt("full on receive"),
            RingError::Corrupt(c) => RecvError::Corrupt(c),
        }
    }
}

impl From<WaitError> for RecvError {
    fn from(e: WaitError) -> Self {
        match e {
            WaitError::TimedOut => RecvError::TimedOut,
            WaitError::Ring(r) => r.into(),
        }
    }
}
