//! A connection to the microkernel: the control path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use comesg_proto::{
    decode_reply, encode_request, ChannelSpec, Entry, HandleId, MutexSpec, Name, PortKind, PortSpec, Reply, ReplyFrame,
    Request, RequestFrame, Rights, ServiceSpec, MAX_FRAME, VERSION,
};
use comesg_sys::{seqpacket, AsFd, OwnedFd};

use crate::channel::Channel;
use crate::comutex::Comutex;
use crate::service::{Call, Provider, ServiceClient, ServiceOptions};
use crate::shared::{spec_of, SharedObject};
use crate::Error;

/// How long a control request may wait for the kernel's reply before the
/// call fails (the kernel answers in microseconds; this only catches a hung
/// or stopped kernel).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Inner {
    fd: Mutex<OwnedFd>,
    next_id: AtomicU32,
    kernel_pid: u32,
    /// The process that connected: a forked child must not use the
    /// connection (the kernel knows the connection by its creator).
    owner_pid: u32,
    socket: PathBuf,
    services: Mutex<std::collections::HashMap<String, std::sync::Weak<ServiceClient>>>,
    /// The kernel closed this connection (it exited or was killed): set by
    /// the first request that found out.
    gone: std::sync::atomic::AtomicBool,
}

/// Each process's cached connections, by socket path: see
/// [`Connection::shared`].
static SHARED: Mutex<Option<std::collections::HashMap<PathBuf, Connection>>> = Mutex::new(None);

/// A connection to the comesg microkernel. Cheap to clone (shared); every
/// handle opened through it keeps it alive.
///
/// ```no_run
/// use comesg::{Connection, ChannelOptions};
/// let conn = Connection::connect_default()?;
/// let ch = conn.create_channel("/demo/hello", ChannelOptions::default())?;
/// ch.send(b"hello")?;
/// let mut buf = [0u8; 64];
/// let n = ch.recv(&mut buf)?;
/// assert_eq!(&buf[..n], b"hello");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

/// How to create a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelOptions {
    /// Largest message in bytes.
    pub slot_size: u32,
    /// Number of slots (a power of two).
    pub slots: u32,
    /// Rights of the creator's handle.
    pub rights: Rights,
    /// Permission bits: `w` lets others send, `r` lets them receive.
    pub mode: u32,
    /// Lives with no holders until unlinked.
    pub persistent: bool,
    /// Fail if the name exists (otherwise open the existing channel).
    pub exclusive: bool,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            slot_size: 256,
            slots: 256,
            rights: Rights::ALL,
            mode: 0o600,
            persistent: false,
            exclusive: false,
        }
    }
}

/// How to create a comutex or shared object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ComutexOptions {
    /// Permission bits: a process needs both `r` and `w` to lock.
    pub mode: u32,
    /// Lives with no holders until unlinked.
    pub persistent: bool,
    /// Fail if the name exists (otherwise open the existing object).
    pub exclusive: bool,
}

impl Default for ComutexOptions {
    fn default() -> Self {
        ComutexOptions { mode: 0o600, persistent: false, exclusive: false }
    }
}

/// A create request for `path`.
fn create_request(
    path: &str,
    spec: PortSpec,
    rights: Rights,
    mode: u32,
    persistent: bool,
    exclusive: bool,
) -> Result<Request, Error> {
    Ok(Request::Create { name: name(path)?, spec, rights, mode, persistent, exclusive })
}

fn name(s: &str) -> Result<Name, Error> {
    Name::try_from(s).map_err(|e| Error::Kernel(comesg_proto::KernelError::InvalidArgument(e.to_string())))
}

impl Connection {
    /// Connects to the kernel at the default socket path (see
    /// [`comesg_kernel::default_socket_path`]).
    pub fn connect_default() -> Result<Connection, Error> {
        Connection::connect(&comesg_kernel::default_socket_path())
    }

