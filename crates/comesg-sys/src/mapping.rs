//! Shared mappings of memfd segments.
//!
//! A [`Mapping`] is `MAP_SHARED` and either read-write or read-only; a
//! read-only mapping of a read-only fd can never be made writable
//! (`mprotect` is refused because the file description lacks write access).
//!
//! # References
//! - [`mmap(2)`](https://man7.org/linux/man-pages/man2/mmap.2.html)
#![allow(unsafe_code)]

use std::io;
use std::ptr::NonNull;

use rustix::fd::AsFd;
use rustix::mm::{self, MapFlags, ProtFlags};

/// How a segment is mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `PROT_READ`: any write through the mapping faults (`SIGSEGV`).
    ReadOnly,
    /// `PROT_READ | PROT_WRITE`.
    ReadWrite,
}

/// A shared mapping of a whole file, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    access: Access,
}

// SAFETY: a Mapping is a plain region of shared memory; everything that reads
// or writes through it does so with atomics or raw copies that tolerate
// concurrent access, so moving or sharing the handle between threads is sound.
unsafe impl Send for Mapping {}
// SAFETY: as above; &Mapping only hands out raw pointers.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `fd` shared, with the given access.
    ///
    /// Fails with `EINVAL` if the file is shorter than `len` (which would
    /// otherwise lead to `SIGBUS` on access) or `len` is zero.
    pub fn map(fd: impl AsFd, len: usize, access: Access) -> io::Result<Mapping> {
        let fd = fd.as_fd();
        if len == 0 || (super::memfd::size(fd)? as usize) < len {
            return Err(io::Error::from_raw_os_error(rustix::io::Errno::INVAL.raw_os_error()));
        }
        let prot = match access {
            Access::ReadOnly => ProtFlags::READ,
            Access::ReadWrite => ProtFlags::READ | ProtFlags::WRITE,
        };
        // SAFETY: a fresh mapping at an address the kernel chooses cannot
        // overlap any Rust object; the file is at least `len` bytes long and
        // sealed against shrinking by its creator, so no access faults.
        let ptr = unsafe { mm::mmap(std::ptr::null_mut(), len, prot, MapFlags::SHARED, fd, 0)? };
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping { ptr, len, access })
    }

    /// Start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: mappings are never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// How the mapping was made.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The mapping as 64-bit atomic words (tests, inspection, and the hostile
    /// peer tests that scribble over segments). Storing through a read-only
    /// mapping raises `SIGSEGV`, which is the point of read-only mappings.
    pub fn words(&self) -> &[std::sync::atomic::AtomicU64] {
        // SAFETY: mappings are page-aligned; `len / 8` whole words lie inside
        // the mapping, which lives as long as `&self`; AtomicU64 accepts any
        // bit pattern and tolerates concurrent access by other processes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast(), self.len / 8) }
    }

    /// The mapping as 32-bit atomic words (futex words live in these).
    pub fn words32(&self) -> &[std::sync::atomic::AtomicU32] {
        // SAFETY: as for `words`, with 4-byte words.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast(), self.len / 4) }
    }

    /// Tries to make a read-only mapping writable with `mprotect`. Exists to
    /// show (in tests) that the operating system refuses it.
    pub fn try_make_writable(&self) -> io::Result<()> {
        // SAFETY: the range is exactly this mapping; changing its protection
        // cannot invalidate Rust references because none point into it
        // (all access goes through raw pointers and atomics).
        unsafe {
            mm::mprotect(self.ptr.as_ptr().cast(), self.len, mm::MprotectFlags::READ | mm::MprotectFlags::WRITE)?
        };
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range is the one mmap returned and nothing borrows it
        // beyond the Mapping's lifetime (views hold &Mapping).
        unsafe {
            let _ = mm::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memfd;

    #[test]
    fn read_only_mapping_cannot_be_made_writable() {
        let fd = memfd::create_segment("comesg-map-test", 4096).unwrap();
        let ro = memfd::reopen_read_only(&fd).unwrap();
        let m = Mapping::map(&ro, 4096, Access::ReadOnly).unwrap();
        assert!(m.try_make_writable().is_err());
        assert!(Mapping::map(&ro, 4096, Access::ReadWrite).is_err());
        assert!(Mapping::map(&fd, 8192, Access::ReadWrite).is_err(), "longer than file");
    }
}
