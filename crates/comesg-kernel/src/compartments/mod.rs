//! The microkernel's compartments. Each is a plain state machine: it takes a
//! decoded request and the caller's credentials, changes its tables, and
//! returns a result; it does no I/O, so it can be tested and fuzzed without
//! sockets.
//!
//! - [`names`]: the namespace tree, permissions, dead names;
//! - [`ipc`]: the port table, reference counts, holders;
//! - [`channel`]: a COCHANNEL's segments, holder records and crash repair;
//! - [`comutex`]: a comutex's segment and its robust lock;
//! - [`service`]: a coservice's request channel and call segments;
//! - [`pipe`]: a COPIPE's segments, its ends and their deaths;
//! - [`carrier`]: a COCARRIER's arena, queues and who holds which message;
//! - [`arena`]: allocation of arena space;
//! - [`transfer`]: handles in flight inside carrier messages;
//! - [`events`]: who watches which object, and the events to send them.

pub mod arena;
pub mod carrier;
pub mod channel;
pub mod comutex;
pub mod events;
pub mod ipc;
pub mod names;
pub mod pipe;
pub mod quota;
pub mod service;
pub mod transfer;

/// Who is asking: from `SO_PEERCRED`, never from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cred {
    /// Process id.
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Permission bits, as in a Unix mode's owner/group/other triplets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// `r`: list a namespace; receive from a port.
    Read = 4,
    /// `w`: create or unlink in a namespace; send to a port.
    Write = 2,
    /// `x`: look names up through a namespace.
    Search = 1,
}

impl Perm {
    /// Name of the permission for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Perm::Read => "read",
            Perm::Write => "write",
            Perm::Search => "search",
        }
    }
}

/// Whether `cred` has `perm` on an object with this owner, group and mode.
/// uid 0 has every permission, as in the file system.
pub fn allowed(cred: Cred, uid: u32, gid: u32, mode: u32, perm: Perm) -> bool {
    if cred.uid == 0 {
        return true;
    }
    let bits = if cred.uid == uid {
        mode >> 6
    } else if cred.gid == gid {
        mode >> 3
    } else {
        mode
    };
    bits & perm as u32 != 0
}
