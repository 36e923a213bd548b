//! Sizes and offsets of a COCHANNEL's two segments.
//!
//! Sender segment (written by senders, mapped read-only by receivers):
//!
//! | offset | content |
//! |---|---|
//! | 0 | `tail`: next position to claim (u64) |
//! | 64 | `data_seq` (u32 futex word receivers sleep on), `send_waiters`, `send_pollers`, live senders, sender attaches (u32 each); at 88 the senders' lease (u64, see `lease`) |
//! | 128 | `max_holders` holder records of 64 bytes (messages, bytes, sleeping, polling, claiming under the lease) |
//! | `claims_offset` | `slots` claim words (u64 each), touched by senders only |
//! | `slots_offset` | `slots` slots of `stride` bytes: a header line (stamp u64, length u32, pad), then the data, starting a line of its own |
//!
//! A slot's header has a line to itself, so that a 64-byte message fills one
//! data line instead of spilling into a second, and so that a receiver
//! polling the next message's header does not pull away a line the sender
//! is writing: with four headers to a line, in an array of their own, the
//! 64 B round trip was 460-500 ns against 430-440 ns with a line each
//! (`comesg bench`, three runs each way alternated).
//!
//! The header line sits right before its data. With all headers in one
//! array and all data in another, an in-process 64 B round trip
//! (`RING_RT_ONLY=1` on the `ring_pingpong` bench) was about 30 ns slower:
//! medians of paired differences -31 and -36 ns over 12 and 11 pairs, with
//! the header first or the data first. It is not the pairing of 128-byte
//! aligned lines: a header and data in different 128-byte pairs measured
//! the same as in one (-3 ns over 12 pairs).
//!
//! Receiver segment (written by receivers, mapped read-only by senders):
//!
//! | offset | content |
//! |---|---|
//! | 0 | `head`: next position to receive (u64) |
//! | 64 | `space_seq` (u32 futex word senders sleep on), `recv_waiters`, `recv_pollers`, live receivers, receiver attaches (u32 each); at 88 the receivers' lease |
//! | 128 | `max_holders` holder records |
//! | `free_offset` | `slots` free stamps (u64 each) |

/// Bytes of a cache line; hot words written by different sides never share one.
pub const LINE: usize = 64;
/// Bytes of a slot header: stamp (8), length (4), padding to a whole line.
pub const SLOT_HEADER: usize = LINE;
/// Bytes of a holder record.
pub const HOLDER_RECORD: usize = LINE;
/// Largest slot size a channel may have (16 MiB).
pub const MAX_SLOT_SIZE: u32 = 16 << 20;
/// Most slots a channel may have.
pub const MAX_SLOTS: u32 = 1 << 20;
/// Largest total size of one segment (1 GiB).
pub const MAX_SEGMENT: usize = 1 << 30;
/// Most holders per side of one channel.
pub const MAX_HOLDERS: u32 = 1 << 16;

/// Shape of one COCHANNEL: fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Largest message in bytes.
    pub slot_size: u32,
    /// Number of slots (a power of two).
    pub slots: u32,
    /// Most handles per side that may hold the channel at once.
    pub max_holders: u32,
}

/// Why a geometry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    /// Slot size zero or above [`MAX_SLOT_SIZE`].
    #[error("slot size {0} is not in 1..={MAX_SLOT_SIZE}")]
    SlotSize(u32),
    /// Slot count not a power of two in 2..=[`MAX_SLOTS`].
    #[error("slot count {0} is not a power of two in 2..={MAX_SLOTS}")]
    Slots(u32),
    /// Holder count zero or above [`MAX_HOLDERS`].
    #[error("holder count {0} is not in 1..={MAX_HOLDERS}")]
    Holders(u32),
    /// The segments would exceed [`MAX_SEGMENT`].
    #[error("channel of {0} bytes exceeds the {MAX_SEGMENT}-byte limit")]
    TooLarge(usize),
}

const fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

impl Geometry {
    /// Checks every bound.
    pub fn validate(&self) -> Result<(), GeometryError> {
        if self.slot_size == 0 || self.slot_size > MAX_SLOT_SIZE {
            return Err(GeometryError::SlotSize(self.slot_size));
        }
        if self.slots < 2 || self.slots > MAX_SLOTS || !self.slots.is_power_of_two() {
            return Err(GeometryError::Slots(self.slots));
        }
        if self.max_holders == 0 || self.max_holders > MAX_HOLDERS {
            return Err(GeometryError::Holders(self.max_holders));
        }
        let len = self.sender_segment_len();
        if len > MAX_SEGMENT {
            return Err(GeometryError::TooLarge(len));
        }
        Ok(())
    }

    /// Bytes from one slot to the next: its header line, then its data
    /// rounded up to whole lines.
    pub fn stride(&self) -> usize {
        SLOT_HEADER + round_up(self.slot_size as usize, LINE)
    }

    /// Offset of the first holder record in either segment.
    pub const fn holders_offset(&self) -> usize {
        2 * LINE
    }

    /// Offset of the claim-word array in the sender segment.
    pub fn claims_offset(&self) -> usize {
        self.holders_offset() + self.max_holders as usize * HOLDER_RECORD
    }

    /// Offset of slot 0 (its header line) in the sender segment.
    pub fn slots_offset(&self) -> usize {
        round_up(self.claims_offset() + self.slots as usize * 8, LINE)
    }

    /// Offset of the free-stamp array in the receiver segment.
    pub fn free_offset(&self) -> usize {
        self.holders_offset() + self.max_holders as usize * HOLDER_RECORD
    }

    /// Length of the sender segment.
    pub fn sender_segment_len(&self) -> usize {
        self.slots_offset() + self.slots as usize * self.stride()
    }

    /// Length of the receiver segment.
    pub fn receiver_segment_len(&self) -> usize {
        round_up(self.free_offset() + self.slots as usize * 8, LINE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_shapes() {
        let ok = Geometry { slot_size: 64, slots: 1024, max_holders: 64 };
        assert!(ok.validate().is_ok());
        assert_eq!(ok.stride(), 128);
        assert_eq!(Geometry { slot_size: 65, ..ok }.stride(), 192);
        // The claim words end on a line; slot 0's header starts the next.
        assert_eq!(ok.slots_offset(), 128 + 64 * 64 + 1024 * 8);
        assert_eq!(ok.sender_segment_len(), ok.slots_offset() + 1024 * 128);
        // The examples in docs/memory.md.
        let lib = Geometry { slot_size: 256, slots: 256, max_holders: 4096 };
        assert_eq!((lib.sender_segment_len(), lib.receiver_segment_len()), (346_240, 264_320));
        assert_eq!(Geometry { slot_size: 1024, ..lib }.sender_segment_len(), 542_848);
        assert!(Geometry { slots: 1000, ..ok }.validate().is_err());
        assert!(Geometry { slot_size: 0, ..ok }.validate().is_err());
        assert!(Geometry { max_holders: 0, ..ok }.validate().is_err());
        let huge = Geometry { slot_size: MAX_SLOT_SIZE, slots: 1 << 10, max_holders: 1 };
        assert_eq!(huge.validate(), Err(GeometryError::TooLarge(huge.sender_segment_len())));
    }
}
