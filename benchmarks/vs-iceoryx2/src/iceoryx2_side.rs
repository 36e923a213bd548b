//! iceoryx2's endpoints, set up as its own examples and documentation
//! advise: publish-subscribe of `[u8]` slices (busy-polling, or woken by an
//! event service through a listener or a WaitSet), and request-response.
//!
//! Both libraries get the same queue depth and lossless delivery: iceoryx2's
//! safe overflow is off, so a full subscriber queue makes the publisher
//! retry, as a full COCHANNEL makes its sender wait.
#![allow(unsafe_code)]

use std::io;
use std::time::{Duration, Instant};

use iceoryx2::port::client::Client;
use iceoryx2::port::listener::Listener;
use iceoryx2::port::notifier::Notifier;
use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::server::Server;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory as PubSub;

use crate::comesg_side::depth;
use crate::endpoint::{header, other, Endpoint};

type Svc = ipc::Service;
type RrService = iceoryx2::service::port_factory::request_response::PortFactory<Svc, [u8], (), [u8], ()>;
type Pending = iceoryx2::pending_response::PendingResponse<Svc, [u8], (), [u8], ()>;

/// How an iceoryx2 receiver waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// `receive()` in a busy loop.
    Poll,
    /// Blocked on an event listener between samples.
    Listener,
    /// Blocked in a WaitSet (epoll) on the listener between samples.
    Waitset,
}

/// The iceoryx2 configuration both processes share: a private prefix and
/// root so that runs never meet.
pub fn config(tag: &str) -> io::Result<Config> {
    let mut cfg = Config::default();
    cfg.global.prefix = FileName::new(format!("cvi{tag}_").as_bytes()).map_err(|e| other(format!("{e:?}")))?;
    let root = Path::new(root_dir(tag).as_bytes()).map_err(|e| other(format!("{e:?}")))?;
    cfg.global.set_root_path(&root);
    Ok(cfg)
}

fn root_dir(tag: &str) -> String {
    format!("/tmp/comesg-vs-iceoryx2-{tag}/")
}

/// A node of this process.
pub fn node(tag: &str) -> io::Result<Node<Svc>> {
    set_log_level(LogLevel::Error);
    let cfg = config(tag)?;
    NodeBuilder::new()
        .config(&cfg)
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<Svc>()
        .map_err(|e| other(format!("iceoryx2 node: {e:?}")))
}

/// Removes what iceoryx2 leaves behind once every node of the run is gone.
pub fn clean_up(tag: &str) {
    if let Ok(cfg) = config(tag) {
        // SAFETY: called by the parent after its peers have exited and its
        // own node is dropped: no process of this run uses the segment.
        let _ = unsafe { iceoryx2::testing::remove_global_mgmt_segment::<Svc>(&cfg) };
    }
    let _ = std::fs::remove_dir_all(root_dir(tag));
}

fn name(s: &str) -> io::Result<ServiceName> {
    ServiceName::new(s).map_err(|e| other(format!("service name {s}: {e:?}")))
}

fn e<E: std::fmt::Debug>(what: &'static str) -> impl Fn(E) -> io::Error {
    move |err| other(format!("iceoryx2 {what}: {err:?}"))
}

fn pubsub(node: &Node<Svc>, s: &str, size: usize) -> io::Result<PubSub<Svc, [u8], ()>> {
    node.service_builder(&name(s)?)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(depth(size) as usize)
        .subscriber_max_borrowed_samples(2)
        .enable_safe_overflow(false)
        .open_or_create()
        .map_err(e("publish-subscribe service"))
}

