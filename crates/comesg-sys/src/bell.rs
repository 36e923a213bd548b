//! A port's bell: an `eventfd` that every holder of the port shares, rung
//! when the port's state changes while someone polls it.
//!
//! The data path never touches it unless a poller has registered in the
//! port's shared memory (see `copoll` in the client library): then the side
//! that changes the state rings the bell once, and every epoll set or async
//! runtime watching it wakes.
//!
//! Watchers register it edge-triggered and never read it: an `eventfd`
//! reports every write as a new edge to every watcher, while a read by one
//! watcher would hide a pending edge from the others (epoll re-checks the
//! level before reporting). The count only grows, by one per ring; if a peer
//! has filled it to the limit (a write would block), the ringer resets it
//! and rings again.
//!
//! # References
//! - [`eventfd(2)`](https://man7.org/linux/man-pages/man2/eventfd.2.html)
//! - [`epoll(7)`](https://man7.org/linux/man-pages/man7/epoll.7.html), "edge-triggered"

use std::io;

use rustix::event::{eventfd, EventfdFlags};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;

/// A shared `eventfd` rung on state changes.
#[derive(Debug)]
pub struct Bell {
    fd: OwnedFd,
}

impl Bell {
    /// A new bell (non-blocking, close-on-exec).
    pub fn new() -> io::Result<Bell> {
        Ok(Bell { fd: eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)? })
    }

    /// Wraps a bell received from the microkernel. A peer could hand over
    /// any fd; ringing something that is not an eventfd only fails quietly.
    pub fn from_fd(fd: OwnedFd) -> Bell {
        Bell { fd }
    }

    /// Rings: every watcher wakes.
    pub fn ring(&self) {
        if let Err(Errno::AGAIN) = rustix::io::write(&self.fd, &1u64.to_ne_bytes()) {
            // Full (only a peer writing a huge count gets it there): reset,
            // then ring.
            let mut b = [0u8; 8];
            let _ = rustix::io::read(&self.fd, &mut b);
            let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
        }
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
    fn a_full_count_is_reset_and_still_rings() {
        let bell = Bell::new().unwrap();
        rustix::io::write(bell.as_fd(), &(u64::MAX - 1).to_ne_bytes()).unwrap();
        bell.ring();
        let mut b = [0u8; 8];
        rustix::io::read(bell.as_fd(), &mut b).unwrap();
        assert_eq!(u64::from_ne_bytes(b), 1);
    }
}
