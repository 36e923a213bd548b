//! Coservices: a provider serves a named service with a pool of worker
//! threads; callers call it with a request and get a response. See
//! [`comesg_shm::service`] for the call path.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use comesg_proto::{Name, PortGrant, PortSpec, Reply, Request, Rights, ServiceSpec};
use comesg_shm::channel::blocking::{self, WaitError};
use comesg_shm::channel::{Geometry, Ring};
use comesg_shm::service::{CallLayout, CallSegment, CallState, ServiceHeader, Ticket, WaitEnd};
use comesg_sys::bell::Bell;
use comesg_sys::mapping::{Access, Mapping};
use comesg_sys::OwnedFd;

use crate::held::Held;
use crate::{Connection, Error};

/// How to register a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceOptions {
    /// Worker threads.
    pub workers: u32,
    /// Largest request or response in bytes.
    pub slot_size: u32,
    /// Calls each caller may have in flight at once.
    pub call_slots: u32,
    /// Calls that may wait for a worker, across all callers (a power of two).
    pub queue: u32,
    /// Permission bits: `w` lets others call, `r` lets them serve.
    pub mode: u32,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions { workers: 4, slot_size: 4096, call_slots: 16, queue: 1024, mode: 0o600 }
    }
}

/// One call as a worker sees it.
#[derive(Debug)]
pub struct Call<'a> {
    /// The request bytes.
    pub request: &'a [u8],
    /// Which worker runs it (0..workers).
    pub worker: u32,
    /// The caller's number in the service (stable while its handle lives).
    pub caller: u32,
}

/// A call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The request is longer than the service's slot size.
    #[error("request of {len} bytes exceeds the service's {max}-byte limit")]
    TooLong {
        /// Request length.
        len: usize,
        /// Slot size.
        max: u32,
    },
    /// Every call slot of this caller is in flight.
    #[error("all {0} call slots are in flight")]
    Busy(u32),
    /// No response before the timeout. The call may still run (unless no
    /// worker had taken it, in which case it was withdrawn).
    #[error("timed out waiting for the response")]
    TimedOut,
    /// The provider is gone (it exited, was killed, or closed the service);
    /// open the name again once a new provider has registered it.
    #[error("the service's provider is gone")]
    ServiceGone,
    /// The handler panicked on this request.
    #[error("the service's handler failed on this request")]
    HandlerFailed,
    /// Shared state the provider or another peer corrupted.
    #[error("service state corrupt: {0}")]
    Corrupt(String),
    /// The async runtime could not watch the service (`call_async`).
    #[error("the async runtime could not watch the service: {0}")]
    Reactor(String),
}

/// Marks a response written by a worker whose handler panicked.
const FAILED: u32 = 1 << 31;
/// How often an idle worker looks at its stop flag and at departed callers.
const WORKER_TICK: Duration = Duration::from_millis(100);

fn ring_of(spec: &ServiceSpec, g: &PortGrant, s: &OwnedFd, r: &OwnedFd) -> Result<Ring, Error> {
    let geo = Geometry { slot_size: Ticket::LEN as u32, slots: spec.queue, max_holders: g.max_holders };
    geo.validate().map_err(|e| Error::Protocol(e.to_string()))?;
    let access = |right| if g.rights.contains(right) { Access::ReadWrite } else { Access::ReadOnly };
    let s = Mapping::map(s, geo.sender_segment_len(), access(Rights::SEND))?;
    let r = Mapping::map(r, geo.receiver_segment_len(), access(Rights::RECV))?;
    let mut ring = Ring::new(geo, s, r).map_err(|e| Error::Protocol(e.to_string()))?;
    // Each call waits for its ticket to be taken: a worker must never hold
    // back a ready ticket to let a stream of them build up.
    ring.set_slipping(false);
    Ok(ring)
}

fn service_spec(name: &Name, g: &PortGrant) -> Result<ServiceSpec, Error> {
    match g.spec {
        PortSpec::Service(s) => Ok(s),
        other => Err(Error::WrongKind { name: name.clone(), found: other.kind() }),
    }
}

