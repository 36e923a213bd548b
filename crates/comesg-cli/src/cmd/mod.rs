//! One module per subcommand.

pub mod bench;
pub mod bridge;
pub mod call;
pub mod create;
pub mod kernel;
pub mod ls;
pub mod peer;
pub mod peer_poll;
pub mod port;
pub mod recv;
pub mod send;
pub mod tour;
pub mod watch;

use std::path::PathBuf;
use std::time::Duration;

use comesg::Connection;

use crate::SocketArg;

/// The kind of the object at `path`, if it is a live port.
pub fn kind_of(conn: &Connection, path: &str) -> Result<Option<comesg::PortKind>, comesg::Error> {
    Ok(conn.list(path)?.into_iter().find(|e| e.name.as_str() == path).and_then(|e| match e.kind {
        comesg::EntryKind::Port(k) => Some(k),
        _ => None,
    }))
}

/// Result of a subcommand.
pub type Outcome = Result<std::process::ExitCode, Box<dyn std::error::Error>>;

/// How long a kernel started by a client command lingers with nothing to do.
pub const AUTOSTART_IDLE_EXIT: Duration = Duration::from_secs(10);

impl SocketArg {
    /// The socket path to use.
    pub fn path(&self) -> PathBuf {
        self.socket.clone().unwrap_or_else(comesg::default_socket_path)
    }

    /// Connects, starting a kernel in the background if none answers.
    pub fn connect(&self) -> Result<Connection, comesg::Error> {
        let exe = std::env::current_exe()?;
        Connection::connect_or_start(&self.path(), &exe, AUTOSTART_IDLE_EXIT)
    }
}
