//! Rights carried by a handle.

use serde::{Deserialize, Serialize};

/// What a handle may do. Rights can be narrowed when a handle is passed on,
/// never widened.
///
/// ```
/// use comesg_proto::Rights;
/// let both = Rights::SEND | Rights::RECV;
/// assert!(both.contains(Rights::SEND));
/// assert!(Rights::SEND.is_subset_of(both));
/// assert!(!both.is_subset_of(Rights::RECV));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Rights(u8);

impl Rights {
    /// No rights.
    pub const NONE: Rights = Rights(0);
    /// May send messages.
    pub const SEND: Rights = Rights(1);
    /// May receive messages.
    pub const RECV: Rights = Rights(2);
    /// Every right a port handle can carry.
    pub const ALL: Rights = Rights(3);

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Rights from raw bits; unknown bits are dropped.
    pub const fn from_bits_truncate(bits: u8) -> Rights {
        Rights(bits & Self::ALL.0)
    }

    /// Whether every right in `other` is in `self`.
    pub const fn contains(self, other: Rights) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether `self` grants nothing beyond `other`.
    pub const fn is_subset_of(self, other: Rights) -> bool {
        other.contains(self)
    }

    /// Whether no right is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for Rights {
    type Output = Rights;
    fn bitor(self, rhs: Rights) -> Rights {
        Rights(self.0 | rhs.0)
    }
}

impl std::ops::BitAnd for Rights {
    type Output = Rights;
    fn bitand(self, rhs: Rights) -> Rights {
        Rights(self.0 & rhs.0)
    }
}

impl std::fmt::Display for Rights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = if self.contains(Rights::SEND) { "s" } else { "-" };
        let r = if self.contains(Rights::RECV) { "r" } else { "-" };
        write!(f, "{s}{r}")
    }
}
