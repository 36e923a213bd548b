//! A channel or a pipe, chosen by what the name is: `send`, `recv` and the
//! test peers work on both kinds alike.

use std::time::Duration;

use comesg::{Connection, PortKind, RecvError, Rights, SendError};

/// One end of a channel or a pipe.
pub enum AnyPort {
    /// A COCHANNEL handle.
    Channel(comesg::Channel),
    /// A COPIPE handle.
    Pipe(comesg::Copipe),
    /// A COCARRIER handle.
    Carrier(Box<comesg::Cocarrier>),
}

impl AnyPort {
    /// Opens `path` with `rights`, as whichever kind it is.
    pub fn open(conn: &Connection, path: &str, rights: Rights) -> Result<AnyPort, comesg::Error> {
        match super::kind_of(conn, path)? {
            Some(PortKind::Pipe) => Ok(AnyPort::Pipe(conn.open_copipe(path, rights)?)),
            Some(PortKind::Carrier) => Ok(AnyPort::Carrier(Box::new(conn.open_cocarrier(path, rights)?))),
            _ => Ok(AnyPort::Channel(conn.open_channel(path, rights)?)),
        }
    }

    /// Largest message.
    pub fn size(&self) -> usize {
        match self {
            AnyPort::Channel(c) => c.slot_size(),
            AnyPort::Pipe(p) => p.buffer_size(),
            AnyPort::Carrier(c) => usize::try_from(c.spec().max_message).unwrap_or(usize::MAX).min(1 << 26),
        }
    }

    /// Sends one message (a pipe's send returns once a receiver has it).
    pub fn send(&self, m: &[u8]) -> Result<(), SendError> {
        match self {
            AnyPort::Channel(c) => c.send(m),
            AnyPort::Pipe(p) => p.send(m),
            AnyPort::Carrier(c) => c.send(m),
        }
    }

    /// Receives one message.
    pub fn recv(&self, buf: &mut [u8]) -> Result<usize, RecvError> {
        match self {
            AnyPort::Channel(c) => c.recv(buf),
            AnyPort::Pipe(p) => p.recv(buf),
            AnyPort::Carrier(c) => c.recv().map(|m| copy_out(&m, buf)),
        }
    }

    /// Receives one message, waiting at most `t`.
    pub fn recv_timeout(&self, buf: &mut [u8], t: Duration) -> Result<usize, RecvError> {
        match self {
            AnyPort::Channel(c) => c.recv_timeout(buf, t),
            AnyPort::Pipe(p) => p.recv_timeout(buf, t),
            AnyPort::Carrier(c) => c.recv_timeout(t).map(|m| copy_out(&m, buf)),
        }
    }
}

/// Copies a message into `buf`, cut to fit; returns the message's length.
fn copy_out(m: &[u8], buf: &mut [u8]) -> usize {
    let n = m.len().min(buf.len());
    buf[..n].copy_from_slice(&m[..n]);
    m.len()
}
