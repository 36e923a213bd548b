//! The three port kinds: COCHANNEL, COPIPE and COCARRIER, each with create,
//! open, send, receive and close.

use std::ffi::{c_char, c_void};

use comesg::{
    Channel, ChannelOptions, Cocarrier, CocarrierOptions, Copipe, CopipeOptions, RecvError, Rights, SendError,
};

use crate::args::{self, bytes, bytes_mut, obj, wait, Wait};
use crate::comesg_conn;
use crate::error::{guard, Failure};

/// What the C API needs of a port.
trait Port {
    fn send_wait(&self, msg: &[u8], w: Wait) -> Result<(), SendError>;
    /// Copies one message into `buf` (truncated if longer) and returns its
    /// full length.
    fn recv_wait(&self, buf: &mut [u8], w: Wait) -> Result<usize, RecvError>;
}

impl Port for Channel {
    fn send_wait(&self, msg: &[u8], w: Wait) -> Result<(), SendError> {
        match w {
            Wait::Forever => self.send(msg),
            Wait::Never => self.try_send(msg),
            Wait::For(d) => self.send_timeout(msg, d),
        }
    }
    fn recv_wait(&self, buf: &mut [u8], w: Wait) -> Result<usize, RecvError> {
        match w {
            Wait::Forever => self.recv(buf),
            Wait::Never => self.try_recv(buf),
            Wait::For(d) => self.recv_timeout(buf, d),
        }
    }
}

impl Port for Copipe {
    fn send_wait(&self, msg: &[u8], w: Wait) -> Result<(), SendError> {
        match w {
            Wait::Forever => self.send(msg),
            Wait::Never => self.try_send(msg),
            Wait::For(d) => self.send_timeout(msg, d),
        }
    }
    fn recv_wait(&self, buf: &mut [u8], w: Wait) -> Result<usize, RecvError> {
        match w {
            Wait::Forever => self.recv(buf),
            Wait::Never => self.try_recv(buf),
            Wait::For(d) => self.recv_timeout(buf, d),
        }
    }
}

impl Port for Cocarrier {
    fn send_wait(&self, msg: &[u8], w: Wait) -> Result<(), SendError> {
        match w {
            Wait::Forever => self.send(msg),
            Wait::Never => self.try_send(msg),
            Wait::For(d) => self.send_timeout(msg, d),
        }
    }
    fn recv_wait(&self, buf: &mut [u8], w: Wait) -> Result<usize, RecvError> {
        let m = match w {
            Wait::Forever => self.recv(),
            Wait::Never => self.try_recv(),
            Wait::For(d) => self.recv_timeout(d),
        }?;
        let n = m.len().min(buf.len());
        buf[..n].copy_from_slice(&m[..n]);
        Ok(m.len())
    }
}

/// Sends through the port behind `p`.
///
/// # Safety
/// As for the `_send` functions.
unsafe fn send<T, P: Port>(
    p: *const T,
    port: impl Fn(&T) -> &P,
    msg: *const c_void,
    len: usize,
    timeout_ms: i64,
) -> i32 {
    guard(
        |e| e,
        || {
            // SAFETY: the caller's contract.
            let (t, m) = unsafe { (obj(p, "the port")?, bytes(msg, len)?) };
            port(t).send_wait(m, wait(timeout_ms))?;
            Ok(0)
        },
    )
}

/// Receives from the port behind `p`.
///
/// # Safety
/// As for the `_recv` functions.
unsafe fn recv<T, P: Port>(p: *const T, port: impl Fn(&T) -> &P, buf: *mut c_void, cap: usize, timeout_ms: i64) -> i64 {
    guard(i64::from, || {
        // SAFETY: the caller's contract.
        let (t, b) = unsafe { (obj(p, "the port")?, bytes_mut(buf, cap)?) };
        Ok(args::len(port(t).recv_wait(b, wait(timeout_ms))?))
    })
}

pub(crate) fn rights(bits: u32) -> Result<Rights, Failure> {
    match bits {
        1..=3 => Ok(Rights::from_bits_truncate(bits as u8)),
        _ => Err(Failure::new(libc::EINVAL, format!("rights {bits}: use COMESG_SEND, COMESG_RECV or both"))),
    }
}