type Handler = dyn Fn(&Call<'_>) -> Option<Vec<u8>> + Send + Sync;

struct Shared {
    ring: Ring,
    holder: u32,
    header: ServiceHeader,
    layout: CallLayout,
    conn: Connection,
    handle: comesg_proto::HandleId,
    /// The service's bell: rung when a call completes for a caller that
    /// polls it.
    bell: Bell,
    segments: RwLock<HashMap<u32, Arc<CallSegment>>>,
    departures: AtomicU64,
    stop: AtomicBool,
    handler: Box<Handler>,
}

/// A registered service and its worker threads. Dropping it (or
/// [`Provider::stop`]) stops the workers and unregisters the service:
/// callers then get [`CallError::ServiceGone`].
pub struct Provider {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    name: Name,
    // Declared last: dropped after the workers have stopped.
    held: Option<Held>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("name", &self.name).field("workers", &self.workers.len()).finish()
    }
}

impl Provider {
    pub(crate) fn start(
        conn: Connection,
        name: Name,
        g: PortGrant,
        fds: Vec<OwnedFd>,
        handler: Box<Handler>,
    ) -> Result<Provider, Error> {
        let held = Held::new(conn.clone(), g.handle, &name);
        let handle = g.handle;
        let spec = service_spec(&name, &g)?;
        let [s, r, h, bell]: [OwnedFd; 4] =
            fds.try_into().map_err(|v: Vec<_>| Error::Protocol(format!("expected 4 fds, got {}", v.len())))?;
        let ring = ring_of(&spec, &g, &s, &r)?;
        let holder = g.recv_holder.ok_or_else(|| Error::Protocol("provider handle without RECV".into()))?;
        let hlen = comesg_shm::service::header_len(spec.workers);
        let header = ServiceHeader::new(spec.workers, Mapping::map(&h, hlen, Access::ReadWrite)?)
            .map_err(|e| Error::Protocol(e.into()))?;
        let shared = Arc::new(Shared {
            ring,
            holder,
            header,
            layout: CallLayout { slots: spec.call_slots, slot_size: spec.slot_size },
            conn,
            handle,
            bell: Bell::from_fd(bell),
            segments: RwLock::new(HashMap::new()),
            departures: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            handler,
        });
        let mut workers = Vec::new();
        for w in 0..spec.workers {
            let sh = shared.clone();
            let t = std::thread::Builder::new().name(format!("comesg-worker-{w}")).spawn(move || sh.work(w));
            match t {
                Ok(t) => workers.push(t),
                Err(e) => {
                    shared.stop.store(true, Relaxed);
                    for t in workers {
                        let _ = t.join();
                    }
                    return Err(Error::Io(e));
                }
            }
        }
        Ok(Provider { shared, workers, name, held: Some(held) })
    }

    /// The service's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// Calls served by each worker so far.
    pub fn worker_calls(&self) -> Vec<u64> {
        self.shared.header.calls()
    }

    /// Stops the workers (each finishes the call it runs) and unregisters
    /// the service, reporting whether the kernel acknowledged it.
    pub fn stop(mut self) -> Result<(), Error> {
        self.join();
        self.held.take().map_or(Ok(()), Held::close)
    }

    fn join(&mut self) {
        self.shared.stop.store(true, Relaxed);
        for t in self.workers.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.join();
    }
}

impl Shared {
    fn work(&self, w: u32) {
        let mut ticket = [0u8; Ticket::LEN];
        let mut last = LastCaller::default();
        while !self.stop.load(Relaxed) {
            // A ticket already queued needs no deadline, so no clock read.
            match blocking::recv_by(&self.ring, self.holder, &mut ticket, || Some(Instant::now() + WORKER_TICK)) {
                Ok(len) => {
                    if len != Ticket::LEN {
                        continue;
                    }
                    if let Some(t) = Ticket::decode(&ticket) {
                        self.serve(w, t, &mut last);
                    }
                }
                Err(WaitError::TimedOut) => {}
                Err(e) => {
                    tracing::warn!("service worker {w}: request channel: {e}");
                    std::thread::sleep(WORKER_TICK);
                }
            }
            self.forget_departed();
            // Let go of a departed caller's segment now, not at the next
            // call this worker serves.
            if last.seg.as_ref().is_some_and(|(_, d, _)| *d != self.header.departures()) {
                last.seg = None;
            }
        }
    }

