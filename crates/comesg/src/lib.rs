//! comesg: fast, capability-style inter-process communication on Linux.
//!
//! Processes open named ports through a userspace microkernel (the
//! `comesg kernel` daemon, or one embedded in a thread), then move data
//! through shared memory without system calls. Rights are enforced by the
//! operating system: a handle without SEND maps message data read-only.
//!
//! ```no_run
//! use comesg::{ChannelOptions, Connection, Rights};
//!
//! // Process A
//! let conn = Connection::connect_default()?;
//! let tx = conn.create_channel("/app/jobs", ChannelOptions { slot_size: 128, ..Default::default() })?;
//! tx.send(b"job 1")?;
//!
//! // Process B
//! let conn = Connection::connect_default()?;
//! let rx = conn.open_channel("/app/jobs", Rights::RECV)?;
//! let msg = rx.recv_vec()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

#[cfg(feature = "tokio")]
mod async_wait;
mod autostart;
mod channel;
mod cocarrier;
mod comutex;
mod connection;
mod copipe;
mod copoll;
mod error;
mod held;

/// `now + timeout`, or no deadline when that is beyond what `Instant` holds
/// (a timeout of years means "wait").
pub(crate) fn deadline(timeout: std::time::Duration) -> Option<std::time::Instant> {
    std::time::Instant::now().checked_add(timeout)
}
mod service;
mod shared;
mod watch;

pub use bytemuck;
pub use channel::{Channel, RecvSlot, SendLoan};
pub use cocarrier::{Attachable, Building, CarrierMessage, Cocarrier, CocarrierOptions, Handle};
pub use comesg_kernel::{
    default_socket_path, Kernel, KernelConfig, KernelHandle, Limits, StartError as KernelStartError, UserLimits,
};
pub use comesg_proto::{
    CarrierSpec, Entry, EntryKind, HandleId, Holder, KernelError, MutexSpec, Name, PipeSpec, PortKind, Rights,
    ServiceSpec,
};
pub use comutex::{Comutex, ComutexGuard, LockError, LockResult};
pub use connection::{ChannelOptions, ComutexOptions, Connection, REPLY_TIMEOUT};
pub use copipe::{Copipe, CopipeOptions};
pub use copoll::{Copoll, Event, Interest, Pollable, Readiness};
pub use error::{Error, RecvError, SendError};
pub use service::{Call, CallError, PendingCall, Provider, ServiceClient, ServiceOptions};
pub use shared::{SharedGuard, SharedObject};
pub use watch::{EventKind, WatchEvent, Watcher};
