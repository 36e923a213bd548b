//! The comutex: a cross-process mutex that survives a dead owner, with
//! `pthread_mutex`-like calls (a lock that finds its owner dead succeeds
//! with `-EOWNERDEAD`).

use std::ffi::c_char;

use comesg::{Comutex, ComutexGuard, ComutexOptions, LockError};

use crate::args::{self, obj_mut, wait, Wait};
use crate::comesg_conn;
use crate::error::{guard, Failure};

/// A comutex handle. It belongs to one thread at a time: give each thread
/// its own handle, and unlock and close it from the thread that locked it.
pub struct comesg_mutex {
    // Declared first: dropped (unlocked) before the comutex it borrows.
    held: Option<ComutexGuard<'static>>,
    // The thread that locked through this handle.
    owner: Option<std::thread::ThreadId>,
    // Boxed so that it never moves while `held` borrows it.
    pub(crate) m: Box<Comutex>,
}

impl comesg_mutex {
    pub(crate) fn new(m: Comutex) -> comesg_mutex {
        comesg_mutex { held: None, owner: None, m: Box::new(m) }
    }

    /// Refuses a thread other than the one that locked (the lock stays as
    /// it is).
    fn check_owner(&self) -> Result<(), Failure> {
        match self.owner {
            Some(t) if t != std::thread::current().id() => {
                Err(Failure::new(libc::EPERM, "another thread locked the comutex through this handle"))
            }
            _ => Ok(()),
        }
    }
}

/// Creates the comutex `path` (`flags`: `COMESG_EXCLUSIVE`,
/// `COMESG_PERSISTENT`); a process needs read and write permission to lock.
///
/// # Safety
/// `conn` is a live connection, `path` a NUL-terminated string, `out`
/// writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn comesg_mutex_create(
    conn: *const comesg_conn,
    path: *const c_char,
    mode: u32,
    flags: u32,
    out: *mut *mut comesg_mutex,
) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        args::open_with(conn, path, out, |c, p| {
            let (exclusive, persistent) = args::flags(flags)?;
            let opts = ComutexOptions { mode, exclusive, persistent };
            Ok(comesg_mutex::new(c.create_comutex(p, opts)?))
        })
    }
}

/// Opens the comutex `path`.
///
/// # Safety
/// As for `comesg_mutex_create`.
#[no_mangle]
pub unsafe extern "C" fn comesg_mutex_open(
    conn: *const comesg_conn,
    path: *const c_char,
    out: *mut *mut comesg_mutex,
) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { args::open_with(conn, path, out, |c, p| Ok(comesg_mutex::new(c.open_comutex(p)?))) }
}

/// Locks, waiting up to `timeout_ms`. Returns 0 when locked; `-EOWNERDEAD`
/// when locked but the previous owner died holding it (repair the state,
/// then `comesg_mutex_consistent`); `-EBUSY` (timeout 0) or `-ETIMEDOUT`
/// when not locked; `-EDEADLK` if this handle already holds it.
///
/// # Safety
/// `m` is a live comutex handle that no other thread uses during the call.
#[no_mangle]
pub unsafe extern "C" fn comesg_mutex_lock(m: *mut comesg_mutex, timeout_ms: i64) -> i32 {
    guard(
        |e| e,
        || {
            // SAFETY: the caller's contract.
            let h = unsafe { obj_mut(m, "the comutex")? };
            h.check_owner()?;
            if h.held.is_some() {
                return Err(Failure::new(libc::EDEADLK, "this handle already holds the comutex"));
            }
            // SAFETY: the guard borrows the boxed comutex, which stays at its
            // address until the handle is freed, and the handle's drop order
            // drops the guard first; the 'static lifetime never escapes.
            let mx: &'static Comutex = unsafe { &*(&*h.m as *const Comutex) };
            let r = match wait(timeout_ms) {
                Wait::Forever => mx.lock(),
                Wait::Never => mx.try_lock(),
                Wait::For(d) => mx.lock_timeout(d),
            };
            match r {
                Ok(g) => {
                    h.held = Some(g);
                    h.owner = Some(std::thread::current().id());
                    Ok(0)
                }
                Err(LockError::OwnerDied(g)) => {
                    h.held = Some(g);
                    h.owner = Some(std::thread::current().id());
                    Err(Failure::new(libc::EOWNERDEAD, "locked; the previous owner died holding the comutex"))
                }
                Err(e) => Err(e.into()),
            }
        },
    )
}

/// After `-EOWNERDEAD`: declares the protected state consistent again.
///
/// # Safety
/// `m` is a live comutex handle, locked by the calling thread.
#[no_mangle]
pub unsafe extern "C" fn comesg_mutex_consistent(m: *mut comesg_mutex) -> i32 {
    guard(
        |e| e,
        || {
            // SAFETY: the caller's contract.
            let h = unsafe { obj_mut(m, "the comutex")? };
            h.check_owner()?;
            let g = h.held.as_ref().ok_or_else(|| Failure::new(libc::EPERM, "the comutex is not locked"))?;
            g.mark_consistent()?;
            Ok(0)
        },
    )
}

/// Unlocks (`-EPERM` if this handle does not hold it).
///
/// # Safety
/// `m` is a live comutex handle, locked by the calling thread.
#[no_mangle]
pub unsafe extern "C" fn comesg_mutex_unlock(m: *mut comesg_mutex) -> i32 {
    guard(
        |e| e,
        || {
            // SAFETY: the caller's contract.
            let h = unsafe { obj_mut(m, "the comutex")? };
            h.check_owner()?;
            let g = h.held.take().ok_or_else(|| Failure::new(libc::EPERM, "the comutex is not locked"))?;
            h.owner = None;
            g.unlock()?;
            Ok(0)
        },
    )
}

/// Closes a comutex handle, unlocking it if held (NULL is ignored). Close
/// a locked handle from the thread that locked it: from another thread the
/// lock stays held until the locking thread exits.
///
/// # Safety
/// `m` is NULL or a comutex handle, not used after.
#[no_mangle]
pub unsafe extern "C" fn comesg_mutex_close(m: *mut comesg_mutex) {
    // SAFETY: forwarded contract.
    unsafe { args::free(m) }
}
