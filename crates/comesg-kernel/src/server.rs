//! The microkernel's event loop: accepts connections on the control socket,
//! reads one request record at a time, hands it to [`State`], and writes the
//! reply with the fds it grants. It watches every client's process through a
//! pidfd and its connection for hang-up; either one releases everything the
//! client held.
//!
//! One thread serves every client: each request is a few microseconds of
//! table work, and no request waits for another client.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use comesg_proto::{decode_request, encode_reply, KernelError, Reply, ReplyFrame, EVENTS_PER_FRAME, MAX_FRAME};
use comesg_sys::lockfile::LockFile;
use comesg_sys::poll::{Poller, Ready, Waker};
use comesg_sys::{seqpacket, AsFd, OwnedFd};

use crate::compartments::ipc::ClientId;
use crate::compartments::Cred;
use crate::paths;
use crate::state::{Limits, State};

/// How a kernel is run.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    /// Control socket path.
    pub socket: PathBuf,
    /// Exit after this long with no clients and no objects.
    pub idle_exit: Option<Duration>,
    /// Resource bounds.
    pub limits: Limits,
    /// Serve every user of the machine: the socket's directory is made
    /// searchable (0755) and the socket connectable (0666) by all; who may
    /// do what is then up to the names' owners and modes, and each user
    /// gets a private namespace `/user/UID`.
    pub shared: bool,
}

impl KernelConfig {
    /// A configuration for `socket` with default limits, no idle exit, and
    /// only this user served.
    pub fn new(socket: impl Into<PathBuf>) -> KernelConfig {
        KernelConfig { socket: socket.into(), idle_exit: None, limits: Limits::default(), shared: false }
    }
}

/// Why a kernel did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another kernel holds the lock for this socket path.
    #[error("a kernel already serves {0}")]
    AlreadyRunning(PathBuf),
    /// The socket or its directory could not be set up.
    #[error("cannot listen on {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

const LISTENER: u64 = 0;
const WAKER: u64 = 1;
/// Frames served per client per readiness event, so one busy client cannot
/// starve the others.
const BURST: usize = 32;

struct Conn {
    fd: OwnedFd,
    pidfd: Option<OwnedFd>,
    cred: Cred,
}

/// A bound microkernel, ready to [`Kernel::run`].
pub struct Kernel {
    config: KernelConfig,
    listener: OwnedFd,
    _lock: LockFile,
    poller: Poller,
    waker: Waker,
    state: State,
    conns: HashMap<ClientId, Conn>,
    next_client: u64,
    buf: Vec<u8>,
    /// Accepting is paused until then (out of fds): the listener is out of
    /// the epoll set meanwhile, or its pending connections would wake the
    /// loop for ever.
    accept_paused: Option<Instant>,
}

/// How long accepting pauses after `accept` failed (out of fds, most likely).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel").field("socket", &self.config.socket).field("clients", &self.conns.len()).finish()
    }
}

fn conn_token(id: ClientId) -> u64 {
    id.0 * 2 + 2
}
fn pid_token(id: ClientId) -> u64 {
    id.0 * 2 + 3
}