    fn serve(&self, w: u32, t: Ticket, last: &mut LastCaller) {
        let Some(seg) = self.segment_cached(t.caller, last) else { return };
        let Some(req) = seg.claim(t.slot) else { return };
        let call = Call { request: &req, worker: w, caller: t.caller };
        match catch_unwind(AssertUnwindSafe(|| (self.handler)(&call))) {
            Ok(Some(resp)) => seg.complete(t.slot, w, &resp, Some(&self.bell)),
            Ok(None) | Err(_) => seg.complete(t.slot, w | FAILED, &[], Some(&self.bell)),
        }
        self.header.count_call(w);
    }

    /// The caller's call segment, as `segment` gives it, kept by the worker
    /// for as long as no caller has left the service (a caller's number can
    /// only be given again after it left). A worker serving one caller then
    /// takes no lock and touches no reference count per call.
    fn segment_cached<'a>(&self, caller: u32, last: &'a mut LastCaller) -> Option<&'a CallSegment> {
        let departures = self.header.departures();
        let hit = matches!(&last.seg, Some((c, d, _)) if *c == caller && *d == departures);
        if !hit {
            last.seg = None;
            let seg = self.segment(caller)?;
            // The map may still hold a departed caller's segment until
            // `forget_departed` runs: its tickets are stale.
            if seg.caller_gone() {
                return None;
            }
            last.seg = Some((caller, departures, seg));
        }
        last.seg.as_ref().map(|(_, _, s)| &**s)
    }

    /// The caller's call segment: cached, or asked of the kernel once.
    fn segment(&self, caller: u32) -> Option<Arc<CallSegment>> {
        if let Some(s) = self.segments.read().unwrap_or_else(|p| p.into_inner()).get(&caller) {
            return Some(s.clone());
        }
        let fd = match self.conn.request(Request::CallerSegment { handle: self.handle, caller }) {
            Ok((Reply::Segment, mut fds)) if fds.len() == 1 => fds.pop()?,
            // A forged ticket or a caller gone since: nothing to answer.
            _ => return None,
        };
        let map = Mapping::map(&fd, self.layout.segment_len(), Access::ReadWrite).ok()?;
        let seg = Arc::new(CallSegment::new(self.layout, map).ok()?);
        self.segments.write().unwrap_or_else(|p| p.into_inner()).insert(caller, seg.clone());
        Some(seg)
    }

    fn forget_departed(&self) {
        let now = self.header.departures();
        if self.departures.swap(now, Relaxed) != now {
            self.segments.write().unwrap_or_else(|p| p.into_inner()).retain(|_, s| !s.caller_gone());
        }
    }
}

/// The call segment a worker used last, with the departure count when it
/// looked it up.
#[derive(Default)]
struct LastCaller {
    seg: Option<(u32, u64, Arc<CallSegment>)>,
}

/// A caller's handle to a service. Cheap to share between threads; get one
/// with [`Connection::service`], which caches it.
#[derive(Debug)]
pub struct ServiceClient {
    ring: Ring,
    holder: u32,
    seg: CallSegment,
    caller: u32,
    free: Mutex<Vec<u32>>,
    /// Slots whose caller stopped waiting while a worker ran the call.
    abandoned: Mutex<Vec<u32>>,
    next_call: AtomicU64,
    held: Held,
    name: Name,
    spec: ServiceSpec,
}

