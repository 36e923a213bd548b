//! Turning C arguments into Rust values: every pointer checked for NULL,
//! every string for UTF-8, every timeout given its meaning.

use std::ffi::{c_char, c_void, CStr};
use std::time::Duration;

use crate::error::{guard, null, Failure};
use crate::{comesg_conn, COMESG_EXCLUSIVE, COMESG_PERSISTENT};

/// How long a call may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// For ever (`timeout_ms < 0`).
    Forever,
    /// Not at all (`timeout_ms == 0`).
    Never,
    /// At most this long.
    For(Duration),
}

/// The meaning of a `timeout_ms` argument.
pub fn wait(timeout_ms: i64) -> Wait {
    match timeout_ms {
        t if t < 0 => Wait::Forever,
        0 => Wait::Never,
        t => Wait::For(Duration::from_millis(t as u64)),
    }
}

/// A string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that outlives `'a`.
pub unsafe fn str_arg<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(null(what));
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|_| Failure::new(libc::EINVAL, format!("{what} is not UTF-8")))
}

/// An object argument.
///
/// # Safety
/// `p` is NULL or points to a live `T` that outlives `'a`.
pub unsafe fn obj<'a, T>(p: *const T, what: &str) -> Result<&'a T, Failure> {
    // SAFETY: the caller's contract; NULL is refused.
    unsafe { p.as_ref() }.ok_or_else(|| null(what))
}

/// A mutable object argument.
///
/// # Safety
/// `p` is NULL or points to a live `T`, used by no one else, that outlives `'a`.
pub unsafe fn obj_mut<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: the caller's contract; NULL is refused.
    unsafe { p.as_mut() }.ok_or_else(|| null(what))
}

/// A byte buffer argument (NULL is allowed when `len` is 0).
///
/// # Safety
/// `p` points to `len` readable bytes that outlive `'a`.
pub unsafe fn bytes<'a>(p: *const c_void, len: usize) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(null("the message"));
    }
    // SAFETY: non-null, `len` readable bytes by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

/// A writable byte buffer argument (NULL is allowed when `cap` is 0).
///
/// # Safety
/// `p` points to `cap` writable bytes, used by no one else, that outlive `'a`.
pub unsafe fn bytes_mut<'a>(p: *mut c_void, cap: usize) -> Result<&'a mut [u8], Failure> {
    if cap == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(null("the buffer"));
    }
    // SAFETY: non-null, `cap` writable bytes by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), cap) })
}

/// Refuses a NULL out-pointer: checked before a call has any effect.
pub fn check_out<T>(dst: *mut *mut T) -> Result<(), Failure> {
    if dst.is_null() {
        Err(null("the out-pointer"))
    } else {
        Ok(())
    }
}

/// Stores a new object through an out-pointer; returns 0.
///
/// # Safety
/// `dst` is NULL or points to writable storage for one pointer.
pub unsafe fn out<T>(dst: *mut *mut T, value: T) -> Result<i32, Failure> {
    if dst.is_null() {
        return Err(null("the out-pointer"));
    }
    // SAFETY: non-null, writable by the caller's contract. The box is freed
    // by the object's `_close` function.
    unsafe { dst.write(Box::into_raw(Box::new(value))) };
    Ok(0)
}

/// Frees an object made by [`out`] (NULL is ignored).
///
/// # Safety
/// `p` is NULL or came from [`out`] and is not used after.
pub unsafe fn free<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: made by Box::into_raw in `out`, freed once.
        let b = unsafe { Box::from_raw(p) };
        // Closing talks to the kernel; nothing it does may unwind into C.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(b)));
    }
}

/// A length as the `int64_t` the C API returns.
pub fn len(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A `flags` argument of a create: (exclusive, persistent).
pub fn flags(f: u32) -> Result<(bool, bool), Failure> {
    if f & !(COMESG_EXCLUSIVE | COMESG_PERSISTENT) != 0 {
        return Err(Failure::new(libc::EINVAL, format!("unknown flags {f:#x}")));
    }
    Ok((f & COMESG_EXCLUSIVE != 0, f & COMESG_PERSISTENT != 0))
}

/// Opens `path` through `conn` and stores the port made by `make`.
///
/// # Safety
/// As for the `_create` and `_open` functions.
pub unsafe fn open_with<T>(
    conn: *const comesg_conn,
    path: *const c_char,
    dst: *mut *mut T,
    make: impl FnOnce(&comesg::Connection, &str) -> Result<T, Failure>,
) -> i32 {
    guard(
        |e| e,
        || {
            check_out(dst)?;
            // SAFETY: the caller's contract.
            let (c, p) = unsafe { (obj(conn, "conn")?, str_arg(path, "path")?) };
            let t = make(&c.conn, p)?;
            // SAFETY: the caller's contract.
            unsafe { out(dst, t) }
        },
    )
}
