//! The two ends of a link between bridges, one direction each.
//!
//! A [`Taker`] receives messages from a local ring through a handle of its
//! own and publishes them to the far bridge, keeping each one *claimed* (a
//! slot the ring cannot reuse) until the far side acknowledges that it is in
//! the ring there. An [`Injector`] sends what arrives into its local ring and
//! acknowledges it.
//!
//! So a message is in exactly one ring at every moment, or claimed by a
//! taker and on its way. If the far side goes away, or the taker's own
//! process dies, the taker's handle closes with its claims outstanding and
//! the microkernel counts those messages lost in the source port's
//! statistics; nothing is sent again, so nothing arrives twice.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use comesg::{Connection, RecvError, Rights, SendError};

use crate::net::Outbox;
use crate::port::{Port, Taken};
use crate::wire::{Body, Dir, ExportKind, BATCH_BYTES, MAX_BATCH};

/// How long a waiting taker or injector sleeps before it looks at its stop
/// flag again.
const TICK: Duration = Duration::from_millis(20);

/// What a taker publishes its messages as.
#[derive(Debug, Clone)]
pub struct Route {
    /// The far bridge's host.
    pub peer: String,
    /// The exported port's path (the name on the exporting host).
    pub port: String,
    /// Which way the messages move.
    pub dir: Dir,
}

struct TakerShared {
    active: AtomicBool,
    stop: AtomicBool,
    acks: mpsc::Sender<(u64, u64)>,
}

/// Takes messages from a local ring for a far bridge. Stopping it (or
/// dropping it) closes its handle; messages still unacknowledged are then
/// counted lost by the microkernel.
pub struct Taker {
    shared: Arc<TakerShared>,
    stream: u64,
    thread: Option<JoinHandle<()>>,
}

impl Taker {
    /// Opens `local` (a channel on this host) with RECV and starts taking
    /// from it while [`Taker::set_active`] says so.
    pub fn spawn(
        conn: &Connection,
        local: &str,
        kind: ExportKind,
        route: Route,
        stream: u64,
        outbox: Outbox,
    ) -> Result<Taker, comesg::Error> {
        let ch = Port::open(conn, local, kind, Rights::RECV)?;
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(TakerShared { active: AtomicBool::new(false), stop: AtomicBool::new(false), acks: tx });
        let sh = shared.clone();
        let name = format!("take {}", local);
        let reopen = Reopen { conn: conn.clone(), local: local.to_string(), kind };
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || take(ch, reopen, &sh, rx, route, stream, &outbox))
            .map_err(comesg::Error::Io)?;
        Ok(Taker { shared, stream, thread: Some(thread) })
    }

    /// Takes messages (true) or leaves them to others (false). Messages
    /// already on their way are unaffected.
    pub fn set_active(&self, on: bool) {
        self.shared.active.store(on, Relaxed);
    }

    /// The far side has every message of `stream` up to `upto`.
    pub fn ack(&self, stream: u64, upto: u64) {
        if stream == self.stream {
            let _ = self.shared.acks.send((stream, upto));
        }
    }

    /// This taker's stream number.
    pub fn stream(&self) -> u64 {
        self.stream
    }
}

impl Drop for Taker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How a taker reopens its port after closing it while idle.
struct Reopen {
    conn: Connection,
    local: String,
    kind: ExportKind,
}

/// The taker's thread. A COCARRIER hands messages to each receiver handle
/// (a channel's receivers pull), so an idle taker of a carrier closes its
/// handle once nothing it took is unacknowledged, and the messages queued
/// for it go to the other receivers; it opens the port again when it is
/// asked to take.
fn take(
    first: Port,
    reopen: Reopen,
    sh: &TakerShared,
    acks: Receiver<(u64, u64)>,
    route: Route,
    stream: u64,
    outbox: &Outbox,
) {
    let close_when_idle = matches!(reopen.kind, ExportKind::Carrier(_));
    let mut port = Some(first);
    let mut seq = 0u64;
    while !sh.stop.load(Relaxed) {
        let ch = match port.take() {
            Some(p) => p,
            None if !sh.active.load(Relaxed) => {
                let _ = acks.recv_timeout(TICK);
                continue;
            }
            None => match Port::open(&reopen.conn, &reopen.local, reopen.kind, Rights::RECV) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!("{}: cannot open {} again: {e}", route.port, reopen.local);
                    std::thread::sleep(TICK * 5);
                    continue;
                }
            },
        };
        let broken = pump(&ch, sh, &acks, &route, stream, outbox, &mut seq, close_when_idle);
        if let Err(e) = ch.close() {
            tracing::debug!("{}: close: {e}", route.port);
        }
        if broken {
            // What could not be sent is counted lost now (the close), and
            // the next attempt starts with free slots.
            std::thread::sleep(TICK * 5);
        }
    }
}