/// A call in flight ([`ServiceClient::start`]); [`PendingCall::wait`] for
/// its response. Dropping it abandons the response.
#[derive(Debug)]
pub struct PendingCall<'a> {
    client: Client<'a>,
    slot: Option<u32>,
}

/// The handle a call was started on: borrowed, or shared so that the call
/// can move to another thread ([`ServiceClient::try_start_owned`]).
#[derive(Debug)]
enum Client<'a> {
    Borrowed(&'a ServiceClient),
    Shared(Arc<ServiceClient>),
}

impl std::ops::Deref for Client<'_> {
    type Target = ServiceClient;

    fn deref(&self) -> &ServiceClient {
        match self {
            Client::Borrowed(c) => c,
            Client::Shared(c) => c,
        }
    }
}

impl ServiceClient {
    pub(crate) fn attach(conn: Connection, name: Name, g: PortGrant, fds: Vec<OwnedFd>) -> Result<Self, Error> {
        let held = Held::new(conn, g.handle, &name);
        let spec = service_spec(&name, &g)?;
        let [s, r, _header, c, bell]: [OwnedFd; 5] =
            fds.try_into().map_err(|v: Vec<_>| Error::Protocol(format!("expected 5 fds, got {}", v.len())))?;
        let mut ring = ring_of(&spec, &g, &s, &r)?;
        ring.set_bell(Bell::from_fd(bell));
        let holder = g.send_holder.ok_or_else(|| Error::Protocol("caller handle without SEND".into()))?;
        let caller = g.caller.ok_or_else(|| Error::Protocol("caller handle without a call segment".into()))?;
        let layout = CallLayout { slots: spec.call_slots, slot_size: spec.slot_size };
        let map = Mapping::map(&c, layout.segment_len(), Access::ReadWrite)?;
        let seg = CallSegment::new(layout, map).map_err(|e| Error::Protocol(e.into()))?;
        Ok(ServiceClient {
            ring,
            holder,
            seg,
            caller,
            free: Mutex::new((0..spec.call_slots).rev().collect()),
            abandoned: Mutex::new(Vec::new()),
            next_call: AtomicU64::new(0),
            held,
            name,
            spec,
        })
    }

    /// The service's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The service's shape.
    pub fn spec(&self) -> ServiceSpec {
        self.spec
    }

    /// Whether the provider this handle was opened on is gone.
    pub fn is_gone(&self) -> bool {
        self.seg.is_dead()
    }

