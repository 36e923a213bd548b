//! The microkernel's request handler: one decoded request from one client in,
//! one reply (and the fds it grants) out. It ties the compartments together
//! and does no I/O, so tests and fuzzers drive it directly.

use std::collections::{BTreeMap, HashMap};

use comesg_proto::{
    encode_reply, Entry, EntryKind, EventKind, HandleId, Holder, KernelError, Listing, Name, PortGrant, PortKind,
    PortSpec, Reply, ReplyFrame, Request, Rights, TakenHandle, WatchEvent, MAX_FRAME, VERSION,
};
use comesg_sys::OwnedFd;

use crate::compartments::carrier::CarrierObject;
use crate::compartments::channel::ChannelObject;
use crate::compartments::comutex::MutexObject;
use crate::compartments::events::Watches;
use crate::compartments::ipc::{Body, ClientId, Object, ObjectId, Ports, Released};
use crate::compartments::names::{Names, NodeKind};
use crate::compartments::pipe::PipeObject;
use crate::compartments::quota::{Quotas, UserLimits};
use crate::compartments::service::ServiceObject;
use crate::compartments::transfer::{Carried, InFlight, IN_FLIGHT};
use crate::compartments::{allowed, Cred, Perm};

/// Most handles one carrier message may carry.
const MAX_ATTACHED: usize = 64;

/// Bounds that keep one client from exhausting the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connected clients.
    pub max_clients: usize,
    /// Most live objects.
    pub max_objects: usize,
    /// Most open handles per connection.
    pub max_handles_per_client: usize,
    /// Holder records per side of each channel.
    pub max_holders_per_channel: u32,
    /// Entries per listing page.
    pub list_page: usize,
    /// What each user may hold at once.
    pub per_user: UserLimits,
    /// Holders shown per entry in a listing.
    pub list_holders: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 16_384,
            max_objects: 65_536,
            max_handles_per_client: 65_536,
            max_holders_per_channel: 4096,
            list_page: 64,
            list_holders: 32,
            per_user: UserLimits::default(),
        }
    }
}

/// The result of one request.
#[derive(Debug)]
pub struct Outcome {
    /// The reply to send.
    pub reply: Reply,
    /// Fds to send with it.
    pub fds: Vec<OwnedFd>,
    /// Close the connection after replying.
    pub close: bool,
}

impl Outcome {
    fn reply(reply: Reply) -> Outcome {
        Outcome { reply, fds: Vec::new(), close: false }
    }
    fn error(e: KernelError) -> Outcome {
        Outcome::reply(Reply::Error(e))
    }
}

/// What a client's departure released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Departure {
    /// Handles it still held.
    pub handles: usize,
    /// Messages it left half-done (now counted lost).
    pub lost: u64,
    /// Objects destroyed because it held the last reference.
    pub destroyed: usize,
}

#[derive(Debug)]
struct Client {
    cred: Cred,
    greeted: bool,
    handles: BTreeMap<HandleId, ObjectId>,
    next_handle: u64,
}

/// All of the microkernel's tables.
#[derive(Debug)]
pub struct State {
    names: Names,
    ports: Ports,
    clients: HashMap<ClientId, Client>,
    limits: Limits,
    in_flight: InFlight,
    watches: Watches,
    quotas: Quotas,
}

impl State {
    /// An empty kernel whose root namespace belongs to `uid`/`gid`.
    pub fn new(uid: u32, gid: u32, limits: Limits) -> State {
        State {
            names: Names::new(uid, gid, 0o755),
            ports: Ports::default(),
            clients: HashMap::new(),
            limits,
            in_flight: InFlight::default(),
            watches: Watches::default(),
            quotas: Quotas::new(limits.per_user),
        }
    }

    /// Registers a new connection.
    pub fn connect(&mut self, id: ClientId, cred: Cred) -> Result<(), KernelError> {
        if self.clients.len() >= self.limits.max_clients {
            return Err(KernelError::Limit(format!("{} clients", self.limits.max_clients)));
        }
        self.quotas.connect(cred.uid)?;
        self.clients.insert(id, Client { cred, greeted: false, handles: BTreeMap::new(), next_handle: 0 });
        self.names.ensure_home(cred.uid, cred.gid);
        Ok(())
    }

    /// Releases everything a connection held (it closed or its process died).
    pub fn disconnect(&mut self, id: ClientId) -> Departure {
        let Some(client) = self.clients.remove(&id) else {
            return Departure::default();
        };
        self.watches.client_gone(id);
        self.quotas.disconnect(client.cred.uid, client.handles.len());
        let mut d = Departure { handles: client.handles.len(), ..Departure::default() };
        let mut by_object: BTreeMap<ObjectId, Vec<HandleId>> = BTreeMap::new();
        for (handle, obj) in client.handles {
            self.quotas.handle_memory_released(id, handle);
            by_object.entry(obj).or_default().push(handle);
        }
        for (obj, handles) in by_object {
            let r = self.release_watched(obj, id, &handles, Some(client.cred.pid));
            d.lost += r.lost;
            if r.destroyed.is_some() {
                d.destroyed += 1;
            }
            self.after_release(obj, r);
        }
        d
    }

    /// Names go dead with their objects, and with a service's provider (so
    /// that a new provider can register the name while callers of the dead
    /// one still hold it).
    fn after_release(&mut self, obj: ObjectId, r: Released) {
        if r.destroyed.is_some() {
            self.quotas.object_destroyed(obj);
            // A destroyed carrier's messages give back what they carried.
            for c in self.in_flight.take_all(obj) {
                self.release(IN_FLIGHT, c.handle, c.obj);
            }
        } else {
            self.settle_carrier(obj);
        }
        if let Some(Some(name)) = r.destroyed {
            self.names.mark_dead(&name, obj);
        } else if r.provider_gone {
            if let Some(name) = self.ports.get(obj).and_then(|o| o.name.clone()) {
                self.names.mark_dead(&name, obj);
            }
            if self.unname(obj) {
                self.watches.destroyed(obj);
            }
        }
    }

