//! Encoding of the per-slot words of the COCHANNEL ring.
//!
//! Positions count up from `slots` (not 0) so that "the previous lap" of every
//! slot is a valid position from the start.
//!
//! A slot's **full stamp** (sender segment, written only by senders):
//!
//! | bits | meaning |
//! |---|---|
//! | bit 63 set | `CLAIMED` (claim word only): a sender is writing the slot; bits 0..32 are its holder index, bits 32..63 the low bits of the position |
//! | bit 62 set | `SKIP`: position `(bits 0..62) - 1` carries no message (cancelled loan or sender died) |
//! | neither | `COMPLETE`: position `value - 1` holds a message |
//!
//! A slot's **free stamp** (receiver segment, written only by receivers):
//!
//! | bits | meaning |
//! |---|---|
//! | bit 63 set | `CLAIMED`: a receiver is reading the slot; bits 0..32 are its holder index |
//! | clear | the slot may be written for position `value` |

/// A sender or receiver holds the slot.
pub const CLAIM_BIT: u64 = 1 << 63;
/// Bits of the claimed position a sender's claim word records (above the
/// holder index), so that repair can tell which lap the claim was for.
const CLAIM_POS_MASK: u64 = (1 << 31) - 1;
/// The position carries no message.
pub const SKIP_BIT: u64 = 1 << 62;
const VALUE_MASK: u64 = SKIP_BIT - 1;

/// Stamp of a slot held by holder `h`.
pub const fn claimed(h: u32) -> u64 {
    CLAIM_BIT | h as u64
}

/// Claim word of a sender, holder `h`, claiming position `pos`.
pub const fn claimed_at(h: u32, pos: u64) -> u64 {
    CLAIM_BIT | (pos & CLAIM_POS_MASK) << 32 | h as u64
}

/// Whether a sender's claim word was written for position `pos`.
pub const fn claim_is_for(word: u64, pos: u64) -> bool {
    (word >> 32) & CLAIM_POS_MASK == pos & CLAIM_POS_MASK
}

/// Whether a sender's claim word was written for a later lap of the same
/// slot than position `pos` (ring of `cap` slots, a power of two below
/// 2^30), as far as the position bits it records can tell.
pub const fn claim_is_after(word: u64, pos: u64, cap: u64) -> bool {
    let d = ((word >> 32) & CLAIM_POS_MASK).wrapping_sub(pos & CLAIM_POS_MASK) & CLAIM_POS_MASK;
    d != 0 && d < (1 << 30) && d & (cap - 1) == 0
}

/// Full stamp: position `pos` holds a message.
pub const fn complete(pos: u64) -> u64 {
    pos.wrapping_add(1) & VALUE_MASK
}

/// Full stamp: position `pos` carries no message.
pub const fn skipped(pos: u64) -> u64 {
    SKIP_BIT | complete(pos)
}

/// A decoded full stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// Held by a sender with this holder index.
    Claimed(u32),
    /// Position done: `skip` says whether it carries a message.
    Done {
        /// The position.
        pos: u64,
        /// No message at this position.
        skip: bool,
    },
}

/// Decodes a full stamp.
pub const fn decode_full(word: u64) -> Full {
    if word & CLAIM_BIT != 0 {
        Full::Claimed(word as u32)
    } else {
        Full::Done { pos: (word & VALUE_MASK).wrapping_sub(1) & VALUE_MASK, skip: word & SKIP_BIT != 0 }
    }
}

/// A decoded free stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Free {
    /// Held by a receiver with this holder index.
    Claimed(u32),
    /// The slot may be written for this position.
    For(u64),
}

/// Decodes a free stamp.
pub const fn decode_free(word: u64) -> Free {
    if word & CLAIM_BIT != 0 {
        Free::Claimed(word as u32)
    } else {
        Free::For(word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn stamps_round_trip(pos in 0u64..(1 << 61), h in any::<u32>()) {
            prop_assert_eq!(decode_full(complete(pos)), Full::Done { pos, skip: false });
            prop_assert_eq!(decode_full(skipped(pos)), Full::Done { pos, skip: true });
            prop_assert_eq!(decode_full(claimed(h)), Full::Claimed(h));
            prop_assert_eq!(decode_full(claimed_at(h, pos)), Full::Claimed(h));
            prop_assert!(claim_is_for(claimed_at(h, pos), pos));
            prop_assert!(!claim_is_for(claimed_at(h, pos), pos + 1));
            prop_assert!(claim_is_after(claimed_at(h, pos + 1024), pos, 1024));
            prop_assert!(claim_is_after(claimed_at(h, pos + 3 * 1024), pos, 1024));
            prop_assert!(!claim_is_after(claimed_at(h, pos), pos, 1024));
            prop_assert!(!claim_is_after(claimed_at(h, pos), pos + 1024, 1024));
            prop_assert!(!claim_is_after(claimed_at(h, pos + 1), pos, 1024));
            prop_assert_eq!(decode_free(claimed(h)), Free::Claimed(h));
            prop_assert_eq!(decode_free(pos), Free::For(pos));
            prop_assert_ne!(complete(pos), skipped(pos));
        }
    }
}