    fn take_slot(&self) -> Result<u32, CallError> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.is_empty() {
            let mut ab = self.abandoned.lock().unwrap_or_else(|p| p.into_inner());
            ab.retain(|&s| {
                let done = self.seg.reclaim(s);
                if done {
                    free.push(s);
                }
                !done
            });
        }
        // Matched, not `ok_or`: see `Channel::sender`.
        match free.pop() {
            Some(slot) => Ok(slot),
            None => Err(CallError::Busy(self.spec.call_slots)),
        }
    }

    fn give_slot(&self, slot: u32) {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).push(slot);
    }

    /// Sends a request without waiting for its response: several calls can
    /// be in flight at once (up to the service's `call_slots`).
    pub fn start(&self, req: &[u8]) -> Result<PendingCall<'_>, CallError> {
        self.start_until(req, None)
    }

    /// Like [`ServiceClient::start`], but never waits: `Ok(None)` when the
    /// service's request queue is full, [`CallError::Busy`] when every call
    /// slot of this handle is in flight (nothing was started either way).
    pub fn try_start(&self, req: &[u8]) -> Result<Option<PendingCall<'_>>, CallError> {
        self.start_with(req, |ticket| match self.ring.try_send(self.holder, ticket) {
            Ok(()) => Ok(true),
            Err(comesg_shm::channel::RingError::Full) => Ok(false),
            Err(e) => Err(CallError::Corrupt(e.to_string())),
        })
    }

    /// Like [`ServiceClient::try_start`], for a shared handle: the call
    /// holds its own reference, so one thread can start it and another
    /// wait for it.
    ///
    /// ```no_run
    /// # fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let conn = comesg::Connection::connect_default()?;
    /// let svc = conn.service("/app/upper")?;
    /// if let Some(call) = svc.try_start_owned(b"hi")? {
    ///     let waiter = std::thread::spawn(move || call.wait());
    ///     assert_eq!(waiter.join().unwrap()?, b"HI");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn try_start_owned(self: &Arc<Self>, req: &[u8]) -> Result<Option<PendingCall<'static>>, CallError> {
        Ok(self
            .try_start(req)?
            .map(|mut call| PendingCall { client: Client::Shared(self.clone()), slot: call.slot.take() }))
    }

    fn start_until(&self, req: &[u8], deadline: Option<Instant>) -> Result<PendingCall<'_>, CallError> {
        let send = |ticket: &[u8]| {
            // A lone caller with room in the queue sends in one piece.
            if let Some(r) = self.ring.try_send_sole(self.holder, ticket) {
                return r.map(|()| true).map_err(|e| CallError::Corrupt(e.to_string()));
            }
            let mut claim = self.claim_ticket(deadline)?;
            self.ring.write(&mut claim, ticket).map_err(|e| CallError::Corrupt(e.to_string()))?;
            self.ring.publish(claim, ticket.len()).map_err(|e| CallError::Corrupt(e.to_string()))?;
            Ok(true)
        };
        self.start_with(req, send)?.ok_or_else(|| CallError::Corrupt("no ticket slot".into()))
    }

    /// Posts `req` and sends its ticket with `send` (`false`: the request
    /// queue is full; then nothing was started).
    fn start_with(
        &self,
        req: &[u8],
        send: impl FnOnce(&[u8]) -> Result<bool, CallError>,
    ) -> Result<Option<PendingCall<'_>>, CallError> {
        if req.len() > self.spec.slot_size as usize {
            return Err(CallError::TooLong { len: req.len(), max: self.spec.slot_size });
        }
        if self.seg.is_dead() {
            return Err(CallError::ServiceGone);
        }
        let slot = self.take_slot()?;
        if let Err(e) = self.seg.post(slot, req) {
            self.give_slot(slot);
            return Err(CallError::Corrupt(e.into()));
        }
        let call = self.next_call.fetch_add(1, Relaxed);
        let ticket = Ticket { caller: self.caller, slot, call }.encode();
        let sent = send(&ticket);
        match sent {
            Ok(true) => Ok(Some(PendingCall { client: Client::Borrowed(self), slot: Some(slot) })),
            Ok(false) if self.seg.cancel(slot) => {
                self.give_slot(slot);
                Ok(None)
            }
            Ok(false) => {
                self.abandoned.lock().unwrap_or_else(|p| p.into_inner()).push(slot);
                Ok(None)
            }
            Err(e) => {
                if self.seg.cancel(slot) {
                    self.give_slot(slot);
                } else {
                    // A stale ticket got a worker onto this call: reclaim
                    // the slot once it is done.
                    self.abandoned.lock().unwrap_or_else(|p| p.into_inner()).push(slot);
                }
                Err(e)
            }
        }
    }

    /// Waits for room in the request queue, in naps so that a provider's
    /// death (after which nobody drains the queue) is noticed.
    fn claim_ticket(&self, deadline: Option<Instant>) -> Result<comesg_shm::channel::SendClaim, CallError> {
        loop {
            // Room at once (the usual case) needs no clock, which would cost
            // each call 25-40 ns before its ticket goes out.
            let until = || {
                let nap = Instant::now() + WORKER_TICK;
                Some(deadline.map_or(nap, |d| d.min(nap)))
            };
            match blocking::claim_send_by(&self.ring, self.holder, until) {
                Ok(c) => return Ok(c),
                Err(WaitError::TimedOut) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    return Err(CallError::TimedOut)
                }
                Err(WaitError::TimedOut) if self.seg.is_dead() => return Err(CallError::ServiceGone),
                Err(WaitError::TimedOut) => {}
                Err(WaitError::Ring(r)) => return Err(CallError::Corrupt(r.to_string())),
            }
        }
    }

    /// Calls the service: sends `req` and waits for the response.
    pub fn call(&self, req: &[u8]) -> Result<Vec<u8>, CallError> {
        self.start(req)?.wait()
    }

    /// Like [`ServiceClient::call`], giving up after `timeout`.
    pub fn call_timeout(&self, req: &[u8], timeout: Duration) -> Result<Vec<u8>, CallError> {
        let deadline = crate::deadline(timeout);
        self.start_until(req, deadline)?.wait_until(deadline)
    }

    /// Closes the handle (dropping closes too, silently).
    pub fn close(self) -> Result<(), Error> {
        self.held.close()
    }
}

