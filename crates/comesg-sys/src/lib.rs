//! Platform layer of comesg: every system call the project makes goes through
//! this crate, so that everything above it is safe Rust.
//!
//! What it provides (Linux only):
//! - [`memfd`]: anonymous shared-memory files, sized, sealed, reopened read-only;
//! - [`mapping`]: shared mappings of those files, unmapped on drop;
//! - [`futex`]: process-shared futex wait and wake;
//! - [`seqpacket`]: `SOCK_SEQPACKET` UNIX sockets carrying fds with `SCM_RIGHTS`
//!   and peer credentials;
//! - [`process`]: pidfds, CPU pinning, resource limits;
//! - [`poll`]: epoll readiness and an eventfd waker;
//! - [`bell`]: a port's shared eventfd, rung for pollers;
//! - [`barrier`]: asymmetric memory barriers (`membarrier`);
//! - [`lockfile`]: an exclusive `flock` that dies with its holder;
//! - [`remote`]: reading another process's memory (`process_vm_readv`).
#![deny(missing_docs)]

pub mod barrier;
pub mod bell;
pub mod futex;
pub mod hint;
pub mod lockfile;
pub mod mapping;
pub mod memfd;
pub mod poll;
pub mod process;
pub mod remote;
pub mod seqpacket;

pub use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
pub use rustix::io::Errno;
