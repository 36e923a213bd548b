//! Requests and replies.

use serde::{Deserialize, Serialize};

use crate::{KernelError, Name, Rights};

/// A handle's number on its connection: slot index in the low 32 bits and a
/// generation in the high 32, so a stale number never names a newer handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HandleId(pub u64);

/// A request with the number its reply will carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    /// Chosen by the client; echoed in the reply.
    pub id: u32,
    /// The request.
    pub request: Request,
}

/// A reply to the request with the same `id` (0 when the request could not
/// be decoded far enough to know it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyFrame {
    /// The request's `id`.
    pub id: u32,
    /// The reply.
    pub reply: Reply,
}

/// What a client asks of the microkernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// First request on every connection.
    Hello {
        /// Protocol version the client speaks ([`crate::VERSION`]).
        version: u32,
        /// Free-form client name for logs.
        client: String,
    },
    /// Creates a port at `name` (its parent namespaces are created as
    /// needed) and opens it. Reply: [`Reply::Port`].
    Create {
        /// Where.
        name: Name,
        /// Kind and shape.
        spec: PortSpec,
        /// Rights of the handle returned to the creator.
        rights: Rights,
        /// Permission bits (`0o600` style: owner/group/other, `w` = send,
        /// `r` = receive).
        mode: u32,
        /// Lives with no holders until unlinked.
        persistent: bool,
        /// Fail with [`KernelError::Exists`] if a live object has the name;
        /// otherwise open it.
        exclusive: bool,
    },
    /// Opens an existing port. Reply: [`Reply::Port`].
    Open {
        /// Which.
        name: Name,
        /// Rights wanted; the kernel checks them against the object's mode.
        rights: Rights,
    },
    /// Releases a handle (its reference). Reply: [`Reply::Done`].
    Close {
        /// The handle.
        handle: HandleId,
    },
    /// Removes a name. A port with holders lives on, nameless, until the last
    /// one closes it. Reply: [`Reply::Done`].
    Unlink {
        /// Which.
        name: Name,
    },
    /// Creates a namespace. Reply: [`Reply::Done`].
    Mkdir {
        /// Where.
        name: Name,
        /// Permission bits (`r` = list, `w` = create and unlink, `x` = look up).
        mode: u32,
    },
    /// Lists a namespace's entries (or one object's), a page at a time.
    /// Reply: [`Reply::Listing`].
    List {
        /// Namespace or object.
        name: Name,
        /// Index of the first entry wanted.
        offset: u32,
    },
    /// Liveness check. Reply: [`Reply::Pong`].
    Ping,
    /// Sends a COCARRIER message: the microkernel copies `len` bytes at
    /// `addr` of the caller's memory into the carrier's arena, where no
    /// client can write. Reply: [`Reply::Done`], or
    /// [`KernelError::WouldBlock`] when no receiver has room.
    CarrierSend {
        /// The sender's handle.
        handle: HandleId,
        /// Address of the message in the sender.
        addr: u64,
        /// Its length.
        len: u64,
        /// Handles of the sender's to pass along with the message, each
        /// with the rights to give (a subset of the handle's own). The
        /// message holds a reference to each object until a receiver takes
        /// them or drops the message.
        attach: Vec<(HandleId, Rights)>,
    },
    /// Sends a message built in place: the request carries one fd, a memfd
    /// of `len` bytes that the sender has sealed against writing and
    /// resizing (the Linux kernel proves nobody can change it). Reply:
    /// [`Reply::Done`], or [`KernelError::WouldBlock`].
    CarrierSendSealed {
        /// The sender's handle.
        handle: HandleId,
        /// The message's length (the memfd's size).
        len: u64,
        /// Handles to pass along, as for [`Request::CarrierSend`].
        attach: Vec<(HandleId, Rights)>,
    },
    /// A receiver fetches the sealed memfd of message `msg` it holds (a
    /// message built in place). Reply: [`Reply::Segment`] with the fd.
    CarrierFetch {
        /// The receiver's handle to the carrier.
        handle: HandleId,
        /// The message's number.
        msg: u64,
    },
    /// A receiver takes the handles that came with message `msg` it holds.
    /// Reply: [`Reply::Taken`], then the fds of every grant, in order.
    CarrierTake {
        /// The receiver's handle to the carrier.
        handle: HandleId,
        /// The message's number.
        msg: u64,
    },
    /// Makes the microkernel collect the messages receivers of a carrier
    /// have released (a receiver whose release queue is full asks this).
    /// Reply: [`Reply::Done`].
    CarrierCollect {
        /// A handle to the carrier.
        handle: HandleId,
    },
    /// A service provider asks for the call segment of one of its callers
    /// (named in a call ticket). Reply: [`Reply::Segment`] with one fd.
    CallerSegment {
        /// The provider's handle to the service.
        handle: HandleId,
        /// The caller's number.
        caller: u32,
    },
    /// Subscribes this connection to the events of the object at `name`
    /// (read permission on it needed, as for a listing). Reply:
    /// [`Reply::Done`]; then [`Reply::Events`] frames (request id 0) come
    /// unasked, one per event, for as long as the connection lives.
    Watch {
        /// The object.
        name: Name,
    },
}

