//! Errors as C sees them: a negative errno-style code from every call, the
//! message of the calling thread's last error from `comesg_last_error`, and
//! no panic ever unwinding into C.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use comesg::{CallError, Error, KernelError, LockError, RecvError, SendError};

thread_local! {
    static LAST: RefCell<CString> = RefCell::new(CString::default());
}

/// A failed call: its code (a negative errno value) and what happened.
#[derive(Debug)]
pub struct Failure {
    /// Negative errno value.
    pub code: i32,
    /// The message `comesg_last_error` returns.
    pub message: String,
}

impl Failure {
    /// A failure with `errno` (positive) and a message.
    pub fn new(errno: i32, message: impl Into<String>) -> Failure {
        Failure { code: -errno, message: message.into() }
    }
}

/// Runs `f`, turning a failure (or a panic) into its code and recording its
/// message for `comesg_last_error`.
pub fn guard<T>(on_error: impl FnOnce(i32) -> T, f: impl FnOnce() -> Result<T, Failure>) -> T {
    let failure = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => return v,
        Ok(Err(e)) => e,
        Err(_) => Failure::new(libc::EIO, "internal error: comesg panicked (this is a bug)"),
    };
    let msg = CString::new(failure.message.replace('\0', " ")).unwrap_or_default();
    // During thread teardown the slot may be gone: the code still returns.
    let _ = LAST.try_with(|l| *l.borrow_mut() = msg);
    on_error(failure.code)
}

/// The calling thread's last error message (valid until its next failing
/// call).
pub fn last_error() -> *const c_char {
    LAST.try_with(|l| l.borrow().as_ptr()).unwrap_or(c"(no error record: the thread is exiting)".as_ptr())
}

fn kernel_errno(e: &KernelError) -> i32 {
    match e {
        KernelError::NotFound(_) => libc::ENOENT,
        KernelError::DeadName(_) => libc::ENOENT,
        KernelError::Exists(_) => libc::EEXIST,
        KernelError::NotANamespace(_) => libc::ENOTDIR,
        KernelError::IsANamespace(_) => libc::EISDIR,
        KernelError::NotEmpty(_) => libc::ENOTEMPTY,
        KernelError::PermissionDenied { .. } => libc::EACCES,
        KernelError::InvalidArgument(_) | KernelError::NoSuchHandle(_) => libc::EINVAL,
        KernelError::TooLarge { .. } => libc::EMSGSIZE,
        KernelError::Limit(_) => libc::ENOSPC,
        KernelError::WouldBlock(_) => libc::EAGAIN,
        _ => libc::EPROTO,
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let errno = match &e {
            Error::Connect { source, .. } => source.raw_os_error().unwrap_or(libc::ECONNREFUSED),
            Error::KernelGone | Error::HandleLost { .. } => libc::ENOTCONN,
            Error::Kernel(k) => kernel_errno(k),
            Error::WrongKind { .. } | Error::TypeMismatch { .. } => libc::EPROTOTYPE,
            Error::Io(io) => io.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EPROTO,
        };
        Failure::new(errno, e.to_string())
    }
}

impl From<SendError> for Failure {
    fn from(e: SendError) -> Failure {
        let errno = match &e {
            SendError::Full => libc::EAGAIN,
            SendError::TimedOut => libc::ETIMEDOUT,
            SendError::TooLong { .. } => libc::EMSGSIZE,
            SendError::NoRight => libc::EPERM,
            SendError::Closed => libc::EPIPE,
            // Not delivered, but another receiver may take it: retry.
            SendError::ReceiverDied => libc::ECONNABORTED,
            SendError::HandleLost(_) => libc::ENOTCONN,
            SendError::Refused(k) => kernel_errno(k),
            _ => libc::EIO,
        };
        Failure::new(errno, e.to_string())
    }
}

impl From<RecvError> for Failure {
    fn from(e: RecvError) -> Failure {
        let errno = match &e {
            RecvError::Empty => libc::EAGAIN,
            RecvError::TimedOut => libc::ETIMEDOUT,
            RecvError::NoRight => libc::EPERM,
            RecvError::Closed => libc::EPIPE,
            RecvError::HandleLost(_) => libc::ENOTCONN,
            _ => libc::EIO,
        };
        Failure::new(errno, e.to_string())
    }
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Failure {
        let errno = match &e {
            CallError::TooLong { .. } => libc::EMSGSIZE,
            CallError::Busy(_) => libc::EBUSY,
            CallError::TimedOut => libc::ETIMEDOUT,
            CallError::ServiceGone => libc::EPIPE,
            CallError::HandlerFailed => libc::EREMOTEIO,
            _ => libc::EIO,
        };
        Failure::new(errno, e.to_string())
    }
}

impl<G> From<LockError<G>> for Failure {
    fn from(e: LockError<G>) -> Failure {
        let errno = match &e {
            LockError::OwnerDied(_) => libc::EOWNERDEAD,
            LockError::WouldBlock => libc::EBUSY,
            LockError::TimedOut => libc::ETIMEDOUT,
            LockError::NotRecoverable => libc::ENOTRECOVERABLE,
            LockError::WouldDeadlock => libc::EDEADLK,
            _ => libc::EIO,
        };
        Failure::new(errno, e.map(|_| ()).to_string())
    }
}

/// A null pointer passed where an object was required.
pub fn null(what: &str) -> Failure {
    Failure::new(libc::EINVAL, format!("{what} is NULL"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        // SAFETY: `last_error` returns a NUL-terminated string owned by this thread.
        unsafe { CStr::from_ptr(last_error()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn a_panic_becomes_eio_and_a_message() {
        let code = guard(|e| e, || -> Result<i32, Failure> { panic!("boom") });
        assert_eq!(code, -libc::EIO);
        assert!(last().contains("panicked"), "{}", last());
    }

    #[test]
    fn failures_keep_their_errno_and_message() {
        let code = guard(|e| e, || -> Result<i32, Failure> { Err(SendError::Full.into()) });
        assert_eq!(code, -libc::EAGAIN);
        assert_eq!(last(), "channel is full");
        let code = guard(|e| e, || -> Result<i32, Failure> { Err(LockError::<()>::OwnerDied(()).into()) });
        assert_eq!(code, -libc::EOWNERDEAD);
        assert_eq!(guard(|e| e, || Ok(7)), 7, "success passes the value through");
    }
}
