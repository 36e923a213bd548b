//! Watching an object: a stream of what happens to it (its holders' deaths,
//! its last sender or receiver gone, its name unlinked, its destruction, a
//! service's provider gone), delivered by the microkernel on a connection
//! of the watcher's own.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use comesg_proto::{decode_reply, Reply, Request, MAX_FRAME};
use comesg_sys::{seqpacket, AsFd, OwnedFd};

pub use comesg_proto::{EventKind, WatchEvent};

use crate::{Connection, Error};

/// A subscription to the events of one object ([`Connection::watch`]).
/// Events come in the order they happened; `Destroyed` is the last (after
/// it, [`Error::WatchEnded`]); dropping the watcher ends it.
///
/// ```no_run
/// let conn = comesg::Connection::connect_default()?;
/// let w = conn.watch("/app/jobs")?;
/// loop {
///     let e = w.next()?;
///     println!("{}: {:?}", e.name, e.what);
/// }
/// # Ok::<(), comesg::Error>(())
/// ```
#[derive(Debug)]
pub struct Watcher {
    fd: OwnedFd,
    /// Events that came in a frame with others, not yet handed out; and
    /// whether `Destroyed` was handed out (nothing follows it).
    state: Mutex<(VecDeque<WatchEvent>, bool)>,
}

impl Connection {
    /// Subscribes to the events of the object at `path` (which the caller
    /// may read). The watcher has a connection of its own: events come on
    /// it unasked.
    pub fn watch(&self, path: &str) -> Result<Watcher, Error> {
        let name = comesg_proto::Name::try_from(path)
            .map_err(|e| Error::Kernel(comesg_proto::KernelError::InvalidArgument(e.to_string())))?;
        let own = Connection::connect(self.socket_path())?;
        match own.request(Request::Watch { name })? {
            (Reply::Done, _) => {}
            (Reply::Error(e), _) => return Err(Error::Kernel(e)),
            (other, _) => return Err(Error::Protocol(format!("expected Done, got {other:?}"))),
        }
        let fd = own.into_socket()?;
        // Several threads may wait on one watcher: whoever finds the
        // record gone returns to waiting rather than blocking in recv.
        seqpacket::set_nonblocking(fd.as_fd(), true)?;
        Ok(Watcher { fd, state: Mutex::new((VecDeque::new(), false)) })
    }
}

impl Watcher {
    /// The next event, waiting for it.
    pub fn next(&self) -> Result<WatchEvent, Error> {
        loop {
            if let Some(e) = self.next_timeout(Duration::from_secs(3600))? {
                return Ok(e);
            }
        }
    }

    /// The next event if one has come, without waiting.
    pub fn try_next(&self) -> Result<Option<WatchEvent>, Error> {
        self.next_timeout(Duration::ZERO)
    }

    /// The next event, waiting at most `timeout` (`None` then).
    pub fn next_timeout(&self, timeout: Duration) -> Result<Option<WatchEvent>, Error> {
        if let Some(e) = self.pop()? {
            return Ok(Some(e));
        }
        if !seqpacket::wait_readable(self.fd.as_fd(), Some(timeout))? {
            return Ok(None);
        }
        let mut buf = vec![0u8; MAX_FRAME];
        let rec = match seqpacket::recv(self.fd.as_fd(), &mut buf) {
            Ok(Some(rec)) => rec,
            // The microkernel has gone (or dropped a watcher that did not
            // read its events).
            Ok(None) => return Err(Error::KernelGone),
            // Another thread took the record.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return self.pop(),
            Err(e) => return Err(e.into()),
        };
        match decode_reply(&buf[..rec.len]).map_err(|e| Error::Protocol(e.to_string()))?.reply {
            Reply::Events(evs) => {
                self.state.lock().unwrap_or_else(|p| p.into_inner()).0.extend(evs);
                self.pop()
            }
            other => Err(Error::Protocol(format!("expected events, got {other:?}"))),
        }
    }

    /// The oldest event already received, if any.
    fn pop(&self) -> Result<Option<WatchEvent>, Error> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.1 {
            return Err(Error::WatchEnded);
        }
        let e = st.0.pop_front();
        st.1 = e.as_ref().is_some_and(|e| e.what == EventKind::Destroyed);
        Ok(e)
    }

    /// The next event, waiting on the tokio runtime (feature `tokio`):
    /// call it in a loop for a stream of events. Cancellation-safe: an
    /// event is read only once it is there, and returned in the same poll.
    #[cfg(feature = "tokio")]
    pub async fn next_async(&self) -> Result<WatchEvent, Error> {
        crate::async_wait::readable(self.fd.as_fd(), || self.try_next().transpose()).await
    }
}
