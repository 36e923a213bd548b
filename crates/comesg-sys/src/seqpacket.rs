//! `SOCK_SEQPACKET` UNIX sockets: the microkernel's control channel.
//!
//! Each `send` is one record that arrives whole or not at all, so the control
//! protocol needs no framing of its own. File descriptors travel beside the
//! bytes as `SCM_RIGHTS`; the receiver gets them close-on-exec.
//!
//! # References
//! - [`unix(7)`](https://man7.org/linux/man-pages/man7/unix.7.html)
//! - [`sendmsg(2)`](https://man7.org/linux/man-pages/man2/sendmsg.2.html),
//!   [`recvmsg(2)`](https://man7.org/linux/man-pages/man2/recvmsg.2.html)

use std::io;
use std::mem::MaybeUninit;
use std::path::Path;

use rustix::fd::{BorrowedFd, OwnedFd};
use rustix::io::{Errno, IoSlice, IoSliceMut};
use rustix::net::{
    self, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

/// Most file descriptors one record may carry.
pub const MAX_FDS: usize = 253; // SCM_MAX_FD

/// Who is at the other end of a connection, from `SO_PEERCRED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id at `connect` time.
    pub pid: u32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

fn socket(nonblocking: bool) -> io::Result<OwnedFd> {
    let mut flags = SocketFlags::CLOEXEC;
    if nonblocking {
        flags |= SocketFlags::NONBLOCK;
    }
    Ok(net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, flags, None)?)
}

/// Creates a non-blocking listening socket bound at `path`.
pub fn listen(path: &Path, backlog: i32) -> io::Result<OwnedFd> {
    let fd = socket(true)?;
    let addr = SocketAddrUnix::new(path)?;
    net::bind(&fd, &addr)?;
    net::listen(&fd, backlog)?;
    Ok(fd)
}

/// Accepts one pending connection, non-blocking and close-on-exec.
/// `Ok(None)` when none is pending.
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<Option<OwnedFd>> {
    match net::accept_with(listener, SocketFlags::CLOEXEC | SocketFlags::NONBLOCK) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::AGAIN) | Err(Errno::INTR) | Err(Errno::CONNABORTED) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Connects a blocking socket to `path`.
pub fn connect(path: &Path) -> io::Result<OwnedFd> {
    let fd = socket(false)?;
    let addr = SocketAddrUnix::new(path)?;
    net::connect(&fd, &addr)?;
    Ok(fd)
}

/// A connected pair, for benchmarks and tests.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?)
}

/// The peer's credentials (`SO_PEERCRED`).
pub fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<PeerCred> {
    let c = net::sockopt::socket_peercred(fd)?;
    Ok(PeerCred { pid: c.pid.as_raw_nonzero().get() as u32, uid: c.uid.as_raw(), gid: c.gid.as_raw() })
}

/// Sends one record carrying `bytes` and `fds`. Never raises `SIGPIPE`.
/// On a non-blocking socket a full buffer is `WouldBlock`.
pub fn send(fd: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if fds.len() > MAX_FDS {
        return Err(io::Error::other("too many fds for one record"));
    }
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("fds do not fit the control buffer"));
    }
    let n = loop {
        match net::sendmsg(fd, &[IoSlice::new(bytes)], &mut control, SendFlags::NOSIGNAL) {
            Err(Errno::INTR) => continue,
            r => break r?,
        }
    };
    if n != bytes.len() {
        return Err(io::Error::other("short send on a SOCK_SEQPACKET socket"));
    }
    Ok(())
}

/// One record as received.
#[derive(Debug)]
pub struct Record {
    /// Bytes of the record that fit the buffer.
    pub len: usize,
    /// The record was longer than the buffer; the rest is discarded.
    pub truncated: bool,
    /// File descriptors that came with it (close-on-exec). Any beyond
    /// [`MAX_FDS`] were closed by the Linux kernel, and `fds_truncated` says so.
    pub fds: Vec<OwnedFd>,
    /// Some descriptors did not fit and were closed.
    pub fds_truncated: bool,
}

/// Receives one record into `buf`. `Ok(None)` means the peer closed the
/// connection; on a non-blocking socket an empty queue is `WouldBlock`.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Option<Record>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = loop {
        match net::recvmsg(fd, &mut [IoSliceMut::new(buf)], &mut control, RecvFlags::CMSG_CLOEXEC) {
            Err(Errno::INTR) => continue,
            r => break r?,
        }
    };
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = m {
            fds.extend(it);
        }
    }
    if msg.bytes == 0 && fds.is_empty() && !msg.flags.contains(ReturnFlags::TRUNC) {
        return Ok(None);
    }
    Ok(Some(Record {
        len: msg.bytes.min(buf.len()),
        truncated: msg.flags.contains(ReturnFlags::TRUNC),
        fds,
        fds_truncated: msg.flags.contains(ReturnFlags::CTRUNC),
    }))
}

/// Waits until `fd` has a record to read (or has hung up), at most
/// `timeout` (`None`: no limit). Returns whether it has.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<std::time::Duration>) -> io::Result<bool> {
    use rustix::event::{poll, PollFd, PollFlags};
    let ts = timeout.map(|d| rustix::time::Timespec {
        tv_sec: d.as_secs().min(i32::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    loop {
        match poll(&mut fds, ts.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sets or clears `O_NONBLOCK`.
pub fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    Ok(rustix::io::ioctl_fionbio(fd, on)?)
}

/// Sets `SO_RCVTIMEO`/`SO_SNDTIMEO` so a blocking call cannot hang forever.
pub fn set_timeouts(fd: BorrowedFd<'_>, timeout: Option<std::time::Duration>) -> io::Result<()> {
    net::sockopt::set_socket_timeout(fd, net::sockopt::Timeout::Recv, timeout)?;
    net::sockopt::set_socket_timeout(fd, net::sockopt::Timeout::Send, timeout)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;

    #[test]
    fn records_carry_bytes_and_fds() {
        let (a, b) = pair().unwrap();
        let (r, _w) = rustix::pipe::pipe().unwrap();
        send(a.as_fd(), b"hello", &[r.as_fd()]).unwrap();
        let mut buf = [0u8; 3];
        let rec = recv(b.as_fd(), &mut buf).unwrap().unwrap();
        assert!(rec.truncated);
        assert_eq!(&buf, b"hel");
        assert_eq!(rec.fds.len(), 1);
        let cred = peer_cred(a.as_fd()).unwrap();
        assert_eq!(cred.pid, crate::process::pid());
        drop(b);
        assert!(send(a.as_fd(), b"x", &[]).is_err());
    }
}
