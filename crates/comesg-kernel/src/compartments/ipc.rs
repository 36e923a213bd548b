//! The port table: objects, their holders and reference counts.
//!
//! Every handle is one reference. An object is destroyed when its last
//! reference goes, unless it is persistent and still named; a persistent
//! object lives with no holders until it is unlinked.

use std::collections::{BTreeMap, HashMap};

use comesg_proto::{HandleId, KernelError, Name, Rights};

use super::carrier::CarrierObject;
use super::channel::{Attachment, ChannelObject};
use super::comutex::MutexObject;
use super::pipe::PipeObject;
use super::service::ServiceObject;

/// An object's number in the table (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub u64);

/// A connection's number (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

/// One reference to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HolderInfo {
    /// Holding process.
    pub pid: u32,
    /// Rights of the handle.
    pub rights: Rights,
    /// Its records in the channel's segments.
    pub attachment: Attachment,
}

/// What an object is.
#[derive(Debug)]
pub enum Body {
    /// A COCHANNEL.
    Channel(Box<ChannelObject>),
    /// A comutex (and the shared object it guards).
    Mutex(MutexObject),
    /// A coservice.
    Service(Box<ServiceObject>),
    /// A COPIPE.
    Pipe(Box<PipeObject>),
    /// A COCARRIER.
    Carrier(Box<CarrierObject>),
}

impl Body {
    /// The object's bell: an eventfd every holder receives (the last fd of
    /// a grant), rung when the object's state changes while someone polls.
    pub fn bell(&self) -> &comesg_sys::bell::Bell {
        match self {
            Body::Channel(ch) => ch.bell(),
            Body::Mutex(m) => m.bell(),
            Body::Service(s) => s.bell(),
            Body::Pipe(p) => p.bell(),
            Body::Carrier(c) => c.bell(),
        }
    }

    /// Bytes of shared memory the object holds.
    pub fn memory(&self) -> u64 {
        match self {
            Body::Channel(ch) => ch.memory(),
            Body::Mutex(m) => m.memory(),
            Body::Service(s) => s.memory(),
            Body::Pipe(p) => p.memory(),
            Body::Carrier(c) => c.memory(),
        }
    }
}

/// A port object.
#[derive(Debug)]
pub struct Object {
    /// Its name, until unlinked.
    pub name: Option<Name>,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
    /// Lives with no holders until unlinked.
    pub persistent: bool,
    /// The object itself.
    pub body: Body,
    holders: BTreeMap<(ClientId, HandleId), HolderInfo>,
}

impl Object {
    /// A new object with no holders.
    pub fn new(name: Name, uid: u32, gid: u32, mode: u32, persistent: bool, body: Body) -> Object {
        Object { name: Some(name), uid, gid, mode: mode & 0o777, persistent, body, holders: BTreeMap::new() }
    }

    /// Number of references.
    pub fn refs(&self) -> usize {
        self.holders.len()
    }

    /// Every reference.
    pub fn holders(&self) -> impl Iterator<Item = &HolderInfo> {
        self.holders.values()
    }

    /// The references one client holds.
    pub fn holders_of(&self, client: ClientId) -> impl Iterator<Item = (HandleId, &HolderInfo)> {
        self.holders.range((client, HandleId(0))..=(client, HandleId(u64::MAX))).map(|((_, h), i)| (*h, i))
    }

    /// Handles with SEND and with RECV, not counting `skip`'s (the
    /// references messages carry in flight).
    pub fn sides(&self, skip: ClientId) -> (usize, usize) {
        let mut out = (0, 0);
        for ((c, _), h) in &self.holders {
            if *c != skip {
                out.0 += usize::from(h.rights.contains(Rights::SEND));
                out.1 += usize::from(h.rights.contains(Rights::RECV));
            }
        }
        out
    }

    fn doomed(&self) -> bool {
        self.holders.is_empty() && (!self.persistent || self.name.is_none())
    }
}

/// What releasing a reference did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Released {
    /// Messages the holder left half-done, now counted lost.
    pub lost: u64,
    /// The object was destroyed; if it was still named, this is the name
    /// that is now dead.
    pub destroyed: Option<Option<Name>>,
    /// A service's provider went: the service is dead (its name should be
    /// freed for a new provider).
    pub provider_gone: bool,
}

/// The table of objects.
#[derive(Debug, Default)]
pub struct Ports {
    objects: HashMap<ObjectId, Object>,
    next: u64,
}

impl Ports {
    /// Every live object's id.
    pub fn ids(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.objects.keys().copied()
    }

    /// Adds an object.
    pub fn insert(&mut self, obj: Object) -> ObjectId {
        self.next += 1;
        let id = ObjectId(self.next);
        self.objects.insert(id, obj);
        id
    }

    /// Looks an object up.
    pub fn get(&self, id: ObjectId) -> Option<&Object> {
        self.objects.get(&id)
    }

    /// Looks an object up for changing it.
    pub fn get_mut(&mut self, id: ObjectId) -> Option<&mut Object> {
        self.objects.get_mut(&id)
    }

    /// Number of live objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Adds a reference held by `handle` of `client`.
    pub fn hold(
        &mut self,
        id: ObjectId,
        client: ClientId,
        handle: HandleId,
        pid: u32,
        rights: Rights,
    ) -> Result<Attachment, KernelError> {
        let obj = self.objects.get_mut(&id).ok_or_else(|| KernelError::Internal("object vanished".into()))?;
        let attachment = match &mut obj.body {
            Body::Channel(ch) => ch.attach(rights)?,
            Body::Mutex(_) => Attachment::default(),
            Body::Service(svc) => svc.attach(rights)?,
            Body::Pipe(p) => p.attach(rights)?,
            Body::Carrier(c) => c.attach(rights)?,
        };
        obj.holders.insert((client, handle), HolderInfo { pid, rights, attachment });
        // Pollers re-check: "no more senders" may have ended.
        obj.body.bell().ring();
        Ok(attachment)
    }

    /// Drops a reference, destroying the object if it was the last one.
    pub fn release(&mut self, id: ObjectId, client: ClientId, handle: HandleId) -> Released {
        self.release_all(id, client, &[handle])
    }

    /// Drops several references of one client to one object at once.
    pub fn release_all(&mut self, id: ObjectId, client: ClientId, handles: &[HandleId]) -> Released {
        let Some(obj) = self.objects.get_mut(&id) else {
            return Released::default();
        };
        let mut out = Released::default();
        let atts: Vec<_> =
            handles.iter().filter_map(|h| obj.holders.remove(&(client, *h))).map(|h| h.attachment).collect();
        match &mut obj.body {
            Body::Channel(ch) => out.lost = ch.detach_all(&atts),
            Body::Service(svc) => (out.lost, out.provider_gone) = svc.detach_all(&atts),
            Body::Pipe(p) => p.detach_all(&atts),
            Body::Carrier(c) => out.lost = c.detach_all(&atts),
            Body::Mutex(_) => {}
        }
        // Pollers re-check: the other side may be gone, a comutex's owner
        // may have died holding it.
        obj.body.bell().ring();
        if obj.doomed() {
            out.destroyed = self.objects.remove(&id).map(|o| o.name);
        }
        out
    }

    /// Forgets an object's name (it was unlinked); destroys it if nobody
    /// holds it. Returns whether it was destroyed.
    pub fn unname(&mut self, id: ObjectId) -> bool {
        let Some(obj) = self.objects.get_mut(&id) else {
            return false;
        };
        obj.name = None;
        if obj.doomed() {
            self.objects.remove(&id);
            return true;
        }
        false
    }
}