impl crate::copoll::sealed::Source for PendingCall<'_> {
    fn bell(&self) -> Option<&Bell> {
        self.client.ring.bell()
    }

    fn readiness(&self, interest: crate::Interest) -> crate::Readiness {
        let mut out = crate::Readiness::default();
        let Some(slot) = self.slot else {
            out.error = true;
            return out;
        };
        if interest.is_readable() {
            match self.client.seg.call_state(slot) {
                CallState::Running => {}
                CallState::Done => out.readable = true,
                CallState::Dead => (out.readable, out.closed) = (true, true),
                CallState::Corrupt => out.error = true,
            }
        }
        out
    }

    fn arm(&self, interest: crate::Interest) {
        if let (true, Some(slot)) = (interest.is_readable(), self.slot) {
            self.client.seg.arm(slot);
        }
    }

    fn disarm(&self, interest: crate::Interest) {
        if let (true, Some(slot)) = (interest.is_readable(), self.slot) {
            self.client.seg.disarm(slot);
        }
    }
}

impl PendingCall<'_> {
    /// Waits for the response.
    pub fn wait(self) -> Result<Vec<u8>, CallError> {
        self.wait_until(None)
    }

    /// Waits for the response at most `timeout`.
    pub fn wait_timeout(self, timeout: Duration) -> Result<Vec<u8>, CallError> {
        self.wait_until(crate::deadline(timeout))
    }

    fn wait_until(self, deadline: Option<Instant>) -> Result<Vec<u8>, CallError> {
        let Some(slot) = self.slot else { return Err(CallError::Corrupt("call already waited for".into())) };
        let end = self.client.seg.wait_done(slot, deadline);
        self.finish(end)
    }

    /// Takes the response once the wait for it ended with `end`.
    fn finish(mut self, end: Result<(), WaitEnd>) -> Result<Vec<u8>, CallError> {
        let Some(slot) = self.slot else { return Err(CallError::Corrupt("call already waited for".into())) };
        let c = &*self.client;
        match end {
            Ok(()) => {
                self.slot = None;
                let r = c.seg.take_response(slot);
                c.give_slot(slot);
                match r {
                    Ok((_, w)) if w & FAILED != 0 => Err(CallError::HandlerFailed),
                    Ok((resp, _)) => Ok(resp),
                    Err(e) => Err(CallError::Corrupt(e.into())),
                }
            }
            Err(WaitEnd::TimedOut) => Err(CallError::TimedOut),
            Err(WaitEnd::Dead) => Err(CallError::ServiceGone),
            Err(WaitEnd::Corrupt) => Err(CallError::Corrupt("call slot in an impossible state".into())),
        }
    }

    /// Where the call stands, without waiting: `None` while it runs.
    fn poll_end(&self) -> Option<Result<(), WaitEnd>> {
        match self.client.seg.call_state(self.slot?) {
            CallState::Running => None,
            CallState::Done => Some(Ok(())),
            CallState::Dead => Some(Err(WaitEnd::Dead)),
            CallState::Corrupt => Some(Err(WaitEnd::Corrupt)),
        }
    }

    /// The response if it is in (or the provider's death), without waiting;
    /// the call stays pending (`Err(self)`) while a worker runs it.
    pub fn try_wait(self) -> Result<Result<Vec<u8>, CallError>, Self> {
        match self.poll_end() {
            Some(end) => Ok(self.finish(end)),
            None => Err(self),
        }
    }

    /// Waits for the response without a thread (feature `tokio`).
    /// Cancellation-safe: dropping the future abandons the response, as
    /// dropping the call does.
    #[cfg(feature = "tokio")]
    pub async fn wait_async(self) -> Result<Vec<u8>, CallError> {
        let end = crate::async_wait::until_ready(&self, crate::Interest::READABLE, || {
            self.poll_end().map(Ok::<_, CallError>)
        })
        .await?;
        self.finish(end)
    }
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let c = &*self.client;
            if c.seg.cancel(slot) {
                c.give_slot(slot);
            } else {
                c.abandoned.lock().unwrap_or_else(|p| p.into_inner()).push(slot);
            }
        }
    }
}

