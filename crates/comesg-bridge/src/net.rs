//! The Zenoh side: opening the session from the bridge's flags, and the
//! outbox that publishes frames to other bridges.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use zenoh::pubsub::Publisher;
use zenoh::qos::CongestionControl;
use zenoh::{Session, Wait};

use crate::wire::{inbox, Frame};

/// How the bridge joins Zenoh.
#[derive(Debug, Clone, Default)]
pub struct NetConfig {
    /// A Zenoh config file (JSON5) to start from.
    pub config_file: Option<std::path::PathBuf>,
    /// Endpoints to listen on (`tcp/ADDR:PORT`).
    pub listen: Vec<String>,
    /// Endpoints of other bridges to connect to.
    pub connect: Vec<String>,
    /// Find peers by multicast scouting (off unless asked: tests and
    /// deployments name their peers).
    pub scout: bool,
    /// How long a silent link lives, in milliseconds: a host that vanishes
    /// without closing its connections is declared gone after this.
    pub lease_ms: u64,
}

/// Why the session could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("zenoh: {0}")]
pub struct NetError(pub String);

fn json_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(","))
}

/// Opens the Zenoh session in peer mode.
pub fn open(cfg: &NetConfig) -> Result<Session, NetError> {
    let err = |e: zenoh::Error| NetError(e.to_string());
    let mut config = match &cfg.config_file {
        Some(p) => zenoh::Config::from_file(p).map_err(err)?,
        None => zenoh::Config::default(),
    };
    config.insert_json5("mode", "\"peer\"").map_err(err)?;
    if !cfg.listen.is_empty() {
        config.insert_json5("listen/endpoints", &json_list(&cfg.listen)).map_err(err)?;
    }
    if !cfg.connect.is_empty() {
        config.insert_json5("connect/endpoints", &json_list(&cfg.connect)).map_err(err)?;
        // Keep trying: the peer's bridge may start after this one, or restart.
        config.insert_json5("connect/timeout_ms", "-1").map_err(err)?;
    }
    if cfg.config_file.is_none() || !cfg.scout {
        config.insert_json5("scouting/multicast/enabled", if cfg.scout { "true" } else { "false" }).map_err(err)?;
    }
    if cfg.lease_ms > 0 {
        config.insert_json5("transport/link/tx/lease", &cfg.lease_ms.to_string()).map_err(err)?;
    }
    zenoh::open(config).wait().map_err(err)
}

/// Publishers by (peer, drop when congested).
type Publishers = HashMap<(String, bool), Arc<Publisher<'static>>>;

/// Publishes frames to other bridges' inboxes, one publisher per peer, each
/// reliable and blocking when the network is congested (a full pipe slows
/// the sender; nothing is dropped).
#[derive(Clone)]
pub struct Outbox {
    session: Session,
    me: String,
    /// Per peer: the publisher that waits when the link is congested, and
    /// the one that drops instead.
    publishers: Arc<Mutex<Publishers>>,
}

impl Outbox {
    /// An outbox for the bridge of host `me`.
    pub fn new(session: Session, me: String) -> Outbox {
        Outbox { session, me, publishers: Arc::default() }
    }

    /// This bridge's host name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The session.
    pub fn session(&self) -> &Session {
        &self.session
    }

    fn publisher(&self, host: &str, drop_when_congested: bool) -> Result<Arc<Publisher<'static>>, NetError> {
        let mut map = self.publishers.lock().unwrap_or_else(|p| p.into_inner());
        let key = (host.to_string(), drop_when_congested);
        if let Some(p) = map.get(&key) {
            return Ok(p.clone());
        }
        let cc = if drop_when_congested { CongestionControl::Drop } else { CongestionControl::Block };
        let p = self
            .session
            .declare_publisher(inbox(host))
            .congestion_control(cc)
            .wait()
            .map_err(|e| NetError(e.to_string()))?;
        let p = Arc::new(p);
        map.insert(key, p.clone());
        Ok(p)
    }

    /// Sends `body` to `host`'s bridge, waiting while the link is
    /// congested (nothing is dropped).
    pub fn send(&self, host: &str, body: crate::wire::Body) -> Result<(), NetError> {
        let frame = Frame { from: self.me.clone(), body };
        self.publisher(host, false)?.put(frame.encode()).wait().map_err(|e| NetError(e.to_string()))
    }

    /// Sends `body` to `host`'s bridge, or drops it if the link is
    /// congested: for Zenoh's own threads, which must not wait, and only
    /// for what is sent again later.
    pub fn send_or_drop(&self, host: &str, body: crate::wire::Body) -> Result<(), NetError> {
        let frame = Frame { from: self.me.clone(), body };
        self.publisher(host, true)?.put(frame.encode()).wait().map_err(|e| NetError(e.to_string()))
    }

    /// Forgets the publisher to a host that went away.
    pub fn forget(&self, host: &str) {
        self.publishers.lock().unwrap_or_else(|p| p.into_inner()).retain(|(h, _), _| h != host);
    }
}
