//! comesg bridge: the ports and services of one microkernel reachable from
//! other hosts, over Zenoh (DESIGN §10).
//!
//! A bridge is one more client of its local microkernel and one Zenoh peer.
//! With `--export /app/sensors` it offers the channels and services under
//! that name to other hosts; every bridge makes what other hosts offer
//! appear in its own kernel under `/net/HOST/...`, where programs open it as
//! they open any local name.
//!
//! - [`wire`]: frames between bridges and the keys they travel on.
//! - [`net`]: the Zenoh session and the outbox.
//! - [`port`]: the port kinds that carry messages (COCHANNEL, COCARRIER).
//! - [`link`]: takers and injectors, which move messages exactly once.
//! - [`export`]: which local names are offered.
//! - [`bridge`]: the bridge itself.

pub mod bridge;
pub mod export;
pub mod link;
pub mod net;
pub mod port;
pub mod wire;

pub use bridge::{Bridge, BridgeConfig, StartError};
pub use export::ExportSpec;
pub use net::NetConfig;
