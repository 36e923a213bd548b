//! Watches: which connections follow which objects, and the events waiting
//! to go out to them. A plain state machine like the other compartments:
//! the request handler records events here, the server sends them.

use std::collections::{BTreeSet, HashMap};

use comesg_proto::{EventKind, KernelError, Name, WatchEvent};

use super::ipc::{ClientId, ObjectId};

/// Most objects one connection may watch.
pub const MAX_WATCHES: usize = 256;

/// Who watches what, and the events not yet sent.
#[derive(Debug, Default)]
pub struct Watches {
    by_object: HashMap<ObjectId, BTreeSet<ClientId>>,
    /// Per watcher: the objects it watches and the names they had.
    by_client: HashMap<ClientId, HashMap<ObjectId, Name>>,
    outbox: Vec<(ClientId, WatchEvent)>,
}

impl Watches {
    /// `client` follows `obj`, known to it as `name`.
    pub fn watch(&mut self, client: ClientId, obj: ObjectId, name: Name) -> Result<(), KernelError> {
        let mine = self.by_client.entry(client).or_default();
        if mine.len() >= MAX_WATCHES && !mine.contains_key(&obj) {
            return Err(KernelError::Limit(format!("{MAX_WATCHES} watches per connection")));
        }
        mine.insert(obj, name);
        self.by_object.entry(obj).or_default().insert(client);
        Ok(())
    }

    /// Whether anyone watches `obj` (so callers can skip the bookkeeping).
    pub fn watched(&self, obj: ObjectId) -> bool {
        self.by_object.contains_key(&obj)
    }

    /// Queues `what` for every watcher of `obj`.
    pub fn emit(&mut self, obj: ObjectId, what: EventKind) {
        let Some(watchers) = self.by_object.get(&obj) else { return };
        for &c in watchers {
            if let Some(name) = self.by_client.get(&c).and_then(|m| m.get(&obj)) {
                self.outbox.push((c, WatchEvent { name: name.clone(), what }));
            }
        }
    }

    /// `obj` is destroyed: tells its watchers, and forgets them.
    pub fn destroyed(&mut self, obj: ObjectId) {
        self.emit(obj, EventKind::Destroyed);
        for c in self.by_object.remove(&obj).unwrap_or_default() {
            if let Some(m) = self.by_client.get_mut(&c) {
                m.remove(&obj);
            }
        }
    }

    /// A watcher's connection has gone.
    pub fn client_gone(&mut self, client: ClientId) {
        for (obj, _) in self.by_client.remove(&client).unwrap_or_default() {
            if let Some(set) = self.by_object.get_mut(&obj) {
                set.remove(&client);
                if set.is_empty() {
                    self.by_object.remove(&obj);
                }
            }
        }
        self.outbox.retain(|(c, _)| *c != client);
    }

    /// The events to send, oldest first.
    pub fn take(&mut self) -> Vec<(ClientId, WatchEvent)> {
        std::mem::take(&mut self.outbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_reach_watchers_until_the_object_or_the_watcher_goes() {
        let mut w = Watches::default();
        let (a, b, o) = (ClientId(1), ClientId(2), ObjectId(7));
        let n = Name::try_from("/x").unwrap();
        w.watch(a, o, n.clone()).unwrap();
        w.watch(b, o, n.clone()).unwrap();
        w.emit(o, EventKind::NoSenders);
        assert_eq!(w.take().len(), 2);
        w.client_gone(b);
        w.destroyed(o);
        let out = w.take();
        assert_eq!(out, vec![(a, WatchEvent { name: n, what: EventKind::Destroyed })]);
        assert!(!w.watched(o));
        w.emit(o, EventKind::NoSenders);
        assert!(w.take().is_empty());
    }
}
