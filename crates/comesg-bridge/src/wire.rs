//! What bridges say to each other: one frame type, encoded with postcard,
//! and the Zenoh key expressions it travels on.
//!
//! Every frame is checked on arrival: a frame that does not decode, names a
//! port the receiver does not know, or carries a message longer than the
//! port's slots is dropped with a log line and changes nothing.

use serde::{Deserialize, Serialize};

/// Largest message a bridge carries (a carrier's may be larger; such a
/// carrier is not exported).
pub const MAX_MESSAGE: u64 = 64 << 20;

/// Largest frame a bridge accepts: a batch just short of [`BATCH_BYTES`]
/// plus one largest message, and headers; anything larger is hostile or
/// broken.
pub const MAX_FRAME: usize = (MAX_MESSAGE as usize) + BATCH_BYTES + (64 << 10);

/// Most messages in one frame.
pub const MAX_BATCH: usize = 1024;

/// A taker stops adding messages to a frame past this many bytes.
pub const BATCH_BYTES: usize = 256 << 10;

/// Which way a message moves along a link between an exporting and an
/// importing bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dir {
    /// From the importer's mirror to the exported port.
    Up,
    /// From the exported port to the importer's mirror.
    Down,
}

/// One frame between bridges. Messages are borrowed: a taker encodes them
/// straight from its ring slots, and a receiver reads them in place from
/// the received payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame<'a> {
    /// The sending bridge's host name.
    pub from: String,
    /// What it says.
    #[serde(borrow)]
    pub body: Body<'a>,
}

/// What a frame says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body<'a> {
    /// Messages taken from a ring, on their way to the other side's ring:
    /// as many as were ready at once (up to [`MAX_BATCH`]), in order.
    Msg {
        /// The exported port's path on the exporting host.
        port: String,
        /// Which way they move.
        dir: Dir,
        /// The taker's stream: new for every taker, so that numbers from a
        /// restarted bridge never match old ones.
        stream: u64,
        /// The first message's number (1, 2, 3... within the stream); the
        /// others follow it.
        seq: u64,
        /// The messages.
        #[serde(borrow, serialize_with = "byte_strings")]
        msgs: Vec<&'a [u8]>,
    },
    /// Every message of `stream` up to `upto` is in the receiving ring: the
    /// taker may finish them.
    Ack {
        /// The exported port's path.
        port: String,
        /// Which way the acknowledged messages moved.
        dir: Dir,
        /// The taker's stream.
        stream: u64,
        /// Highest sequence number delivered.
        upto: u64,
    },
    /// The importer has receivers of its own (`on`) and wants messages from
    /// the exported port, or no longer wants them.
    Demand {
        /// The exported port's path.
        port: String,
        /// Wanted or not.
        on: bool,
    },
}

/// Writes each message as one byte string rather than as a sequence of
/// `u8`, which serde does for a `&[u8]` and postcard then encodes a byte
/// at a time (15% of a 64 KiB stream's CPU went there). Postcard puts both
/// on the wire the same way: a length, then the bytes.
fn byte_strings<S: serde::Serializer>(msgs: &[&[u8]], s: S) -> Result<S::Ok, S::Error> {
    struct Bytes<'b>(&'b [u8]);
    impl Serialize for Bytes<'_> {
        fn serialize<T: serde::Serializer>(&self, s: T) -> Result<T::Ok, T::Error> {
            s.serialize_bytes(self.0)
        }
    }
    s.collect_seq(msgs.iter().map(|m| Bytes(m)))
}

/// A frame that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// Not a frame.
    #[error("malformed frame: {0}")]
    Malformed(#[from] postcard::Error),
    /// Decoded, but bytes were left over.
    #[error("malformed frame: {0} trailing bytes")]
    Trailing(usize),
}

