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
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use comesg::{Connection, RecvError, Rights, SendError};

use crate::net::Outbox;
use crate::wire::{Body, Dir};

/// How long a waiting taker or injector sleeps before it looks at its stop
/// flag again.
const TICK: Duration = Duration::from_millis(20);

/// Messages a taker keeps in flight on a ring of `slots` slots: half of it,
/// so that local peers always have room.
pub fn window(slots: u32) -> usize {
    (slots as usize / 2).clamp(1, 1024)
}

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
        route: Route,
        stream: u64,
        outbox: Outbox,
    ) -> Result<Taker, comesg::Error> {
        let ch = conn.open_channel(local, Rights::RECV)?;
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(TakerShared { active: AtomicBool::new(false), stop: AtomicBool::new(false), acks: tx });
        let sh = shared.clone();
        let name = format!("take {}", local);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || take(ch, &sh, rx, route, stream, &outbox))
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

fn take(ch: comesg::Channel, sh: &TakerShared, acks: Receiver<(u64, u64)>, route: Route, stream: u64, outbox: &Outbox) {
    let window = window(ch.slots() as u32);
    let mut inflight: VecDeque<(u64, comesg::RecvSlot<'_>)> = VecDeque::new();
    let mut seq = 0u64;
    let finish = |inflight: &mut VecDeque<(u64, comesg::RecvSlot<'_>)>, upto: u64| {
        while inflight.front().is_some_and(|(s, _)| *s <= upto) {
            if let Some((_, slot)) = inflight.pop_front() {
                let _ = slot.release();
            }
        }
    };
    while !sh.stop.load(Relaxed) {
        while let Ok((_, upto)) = acks.try_recv() {
            finish(&mut inflight, upto);
        }
        if !sh.active.load(Relaxed) || inflight.len() >= window {
            if let Ok((_, upto)) = acks.recv_timeout(TICK) {
                finish(&mut inflight, upto);
            }
            continue;
        }
        match ch.recv_in_place_timeout(TICK) {
            Ok(slot) => {
                seq += 1;
                let body = Body::Msg { port: route.port.clone(), dir: route.dir, stream, seq, bytes: slot.to_vec() };
                if let Err(e) = outbox.send(&route.peer, body) {
                    tracing::warn!("{} to {}: {e}; the message stays claimed and is lost", route.port, route.peer);
                }
                inflight.push_back((seq, slot));
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
    drop(inflight);
    if lost > 0 {
        tracing::info!("{} to {}: {lost} messages in flight are lost", route.port, route.peer);
    }
    if let Err(e) = ch.close() {
        tracing::debug!("{}: close: {e}", route.port);
    }
}

/// One message for an injector.
struct Arrival {
    stream: u64,
    seq: u64,
    bytes: Vec<u8>,
}

/// Sends messages that arrive from a far bridge into a local ring, in
/// order, once each, and acknowledges them.
pub struct Injector {
    tx: SyncSender<Arrival>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Injector {
    /// Opens `local` with SEND and starts sending into it what
    /// [`Injector::push`] hands over; acknowledgements go back along
    /// `route`.
    pub fn spawn(conn: &Connection, local: &str, route: Route, outbox: Outbox) -> Result<Injector, comesg::Error> {
        let ch = conn.open_channel(local, Rights::SEND)?;
        // An honest taker never has more than a window in flight; room for
        // a few windows covers a taker that restarted with a new stream.
        let (tx, rx) = mpsc::sync_channel(4 * window(ch.slots() as u32));
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name(format!("inject {local}"))
            .spawn(move || inject(ch, &st, rx, route, &outbox))
            .map_err(comesg::Error::Io)?;
        Ok(Injector { tx, stop, thread: Some(thread) })
    }

    /// Hands over a message from the network. A peer that sends more than
    /// its window is misbehaving: the excess is dropped and logged.
    pub fn push(&self, stream: u64, seq: u64, bytes: Vec<u8>) {
        match self.tx.try_send(Arrival { stream, seq, bytes }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => tracing::warn!("message {seq} of stream {stream} beyond the window: dropped"),
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn inject(ch: comesg::Channel, stop: &AtomicBool, rx: Receiver<Arrival>, route: Route, outbox: &Outbox) {
    let ack_every = (window(ch.slots() as u32) / 4).max(1) as u64;
    // Highest sequence number delivered, per stream; a stream seen once is
    // remembered (the most recent 64), so a late or replayed frame of an old
    // stream is never delivered again.
    let mut seen: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut clock = 0u64;
    // The acknowledgement not yet sent: stream, highest delivered, count.
    let mut pending: Option<(u64, u64, u64)> = None;
    let ack = |p: &mut Option<(u64, u64, u64)>| {
        if let Some((stream, upto, _)) = p.take() {
            let body = Body::Ack { port: route.port.clone(), dir: route.dir, stream, upto };
            if let Err(e) = outbox.send(&route.peer, body) {
                tracing::warn!("{}: ack to {}: {e}", route.port, route.peer);
            }
        }
    };
    // The next arrival, looked at early to know whether more are queued.
    let mut next: Option<Arrival> = None;
    while !stop.load(Relaxed) {
        let a = match next.take() {
            Some(a) => a,
            None => match rx.recv_timeout(TICK) {
                Ok(a) => a,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            },
        };
        if pending.is_some_and(|(s, _, _)| s != a.stream) {
            ack(&mut pending);
        }
        clock += 1;
        if !seen.contains_key(&a.stream) && seen.len() >= 64 {
            if let Some(oldest) = seen.iter().min_by_key(|(_, (_, used))| *used).map(|(s, _)| *s) {
                seen.remove(&oldest);
            }
        }
        let (last, used) = seen.entry(a.stream).or_insert((0, 0));
        *used = clock;
        if a.seq <= *last {
            tracing::warn!("{}: message {} of stream {} again: dropped", route.port, a.seq, a.stream);
            continue;
        }
        if a.seq != *last + 1 {
            tracing::warn!("{}: stream {} skipped from {} to {}", route.port, a.stream, last, a.seq);
        }
        *last = a.seq;
        loop {
            match ch.send_timeout(&a.bytes, TICK * 5) {
                Ok(()) => break,
                Err(SendError::TimedOut | SendError::Full) if !stop.load(Relaxed) => {
                    // The ring is full: the far taker's window fills and it
                    // stops taking, which is the backpressure. What is in
                    // already can be finished there meanwhile.
                    ack(&mut pending);
                }
                Err(SendError::TimedOut | SendError::Full) => {
                    // Stopping with the ring still full: the message stays
                    // unacknowledged, so the far side counts it lost.
                    ack(&mut pending);
                    return;
                }
                Err(e) => {
                    tracing::warn!("{}: message {} rejected: {e}", route.port, a.seq);
                    break;
                }
            }
        }
        let count = pending.map_or(0, |(_, _, n)| n) + 1;
        pending = Some((a.stream, a.seq, count));
        next = rx.try_recv().ok();
        if count >= ack_every || next.is_none() {
            ack(&mut pending);
        }
    }
    ack(&mut pending);
}