/// Waits up to ten seconds for `ok`.
fn until(what: &str, mut ok: impl FnMut() -> bool) -> io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        if Instant::now() > deadline {
            return Err(other(format!("iceoryx2 peer never connected its {what}")));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

struct Wake {
    notifier: Notifier<Svc>,
    listener: &'static Listener<Svc>,
    waitset: Option<(&'static WaitSet<Svc>, WaitSetGuard<'static, 'static, Svc>)>,
}

/// One end of a pair of publish-subscribe services.
pub struct PubSubEnd {
    publisher: Publisher<Svc, [u8], ()>,
    subscriber: Subscriber<Svc, [u8], ()>,
    out: PubSub<Svc, [u8], ()>,
    wake: Option<Wake>,
}

impl PubSubEnd {
    /// The end at `base` (`first`: the parent, which publishes on `ping`).
    pub fn new(node: &Node<Svc>, base: &str, size: usize, wait: Wait, first: bool) -> io::Result<PubSubEnd> {
        let (out, inp) = if first { ("ping", "pong") } else { ("pong", "ping") };
        let out_svc = pubsub(node, &format!("{base}/{out}"), size)?;
        let in_svc = pubsub(node, &format!("{base}/{inp}"), size)?;
        let publisher = out_svc.publisher_builder().initial_max_slice_len(size).create().map_err(e("publisher"))?;
        let subscriber = in_svc.subscriber_builder().create().map_err(e("subscriber"))?;
        let wake = match wait {
            Wait::Poll => None,
            Wait::Listener | Wait::Waitset => {
                let out_ev = node.service_builder(&name(&format!("{base}/{out}"))?).event().open_or_create();
                let in_ev = node.service_builder(&name(&format!("{base}/{inp}"))?).event().open_or_create();
                let notifier =
                    out_ev.map_err(e("event service"))?.notifier_builder().create().map_err(e("notifier"))?;
                let listener = in_ev.map_err(e("event service"))?.listener_builder().create().map_err(e("listener"))?;
                // A WaitSet guard borrows the WaitSet and the listener; the
                // benchmark keeps both until it exits.
                let listener: &'static Listener<Svc> = Box::leak(Box::new(listener));
                let waitset = if wait == Wait::Waitset {
                    let ws = WaitSetBuilder::new()
                        .signal_handling_mode(SignalHandlingMode::Disabled)
                        .create::<Svc>()
                        .map_err(e("waitset"))?;
                    let ws: &'static WaitSet<Svc> = Box::leak(Box::new(ws));
                    let guard = ws.attach_notification(listener).map_err(e("waitset attach"))?;
                    Some((ws, guard))
                } else {
                    None
                };
                Some(Wake { notifier, listener, waitset })
            }
        };
        Ok(PubSubEnd { publisher, subscriber, out: out_svc, wake })
    }

    fn put(&mut self, data: &[u8], loan: bool) -> io::Result<()> {
        let mut sample = self.publisher.loan_slice_uninit(data.len()).map_err(e("loan"))?;
        let delivered = if loan {
            let n = data.len().min(8);
            for (d, s) in sample.payload_mut()[..n].iter_mut().zip(&data[..n]) {
                d.write(*s);
            }
            // SAFETY: the chunk lies in a shared-memory segment, whose bytes
            // are always initialized (zero when the segment was made, or an
            // earlier message); only the header is new, as in comesg's loan.
            unsafe { sample.assume_init() }.send().map_err(e("send"))?
        } else {
            sample.write_from_slice(data).send().map_err(e("send"))?
        };
        if delivered == 0 {
            return Err(other("iceoryx2 delivered a sample to no subscriber"));
        }
        if let Some(w) = &self.wake {
            w.notifier.notify().map_err(e("notify"))?;
        }
        Ok(())
    }

    /// Waits (as this end's mode says) until a sample may have come.
    fn wait(&self) -> io::Result<()> {
        match &self.wake {
            None => std::hint::spin_loop(),
            Some(Wake { listener, waitset: None, .. }) => {
                listener.blocking_wait(|_| {}).map_err(e("listener wait"))?;
            }
            Some(Wake { listener, waitset: Some((ws, guard)), .. }) => {
                let mut failed = None;
                ws.wait_and_process_once(|id| {
                    // Drained here, or epoll reports the listener forever.
                    if id.has_event_from(guard) {
                        if let Err(err) = listener.try_wait(|_| {}) {
                            failed = Some(err);
                        }
                    }
                    CallbackProgression::Continue
                })
                .map_err(e("waitset wait"))?;
                if let Some(err) = failed {
                    return Err(e("listener")(err));
                }
            }
        }
        Ok(())
    }

    fn next(&mut self) -> io::Result<iceoryx2::sample::Sample<Svc, [u8], ()>> {
        loop {
            if let Some(s) = self.subscriber.receive().map_err(e("receive"))? {
                return Ok(s);
            }
            self.wait()?;
        }
    }
}

impl Endpoint for PubSubEnd {
    fn send(&mut self, data: &[u8], loan: bool) -> io::Result<()> {
        self.put(data, loan)
    }

    fn recv(&mut self, buf: &mut [u8], loan: bool) -> io::Result<u64> {
        let s = self.next()?;
        let p = s.payload();
        if !loan {
            let n = buf.len().min(p.len());
            buf[..n].copy_from_slice(&p[..n]);
        }
        Ok(header(p))
    }

    fn echo(&mut self) -> io::Result<()> {
        let s = self.next()?;
        self.put(s.payload(), false)
    }

    fn ready(&mut self) -> io::Result<()> {
        until("subscriber", || self.out.dynamic_config().number_of_subscribers() >= 1)
    }
}

/// The client's end of a request-response service.
pub struct RrClient {
    client: Client<Svc, [u8], (), [u8], ()>,
    svc: RrService,
    pending: Option<Pending>,
}

fn rr_service(node: &Node<Svc>, s: &str) -> io::Result<RrService> {
    node.service_builder(&name(s)?)
        .request_response::<[u8], [u8]>()
        .max_clients(1)
        .max_servers(1)
        .max_active_requests_per_client(4)
        .max_response_buffer_size(2)
        .enable_safe_overflow_for_requests(false)
        .enable_safe_overflow_for_responses(false)
        .open_or_create()
        .map_err(e("request-response service"))
}

impl RrClient {
    /// The client of the service at `path`.
    pub fn new(node: &Node<Svc>, path: &str, size: usize) -> io::Result<RrClient> {
        let svc = rr_service(node, path)?;
        let client = svc.client_builder().initial_max_slice_len(size).create().map_err(e("client"))?;
        Ok(RrClient { client, svc, pending: None })
    }
}

impl Endpoint for RrClient {
    fn send(&mut self, data: &[u8], _loan: bool) -> io::Result<()> {
        let req = self.client.loan_slice_uninit(data.len()).map_err(e("loan request"))?;
        self.pending = Some(req.write_from_slice(data).send().map_err(e("send request"))?);
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8], loan: bool) -> io::Result<u64> {
        let pending = self.pending.take().ok_or_else(|| other("no request in flight"))?;
        loop {
            if let Some(r) = pending.receive().map_err(e("receive response"))? {
                let p = r.payload();
                if !loan {
                    let n = buf.len().min(p.len());
                    buf[..n].copy_from_slice(&p[..n]);
                }
                return Ok(header(p));
            }
            std::hint::spin_loop();
        }
    }

    fn echo(&mut self) -> io::Result<()> {
        Err(other("the client does not serve"))
    }

    fn ready(&mut self) -> io::Result<()> {
        until("server", || self.svc.dynamic_config().number_of_servers() >= 1)
    }
}

/// The server's end: answers each request with its own bytes.
pub struct RrServer {
    server: Server<Svc, [u8], (), [u8], ()>,
}

impl RrServer {
    /// The server of the service at `path`.
    pub fn new(node: &Node<Svc>, path: &str, size: usize) -> io::Result<RrServer> {
        let svc = rr_service(node, path)?;
        let server = svc.server_builder().initial_max_slice_len(size).create().map_err(e("server"))?;
        Ok(RrServer { server })
    }
}

impl Endpoint for RrServer {
    fn send(&mut self, _data: &[u8], _loan: bool) -> io::Result<()> {
        Err(other("the server only answers"))
    }
    fn recv(&mut self, _buf: &mut [u8], _loan: bool) -> io::Result<u64> {
        Err(other("the server only answers"))
    }
    fn echo(&mut self) -> io::Result<()> {
        loop {
            if let Some(active) = self.server.receive().map_err(e("receive request"))? {
                let reply = active.loan_slice_uninit(active.payload().len()).map_err(e("loan response"))?;
                return reply.write_from_slice(active.payload()).send().map_err(e("send response"));
            }
            std::hint::spin_loop();
        }
    }
}
