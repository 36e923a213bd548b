//! Shared-memory primitives of comesg, above the `sys` layer and below the
//! protocol, the microkernel and the client library.
//!
//! - [`channel`]: the COCHANNEL ring (geometry, lock-free algorithm, loans,
//!   crash repair, blocking with spin-then-futex).
#![deny(missing_docs)]

pub mod channel;
