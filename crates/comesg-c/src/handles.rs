//! Passing handles in COCARRIER messages: what to attach when sending, and
//! what a receiver takes out of a message.

use std::ffi::c_void;
use std::sync::Arc;

use comesg::{Attachable, Handle, Rights};

use crate::args::{self, bytes, obj, wait, Wait};
use crate::error::{guard, null, Failure};
use crate::{comesg_carrier, comesg_channel, comesg_mutex, comesg_pipe, comesg_service};

/// A COCHANNEL (`comesg_channel`).
pub const COMESG_KIND_CHANNEL: u32 = 1;
/// A COPIPE (`comesg_pipe`).
pub const COMESG_KIND_PIPE: u32 = 2;
/// A COCARRIER (`comesg_carrier`).
pub const COMESG_KIND_CARRIER: u32 = 3;
/// A comutex (`comesg_mutex`).
pub const COMESG_KIND_MUTEX: u32 = 4;
/// A service to call (`comesg_service`).
pub const COMESG_KIND_SERVICE: u32 = 5;

/// One handle to attach to a message: `port` is a `comesg_channel`,
/// `comesg_pipe`, `comesg_carrier` or `comesg_mutex` as `kind` says, and
/// the receiver gets `rights` (`COMESG_SEND`, `COMESG_RECV` or both; never
/// more than this handle has).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct comesg_attach {
    /// `COMESG_KIND_CHANNEL`, `_PIPE`, `_CARRIER` or `_MUTEX`.
    pub kind: u32,
    /// The port.
    pub port: *const c_void,
    /// The rights the receiver gets.
    pub rights: u32,
}

/// A port of the kind `kind` behind `port`.
///
/// # Safety
/// `port` is NULL or points to a live object of that kind that outlives `'a`.
pub(crate) unsafe fn port_of<'a>(kind: u32, port: *const c_void) -> Result<PortRef<'a>, Failure> {
    if port.is_null() {
        return Err(null("the port"));
    }
    // SAFETY: non-null; its kind is the caller's word.
    unsafe {
        Ok(match kind {
            COMESG_KIND_CHANNEL => PortRef::Channel(&(*port.cast::<comesg_channel>()).port),
            COMESG_KIND_PIPE => PortRef::Pipe(&(*port.cast::<comesg_pipe>()).port),
            COMESG_KIND_CARRIER => PortRef::Carrier(&(*port.cast::<comesg_carrier>()).port),
            COMESG_KIND_MUTEX => PortRef::Mutex(&(*port.cast::<comesg_mutex>()).m),
            k => return Err(Failure::new(libc::EINVAL, format!("port kind {k}: use a COMESG_KIND_ constant"))),
        })
    }
}

/// A borrowed port of any kind the C API can attach or poll.
pub(crate) enum PortRef<'a> {
    Channel(&'a comesg::Channel),
    Pipe(&'a comesg::Copipe),
    Carrier(&'a comesg::Cocarrier),
    Mutex(&'a comesg::Comutex),
}

impl<'a> PortRef<'a> {
    fn attachable(&self) -> &'a dyn Attachable {
        match *self {
            PortRef::Channel(p) => p,
            PortRef::Pipe(p) => p,
            PortRef::Carrier(p) => p,
            PortRef::Mutex(p) => p,
        }
    }

    pub(crate) fn pollable(&self) -> &'a dyn comesg::Pollable {
        match *self {
            PortRef::Channel(p) => p,
            PortRef::Pipe(p) => p,
            PortRef::Carrier(p) => p,
            PortRef::Mutex(p) => p,
        }
    }
}

/// The attachments `atts[..n]` as the Rust API takes them.
///
/// # Safety
/// `atts` points to `n` attachments (NULL allowed when `n` is 0) whose ports
/// are live for `'a`.
pub(crate) unsafe fn attachments<'a>(
    atts: *const comesg_attach,
    n: usize,
) -> Result<Vec<(&'a dyn Attachable, Rights)>, Failure> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if atts.is_null() {
        return Err(null("the attachment array"));
    }
    // SAFETY: `n` readable attachments by the caller's contract.
    let list = unsafe { std::slice::from_raw_parts(atts, n) };
    list.iter()
        .map(|a| {
            // SAFETY: the caller's contract.
            let p = unsafe { port_of(a.kind, a.port)? };
            Ok((p.attachable(), crate::ports::rights(a.rights)?))
        })
        .collect()
}

/// Copies `len` bytes into the carrier, as `comesg_carrier_send`, with `n`
/// handles attached (`atts` may be NULL when `n` is 0): each receiver
/// that takes them gets handles of its own, with the rights named (never
/// wider than the sender's). The attached ports must have been opened
/// through the carrier's own connection (`-EINVAL` otherwise). Waits up to
/// `timeout_ms` while no receiver has room.
///
/// # Safety
/// `c` is a live carrier; `msg` points to `len` readable bytes; `atts` to
/// `n` attachments whose ports are live.
#[no_mangle]
pub unsafe extern "C" fn comesg_carrier_send_with(
    c: *const comesg_carrier,
    msg: *const c_void,
    len: usize,
    atts: *const comesg_attach,
    n: usize,
    timeout_ms: i64,
) -> i32 {
    guard(
        |e| e,
        || {
            // SAFETY: the caller's contract.
            let (car, m, list) = unsafe { (obj(c, "the carrier")?, bytes(msg, len)?, attachments(atts, n)?) };
            match wait(timeout_ms) {
                Wait::Forever => car.port.send_with(m, &list),
                Wait::Never => car.port.send_with_timeout(m, &list, std::time::Duration::ZERO),
                Wait::For(d) => car.port.send_with_timeout(m, &list, d),
            }?;
            Ok(0)
        },
    )
}