impl<'a> Frame<'a> {
    /// The frame's bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        // Room for all of it up front: a batch of large messages would
        // otherwise be copied again each time the buffer grows.
        let room = 64
            + self.from.len()
            + match &self.body {
                Body::Msg { port, msgs, .. } => port.len() + msgs.iter().map(|m| m.len() + 10).sum::<usize>(),
                Body::Ack { port, .. } | Body::Demand { port, .. } => port.len(),
            };
        // Serializing plain owned data into a Vec cannot fail.
        postcard::to_io(self, Vec::with_capacity(room)).unwrap_or_default()
    }

    /// Decodes a frame received from the network.
    pub fn decode(bytes: &'a [u8]) -> Result<Frame<'a>, DecodeError> {
        if bytes.len() > MAX_FRAME {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let (frame, rest) = postcard::take_from_bytes::<Frame<'a>>(bytes)?;
        if !rest.is_empty() {
            return Err(DecodeError::Trailing(rest.len()));
        }
        Ok(frame)
    }
}

/// A host name a bridge can go by: one Zenoh key chunk, and one comesg name
/// component.
pub fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 64
        && host != "."
        && host != ".."
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// Where frames for `host` are published.
pub fn inbox(host: &str) -> String {
    format!("comesg/{host}/in")
}

/// The liveliness token that says `host`'s bridge runs.
pub fn alive(host: &str) -> String {
    format!("comesg/{host}/bridge")
}

/// Every bridge's liveliness token.
pub const ALL_ALIVE: &str = "comesg/*/bridge";

/// The liveliness token that says `host` exports `path` (a comesg name,
/// which always starts with `/`).
pub fn export_token(host: &str, path: &str) -> String {
    format!("comesg/{host}/export{path}")
}

/// Every export token of every host.
pub const ALL_EXPORTS: &str = "comesg/*/export/**";

/// Where `host` answers what `path` is.
pub fn meta(host: &str, path: &str) -> String {
    format!("comesg/{host}/meta{path}")
}

/// Where `host` takes calls to the service `path`.
pub fn call(host: &str, path: &str) -> String {
    format!("comesg/{host}/call{path}")
}

/// Splits `comesg/HOST/WHAT/rest/of/path` into `HOST` and `/rest/of/path`,
/// if the key is of kind `what`.
pub fn parse_key<'a>(key: &'a str, what: &str) -> Option<(&'a str, String)> {
    let rest = key.strip_prefix("comesg/")?;
    let (host, rest) = rest.split_once('/')?;
    let path = rest.strip_prefix(what)?;
    if !valid_host(host) || !path.starts_with('/') {
        return None;
    }
    Some((host, path.to_string()))
}

/// What an exported name is, as its exporter describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportKind {
    /// A COCHANNEL of this shape.
    Channel {
        /// Largest message.
        slot_size: u32,
        /// Ring slots.
        slots: u32,
    },
    /// A COCARRIER of this shape (its messages cross; handles attached to
    /// them do not).
    Carrier(comesg_proto::CarrierSpec),
    /// A coservice of this shape.
    Service(comesg_proto::ServiceSpec),
}

impl ExportKind {
    /// The largest message a port of this kind takes, for ports that carry
    /// messages.
    pub fn max_message(&self) -> Option<u64> {
        match self {
            ExportKind::Channel { slot_size, .. } => Some(u64::from(*slot_size)),
            ExportKind::Carrier(c) => Some(c.max_message),
            ExportKind::Service(_) => None,
        }
    }
}

/// The answer to a meta query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportMeta {
    /// Its kind and shape.
    pub kind: ExportKind,
    /// What other hosts may do with it (SEND, RECV).
    pub rights: comesg_proto::Rights,
}

impl ExportMeta {
    /// The bytes of the answer.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Reads an answer.
    pub fn decode(bytes: &[u8]) -> Result<ExportMeta, DecodeError> {
        if bytes.len() > 4096 {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let (m, rest) = postcard::take_from_bytes::<ExportMeta>(bytes)?;
        if !rest.is_empty() {
            return Err(DecodeError::Trailing(rest.len()));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_round_trip() {
        let k = export_token("host-a", "/app/sensors/imu");
        assert_eq!(parse_key(&k, "export"), Some(("host-a", "/app/sensors/imu".to_string())));
        assert_eq!(parse_key("comesg/h/meta/x", "export"), None);
        assert_eq!(parse_key("comesg/h*/export/x", "export"), None);
        assert_eq!(parse_key("comesg/h/exportx", "export"), None);
    }

    #[test]
    fn hosts() {
        assert!(valid_host("node-1.lab"));
        assert!(!valid_host(""));
        assert!(!valid_host("a/b"));
        assert!(!valid_host("*"));
        assert!(!valid_host(".."));
    }

    #[test]
    fn messages_are_length_then_bytes_on_the_wire() {
        // Pinned, so that bridges of different builds understand each other.
        let body = Body::Msg { port: "/p".into(), dir: Dir::Up, stream: 1, seq: 2, msgs: vec![&[0xAA], &[]] };
        let f = Frame { from: "a".into(), body };
        assert_eq!(f.encode(), [1, b'a', 0, 2, b'/', b'p', 0, 1, 2, 2, 1, 0xAA, 0]);
    }

    proptest! {
        #[test]
        fn frames_round_trip(from in "[a-z]{1,8}", port in "/[a-z]{1,8}", stream: u64, seq: u64,
                             bytes in proptest::collection::vec(any::<u8>(), 1..300), up: bool) {
            let dir = if up { Dir::Up } else { Dir::Down };
            let f = Frame { from, body: Body::Msg { port, dir, stream, seq, msgs: vec![&bytes[..], &bytes[1..]] } };
            let wire = f.encode();
            prop_assert_eq!(Frame::decode(&wire).unwrap(), f);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Frame::decode(&bytes);
            let _ = ExportMeta::decode(&bytes);
        }
    }
}