    /// Takes `obj`'s name away; an object nobody holds is destroyed then
    /// (returns true), and its creator's quota gets its share back.
    fn unname(&mut self, obj: ObjectId) -> bool {
        let gone = self.ports.unname(obj);
        if gone {
            self.quotas.object_destroyed(obj);
        }
        gone
    }

    /// Whether the per-user accounting matches the tables it summarizes:
    /// each user's connections and handles, a creator for every live object
    /// (and for nothing else), and memory that is the sum of its objects'
    /// and its call segments'. For tests and the fuzzer.
    pub fn accounting_holds(&self) -> bool {
        let mut want: HashMap<u32, (usize, usize, usize)> = HashMap::new();
        for c in self.clients.values() {
            let w = want.entry(c.cred.uid).or_default();
            w.0 += 1;
            w.1 += c.handles.len();
        }
        let mut counted = 0;
        for obj in self.ports.ids() {
            match self.quotas.owner(obj) {
                Some(uid) => want.entry(uid).or_default().2 += 1,
                None => return false,
            }
            counted += 1;
        }
        let have: usize = self.quotas.users().map(|(_, u)| u.objects).sum();
        counted == have
            && self.quotas.users().all(|(uid, u)| {
                let w = want.get(&uid).copied().unwrap_or_default();
                (u.connections, u.handles, u.objects) == w
            })
            && want.iter().all(|(uid, w)| *w == (0, 0, 0) || self.quotas.usage(*uid) != Default::default())
            && self.quotas.memory_adds_up()
            && self
                .quotas
                .charged_handles()
                .all(|(c, h)| self.clients.get(&c).is_some_and(|c| c.handles.contains_key(&h)))
    }

    /// Whether no client is connected and no object exists.
    pub fn is_idle(&self) -> bool {
        self.clients.is_empty() && self.ports.is_empty()
    }

    /// Number of connected clients.
    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    /// Number of live objects.
    pub fn objects(&self) -> usize {
        self.ports.len()
    }

    fn release(&mut self, client: ClientId, handle: HandleId, obj: ObjectId) -> (u64, bool) {
        let r = self.release_watched(obj, client, &[handle], None);
        let out = (r.lost, r.destroyed.is_some());
        self.after_release(obj, r);
        out
    }

    /// Releases `client`'s `handles` to `obj` and, if anyone watches it,
    /// records what changed: a holder process gone (`departed`), the last
    /// sender or receiver gone, a provider gone, the object destroyed.
    fn release_watched(
        &mut self,
        obj: ObjectId,
        client: ClientId,
        handles: &[HandleId],
        departed: Option<u32>,
    ) -> Released {
        let before = self.watches.watched(obj).then(|| self.ports.get(obj).map(|o| o.sides(IN_FLIGHT)));
        let r = self.ports.release_all(obj, client, handles);
        if let Some(before) = before {
            let (s0, r0) = before.unwrap_or((0, 0));
            let (s1, r1) = self.ports.get(obj).map_or((0, 0), |o| o.sides(IN_FLIGHT));
            if let Some(pid) = departed.filter(|_| client != IN_FLIGHT) {
                self.watches.emit(obj, EventKind::HolderGone { pid });
            }
            if r.provider_gone {
                self.watches.emit(obj, EventKind::ServiceGone);
            }
            if s0 > 0 && s1 == 0 {
                self.watches.emit(obj, EventKind::NoSenders);
            }
            if r0 > 0 && r1 == 0 {
                self.watches.emit(obj, EventKind::NoReceivers);
            }
            if r.destroyed.is_some() {
                self.watches.destroyed(obj);
            }
        }
        r
    }

