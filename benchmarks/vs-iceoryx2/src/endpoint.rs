//! What every measured transport offers the benchmark loops, so that comesg
//! and iceoryx2 run the very same loop.

use std::io;

/// The transports measured, each a pair of one-way links (parent to peer,
/// peer to parent) or a request/response service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Raw shared-memory spin ping-pong on one word each way (no payload):
    /// the hardware limit.
    Spin,
    /// Two COCHANNELs, busy-polling (`try_*` in a loop).
    Cochannel,
    /// iceoryx2 publish-subscribe, busy-polling.
    Iceoryx2,
    /// Two COCHANNELs, blocking calls (spin briefly, then sleep on a futex).
    #[value(name = "cochannel_blocking")]
    CochannelBlocking,
    /// Two COCHANNELs, the receiver asleep in a `Copoll` (epoll on the
    /// port's eventfd bell) whenever nothing is waiting.
    #[value(name = "cochannel_copoll")]
    CochannelCopoll,
    /// iceoryx2 publish-subscribe plus an event service: the receiver
    /// blocks on its listener, the sender notifies after each sample.
    #[value(name = "iceoryx2_event")]
    Iceoryx2Event,
    /// As `iceoryx2_event`, the receiver waiting in a WaitSet (epoll).
    #[value(name = "iceoryx2_waitset")]
    Iceoryx2Waitset,
    /// A coservice call (the peer provides it with one worker).
    Coservice,
    /// iceoryx2 request-response, both sides busy-polling.
    #[value(name = "iceoryx2_rr")]
    Iceoryx2Rr,
}

impl Kind {
    /// Name in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Spin => "spin",
            Kind::Cochannel => "cochannel",
            Kind::Iceoryx2 => "iceoryx2",
            Kind::CochannelBlocking => "cochannel_blocking",
            Kind::CochannelCopoll => "cochannel_copoll",
            Kind::Iceoryx2Event => "iceoryx2_event",
            Kind::Iceoryx2Waitset => "iceoryx2_waitset",
            Kind::Coservice => "coservice",
            Kind::Iceoryx2Rr => "iceoryx2_rr",
        }
    }
}

/// One side of a transport.
///
/// Every message starts with an 8-byte header (a sequence number, little
/// endian); messages are at least that long.
pub trait Endpoint {
    /// Sends `data` (its header already written). With `loan`, the message
    /// is built in place in memory the transport lends: only the header is
    /// written, as a producer that builds its message in place would.
    /// Without, `data` is copied whole.
    fn send(&mut self, data: &[u8], loan: bool) -> io::Result<()>;

    /// Waits for one message of `buf.len()` bytes and returns its header.
    /// With `loan`, the message is read in place (only its header); without,
    /// it is copied whole into `buf`.
    fn recv(&mut self, buf: &mut [u8], loan: bool) -> io::Result<u64>;

    /// Waits for one message and sends its bytes straight back (read in
    /// place, copied once into the reply).
    fn echo(&mut self) -> io::Result<()>;

    /// Waits until the peer's end is connected (transports that connect
    /// lazily drop what is sent before).
    fn ready(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The header of `msg`.
pub fn header(msg: &[u8]) -> u64 {
    let mut h = [0u8; 8];
    let n = msg.len().min(8);
    h[..n].copy_from_slice(&msg[..n]);
    u64::from_le_bytes(h)
}

/// Writes `seq` into the header of `msg`.
pub fn set_header(msg: &mut [u8], seq: u64) {
    let n = msg.len().min(8);
    msg[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
}

/// An error for a peer or transport that misbehaved.
pub fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}