/// Something that happened to a watched object ([`Request::Watch`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The object's name when it was watched.
    pub name: Name,
    /// What happened.
    pub what: EventKind,
}

/// What happened to a watched object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// A process that held a handle to it has gone (it exited, was killed,
    /// or closed its connection); what it left half-done is repaired.
    HolderGone {
        /// Its process id.
        pid: u32,
    },
    /// The last handle with SEND has gone.
    NoSenders,
    /// The last handle with RECV has gone.
    NoReceivers,
    /// Its name was unlinked (the object lives on while held).
    Unlinked,
    /// The object is destroyed; its name, if it still had one, is dead.
    Destroyed,
    /// A coservice's provider has gone: calls fail, the name is free for a
    /// new provider.
    ServiceGone,
}

/// Kind and shape of a port to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortSpec {
    /// A COCHANNEL.
    Channel(ChannelSpec),
    /// A comutex, with the shared object it guards (if any).
    Mutex(MutexSpec),
    /// A coservice.
    Service(ServiceSpec),
    /// A COPIPE.
    Pipe(PipeSpec),
    /// A COCARRIER.
    Carrier(CarrierSpec),
}

/// Shape of a COCARRIER.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarrierSpec {
    /// Bytes of the arena that holds messages in flight.
    pub arena: u64,
    /// Largest message in bytes (at most the arena).
    pub max_message: u64,
    /// Most receivers at once.
    pub receivers: u32,
    /// Messages each receiver may have queued (a power of two).
    pub queue: u32,
}

/// Shape of a COPIPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeSpec {
    /// Bytes of each receiver's buffer: the largest message.
    pub buffer: u32,
    /// Most receivers at once.
    pub receivers: u32,
}

/// Shape of a coservice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Worker threads the provider serves with.
    pub workers: u32,
    /// Largest request or response in bytes.
    pub slot_size: u32,
    /// Calls each caller may have in flight.
    pub call_slots: u32,
    /// Calls waiting for a worker, across all callers (a power of two).
    pub queue: u32,
}

impl PortSpec {
    /// The kind of port this creates.
    pub fn kind(&self) -> PortKind {
        match self {
            PortSpec::Channel(_) => PortKind::Channel,
            PortSpec::Mutex(_) => PortKind::Mutex,
            PortSpec::Service(_) => PortKind::Service,
            PortSpec::Pipe(_) => PortKind::Pipe,
            PortSpec::Carrier(_) => PortKind::Carrier,
        }
    }
}

/// Shape of a comutex and the value it guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutexSpec {
    /// Bytes of the guarded value (0: a bare comutex).
    pub data_size: u32,
    /// Its alignment (a power of two).
    pub data_align: u32,
    /// A fingerprint of the value's type chosen by the creator (0: none),
    /// which openers compare with their own so that two programs never read
    /// one value as two different types.
    pub type_hash: u64,
}

/// Shape of a COCHANNEL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSpec {
    /// Largest message in bytes.
    pub slot_size: u32,
    /// Number of slots (a power of two).
    pub slots: u32,
}

/// Kinds of port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortKind {
    /// COCHANNEL.
    Channel,
    /// Comutex (and shared object).
    Mutex,
    /// Coservice.
    Service,
    /// COPIPE.
    Pipe,
    /// COCARRIER.
    Carrier,
}

