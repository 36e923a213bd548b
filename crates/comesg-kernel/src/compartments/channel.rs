//! The microkernel's side of a COCHANNEL: it creates the two segments, keeps
//! the only writable file descriptions, hands out per-right fds, assigns
//! holder records, and repairs the ring when a holder goes away.

use std::collections::BTreeSet;

use comesg_proto::{ChannelSpec, KernelError, Name, Rights};
use comesg_shm::channel::{Geometry, Ring, RingStats, Side};
use comesg_sys::bell::Bell;
use comesg_sys::mapping::{Access, Mapping};
use comesg_sys::{memfd, OwnedFd};

/// Holder records assigned to one handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Attachment {
    /// Record on the sending side, with SEND.
    pub send: Option<u32>,
    /// Record on the receiving side, with RECV.
    pub recv: Option<u32>,
    /// For a service: the caller's number (SEND handles).
    pub caller: Option<u32>,
}

/// Message and byte totals of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Messages sent.
    pub sent_msgs: u64,
    /// Bytes sent.
    pub sent_bytes: u64,
    /// Messages received.
    pub received_msgs: u64,
    /// Bytes received.
    pub received_bytes: u64,
    /// Messages lost to holders that died mid-operation.
    pub lost: u64,
}

/// Free-list allocator of holder record indices for one side.
#[derive(Debug, Default)]
pub(crate) struct Records {
    free: Vec<u32>,
    next: u32,
    live: BTreeSet<u32>,
    /// Records handed out ever (saturating).
    attaches: u32,
}

impl Records {
    pub(crate) fn take(&mut self, max: u32) -> Option<u32> {
        let h = match self.free.pop() {
            Some(h) => h,
            None if self.next < max => {
                self.next += 1;
                self.next - 1
            }
            None => return None,
        };
        self.live.insert(h);
        self.attaches = self.attaches.saturating_add(1);
        Some(h)
    }

    pub(crate) fn give_back(&mut self, h: u32) {
        if self.live.remove(&h) {
            self.free.push(h);
        }
    }
}

/// A COCHANNEL as the kernel holds it.
#[derive(Debug)]
pub struct ChannelObject {
    spec: ChannelSpec,
    sender_rw: OwnedFd,
    sender_ro: OwnedFd,
    receiver_rw: OwnedFd,
    receiver_ro: OwnedFd,
    ring: Ring,
    bell: Bell,
    send_records: Records,
    recv_records: Records,
    departed: Totals,
}

fn internal(e: impl std::fmt::Display) -> KernelError {
    KernelError::Internal(e.to_string())
}

impl ChannelObject {
    /// Creates and initializes the segments of a channel for `name`.
    pub fn create(name: &Name, spec: ChannelSpec, max_holders: u32) -> Result<ChannelObject, KernelError> {
        let geo = Geometry { slot_size: spec.slot_size, slots: spec.slots, max_holders };
        geo.validate().map_err(|e| KernelError::InvalidArgument(e.to_string()))?;
        let s_len = geo.sender_segment_len();
        let r_len = geo.receiver_segment_len();
        let sender_rw = memfd::create_segment(&format!("comesg{name}:send"), s_len as u64).map_err(internal)?;
        let receiver_rw = memfd::create_segment(&format!("comesg{name}:recv"), r_len as u64).map_err(internal)?;
        let sender_ro = memfd::reopen_read_only(&sender_rw).map_err(internal)?;
        let receiver_ro = memfd::reopen_read_only(&receiver_rw).map_err(internal)?;
        let mut ring = Ring::new(
            geo,
            Mapping::map(&sender_rw, s_len, Access::ReadWrite).map_err(internal)?,
            Mapping::map(&receiver_rw, r_len, Access::ReadWrite).map_err(internal)?,
        )
        .map_err(internal)?;
        ring.initialize().map_err(internal)?;
        let bell = Bell::new().map_err(internal)?;
        ring.set_bell(bell.try_clone().map_err(internal)?);
        Ok(ChannelObject {
            spec,
            sender_rw,
            sender_ro,
            receiver_rw,
            receiver_ro,
            ring,
            bell,
            send_records: Records::default(),
            recv_records: Records::default(),
            departed: Totals::default(),
        })
    }

    /// The channel's shape.
    pub fn spec(&self) -> ChannelSpec {
        self.spec
    }

    /// Bytes of shared memory it holds (its segments' sizes; pages are
    /// allocated on first touch, so this is what it may come to use).
    pub fn memory(&self) -> u64 {
        memfd::size(&self.sender_rw).unwrap_or(0) + memfd::size(&self.receiver_rw).unwrap_or(0)
    }

    /// The channel's bell (every holder gets it; pollers watch it).
    pub fn bell(&self) -> &Bell {
        &self.bell
    }

    /// Writes the live holder counts into the segments (pollers read them
    /// for "no more senders / receivers"), and grants each side's lease to
    /// its holder while it has only one (see `comesg_shm::channel::lease`).
    /// Callers run this after any repair and before they reply, so a
    /// newcomer sees the lease revoked and no departed holder still claims.
    fn publish_live(&self) {
        for (side, records) in [(Side::Send, &self.send_records), (Side::Recv, &self.recv_records)] {
            let _ = self.ring.set_live(side, records.live.len() as u32, records.attaches);
            let sole = match records.live.len() {
                1 => records.live.first().copied(),
                _ => None,
            };
            let _ = self.ring.set_lease(side, sole);
        }
    }

