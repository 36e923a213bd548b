//! Handles in flight: references that COCARRIER messages hold on other
//! objects between a send and the receiver's take (or the message's end).
//!
//! Each is a real reference in the port table, held by the pseudo-client
//! [`IN_FLIGHT`], so reference counts stay right while a handle travels:
//! the object cannot be destroyed under a message that carries it, and a
//! message dropped unread gives its references back.

use std::collections::HashMap;

use comesg_proto::{HandleId, Rights};

use super::ipc::{ClientId, ObjectId};

/// The holder of references in flight.
pub const IN_FLIGHT: ClientId = ClientId(u64::MAX);

/// One reference a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    /// The object.
    pub obj: ObjectId,
    /// The in-flight reference's handle number (under [`IN_FLIGHT`]).
    pub handle: HandleId,
    /// The rights the receiver will get.
    pub rights: Rights,
}

/// References carried by messages, by (carrier, message number).
#[derive(Debug, Default)]
pub struct InFlight {
    carried: HashMap<(ObjectId, u64), Vec<Carried>>,
    next: u64,
}

impl InFlight {
    /// A fresh handle number for an in-flight reference.
    pub fn next_handle(&mut self) -> HandleId {
        self.next += 1;
        HandleId(self.next)
    }

    /// Records what message `msg` of `carrier` carries.
    pub fn insert(&mut self, carrier: ObjectId, msg: u64, refs: Vec<Carried>) {
        if !refs.is_empty() {
            self.carried.insert((carrier, msg), refs);
        }
    }

    /// Takes what message `msg` of `carrier` carries (for a take, or because
    /// the message ended).
    pub fn take(&mut self, carrier: ObjectId, msg: u64) -> Vec<Carried> {
        self.carried.remove(&(carrier, msg)).unwrap_or_default()
    }

    /// Takes one reference message `msg` of `carrier` carries, if any is left.
    pub fn take_one(&mut self, carrier: ObjectId, msg: u64) -> Option<Carried> {
        let v = self.carried.get_mut(&(carrier, msg))?;
        let c = v.pop();
        if v.is_empty() {
            self.carried.remove(&(carrier, msg));
        }
        c
    }

    /// Takes everything messages of `carrier` carry (it was destroyed).
    pub fn take_all(&mut self, carrier: ObjectId) -> Vec<Carried> {
        let keys: Vec<_> = self.carried.keys().filter(|(c, _)| *c == carrier).copied().collect();
        keys.into_iter().flat_map(|k| self.carried.remove(&k).unwrap_or_default()).collect()
    }
}
