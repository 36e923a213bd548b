//! Coservices from C: calling one, and providing one with a pool of worker
//! threads that run a C handler.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use std::time::{Duration, Instant};

use comesg::{CallError, Provider, ServiceClient, ServiceOptions};

use crate::args::{self, bytes, bytes_mut, obj, out, str_arg, wait, Wait};
use crate::comesg_conn;
use crate::error::{guard, Failure};

/// A handle for calling a service.
pub struct comesg_service {
    pub(crate) client: Arc<ServiceClient>,
}

/// A service this process provides; its workers run until stopped.
pub struct comesg_provider {
    provider: Option<Provider>,
}

/// A service handler: reads the request (`req`, `req_len` bytes), writes
/// the response into `resp` (room for `resp_cap` bytes) and returns its
/// length, or a negative value to fail the call (the caller gets
/// `-EREMOTEIO`). Runs on the provider's worker threads, several at once.
pub type comesg_handler = Option<
    unsafe extern "C" fn(
        ctx: *mut c_void,
        req: *const c_void,
        req_len: usize,
        resp: *mut c_void,
        resp_cap: usize,
    ) -> i64,
>;

/// Opens the service `path` for calling.
///
/// # Safety
/// `conn` is a live connection, `path` a NUL-terminated string, `out`
/// writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn comesg_service_open(
    conn: *const comesg_conn,
    path: *const c_char,
    out: *mut *mut comesg_service,
) -> i32 {
    // SAFETY: forwarded contract.
    unsafe { args::open_with(conn, path, out, |c, p| Ok(comesg_service { client: c.service(p)? })) }
}

/// Calls the service with `req_len` bytes and copies the response into
/// `resp` (which may be the same buffer as `req`); returns the response's
/// length (larger than `resp_cap` if it did not fit: the rest is dropped).
/// `timeout_ms` bounds the whole call, including waiting for a free call
/// slot when this process has every slot in flight; a call always waits,
/// so 0 is refused with `-EINVAL`. Errors: `-EPIPE` the provider is gone,
/// `-EREMOTEIO` its handler failed on this request, `-EMSGSIZE` the request
/// is too long, `-ETIMEDOUT` (the call may still run).
///
/// # Safety
/// `s` is a live service handle; `req` points to `req_len` readable bytes,
/// `resp` to `resp_cap` writable ones.
#[no_mangle]
pub unsafe extern "C" fn comesg_service_call(
    s: *const comesg_service,
    req: *const c_void,
    req_len: usize,
    resp: *mut c_void,
    resp_cap: usize,
    timeout_ms: i64,
) -> i64 {
    guard(i64::from, || {
        let deadline = match wait(timeout_ms) {
            Wait::Never => return Err(Failure::new(libc::EINVAL, "a call always waits: give a timeout, or -1")),
            Wait::Forever => None,
            Wait::For(d) => Some(Instant::now() + d),
        };
        // SAFETY: the caller's contract; the request slice is dropped before
        // the response slice (which may cover the same bytes) is made.
        let s = unsafe { obj(s, "the service")? };
        let r = {
            // SAFETY: as above.
            let rq = unsafe { bytes(req, req_len)? };
            call(&s.client, rq, deadline)?
        };
        // SAFETY: as above.
        let out = unsafe { bytes_mut(resp, resp_cap)? };
        let n = r.len().min(out.len());
        out[..n].copy_from_slice(&r[..n]);
        Ok(args::len(r.len()))
    })
}

/// One call, waiting (with a growing pause) while every call slot of this
/// process is in flight, until `deadline`.
fn call(client: &ServiceClient, req: &[u8], deadline: Option<Instant>) -> Result<Vec<u8>, Failure> {
    let mut nap = Duration::from_micros(20);
    loop {
        let r = match deadline {
            None => client.call(req),
            Some(d) => client.call_timeout(req, d.saturating_duration_since(Instant::now())),
        };
        match r {
            Err(CallError::Busy(_)) if deadline.is_none_or(|d| Instant::now() + nap < d) => {
                std::thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(2));
            }
            r => return Ok(r?),
        }
    }
}

