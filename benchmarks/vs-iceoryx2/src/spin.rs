//! The hardware limit: a raw shared-memory spin ping-pong, one word each
//! way carrying the sequence number, no payload.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use comesg_sys::mapping::Mapping;

use crate::endpoint::Endpoint;

/// Size of the shared segment.
pub const SEGMENT: usize = 4096;
/// The two words (indices in 64-bit words), two cache lines apart so that
/// the adjacent-line prefetcher does not pair them.
const WORDS: [usize; 2] = [0, 16];

/// One end of the spin link.
pub struct Spin {
    seg: Mapping,
    out: usize,
    inp: usize,
    seen: u64,
}

impl Spin {
    /// The end over `seg` (`first`: the parent's).
    pub fn new(seg: Mapping, first: bool) -> Spin {
        let (out, inp) = if first { (WORDS[0], WORDS[1]) } else { (WORDS[1], WORDS[0]) };
        Spin { seg, out, inp, seen: 0 }
    }
    fn word(&self, i: usize) -> &AtomicU64 {
        &self.seg.words()[i]
    }
    /// Waits for the next value on the incoming word (values are sequence
    /// numbers plus one, so zero means nothing came yet).
    fn wait(&mut self) -> u64 {
        loop {
            let v = self.word(self.inp).load(Ordering::Acquire);
            if v != self.seen {
                self.seen = v;
                return v;
            }
            std::hint::spin_loop();
        }
    }
}

impl Endpoint for Spin {
    fn send(&mut self, data: &[u8], _loan: bool) -> io::Result<()> {
        let seq = crate::endpoint::header(data);
        self.word(self.out).store(seq + 1, Ordering::Release);
        Ok(())
    }
    fn recv(&mut self, _buf: &mut [u8], _loan: bool) -> io::Result<u64> {
        Ok(self.wait() - 1)
    }
    fn echo(&mut self) -> io::Result<()> {
        let v = self.wait();
        self.word(self.out).store(v, Ordering::Release);
        Ok(())
    }
}