    /// Events for watchers recorded since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<(ClientId, WatchEvent)> {
        self.watches.take()
    }

    fn watch(&mut self, id: ClientId, cred: Cred, name: &Name) -> Result<Outcome, KernelError> {
        let obj = self.names.resolve(name, cred)?;
        let o = self.ports.get(obj).ok_or_else(|| KernelError::DeadName(name.clone()))?;
        if !allowed(cred, o.uid, o.gid, o.mode, Perm::Read) {
            return Err(KernelError::PermissionDenied { name: name.clone(), need: "read (r) to watch".into() });
        }
        self.watches.watch(id, obj, name.clone())?;
        Ok(Outcome::reply(Reply::Done))
    }

    /// Handles one request from client `id`.
    pub fn handle(&mut self, id: ClientId, request: Request) -> Outcome {
        self.handle_with_fds(id, request, Vec::new())
    }

    /// [`State::handle`] for a request that came with fds (only a sealed
    /// carrier send uses one; any others are closed).
    pub fn handle_with_fds(&mut self, id: ClientId, request: Request, mut fds: Vec<OwnedFd>) -> Outcome {
        if let Request::CarrierSendSealed { handle, len, attach } = request {
            if !self.clients.get(&id).is_some_and(|c| c.greeted) {
                return Outcome::error(KernelError::HelloFirst);
            }
            let Some(fd) = fds.pop().filter(|_| fds.is_empty()) else {
                return Outcome::error(KernelError::InvalidArgument("a sealed send carries exactly one fd".into()));
            };
            return self
                .carrier_send_with(id, handle, &attach, move |c, _pid, n| c.send_sealed(fd, len, n))
                .unwrap_or_else(Outcome::error);
        }
        drop(fds);
        self.handle_request(id, request)
    }

    fn handle_request(&mut self, id: ClientId, request: Request) -> Outcome {
        let Some(client) = self.clients.get_mut(&id) else {
            return Outcome { close: true, ..Outcome::error(KernelError::Internal("unknown client".into())) };
        };
        let cred = client.cred;
        if !client.greeted {
            return match request {
                Request::Hello { version, .. } if version == VERSION => {
                    client.greeted = true;
                    Outcome::reply(Reply::Welcome { version: VERSION, kernel_pid: comesg_sys::process::pid() })
                }
                Request::Hello { version, .. } => {
                    Outcome { close: true, ..Outcome::error(KernelError::Version { kernel: VERSION, client: version }) }
                }
                _ => Outcome::error(KernelError::HelloFirst),
            };
        }
        let result = match request {
            Request::Hello { .. } => Err(KernelError::InvalidArgument("already greeted".into())),
            Request::Ping => Ok(Outcome::reply(Reply::Pong)),
            Request::Create { name, spec, rights, mode, persistent, exclusive } => {
                self.create(id, cred, name, spec, rights, mode, persistent, exclusive)
            }
            Request::Open { name, rights } => self.open(id, cred, &name, rights),
            Request::Close { handle } => self.close(id, handle),
            Request::Unlink { name } => self.unlink(cred, &name),
            Request::Mkdir { name, mode } => self.names.mkdir(&name, cred, mode).map(|_| Outcome::reply(Reply::Done)),
            Request::List { name, offset } => self.list(cred, &name, offset as usize),
            Request::Watch { name } => self.watch(id, cred, &name),
            Request::CallerSegment { handle, caller } => self.caller_segment(id, handle, caller),
            Request::CarrierSend { handle, addr, len, attach } => self.carrier_send(id, handle, addr, len, &attach),
            Request::CarrierCollect { handle } => self.carrier(id, handle, Rights::NONE, |c, _| {
                c.collect();
                Ok(0)
            }),
            Request::CarrierTake { handle, msg } => self.carrier_take(id, cred, handle, msg),
            Request::CarrierSendSealed { .. } => {
                Err(KernelError::InvalidArgument("a sealed send carries exactly one fd".into()))
            }
            Request::CarrierFetch { handle, msg } => self.carrier_fetch(id, handle, msg),
        };
        result.unwrap_or_else(Outcome::error)
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        id: ClientId,
        cred: Cred,
        name: Name,
        spec: PortSpec,
        rights: Rights,
        mode: u32,
        persistent: bool,
        exclusive: bool,
    ) -> Result<Outcome, KernelError> {
        check_rights(rights)?;
        match self.names.prepare_create(&name, cred)? {
            Some(NodeKind::Object(_)) if exclusive => Err(KernelError::Exists(name)),
            Some(NodeKind::Object(_)) => self.open(id, cred, &name, rights),
            Some(NodeKind::Namespace) => Err(KernelError::IsANamespace(name)),
            Some(NodeKind::Dead) | None => {
                if self.ports.len() >= self.limits.max_objects {
                    return Err(KernelError::Limit(format!("{} objects", self.limits.max_objects)));
                }
                self.quotas.check_object(cred.uid, 0)?;
                self.check_handle_limit(id)?;
                let body = match spec {
                    PortSpec::Channel(ch) => {
                        Body::Channel(Box::new(ChannelObject::create(&name, ch, self.limits.max_holders_per_channel)?))
                    }
                    PortSpec::Mutex(m) => {
                        MutexObject::check_rights(rights)?;
                        Body::Mutex(MutexObject::create(&name, m)?)
                    }
                    PortSpec::Service(sv) => {
                        if rights != Rights::RECV {
                            return Err(KernelError::InvalidArgument(
                                "a service is created by its provider, with RECV (serve)".into(),
                            ));
                        }
                        let svc = ServiceObject::create(&name, sv, self.limits.max_holders_per_channel)?;
                        Body::Service(Box::new(svc))
                    }
                    PortSpec::Pipe(p) => Body::Pipe(Box::new(PipeObject::create(&name, p)?)),
                    PortSpec::Carrier(c) => Body::Carrier(Box::new(CarrierObject::create(&name, c)?)),
                };
                // Its segments exist now: dropping `body` here frees them.
                let memory = body.memory();
                self.quotas.check_object(cred.uid, memory)?;
                let obj = self.ports.insert(Object::new(name.clone(), cred.uid, cred.gid, mode, persistent, body));
                self.quotas.object_created(cred.uid, obj, memory);
                self.names.bind(name, obj, cred, mode);
                // The creator gets the rights it asked for, whatever the mode
                // (as open(2) with O_CREAT does).
                let out = self.grant(id, cred, obj, rights, true);
                if out.is_err() {
                    if let Some(n) = self.ports.get(obj).and_then(|o| o.name.clone()) {
                        self.names.mark_dead(&n, obj);
                    }
                    self.unname(obj);
                }
                out
            }
        }
    }

    fn check_handle_limit(&self, id: ClientId) -> Result<(), KernelError> {
        match self.clients.get(&id) {
            Some(c) if c.handles.len() >= self.limits.max_handles_per_client => {
                Err(KernelError::Limit(format!("{} handles per connection", self.limits.max_handles_per_client)))
            }
            Some(c) => self.quotas.check_handle(c.cred.uid),
            None => Err(KernelError::Internal("unknown client".into())),
        }
    }

    fn open(&mut self, id: ClientId, cred: Cred, name: &Name, rights: Rights) -> Result<Outcome, KernelError> {
        check_rights(rights)?;
        let obj = self.names.resolve(name, cred)?;
        let o = self.ports.get(obj).ok_or_else(|| KernelError::DeadName(name.clone()))?;
        match &o.body {
            Body::Mutex(_) => MutexObject::check_rights(rights)?,
            Body::Service(svc) => svc.check_rights(rights)?,
            Body::Channel(_) | Body::Pipe(_) | Body::Carrier(_) => {}
        }
        for (right, perm) in [(Rights::SEND, Perm::Write), (Rights::RECV, Perm::Read)] {
            if rights.contains(right) && !allowed(cred, o.uid, o.gid, o.mode, perm) {
                let need = if right == Rights::SEND { "send (w)" } else { "receive (r)" };
                return Err(KernelError::PermissionDenied { name: name.clone(), need: need.into() });
            }
        }
        self.check_handle_limit(id)?;
        self.grant(id, cred, obj, rights, false)
    }

    fn grant(
        &mut self,
        id: ClientId,
        cred: Cred,
        obj: ObjectId,
        rights: Rights,
        created: bool,
    ) -> Result<Outcome, KernelError> {
        // A caller's call segment is made for this handle: the caller's
        // user pays for it while the handle lives.
        let segment = match self.ports.get(obj).map(|o| &o.body) {
            Some(Body::Service(svc)) if rights.contains(Rights::SEND) => svc.call_segment_len(),
            _ => 0,
        };
        self.quotas.check_memory(cred.uid, segment)?;
        let client = self.clients.get_mut(&id).ok_or_else(|| KernelError::Internal("unknown client".into()))?;
        client.next_handle += 1;
        let handle = HandleId(client.next_handle);
        let attachment = self.ports.hold(obj, id, handle, cred.pid, rights)?;
        let o = self.ports.get(obj).ok_or_else(|| KernelError::Internal("object vanished".into()))?;
        let (fds, spec, max_holders) = match &o.body {
            Body::Channel(ch) => (ch.fds_for(rights), PortSpec::Channel(ch.spec()), ch.max_holders()),
            Body::Mutex(m) => (m.fds(), PortSpec::Mutex(m.spec()), 0),
            Body::Service(svc) => (svc.fds_for(rights, &attachment), PortSpec::Service(svc.spec()), svc.max_holders()),
            Body::Pipe(p) => (p.fds_for(rights), PortSpec::Pipe(p.spec()), 0),
            Body::Carrier(c) => (c.fds_for(&attachment), PortSpec::Carrier(c.spec()), 0),
        };
        // The bell goes last, for every kind.
        let fds = fds.and_then(|mut fds| {
            fds.push(o.body.bell().dup_fd().map_err(|e| KernelError::Internal(e.to_string()))?);
            Ok(fds)
        });
        let fds = match fds {
            Ok(fds) => fds,
            Err(e) => {
                self.release(id, handle, obj);
                return Err(e);
            }
        };
        let grant = PortGrant {
            handle,
            rights,
            created,
            spec,
            max_holders,
            send_holder: attachment.send,
            recv_holder: attachment.recv,
            caller: attachment.caller,
        };
        if let Some(c) = self.clients.get_mut(&id) {
            c.handles.insert(handle, obj);
            self.quotas.handle_granted(c.cred.uid);
            self.quotas.handle_memory(id, handle, c.cred.uid, segment);
        }
        Ok(Outcome { reply: Reply::Port(grant), fds, close: false })
    }

    fn close(&mut self, id: ClientId, handle: HandleId) -> Result<Outcome, KernelError> {
        let client = self.clients.get_mut(&id).ok_or_else(|| KernelError::Internal("unknown client".into()))?;
        let obj = client.handles.remove(&handle).ok_or(KernelError::NoSuchHandle(handle))?;
        let uid = client.cred.uid;
        self.quotas.handle_closed(uid);
        self.quotas.handle_memory_released(id, handle);
        self.release(id, handle, obj);
        Ok(Outcome::reply(Reply::Done))
    }

    fn caller_segment(&mut self, id: ClientId, handle: HandleId, caller: u32) -> Result<Outcome, KernelError> {
        let client = self.clients.get(&id).ok_or_else(|| KernelError::Internal("unknown client".into()))?;
        let obj = *client.handles.get(&handle).ok_or(KernelError::NoSuchHandle(handle))?;
        let o = self.ports.get(obj).ok_or(KernelError::NoSuchHandle(handle))?;
        let provider = o.holders_of(id).any(|(h, info)| h == handle && info.rights.contains(Rights::RECV));
        match &o.body {
            Body::Service(svc) if provider => {
                let fd = svc.segment_fd(caller)?;
                Ok(Outcome { reply: Reply::Segment, fds: vec![fd], close: false })
            }
            _ => Err(KernelError::InvalidArgument("not the provider's handle to a service".into())),
        }
    }

    /// Runs `f` on the carrier that `handle` of client `id` holds, if the
    /// handle has `need`.
    fn carrier(
        &mut self,
        id: ClientId,
        handle: HandleId,
        need: Rights,
        f: impl FnOnce(&mut CarrierObject, u32) -> Result<u64, KernelError>,
    ) -> Result<Outcome, KernelError> {
        let (obj, r) = self.carrier_op(id, handle, need, f)?;
        self.settle_carrier(obj);
        r.map(|_| Outcome::reply(Reply::Done))
    }

    /// Runs `f` on the carrier behind `handle`; returns the carrier's object
    /// id (for settling afterwards) and `f`'s result.
    #[allow(clippy::type_complexity)]
    fn carrier_op(
        &mut self,
        id: ClientId,
        handle: HandleId,
        need: Rights,
        f: impl FnOnce(&mut CarrierObject, u32) -> Result<u64, KernelError>,
    ) -> Result<(ObjectId, Result<u64, KernelError>), KernelError> {
        let client = self.clients.get(&id).ok_or_else(|| KernelError::Internal("unknown client".into()))?;
        let pid = client.cred.pid;
        let obj = *client.handles.get(&handle).ok_or(KernelError::NoSuchHandle(handle))?;
        let o = self.ports.get_mut(obj).ok_or(KernelError::NoSuchHandle(handle))?;
        let rights = o.holders_of(id).find(|(h, _)| *h == handle).map(|(_, i)| i.rights).unwrap_or(Rights::NONE);
        if !rights.contains(need) {
            return Err(KernelError::InvalidArgument("this handle lacks the right for that".into()));
        }
        match &mut o.body {
            Body::Carrier(c) => Ok((obj, f(c, pid))),
            _ => Err(KernelError::InvalidArgument("not a carrier".into())),
        }
    }

    /// Gives back the references carried by messages a carrier has freed.
    fn settle_carrier(&mut self, obj: ObjectId) {
        let freed = match self.ports.get_mut(obj).map(|o| &mut o.body) {
            Some(Body::Carrier(c)) => c.take_freed(),
            _ => return,
        };
        for msg in freed {
            for c in self.in_flight.take(obj, msg) {
                self.release(IN_FLIGHT, c.handle, c.obj);
            }
        }
    }

    /// A carrier send, with handles to pass along: each becomes a reference
    /// in flight (rights narrowed as asked, never widened) until taken.
    fn carrier_send(
        &mut self,
        id: ClientId,
        handle: HandleId,
        addr: u64,
        len: u64,
        attach: &[(HandleId, Rights)],
    ) -> Result<Outcome, KernelError> {
        self.carrier_send_with(id, handle, attach, |c, pid, n| c.send(pid, addr, len, n))
    }

    /// A carrier send (copied or sealed, as `send` does it) with handles to
    /// pass along.
    fn carrier_send_with(
        &mut self,
        id: ClientId,
        handle: HandleId,
        attach: &[(HandleId, Rights)],
        send: impl FnOnce(&mut CarrierObject, u32, u16) -> Result<u64, KernelError>,
    ) -> Result<Outcome, KernelError> {
        if attach.len() > MAX_ATTACHED {
            return Err(KernelError::InvalidArgument(format!("at most {MAX_ATTACHED} handles per message")));
        }
        let client = self.clients.get(&id).ok_or_else(|| KernelError::Internal("unknown client".into()))?;
        let carrier = *client.handles.get(&handle).ok_or(KernelError::NoSuchHandle(handle))?;
        let mut wanted = Vec::new();
        for &(h, rights) in attach {
            let obj = *client.handles.get(&h).ok_or(KernelError::NoSuchHandle(h))?;
            let have = self
                .ports
                .get(obj)
                .and_then(|o| o.holders_of(id).find(|(x, _)| *x == h).map(|(_, i)| i.rights))
                .unwrap_or(Rights::NONE);
            if rights.is_empty() {
                return Err(KernelError::InvalidArgument(format!("handle {h:?} attached with no rights")));
            }
            if !rights.is_subset_of(have) {
                let name = self.ports.get(obj).and_then(|o| o.name.clone()).unwrap_or_else(Name::root);
                return Err(KernelError::PermissionDenied {
                    name,
                    need: format!("handle {h:?} has {have}; it cannot pass {rights}: rights can only be narrowed"),
                });
            }
            if obj == carrier {
                return Err(KernelError::InvalidArgument("a carrier cannot carry a handle to itself".into()));
            }
            match self.ports.get(obj).map(|o| &o.body) {
                Some(Body::Mutex(_)) => MutexObject::check_rights(rights)?,
                Some(Body::Service(svc)) => svc.check_rights(rights)?,
                _ => {}
            }
            wanted.push((obj, rights));
        }
        let mut carried = Vec::new();
        for (obj, rights) in wanted {
            let h = self.in_flight.next_handle();
            // The reference in flight holds the object with no rights (it
            // is no receiver, no sender, no caller); the rights are granted
            // when a receiver takes it.
            match self.ports.hold(obj, IN_FLIGHT, h, 0, Rights::NONE) {
                Ok(_) => carried.push(Carried { obj, handle: h, rights }),
                Err(e) => {
                    self.drop_carried(carried);
                    return Err(e);
                }
            }
        }
        let n = carried.len() as u16;
        match self.carrier_op(id, handle, Rights::SEND, |c, pid| send(c, pid, n)) {
            Ok((obj, Ok(msg))) => {
                self.in_flight.insert(obj, msg, carried);
                self.settle_carrier(obj);
                Ok(Outcome::reply(Reply::Done))
            }
            Ok((obj, Err(e))) => {
                self.drop_carried(carried);
                self.settle_carrier(obj);
                Err(e)
            }
            Err(e) => {
                self.drop_carried(carried);
                Err(e)
            }
        }
    }

    /// A receiver fetches the sealed memfd of a message it holds.
    fn carrier_fetch(&mut self, id: ClientId, handle: HandleId, msg: u64) -> Result<Outcome, KernelError> {
        let client = self.clients.get(&id).ok_or_else(|| KernelError::Internal("unknown client".into()))?;
        let obj = *client.handles.get(&handle).ok_or(KernelError::NoSuchHandle(handle))?;
        let o = self.ports.get(obj).ok_or(KernelError::NoSuchHandle(handle))?;
        let receiver = o.holders_of(id).find(|(x, _)| *x == handle).and_then(|(_, i)| i.attachment.recv);
        match &o.body {
            Body::Carrier(c) if receiver.is_some() && c.holder_of(msg) == receiver => {
                let fd = c.sealed_fd(msg)?;
                Ok(Outcome { reply: Reply::Segment, fds: vec![fd], close: false })
            }
            Body::Carrier(_) => {
                Err(KernelError::InvalidArgument(format!("message {msg} is not held by this receiver")))
            }
            _ => Err(KernelError::InvalidArgument("not a carrier".into())),
        }
    }

    fn drop_carried(&mut self, carried: Vec<Carried>) {
        for c in carried {
            self.release(IN_FLIGHT, c.handle, c.obj);
        }
    }

    /// A receiver takes the handles message `msg` carries: each becomes a
    /// handle of its own (as an open would grant), and the reference in
    /// flight goes.
    fn carrier_take(&mut self, id: ClientId, cred: Cred, handle: HandleId, msg: u64) -> Result<Outcome, KernelError> {
        let client = self.clients.get(&id).ok_or_else(|| KernelError::Internal("unknown client".into()))?;
        let obj = *client.handles.get(&handle).ok_or(KernelError::NoSuchHandle(handle))?;
        let o = self.ports.get(obj).ok_or(KernelError::NoSuchHandle(handle))?;
        let receiver = o.holders_of(id).find(|(x, _)| *x == handle).and_then(|(_, i)| i.attachment.recv);
        let holder = match &o.body {
            Body::Carrier(c) => c.holder_of(msg),
            _ => return Err(KernelError::InvalidArgument("not a carrier".into())),
        };
        if receiver.is_none() || holder != receiver {
            return Err(KernelError::InvalidArgument(format!("message {msg} is not held by this receiver")));
        }
        let mut taken = Vec::new();
        let mut fds = Vec::new();
        // In batches: one reply's fds must fit one record.
        while taken.len() < comesg_proto::TAKE_BATCH {
            let Some(c) = self.in_flight.take_one(obj, msg) else { break };
            // Grant first, then drop the reference in flight, so the object
            // never reaches zero references in between. A grant that fails
            // (a limit) loses that handle, and its reference still goes.
            let granted = self.check_handle_limit(id).and_then(|()| self.grant(id, cred, c.obj, c.rights, false));
            self.release(IN_FLIGHT, c.handle, c.obj);
            match granted {
                Ok(Outcome { reply: Reply::Port(grant), fds: f, .. }) => {
                    let name = self.ports.get(c.obj).and_then(|o| o.name.clone());
                    taken.push(TakenHandle { name, grant, fds: f.len() as u32 });
                    fds.extend(f);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("a handle carried by message {msg} could not be granted: {e}"),
            }
        }
        Ok(Outcome { reply: Reply::Taken(taken), fds, close: false })
    }

    fn unlink(&mut self, cred: Cred, name: &Name) -> Result<Outcome, KernelError> {
        if let Some(obj) = self.names.unlink(name, cred)? {
            self.watches.emit(obj, EventKind::Unlinked);
            if self.unname(obj) {
                self.watches.destroyed(obj);
            }
        }
        Ok(Outcome::reply(Reply::Done))
    }

    fn list(&self, cred: Cred, name: &Name, offset: usize) -> Result<Outcome, KernelError> {
        let (page, more) = self.names.list(name, cred, offset, self.limits.list_page)?;
        let mut entries: Vec<Entry> =
            page.into_iter().map(|(n, node)| self.entry(n, node.kind, node.uid, node.gid, node.mode)).collect();
        let mut next = more.then_some((offset + self.limits.list_page) as u32);
        // Entries vary in size (holders, per-worker counters): cut the page
        // short rather than send a reply larger than a frame.
        let fits = |entries: &[Entry]| {
            let page = Listing { entries: entries.to_vec(), next: Some(u32::MAX) };
            encode_reply(&ReplyFrame { id: u32::MAX, reply: Reply::Listing(page) }).len() <= MAX_FRAME
        };
        while entries.len() > 1 && !fits(&entries) {
            entries.truncate(entries.len() / 2);
            next = Some((offset + entries.len()) as u32);
        }
        Ok(Outcome::reply(Reply::Listing(Listing { entries, next })))
    }

    fn entry(&self, name: Name, kind: NodeKind, uid: u32, gid: u32, mode: u32) -> Entry {
        let obj = match kind {
            NodeKind::Namespace => return Entry::bare(name, EntryKind::Namespace, uid, gid, mode),
            NodeKind::Dead => return Entry::bare(name, EntryKind::Dead, uid, gid, mode),
            NodeKind::Object(id) => id,
        };
        let Some(o) = self.ports.get(obj) else {
            return Entry::bare(name, EntryKind::Dead, uid, gid, mode);
        };
        let kind = match o.body {
            Body::Channel(_) => PortKind::Channel,
            Body::Mutex(_) => PortKind::Mutex,
            Body::Service(_) => PortKind::Service,
            Body::Pipe(_) => PortKind::Pipe,
            Body::Carrier(_) => PortKind::Carrier,
        };
        let mut e = Entry::bare(name, EntryKind::Port(kind), uid, gid, mode);
        e.persistent = o.persistent;
        e.refs = o.refs() as u32;
        e.holders =
            o.holders().take(self.limits.list_holders).map(|h| Holder { pid: h.pid, rights: h.rights }).collect();
        match &o.body {
            Body::Channel(ch) => {
                let t = ch.totals();
                e.channel = Some(ch.spec());
                e.depth = ch.ring_stats().depth;
                e.sent_msgs = t.sent_msgs;
                e.sent_bytes = t.sent_bytes;
                e.received_msgs = t.received_msgs;
                e.received_bytes = t.received_bytes;
                e.lost = t.lost;
            }
            Body::Mutex(m) => {
                let st = m.stats();
                e.mutex = Some(m.spec());
                e.locks = st.locks;
                e.owner_deaths = st.owner_deaths;
            }
            Body::Service(svc) => {
                e.service = Some(svc.spec());
                e.worker_calls = svc.worker_calls();
            }
            Body::Pipe(p) => e.pipe = Some(p.spec()),
            Body::Carrier(c) => {
                let t = c.totals();
                e.carrier = Some(c.spec());
                e.arena_used = c.arena_used();
                e.sent_msgs = t.sent;
                e.sent_bytes = t.sent_bytes;
                e.received_msgs = t.released;
                e.lost = t.lost;
            }
        }
        e
    }
}