/// The request queue's free slots, as a port to wait on (async calls).
#[cfg(feature = "tokio")]
struct RequestQueue<'a>(&'a ServiceClient);

#[cfg(feature = "tokio")]
impl crate::copoll::sealed::Source for RequestQueue<'_> {
    fn bell(&self) -> Option<&Bell> {
        self.0.ring.bell()
    }

    fn readiness(&self, interest: crate::Interest) -> crate::Readiness {
        let mut r = crate::channel::ring_readiness(&self.0.ring, Some(self.0.holder), None, interest);
        // Nobody drains the queue of a dead service.
        r.closed |= self.0.seg.is_dead();
        r
    }

    fn arm(&self, interest: crate::Interest) {
        crate::channel::ring_arm(&self.0.ring, Some(self.0.holder), None, interest, true);
    }

    fn disarm(&self, interest: crate::Interest) {
        crate::channel::ring_arm(&self.0.ring, Some(self.0.holder), None, interest, false);
    }

    fn settling(&self, interest: crate::Interest) -> bool {
        crate::channel::ring_settling(&self.0.ring, interest)
    }
}

#[cfg(feature = "tokio")]
impl From<std::io::Error> for CallError {
    fn from(e: std::io::Error) -> Self {
        CallError::Reactor(e.to_string())
    }
}

#[cfg(feature = "tokio")]
impl ServiceClient {
    /// Calls the service without a thread waiting (feature `tokio`): waits
    /// for a free call slot (when more calls than the service's
    /// `call_slots` are in flight), for room in the request queue, and then
    /// for the response, all on the runtime. Cancellation-safe: a cancelled call either was never sent
    /// or has its response abandoned (its slot is reclaimed later).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let conn = comesg::Connection::connect_default()?;
    /// let svc = conn.service("/app/upper")?;
    /// assert_eq!(svc.call_async(b"hi").await?, b"HI");
    /// # Ok(()) }
    /// ```
    pub async fn call_async(&self, req: &[u8]) -> Result<Vec<u8>, CallError> {
        let queue = RequestQueue(self);
        let mut nap = Duration::from_micros(50);
        loop {
            match self.try_start(req) {
                Ok(Some(call)) => return call.wait_async().await,
                Ok(None) => {}
                // More calls in flight than call slots: wait for one of
                // them (they finish on their own tasks) rather than fail.
                Err(CallError::Busy(_)) => {
                    tokio::time::sleep(nap).await;
                    nap = (nap * 2).min(Duration::from_millis(2));
                    continue;
                }
                Err(e) => return Err(e),
            }
            // The queue is full: wait until a worker takes a ticket.
            crate::async_wait::until_ready(&queue, crate::Interest::WRITABLE, || {
                let r = crate::copoll::sealed::Source::readiness(&queue, crate::Interest::WRITABLE);
                if r.closed {
                    Some(Err(CallError::ServiceGone))
                } else {
                    (r.writable || r.error).then_some(Ok(()))
                }
            })
            .await?;
        }
    }
}
