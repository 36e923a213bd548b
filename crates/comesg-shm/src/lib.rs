//! Shared-memory primitives of comesg, above the `sys` layer and below the
//! protocol, the microkernel and the client library.
//!
//! - [`channel`]: the COCHANNEL ring (geometry, lock-free algorithm, loans,
//!   crash repair, blocking with spin-then-futex);
//! - [`comutex`]: the robust process-shared mutex and the value it guards;
//! - [`service`]: coservice call slots and the service header;
//! - [`pipe`]: the COPIPE rendezvous;
//! - [`carrier`]: the COCARRIER arena only the kernel writes.
#![deny(missing_docs)]

pub mod carrier;
pub mod channel;
pub mod comutex;
pub mod fault;
pub mod pipe;
pub mod service;
pub mod spin;