/// Closes a service handle (NULL is ignored).
///
/// # Safety
/// `s` is NULL or a service handle, not used after.
#[no_mangle]
pub unsafe extern "C" fn comesg_service_close(s: *mut comesg_service) {
    // SAFETY: forwarded contract.
    unsafe { args::free(s) }
}

/// The handler and its context, shared by the worker threads.
struct Handler {
    f: unsafe extern "C" fn(*mut c_void, *const c_void, usize, *mut c_void, usize) -> i64,
    ctx: *mut c_void,
    cap: usize,
}

// SAFETY: `comesg_serve` documents that the handler and `ctx` must be safe
// to use from several threads at once; the C caller promises it.
unsafe impl Send for Handler {}
// SAFETY: as above.
unsafe impl Sync for Handler {}

impl Handler {
    /// Runs the C handler on one request.
    fn run(&self, request: &[u8]) -> Vec<u8> {
        let mut resp = vec![0u8; self.cap];
        // SAFETY: the pointers cover `request` and `resp`; the handler's own
        // contract is what the caller of `comesg_serve` promised.
        let n =
            unsafe { (self.f)(self.ctx, request.as_ptr().cast(), request.len(), resp.as_mut_ptr().cast(), resp.len()) };
        match usize::try_from(n) {
            Ok(n) if n <= resp.len() => {
                resp.truncate(n);
                resp
            }
            _ => std::panic::resume_unwind(Box::new(HandlerRefused)),
        }
    }
}

/// Why a call failed in the C handler: unwound (without the panic hook's
/// message) to the provider's worker, which reports the call failed.
struct HandlerRefused;

/// Registers the service `path` and serves it with `workers` threads, each
/// running `handler(ctx, ...)` for one call at a time. Requests and
/// responses are at most `max_message` bytes.
///
/// # Safety
/// `conn` is a live connection, `path` a NUL-terminated string, `out`
/// writable storage for one pointer; `handler` and `ctx` stay valid until
/// `comesg_provider_stop` returns and may be used by several threads at
/// once.
#[no_mangle]
pub unsafe extern "C" fn comesg_serve(
    conn: *const comesg_conn,
    path: *const c_char,
    workers: u32,
    max_message: u32,
    handler: comesg_handler,
    ctx: *mut c_void,
    out: *mut *mut comesg_provider,
) -> i32 {
    guard(
        |e| e,
        || {
            args::check_out(out)?;
            // SAFETY: the caller's contract.
            let (c, p) = unsafe { (obj(conn, "conn")?, str_arg(path, "path")?) };
            let f = handler.ok_or_else(|| crate::error::null("handler"))?;
            let h = Handler { f, ctx, cap: max_message as usize };
            let opts = ServiceOptions { workers, slot_size: max_message, ..Default::default() };
            let provider = c.conn.serve(p, opts, move |call| h.run(call.request))?;
            // SAFETY: the caller's contract.
            unsafe { self::out(out, comesg_provider { provider: Some(provider) }) }
        },
    )
}

/// Stops serving: the workers finish their calls and exit, the name goes
/// dead. Frees the provider (NULL is ignored). Not from inside a handler.
///
/// # Safety
/// `p` is NULL or a provider from `comesg_serve`, not used after.
#[no_mangle]
pub unsafe extern "C" fn comesg_provider_stop(p: *mut comesg_provider) -> i32 {
    if p.is_null() {
        return 0;
    }
    guard(
        |e| e,
        || {
            // SAFETY: made by Box::into_raw in `out`, freed once.
            let mut b = unsafe { Box::from_raw(p) };
            match b.provider.take() {
                Some(pr) => pr.stop().map(|()| 0).map_err(Failure::from),
                None => Ok(0),
            }
        },
    )
}
