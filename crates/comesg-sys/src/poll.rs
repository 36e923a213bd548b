//! Readiness polling (`epoll`) and a cross-thread waker (`eventfd`).
//!
//! # References
//! - [`epoll(7)`](https://man7.org/linux/man-pages/man7/epoll.7.html)
//! - [`eventfd(2)`](https://man7.org/linux/man-pages/man2/eventfd.2.html)

use std::io;
use std::time::Duration;

use rustix::event::{epoll, eventfd, EventfdFlags};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;

/// What became ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// The token the fd was registered with.
    pub token: u64,
    /// Readable (or, for a pidfd, the process exited).
    pub readable: bool,
    /// The peer hung up or the fd is in error.
    pub hangup: bool,
}

/// An epoll instance, level-triggered.
pub struct Poller {
    ep: OwnedFd,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller").field("ep", &self.ep).finish()
    }
}

impl Poller {
    /// Creates a poller.
    pub fn new() -> io::Result<Poller> {
        Ok(Poller { ep: epoll::create(epoll::CreateFlags::CLOEXEC)? })
    }

    /// Watches `fd` for reading under `token`.
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        Ok(epoll::add(&self.ep, fd, epoll::EventData::new_u64(token), epoll::EventFlags::IN)?)
    }

    /// Watches `fd` for reading under `token`, edge-triggered: each new
    /// event on it is reported once (a [`crate::bell::Bell`] ring, say).
    pub fn add_edge(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let flags = epoll::EventFlags::IN | epoll::EventFlags::ET;
        Ok(epoll::add(&self.ep, fd, epoll::EventData::new_u64(token), flags)?)
    }

    /// Stops watching `fd`.
    pub fn remove(&self, fd: BorrowedFd<'_>) {
        let _ = epoll::delete(&self.ep, fd);
    }

    /// Waits up to `timeout` (forever if `None`) and appends what is ready to `out`.
    pub fn wait(&self, out: &mut Vec<Ready>, timeout: Option<Duration>) -> io::Result<()> {
        let ts = timeout.map(|d| rustix::time::Timespec {
            tv_sec: d.as_secs().min(i32::MAX as u64) as i64,
            tv_nsec: d.subsec_nanos() as _,
        });
        // A fresh buffer per wait keeps the poller Send (events carry raw
        // pointers); one small allocation per wake-up is noise beside the syscall.
        let mut buf: Vec<epoll::Event> = Vec::with_capacity(256);
        match epoll::wait(&self.ep, rustix::buffer::spare_capacity(&mut buf), ts.as_ref()) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        for e in &buf {
            let flags = e.flags;
            out.push(Ready {
                token: e.data.u64(),
                readable: flags.contains(epoll::EventFlags::IN),
                hangup: flags.intersects(epoll::EventFlags::HUP | epoll::EventFlags::ERR | epoll::EventFlags::RDHUP),
            });
        }
        Ok(())
    }
}

/// Wakes a thread blocked in [`Poller::wait`] from another thread.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    /// Creates a waker.
    pub fn new() -> io::Result<Waker> {
        Ok(Waker { fd: eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)? })
    }

    /// Makes the waker readable.
    pub fn wake(&self) {
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }

    /// Another handle on the same waker.
    pub fn try_clone(&self) -> io::Result<Waker> {
        Ok(Waker { fd: self.fd.try_clone()? })
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
