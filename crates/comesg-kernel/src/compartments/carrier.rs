//! The microkernel's side of a COCARRIER: the arena only it can write, one
//! delivery queue and one release queue per receiver, and the record of
//! which receiver holds which message.
//!
//! A send is a request to the kernel, which copies the sender's bytes with
//! `process_vm_readv` straight into the arena (the one copy), picks a
//! receiver with room (the least loaded), and queues a descriptor to it.
//! Receivers read messages in place through a read-only mapping and put the
//! message's number on their release queue when done; the kernel frees the
//! space when it collects the queue (on every send, and when asked). Because
//! the kernel knows which receiver got which message, a receiver can only
//! release its own messages: no one can make the kernel reuse space another
//! receiver is still reading.

use std::collections::{BTreeMap, HashMap, HashSet};

use comesg_proto::{CarrierSpec, KernelError, Name, Rights};
use comesg_shm::carrier::{ArenaWriter, Descriptor, DESCRIPTOR};
use comesg_shm::channel::{Geometry, Ring, RingError, Side};
use comesg_sys::mapping::{Access, Mapping};
use comesg_sys::{memfd, OwnedFd};

use super::arena::Arena;
use super::channel::{Attachment, Records};

fn internal(e: impl std::fmt::Display) -> KernelError {
    KernelError::Internal(e.to_string())
}

/// Bytes of a release record: message number.
pub const RELEASE: usize = 8;
/// Largest arena (16 GiB).
pub const MAX_ARENA: u64 = 16 << 30;
/// Most receivers of one carrier.
pub const MAX_RECEIVERS: u32 = 1024;

/// A ring whose segments the kernel keeps, with read-only reopens to hand out.
#[derive(Debug)]
struct KernelRing {
    s_rw: OwnedFd,
    s_ro: OwnedFd,
    r_rw: OwnedFd,
    r_ro: OwnedFd,
    ring: Ring,
}

impl KernelRing {
    fn create(name: &str, slot_size: u32, slots: u32) -> Result<KernelRing, KernelError> {
        let geo = Geometry { slot_size, slots, max_holders: 2 };
        geo.validate().map_err(|e| KernelError::InvalidArgument(e.to_string()))?;
        let s_rw = memfd::create_segment(name, geo.sender_segment_len() as u64).map_err(internal)?;
        let r_rw = memfd::create_segment(name, geo.receiver_segment_len() as u64).map_err(internal)?;
        let ring = Ring::new(
            geo,
            Mapping::map(&s_rw, geo.sender_segment_len(), Access::ReadWrite).map_err(internal)?,
            Mapping::map(&r_rw, geo.receiver_segment_len(), Access::ReadWrite).map_err(internal)?,
        )
        .map_err(internal)?;
        ring.initialize().map_err(internal)?;
        Ok(KernelRing {
            s_ro: memfd::reopen_read_only(&s_rw).map_err(internal)?,
            r_ro: memfd::reopen_read_only(&r_rw).map_err(internal)?,
            s_rw,
            r_rw,
            ring,
        })
    }

    fn dup(fd: &OwnedFd) -> Result<OwnedFd, KernelError> {
        fd.try_clone().map_err(internal)
    }
}

/// Holder numbers in the per-receiver rings: the receiver is 0 on its side,
/// the kernel 0 on the other (and 1 when it drains a dead receiver's queue).
const RECEIVER: u32 = 0;
const KERNEL: u32 = 0;
const KERNEL_DRAIN: u32 = 1;

#[derive(Debug)]
struct Receiver {
    delivery: KernelRing,
    release: KernelRing,
    /// Messages queued or delivered to it and not yet released.
    holds: HashSet<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Message {
    off: u64,
    len: u64,
    receiver: u32,
}

/// Message counts of a carrier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CarrierTotals {
    /// Messages sent.
    pub sent: u64,
    /// Bytes sent.
    pub sent_bytes: u64,
    /// Messages released by their receivers.
    pub released: u64,
    /// Messages whose receiver died holding them.
    pub lost: u64,
}

/// A COCARRIER as the kernel holds it.
#[derive(Debug)]
pub struct CarrierObject {
    spec: CarrierSpec,
    name: String,
    arena_ro: OwnedFd,
    writer: ArenaWriter,
    arena: Arena,
    ids: Records,
    receivers: BTreeMap<u32, Receiver>,
    messages: HashMap<u64, Message>,
    next_msg: u64,
    next_receiver: u32,
    totals: CarrierTotals,
    /// Messages freed since the last [`CarrierObject::take_freed`] (their
    /// attached handles must be released).
    freed: Vec<u64>,
}