/// A handle taken from a COCARRIER message: turn it into a port of its
/// kind with `comesg_handle_into_*`, or close it.
pub struct comesg_handle {
    h: Option<Handle>,
}

impl comesg_handle {
    pub(crate) fn new(h: Handle) -> comesg_handle {
        comesg_handle { h: Some(h) }
    }
}

/// The handle's kind (a `COMESG_KIND_` constant), or `-EINVAL` for NULL.
///
/// # Safety
/// `h` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn comesg_handle_kind(h: *const comesg_handle) -> i32 {
    guard(
        |e| e,
        || {
            // SAFETY: the caller's contract.
            let h = unsafe { obj(h, "the handle")? };
            let kind = match &h.h {
                Some(Handle::Channel(_)) => COMESG_KIND_CHANNEL,
                Some(Handle::Pipe(_)) => COMESG_KIND_PIPE,
                Some(Handle::Carrier(_)) => COMESG_KIND_CARRIER,
                Some(Handle::Comutex(_)) => COMESG_KIND_MUTEX,
                Some(Handle::Service(_)) => COMESG_KIND_SERVICE,
                _ => return Err(Failure::new(libc::EINVAL, "the handle is of a kind this C API does not know")),
            };
            Ok(kind as i32)
        },
    )
}

/// Turns `h` into a port through `make` if it is of the kind `make` takes;
/// `h` is freed on success and left as it is otherwise.
///
/// # Safety
/// `h` is a live handle; `out` writable storage for one pointer.
unsafe fn into<T>(
    h: *mut comesg_handle,
    out: *mut *mut T,
    kind: &str,
    make: impl FnOnce(Handle) -> Result<T, Box<Handle>>,
) -> i32 {
    guard(
        |e| e,
        || {
            args::check_out(out)?;
            // SAFETY: the caller's contract.
            let slot = unsafe { args::obj_mut(h, "the handle")? };
            let handle = slot.h.take().ok_or_else(|| Failure::new(libc::EINVAL, "the handle is empty"))?;
            match make(handle) {
                Ok(port) => {
                    // SAFETY: `h` came from `comesg_message_take_handles`
                    // (a Box) and the caller does not use it after success.
                    drop(unsafe { Box::from_raw(h) });
                    // SAFETY: checked above.
                    unsafe { args::out(out, port) }
                }
                Err(back) => {
                    slot.h = Some(*back);
                    Err(Failure::new(libc::EPROTOTYPE, format!("the handle is not a {kind}")))
                }
            }
        },
    )
}

/// Turns a channel handle into a `comesg_channel` and frees `h`;
/// `-EPROTOTYPE` (and `h` kept) if it is of another kind.
///
/// # Safety
/// `h` is a live handle, not used after success; `out` writable storage for
/// one pointer.
#[no_mangle]
pub unsafe extern "C" fn comesg_handle_into_channel(h: *mut comesg_handle, out: *mut *mut comesg_channel) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        into(h, out, "channel", |h| match h {
            Handle::Channel(port) => Ok(comesg_channel { port }),
            other => Err(Box::new(other)),
        })
    }
}

/// Turns a pipe handle into a `comesg_pipe`, as `comesg_handle_into_channel`.
///
/// # Safety
/// As for `comesg_handle_into_channel`.
#[no_mangle]
pub unsafe extern "C" fn comesg_handle_into_pipe(h: *mut comesg_handle, out: *mut *mut comesg_pipe) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        into(h, out, "pipe", |h| match h {
            Handle::Pipe(port) => Ok(comesg_pipe { port }),
            other => Err(Box::new(other)),
        })
    }
}

/// Turns a carrier handle into a `comesg_carrier`, as
/// `comesg_handle_into_channel`.
///
/// # Safety
/// As for `comesg_handle_into_channel`.
#[no_mangle]
pub unsafe extern "C" fn comesg_handle_into_carrier(h: *mut comesg_handle, out: *mut *mut comesg_carrier) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        into(h, out, "carrier", |h| match h {
            Handle::Carrier(port) => Ok(comesg_carrier { port }),
            other => Err(Box::new(other)),
        })
    }
}

/// Turns a comutex handle into a `comesg_mutex`, as
/// `comesg_handle_into_channel`.
///
/// # Safety
/// As for `comesg_handle_into_channel`.
#[no_mangle]
pub unsafe extern "C" fn comesg_handle_into_mutex(h: *mut comesg_handle, out: *mut *mut comesg_mutex) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        into(h, out, "comutex", |h| match h {
            Handle::Comutex(m) => Ok(comesg_mutex::new(m)),
            other => Err(Box::new(other)),
        })
    }
}

/// Turns a service handle into a `comesg_service` to call, as
/// `comesg_handle_into_channel`.
///
/// # Safety
/// As for `comesg_handle_into_channel`.
#[no_mangle]
pub unsafe extern "C" fn comesg_handle_into_service(h: *mut comesg_handle, out: *mut *mut comesg_service) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        into(h, out, "service", |h| match h {
            Handle::Service(client) => Ok(comesg_service { client: Arc::new(client) }),
            other => Err(Box::new(other)),
        })
    }
}

/// Closes a handle taken from a message without using it (NULL is
/// ignored).
///
/// # Safety
/// `h` is NULL or a live handle, not used after.
#[no_mangle]
pub unsafe extern "C" fn comesg_handle_close(h: *mut comesg_handle) {
    // SAFETY: forwarded contract.
    unsafe { args::free(h) }
}