/// A COCHANNEL handle.
pub struct comesg_channel {
    pub(crate) port: Channel,
}

/// Creates the COCHANNEL `path`: `slots` messages of up to `slot_size`
/// bytes in flight, permission bits `mode` (e.g. 0600), `flags` a mix of
/// `COMESG_EXCLUSIVE` and `COMESG_PERSISTENT`. The handle has both rights.
///
/// # Safety
/// `conn` is a live connection, `path` a NUL-terminated string, `out`
/// writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn comesg_channel_create(
    conn: *const comesg_conn,
    path: *const c_char,
    slot_size: u32,
    slots: u32,
    mode: u32,
    flags: u32,
    out: *mut *mut comesg_channel,
) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        args::open_with(conn, path, out, |c, p| {
            let (exclusive, persistent) = args::flags(flags)?;
            let opts = ChannelOptions { slot_size, slots, mode, exclusive, persistent, ..Default::default() };
            Ok(comesg_channel { port: c.create_channel(p, opts)? })
        })
    }
}

/// Opens the COCHANNEL `path` with `rights` (`COMESG_SEND`, `COMESG_RECV`
/// or both).
///
/// # Safety
/// As for `comesg_channel_create`.
#[no_mangle]
pub unsafe extern "C" fn comesg_channel_open(
    conn: *const comesg_conn,
    path: *const c_char,
    rights: u32,
    out: *mut *mut comesg_channel,
) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        args::open_with(conn, path, out, |c, p| Ok(comesg_channel { port: c.open_channel(p, self::rights(rights)?)? }))
    }
}

/// Sends `len` bytes (at most the slot size), waiting while the channel is
/// full.
///
/// # Safety
/// `ch` is a live channel; `msg` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn comesg_channel_send(
    ch: *const comesg_channel,
    msg: *const c_void,
    len: usize,
    timeout_ms: i64,
) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { send(ch, |c| &c.port, msg, len, timeout_ms) }
}

/// Receives one message into `buf`; returns its length, which is larger
/// than `cap` if the message did not fit (the rest is dropped, as `recv(2)`
/// does for datagrams).
///
/// # Safety
/// `ch` is a live channel; `buf` points to `cap` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn comesg_channel_recv(
    ch: *const comesg_channel,
    buf: *mut c_void,
    cap: usize,
    timeout_ms: i64,
) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { recv(ch, |c| &c.port, buf, cap, timeout_ms) }
}

/// Closes a channel handle (NULL is ignored).
///
/// # Safety
/// `ch` is NULL or a channel handle, not used after.
#[no_mangle]
pub unsafe extern "C" fn comesg_channel_close(ch: *mut comesg_channel) {
    // SAFETY: forwarded contract.
    unsafe { args::free(ch) }
}

/// A COPIPE handle.
pub struct comesg_pipe {
    pub(crate) port: Copipe,
}

/// Creates the COPIPE `path` with a `buffer`-byte transfer buffer (the
/// largest message). The handle may send; receivers open the pipe with
/// `COMESG_RECV`.
///
/// # Safety
/// As for `comesg_channel_create`.
#[no_mangle]
pub unsafe extern "C" fn comesg_pipe_create(
    conn: *const comesg_conn,
    path: *const c_char,
    buffer: u32,
    mode: u32,
    flags: u32,
    out: *mut *mut comesg_pipe,
) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        args::open_with(conn, path, out, |c, p| {
            let (exclusive, persistent) = args::flags(flags)?;
            let opts = CopipeOptions { buffer, mode, exclusive, persistent, ..Default::default() };
            Ok(comesg_pipe { port: c.create_copipe(p, opts)? })
        })
    }
}

/// Opens the COPIPE `path` with `rights`.
///
/// # Safety
/// As for `comesg_channel_create`.
#[no_mangle]
pub unsafe extern "C" fn comesg_pipe_open(
    conn: *const comesg_conn,
    path: *const c_char,
    rights: u32,
    out: *mut *mut comesg_pipe,
) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        args::open_with(conn, path, out, |c, p| Ok(comesg_pipe { port: c.open_copipe(p, self::rights(rights)?)? }))
    }
}

