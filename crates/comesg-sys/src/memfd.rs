//! Anonymous shared-memory files (`memfd_create`) and the seals and modes that
//! make their access rights hold.
//!
//! A segment is created by the microkernel, sized, then sealed against
//! growing and shrinking (so no holder can truncate it under another's
//! mapping and cause `SIGBUS`), and its mode is set to owner-read-only so that
//! a read-only fd cannot be reopened writable through `/proc/self/fd` by a
//! process of another user (without `CAP_DAC_OVERRIDE`). A process of the
//! microkernel's own user owns the file and could `fchmod` it first: between
//! processes of one user, rights guard against mistakes, not attacks
//! (DESIGN §7); a `--shared` kernel run as its own user separates users. The kernel keeps the one writable open file
//! description and hands out duplicates of it (writers) or read-only reopens
//! (readers).
//!
//! # References
//! - [`memfd_create(2)`](https://man7.org/linux/man-pages/man2/memfd_create.2.html)
//! - [`fcntl(2)` file seals](https://man7.org/linux/man-pages/man2/fcntl.2.html)

use std::io;

use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{self, MemfdFlags, Mode, OFlags, SealFlags};

/// Creates a memfd of `size` bytes, sealed against resizing, with mode 0400.
///
/// The returned fd is the only writable open file description there will
/// ever be (the mode forbids opening another writable one).
pub fn create_segment(name: &str, size: u64) -> io::Result<OwnedFd> {
    let fd = fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    fs::ftruncate(&fd, size)?;
    fs::fcntl_add_seals(&fd, SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL)?;
    fs::fchmod(&fd, Mode::RUSR)?;
    Ok(fd)
}

/// Creates a memfd for an arena that only its creator may ever write: sized,
/// sealed against resizing, mode 0400, and not yet sealed against further
/// seals, so that [`seal_writes`] can be applied once the creator's
/// writable mapping exists.
pub fn create_arena(name: &str, size: u64) -> io::Result<OwnedFd> {
    let fd = fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    fs::ftruncate(&fd, size)?;
    fs::fcntl_add_seals(&fd, SealFlags::GROW | SealFlags::SHRINK)?;
    fs::fchmod(&fd, Mode::RUSR)?;
    Ok(fd)
}

/// Seals `fd` with `F_SEAL_FUTURE_WRITE` (and against further seals): no new
/// writable mapping and no `write(2)` through any file description, even
/// one reopened read-write through `/proc`; writable mappings made before
/// keep working.
pub fn seal_writes(fd: impl AsFd) -> io::Result<()> {
    fs::fcntl_add_seals(fd, SealFlags::FUTURE_WRITE | SealFlags::SEAL)?;
    Ok(())
}

/// Creates a memfd a sender builds one message in: sized, sealable, not yet
/// sealed.
pub fn create_sealable(name: &str, size: u64) -> io::Result<OwnedFd> {
    let fd = fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    fs::ftruncate(&fd, size)?;
    Ok(fd)
}

/// Seals `fd` for good against writing and resizing (`F_SEAL_WRITE`,
/// `GROW`, `SHRINK`, `SEAL`). Fails while any writable shared mapping of it
/// exists: once it succeeds, nobody can change the contents, whatever fds
/// or mappings they keep.
pub fn seal_immutable(fd: impl AsFd) -> io::Result<()> {
    fs::fcntl_add_seals(fd, SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL)?;
    Ok(())
}

/// Whether `fd` is a memfd sealed against writing and resizing.
pub fn is_immutable(fd: impl AsFd) -> bool {
    fs::fcntl_get_seals(fd).is_ok_and(|s| s.contains(SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK))
}

/// Opens a new, read-only file description of the same memfd, through
/// `/proc/self/fd`. A mapping made from it can never become writable.
pub fn reopen_read_only(fd: impl AsFd) -> io::Result<OwnedFd> {
    use rustix::fd::AsRawFd;
    let path = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    Ok(fs::open(path.as_str(), OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?)
}

/// Opens a new read-write file description of the file behind `fd`
/// through `/proc/self/fd`: what an attacker holding a read-only fd tries.
/// [`create_segment`]'s mode 0400 makes it fail for a process of another
/// user without `CAP_DAC_OVERRIDE`.
pub fn reopen_read_write(fd: impl AsFd) -> io::Result<OwnedFd> {
    use rustix::fd::AsRawFd;
    let path = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    Ok(fs::open(path.as_str(), OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?)
}

/// Makes the file behind `fd` owner-writable again (`fchmod` works through
/// a read-only fd, for the file's owner): the attacker's step before
/// [`reopen_read_write`]. Fails for any user but the owner (and root).
pub fn chmod_writable(fd: impl AsFd) -> io::Result<()> {
    Ok(fs::fchmod(fd, Mode::RUSR | Mode::WUSR)?)
}

/// Size in bytes of the file behind `fd`.
pub fn size(fd: impl AsFd) -> io::Result<u64> {
    Ok(fs::fstat(fd)?.st_size as u64)
}

/// Whether `fd` was opened with write access.
pub fn is_writable(fd: impl AsFd) -> io::Result<bool> {
    let flags = fs::fcntl_getfl(fd)?;
    Ok(flags.contains(OFlags::RDWR) || flags.contains(OFlags::WRONLY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_arena_refuses_every_new_way_to_write() {
        use crate::mapping::{Access, Mapping};
        let fd = create_arena("comesg-test-arena", 8192).unwrap();
        let rw = Mapping::map(&fd, 8192, Access::ReadWrite).unwrap();
        seal_writes(&fd).unwrap();
        rw.words()[0].store(7, std::sync::atomic::Ordering::Relaxed);
        assert!(Mapping::map(&fd, 8192, Access::ReadWrite).is_err(), "new writable mapping");
        assert!(rustix::io::write(&fd, b"x").is_err(), "write(2)");
        let ro = reopen_read_only(&fd).unwrap();
        assert_eq!(
            Mapping::map(&ro, 8192, Access::ReadOnly).unwrap().words()[0].load(std::sync::atomic::Ordering::Relaxed),
            7
        );
    }

    #[test]
    fn segment_is_sized_sealed_and_reopens_read_only() {
        let fd = create_segment("comesg-test", 8192).unwrap();
        assert_eq!(size(&fd).unwrap(), 8192);
        assert!(fs::ftruncate(&fd, 4096).is_err(), "shrink must be sealed");
        let ro = reopen_read_only(&fd).unwrap();
        assert!(!is_writable(&ro).unwrap());
        assert!(is_writable(&fd).unwrap());
    }
}