fn check_rights(rights: Rights) -> Result<(), KernelError> {
    if rights.is_empty() || !rights.is_subset_of(Rights::ALL) {
        return Err(KernelError::InvalidArgument("a port handle needs SEND, RECV or both".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use comesg_proto::ChannelSpec;

    const ME: Cred = Cred { pid: 100, uid: 1000, gid: 1000 };
    const OTHER: Cred = Cred { pid: 200, uid: 1001, gid: 1001 };

    fn n(s: &str) -> Name {
        Name::try_from(s).unwrap()
    }

    fn create(name: &str, persistent: bool) -> Request {
        Request::Create {
            name: n(name),
            spec: PortSpec::Channel(ChannelSpec { slot_size: 64, slots: 8 }),
            rights: Rights::ALL,
            mode: 0o600,
            persistent,
            exclusive: true,
        }
    }

    fn greeted(s: &mut State, id: u64, cred: Cred) -> ClientId {
        let c = ClientId(id);
        s.connect(c, cred).unwrap();
        let out = s.handle(c, Request::Hello { version: VERSION, client: "t".into() });
        assert!(matches!(out.reply, Reply::Welcome { .. }));
        c
    }

    fn handle_of(out: Outcome) -> HandleId {
        match out.reply {
            Reply::Port(g) => {
                assert_eq!(out.fds.len(), 3);
                g.handle
            }
            r => panic!("expected a port, got {r:?}"),
        }
    }

    fn kind(s: &mut State, c: ClientId, name: &str) -> EntryKind {
        match s.handle(c, Request::List { name: n(name), offset: 0 }).reply {
            Reply::Listing(l) => l.entries[0].kind,
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn each_user_is_held_to_its_quota_and_others_go_on() {
        let per_user = UserLimits { connections: 2, objects: 2, handles: 3, memory: 1 << 30 };
        let mut s = State::new(0, 0, Limits { per_user, ..Limits::default() });
        let a = greeted(&mut s, 1, ME);
        let _a2 = greeted(&mut s, 2, ME);
        assert!(matches!(s.connect(ClientId(3), ME), Err(KernelError::Limit(_))), "a third connection");
        let b = greeted(&mut s, 4, OTHER);
        let home = |c: Cred| format!("/user/{}", c.uid);
        let h1 = handle_of(s.handle(a, create(&format!("{}/x", home(ME)), false)));
        handle_of(s.handle(a, create(&format!("{}/y", home(ME)), true)));
        let third = s.handle(a, create(&format!("{}/z", home(ME)), false));
        assert!(matches!(third.reply, Reply::Error(KernelError::Limit(_))), "{:?}", third.reply);
        assert!(third.fds.is_empty());
        // The other user is not affected.
        handle_of(s.handle(b, create(&format!("{}/x", home(OTHER)), false)));
        assert!(s.accounting_holds());
        // Closing the non-persistent one destroys it and gives its share back.
        assert_eq!(s.handle(a, Request::Close { handle: h1 }).reply, Reply::Done);
        handle_of(s.handle(a, create(&format!("{}/z", home(ME)), false)));
        // Handles: two held; one more open is allowed, then none.
        let open = |name: &str| Request::Open { name: n(name), rights: Rights::RECV };
        handle_of(s.handle(a, open(&format!("{}/y", home(ME)))));
        let over = s.handle(a, open(&format!("{}/y", home(ME))));
        assert!(matches!(over.reply, Reply::Error(KernelError::Limit(_))), "{:?}", over.reply);
        assert!(s.accounting_holds());
        s.disconnect(a);
        s.disconnect(b);
        assert!(s.accounting_holds());
        // The persistent object stays counted against its creator.
        assert_eq!(s.quotas.usage(ME.uid).objects, 1);
        assert_eq!(s.handle(_a2, Request::Unlink { name: n(&format!("{}/y", home(ME))) }).reply, Reply::Done);
        assert_eq!(s.quotas.usage(ME.uid).objects, 0);
        assert!(s.accounting_holds());
    }

    #[test]
    fn handshake_comes_first_and_checks_the_version() {
        let mut s = State::new(1000, 1000, Limits::default());
        s.connect(ClientId(1), ME).unwrap();
        assert_eq!(s.handle(ClientId(1), Request::Ping).reply, Reply::Error(KernelError::HelloFirst));
        let out = s.handle(ClientId(1), Request::Hello { version: VERSION + 1, client: "x".into() });
        assert!(out.close);
        assert!(matches!(out.reply, Reply::Error(KernelError::Version { .. })));
    }

    #[test]
    fn last_close_destroys_and_the_name_goes_dead_then_revives() {
        let mut s = State::new(1000, 1000, Limits::default());
        let a = greeted(&mut s, 1, ME);
        let b = greeted(&mut s, 2, ME);
        let h = handle_of(s.handle(a, create("/app/ch", false)));
        let h2 = handle_of(s.handle(b, Request::Open { name: n("/app/ch"), rights: Rights::RECV }));
        assert!(matches!(s.handle(a, create("/app/ch", false)).reply, Reply::Error(KernelError::Exists(_))));
        assert_eq!(s.handle(a, Request::Close { handle: h }).reply, Reply::Done);
        assert_eq!(kind(&mut s, a, "/app/ch"), EntryKind::Port(PortKind::Channel));
        assert_eq!(s.disconnect(b), Departure { handles: 1, lost: 0, destroyed: 1 });
        assert_eq!(kind(&mut s, a, "/app/ch"), EntryKind::Dead);
        assert_eq!(
            s.handle(a, Request::Open { name: n("/app/ch"), rights: Rights::RECV }).reply,
            Reply::Error(KernelError::DeadName(n("/app/ch")))
        );
        handle_of(s.handle(a, create("/app/ch", false)));
        assert_eq!(s.handle(a, Request::Close { handle: h2 }).reply, Reply::Error(KernelError::NoSuchHandle(h2)));
    }

    #[test]
    fn persistent_objects_outlive_holders_until_unlinked() {
        let mut s = State::new(1000, 1000, Limits::default());
        let a = greeted(&mut s, 1, ME);
        handle_of(s.handle(a, create("/p", true)));
        s.disconnect(a);
        assert_eq!(s.objects(), 1);
        let b = greeted(&mut s, 2, ME);
        let h = handle_of(s.handle(b, Request::Open { name: n("/p"), rights: Rights::SEND }));
        assert_eq!(s.handle(b, Request::Unlink { name: n("/p") }).reply, Reply::Done);
        assert_eq!(s.objects(), 1, "still held");
        s.handle(b, Request::Close { handle: h });
        assert_eq!(s.objects(), 0);
        assert!(matches!(
            s.handle(b, Request::List { name: n("/p"), offset: 0 }).reply,
            Reply::Error(KernelError::NotFound(_))
        ));
    }

    #[test]
    fn modes_decide_who_may_send_and_receive() {
        let mut s = State::new(1000, 1000, Limits::default());
        let a = greeted(&mut s, 1, ME);
        let o = greeted(&mut s, 2, OTHER);
        s.handle(a, Request::Mkdir { name: n("/shared"), mode: 0o755 });
        let mut req = create("/shared/ch", false);
        if let Request::Create { mode, .. } = &mut req {
            *mode = 0o624; // others may receive only
        }
        handle_of(s.handle(a, req));
        handle_of(s.handle(o, Request::Open { name: n("/shared/ch"), rights: Rights::RECV }));
        assert!(matches!(
            s.handle(o, Request::Open { name: n("/shared/ch"), rights: Rights::SEND }).reply,
            Reply::Error(KernelError::PermissionDenied { .. })
        ));
        assert!(matches!(
            s.handle(o, create("/shared/x", false)).reply,
            Reply::Error(KernelError::PermissionDenied { .. })
        ));
    }

    #[test]
    fn bad_arguments_are_errors() {
        let mut s = State::new(1000, 1000, Limits::default());
        let a = greeted(&mut s, 1, ME);
        let bad = Request::Create {
            name: n("/x"),
            spec: PortSpec::Channel(ChannelSpec { slot_size: 64, slots: 3 }),
            rights: Rights::ALL,
            mode: 0o600,
            persistent: false,
            exclusive: true,
        };
        assert!(matches!(s.handle(a, bad).reply, Reply::Error(KernelError::InvalidArgument(_))));
        assert!(matches!(
            s.handle(a, Request::Open { name: n("/x"), rights: Rights::NONE }).reply,
            Reply::Error(KernelError::InvalidArgument(_))
        ));
        assert_eq!(s.objects(), 0);
    }

    /// Carriers that carry handles to each other cannot keep each other
    /// alive once nobody else holds them: a carrier message exists only
    /// while a receiver (a client's RECV handle) holds it, and when the last
    /// receiver goes its messages are dropped and give back what they carry.
    /// So no cycle of references survives its holders, and the kernel needs
    /// no cycle collector.
    #[test]
    fn carriers_carrying_each_other_go_with_their_last_holder() {
        // The kernel reads messages from the sender's memory: this process.
        let me = Cred { pid: std::process::id(), uid: 1000, gid: 1000 };
        let mut s = State::new(0, 0, Limits::default());
        let a = greeted(&mut s, 1, me);
        let carrier = |name: &str| Request::Create {
            name: n(name),
            spec: PortSpec::Carrier(comesg_proto::CarrierSpec {
                arena: 1 << 16,
                max_message: 64,
                receivers: 4,
                queue: 8,
            }),
            rights: Rights::ALL,
            mode: 0o600,
            persistent: false,
            exclusive: true,
        };
        let grant = |out: Outcome| match out.reply {
            Reply::Port(g) => g.handle,
            r => panic!("expected a port, got {r:?}"),
        };
        let ha = grant(s.handle(a, carrier("/user/1000/a")));
        let hb = grant(s.handle(a, carrier("/user/1000/b")));
        let hc = handle_of(s.handle(a, create("/user/1000/ch", false)));
        // Nameless, so that nothing but handles can reach them.
        for name in ["/user/1000/a", "/user/1000/b", "/user/1000/ch"] {
            assert_eq!(s.handle(a, Request::Unlink { name: n(name) }).reply, Reply::Done);
        }
        let msg = *b"cycle";
        let send = |s: &mut State, on: HandleId, attach: Vec<(HandleId, Rights)>| {
            let req = Request::CarrierSend { handle: on, addr: msg.as_ptr() as u64, len: msg.len() as u64, attach };
            assert_eq!(s.handle(a, req).reply, Reply::Done);
        };
        // a carries b and the channel, b carries a.
        send(&mut s, ha, vec![(hb, Rights::RECV), (hc, Rights::SEND)]);
        send(&mut s, hb, vec![(ha, Rights::ALL)]);
        assert_eq!(s.objects(), 3);
        for h in [hc, ha] {
            assert_eq!(s.handle(a, Request::Close { handle: h }).reply, Reply::Done);
        }
        // a's receiver went with its handle, and so did its message and
        // what it carried; b still holds a message carrying a.
        assert_eq!(s.objects(), 2, "the channel went with a's message; a lives in b's message");
        assert_eq!(s.handle(a, Request::Close { handle: hb }).reply, Reply::Done);
        assert_eq!(s.objects(), 0, "no cycle outlives its holders");
        assert!(s.accounting_holds());
    }

    #[test]
    fn a_callers_call_segments_count_against_its_users_memory() {
        let spec = comesg_proto::ServiceSpec { workers: 1, slot_size: 1 << 20, call_slots: 4, queue: 8 };
        let seg = comesg_shm::service::CallLayout { slots: 4, slot_size: 1 << 20 }.segment_len() as u64;
        // Each user may hold what two call segments take, not three.
        let per_user = UserLimits { memory: 2 * seg + seg / 2, ..UserLimits::default() };
        let mut s = State::new(ME.uid, ME.gid, Limits { per_user, ..Limits::default() });
        let p = greeted(&mut s, 1, ME);
        let create = Request::Create {
            name: n("/svc"),
            spec: PortSpec::Service(spec),
            rights: Rights::RECV,
            mode: 0o666,
            persistent: false,
            exclusive: true,
        };
        let made = s.handle(p, create).reply;
        assert!(matches!(made, Reply::Port(_)), "{made:?}");
        let c = greeted(&mut s, 2, OTHER);
        let open = || Request::Open { name: n("/svc"), rights: Rights::SEND };
        let h1 = match s.handle(c, open()).reply {
            Reply::Port(g) => g.handle,
            r => panic!("{r:?}"),
        };
        assert!(matches!(s.handle(c, open()).reply, Reply::Port(_)));
        assert_eq!(s.quotas.usage(OTHER.uid).memory, 2 * seg);
        let third = s.handle(c, open()).reply;
        assert!(matches!(third, Reply::Error(KernelError::Limit(ref m)) if m.contains("shared memory")), "{third:?}");
        assert!(s.accounting_holds());
        // Closing a handle gives its segment back; leaving gives back all.
        assert_eq!(s.handle(c, Request::Close { handle: h1 }).reply, Reply::Done);
        assert_eq!(s.quotas.usage(OTHER.uid).memory, seg);
        assert!(matches!(s.handle(c, open()).reply, Reply::Port(_)));
        assert!(s.accounting_holds());
        s.disconnect(c);
        assert_eq!(s.quotas.usage(OTHER.uid), Default::default());
        assert!(s.accounting_holds());
    }
}
