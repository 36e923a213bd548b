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
use comesg_shm::carrier::{ArenaWriter, Descriptor, DESCRIPTOR, SEALED};
use comesg_shm::channel::{Geometry, Ring, RingError, Side};
use comesg_sys::bell::Bell;
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
/// Most messages queued per receiver.
pub const MAX_QUEUE: u32 = 4096;

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
    fn create(name: &str, slot_size: u32, slots: u32, bell: &Bell) -> Result<KernelRing, KernelError> {
        let geo = Geometry { slot_size, slots, max_holders: 2 };
        geo.validate().map_err(|e| KernelError::InvalidArgument(e.to_string()))?;
        let s_rw = memfd::create_segment(name, geo.sender_segment_len() as u64).map_err(internal)?;
        let r_rw = memfd::create_segment(name, geo.receiver_segment_len() as u64).map_err(internal)?;
        let mut ring = Ring::new(
            geo,
            Mapping::map(&s_rw, geo.sender_segment_len(), Access::ReadWrite).map_err(internal)?,
            Mapping::map(&r_rw, geo.receiver_segment_len(), Access::ReadWrite).map_err(internal)?,
        )
        .map_err(internal)?;
        ring.initialize().map_err(internal)?;
        ring.set_bell(bell.try_clone().map_err(internal)?);
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
    /// Bytes those messages take: their arena space, or for messages built
    /// in place their pages (which the kernel keeps alive through the fd).
    held_bytes: u64,
    /// How many of them were built in place (each is an fd in the kernel).
    held_sealed: u32,
}

/// Bytes a message counts against its receiver's share: its arena space,
/// or the pages of its sealed memfd.
fn footprint(off: u64, len: u64) -> u64 {
    if off == SEALED {
        len.max(1).div_ceil(4096) * 4096
    } else {
        Arena::footprint(len)
    }
}

#[derive(Debug, Clone, Copy)]
struct Message {
    off: u64,
    len: u64,
    receiver: u32,
    attached: u16,
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
    /// Messages built in place: their sealed memfds.
    sealed: HashMap<u64, OwnedFd>,
    /// Refuse copy sends as if `process_vm_readv` were not allowed (the
    /// environment variable `COMESG_KERNEL_REFUSE_PEER_READ`, for testing
    /// the senders' fallback).
    refuse_reads: bool,
    bell: Bell,
    /// Live SEND handles and SEND attaches ever (receivers' pollers read
    /// them, through their delivery rings, for "no more senders").
    senders: (u32, u32),
}

