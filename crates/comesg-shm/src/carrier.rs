//! The COCARRIER arena: memory only the microkernel can write, that
//! receivers read in place.
//!
//! The arena is a memfd the kernel maps read-write once and then seals with
//! `F_SEAL_FUTURE_WRITE`: from then on no process (the kernel included) can
//! make another writable mapping or `write(2)` to it, through any file
//! description, even one reopened read-write through `/proc`. Receivers get
//! a read-only file description and map it read-only. The kernel copies each
//! message into a free range with `process_vm_readv` (the one copy) and
//! never writes that range again until the receiver it gave the message to
//! has released it, so a receiver's view of a message it holds never
//! changes.
#![allow(unsafe_code)]

use std::io;

use comesg_sys::mapping::{Access, Mapping};
use comesg_sys::{memfd, OwnedFd};

/// Messages at least this long are copied by two threads.
const PARALLEL_COPY: usize = 4 << 20;

/// The offset a descriptor gives for a message built in place (in a sealed
/// memfd of its own, fetched from the kernel), not in the arena.
pub const SEALED: u64 = u64::MAX;

/// Bytes of a delivery descriptor: message number, offset, length.
pub const DESCRIPTOR: usize = 24;

/// Where a message lies in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// The kernel's number for the message.
    pub id: u64,
    /// Offset in the arena.
    pub off: u64,
    /// Length (below 2^48).
    pub len: u64,
    /// Handles that came with the message (taken with a kernel request).
    pub attached: u16,
}

/// Bits of the length word that hold the length; the top 16 hold the
/// number of attached handles.
const LEN_MASK: u64 = (1 << 48) - 1;

impl Descriptor {
    /// Encodes it.
    pub fn encode(&self) -> [u8; DESCRIPTOR] {
        let mut d = [0u8; DESCRIPTOR];
        d[..8].copy_from_slice(&self.id.to_le_bytes());
        d[8..16].copy_from_slice(&self.off.to_le_bytes());
        let word = (self.len & LEN_MASK) | (self.attached as u64) << 48;
        d[16..].copy_from_slice(&word.to_le_bytes());
        d
    }

    /// Decodes one (any 24 bytes decode; ranges are checked on use).
    pub fn decode(b: &[u8]) -> Option<Descriptor> {
        let b: &[u8; DESCRIPTOR] = b.try_into().ok()?;
        let w = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        Some(Descriptor { id: w(0), off: w(8), len: w(16) & LEN_MASK, attached: (w(16) >> 48) as u16 })
    }
}

/// The kernel's side: the one writable mapping.
#[derive(Debug)]
pub struct ArenaWriter {
    map: Mapping,
    _fd: OwnedFd,
}

impl ArenaWriter {
    /// Creates a sealed arena of `size` bytes; returns the writer and a
    /// read-only file description to hand to receivers.
    pub fn create(name: &str, size: usize) -> io::Result<(ArenaWriter, OwnedFd)> {
        let fd = memfd::create_arena(name, size as u64)?;
        let map = Mapping::map(&fd, size, Access::ReadWrite)?;
        memfd::seal_writes(&fd)?;
        let ro = memfd::reopen_read_only(&fd)?;
        Ok((ArenaWriter { map, _fd: fd }, ro))
    }

    /// Bytes of the arena.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the arena has no bytes.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Copies `len` bytes at `addr` of process `pid` to `off` in the arena.
    /// The caller (the kernel's allocator) owns that range: no message in
    /// flight lies there.
    pub fn copy_from_process(&mut self, pid: u32, addr: u64, off: u64, len: u64) -> io::Result<()> {
        let end = off.checked_add(len).filter(|&e| e <= self.map.len() as u64);
        if end.is_none() {
            return Err(io::Error::other("arena range out of bounds"));
        }
        // SAFETY: the range is inside the mapping (checked above). This is
        // the only writable mapping of a sealed memfd, `&mut self` makes the
        // borrow unique in this process, and other processes map it
        // read-only: nothing else writes these bytes while the slice lives.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr().add(off as usize), len as usize) };
        if dst.len() < PARALLEL_COPY {
            return comesg_sys::remote::read_process(pid, addr, dst);
        }
        // One process_vm_readv stream copies about 5 GB/s here: split a big
        // message in two and copy the halves on two threads.
        let half = dst.len() / 2;
        let second_addr = addr.checked_add(half as u64).ok_or_else(|| io::Error::from_raw_os_error(14))?;
        let parallel = std::thread::scope(|sc| {
            let (a, b) = dst.split_at_mut(half);
            let first =
                std::thread::Builder::new().spawn_scoped(sc, move || comesg_sys::remote::read_process(pid, addr, a));
            match first {
                Ok(t) => {
                    let second = comesg_sys::remote::read_process(pid, second_addr, b);
                    Some(t.join().unwrap_or_else(|_| Err(io::Error::other("copy thread panicked"))).and(second))
                }
                Err(_) => None,
            }
        });
        // No thread to be had (a process limit): copy it all here.
        parallel.unwrap_or_else(|| comesg_sys::remote::read_process(pid, addr, dst))
    }
}

