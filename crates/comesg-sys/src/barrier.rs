//! Asymmetric memory barriers (`membarrier`), so that the data path's fast
//! side needs no fence instruction.
//!
//! A sender publishes a message and then checks whether a receiver sleeps;
//! a receiver registers as sleeping and then re-checks the ring. Each side
//! needs its store ordered before its load (Dekker), which normally costs a
//! full fence on every message. Instead, every process registers with
//! `MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED`, the fast side uses only a
//! compiler fence ([`light`]), and the side about to sleep, which is slow
//! anyway, calls `MEMBARRIER_CMD_GLOBAL_EXPEDITED` ([`heavy`]) to force a
//! barrier on every registered process. If registration is refused (seccomp,
//! old kernels), this process's fast side falls back to a real fence.
//!
//! # References
//! - [`membarrier(2)`](https://man7.org/linux/man-pages/man2/membarrier.2.html)

use std::sync::atomic::{compiler_fence, fence, Ordering};
use std::sync::OnceLock;

use rustix::thread::{membarrier, MembarrierCommand};

static REGISTERED: OnceLock<bool> = OnceLock::new();

/// Registers this process for expedited global barriers (once); returns
/// whether it is registered.
pub fn register() -> bool {
    *REGISTERED.get_or_init(|| membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok())
}

/// The fast side's barrier: free when [`register`] succeeded, a full fence
/// otherwise.
#[inline]
pub fn light() {
    if matches!(REGISTERED.get(), Some(true)) {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The slow side's barrier: makes every registered process execute a full
/// barrier. Returns false if the kernel refused; the caller must then not
/// rely on it (sleep with a short timeout instead).
pub fn heavy() -> bool {
    fence(Ordering::SeqCst);
    membarrier(MembarrierCommand::GlobalExpedited).is_ok()
}