impl CarrierObject {
    /// Creates the arena of a carrier for `name`.
    pub fn create(name: &Name, spec: CarrierSpec) -> Result<CarrierObject, KernelError> {
        let bad = |m: String| Err(KernelError::InvalidArgument(m));
        if spec.arena == 0 || spec.arena > MAX_ARENA || spec.arena > usize::MAX as u64 {
            return bad(format!("arena must be 1..={MAX_ARENA} bytes"));
        }
        if spec.arena < 64 {
            return bad("arena must be at least 64 bytes".into());
        }
        if spec.queue > MAX_QUEUE {
            return bad(format!("queue must be at most {MAX_QUEUE}"));
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
            sealed: HashMap::new(),
            refuse_reads: std::env::var_os("COMESG_KERNEL_REFUSE_PEER_READ").is_some(),
            bell: Bell::new().map_err(internal)?,
            senders: (0, 0),
        })
    }

    /// The carrier's shape.
    pub fn spec(&self) -> CarrierSpec {
        self.spec
    }

    /// Bytes of shared memory it holds (its segments' sizes; pages are
    /// allocated on first touch, so this is what it may come to use).
    ///
    /// Counts the arena, and the delivery and release rings of every
    /// receiver the carrier may have (`spec.receivers`), made or not yet:
    /// charged to the creator, who chose both.
    pub fn memory(&self) -> u64 {
        let release_slots = self.spec.queue.saturating_mul(2).clamp(16, 1 << 20);
        let ring = |slot_size: usize, slots: u32| {
            let g = Geometry { slot_size: slot_size as u32, slots, max_holders: 2 };
            (g.sender_segment_len() + g.receiver_segment_len()) as u64
        };
        let per_receiver = ring(DESCRIPTOR, self.spec.queue) + ring(RELEASE, release_slots);
        memfd::size(&self.arena_ro).unwrap_or(0) + u64::from(self.spec.receivers) * per_receiver
    }

    /// The carrier's bell.
    pub fn bell(&self) -> &Bell {
        &self.bell
    }

    /// Writes the live sender count into every receiver's delivery ring.
    fn publish_senders(&self) {
        for rc in self.receivers.values() {
            let _ = rc.delivery.ring.set_live(Side::Send, self.senders.0, self.senders.1);
        }
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
                        &self.bell,
                    )?,
                    release: KernelRing::create(
                        &format!("comesg{}:release", self.name),
                        RELEASE as u32,
                        release_slots,
                        &self.bell,
                    )?,
                    holds: HashSet::new(),
                    held_bytes: 0,
                    held_sealed: 0,
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
        if att.send.is_some() {
            self.senders = (self.senders.0 + 1, self.senders.1.saturating_add(1));
        }
        self.publish_senders();
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

    /// Frees the space of every message receivers have released. Reads at
    /// most one ring's worth of records per receiver per call, so a receiver
    /// that keeps refilling its queue cannot hold the kernel here.
    pub fn collect(&mut self) {
        let mut buf = [0u8; RELEASE];
        let mut released = Vec::new();
        for (&r, rc) in self.receivers.iter_mut() {
            let cap = rc.release.ring.geometry().slots;
            for _ in 0..cap {
                match rc.release.ring.try_recv(KERNEL, &mut buf) {
                    Ok(RELEASE) => released.push((r, u64::from_le_bytes(buf))),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        for (r, id) in released {
            // Only a message this receiver holds: a forged, repeated or
            // other receiver's number frees nothing.
            if self.messages.get(&id).is_some_and(|m| m.receiver == r) {
                if let Some(rc) = self.receivers.get_mut(&r) {
                    rc.holds.remove(&id);
                }
                if let Some(m) = self.messages.remove(&id) {
                    self.free_space(id, m);
                    self.totals.released += 1;
                    self.freed.push(id);
                }
            }
        }
    }

    /// Arena bytes one receiver may hold: an equal share of the arena (but
    /// always room for one largest message), so that a receiver that takes
    /// messages and never releases them cannot starve the others.
    fn quota(&self) -> u64 {
        let share = self.spec.arena / self.receivers.len().max(1) as u64;
        // A largest message of either kind always fits a receiver that
        // holds nothing (one built in place counts whole pages).
        let largest = Arena::footprint(self.spec.max_message).max(footprint(SEALED, self.spec.max_message));
        share.max(largest)
    }

    /// Receivers with room (in their queue and their arena quota for `need`
    /// more bytes, and for a message built in place, holding fewer than
    /// `queue` such messages: each costs the kernel an fd), least loaded
    /// first (by the depth their ring shows, which a receiver can misstate:
    /// the claim below is the check), starting after the last one chosen.
    fn candidates(&self, need: u64, sealed: bool) -> Vec<u32> {
        let queue = self.spec.queue as u64;
        let quota = self.quota();
        let start = self.next_receiver;
        let ids = self.receivers.range(start..).chain(self.receivers.range(..start));
        let mut c: Vec<(u64, usize, u32)> = ids
            .enumerate()
            .filter(|(_, (_, rc))| rc.held_bytes.saturating_add(need) <= quota)
            .filter(|(_, (_, rc))| !sealed || u64::from(rc.held_sealed) < queue)
            .map(|(k, (&r, rc))| (rc.delivery.ring.stats().depth, k, r))
            .filter(|&(depth, _, _)| depth < queue)
            .collect();
        c.sort();
        c.into_iter().map(|(_, _, r)| r).collect()
    }

    /// Sends the `len` bytes at `addr` of process `pid` (with `attached`
    /// handles, which the caller keeps): one copy into the arena, then a
    /// descriptor to one receiver. Returns the message's number.
    pub fn send(&mut self, pid: u32, addr: u64, len: u64, attached: u16) -> Result<u64, KernelError> {
        self.check_len(len)?;
        let (r, mut claim) = self.claim_delivery(Arena::footprint(len), false)?;
        let cancel = |this: &Self, claim| {
            if let Some(rc) = this.receivers.get(&r) {
                let _ = rc.delivery.ring.cancel(claim);
            }
        };
        let Some(off) = self.arena.alloc(len) else {
            cancel(self, claim);
            return Err(KernelError::WouldBlock("the arena is full".into()));
        };
        let copied = if self.refuse_reads {
            Err(std::io::Error::from_raw_os_error(1))
        } else {
            self.writer.copy_from_process(pid, addr, off, len)
        };
        if let Err(e) = copied {
            self.arena.free(off, len);
            cancel(self, claim);
            return Err(match e.raw_os_error() {
                // Not allowed (ptrace rules) rather than a bad address.
                Some(1) | Some(3) => KernelError::CannotRead(e.to_string()),
                _ => KernelError::InvalidArgument(format!("cannot read the message from the sender: {e}")),
            });
        }
        let id = self.next_msg;
        self.next_msg += 1;
        let d = Descriptor { id, off, len, attached }.encode();
        let Some(rc) = self.receivers.get_mut(&r) else {
            self.arena.free(off, len);
            return Err(KernelError::Internal("receiver vanished".into()));
        };
        let published =
            rc.delivery.ring.write(&mut claim, &d).and_then(|()| rc.delivery.ring.publish(claim, DESCRIPTOR));
        if let Err(e) = published {
            self.arena.free(off, len);
            return Err(match e {
                RingError::Full => KernelError::WouldBlock("receiver queue full".into()),
                e => KernelError::Internal(e.to_string()),
            });
        }
        rc.holds.insert(id);
        rc.held_bytes += Arena::footprint(len);
        self.messages.insert(id, Message { off, len, receiver: r, attached });
        self.totals.sent += 1;
        self.totals.sent_bytes += len;
        Ok(id)
    }

    fn free_space(&mut self, id: u64, m: Message) {
        if m.off == SEALED {
            self.sealed.remove(&id);
        } else {
            self.arena.free(m.off, m.len);
        }
        if let Some(rc) = self.receivers.get_mut(&m.receiver) {
            rc.held_bytes = rc.held_bytes.saturating_sub(footprint(m.off, m.len));
            if m.off == SEALED {
                rc.held_sealed = rc.held_sealed.saturating_sub(1);
            }
        }
    }

    /// Queues a message built in place: `fd` must be a memfd of `len`
    /// bytes sealed against writing and resizing. No copy at all.
    pub fn send_sealed(&mut self, fd: OwnedFd, len: u64, attached: u16) -> Result<u64, KernelError> {
        self.check_len(len)?;
        if !memfd::is_immutable(&fd) || memfd::size(&fd).ok() != Some(len) {
            return Err(KernelError::InvalidArgument(
                "a sealed send needs a memfd of the message's size sealed with F_SEAL_WRITE, GROW and SHRINK".into(),
            ));
        }
        let need = footprint(SEALED, len);
        let (r, mut claim) = self.claim_delivery(need, true)?;
        let id = self.next_msg;
        self.next_msg += 1;
        let d = Descriptor { id, off: SEALED, len, attached }.encode();
        let Some(rc) = self.receivers.get_mut(&r) else {
            return Err(KernelError::Internal("receiver vanished".into()));
        };
        rc.delivery
            .ring
            .write(&mut claim, &d)
            .and_then(|()| rc.delivery.ring.publish(claim, DESCRIPTOR))
            .map_err(|e| KernelError::Internal(e.to_string()))?;
        rc.holds.insert(id);
        rc.held_bytes += need;
        rc.held_sealed += 1;
        self.messages.insert(id, Message { off: SEALED, len, receiver: r, attached });
        self.sealed.insert(id, fd);
        self.totals.sent += 1;
        self.totals.sent_bytes += len;
        Ok(id)
    }

    /// The sealed memfd of a message built in place, for its receiver.
    pub fn sealed_fd(&self, id: u64) -> Result<OwnedFd, KernelError> {
        let fd =
            self.sealed.get(&id).ok_or_else(|| KernelError::InvalidArgument(format!("message {id} is not sealed")))?;
        fd.try_clone().map_err(internal)
    }

    fn check_len(&self, len: u64) -> Result<(), KernelError> {
        if len > self.spec.max_message {
            return Err(KernelError::InvalidArgument(format!(
                "message of {len} bytes exceeds the carrier's {}-byte limit",
                self.spec.max_message
            )));
        }
        Ok(())
    }

    /// Collects releases, then claims a delivery slot of the least loaded
    /// receiver that has one. Claiming first passes over a receiver whose
    /// ring is full (or whose shared state lies) before any copy is made.
    fn claim_delivery(
        &mut self,
        need: u64,
        sealed: bool,
    ) -> Result<(u32, comesg_shm::channel::SendClaim), KernelError> {
        self.collect();
        for r in self.candidates(need, sealed) {
            if let Some(rc) = self.receivers.get(&r) {
                if let Ok(c) = rc.delivery.ring.try_claim_send(KERNEL) {
                    self.next_receiver = r.wrapping_add(1);
                    return Ok((r, c));
                }
            }
        }
        Err(KernelError::WouldBlock("no receiver has room".into()))
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
            // Its queued descriptors go to others; trust only ids the kernel
            // itself queued to it (and still holds for it), rebuilt from the
            // kernel's records, at most one ring's worth.
            let mut requeue = Vec::new();
            let mut buf = [0u8; DESCRIPTOR];
            for _ in 0..rc.delivery.ring.geometry().slots {
                match rc.delivery.ring.try_recv(KERNEL_DRAIN, &mut buf) {
                    Ok(DESCRIPTOR) => {
                        let id = Descriptor::decode(&buf).map_or(0, |d| d.id);
                        let ours = self.messages.get(&id).is_some_and(|m| m.receiver == r);
                        if ours && rc.holds.remove(&id) {
                            requeue.push(id);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            for id in requeue {
                if !self.redeliver(id) {
                    lost += self.drop_message(id);
                }
            }
            for id in rc.holds.drain() {
                lost += self.drop_message(id);
            }
        }
        self.totals.lost += lost;
        let gone = atts.iter().filter(|a| a.send.is_some()).count() as u32;
        self.senders.0 = self.senders.0.saturating_sub(gone);
        self.publish_senders();
        lost
    }

    fn redeliver(&mut self, id: u64) -> bool {
        let Some(m) = self.messages.get(&id).copied() else { return false };
        let need = footprint(m.off, m.len);
        for to in self.candidates(need, m.off == SEALED) {
            let Some(rc) = self.receivers.get_mut(&to) else { continue };
            let Ok(mut claim) = rc.delivery.ring.try_claim_send(KERNEL) else { continue };
            let d = Descriptor { id, off: m.off, len: m.len, attached: m.attached }.encode();
            if rc
                .delivery
                .ring
                .write(&mut claim, &d)
                .and_then(|()| rc.delivery.ring.publish(claim, DESCRIPTOR))
                .is_err()
            {
                continue;
            }
            rc.holds.insert(id);
            rc.held_bytes += need;
            rc.held_sealed += u32::from(m.off == SEALED);
            if let Some(mm) = self.messages.get_mut(&id) {
                mm.receiver = to;
            }
            return true;
        }
        false
    }

    fn drop_message(&mut self, id: u64) -> u64 {
        match self.messages.remove(&id) {
            Some(m) => {
                self.free_space(id, m);
                self.freed.push(id);
                1
            }
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carrier() -> CarrierObject {
        let spec = CarrierSpec { arena: 1 << 16, max_message: 4096, receivers: 4, queue: 4 };
        CarrierObject::create(&Name::try_from("/t").unwrap(), spec).unwrap()
    }

    #[test]
    fn a_queued_message_released_early_is_never_handed_to_another_receiver() {
        let mut c = carrier();
        let a = c.attach(Rights::RECV).unwrap().recv.unwrap();
        let msg = vec![7u8; 1000];
        let id = c.send(comesg_sys::process::pid(), msg.as_ptr() as u64, msg.len() as u64, 0).unwrap();
        assert_eq!(c.holder_of(id), Some(a));
        let b = c.attach(Rights::RECV).unwrap().recv.unwrap();
        // A releases the message while it is still queued to it (it never
        // received it), then leaves: the space is freed once, and the stale
        // descriptor in A's queue is not passed on to B.
        c.receivers[&a].release.ring.try_send(RECEIVER, &id.to_le_bytes()).unwrap();
        c.collect();
        assert_eq!((c.arena_used(), c.holder_of(id)), (0, None));
        let lost = c.detach_all(&[Attachment { recv: Some(a), ..Default::default() }]);
        assert_eq!(lost, 0);
        assert_eq!(c.receivers[&b].delivery.ring.stats().depth, 0, "nothing redelivered");
        // A release naming another receiver's message frees nothing.
        let id2 = c.send(comesg_sys::process::pid(), msg.as_ptr() as u64, 10, 0).unwrap();
        assert_eq!(c.holder_of(id2), Some(b));
        let x = c.attach(Rights::RECV).unwrap().recv.unwrap();
        c.receivers[&x].release.ring.try_send(RECEIVER, &id2.to_le_bytes()).unwrap();
        c.collect();
        assert_eq!(c.holder_of(id2), Some(b));
        assert_eq!(c.arena_used(), 64);
    }

    #[test]
    fn a_sealed_send_needs_a_sealed_memfd_of_its_length() {
        let mut c = carrier();
        let r = c.attach(Rights::RECV).unwrap().recv.unwrap();
        let open = memfd::create_sealable("m", 100).unwrap();
        assert!(c.send_sealed(open, 100, 0).is_err(), "not sealed");
        let fd = memfd::create_sealable("m", 100).unwrap();
        memfd::seal_immutable(&fd).unwrap();
        assert!(c.send_sealed(fd.try_clone().unwrap(), 99, 0).is_err(), "wrong length");
        let id = c.send_sealed(fd, 100, 0).unwrap();
        assert_eq!((c.holder_of(id), c.arena_used()), (Some(r), 0), "no arena space: no copy");
        assert!(c.sealed_fd(id).is_ok());
        c.receivers[&r].release.ring.try_send(RECEIVER, &id.to_le_bytes()).unwrap();
        c.collect();
        assert!(c.sealed_fd(id).is_err(), "released with its message");
    }

    #[test]
    fn a_receiver_that_never_releases_gets_only_its_share_of_the_arena() {
        let mut c = carrier(); // 64 KiB arena, messages up to 4 KiB, queue 4
        let a = c.attach(Rights::RECV).unwrap().recv.unwrap();
        let b = c.attach(Rights::RECV).unwrap().recv.unwrap();
        let msg = vec![1u8; 4096];
        let send = |c: &mut CarrierObject| c.send(comesg_sys::process::pid(), msg.as_ptr() as u64, 4096, 0);
        // A takes every message it is given and never releases: once it
        // holds its half, the rest goes to B.
        let mut to_a = 0;
        for _ in 0..30 {
            let id = send(&mut c).unwrap();
            if c.holder_of(id) == Some(a) {
                to_a += 1;
                let mut buf = [0u8; DESCRIPTOR];
                c.receivers[&a].delivery.ring.try_recv(RECEIVER, &mut buf).unwrap();
            } else {
                let mut buf = [0u8; DESCRIPTOR];
                c.receivers[&b].delivery.ring.try_recv(RECEIVER, &mut buf).unwrap();
                c.receivers[&b]
                    .release
                    .ring
                    .try_send(RECEIVER, &Descriptor::decode(&buf).unwrap().id.to_le_bytes())
                    .unwrap();
            }
        }
        assert_eq!(to_a, 8, "32 KiB of 4 KiB messages, then no more");
        assert_eq!(c.receivers[&a].held_bytes, 32 << 10);
    }

    #[test]
    fn a_receiver_that_never_releases_gets_a_bounded_number_of_messages_built_in_place() {
        let mut c = carrier(); // queue 4
        let r = c.attach(Rights::RECV).unwrap().recv.unwrap();
        let sealed = || {
            let fd = memfd::create_sealable("m", 10).unwrap();
            memfd::seal_immutable(&fd).unwrap();
            fd
        };
        let mut ids = Vec::new();
        // It takes each descriptor off its queue and keeps the message:
        // each is an fd in the kernel, so only `queue` of them are allowed.
        for _ in 0..4 {
            ids.push(c.send_sealed(sealed(), 10, 0).unwrap());
            let mut buf = [0u8; DESCRIPTOR];
            c.receivers[&r].delivery.ring.try_recv(RECEIVER, &mut buf).unwrap();
        }
        assert_eq!(c.receivers[&r].delivery.ring.stats().depth, 0, "its queue is empty");
        assert!(matches!(c.send_sealed(sealed(), 10, 0), Err(KernelError::WouldBlock(_))), "a fifth is held back");
        assert_eq!((c.receivers[&r].held_sealed, c.receivers[&r].held_bytes), (4, 4 * 4096));
        // Releasing one makes room for one.
        c.receivers[&r].release.ring.try_send(RECEIVER, &ids[0].to_le_bytes()).unwrap();
        assert!(c.send_sealed(sealed(), 10, 0).is_ok());
        assert_eq!(c.receivers[&r].held_sealed, 4);
    }

    #[test]
    fn a_largest_message_built_in_place_always_fits_an_idle_receiver() {
        // Shares smaller than a page, and a largest message that is not a
        // whole number of pages.
        let spec = CarrierSpec { arena: 8192, max_message: 5000, receivers: 4, queue: 4 };
        let mut c = CarrierObject::create(&Name::try_from("/t").unwrap(), spec).unwrap();
        let a = c.attach(Rights::RECV).unwrap().recv.unwrap();
        let b = c.attach(Rights::RECV).unwrap().recv.unwrap();
        for _ in 0..2 {
            let fd = memfd::create_sealable("m", 5000).unwrap();
            memfd::seal_immutable(&fd).unwrap();
            let id = c.send_sealed(fd, 5000, 0).expect("an idle receiver takes a largest message");
            assert!(matches!(c.holder_of(id), Some(r) if r == a || r == b));
        }
    }

    #[test]
    fn queued_messages_of_a_departed_receiver_go_to_another() {
        let mut c = carrier();
        let a = c.attach(Rights::RECV).unwrap().recv.unwrap();
        let msg = [1u8; 100];
        let id = c.send(comesg_sys::process::pid(), msg.as_ptr() as u64, 100, 0).unwrap();
        let b = c.attach(Rights::RECV).unwrap().recv.unwrap();
        assert_eq!(c.detach_all(&[Attachment { recv: Some(a), ..Default::default() }]), 0);
        assert_eq!(c.holder_of(id), Some(b));
        assert_eq!(c.receivers[&b].delivery.ring.stats().depth, 1);
        // Bad sends: too long, unreadable address.
        assert!(c.send(comesg_sys::process::pid(), msg.as_ptr() as u64, 5000, 0).is_err());
        assert!(c.send(comesg_sys::process::pid(), u64::MAX - 4, 100, 0).is_err());
        assert_eq!(c.arena_used(), 128);
    }
}
