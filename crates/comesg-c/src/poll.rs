//! Copoll for C: one thread waits on many ports of any kind at once.

use std::ffi::c_void;
use std::time::Duration;

use comesg::{Copoll, Event, Interest};

use crate::args::{self, obj_mut, wait, Wait};
use crate::error::{guard, null, Failure};
use crate::handles::port_of;

/// Interest and event flag: a receive (or lock) would not wait.
pub const COMESG_READABLE: u32 = 1;
/// Interest and event flag: a send (or lock) would not wait.
pub const COMESG_WRITABLE: u32 = 2;
/// Event flag: the other side is gone (no more senders for a receiver, no
/// more receivers for a sender).
pub const COMESG_CLOSED: u32 = 4;
/// Event flag: the port cannot be polled for what was asked (a missing
/// right) or its shared state is corrupt; the operation itself says why.
pub const COMESG_ERROR: u32 = 8;

/// One ready port, as `comesg_poll_wait` reports it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct comesg_event {
    /// The token the port was added with.
    pub token: u64,
    /// `COMESG_READABLE`, `COMESG_WRITABLE`, `COMESG_CLOSED`, `COMESG_ERROR`.
    pub flags: u32,
}

/// A set of ports to wait on.
pub struct comesg_poll {
    set: Copoll<'static>,
    /// Events of the last wait that did not fit the caller's array: handed
    /// out first by the next wait, so that a small array starves no port.
    left: Vec<comesg_event>,
    events: Vec<Event>,
}

/// Makes an empty set.
///
/// # Safety
/// `out` is writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn comesg_poll_new(out: *mut *mut comesg_poll) -> i32 {
    guard(
        |e| e,
        || {
            args::check_out(out)?;
            let set = Copoll::new().map_err(|e| Failure::new(e.raw_os_error().unwrap_or(libc::EIO), e.to_string()))?;
            // SAFETY: checked above.
            unsafe { args::out(out, comesg_poll { set, left: Vec::new(), events: Vec::new() }) }
        },
    )
}

/// Adds the port `port` of kind `kind` (a `COMESG_KIND_` constant:
/// channel, pipe, carrier or comutex), reported under `token` (unique in
/// the set) when it is ready for `interest` (`COMESG_READABLE`,
/// `COMESG_WRITABLE` or both).
///
/// # Safety
/// `p` is a live set; `port` a live object of that kind that stays open
/// until it is removed or the set is freed.
#[no_mangle]
pub unsafe extern "C" fn comesg_poll_add(
    p: *mut comesg_poll,
    kind: u32,
    port: *const c_void,
    token: u64,
    interest: u32,
) -> i32 {
    guard(
        |e| e,
        || {
            // SAFETY: the caller's contract.
            let set = unsafe { obj_mut(p, "the poll set")? };
            // SAFETY: the caller keeps the port open while it is in the set.
            let port = unsafe { port_of(kind, port)? };
            let interest = match interest {
                COMESG_READABLE => Interest::READABLE,
                COMESG_WRITABLE => Interest::WRITABLE,
                3 => Interest::READABLE | Interest::WRITABLE,
                i => {
                    return Err(Failure::new(
                        libc::EINVAL,
                        format!("interest {i}: use COMESG_READABLE, _WRITABLE or both"),
                    ))
                }
            };
            set.set.add_dyn(port.pollable(), token, interest).map_err(|e| {
                let errno = match e.kind() {
                    std::io::ErrorKind::AlreadyExists => libc::EEXIST,
                    _ => e.raw_os_error().unwrap_or(libc::EIO),
                };
                Failure::new(errno, e.to_string())
            })?;
            Ok(0)
        },
    )
}

/// Removes the port added under `token`: 0, or `-ENOENT` if none was.
///
/// # Safety
/// `p` is a live set.
#[no_mangle]
pub unsafe extern "C" fn comesg_poll_remove(p: *mut comesg_poll, token: u64) -> i32 {
    guard(
        |e| e,
        || {
            // SAFETY: the caller's contract.
            let set = unsafe { obj_mut(p, "the poll set")? };
            set.left.retain(|e| e.token != token);
            if set.set.remove(token) {
                Ok(0)
            } else {
                Err(Failure::new(libc::ENOENT, format!("no port under token {token}")))
            }
        },
    )
}

/// Waits until at least one port is ready (or `timeout_ms` passes: then
/// 0), and stores up to `cap` events into `events`; returns how many.
/// Readiness is level-triggered: a port stays reported while it is ready,
/// and events that did not fit come first from the next call.
///
/// # Safety
/// `p` is a live set; `events` points to room for `cap` events.
#[no_mangle]
pub unsafe extern "C" fn comesg_poll_wait(
    p: *mut comesg_poll,
    events: *mut comesg_event,
    cap: usize,
    timeout_ms: i64,
) -> i64 {
    guard(i64::from, || {
        // SAFETY: the caller's contract.
        let set = unsafe { obj_mut(p, "the poll set")? };
        if cap == 0 {
            return Err(Failure::new(libc::EINVAL, "room for no event"));
        }
        if events.is_null() {
            return Err(null("the event array"));
        }
        if set.left.is_empty() {
            let timeout = match wait(timeout_ms) {
                Wait::Forever => None,
                Wait::Never => Some(Duration::ZERO),
                Wait::For(d) => Some(d),
            };
            set.set
                .wait(&mut set.events, timeout)
                .map_err(|e| Failure::new(e.raw_os_error().unwrap_or(libc::EIO), e.to_string()))?;
            // Reversed: handed out from the end.
            set.left = set.events.iter().rev().map(to_c).collect();
        }
        let mut n = 0;
        while n < cap {
            let Some(e) = set.left.pop() else { break };
            // SAFETY: `n < cap` slots of `events` are writable by contract.
            unsafe { events.add(n).write(e) };
            n += 1;
        }
        Ok(args::len(n))
    })
}

fn to_c(e: &Event) -> comesg_event {
    let flags = [
        (e.is_readable(), COMESG_READABLE),
        (e.is_writable(), COMESG_WRITABLE),
        (e.is_closed(), COMESG_CLOSED),
        (e.is_error(), COMESG_ERROR),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |acc, (_, bit)| acc | bit);
    comesg_event { token: e.token(), flags }
}

/// Frees the set (NULL is ignored); the ports in it stay open.
///
/// # Safety
/// `p` is NULL or a live set, not used after.
#[no_mangle]
pub unsafe extern "C" fn comesg_poll_free(p: *mut comesg_poll) {
    // SAFETY: forwarded contract.
    unsafe { args::free(p) }
}
