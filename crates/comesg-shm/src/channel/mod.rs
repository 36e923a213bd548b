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
pub use ring::{RecvClaim, Ring, RingError, RingStats, SendClaim, Side, Straight};

/// Rings over fresh segments for this crate's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Geometry, Ring};
    use comesg_sys::mapping::{Access, Mapping};

    /// `n` views of one fresh, initialized ring of shape `geo`, each its
    /// own `Ring` object, as `n` processes would map it.
    pub(crate) fn views(geo: Geometry, n: usize) -> Vec<Ring> {
        let s = comesg_sys::memfd::create_segment("test-s", geo.sender_segment_len() as u64).unwrap();
        let r = comesg_sys::memfd::create_segment("test-r", geo.receiver_segment_len() as u64).unwrap();
        let views: Vec<Ring> = (0..n)
            .map(|_| {
                let sm = Mapping::map(&s, geo.sender_segment_len(), Access::ReadWrite).unwrap();
                let rm = Mapping::map(&r, geo.receiver_segment_len(), Access::ReadWrite).unwrap();
                Ring::new(geo, sm, rm).unwrap()
            })
            .collect();
        views[0].initialize().unwrap();
        views
    }
}
