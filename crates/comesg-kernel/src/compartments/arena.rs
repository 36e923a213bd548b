//! Space in a COCARRIER's arena: first-fit allocation of line-aligned
//! ranges, with neighbours merged on free.

use std::collections::BTreeMap;

/// Allocation granule: ranges start on a cache line.
const GRAIN: u64 = 64;

/// The free ranges of an arena of `size` bytes.
#[derive(Debug)]
pub struct Arena {
    size: u64,
    /// offset -> length, disjoint, never adjacent (merged).
    free: BTreeMap<u64, u64>,
    used: u64,
}

impl Arena {
    /// An arena with every byte free.
    pub fn new(size: u64) -> Arena {
        let size = size / GRAIN * GRAIN;
        let mut free = BTreeMap::new();
        if size > 0 {
            free.insert(0, size);
        }
        Arena { size, free, used: 0 }
    }

    /// Bytes allocated now.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// The granule-rounded length a message of `len` bytes takes.
    pub fn footprint(len: u64) -> u64 {
        len.max(1).div_ceil(GRAIN) * GRAIN
    }

    /// Takes `footprint(len)` bytes; returns their offset.
    pub fn alloc(&mut self, len: u64) -> Option<u64> {
        let need = Self::footprint(len);
        let (&off, &have) = self.free.iter().find(|(_, &l)| l >= need)?;
        self.free.remove(&off);
        if have > need {
            self.free.insert(off + need, have - need);
        }
        self.used += need;
        Some(off)
    }

    /// Gives back the range an `alloc(len)` at `off` took.
    pub fn free(&mut self, off: u64, len: u64) {
        let mut start = off;
        let mut size = Self::footprint(len);
        debug_assert!(start + size <= self.size);
        self.used = self.used.saturating_sub(size);
        if let Some((&p, &pl)) = self.free.range(..start).next_back() {
            if p + pl == start {
                self.free.remove(&p);
                start = p;
                size += pl;
            }
        }
        if let Some(&nl) = self.free.get(&(start + size)) {
            self.free.remove(&(start + size));
            size += nl;
        }
        self.free.insert(start, size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn allocations_never_overlap_and_freeing_all_restores_the_arena(
            ops in proptest::collection::vec((1u64..5000, any::<bool>()), 1..200)
        ) {
            let mut a = Arena::new(64 * 1024);
            let mut live: Vec<(u64, u64)> = Vec::new();
            for (len, free_one) in ops {
                if free_one && !live.is_empty() {
                    let (o, l) = live.swap_remove(len as usize % live.len());
                    a.free(o, l);
                } else if let Some(o) = a.alloc(len) {
                    let end = o + Arena::footprint(len);
                    prop_assert!(end <= 64 * 1024);
                    for &(p, pl) in &live {
                        prop_assert!(end <= p || p + Arena::footprint(pl) <= o, "overlap");
                    }
                    live.push((o, len));
                }
            }
            for (o, l) in live {
                a.free(o, l);
            }
            prop_assert_eq!(a.used(), 0);
            prop_assert_eq!(a.free.len(), 1);
            prop_assert_eq!(a.alloc(64 * 1024), Some(0));
        }
    }
}
