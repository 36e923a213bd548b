//! Errors the microkernel reports.

use serde::{Deserialize, Serialize};

use crate::{HandleId, Name};

/// Why the microkernel refused a request. Every variant is something a caller
/// can act on; none of them means the kernel stopped serving others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// The client speaks another protocol version.
    #[error("protocol version {client} is not served (kernel speaks {kernel})")]
    Version {
        /// Kernel's version.
        kernel: u32,
        /// Client's version.
        client: u32,
    },
    /// A request came before the handshake.
    #[error("the first request must be Hello")]
    HelloFirst,
    /// The request could not be decoded.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The request was longer than the largest frame.
    #[error("request of more than {max} bytes")]
    TooLarge {
        /// Largest frame.
        max: u32,
    },
    /// No such name.
    #[error("{0}: no such name")]
    NotFound(Name),
    /// The name's object is gone.
    #[error("{0}: dead name (its object is gone; creating it again succeeds)")]
    DeadName(Name),
    /// A live object already has the name.
    #[error("{0}: already exists")]
    Exists(Name),
    /// A path component is not a namespace.
    #[error("{0}: not a namespace")]
    NotANamespace(Name),
    /// The name is a namespace, not a port.
    #[error("{0}: is a namespace")]
    IsANamespace(Name),
    /// A namespace still has entries.
    #[error("{0}: namespace not empty")]
    NotEmpty(Name),
    /// The caller's credentials do not allow it.
    #[error("{name}: permission denied ({need})")]
    PermissionDenied {
        /// Object or namespace.
        name: Name,
        /// The permission that was missing.
        need: String,
    },
    /// An argument is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The handle is not open on this connection.
    #[error("no such handle {0:?}")]
    NoSuchHandle(HandleId),
    /// A limit was reached.
    #[error("limit reached: {0}")]
    Limit(String),
    /// The object has no room now (non-blocking operations retry).
    #[error("would block: {0}")]
    WouldBlock(String),
    /// The kernel may not read the sender's memory (`process_vm_readv`
    /// refused): the sender should send the message built in place.
    #[error("cannot read the sender's memory: {0}")]
    CannotRead(String),
    /// The kernel failed (out of memory, fds, ...); the request had no effect.
    #[error("kernel failure: {0}")]
    Internal(String),
}
