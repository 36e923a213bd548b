//! Process-level system calls: pidfds, CPU pinning, resource limits.
//!
//! # References
//! - [`pidfd_open(2)`](https://man7.org/linux/man-pages/man2/pidfd_open.2.html)
//! - [`sched_setaffinity(2)`](https://man7.org/linux/man-pages/man2/sched_setaffinity.2.html)
#![allow(unsafe_code)]

use std::io;

use rustix::fd::OwnedFd;
use rustix::process::{self, Pid, PidfdFlags, Resource};

/// Opens a pidfd for `pid`: it becomes readable when the process exits.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = Pid::from_raw(pid as i32).ok_or_else(|| io::Error::other("pid 0"))?;
    Ok(process::pidfd_open(pid, PidfdFlags::NONBLOCK)?)
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    Ok(rustix::thread::sched_setaffinity(None, &set)?)
}

/// Number of CPUs the calling thread may run on.
pub fn allowed_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect(),
        Err(_) => vec![0],
    }
}

/// Raises the soft limit on open files to the hard limit, returning the new
/// soft limit. The microkernel holds a socket and a pidfd per client.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut lim = process::getrlimit(Resource::Nofile);
    lim.current = lim.maximum;
    process::setrlimit(Resource::Nofile, lim)?;
    Ok(lim.current.unwrap_or(u64::MAX))
}

/// The calling process's pid.
pub fn pid() -> u32 {
    process::getpid().as_raw_nonzero().get() as u32
}

/// The calling process's real uid.
pub fn uid() -> u32 {
    process::getuid().as_raw()
}

/// Whether a process with this pid exists (`kill(pid, 0)`).
pub fn is_alive(pid: u32) -> bool {
    match Pid::from_raw(pid as i32) {
        Some(p) => process::test_kill_process(p).is_ok(),
        None => false,
    }
}

/// Lets `fd` survive `exec` (clears `FD_CLOEXEC`) or not. Benchmarks use it
/// to hand pipes and segments to the peer processes they start.
pub fn set_inheritable(fd: rustix::fd::BorrowedFd<'_>, inherit: bool) -> io::Result<()> {
    let flags = if inherit { rustix::io::FdFlags::empty() } else { rustix::io::FdFlags::CLOEXEC };
    Ok(rustix::io::fcntl_setfd(fd, flags)?)
}

/// Takes ownership of an fd inherited from the parent process by number.
/// Fails unless `fd` is open in this process.
pub fn inherited_fd(fd: i32) -> io::Result<OwnedFd> {
    use rustix::fd::BorrowedFd;
    // Validate before taking ownership: F_GETFD fails on a closed fd.
    let probe = |fd: i32| -> io::Result<()> {
        // SAFETY: the fd number is only used for F_GETFD, which is harmless
        // on any number; it is not retained.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        rustix::io::fcntl_getfd(b)?;
        Ok(())
    };
    if fd < 0 {
        return Err(io::Error::other("negative fd"));
    }
    probe(fd)?;
    // SAFETY: the fd is open (checked above) and was handed to this process
    // for it to own; the caller passes each number once.
    Ok(unsafe { <OwnedFd as rustix::fd::FromRawFd>::from_raw_fd(fd) })
}

/// Makes this process not dumpable: no core dumps, and no process of the
/// same user can ptrace it or read and write its memory (`process_vm_*`,
/// `/proc/PID/mem`). The microkernel does this so that nobody can write the
/// one writable mapping of a carrier's arena behind its back.
pub fn set_not_dumpable() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes integers and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `child` in a forked copy of this process and returns its exit
/// code (or 128 + the signal that ended it). For tests of what a forked
/// child inherits; call it only from a single-threaded process, since the
/// child runs arbitrary code (allocation, sockets) after `fork`.
pub fn in_forked_child(child: impl FnOnce() -> i32) -> io::Result<i32> {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // SAFETY: the caller promises a single-threaded process, so no lock is
    // held by another thread across the fork; the child leaves with
    // `_exit`, never returning into the parent's stack.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
        let _ = std::io::stdout().flush();
        // SAFETY: ends the child at once, skipping the parent's atexit work.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just made; `status` is a valid out-pointer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) })
}