    /// Connects to the kernel listening at `socket`.
    pub fn connect(socket: &Path) -> Result<Connection, Error> {
        let err = |source| Error::Connect { path: socket.to_owned(), source };
        let fd = seqpacket::connect(socket).map_err(err)?;
        seqpacket::set_timeouts(fd.as_fd(), Some(REPLY_TIMEOUT)).map_err(err)?;
        // The kernel's pid from the socket itself, not from what it says.
        let peer = seqpacket::peer_cred(fd.as_fd()).map_err(err)?.pid;
        let mut conn = Connection {
            inner: Arc::new(Inner {
                fd: Mutex::new(fd),
                next_id: AtomicU32::new(1),
                kernel_pid: 0,
                owner_pid: comesg_sys::process::pid(),
                socket: socket.to_owned(),
                services: Mutex::new(std::collections::HashMap::new()),
                gone: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        let client = std::env::args().next().unwrap_or_default();
        match conn.request(Request::Hello { version: VERSION, client })? {
            (Reply::Welcome { .. }, _) => {
                if let Some(inner) = Arc::get_mut(&mut conn.inner) {
                    inner.kernel_pid = peer;
                }
                Ok(conn)
            }
            (other, _) => Err(Error::Protocol(format!("expected Welcome, got {other:?}"))),
        }
    }

    /// This process's connection to the kernel at the default socket (see
    /// [`Connection::shared_at`]).
    pub fn shared() -> Result<Connection, Error> {
        Connection::shared_at(&comesg_kernel::default_socket_path())
    }

    /// This process's connection to the kernel at `socket`: made on first
    /// use and cached, so every part of a program shares one; made again,
    /// transparently, when the cached one cannot serve any more:
    /// - after `fork`: the child never talks over its parent's connection
    ///   (the kernel knows a connection by the process that made it);
    /// - after the kernel died: the next call reaches the kernel that runs
    ///   there now (a restarted one).
    ///
    /// Handles opened through the old connection keep their data path (a
    /// channel still moves messages while its peers live), but what needs
    /// the kernel fails on them with [`Error::KernelGone`]: open them again
    /// through the new connection. [`Connection::is_live`] tells which.
    ///
    /// ```no_run
    /// let conn = comesg::Connection::shared()?;
    /// let ch = conn.open_channel("/app/q", comesg::Rights::SEND)?;
    /// # Ok::<(), comesg::Error>(())
    /// ```
    pub fn shared_at(socket: &Path) -> Result<Connection, Error> {
        let mut all = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        let all = all.get_or_insert_with(Default::default);
        if let Some(c) = all.get(socket).filter(|c| c.is_live()) {
            return Ok(c.clone());
        }
        let c = Connection::connect(socket)?;
        all.insert(socket.to_owned(), c.clone());
        Ok(c)
    }

    /// Whether this connection can still serve requests: made by this
    /// process (not inherited through `fork`), and its kernel has not been
    /// found gone.
    pub fn is_live(&self) -> bool {
        comesg_sys::process::pid() == self.inner.owner_pid && !self.inner.gone.load(Ordering::Relaxed)
    }

    /// Connects to the kernel at `socket`, starting one in the background
    /// (`kernel_exe kernel --socket SOCKET --idle-exit SECS`) if none answers.
    /// A kernel started this way exits by itself after `idle_exit` with no
    /// clients and no objects. Two callers racing here share one kernel.
    pub fn connect_or_start(socket: &Path, kernel_exe: &Path, idle_exit: Duration) -> Result<Connection, Error> {
        if let Ok(c) = Connection::connect(socket) {
            return Ok(c);
        }
        let log = socket.with_extension("log");
        crate::autostart::spawn_kernel(kernel_exe, socket, idle_exit, &log)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Connection::connect(socket) {
                Ok(c) => return Ok(c),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }

    /// The socket of a connection nobody else shares (a watch takes its
    /// connection over: events come on it unasked).
    pub(crate) fn into_socket(self) -> Result<OwnedFd, Error> {
        let inner = Arc::try_unwrap(self.inner).map_err(|_| Error::Protocol("the connection is shared".into()))?;
        Ok(inner.fd.into_inner().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn socket_path(&self) -> &Path {
        &self.inner.socket
    }

    /// Whether `other` is this same connection (handle numbers are per
    /// connection).
    pub fn same_as(&self, other: &Connection) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The socket this connection uses.
    pub fn socket(&self) -> &Path {
        &self.inner.socket
    }

    /// The kernel's pid.
    pub fn kernel_pid(&self) -> u32 {
        self.inner.kernel_pid
    }

    /// Sends one request and waits for its reply (and the fds it carries).
    pub fn request(&self, request: Request) -> Result<(Reply, Vec<OwnedFd>), Error> {
        self.request_with(request, true)
    }

    /// [`Connection::request`], optionally without the reply timeout: a
    /// request the kernel may act on long after a caller gave up (a carrier
    /// send reads the caller's memory) must be waited for.
    pub(crate) fn request_with(&self, request: Request, timeout: bool) -> Result<(Reply, Vec<OwnedFd>), Error> {
        self.request_full(request, timeout, &[])
    }

    /// A request that carries fds (a sealed carrier message).
    pub(crate) fn request_full(
        &self,
        request: Request,
        timeout: bool,
        send_fds: &[comesg_sys::BorrowedFd<'_>],
    ) -> Result<(Reply, Vec<OwnedFd>), Error> {
        if comesg_sys::process::pid() != self.inner.owner_pid {
            return Err(Error::Protocol("this connection belongs to the parent process (fork): connect again".into()));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = encode_request(&RequestFrame { id, request });
        let fd = self.inner.fd.lock().unwrap_or_else(|p| p.into_inner());
        if !timeout {
            seqpacket::set_timeouts(fd.as_fd(), None).map_err(gone)?;
        }
        let r = Self::exchange(&self.inner, &fd, id, &bytes, send_fds);
        if matches!(r, Err(Error::KernelGone)) {
            self.inner.gone.store(true, Ordering::Relaxed);
        }
        if !timeout {
            let _ = seqpacket::set_timeouts(fd.as_fd(), Some(REPLY_TIMEOUT));
        }
        r
    }

    fn exchange(
        inner: &Inner,
        fd: &OwnedFd,
        id: u32,
        bytes: &[u8],
        send_fds: &[comesg_sys::BorrowedFd<'_>],
    ) -> Result<(Reply, Vec<OwnedFd>), Error> {
        let mut buf = vec![0u8; MAX_FRAME];
        if let Err(e) = seqpacket::send(fd.as_fd(), bytes, send_fds) {
            return Err(parting(fd, &mut buf, gone(e)));
        }
        comesg_shm::fault::point("control.request.sent");
        loop {
            let rec = match seqpacket::recv(fd.as_fd(), &mut buf) {
                Ok(Some(rec)) => rec,
                Ok(None) => return Err(parting(fd, &mut buf, Error::KernelGone)),
                Err(e) => return Err(parting(fd, &mut buf, gone(e))),
            };
            if rec.truncated {
                return Err(Error::Protocol("reply larger than a frame".into()));
            }
            let ReplyFrame { id: got, reply } =
                decode_reply(&buf[..rec.len]).map_err(|e| Error::Protocol(e.to_string()))?;
            if got == id {
                return Ok((reply, rec.fds));
            }
            match reply {
                Reply::Error(e) if got == 0 => return Err(Error::Kernel(e)),
                // A handle granted to an earlier request whose caller gave up
                // (timed out): give it back, or it stays held until the
                // connection closes. Its Done reply is skipped in turn.
                Reply::Port(g) => {
                    let close = RequestFrame {
                        id: inner.next_id.fetch_add(1, Ordering::Relaxed),
                        request: Request::Close { handle: g.handle },
                    };
                    let _ = seqpacket::send(fd.as_fd(), &encode_request(&close), &[]);
                }
                // Any other reply to an earlier request: skip it.
                _ => {}
            }
        }
    }

    fn expect_done(&self, request: Request) -> Result<(), Error> {
        match self.request(request)? {
            (Reply::Done, _) => Ok(()),
            (Reply::Error(e), _) => Err(Error::Kernel(e)),
            (other, _) => Err(Error::Protocol(format!("expected Done, got {other:?}"))),
        }
    }

    /// Creates a COCHANNEL at `path` (or opens it, unless `exclusive`).
    pub fn create_channel(&self, path: &str, opts: ChannelOptions) -> Result<Channel, Error> {
        let request = create_request(
            path,
            PortSpec::Channel(ChannelSpec { slot_size: opts.slot_size, slots: opts.slots }),
            opts.rights,
            opts.mode,
            opts.persistent,
            opts.exclusive,
        )?;
        self.port(path, request)
    }

    /// Creates a COPIPE at `path` (or opens it, unless `exclusive`).
    pub fn create_copipe(&self, path: &str, opts: crate::CopipeOptions) -> Result<crate::Copipe, Error> {
        let request = create_request(
            path,
            PortSpec::Pipe(comesg_proto::PipeSpec { buffer: opts.buffer, receivers: opts.receivers }),
            opts.rights,
            opts.mode,
            opts.persistent,
            opts.exclusive,
        )?;
        let (grant, fds) = self.grant(request)?;
        crate::Copipe::attach(self.clone(), name(path)?, grant, fds)
    }

    /// Creates a COCARRIER at `path` (or opens it, unless `exclusive`).
    pub fn create_cocarrier(&self, path: &str, opts: crate::CocarrierOptions) -> Result<crate::Cocarrier, Error> {
        let spec = comesg_proto::CarrierSpec {
            arena: opts.arena,
            max_message: opts.max_message,
            receivers: opts.receivers,
            queue: opts.queue,
        };
        let request =
            create_request(path, PortSpec::Carrier(spec), opts.rights, opts.mode, opts.persistent, opts.exclusive)?;
        let (grant, fds) = self.grant(request)?;
        crate::Cocarrier::attach(self.clone(), name(path)?, grant, fds)
    }

    /// Opens the COCARRIER at `path` with `rights`.
    pub fn open_cocarrier(&self, path: &str, rights: Rights) -> Result<crate::Cocarrier, Error> {
        let (grant, fds) = self.grant(Request::Open { name: name(path)?, rights })?;
        crate::Cocarrier::attach(self.clone(), name(path)?, grant, fds)
    }

    /// Opens the COPIPE at `path` with `rights`.
    pub fn open_copipe(&self, path: &str, rights: Rights) -> Result<crate::Copipe, Error> {
        let (grant, fds) = self.grant(Request::Open { name: name(path)?, rights })?;
        crate::Copipe::attach(self.clone(), name(path)?, grant, fds)
    }

    /// Opens the COCHANNEL at `path` with `rights`.
    pub fn open_channel(&self, path: &str, rights: Rights) -> Result<Channel, Error> {
        self.port(path, Request::Open { name: name(path)?, rights })
    }

    fn port(&self, path: &str, request: Request) -> Result<Channel, Error> {
        let (grant, fds) = self.grant(request)?;
        Channel::attach(self.clone(), name(path)?, grant, fds)
    }

    fn grant(&self, request: Request) -> Result<(comesg_proto::PortGrant, Vec<OwnedFd>), Error> {
        match self.request(request)? {
            (Reply::Port(grant), fds) => Ok((grant, fds)),
            (Reply::Error(e), _) => Err(Error::Kernel(e)),
            (other, _) => Err(Error::Protocol(format!("expected Port, got {other:?}"))),
        }
    }

    fn mutex(&self, path: &str, create: Option<(MutexSpec, ComutexOptions)>) -> Result<Comutex, Error> {
        let name = name(path)?;
        let request = match create {
            Some((spec, o)) => {
                create_request(path, PortSpec::Mutex(spec), Rights::ALL, o.mode, o.persistent, o.exclusive)?
            }
            None => Request::Open { name: name.clone(), rights: Rights::ALL },
        };
        let (grant, fds) = self.grant(request)?;
        Comutex::attach(self.clone(), name, grant, fds)
    }

    /// Creates the comutex at `path` (or opens it, unless `exclusive`).
    pub fn create_comutex(&self, path: &str, opts: ComutexOptions) -> Result<Comutex, Error> {
        let m = self.mutex(path, Some((MutexSpec { data_size: 0, data_align: 1, type_hash: 0 }, opts)))?;
        if m.spec().data_size != 0 {
            return Err(Error::WrongKind { name: m.name().clone(), found: PortKind::Mutex });
        }
        Ok(m)
    }

    /// Opens the comutex at `path`.
    pub fn open_comutex(&self, path: &str) -> Result<Comutex, Error> {
        self.mutex(path, None)
    }

    /// Creates the shared object of type `T` at `path`, zeroed (or opens it
    /// if it exists and holds a `T`, unless `exclusive`).
    pub fn create_shared<T: bytemuck::Pod>(&self, path: &str, opts: ComutexOptions) -> Result<SharedObject<T>, Error> {
        SharedObject::from_comutex(self.mutex(path, Some((spec_of::<T>(), opts)))?)
    }

    /// Registers the service at `path` and serves it with `opts.workers`
    /// threads running `handler` (request in, response out) until the
    /// returned [`Provider`] is dropped. A dead name (a provider that died)
    /// can be registered again.
    ///
    /// ```no_run
    /// let conn = comesg::Connection::connect_default()?;
    /// let svc = conn.serve("/app/upper", Default::default(), |call| call.request.to_ascii_uppercase())?;
    /// // elsewhere: conn.service("/app/upper")?.call(b"hi")? == b"HI"
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn serve(
        &self,
        path: &str,
        opts: ServiceOptions,
        handler: impl Fn(&Call<'_>) -> Vec<u8> + Send + Sync + 'static,
    ) -> Result<Provider, Error> {
        self.serve_fallible(path, opts, move |call| Some(handler(call)))
    }

    /// [`Connection::serve`] with a handler that may fail a call: `None`
    /// answers it with [`CallError::HandlerFailed`](crate::CallError::HandlerFailed),
    /// as a panic would, but without unwinding. A forwarder whose far side
    /// did not answer uses it.
    ///
    /// ```no_run
    /// let conn = comesg::Connection::connect_default()?;
    /// let svc = conn.serve_fallible("/app/parse", Default::default(), |call| {
    ///     std::str::from_utf8(call.request).ok().map(|s| s.trim().as_bytes().to_vec())
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn serve_fallible(
        &self,
        path: &str,
        opts: ServiceOptions,
        handler: impl Fn(&Call<'_>) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> Result<Provider, Error> {
        let spec = ServiceSpec {
            workers: opts.workers,
            slot_size: opts.slot_size,
            call_slots: opts.call_slots,
            queue: opts.queue,
        };
        let request = create_request(path, PortSpec::Service(spec), Rights::RECV, opts.mode, false, true)?;
        let (grant, fds) = self.grant(request)?;
        Provider::start(self.clone(), name(path)?, grant, fds, Box::new(handler))
    }

    /// The service at `path`, for calling it. Discovered once: later calls
    /// with the same path return the same client while it is alive and its
    /// provider is not gone.
    pub fn service(&self, path: &str) -> Result<Arc<ServiceClient>, Error> {
        let mut cache = self.inner.services.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(path).and_then(std::sync::Weak::upgrade) {
            if !c.is_gone() {
                return Ok(c);
            }
        }
        let (grant, fds) = self.grant(Request::Open { name: name(path)?, rights: Rights::SEND })?;
        let c = Arc::new(ServiceClient::attach(self.clone(), name(path)?, grant, fds)?);
        cache.retain(|_, w| w.strong_count() > 0);
        cache.insert(path.to_string(), Arc::downgrade(&c));
        Ok(c)
    }

    /// Opens the shared object at `path`, which must hold a `T`.
    pub fn open_shared<T: bytemuck::Pod>(&self, path: &str) -> Result<SharedObject<T>, Error> {
        SharedObject::from_comutex(self.mutex(path, None)?)
    }

    /// Releases a handle. Channels do this when dropped.
    pub(crate) fn close_handle(&self, handle: HandleId) -> Result<(), Error> {
        self.expect_done(Request::Close { handle })
    }

    /// Removes a name; a port still held lives on until its last handle closes.
    pub fn unlink(&self, path: &str) -> Result<(), Error> {
        self.expect_done(Request::Unlink { name: name(path)? })
    }

    /// Creates a namespace.
    pub fn mkdir(&self, path: &str, mode: u32) -> Result<(), Error> {
        self.expect_done(Request::Mkdir { name: name(path)?, mode })
    }

    /// Lists a namespace's entries (or one object), every page.
    pub fn list(&self, path: &str) -> Result<Vec<Entry>, Error> {
        let name = name(path)?;
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            match self.request(Request::List { name: name.clone(), offset })? {
                (Reply::Listing(l), _) => {
                    out.extend(l.entries);
                    match l.next {
                        Some(n) if n > offset => offset = n,
                        _ => return Ok(out),
                    }
                }
                (Reply::Error(e), _) => return Err(Error::Kernel(e)),
                (other, _) => return Err(Error::Protocol(format!("expected Listing, got {other:?}"))),
            }
        }
    }

    /// Checks that the kernel answers.
    pub fn ping(&self) -> Result<(), Error> {
        match self.request(Request::Ping)? {
            (Reply::Pong, _) => Ok(()),
            (other, _) => Err(Error::Protocol(format!("expected Pong, got {other:?}"))),
        }
    }
}

/// A kernel that refuses a connection (a limit) says why, then closes it;
/// the closing may reach us first (a failed send, a reset), with the reason
/// still waiting to be read: return that reason rather than `e`.
fn parting(fd: &OwnedFd, buf: &mut [u8], e: Error) -> Error {
    if !matches!(e, Error::KernelGone) {
        return e;
    }
    // A reset is reported once, before the queued frames.
    for _ in 0..2 {
        match seqpacket::recv(fd.as_fd(), buf) {
            Ok(Some(rec)) => {
                if let Ok(ReplyFrame { id: 0, reply: Reply::Error(k) }) = decode_reply(&buf[..rec.len]) {
                    return Error::Kernel(k);
                }
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    e
}

fn gone(e: std::io::Error) -> Error {
    match e.kind() {
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::NotConnected => {
            Error::KernelGone
        }
        _ => Error::Io(e),
    }
}
