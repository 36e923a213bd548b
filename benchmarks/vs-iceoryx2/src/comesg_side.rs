//! comesg's endpoints: a COCHANNEL each way (busy-polling, blocking, or
//! asleep in a `Copoll`), and a coservice.

use std::io;
use std::sync::Arc;

use comesg::{Channel, ChannelOptions, Connection, Copoll, Event, Interest, RecvError, Rights, SendError};

use crate::endpoint::{header, other, Endpoint};

/// How a COCHANNEL endpoint waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// `try_*` in a busy loop.
    Poll,
    /// The blocking calls: a short spin, then a futex sleep.
    Blocking,
    /// Asleep in a `Copoll` whenever the channel is empty.
    Copoll,
}

/// Slots of a channel carrying `size`-byte messages: the same queue depth
/// iceoryx2's subscriber gets.
pub fn depth(size: usize) -> u32 {
    match size {
        s if s <= 64 => 256,
        s if s <= 4096 => 64,
        _ => 16,
    }
}

/// Creates the two channels of a link, `{base}/ping` (parent to peer) and
/// `{base}/pong`, and returns the parent's end.
pub fn create(conn: &Connection, base: &str, size: usize, wait: Wait) -> io::Result<Channels> {
    let opts = ChannelOptions { slot_size: size as u32, slots: depth(size), exclusive: true, ..Default::default() };
    let ping = conn.create_channel(&format!("{base}/ping"), opts).map_err(other)?;
    let pong = conn.create_channel(&format!("{base}/pong"), opts).map_err(other)?;
    // The handles the parent measures carry only the right each needs, as a
    // real sender's and receiver's would.
    let tx = conn.open_channel(&format!("{base}/ping"), Rights::SEND).map_err(other)?;
    let rx = conn.open_channel(&format!("{base}/pong"), Rights::RECV).map_err(other)?;
    let mut ends = Channels::new(tx, rx, wait)?;
    ends.creators = vec![ping, pong];
    Ok(ends)
}

/// Opens the peer's end of a link that [`create`] made.
pub fn open(conn: &Connection, base: &str, wait: Wait) -> io::Result<Channels> {
    let rx = conn.open_channel(&format!("{base}/ping"), Rights::RECV).map_err(other)?;
    let tx = conn.open_channel(&format!("{base}/pong"), Rights::SEND).map_err(other)?;
    Channels::new(tx, rx, wait)
}

/// One end of a pair of COCHANNELs.
pub struct Channels {
    tx: &'static Channel,
    rx: &'static Channel,
    wait: Wait,
    poll: Option<Copoll<'static>>,
    events: Vec<Event>,
    creators: Vec<Channel>,
}

impl Channels {
    fn new(tx: Channel, rx: Channel, wait: Wait) -> io::Result<Channels> {
        // A Copoll borrows what it watches; the benchmark holds its ports
        // until it exits, so they are leaked rather than self-referenced.
        let tx: &'static Channel = Box::leak(Box::new(tx));
        let rx: &'static Channel = Box::leak(Box::new(rx));
        let poll = match wait {
            Wait::Copoll => {
                let mut p = Copoll::new()?;
                p.add(rx, 0, Interest::READABLE)?;
                Some(p)
            }
            _ => None,
        };
        Ok(Channels { tx, rx, wait, poll, events: Vec::new(), creators: Vec::new() })
    }

    fn send_on(tx: &Channel, wait: Wait, data: &[u8], loan: bool) -> io::Result<()> {
        loop {
            let r = match (wait, loan) {
                (Wait::Poll, true) => tx.try_loan().and_then(|l| fill_and_send(l, data)),
                (Wait::Poll, false) => tx.try_send(data),
                (_, true) => tx.loan().and_then(|l| fill_and_send(l, data)),
                (_, false) => tx.send(data),
            };
            match r {
                Ok(()) => return Ok(()),
                Err(SendError::Full) => std::hint::spin_loop(),
                Err(e) => return Err(other(e)),
            }
        }
    }

    /// Waits until a message may be there (what `wait` says), then runs
    /// `take` until it stops reporting an empty channel.
    fn until_some<T>(&mut self, mut take: impl FnMut(&'static Channel, bool) -> Result<T, RecvError>) -> io::Result<T> {
        let blocking = self.wait == Wait::Blocking;
        loop {
            match take(self.rx, blocking) {
                Ok(t) => return Ok(t),
                Err(RecvError::Empty) => match self.poll.as_mut() {
                    Some(p) => {
                        p.wait(&mut self.events, None)?;
                    }
                    None => std::hint::spin_loop(),
                },
                Err(e) => return Err(other(e)),
            }
        }
    }
}

fn fill_and_send(mut loan: comesg::SendLoan<'_>, data: &[u8]) -> Result<(), SendError> {
    let n = data.len().min(8);
    loan.as_mut_slice()[..n].copy_from_slice(&data[..n]);
    loan.send(data.len()).map_err(SendError::from)
}

impl Endpoint for Channels {
    fn send(&mut self, data: &[u8], loan: bool) -> io::Result<()> {
        Channels::send_on(self.tx, self.wait, data, loan)
    }

    fn recv(&mut self, buf: &mut [u8], loan: bool) -> io::Result<u64> {
        if loan {
            self.until_some(|rx, blocking| {
                let slot = if blocking { rx.recv_in_place() } else { rx.try_recv_in_place() }?;
                Ok(header(&slot))
            })
        } else {
            let n = self.until_some(|rx, blocking| if blocking { rx.recv(buf) } else { rx.try_recv(buf) })?;
            Ok(header(&buf[..n]))
        }
    }

    fn echo(&mut self) -> io::Result<()> {
        let slot =
            self.until_some(|rx, blocking| if blocking { rx.recv_in_place() } else { rx.try_recv_in_place() })?;
        Channels::send_on(self.tx, self.wait, &slot, false)
    }
}

/// The caller's end of a coservice.
pub struct Service {
    client: Arc<comesg::ServiceClient>,
    resp: Vec<u8>,
}

impl Service {
    /// Opens the service at `path` (its provider is the peer).
    pub fn open(conn: &Connection, path: &str) -> io::Result<Service> {
        Ok(Service { client: conn.service(path).map_err(other)?, resp: Vec::new() })
    }
}

impl Endpoint for Service {
    fn send(&mut self, data: &[u8], _loan: bool) -> io::Result<()> {
        self.resp = self.client.call(data).map_err(other)?;
        Ok(())
    }
    fn recv(&mut self, buf: &mut [u8], loan: bool) -> io::Result<u64> {
        if !loan {
            let n = buf.len().min(self.resp.len());
            buf[..n].copy_from_slice(&self.resp[..n]);
        }
        Ok(header(&self.resp))
    }
    fn echo(&mut self) -> io::Result<()> {
        Err(other("the coservice provider serves from its worker threads"))
    }
}

/// Registers the echo service at `path` with one worker (the peer's side).
pub fn provide(conn: &Connection, path: &str, size: usize) -> io::Result<comesg::Provider> {
    let opts =
        comesg::ServiceOptions { workers: 1, slot_size: size.max(64) as u32, call_slots: 4, queue: 64, mode: 0o600 };
    conn.serve(path, opts, |c| c.request.to_vec()).map_err(other)
}
