//! COCHANNEL: a bounded many-senders many-receivers ring of fixed-size slots
//! in two shared segments, one written only by senders and one written only
//! by receivers.
//!
//! - [`geometry`]: sizes and offsets of both segments.
//! - [`stamp`]: the encoding of the per-slot words.
//! - [`ring`]: the lock-free algorithm and the microkernel's crash repair.
//! - [`loan`]: zero-copy send and receive as typed loans.
//! - [`blocking`]: spin-then-futex waiting with deadlines.
//! - `slip`: how a streaming side keeps its distance while it waits.
//! - `lease`: how a sole holder of a side claims without compare-and-swap.

pub mod blocking;
pub mod geometry;
mod lease;
pub mod loan;
pub mod readiness;
pub mod ring;
mod slip;
pub mod stamp;

pub use geometry::{Geometry, GeometryError};
pub use lease::Lease;
pub use loan::{RecvSlot, SendLoan};
pub use ring::{RecvClaim, Ring, RingError, RingStats, SendClaim, Side};