    /// Holder records per side.
    pub fn max_holders(&self) -> u32 {
        self.ring.geometry().max_holders
    }

    /// Assigns holder records for a new handle with `rights`.
    pub fn attach(&mut self, rights: Rights) -> Result<Attachment, KernelError> {
        let max = self.max_holders();
        let full = || KernelError::Limit(format!("{max} holders per side of one channel"));
        let mut att = Attachment::default();
        if rights.contains(Rights::SEND) {
            let h = self.send_records.take(max).ok_or_else(full)?;
            let _ = self.ring.reset_holder(Side::Send, h);
            att.send = Some(h);
        }
        if rights.contains(Rights::RECV) {
            match self.recv_records.take(max) {
                Some(h) => {
                    let _ = self.ring.reset_holder(Side::Recv, h);
                    att.recv = Some(h);
                }
                None => {
                    if let Some(h) = att.send {
                        self.send_records.give_back(h);
                    }
                    return Err(full());
                }
            }
        }
        self.publish_live();
        Ok(att)
    }

    /// The two fds a handle with `rights` receives: sender segment, receiver
    /// segment; each writable only for the side the rights allow.
    pub fn fds_for(&self, rights: Rights) -> Result<Vec<OwnedFd>, KernelError> {
        let s = if rights.contains(Rights::SEND) { &self.sender_rw } else { &self.sender_ro };
        let r = if rights.contains(Rights::RECV) { &self.receiver_rw } else { &self.receiver_ro };
        Ok(vec![s.try_clone().map_err(internal)?, r.try_clone().map_err(internal)?])
    }

    /// Releases a handle's records: finishes any slot it left claimed
    /// (counting the message as lost), keeps its counters in the totals, and
    /// frees the records for reuse. Returns the messages lost.
    pub fn detach(&mut self, att: Attachment) -> u64 {
        self.detach_all(&[att])
    }

    /// [`ChannelObject::detach`] for many handles at once (a client that
    /// dies holding many), with one pass over the ring per side.
    pub fn detach_all(&mut self, atts: &[Attachment]) -> u64 {
        let mut dead = (Vec::new(), Vec::new());
        for att in atts {
            if let Some(h) = att.send {
                let c = self.ring.holder_counters(Side::Send, h);
                // Peer-written counters: never trust them not to overflow.
                self.departed.sent_msgs = self.departed.sent_msgs.wrapping_add(c.msgs);
                self.departed.sent_bytes = self.departed.sent_bytes.wrapping_add(c.bytes);
                dead.0.push(h);
            }
            if let Some(h) = att.recv {
                let c = self.ring.holder_counters(Side::Recv, h);
                self.departed.received_msgs = self.departed.received_msgs.wrapping_add(c.msgs);
                self.departed.received_bytes = self.departed.received_bytes.wrapping_add(c.bytes);
                dead.1.push(h);
            }
        }
        let mut lost = 0;
        for (side, holders) in [(Side::Send, &dead.0), (Side::Recv, &dead.1)] {
            if holders.is_empty() {
                continue;
            }
            lost += self.ring.repair_holders(side, holders).unwrap_or(0);
            for &h in holders {
                let _ = self.ring.reset_holder(side, h);
                match side {
                    Side::Send => self.send_records.give_back(h),
                    Side::Recv => self.recv_records.give_back(h),
                }
            }
        }
        self.departed.lost = self.departed.lost.wrapping_add(lost);
        self.publish_live();
        lost
    }

    /// Totals so far, departed holders and live ones together.
    pub fn totals(&self) -> Totals {
        let mut t = self.departed;
        // Receivers first: a message is received after it is sent, so read
        // this way round the snapshot shows more received than sent only for
        // the few messages whose sender has published but not yet counted.
        for &h in &self.recv_records.live {
            let c = self.ring.holder_counters(Side::Recv, h);
            t.received_msgs = t.received_msgs.wrapping_add(c.msgs);
            t.received_bytes = t.received_bytes.wrapping_add(c.bytes);
        }
        for &h in &self.send_records.live {
            let c = self.ring.holder_counters(Side::Send, h);
            t.sent_msgs = t.sent_msgs.wrapping_add(c.msgs);
            t.sent_bytes = t.sent_bytes.wrapping_add(c.bytes);
        }
        t
    }

    /// Ring positions and depth.
    pub fn ring_stats(&self) -> RingStats {
        self.ring.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_detach_reuses_records_and_limits_them() {
        let name = Name::try_from("/t").unwrap();
        let mut ch = ChannelObject::create(&name, ChannelSpec { slot_size: 8, slots: 4 }, 2).unwrap();
        let a = ch.attach(Rights::ALL).unwrap();
        let b = ch.attach(Rights::SEND).unwrap();
        assert!(matches!(ch.attach(Rights::SEND), Err(KernelError::Limit(_))));
        ch.detach(b);
        let c = ch.attach(Rights::SEND).unwrap();
        assert_eq!(c.send, b.send);
        assert_eq!(ch.fds_for(Rights::RECV).unwrap().len(), 2);
        ch.detach(a);
        ch.detach(c);
        assert_eq!(ch.totals(), Totals::default());
    }
}