/// A receiver's read-only view of the arena.
#[derive(Debug)]
pub struct ArenaReader {
    map: Mapping,
}

impl ArenaReader {
    /// Maps the arena read-only from the fd the kernel handed out.
    pub fn map(fd: &OwnedFd, size: usize) -> io::Result<ArenaReader> {
        Ok(ArenaReader { map: Mapping::map(fd, size, Access::ReadOnly)? })
    }

    /// The bytes of message `d`, if its range lies in the arena.
    pub fn message(&self, d: &Descriptor) -> Option<&[u8]> {
        let end = d.off.checked_add(d.len)?;
        if end > self.map.len() as u64 {
            return None;
        }
        // SAFETY: the range is inside the mapping. The kernel, the only
        // writer, does not write a message's range until the receiver that
        // holds it has released it, and no process can write it otherwise
        // (the memfd is sealed), so the bytes do not change while borrowed.
        Some(unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(d.off as usize), d.len as usize) })
    }

    /// The mapping, for tests that try to write through it.
    pub fn mapping(&self) -> &Mapping {
        &self.map
    }
}

/// A message built in place: a read-only mapping of a memfd sealed against
/// writing, so its bytes cannot change while it is mapped.
#[derive(Debug)]
pub struct SealedView {
    map: Option<Mapping>,
}

impl SealedView {
    /// Maps `fd` (which must be sealed against writing and resizing, and
    /// `len` bytes long) read-only.
    pub fn map(fd: &OwnedFd, len: usize) -> io::Result<SealedView> {
        if !memfd::is_immutable(fd) || memfd::size(fd)? != len as u64 {
            return Err(io::Error::other("message memfd is not sealed, or not of its length"));
        }
        let map = if len == 0 { None } else { Some(Mapping::map(fd, len, Access::ReadOnly)?) };
        Ok(SealedView { map })
    }

    /// The message's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.map {
            // SAFETY: the mapping covers `len` bytes of a memfd sealed with
            // F_SEAL_WRITE: no process can write it, so the bytes do not
            // change while borrowed.
            Some(m) => unsafe { std::slice::from_raw_parts(m.as_ptr(), m.len()) },
            None => &[],
        }
    }
}

/// A sender's message under construction, in a fresh memfd of its own.
#[derive(Debug)]
pub struct SealedBuilder {
    fd: OwnedFd,
    map: Option<Mapping>,
}

impl SealedBuilder {
    /// A fresh memfd of `len` bytes, mapped writable.
    pub fn create(len: usize) -> io::Result<SealedBuilder> {
        let fd = memfd::create_sealable("comesg-message", len as u64)?;
        let map = if len == 0 { None } else { Some(Mapping::map(&fd, len, Access::ReadWrite)?) };
        Ok(SealedBuilder { fd, map })
    }

    /// The message's bytes, to write.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match &self.map {
            // SAFETY: the memfd is fresh and private to this builder until
            // `seal` (nobody else has it); `&mut self` makes the borrow
            // unique.
            Some(m) => unsafe { std::slice::from_raw_parts_mut(m.as_ptr(), m.len()) },
            None => &mut [],
        }
    }

    /// The message's length.
    pub fn bytes_len(&self) -> u64 {
        self.map.as_ref().map_or(0, |m| m.len() as u64)
    }

    /// Unmaps the writable mapping and seals the memfd against writing and
    /// resizing, for good; returns it, ready to send.
    pub fn seal(mut self) -> io::Result<OwnedFd> {
        drop(self.map.take());
        memfd::seal_immutable(&self.fd)?;
        Ok(self.fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_message_cannot_be_changed_once_sealed() {
        let mut b = SealedBuilder::create(8192).unwrap();
        b.bytes_mut().fill(3);
        let fd = b.seal().unwrap();
        assert!(rustix::io::write(&fd, b"x").is_err(), "write(2) refused");
        assert!(Mapping::map(&fd, 8192, Access::ReadWrite).is_err(), "writable mapping refused");
        let v = SealedView::map(&fd, 8192).unwrap();
        assert!(v.bytes().iter().all(|&x| x == 3));
        let unsealed = memfd::create_sealable("x", 16).unwrap();
        assert!(SealedView::map(&unsealed, 16).is_err(), "a receiver refuses an unsealed memfd");
    }

    #[test]
    fn descriptors_round_trip() {
        let d = Descriptor { id: 9, off: SEALED, len: (1 << 40) + 3, attached: 7 };
        assert_eq!(Descriptor::decode(&d.encode()), Some(d));
    }
}
