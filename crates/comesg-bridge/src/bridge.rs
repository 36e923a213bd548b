//! The bridge: one client of the local microkernel and one Zenoh peer,
//! exporting local names and importing other hosts' exports.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use comesg::{
    CallError, ChannelOptions, CocarrierOptions, Connection, PendingCall, Provider, Rights, ServiceClient,
    ServiceOptions,
};
use zenoh::query::Query;
use zenoh::sample::{Sample, SampleKind};
use zenoh::{Session, Wait};

use crate::export::{scan, ExportSpec, Exported};
use crate::link::{Injector, Route, Taker};
use crate::net::Outbox;
use crate::port::Port;
use crate::wire::{self, Body, Dir, ExportKind, ExportMeta, Frame};

/// What a bridge does.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// This host's name, as other hosts see it.
    pub host: String,
    /// Names to offer to other hosts.
    pub exports: Vec<ExportSpec>,
    /// Whether to make other hosts' exports reachable here.
    pub import: bool,
    /// Where imports appear: `MOUNT/HOST/path`.
    pub mount: String,
    /// Group and other bits for imported names (the bridge's own user always
    /// has read and write); narrowed further by what the exporter allows.
    pub import_mode: u32,
    /// How long an imported service call waits for the far provider.
    pub call_timeout: Duration,
    /// How often the export prefixes are looked at again.
    pub scan_every: Duration,
}

/// Threads that run calls from far bridges.
const CALL_THREADS: usize = 4;

/// Most calls from far bridges waiting for a call thread; more are refused
/// before anything is started.
const CALLS_QUEUED: usize = 1024;