/// Sends `len` bytes, copied once straight into the receiver's buffer;
/// returns when a receiver has them (`-EPIPE`: no receiver is left;
/// `-ECONNABORTED`: the receiver died before taking them, nothing was
/// delivered, another receiver may take a retry).
///
/// # Safety
/// As for `comesg_channel_send`.
#[no_mangle]
pub unsafe extern "C" fn comesg_pipe_send(
    p: *const comesg_pipe,
    msg: *const c_void,
    len: usize,
    timeout_ms: i64,
) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { send(p, |c| &c.port, msg, len, timeout_ms) }
}

/// Receives one message (`-EPIPE`: every sender is gone: end of stream).
///
/// # Safety
/// As for `comesg_channel_recv`.
#[no_mangle]
pub unsafe extern "C" fn comesg_pipe_recv(p: *const comesg_pipe, buf: *mut c_void, cap: usize, timeout_ms: i64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { recv(p, |c| &c.port, buf, cap, timeout_ms) }
}

/// Closes a pipe handle (NULL is ignored).
///
/// # Safety
/// `p` is NULL or a pipe handle, not used after.
#[no_mangle]
pub unsafe extern "C" fn comesg_pipe_close(p: *mut comesg_pipe) {
    // SAFETY: forwarded contract.
    unsafe { args::free(p) }
}

/// A COCARRIER handle.
pub struct comesg_carrier {
    pub(crate) port: Cocarrier,
}

/// Creates the COCARRIER `path`: messages of up to `max_message` bytes,
/// copied once into an `arena`-byte region that receivers map read-only.
/// The handle may send; receivers open the carrier with `COMESG_RECV`.
///
/// # Safety
/// As for `comesg_channel_create`.
#[no_mangle]
pub unsafe extern "C" fn comesg_carrier_create(
    conn: *const comesg_conn,
    path: *const c_char,
    max_message: u64,
    arena: u64,
    mode: u32,
    flags: u32,
    out: *mut *mut comesg_carrier,
) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        args::open_with(conn, path, out, |c, p| {
            let (exclusive, persistent) = args::flags(flags)?;
            let opts = CocarrierOptions { max_message, arena, mode, exclusive, persistent, ..Default::default() };
            Ok(comesg_carrier { port: c.create_cocarrier(p, opts)? })
        })
    }
}

/// Opens the COCARRIER `path` with `rights`.
///
/// # Safety
/// As for `comesg_channel_create`.
#[no_mangle]
pub unsafe extern "C" fn comesg_carrier_open(
    conn: *const comesg_conn,
    path: *const c_char,
    rights: u32,
    out: *mut *mut comesg_carrier,
) -> i32 {
    // SAFETY: forwarded contract.
    unsafe {
        args::open_with(conn, path, out, |c, p| {
            Ok(comesg_carrier { port: c.open_cocarrier(p, self::rights(rights)?)? })
        })
    }
}

/// Sends `len` bytes; once this returns nobody can change them.
///
/// # Safety
/// As for `comesg_channel_send`.
#[no_mangle]
pub unsafe extern "C" fn comesg_carrier_send(
    c: *const comesg_carrier,
    msg: *const c_void,
    len: usize,
    timeout_ms: i64,
) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { send(c, |c| &c.port, msg, len, timeout_ms) }
}

/// Receives one message, copied out of the read-only arena into `buf`.
///
/// # Safety
/// As for `comesg_channel_recv`.
#[no_mangle]
pub unsafe extern "C" fn comesg_carrier_recv(
    c: *const comesg_carrier,
    buf: *mut c_void,
    cap: usize,
    timeout_ms: i64,
) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { recv(c, |c| &c.port, buf, cap, timeout_ms) }
}

/// Closes a carrier handle (NULL is ignored).
///
/// # Safety
/// `c` is NULL or a carrier handle, not used after.
#[no_mangle]
pub unsafe extern "C" fn comesg_carrier_close(c: *mut comesg_carrier) {
    // SAFETY: forwarded contract.
    unsafe { args::free(c) }
}