/// A handle granted by [`Request::Create`] or [`Request::Open`].
///
/// For a channel, two fds come with the reply: the sender segment, then the
/// receiver segment, each writable only if the rights allow that side. For a
/// comutex, one fd: its segment, writable. For a service: the request
/// channel's two segments (as for a channel: callers may send, the provider
/// receive), the service header (writable by the provider only), and for a
/// caller its own call segment. For a pipe: the control segment (writable)
/// and the data segment (writable only with SEND). For a carrier, a RECV
/// handle gets the arena (read-only), its delivery queue's two segments and
/// its release queue's two segments; a SEND handle gets none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortGrant {
    /// The new handle.
    pub handle: HandleId,
    /// Its rights.
    pub rights: Rights,
    /// Whether the request created the object (rather than opening it).
    pub created: bool,
    /// Kind and shape of the object.
    pub spec: PortSpec,
    /// Holder records per side in a channel's segments.
    pub max_holders: u32,
    /// This handle's record index on the sending side, with SEND.
    pub send_holder: Option<u32>,
    /// This handle's record index on the receiving side, with RECV.
    pub recv_holder: Option<u32>,
    /// A service caller's number (its call segment).
    pub caller: Option<u32>,
}

/// One handle taken from a carrier message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakenHandle {
    /// The object's name, if it still has one.
    pub name: Option<Name>,
    /// The new handle, as an open would grant it.
    pub grant: PortGrant,
    /// How many of the reply's fds belong to this grant.
    pub fds: u32,
}

/// The microkernel's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Handshake accepted.
    Welcome {
        /// Protocol version of the kernel.
        version: u32,
        /// The kernel's pid.
        kernel_pid: u32,
    },
    /// A handle was granted (fds follow as ancillary data).
    Port(PortGrant),
    /// Done.
    Done,
    /// A page of a listing.
    Listing(Listing),
    /// Answer to [`Request::Ping`].
    Pong,
    /// A caller's call segment (one fd follows).
    Segment,
    /// Handles taken from a carrier message; the fds of each grant follow,
    /// in order (`fds` of them per grant).
    Taken(Vec<TakenHandle>),
    /// The request failed.
    Error(KernelError),
    /// Events of watched objects, oldest first (unasked, request id 0;
    /// at most [`crate::EVENTS_PER_FRAME`] per frame).
    Events(Vec<WatchEvent>),
}

/// A page of entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Entries, sorted by name.
    pub entries: Vec<Entry>,
    /// Offset of the next page, if there is one.
    pub next: Option<u32>,
}

/// What a name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A namespace.
    Namespace,
    /// A live port.
    Port(PortKind),
    /// A dead name: its object is gone; creating it again succeeds.
    Dead,
}

/// A process holding a handle to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Its pid.
    pub pid: u32,
    /// Rights of its handle.
    pub rights: Rights,
}

/// One line of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Full name.
    pub name: Name,
    /// What it is.
    pub kind: EntryKind,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
    /// Lives with no holders.
    pub persistent: bool,
    /// Handles open on it.
    pub refs: u32,
    /// Who holds them.
    pub holders: Vec<Holder>,
    /// Shape, for channels.
    pub channel: Option<ChannelSpec>,
    /// Shape, for comutexes.
    pub mutex: Option<MutexSpec>,
    /// Locks taken, for comutexes.
    pub locks: u64,
    /// Locks that found their previous owner dead, for comutexes.
    pub owner_deaths: u64,
    /// Shape, for services.
    pub service: Option<ServiceSpec>,
    /// Shape, for pipes.
    pub pipe: Option<PipeSpec>,
    /// Shape, for carriers.
    pub carrier: Option<CarrierSpec>,
    /// Arena bytes held by messages in flight, for carriers.
    pub arena_used: u64,
    /// Calls served by each worker, for services.
    pub worker_calls: Vec<u64>,
    /// Messages waiting.
    pub depth: u64,
    /// Messages sent.
    pub sent_msgs: u64,
    /// Bytes sent.
    pub sent_bytes: u64,
    /// Messages received.
    pub received_msgs: u64,
    /// Bytes received.
    pub received_bytes: u64,
    /// Messages lost because a holder died mid-operation.
    pub lost: u64,
}

impl Entry {
    /// An entry with no statistics.
    pub fn bare(name: Name, kind: EntryKind, uid: u32, gid: u32, mode: u32) -> Entry {
        Entry {
            name,
            kind,
            uid,
            gid,
            mode,
            persistent: false,
            refs: 0,
            holders: Vec::new(),
            channel: None,
            mutex: None,
            locks: 0,
            owner_deaths: 0,
            service: None,
            pipe: None,
            carrier: None,
            arena_used: 0,
            worker_calls: Vec::new(),
            depth: 0,
            sent_msgs: 0,
            sent_bytes: 0,
            received_msgs: 0,
            received_bytes: 0,
            lost: 0,
        }
    }
}

impl Reply {
    /// Wraps an error.
    pub fn error(e: KernelError) -> Reply {
        Reply::Error(e)
    }
}