/// A call from a far bridge, for a call thread: started already (it waits
/// for the response), or still to start.
enum Call {
    Started(Query, PendingCall<'static>),
    ToStart(Query),
}

/// Locks a mutex, whatever a panicking thread left in it (the maps hold no
/// invariant a half-done update could break).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a frame's messages fit the port; the whole frame is rejected if
/// one does not.
fn fits(msgs: &[&[u8]], max: u64, from: &str, port: &str) -> bool {
    if msgs.len() > wire::MAX_BATCH {
        tracing::warn!("rejected a frame of {} messages from {from} for {port}", msgs.len());
        return false;
    }
    match msgs.iter().find(|m| m.len() as u64 > max) {
        Some(m) => {
            tracing::warn!("rejected a {}-byte message from {from} for {port} (at most {max} bytes)", m.len());
            false
        }
        None => true,
    }
}

/// The exporting side of one (importer, port) pair.
#[derive(Default)]
struct ExportLink {
    /// Messages from the importer's senders into the port.
    injector: Option<Arc<Injector>>,
    /// Messages from the port to the importer's receivers.
    taker: Option<Taker>,
}

/// A channel or carrier imported from another host.
struct ChannelImport {
    local: String,
    meta: ExportMeta,
    /// The bridge's own handle: keeps the mirror alive while the exporter is.
    _mirror: Port,
    /// Takes what local senders send, for the exporter (when no local
    /// receiver is there to take it).
    up: Option<Taker>,
    /// Sends what the exporter forwards into the mirror.
    down: Option<Injector>,
    demand: AtomicBool,
}

enum Import {
    Channel(Arc<ChannelImport>),
    /// Kept for its workers: dropping it unregisters the local name.
    Service {
        _provider: Provider,
    },
}

struct Inner {
    conn: Connection,
    outbox: Outbox,
    cfg: BridgeConfig,
    pid: u32,
    next_stream: AtomicU64,
    exported: Mutex<HashMap<String, Exported>>,
    links: Mutex<HashMap<(String, String), ExportLink>>,
    /// Exports other hosts announce (host, path), whether imported yet or not.
    announced: Mutex<HashSet<(String, String)>>,
    /// Imports being set up now, so that a repeated announcement does not
    /// start a second one.
    importing: Mutex<HashSet<(String, String)>>,
    /// Hosts whose bridge is up (its liveliness token is there): frames from
    /// any other name are refused, so a made-up name cannot create state.
    live: Mutex<HashSet<String>>,
    imports: Mutex<HashMap<(String, String), Import>>,
    /// Handles of the exported services that far bridges call, kept open:
    /// opening one per call cost two microkernel round trips and a wake-up
    /// of the provider, about half of each call's time.
    services: Mutex<HashMap<String, Arc<ServiceClient>>>,
    /// Calls handed to the call threads and not yet taken by one: the gate
    /// that keeps their queue from ever refusing a call already started.
    calls_queued: AtomicUsize,
    /// Calls started on Zenoh's thread and not yet finished. At most one
    /// per call thread, so that they never take all of a handle's call
    /// slots from the calls the threads start themselves.
    calls_started: AtomicUsize,
    /// Takes what must be dropped off Zenoh's threads: dropping a link or
    /// an import joins threads that may be waiting on Zenoh themselves.
    reaper: Mutex<std::sync::mpsc::Sender<Box<dyn std::any::Any + Send>>>,
    stop: AtomicBool,
}

/// A running bridge. Dropping it withdraws its exports and imports.
pub struct Bridge {
    inner: Arc<Inner>,
    threads: Vec<std::thread::JoinHandle<()>>,
    _keep: Vec<Box<dyn std::any::Any + Send>>,
}

/// Why a bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The host name cannot be a key chunk and a name component.
    #[error("bad host name {0:?}: use letters, digits, '.', '_' and '-'")]
    BadHost(String),
    /// The mount point is not a name.
    #[error("bad mount point {0:?}: {1}")]
    BadMount(String, String),
    /// Zenoh refused.
    #[error("zenoh: {0}")]
    Net(String),
    /// A thread could not be started.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Bridge {
    /// Starts a bridge on an open kernel connection and Zenoh session.
    pub fn start(conn: Connection, session: Session, cfg: BridgeConfig) -> Result<Bridge, StartError> {
        if !wire::valid_host(&cfg.host) {
            return Err(StartError::BadHost(cfg.host));
        }
        comesg_proto::Name::try_from(format!("{}/{}", cfg.mount.trim_end_matches('/'), cfg.host))
            .map_err(|e| StartError::BadMount(cfg.mount.clone(), e.to_string()))?;
        let net = |e: zenoh::Error| StartError::Net(e.to_string());
        let (reap_tx, reap_rx) = std::sync::mpsc::channel::<Box<dyn std::any::Any + Send>>();
        let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let inner = Arc::new(Inner {
            conn,
            outbox: Outbox::new(session.clone(), cfg.host.clone()),
            pid: std::process::id(),
            // Streams of a restarted bridge must not repeat old ones.
            next_stream: AtomicU64::new(seed ^ (u64::from(std::process::id()) << 40)),
            cfg,
            exported: Mutex::default(),
            links: Mutex::default(),
            announced: Mutex::default(),
            importing: Mutex::default(),
            live: Mutex::default(),
            imports: Mutex::default(),
            services: Mutex::default(),
            calls_queued: AtomicUsize::new(0),
            calls_started: AtomicUsize::new(0),
            reaper: Mutex::new(reap_tx),
            stop: AtomicBool::new(false),
        });
        // Not joined: it ends when the last sender (in `inner`) is dropped.
        std::thread::Builder::new().name("reaper".into()).spawn(move || {
            while let Ok(gone) = reap_rx.recv() {
                drop(gone);
            }
        })?;
        let me = inner.cfg.host.clone();
        let mut keep: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
        keep.push(Box::new(session.liveliness().declare_token(wire::alive(&me)).wait().map_err(net)?));

        let i = inner.clone();
        let sub = session
            .declare_subscriber(wire::inbox(&me))
            .callback(move |s: Sample| i.on_frame(&s.payload().to_bytes()))
            .wait()
            .map_err(net)?;
        keep.push(Box::new(sub));

        let i = inner.clone();
        let peers = session
            .liveliness()
            .declare_subscriber(wire::ALL_ALIVE)
            .history(true)
            .callback(move |s: Sample| {
                let Some(host) = s.key_expr().as_str().split('/').nth(1) else { return };
                match s.kind() {
                    SampleKind::Put => {
                        lock(&i.live).insert(host.to_string());
                    }
                    SampleKind::Delete => {
                        lock(&i.live).remove(host);
                        i.peer_gone(host);
                    }
                }
            })
            .wait()
            .map_err(net)?;
        keep.push(Box::new(peers));

        let i = inner.clone();
        let meta = session
            .declare_queryable(format!("comesg/{me}/meta/**"))
            .callback(move |q: Query| i.on_meta(&q))
            .wait()
            .map_err(net)?;
        keep.push(Box::new(meta));

        let mut threads = Vec::new();
        // Service calls block; a few threads run them, fed by the queryable.
        // One queue for all of them, so that a call wakes one idle thread
        // and nothing else (a shared std receiver behind a mutex woke the
        // next thread in line at every call).
        let (calls_tx, calls_rx) = crossbeam_channel::bounded::<Call>(CALLS_QUEUED);
        for n in 0..CALL_THREADS {
            let i = inner.clone();
            let rx = calls_rx.clone();
            threads.push(std::thread::Builder::new().name(format!("calls {n}")).spawn(move || loop {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(call) => {
                        i.calls_queued.fetch_sub(1, Relaxed);
                        match call {
                            Call::Started(q, call) => {
                                i.answer(&q, call.wait_timeout(i.cfg.call_timeout));
                                i.calls_started.fetch_sub(1, Relaxed);
                            }
                            Call::ToStart(q) => i.on_call(&q),
                        }
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) if !i.stop.load(Relaxed) => i.let_go(),
                    Err(_) => return,
                }
            })?);
        }
        let i = inner.clone();
        let calls = session
            .declare_queryable(format!("comesg/{me}/call/**"))
            .callback(move |q: Query| {
                // Refused before anything starts when too many wait.
                if i.calls_queued.fetch_add(1, Relaxed) >= CALLS_QUEUED {
                    i.calls_queued.fetch_sub(1, Relaxed);
                    let _ = q.reply_err("the bridge has too many calls waiting").wait();
                    return;
                }
                // Started here when it can be without waiting, so that the
                // provider's worker wakes while a call thread wakes to wait
                // for the response, rather than after it.
                let call = match i.start_call(&q) {
                    Some(call) => Call::Started(q, call),
                    None => Call::ToStart(q),
                };
                // The gate above leaves room: this fails only when the
                // bridge is stopping.
                if calls_tx.try_send(call).is_err() {
                    i.calls_queued.fetch_sub(1, Relaxed);
                }
            })
            .wait()
            .map_err(net)?;
        keep.push(Box::new(calls));