impl Kernel {
    /// Takes the socket path's lock and listens on it. Fails with
    /// [`StartError::AlreadyRunning`] if another kernel holds the lock.
    pub fn bind(config: KernelConfig) -> Result<Kernel, StartError> {
        let path = config.socket.clone();
        let io = |source| StartError::Io { path: path.clone(), source };
        paths::prepare_dir(&path, config.shared).map_err(io)?;
        let lock = LockFile::try_lock(&paths::lock_path(&path))
            .map_err(io)?
            .ok_or_else(|| StartError::AlreadyRunning(path.clone()))?;
        // We hold the lock, so a socket file left here is a dead kernel's.
        let _ = std::fs::remove_file(&path);
        let listener = seqpacket::listen(&path, 1024).map_err(io)?;
        if config.shared {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).map_err(io)?;
        }
        let _ = comesg_sys::process::raise_nofile_limit();
        let poller = Poller::new().map_err(io)?;
        let waker = Waker::new().map_err(io)?;
        poller.add(listener.as_fd(), LISTENER).map_err(io)?;
        poller.add(waker.as_fd(), WAKER).map_err(io)?;
        let state = State::new(comesg_sys::process::uid(), rustix::process::getgid().as_raw(), config.limits);
        tracing::info!(socket = %path.display(), pid = comesg_sys::process::pid(), "microkernel listening");
        Ok(Kernel {
            config,
            listener,
            _lock: lock,
            poller,
            waker,
            state,
            conns: HashMap::new(),
            next_client: 0,
            buf: vec![0; MAX_FRAME],
            accept_paused: None,
        })
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.config.socket
    }

    /// A waker that stops [`Kernel::run`] from another thread.
    pub fn stopper(&self) -> io::Result<Waker> {
        self.waker.try_clone()
    }

    /// Serves until stopped or, with an idle exit configured, until idle
    /// for that long. Removes the socket file on the way out.
    pub fn run(mut self) -> io::Result<()> {
        let mut ready = Vec::new();
        let mut idle_since: Option<Instant> = None;
        let result = loop {
            let timeout = match self.config.idle_exit {
                Some(limit) if self.state.is_idle() => {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    let left = limit.saturating_sub(since.elapsed());
                    if left.is_zero() {
                        tracing::info!("idle; exiting");
                        break Ok(());
                    }
                    Some(left)
                }
                _ => {
                    idle_since = None;
                    None
                }
            };
            let timeout = match self.accept_paused {
                Some(until) => {
                    let left = until.saturating_duration_since(Instant::now());
                    Some(timeout.map_or(left, |t| t.min(left)))
                }
                None => timeout,
            };
            ready.clear();
            if let Err(e) = self.poller.wait(&mut ready, timeout) {
                break Err(e);
            }
            if self.accept_paused.is_some_and(|until| Instant::now() >= until)
                && self.poller.add(self.listener.as_fd(), LISTENER).is_ok()
            {
                self.accept_paused = None;
                self.accept();
            }
            if ready.iter().any(|r| r.token == WAKER) {
                tracing::info!("stopped");
                break Ok(());
            }
            for r in ready.drain(..) {
                self.dispatch(r);
            }
        };
        let _ = std::fs::remove_file(&self.config.socket);
        result
    }

    /// Binds and serves on a thread of this process (embedded mode). The
    /// kernel stops when the handle is dropped.
    pub fn spawn(config: KernelConfig) -> Result<KernelHandle, StartError> {
        let k = Kernel::bind(config)?;
        let socket = k.config.socket.clone();
        let stop = k.stopper().map_err(|source| StartError::Io { path: socket.clone(), source })?;
        let thread = std::thread::Builder::new()
            .name("comesg-kernel".into())
            .spawn(move || {
                if let Err(e) = k.run() {
                    tracing::error!("microkernel stopped: {e}");
                }
            })
            .map_err(|source| StartError::Io { path: socket.clone(), source })?;
        Ok(KernelHandle { socket, stop, thread: Some(thread) })
    }

    fn dispatch(&mut self, r: Ready) {
        match r.token {
            LISTENER => self.accept(),
            t => {
                let id = ClientId((t - 2) / 2);
                if t % 2 == 1 {
                    tracing::debug!(client = id.0, "process exited");
                    self.disconnect(id, "process exited");
                } else if r.readable {
                    self.serve(id);
                } else if r.hangup {
                    self.disconnect(id, "hung up");
                }
                self.flush_events();
            }
        }
    }

    /// Sends the events the state recorded to their watchers, batched (one
    /// record per watcher per round, for up to [`EVENTS_PER_FRAME`]). A
    /// watcher that does not read them (its socket buffer is full) is
    /// dropped, as a client that does not read its replies is; dropping it
    /// may record more events, hence the rounds (bounded: each drops a
    /// connection).
    fn flush_events(&mut self) {
        for _ in 0..64 {
            let events = self.state.take_events();
            if events.is_empty() {
                return;
            }
            let mut per: Vec<(ClientId, Vec<comesg_proto::WatchEvent>)> = Vec::new();
            for (c, ev) in events {
                match per.iter_mut().find(|(x, _)| *x == c) {
                    Some((_, v)) => v.push(ev),
                    None => per.push((c, vec![ev])),
                }
            }
            for (c, evs) in per {
                for chunk in evs.chunks(EVENTS_PER_FRAME) {
                    let bytes = encode_reply(&ReplyFrame { id: 0, reply: Reply::Events(chunk.to_vec()) });
                    let Some(conn) = self.conns.get(&c) else { break };
                    if seqpacket::send(conn.fd.as_fd(), &bytes, &[]).is_err() {
                        self.disconnect(c, "not reading its events");
                        break;
                    }
                }
            }
        }
    }

    fn accept(&mut self) {
        for _ in 0..64 {
            let fd = match seqpacket::accept(self.listener.as_fd()) {
                Ok(Some(fd)) => fd,
                Ok(None) => return,
                Err(e) => {
                    // Out of fds, most likely: let the backlog wait, without
                    // the listener waking the loop meanwhile.
                    tracing::warn!("accept: {e}; pausing new connections for {ACCEPT_PAUSE:?}");
                    self.poller.remove(self.listener.as_fd());
                    self.accept_paused = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
            };
            let cred = match seqpacket::peer_cred(fd.as_fd()) {
                Ok(c) => Cred { pid: c.pid, uid: c.uid, gid: c.gid },
                Err(_) => continue,
            };
            self.next_client += 1;
            let id = ClientId(self.next_client);
            if let Err(e) = self.state.connect(id, cred) {
                let bytes = encode_reply(&ReplyFrame { id: 0, reply: Reply::Error(e) });
                let _ = seqpacket::send(fd.as_fd(), &bytes, &[]);
                continue;
            }
            // The pidfd catches the death of a client whose socket outlives
            // it (inherited by a child). If the process is already gone, the
            // hang-up of its socket does the same job.
            let pidfd = comesg_sys::process::pidfd_open(cred.pid).ok();
            if self.poller.add(fd.as_fd(), conn_token(id)).is_err() {
                self.state.disconnect(id);
                continue;
            }
            if let Some(p) = &pidfd {
                let _ = self.poller.add(p.as_fd(), pid_token(id));
            }
            tracing::debug!(client = id.0, pid = cred.pid, uid = cred.uid, "connected");
            self.conns.insert(id, Conn { fd, pidfd, cred });
        }
    }

    fn serve(&mut self, id: ClientId) {
        for _ in 0..BURST {
            let Some(conn) = self.conns.get(&id) else {
                return;
            };
            let rec = match seqpacket::recv(conn.fd.as_fd(), &mut self.buf) {
                Ok(Some(rec)) => rec,
                Ok(None) => return self.disconnect(id, "closed"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => return self.disconnect(id, "receive failed"),
            };
            // Only a sealed carrier message comes with an fd; the state
            // takes what a request may carry and closes the rest.
            let (req_id, outcome) = if rec.truncated {
                (0, None)
            } else {
                match decode_request(&self.buf[..rec.len]) {
                    Ok(frame) => (frame.id, Some(self.state.handle_with_fds(id, frame.request, rec.fds))),
                    Err(e) => {
                        tracing::debug!(client = id.0, "malformed request: {e}");
                        let bytes = encode_reply(&ReplyFrame {
                            id: 0,
                            reply: Reply::Error(KernelError::Malformed(e.to_string())),
                        });
                        if !self.reply(id, &bytes, &[]) {
                            return;
                        }
                        continue;
                    }
                }
            };
            let outcome = match outcome {
                Some(o) => o,
                None => {
                    let e = KernelError::TooLarge { max: MAX_FRAME as u32 };
                    let bytes = encode_reply(&ReplyFrame { id: req_id, reply: Reply::Error(e) });
                    if !self.reply(id, &bytes, &[]) {
                        return;
                    }
                    continue;
                }
            };
            let bytes = encode_reply(&ReplyFrame { id: req_id, reply: outcome.reply });
            let fds: Vec<_> = outcome.fds.iter().map(|f| f.as_fd()).collect();
            if !self.reply(id, &bytes, &fds) {
                return;
            }
            if outcome.close {
                return self.disconnect(id, "closed after error");
            }
        }
    }

    /// Sends a reply; a client whose socket buffer is full is not reading its
    /// replies and is dropped rather than allowed to stall the kernel.
    fn reply(&mut self, id: ClientId, bytes: &[u8], fds: &[comesg_sys::BorrowedFd<'_>]) -> bool {
        let Some(conn) = self.conns.get(&id) else {
            return false;
        };
        match seqpacket::send(conn.fd.as_fd(), bytes, fds) {
            Ok(()) => true,
            Err(_) => {
                self.disconnect(id, "reply failed");
                false
            }
        }
    }

    fn disconnect(&mut self, id: ClientId, why: &str) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        self.poller.remove(conn.fd.as_fd());
        if let Some(p) = &conn.pidfd {
            self.poller.remove(p.as_fd());
        }
        let d = self.state.disconnect(id);
        if d.handles > 0 || d.lost > 0 {
            tracing::info!(
                client = id.0,
                pid = conn.cred.pid,
                handles = d.handles,
                lost = d.lost,
                destroyed = d.destroyed,
                "{why}: released"
            );
        } else {
            tracing::debug!(client = id.0, pid = conn.cred.pid, "{why}");
        }
    }
}

/// A kernel running on a thread of this process; dropping it stops the
/// kernel and waits for the thread.
#[derive(Debug)]
pub struct KernelHandle {
    socket: PathBuf,
    stop: Waker,
    thread: Option<JoinHandle<()>>,
}

impl KernelHandle {
    /// The socket path clients connect to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for KernelHandle {
    fn drop(&mut self) {
        self.stop.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
