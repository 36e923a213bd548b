//! A port's bell: an `eventfd` that every holder of the port shares, rung
//! when the port's state changes while someone polls it.
//!
//! The data path never touches it unless a poller has registered in the
//! port's shared memory (see `copoll` in the client library): then the side
//! that changes the state rings the bell once, and every epoll set or async
//! runtime watching it wakes.
//!
//! The count starts at one and stays there: a ring writes **zero**. That
//! still wakes every watcher (an `eventfd` write wakes its wait queue
//! whatever the value, and epoll then finds it readable), and it can never
//! block, whatever a hostile holder does to the shared open file
//! description (clearing `O_NONBLOCK` and filling the count makes a write
//! of one block forever; a write of zero never waits). Watchers register it
//! edge-triggered and never read it: a read by one watcher would hide a
//! pending edge from the others (epoll re-checks the level before it
//! reports). A holder that reads the count down to zero silences the bell
//! for that port's pollers (they then see changes at their timeouts only),
//! which is no worse than what a hostile holder can do to the port itself.
//!
//! # References
//! - [`eventfd(2)`](https://man7.org/linux/man-pages/man2/eventfd.2.html)
//! - [`epoll(7)`](https://man7.org/linux/man-pages/man7/epoll.7.html), "edge-triggered"

use std::io;

use rustix::event::{eventfd, EventfdFlags};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};

/// A shared `eventfd` rung on state changes.
#[derive(Debug)]
pub struct Bell {
    fd: OwnedFd,
}

impl Bell {
    /// A new bell (count one, non-blocking, close-on-exec).
    pub fn new() -> io::Result<Bell> {
        Ok(Bell { fd: eventfd(1, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)? })
    }

    /// Wraps a bell received from the microkernel. A peer could hand over
    /// any fd; ringing something that is not an eventfd only fails quietly.
    pub fn from_fd(fd: OwnedFd) -> Bell {
        Bell { fd }
    }

    /// Rings: every watcher wakes. Never blocks.
    pub fn ring(&self) {
        let _ = rustix::io::write(&self.fd, &0u64.to_ne_bytes());
    }

    /// Another handle on the same bell.
    pub fn try_clone(&self) -> io::Result<Bell> {
        Ok(Bell { fd: self.fd.try_clone()? })
    }

    /// A duplicate of the fd (to hand to a client or register in a poll set).
    pub fn dup_fd(&self) -> io::Result<OwnedFd> {
        self.fd.try_clone()
    }
}

impl AsFd for Bell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ring_is_an_edge_for_every_watcher() {
        use crate::poll::Poller;
        let bell = Bell::new().unwrap();
        let (a, b) = (Poller::new().unwrap(), Poller::new().unwrap());
        let (fa, fb) = (bell.dup_fd().unwrap(), bell.dup_fd().unwrap());
        a.add_edge(fa.as_fd(), 1).unwrap();
        b.add_edge(fb.as_fd(), 2).unwrap();
        let mut out = Vec::new();
        for _ in 0..3 {
            bell.ring();
            out.clear();
            a.wait(&mut out, Some(std::time::Duration::ZERO)).unwrap();
            assert_eq!(out.len(), 1);
            out.clear();
            b.wait(&mut out, Some(std::time::Duration::ZERO)).unwrap();
            assert_eq!(out.len(), 1);
            // No new ring, no new edge.
            out.clear();
            a.wait(&mut out, Some(std::time::Duration::ZERO)).unwrap();
            assert!(out.is_empty());
        }
    }

    #[test]
    fn a_hostile_holder_cannot_make_a_ring_block() {
        use crate::poll::Poller;
        let bell = Bell::new().unwrap();
        let p = Poller::new().unwrap();
        let fd = bell.dup_fd().unwrap();
        p.add_edge(fd.as_fd(), 1).unwrap();
        let mut out = Vec::new();
        p.wait(&mut out, Some(std::time::Duration::ZERO)).unwrap();
        // Blocking mode on the shared description, and a full count: a
        // write of one would now wait forever.
        rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::empty()).unwrap();
        rustix::io::write(&fd, &(u64::MAX - 2).to_ne_bytes()).unwrap();
        out.clear();
        p.wait(&mut out, Some(std::time::Duration::ZERO)).unwrap();
        bell.ring(); // returns at once
        out.clear();
        p.wait(&mut out, Some(std::time::Duration::ZERO)).unwrap();
        assert_eq!(out.len(), 1, "the ring was an edge");
    }
}