        if !inner.cfg.exports.is_empty() {
            let i = inner.clone();
            threads.push(std::thread::Builder::new().name("exports".into()).spawn(move || i.scan_loop())?);
        }
        if inner.cfg.import {
            let i = inner.clone();
            let imports = session
                .liveliness()
                .declare_subscriber(wire::ALL_EXPORTS)
                .history(true)
                .callback(move |s: Sample| i.on_export_token(&s))
                .wait()
                .map_err(net)?;
            keep.push(Box::new(imports));
            let i = inner.clone();
            threads.push(std::thread::Builder::new().name("demand".into()).spawn(move || i.demand_loop())?);
        }
        Ok(Bridge { inner, threads, _keep: keep })
    }

    /// Names this bridge offers now.
    pub fn exported(&self) -> Vec<String> {
        lock(&self.inner.exported).keys().cloned().collect()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.inner.stop.store(true, Relaxed);
        self._keep.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        lock(&self.inner.imports).clear();
        lock(&self.inner.links).clear();
        lock(&self.inner.exported).clear();
        lock(&self.inner.services).clear();
    }
}

impl Inner {
    /// Drops `what` on the reaper thread.
    fn reap(&self, what: impl std::any::Any + Send) {
        let _ = lock(&self.reaper).send(Box::new(what));
    }

    fn stream(&self) -> u64 {
        self.next_stream.fetch_add(1, Relaxed)
    }

    fn exported_meta(&self, port: &str) -> Option<ExportMeta> {
        lock(&self.exported).get(port).map(|e| e.meta)
    }

    // ---- frames -------------------------------------------------------

