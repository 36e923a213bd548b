//! The port kinds a bridge carries messages for, behind one face: a
//! COCHANNEL or a COCARRIER, opened by name, with the receive-in-place,
//! finish, give-up and send operations takers and injectors need.

use std::ops::Deref;
use std::time::Duration;

use comesg::{CarrierMessage, Channel, Cocarrier, Connection, RecvError, RecvSlot, Rights, SendError};

use crate::wire::ExportKind;

/// An open port that carries messages.
// One per link, long-lived: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Port {
    /// A COCHANNEL.
    Channel(Channel),
    /// A COCARRIER (message bytes only: handles cannot cross hosts).
    Carrier(Cocarrier),
}

/// A message received in place and not yet finished.
pub enum Taken<'a> {
    /// A claimed channel slot.
    Slot(RecvSlot<'a>),
    /// A held carrier message.
    Msg(CarrierMessage<'a>),
}

impl Deref for Taken<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Taken::Slot(s) => s,
            Taken::Msg(m) => m,
        }
    }
}

impl Taken<'_> {
    /// Finishes it: the far side has it.
    pub fn release(self) {
        match self {
            Taken::Slot(s) => {
                let _ = s.release();
            }
            Taken::Msg(m) => drop(m),
        }
    }

    /// Gives it up: the microkernel counts it lost when the handle closes.
    pub fn abandon(self) {
        match self {
            Taken::Slot(s) => s.abandon(),
            Taken::Msg(m) => m.abandon(),
        }
    }
}

impl Port {
    /// Opens `path`, of `kind`, with `rights`.
    pub fn open(conn: &Connection, path: &str, kind: ExportKind, rights: Rights) -> Result<Port, comesg::Error> {
        match kind {
            ExportKind::Carrier(_) => Ok(Port::Carrier(conn.open_cocarrier(path, rights)?)),
            _ => Ok(Port::Channel(conn.open_channel(path, rights)?)),
        }
    }

    /// Messages a taker may keep unfinished: half the ring, or of a
    /// carrier receiver's queue, so that local peers always have room.
    pub fn window(&self) -> usize {
        match self {
            Port::Channel(c) => (c.slots() / 2).clamp(1, 4096),
            // Held messages take arena space: at most half the arena's
            // worth of largest messages, so that local peers keep room and
            // an injector's queue stays bounded in bytes too.
            Port::Carrier(c) => {
                let spec = c.spec();
                let by_bytes = (spec.arena / 2 / spec.max_message.max(1)) as usize;
                (spec.queue as usize / 2).min(by_bytes).clamp(1, 1024)
            }
        }
    }

    /// Receives a message in place, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Taken<'_>, RecvError> {
        match self {
            Port::Channel(c) => c.recv_in_place_timeout(timeout).map(Taken::Slot),
            Port::Carrier(c) => c.recv_timeout(timeout).map(Taken::Msg),
        }
    }

    /// Receives a message in place if one is ready.
    pub fn try_recv(&self) -> Result<Taken<'_>, RecvError> {
        match self {
            Port::Channel(c) => c.try_recv_in_place().map(Taken::Slot),
            Port::Carrier(c) => c.try_recv().map(Taken::Msg),
        }
    }

    /// Sends if there is room now.
    pub fn try_send(&self, msg: &[u8]) -> Result<(), SendError> {
        match self {
            Port::Channel(c) => c.try_send(msg),
            Port::Carrier(c) => c.try_send(msg),
        }
    }

    /// Sends, waiting at most `timeout` for room.
    pub fn send_timeout(&self, msg: &[u8], timeout: Duration) -> Result<(), SendError> {
        match self {
            Port::Channel(c) => c.send_timeout(msg, timeout),
            Port::Carrier(c) => c.send_timeout(msg, timeout),
        }
    }

    /// Closes the handle; what it left unfinished is counted lost.
    pub fn close(self) -> Result<(), comesg::Error> {
        match self {
            Port::Channel(c) => c.close(),
            Port::Carrier(c) => c.close(),
        }
    }
}
