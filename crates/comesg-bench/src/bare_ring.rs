//! The bare-ring baseline: Vyukov's bounded MPMC queue in shared memory,
//! one each way, with nothing else (no rights, no crash repair, no
//! sleeping, no statistics). It is what the COCHANNEL data path builds on,
//! so the ratio between the two, measured in the same run, is the price of
//! everything COCHANNEL adds.
//!
//! Each slot is two cache lines: the sequence word and the length, then up
//! to 64 bytes of message (the benchmark's small size). A waiting receiver
//! polls and prefetches as a COCHANNEL receiver does.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::*};

use comesg_sys::mapping::Mapping;

use crate::link::Link;

/// Slots per ring.
const SLOTS: usize = 1024;
/// 64-bit words per slot (128 bytes).
const SLOT_WORDS: usize = 16;
/// Words before the slots: `tail` on the first line, `head` on the second.
const HEADER_WORDS: usize = 16;
const RING_WORDS: usize = HEADER_WORDS + SLOTS * SLOT_WORDS;
/// Largest message.
pub const MAX: usize = 64;
/// Bytes of the shared segment (two rings).
pub const SEGMENT: usize = 2 * RING_WORDS * 8;

/// Polls of an empty ring made back to back before the rest pause (the
/// values COCHANNEL waits with, in `comesg_shm::channel::blocking`).
const TIGHT_POLLS: u32 = 256;
/// Polls after which a waiting receiver prefetches the slot's second line.
const PREFETCH_AFTER: u32 = 8;

/// One end: sends on one ring, receives on the other.
pub struct BareRingLink {
    seg: Mapping,
    out: usize,
    inp: usize,
}

impl BareRingLink {
    /// Writes both rings' initial sequence numbers into a fresh segment.
    pub fn initialize(seg: &Mapping) {
        let w = seg.words();
        for ring in 0..2 {
            for i in 0..SLOTS {
                w[ring * RING_WORDS + HEADER_WORDS + i * SLOT_WORDS].store(i as u64, Relaxed);
            }
        }
    }

    /// The end that sends on ring 0 (`first`) or ring 1.
    pub fn new(seg: Mapping, first: bool) -> BareRingLink {
        let (out, inp) = if first { (0, RING_WORDS) } else { (RING_WORDS, 0) };
        BareRingLink { seg, out, inp }
    }

    fn words(&self) -> &[AtomicU64] {
        self.seg.words()
    }
}

fn slot(ring: usize, pos: u64) -> usize {
    ring + HEADER_WORDS + (pos as usize % SLOTS) * SLOT_WORDS
}

impl Link for BareRingLink {
    fn send(&mut self, msg: &[u8]) -> io::Result<()> {
        if msg.len() > MAX {
            return Err(io::Error::other("the bare ring takes at most 64 bytes"));
        }
        let w = self.words();
        let tail = &w[self.out];
        loop {
            let pos = tail.load(Relaxed);
            let s = slot(self.out, pos);
            let seq = w[s].load(Acquire);
            if seq == pos {
                if tail.compare_exchange_weak(pos, pos + 1, Relaxed, Relaxed).is_ok() {
                    w[s + 1].store(msg.len() as u64, Relaxed);
                    for (k, chunk) in msg.chunks(8).enumerate() {
                        let mut b = [0u8; 8];
                        b[..chunk.len()].copy_from_slice(chunk);
                        w[s + 2 + k].store(u64::from_le_bytes(b), Relaxed);
                    }
                    w[s].store(pos + 1, Release);
                    return Ok(());
                }
            } else {
                std::hint::spin_loop();
            }
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let w = self.words();
        let head = &w[self.inp + 8];
        let mut polls = 0u32;
        loop {
            let pos = head.load(Relaxed);
            let s = slot(self.inp, pos);
            let seq = w[s].load(Acquire);
            if seq == pos + 1 {
                if head.compare_exchange_weak(pos, pos + 1, Relaxed, Relaxed).is_ok() {
                    let len = (w[s + 1].load(Relaxed) as usize).min(MAX).min(buf.len());
                    for (k, chunk) in buf[..len].chunks_mut(8).enumerate() {
                        let b = w[s + 2 + k].load(Relaxed).to_le_bytes();
                        chunk.copy_from_slice(&b[..chunk.len()]);
                    }
                    w[s].store(pos + SLOTS as u64, Release);
                    return Ok(());
                }
            } else {
                // Wait as a COCHANNEL receiver does, so that the two compare
                // on the ring alone: poll back to back at first, and fetch
                // the slot's second line while polling its first.
                polls = polls.saturating_add(1);
                if polls >= PREFETCH_AFTER {
                    comesg_sys::hint::prefetch::<false>(w[s + 8].as_ptr() as *const u8);
                }
                if polls > TIGHT_POLLS {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use comesg_sys::mapping::Access;

    #[test]
    fn messages_go_through_in_order_and_wrap_around() {
        let fd = comesg_sys::memfd::create_segment("bare", SEGMENT as u64).unwrap();
        let m = Mapping::map(&fd, SEGMENT, Access::ReadWrite).unwrap();
        BareRingLink::initialize(&m);
        let mut a = BareRingLink::new(m, true);
        let mut b = BareRingLink::new(Mapping::map(&fd, SEGMENT, Access::ReadWrite).unwrap(), false);
        let mut buf = [0u8; 64];
        for i in 0..3 * SLOTS as u64 {
            let msg: Vec<u8> = (0..(i % 65) as u8).map(|k| k ^ i as u8).collect();
            a.send(&msg).unwrap();
            b.recv(&mut buf[..msg.len()]).unwrap();
            assert_eq!(&buf[..msg.len()], &msg[..], "message {i}");
            b.send(&buf[..msg.len()]).unwrap();
            a.recv(&mut buf[..msg.len()]).unwrap();
        }
    }
}