    fn on_frame(&self, bytes: &[u8]) {
        let frame = match Frame::decode(bytes) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("rejected a frame from the network: {e}");
                return;
            }
        };
        if !wire::valid_host(&frame.from) || frame.from == self.cfg.host {
            tracing::warn!("rejected a frame claiming to come from {:?}", frame.from);
            return;
        }
        if !lock(&self.live).contains(&frame.from) {
            tracing::warn!("rejected a frame from {:?}, whose bridge is not up", frame.from);
            return;
        }
        if let Body::Msg { seq, msgs, .. } = &frame.body {
            if *seq == 0 || seq.checked_add(msgs.len() as u64).is_none() || msgs.is_empty() {
                tracing::warn!("rejected a frame from {} numbered {seq} with {} messages", frame.from, msgs.len());
                return;
            }
        }
        let from = frame.from;
        match frame.body {
            Body::Msg { port, dir: Dir::Up, stream, seq, msgs } => self.msg_up(&from, &port, stream, seq, msgs),
            Body::Msg { port, dir: Dir::Down, stream, seq, msgs } => self.msg_down(&from, &port, stream, seq, msgs),
            Body::Demand { port, on } => self.demand(&from, &port, on),
            Body::Ack { port, dir: Dir::Down, stream, upto } => {
                if let Some(t) = lock(&self.links).get(&(from.clone(), port.clone())).and_then(|l| l.taker.as_ref()) {
                    t.ack(stream, upto);
                }
            }
            Body::Ack { port, dir: Dir::Up, stream, upto } => {
                if let Some(Import::Channel(c)) = lock(&self.imports).get(&(from.clone(), port.clone())) {
                    if let Some(t) = &c.up {
                        t.ack(stream, upto);
                    }
                }
            }
        }
    }

    /// A message from an importer's senders, for an exported channel.
    fn msg_up(&self, from: &str, port: &str, stream: u64, seq: u64, msgs: Vec<&[u8]>) {
        let Some(meta) = self.exported_meta(port) else {
            tracing::warn!("rejected a message from {from} for {port:?}, which is not exported");
            return;
        };
        let Some(max) = meta.kind.max_message() else {
            tracing::warn!("rejected a message from {from} for {port}, which carries no messages");
            return;
        };
        if !meta.rights.contains(Rights::SEND) {
            tracing::warn!("rejected a message from {from} for {port}: exported without send");
            return;
        }
        if !fits(&msgs, max, from, port) {
            return;
        }
        let injector = {
            let mut links = lock(&self.links);
            let link = links.entry((from.to_string(), port.to_string())).or_default();
            if link.injector.is_none() {
                let route = Route { peer: from.to_string(), port: port.to_string(), dir: Dir::Up };
                match Injector::spawn(&self.conn, port, meta.kind, route, self.outbox.clone()) {
                    Ok(i) => link.injector = Some(Arc::new(i)),
                    Err(e) => {
                        tracing::warn!("{port}: cannot send for {from}: {e}");
                        return;
                    }
                }
            }
            link.injector.clone()
        };
        // Not under the lock: pushing may acknowledge, which may wait on
        // the network.
        if let Some(i) = injector {
            i.push(stream, seq, &msgs);
            // Only if the link went meanwhile is ours the last reference,
            // whose drop joins a thread: not on Zenoh's thread.
            if let Some(last) = Arc::into_inner(i) {
                self.reap(last);
            }
        }
    }

    /// A message from an exported channel, for this host's mirror of it.
    fn msg_down(&self, from: &str, port: &str, stream: u64, seq: u64, msgs: Vec<&[u8]>) {
        let found = match lock(&self.imports).get(&(from.to_string(), port.to_string())) {
            Some(Import::Channel(c)) => Some(c.clone()),
            _ => None,
        };
        let Some(c) = found else {
            tracing::warn!("rejected a message from {from} for {port:?}, which is not imported from there");
            return;
        };
        let (Some(max), Some(down)) = (c.meta.kind.max_message(), &c.down) else { return };
        if !fits(&msgs, max, from, port) {
            return;
        }
        down.push(stream, seq, &msgs);
        if let Some(last) = Arc::into_inner(c) {
            self.reap(last);
        }
    }

    /// An importer wants messages from an exported channel (or not).
    fn demand(&self, from: &str, port: &str, on: bool) {
        let key = (from.to_string(), port.to_string());
        if !on {
            if let Some(t) = lock(&self.links).get(&key).and_then(|l| l.taker.as_ref()) {
                t.set_active(false);
            }
            return;
        }
        let Some(meta) = self.exported_meta(port) else {
            tracing::warn!("refused {from} messages from {port:?}, which is not exported");
            return;
        };
        if meta.kind.max_message().is_none() || !meta.rights.contains(Rights::RECV) {
            tracing::warn!("refused {from} messages from {port}: not a port exported with recv");
            return;
        }
        let mut links = lock(&self.links);
        let link = links.entry(key).or_default();
        if link.taker.is_none() {
            let route = Route { peer: from.to_string(), port: port.to_string(), dir: Dir::Down };
            match Taker::spawn(&self.conn, port, meta.kind, route, self.stream(), self.outbox.clone()) {
                Ok(t) => link.taker = Some(t),
                Err(e) => {
                    tracing::warn!("{port}: cannot receive for {from}: {e}");
                    return;
                }
            }
        }
        if let Some(t) = &link.taker {
            t.set_active(true);
        }
    }

    /// Another host's bridge has gone: what was on its way to or from it is
    /// lost (and counted), and its exports are no longer reachable here.
    fn peer_gone(&self, host: &str) {
        if host == self.cfg.host {
            return;
        }
        tracing::info!("the bridge of {host} has gone");
        let gone: Vec<ExportLink> = {
            let mut links = lock(&self.links);
            let keys: Vec<_> = links.keys().filter(|(h, _)| h == host).cloned().collect();
            keys.into_iter().filter_map(|k| links.remove(&k)).collect()
        };
        self.reap(gone);
        lock(&self.announced).retain(|(h, _)| h != host);
        let gone: Vec<Import> = {
            let mut imports = lock(&self.imports);
            let keys: Vec<_> = imports.keys().filter(|(h, _)| h == host).cloned().collect();
            keys.into_iter().filter_map(|k| imports.remove(&k)).collect()
        };
        self.reap(gone);
        self.outbox.forget(host);
    }

    // ---- exporting ----------------------------------------------------

    fn scan_loop(&self) {
        while !self.stop.load(Relaxed) {
            let Some(now) = scan(&self.conn, &self.cfg.exports) else {
                // The kernel did not answer: keep what is exported.
                std::thread::sleep(self.cfg.scan_every);
                continue;
            };
            let mut gone = Vec::new();
            {
                let mut exported = lock(&self.exported);
                exported.retain(|path, e| {
                    let keep = now.get(path) == Some(&e.meta);
                    if !keep {
                        gone.push(path.clone());
                    }
                    keep
                });
                for (path, meta) in now {
                    if exported.contains_key(&path) {
                        continue;
                    }
                    let key = wire::export_token(&self.cfg.host, &path);
                    match self.outbox.session().liveliness().declare_token(key).wait() {
                        Ok(token) => {
                            tracing::info!("exporting {path}");
                            exported.insert(path, Exported { meta, _token: token });
                        }
                        Err(e) => tracing::warn!("cannot export {path}: {e}"),
                    }
                }
            }
            if !gone.is_empty() {
                let mut links = lock(&self.links);
                let dropped: Vec<ExportLink> = {
                    let keys: Vec<_> = links.keys().filter(|(_, p)| gone.contains(p)).cloned().collect();
                    keys.into_iter().filter_map(|k| links.remove(&k)).collect()
                };
                drop(links);
                drop(dropped);
                for p in gone {
                    tracing::info!("no longer exporting {p}");
                }
            }
            std::thread::sleep(self.cfg.scan_every);
        }
    }

    fn on_meta(&self, q: &Query) {
        let key = q.key_expr().as_str().to_string();
        let meta = wire::parse_key(&key, "meta").and_then(|(_, path)| self.exported_meta(&path));
        let _ = match meta {
            Some(m) => q.reply(q.key_expr().clone(), m.encode()).wait(),
            None => q.reply_err("not exported").wait(),
        };
    }

    /// Lets go of the service handles whose provider went or that are no
    /// longer exported for calling, so that they keep no dead service (and
    /// its memory) alive. Run by idle call threads and before each call
    /// that opens a service.
    fn let_go(&self) {
        // Closing a handle waits for the microkernel: not while holding the
        // map that Zenoh's thread reads. (Lock order: `services`, then
        // `exported`; nothing takes them the other way round.)
        let mut gone = Vec::new();
        {
            let mut services = lock(&self.services);
            let paths: Vec<String> = services.keys().cloned().collect();
            for path in paths {
                let keep = services.get(&path).is_some_and(|s| !s.is_gone()) && self.callable(&path);
                if !keep {
                    gone.extend(services.remove(&path));
                }
            }
        }
        drop(gone);
    }

    /// Whether `path` is exported as a service that may be called.
    fn callable(&self, path: &str) -> bool {
        matches!(
            self.exported_meta(path),
            Some(ExportMeta { kind: ExportKind::Service(_), rights }) if rights.contains(Rights::SEND)
        )
    }

    /// Starts a call from a far bridge on Zenoh's thread, if that needs no
    /// waiting: the service is exported for calling, its handle is open,
    /// and its request queue and this handle's call slots have room.
    /// Anything else (including every error) is left to a call thread.
    fn start_call(&self, q: &Query) -> Option<PendingCall<'static>> {
        let (_, path) = wire::parse_key(q.key_expr().as_str(), "call")?;
        if !self.callable(&path) {
            return None;
        }
        let svc = lock(&self.services).get(&path).filter(|s| !s.is_gone())?.clone();
        if self.calls_started.fetch_add(1, Relaxed) >= CALL_THREADS {
            self.calls_started.fetch_sub(1, Relaxed);
            return None;
        }
        let req = q.payload().map(|p| p.to_bytes()).unwrap_or_default();
        let call = svc.try_start_owned(&req).ok().flatten();
        if call.is_none() {
            self.calls_started.fetch_sub(1, Relaxed);
        }
        // The map may have let go of it meanwhile: then closing it (which
        // waits for the microkernel) is not for Zenoh's thread.
        if Arc::strong_count(&svc) == 1 {
            self.reap(svc);
        }
        call
    }

    /// Runs a call from a far bridge on a call thread: opens the service if
    /// need be, and waits for room and for the response.
    fn on_call(&self, q: &Query) {
        let key = q.key_expr().as_str().to_string();
        let Some((_, path)) = wire::parse_key(&key, "call") else {
            let _ = q.reply_err("bad call key").wait();
            return;
        };
        self.let_go();
        let result = match self.exported_meta(&path) {
            Some(ExportMeta { kind: ExportKind::Service(_), rights }) if rights.contains(Rights::SEND) => {
                let req = q.payload().map(|p| p.to_bytes().into_owned()).unwrap_or_default();
                let open = lock(&self.services).get(&path).filter(|s| !s.is_gone()).cloned();
                match open.map_or_else(|| self.conn.service(&path), Ok) {
                    Ok(s) => {
                        lock(&self.services).insert(path.clone(), s.clone());
                        self.call_waiting_for_a_slot(&s, &req)
                    }
                    Err(e) => {
                        let _ = q.reply_err(e.to_string()).wait();
                        return;
                    }
                }
            }
            Some(_) => {
                let _ = q.reply_err(format!("{path} is not a service exported for calling")).wait();
                return;
            }
            None => {
                let _ = q.reply_err(format!("{path} is not exported")).wait();
                return;
            }
        };
        self.answer(q, result);
    }

    /// Calls `svc`, waiting (until the call timeout) while every call slot
    /// of the shared handle is in flight rather than failing at once.
    fn call_waiting_for_a_slot(&self, svc: &ServiceClient, req: &[u8]) -> Result<Vec<u8>, CallError> {
        let deadline = std::time::Instant::now() + self.cfg.call_timeout;
        let mut nap = Duration::from_micros(50);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match svc.call_timeout(req, left) {
                Err(CallError::Busy(_)) if !left.is_zero() => {
                    std::thread::sleep(nap.min(left));
                    nap = (nap * 2).min(Duration::from_millis(2));
                }
                r => return r,
            }
        }
    }

    /// Replies to a far bridge's call with its outcome.
    fn answer(&self, q: &Query, result: Result<Vec<u8>, CallError>) {
        let _ = match result {
            Ok(resp) => q.reply(q.key_expr().clone(), resp).wait(),
            Err(e) => q.reply_err(e.to_string()).wait(),
        };
    }

    // ---- importing ----------------------------------------------------

    fn on_export_token(self: &Arc<Self>, s: &Sample) {
        let key = s.key_expr().as_str().to_string();
        let Some((host, path)) = wire::parse_key(&key, "export") else { return };
        if host == self.cfg.host {
            return;
        }
        let id = (host.to_string(), path);
        match s.kind() {
            SampleKind::Put => {
                lock(&self.announced).insert(id.clone());
                // Asking what it is blocks; not on Zenoh's thread.
                let i = self.clone();
                let _ = std::thread::Builder::new().name("import".into()).spawn(move || i.import(id));
            }
            SampleKind::Delete => {
                let mut announced = lock(&self.announced);
                announced.remove(&id);
                let gone = lock(&self.imports).remove(&id);
                drop(announced);
                if let Some(gone) = gone {
                    tracing::info!("{}{} is no longer reachable", id.0, id.1);
                    self.reap(gone);
                }
            }
        }
    }

    fn local_name(&self, host: &str, path: &str) -> String {
        format!("{}/{host}{path}", self.cfg.mount.trim_end_matches('/'))
    }

    fn import(self: &Arc<Self>, id: (String, String)) {
        if lock(&self.imports).contains_key(&id) || !lock(&self.importing).insert(id.clone()) {
            return;
        }
        self.import_once(&id);
        lock(&self.importing).remove(&id);
    }

    fn import_once(self: &Arc<Self>, id: &(String, String)) {
        let (host, path) = (&id.0, &id.1);
        let meta = match self.ask_meta(host, path) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("cannot import {path} from {host}: {e}");
                return;
            }
        };
        let local = self.local_name(host, path);
        let imported = match meta.kind {
            ExportKind::Channel { slot_size, slots } => self.import_channel(id, &local, meta, slot_size, slots),
            ExportKind::Carrier(spec) => self.import_carrier(id, &local, meta, spec),
            ExportKind::Service(spec) => self.import_service(id, &local, spec, meta.rights),
        };
        let imported = match imported {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!("cannot import {path} from {host} as {local}: {e}");
                return;
            }
        };
        // Withdrawn while we asked: forget it again. The announcement is
        // checked and the import recorded under one lock, so a withdrawal
        // either comes first (and we drop it) or finds it recorded.
        let announced = lock(&self.announced);
        if !announced.contains(id) {
            drop(announced);
            self.reap(imported);
            return;
        }
        tracing::info!("imported {path} from {host} as {local}");
        let old = lock(&self.imports).insert(id.clone(), imported);
        drop(announced);
        if let Some(old) = old {
            self.reap(old);
        }
    }

    fn ask_meta(&self, host: &str, path: &str) -> Result<ExportMeta, String> {
        let replies = self
            .outbox
            .session()
            .get(wire::meta(host, path))
            .timeout(Duration::from_secs(5))
            .wait()
            .map_err(|e| e.to_string())?;
        let reply = replies.recv().map_err(|_| "no answer".to_string())?;
        match reply.result() {
            Ok(sample) => ExportMeta::decode(&sample.payload().to_bytes()).map_err(|e| e.to_string()),
            Err(e) => Err(String::from_utf8_lossy(&e.payload().to_bytes()).into_owned()),
        }
    }

    /// Group and other bits for an import exported with `rights`.
    fn mode_for(&self, rights: Rights) -> u32 {
        let mut allowed = 0;
        if rights.contains(Rights::RECV) {
            allowed |= 0o044;
        }
        if rights.contains(Rights::SEND) {
            allowed |= 0o022;
        }
        0o600 | (self.cfg.import_mode & allowed)
    }

    fn import_channel(
        &self,
        id: &(String, String),
        local: &str,
        meta: ExportMeta,
        slot_size: u32,
        slots: u32,
    ) -> Result<Import, comesg::Error> {
        let opts = ChannelOptions {
            slot_size,
            slots,
            rights: Rights::ALL,
            mode: self.mode_for(meta.rights),
            persistent: false,
            exclusive: false,
        };
        let mirror = self.conn.create_channel(local, opts)?;
        if mirror.slot_size() != slot_size as usize || mirror.slots() != slots as usize {
            return Err(comesg::Error::Protocol(format!(
                "{local} exists here with {} slots of {} bytes, the export has {slots} of {slot_size}",
                mirror.slots(),
                mirror.slot_size()
            )));
        }
        self.import_messages(id, local, meta, Port::Channel(mirror))
    }

    fn import_carrier(
        &self,
        id: &(String, String),
        local: &str,
        meta: ExportMeta,
        spec: comesg_proto::CarrierSpec,
    ) -> Result<Import, comesg::Error> {
        let opts = CocarrierOptions {
            arena: spec.arena,
            max_message: spec.max_message,
            receivers: spec.receivers,
            queue: spec.queue,
            // Not RECV: a carrier hands messages to every receiver handle,
            // and this one never receives (the taker has its own).
            rights: Rights::SEND,
            mode: self.mode_for(meta.rights),
            persistent: false,
            exclusive: false,
        };
        let mirror = self.conn.create_cocarrier(local, opts)?;
        if mirror.spec() != spec {
            return Err(comesg::Error::Protocol(format!(
                "{local} exists here as {:?}, the export is {spec:?}",
                mirror.spec()
            )));
        }
        self.import_messages(id, local, meta, Port::Carrier(mirror))
    }

    /// The taker and injector of an imported channel or carrier.
    fn import_messages(
        &self,
        id: &(String, String),
        local: &str,
        meta: ExportMeta,
        mirror: Port,
    ) -> Result<Import, comesg::Error> {
        let (host, path) = (id.0.clone(), id.1.clone());
        let down = if meta.rights.contains(Rights::RECV) {
            let route = Route { peer: host.clone(), port: path.clone(), dir: Dir::Down };
            Some(Injector::spawn(&self.conn, local, meta.kind, route, self.outbox.clone())?)
        } else {
            None
        };
        let up = if meta.rights.contains(Rights::SEND) {
            let route = Route { peer: host, port: path, dir: Dir::Up };
            let t = Taker::spawn(&self.conn, local, meta.kind, route, self.stream(), self.outbox.clone())?;
            // Until the demand loop has looked, take for the exporter.
            t.set_active(!meta.rights.contains(Rights::RECV));
            Some(t)
        } else {
            None
        };
        Ok(Import::Channel(Arc::new(ChannelImport {
            local: local.to_string(),
            meta,
            _mirror: mirror,
            up,
            down,
            demand: AtomicBool::new(false),
        })))
    }

    fn import_service(
        &self,
        id: &(String, String),
        local: &str,
        spec: comesg_proto::ServiceSpec,
        rights: Rights,
    ) -> Result<Import, comesg::Error> {
        if !rights.contains(Rights::SEND) {
            return Err(comesg::Error::Protocol("exported without send: it cannot be called".into()));
        }
        let opts = ServiceOptions {
            workers: spec.workers,
            slot_size: spec.slot_size,
            call_slots: spec.call_slots,
            queue: spec.queue,
            mode: self.mode_for(Rights::SEND),
        };
        let key = wire::call(&id.0, &id.1);
        // Declared once, so that a call does not resolve the key again.
        let querier = self
            .outbox
            .session()
            .declare_querier(key.clone())
            .timeout(self.cfg.call_timeout)
            .wait()
            .map_err(|e| comesg::Error::Protocol(format!("{key}: {e}")))?;
        let provider = self.conn.serve_fallible(local, opts, move |call| {
            let replies = querier.get().payload(call.request.to_vec()).wait().ok()?;
            let reply = replies.recv().ok()?;
            match reply.result() {
                Ok(sample) => Some(sample.payload().to_bytes().into_owned()),
                Err(e) => {
                    tracing::info!("{key}: {}", String::from_utf8_lossy(&e.payload().to_bytes()));
                    None
                }
            }
        })?;
        Ok(Import::Service { _provider: provider })
    }

    /// Every 100 ms, for each imported channel: are there receivers here?
    /// Then messages come down from the exporter and local senders' messages
    /// stay here; otherwise local senders' messages go up to the exporter.
    /// Never both, so no message goes back and forth.
    fn demand_loop(&self) {
        let mut tick = 0u64;
        while !self.stop.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            tick += 1;
            let channels: Vec<(String, String, Arc<ChannelImport>)> = lock(&self.imports)
                .iter()
                .filter_map(|((h, p), i)| match i {
                    Import::Channel(c) => Some((h.clone(), p.clone(), c.clone())),
                    Import::Service { .. } => None,
                })
                .collect();
            for (host, path, c) in channels {
                let entry = self.conn.list(&c.local).map(|l| l.into_iter().find(|e| e.name.as_str() == c.local));
                let receivers = match entry {
                    Ok(Some(e)) => e.holders.iter().any(|h| h.pid != self.pid && h.rights.contains(Rights::RECV)),
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::debug!("{}: {e}", c.local);
                        continue;
                    }
                };
                let want = receivers && c.meta.rights.contains(Rights::RECV);
                if let Some(up) = &c.up {
                    up.set_active(!want);
                }
                let was = c.demand.swap(want, Relaxed);
                if c.down.is_some() && (was != want || tick.is_multiple_of(10)) {
                    if let Err(e) = self.outbox.send(&host, Body::Demand { port: path.clone(), on: want }) {
                        tracing::debug!("{path}: demand to {host}: {e}");
                    }
                }
            }
        }
    }
}