impl CarrierObject {
    /// Creates the arena of a carrier for `name`.
    pub fn create(name: &Name, spec: CarrierSpec) -> Result<CarrierObject, KernelError> {
        let bad = |m: String| Err(KernelError::InvalidArgument(m));
        if spec.arena == 0 || spec.arena > MAX_ARENA || spec.arena > usize::MAX as u64 {
            return bad(format!("arena must be 1..={MAX_ARENA} bytes"));
        }
        if spec.max_message == 0 || spec.max_message > spec.arena {
            return bad("the largest message must be 1..=arena bytes".into());
        }
        if spec.receivers == 0 || spec.receivers > MAX_RECEIVERS {
            return bad(format!("receivers must be 1..={MAX_RECEIVERS}"));
        }
        Geometry { slot_size: DESCRIPTOR as u32, slots: spec.queue, max_holders: 2 }
            .validate()
            .map_err(|e| KernelError::InvalidArgument(e.to_string()))?;
        let (writer, arena_ro) =
            ArenaWriter::create(&format!("comesg{name}:arena"), spec.arena as usize).map_err(internal)?;
        Ok(CarrierObject {
            spec,
            name: name.to_string(),
            arena_ro,
            writer,
            arena: Arena::new(spec.arena),
            ids: Records::default(),
            receivers: BTreeMap::new(),
            messages: HashMap::new(),
            next_msg: 1,
            next_receiver: 0,
            totals: CarrierTotals::default(),
            freed: Vec::new(),
        })
    }

    /// The carrier's shape.
    pub fn spec(&self) -> CarrierSpec {
        self.spec
    }

    /// Arena bytes held by messages in flight.
    pub fn arena_used(&self) -> u64 {
        self.arena.used()
    }

    /// Counts so far.
    pub fn totals(&self) -> CarrierTotals {
        self.totals
    }

    /// A SEND handle needs nothing; a RECV handle gets a receiver number
    /// and its two queues.
    pub fn attach(&mut self, rights: Rights) -> Result<Attachment, KernelError> {
        let mut att = Attachment::default();
        if rights.contains(Rights::SEND) {
            att.send = Some(0);
        }
        if rights.contains(Rights::RECV) {
            let r = self
                .ids
                .take(self.spec.receivers)
                .ok_or_else(|| KernelError::Limit(format!("{} receivers of this carrier", self.spec.receivers)))?;
            let made = (|| {
                let release_slots = (self.spec.queue.saturating_mul(2)).clamp(16, 1 << 20);
                Ok::<_, KernelError>(Receiver {
                    delivery: KernelRing::create(
                        &format!("comesg{}:deliver", self.name),
                        DESCRIPTOR as u32,
                        self.spec.queue,
                    )?,
                    release: KernelRing::create(
                        &format!("comesg{}:release", self.name),
                        RELEASE as u32,
                        release_slots,
                    )?,
                    holds: HashSet::new(),
                })
            })();
            match made {
                Ok(rc) => {
                    self.receivers.insert(r, rc);
                    att.recv = Some(r);
                }
                Err(e) => {
                    self.ids.give_back(r);
                    return Err(e);
                }
            }
        }
        Ok(att)
    }

    /// The fds a handle receives (see [`comesg_proto::PortGrant`]).
    pub fn fds_for(&self, att: &Attachment) -> Result<Vec<OwnedFd>, KernelError> {
        let Some(rc) = att.recv.and_then(|r| self.receivers.get(&r)) else {
            return Ok(Vec::new());
        };
        Ok(vec![
            KernelRing::dup(&self.arena_ro)?,
            KernelRing::dup(&rc.delivery.s_ro)?,
            KernelRing::dup(&rc.delivery.r_rw)?,
            KernelRing::dup(&rc.release.s_rw)?,
            KernelRing::dup(&rc.release.r_ro)?,
        ])
    }