/// Takes and forwards messages until stopped (or, with `close_when_idle`,
/// until inactive with nothing unacknowledged, or until a frame cannot be
/// published: then it returns true). Stopped with messages unacknowledged,
/// it gives them up, to be counted lost when the caller closes the handle;
/// so a message is acknowledged only if it was sent, and no number is
/// skipped.
#[allow(clippy::too_many_arguments)]
fn pump(
    ch: &Port,
    sh: &TakerShared,
    acks: &Receiver<(u64, u64)>,
    route: &Route,
    stream: u64,
    outbox: &Outbox,
    seq: &mut u64,
    close_when_idle: bool,
) -> bool {
    let window = ch.window();
    let mut inflight: VecDeque<(u64, Taken<'_>)> = VecDeque::new();
    let finish = |inflight: &mut VecDeque<(u64, Taken<'_>)>, upto: u64| {
        // An acknowledgement beyond what was sent is forged or broken.
        if inflight.back().is_some_and(|(s, _)| upto > *s) {
            tracing::warn!(
                "{}: acknowledgement up to {upto} from {} beyond what was sent: ignored",
                route.port,
                route.peer
            );
            return;
        }
        while inflight.front().is_some_and(|(s, _)| *s <= upto) {
            if let Some((_, slot)) = inflight.pop_front() {
                slot.release();
            }
        }
    };
    while !sh.stop.load(Relaxed) {
        while let Ok((_, upto)) = acks.try_recv() {
            finish(&mut inflight, upto);
        }
        let active = sh.active.load(Relaxed);
        if !active && close_when_idle && inflight.is_empty() {
            return false;
        }
        if !active || inflight.len() >= window {
            if let Ok((_, upto)) = acks.recv_timeout(TICK) {
                finish(&mut inflight, upto);
            }
            continue;
        }
        match ch.recv_timeout(TICK) {
            Ok(slot) => {
                // Whatever else is ready goes in the same frame.
                let mut bytes = slot.len();
                let mut batch = vec![slot];
                while inflight.len() + batch.len() < window && batch.len() < MAX_BATCH && bytes < BATCH_BYTES {
                    match ch.try_recv() {
                        Ok(s) => {
                            bytes += s.len();
                            batch.push(s);
                        }
                        Err(_) => break,
                    }
                }
                let first = *seq + 1;
                let msgs = batch.iter().map(|s| &s[..]).collect();
                let body = Body::Msg { port: route.port.clone(), dir: route.dir, stream, seq: first, msgs };
                if let Err(e) = outbox.send(&route.peer, body) {
                    tracing::warn!("{} to {}: {e}; {} messages are lost", route.port, route.peer, batch.len());
                    inflight.extend((first..).zip(batch));
                    for (_, slot) in inflight.drain(..) {
                        slot.abandon();
                    }
                    return true;
                }
                *seq += batch.len() as u64;
                inflight.extend((first..).zip(batch));
            }
            Err(RecvError::TimedOut | RecvError::Empty) => {}
            Err(e) => {
                tracing::warn!("{}: receive: {e}", route.port);
                std::thread::sleep(TICK);
            }
        }
    }
    let lost = inflight.len();
    for (_, slot) in inflight.drain(..) {
        slot.abandon();
    }
    if lost > 0 {
        tracing::info!("{} to {}: {lost} messages in flight are lost", route.port, route.peer);
    }
    false
}

/// One message for an injector.
struct Arrival {
    stream: u64,
    seq: u64,
    bytes: Vec<u8>,
}

/// What the network thread and the injector's own thread share.
struct InjectState {
    /// Highest sequence number accepted, per stream, with when it was last
    /// used; a stream seen once is remembered (the most recent 64), so a
    /// late or replayed frame of an old stream is never delivered again.
    seen: HashMap<u64, (u64, u64)>,
    clock: u64,
    /// Messages that found the ring full, in order; while any wait, later
    /// ones queue behind them.
    queue: VecDeque<Arrival>,
    /// The injector's thread holds a message it is sending.
    busy: bool,
    /// Delivered but not yet acknowledged: stream, highest, how many.
    /// Acknowledged every quarter window, and by the injector's thread once
    /// traffic pauses ([`ACK_DELAY`]), so that a steady stream costs one
    /// acknowledgement per many messages.
    pending: Option<(u64, u64, u64)>,
    /// The latest acknowledgement sent from the network thread, and
    /// whether the injector's thread should send it again (it may have been
    /// dropped).
    last_ack: Option<(u64, u64)>,
    resend: bool,
}

/// How long after an acknowledgement that may have been dropped the
/// injector's thread sends it again.
const RESEND: Duration = Duration::from_millis(20);

/// How long a delivered message waits for company before it is
/// acknowledged on its own.
const ACK_DELAY: Duration = Duration::from_millis(2);

struct InjectShared {
    ch: Port,
    state: Mutex<InjectState>,
    wake: Condvar,
    stop: AtomicBool,
    route: Route,
    outbox: Outbox,
    /// Most messages queued: an honest taker never has more than a window
    /// in flight; room for a few covers one that restarted with a new stream.
    cap: usize,
    /// Acknowledge after this many deliveries.
    ack_every: u64,
}

impl InjectShared {
    fn state(&self) -> MutexGuard<'_, InjectState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Acknowledges from the injector's own thread: may wait for the
    /// network.
    fn ack(&self, stream: u64, upto: u64) {
        let body = Body::Ack { port: self.route.port.clone(), dir: self.route.dir, stream, upto };
        if let Err(e) = self.outbox.send(&self.route.peer, body) {
            tracing::warn!("{}: ack to {}: {e}", self.route.port, self.route.peer);
        }
    }
}

impl InjectState {
    /// Notes `seq` of `stream` delivered; returns an acknowledgement to send
    /// now, if one is due (`every` delivered, or a new stream).
    fn delivered(&mut self, stream: u64, seq: u64, every: u64) -> Vec<(u64, u64)> {
        let mut due = Vec::new();
        let count = match self.pending {
            Some((s, upto, n)) if s == stream => {
                let _ = upto;
                n + 1
            }
            Some((s, upto, _)) => {
                due.push((s, upto));
                1
            }
            None => 1,
        };
        self.pending = Some((stream, seq, count));
        if count >= every {
            due.push((stream, seq));
            self.pending = None;
        }
        due
    }

    /// Whether message `seq` of `stream` is new; marks it seen.
    fn accept(&mut self, stream: u64, seq: u64, port: &str) -> bool {
        self.clock += 1;
        if !self.seen.contains_key(&stream) && self.seen.len() >= 64 {
            if let Some(oldest) = self.seen.iter().min_by_key(|(_, (_, used))| *used).map(|(s, _)| *s) {
                self.seen.remove(&oldest);
            }
        }
        let (last, used) = self.seen.entry(stream).or_insert((0, 0));
        *used = self.clock;
        if seq <= *last {
            tracing::warn!("{port}: message {seq} of stream {stream} again: dropped");
            return false;
        }
        if seq != *last + 1 {
            tracing::warn!("{port}: stream {stream} skipped from {last} to {seq}");
        }
        *last = seq;
        true
    }
}

/// Sends messages that arrive from a far bridge into a local ring, in
/// order, once each, and acknowledges them. While the ring has room they go
/// straight in from the network thread; once it is full they queue for the
/// injector's own thread, which waits for room.
pub struct Injector {
    shared: Arc<InjectShared>,
    thread: Option<JoinHandle<()>>,
}

impl Injector {
    /// Opens `local` with SEND; acknowledgements go back along `route`.
    pub fn spawn(
        conn: &Connection,
        local: &str,
        kind: ExportKind,
        route: Route,
        outbox: Outbox,
    ) -> Result<Injector, comesg::Error> {
        let ch = Port::open(conn, local, kind, Rights::SEND)?;
        let cap = 4 * ch.window();
        let ack_every = (ch.window() / 4).max(1) as u64;
        let state = InjectState {
            seen: HashMap::new(),
            clock: 0,
            queue: VecDeque::new(),
            busy: false,
            pending: None,
            last_ack: None,
            resend: false,
        };
        let shared = Arc::new(InjectShared {
            ch,
            state: Mutex::new(state),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            route,
            outbox,
            cap,
            ack_every,
        });
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("inject {local}"))
            .spawn(move || inject(&sh))
            .map_err(comesg::Error::Io)?;
        Ok(Injector { shared, thread: Some(thread) })
    }

    /// Hands over messages `seq`, `seq + 1`... of `stream` from the network.
    /// A peer that sends more than its window is misbehaving: the excess is
    /// dropped and logged.
    pub fn push(&self, stream: u64, seq: u64, msgs: &[&[u8]]) {
        let sh = &*self.shared;
        let port = sh.route.port.as_str();
        let mut due = Vec::new();
        let wake;
        {
            let mut st = sh.state();
            let had_pending = st.pending.is_some();
            for (seq, bytes) in (seq..).zip(msgs.iter().copied()) {
                if !st.accept(stream, seq, port) {
                    continue;
                }
                if st.queue.is_empty() && !st.busy {
                    match sh.ch.try_send(bytes) {
                        Ok(()) => {
                            due.extend(st.delivered(stream, seq, sh.ack_every));
                            continue;
                        }
                        Err(SendError::Full) => {}
                        Err(e) => {
                            // Acknowledged all the same, so that the taker
                            // finishes it: it cannot be delivered anywhere.
                            tracing::warn!("{port}: message {seq} rejected: {e}");
                            due.extend(st.delivered(stream, seq, sh.ack_every));
                            continue;
                        }
                    }
                }
                if st.queue.len() >= sh.cap {
                    tracing::warn!("{port}: message {seq} of stream {stream} beyond the window: dropped");
                    continue;
                }
                st.queue.push_back(Arrival { stream, seq, bytes: bytes.to_vec() });
            }
            if let Some(&last) = due.last() {
                st.last_ack = Some(last);
                st.resend = true;
            }
            // The thread acknowledges what is pending once traffic pauses,
            // sends again what may have been dropped, and sends what queued.
            wake = (!had_pending && st.pending.is_some()) || !st.queue.is_empty();
        }
        // This is Zenoh's receiving thread, which must never wait on the
        // network (two bridges sending to each other could each wait for
        // the other to read): an acknowledgement that finds the link
        // congested is dropped, and the injector's thread sends the latest
        // one again after RESEND.
        for (stream, upto) in due {
            let body = Body::Ack { port: sh.route.port.clone(), dir: sh.route.dir, stream, upto };
            if let Err(e) = sh.outbox.send_or_drop(&sh.route.peer, body) {
                tracing::warn!("{port}: ack to {}: {e}", sh.route.peer);
            }
        }
        if wake {
            sh.wake.notify_one();
        }
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The injector's thread: sends what queued behind a full ring, waiting for
/// room, and acknowledges what is pending once traffic pauses or the ring
/// is full.
fn inject(sh: &InjectShared) {
    let port = sh.route.port.as_str();
    let flush = || {
        let p = sh.state().pending.take();
        if let Some((stream, upto, _)) = p {
            sh.ack(stream, upto);
        }
    };
    while !sh.stop.load(Relaxed) {
        let next = {
            let mut st = sh.state();
            st.busy = false;
            if st.queue.is_empty() {
                let before = st.pending;
                let wait = if before.is_some() {
                    ACK_DELAY
                } else if st.resend {
                    RESEND
                } else {
                    TICK
                };
                let (mut st, _) = sh
                    .wake
                    .wait_timeout_while(st, wait, |s| {
                        s.queue.is_empty() && s.pending == before && !sh.stop.load(Relaxed)
                    })
                    .unwrap_or_else(|p| p.into_inner());
                match st.queue.pop_front() {
                    Some(a) => {
                        st.busy = true;
                        a
                    }
                    None => {
                        // Nothing new for a while: acknowledge what is in,
                        // or again what the network thread acknowledged.
                        if st.pending.is_some() && st.pending == before {
                            let p = st.pending.take();
                            st.resend = false;
                            drop(st);
                            if let Some((stream, upto, _)) = p {
                                sh.ack(stream, upto);
                            }
                        } else if st.resend && st.pending.is_none() {
                            st.resend = false;
                            let again = st.last_ack;
                            drop(st);
                            if let Some((stream, upto)) = again {
                                sh.ack(stream, upto);
                            }
                        }
                        continue;
                    }
                }
            } else {
                st.busy = true;
                match st.queue.pop_front() {
                    Some(a) => a,
                    None => continue,
                }
            }
        };
        loop {
            match sh.ch.send_timeout(&next.bytes, TICK * 5) {
                Ok(()) => break,
                Err(SendError::TimedOut | SendError::Full) if !sh.stop.load(Relaxed) => {
                    // The ring is full: the far taker's window fills and it
                    // stops taking, which is the backpressure. What is in
                    // already can be finished there meanwhile.
                    flush();
                }
                Err(SendError::TimedOut | SendError::Full) => {
                    // Stopping with the ring still full: the message stays
                    // unacknowledged, so the far side counts it lost.
                    flush();
                    return;
                }
                Err(e) => {
                    tracing::warn!("{port}: message {} rejected: {e}", next.seq);
                    break;
                }
            }
        }
        let due = sh.state().delivered(next.stream, next.seq, sh.ack_every);
        for (stream, upto) in due {
            sh.ack(stream, upto);
        }
    }
    flush();
}
