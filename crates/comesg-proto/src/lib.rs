//! The control protocol between comesg clients and the microkernel.
//!
//! One request or reply per `SOCK_SEQPACKET` record, encoded with
//! [postcard](https://docs.rs/postcard) (compact, varint-based, no schema on
//! the wire), at most [`MAX_FRAME`] bytes. The first request on a connection
//! must be [`Request::Hello`] carrying [`VERSION`]; the kernel answers
//! [`Reply::Welcome`] or [`KernelError::Version`] and closes.
//!
//! File descriptors that a reply grants travel beside it as `SCM_RIGHTS`, in
//! the order the reply documents.
#![deny(missing_docs)]

mod codec;
mod error;
mod message;
mod name;
mod rights;

pub use codec::{
    decode_reply, decode_request, encode_reply, encode_request, DecodeError, EVENTS_PER_FRAME, MAX_FRAME, TAKE_BATCH,
    VERSION,
};
pub use error::KernelError;
pub use message::{
    CarrierSpec, ChannelSpec, Entry, EntryKind, EventKind, HandleId, Holder, Listing, MutexSpec, PipeSpec, PortGrant,
    PortKind, PortSpec, Reply, ReplyFrame, Request, RequestFrame, ServiceSpec, TakenHandle, WatchEvent,
};
pub use name::{Name, NameError};
pub use rights::Rights;