    /// Frees the space of every message receivers have released.
    pub fn collect(&mut self) {
        let mut buf = [0u8; RELEASE];
        for (&r, rc) in self.receivers.iter_mut() {
            loop {
                match rc.release.ring.try_recv(KERNEL, &mut buf) {
                    Ok(RELEASE) => {
                        let id = u64::from_le_bytes(buf);
                        // Only a message this receiver holds: a forged or
                        // repeated number frees nothing.
                        if rc.holds.remove(&id) {
                            if let Some(m) = self.messages.remove(&id).filter(|m| m.receiver == r) {
                                self.arena.free(m.off, m.len);
                                self.totals.released += 1;
                                self.freed.push(id);
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
    }

    /// The receiver with the fewest queued messages and room for one more,
    /// starting the search after the last one chosen.
    fn pick_receiver(&mut self) -> Option<u32> {
        let queue = self.spec.queue as u64;
        let start = self.next_receiver;
        let ids = self.receivers.range(start..).chain(self.receivers.range(..start));
        let (r, _) = ids
            .map(|(&r, rc)| (r, rc.delivery.ring.stats().depth))
            .filter(|&(_, depth)| depth < queue)
            .min_by_key(|&(_, depth)| depth)?;
        self.next_receiver = r.wrapping_add(1);
        Some(r)
    }

    /// Sends the `len` bytes at `addr` of process `pid` (with `attached`
    /// handles, which the caller keeps): one copy into the arena, then a
    /// descriptor to one receiver. Returns the message's number.
    pub fn send(&mut self, pid: u32, addr: u64, len: u64, attached: u16) -> Result<u64, KernelError> {
        if len > self.spec.max_message {
            return Err(KernelError::InvalidArgument(format!(
                "message of {len} bytes exceeds the carrier's {}-byte limit",
                self.spec.max_message
            )));
        }
        self.collect();
        let r = self.pick_receiver().ok_or_else(|| KernelError::WouldBlock("no receiver has room".into()))?;
        let off = self.arena.alloc(len).ok_or_else(|| KernelError::WouldBlock("the arena is full".into()))?;
        if let Err(e) = self.writer.copy_from_process(pid, addr, off, len) {
            self.arena.free(off, len);
            return Err(KernelError::InvalidArgument(format!("cannot read the message from the sender: {e}")));
        }
        let id = self.next_msg;
        self.next_msg += 1;
        let d = Descriptor { id, off, len, attached }.encode();
        let Some(rc) = self.receivers.get_mut(&r) else {
            self.arena.free(off, len);
            return Err(KernelError::Internal("receiver vanished".into()));
        };
        if let Err(e) = rc.delivery.ring.try_send(KERNEL, &d) {
            self.arena.free(off, len);
            return Err(match e {
                RingError::Full => KernelError::WouldBlock("receiver queue full".into()),
                e => KernelError::Internal(e.to_string()),
            });
        }
        rc.holds.insert(id);
        self.messages.insert(id, Message { off, len, receiver: r });
        self.totals.sent += 1;
        self.totals.sent_bytes += len;
        Ok(id)
    }

    /// The receiver that holds message `id`, if it is in flight.
    pub fn holder_of(&self, id: u64) -> Option<u32> {
        self.messages.get(&id).map(|m| m.receiver)
    }

    /// Messages freed since the last call.
    pub fn take_freed(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.freed)
    }

    /// Releases handles. A departed receiver's queued messages go to the
    /// other receivers where they have room; what it held (and what finds no
    /// room) is freed and counted lost. Returns the messages lost.
    pub fn detach_all(&mut self, atts: &[Attachment]) -> u64 {
        self.collect();
        let mut lost = 0;
        for r in atts.iter().filter_map(|a| a.recv) {
            let Some(mut rc) = self.receivers.remove(&r) else { continue };
            self.ids.give_back(r);
            // A descriptor it had claimed but not yet copied is gone with it.
            let _ = rc.delivery.ring.repair_holder(Side::Recv, RECEIVER);
            let mut requeue = Vec::new();
            let mut buf = [0u8; DESCRIPTOR];
            while let Ok(DESCRIPTOR) = rc.delivery.ring.try_recv(KERNEL_DRAIN, &mut buf) {
                requeue.push(buf);
            }
            for d in requeue {
                let id = u64::from_le_bytes(d[..8].try_into().unwrap_or_default());
                rc.holds.remove(&id);
                if !self.redeliver(id, &d) {
                    lost += self.drop_message(id);
                }
            }
            for id in rc.holds.drain() {
                lost += self.drop_message(id);
            }
        }
        self.totals.lost += lost;
        lost
    }

    fn redeliver(&mut self, id: u64, d: &[u8; DESCRIPTOR]) -> bool {
        let Some(to) = self.pick_receiver() else { return false };
        let Some(rc) = self.receivers.get_mut(&to) else { return false };
        if rc.delivery.ring.try_send(KERNEL, d).is_err() {
            return false;
        }
        rc.holds.insert(id);
        if let Some(m) = self.messages.get_mut(&id) {
            m.receiver = to;
        }
        true
    }

    fn drop_message(&mut self, id: u64) -> u64 {
        match self.messages.remove(&id) {
            Some(m) => {
                self.arena.free(m.off, m.len);
                self.freed.push(id);
                1
            }
            None => 0,
        }
    }
}
