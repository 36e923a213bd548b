//! An exclusive advisory lock on a file (`flock`), released when the holder
//! exits however it exits. The microkernel holds one beside its socket so
//! that two kernels racing to start on one path end up as one.
//!
//! # References
//! - [`flock(2)`](https://man7.org/linux/man-pages/man2/flock.2.html)

use std::io;
use std::path::Path;

use rustix::fd::OwnedFd;
use rustix::fs::{self, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

/// A held lock.
#[derive(Debug)]
pub struct LockFile {
    _fd: OwnedFd,
}

impl LockFile {
    /// Takes the lock at `path` (creating the file, mode 0600), or returns
    /// `Ok(None)` if another process holds it.
    pub fn try_lock(path: &Path) -> io::Result<Option<LockFile>> {
        let fd = fs::open(path, OFlags::CREATE | OFlags::RDWR | OFlags::CLOEXEC, Mode::from_raw_mode(0o600))?;
        match fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(LockFile { _fd: fd })),
            Err(Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}
