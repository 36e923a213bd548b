//! The microkernel's side of a coservice: the request channel, the service
//! header, and one call segment per caller handle.
//!
//! The provider holds the one RECV handle (it serves); every SEND handle is
//! a caller with a call segment of its own that only it and the provider
//! map. When the provider's handle goes, the service is dead: every call
//! segment is marked so and its sleeping callers woken, and the name is
//! freed for a new provider. When a caller's handle goes, its segment is
//! marked gone and the departure count bumped so the provider unmaps it.

use std::collections::BTreeMap;

use comesg_proto::{ChannelSpec, KernelError, Name, Rights, ServiceSpec};
use comesg_shm::service::{header_len, CallLayout, CallSegment, ServiceHeader, Ticket, MAX_WORKERS};
use comesg_sys::mapping::{Access, Mapping};
use comesg_sys::{memfd, OwnedFd};

use super::channel::{Attachment, ChannelObject};

fn internal(e: impl std::fmt::Display) -> KernelError {
    KernelError::Internal(e.to_string())
}

#[derive(Debug)]
struct Caller {
    fd: OwnedFd,
    seg: CallSegment,
}

/// A coservice as the kernel holds it.
#[derive(Debug)]
pub struct ServiceObject {
    spec: ServiceSpec,
    requests: ChannelObject,
    header_rw: OwnedFd,
    header_ro: OwnedFd,
    header: ServiceHeader,
    callers: BTreeMap<u32, Caller>,
    next_caller: u32,
    provider: bool,
    dead: bool,
    name: String,
}

impl ServiceObject {
    /// Creates the request channel and the header of a service at `name`.
    pub fn create(name: &Name, spec: ServiceSpec, max_holders: u32) -> Result<ServiceObject, KernelError> {
        if spec.workers == 0 || spec.workers > MAX_WORKERS {
            return Err(KernelError::InvalidArgument(format!("workers must be 1..={MAX_WORKERS}")));
        }
        CallLayout { slots: spec.call_slots, slot_size: spec.slot_size }
            .validate()
            .map_err(|e| KernelError::InvalidArgument(e.to_string()))?;
        let requests =
            ChannelObject::create(name, ChannelSpec { slot_size: Ticket::LEN as u32, slots: spec.queue }, max_holders)?;
        let len = header_len(spec.workers);
        let header_rw = memfd::create_segment(&format!("comesg{name}:service"), len as u64).map_err(internal)?;
        let header_ro = memfd::reopen_read_only(&header_rw).map_err(internal)?;
        let header =
            ServiceHeader::new(spec.workers, Mapping::map(&header_rw, len, Access::ReadWrite).map_err(internal)?)
                .map_err(internal)?;
        Ok(ServiceObject {
            spec,
            requests,
            header_rw,
            header_ro,
            header,
            callers: BTreeMap::new(),
            next_caller: 0,
            provider: false,
            dead: false,
            name: name.to_string(),
        })
    }

    /// The service's shape.
    pub fn spec(&self) -> ServiceSpec {
        self.spec
    }

    /// Bytes of shared memory it holds (its header and request channel; each caller's call segment comes on top; pages are
    /// allocated on first touch, so this is what it may come to use).
    pub fn memory(&self) -> u64 {
        memfd::size(&self.header_rw).unwrap_or(0) + self.requests.memory()
    }

    /// The service's bell: its request channel's.
    pub fn bell(&self) -> &comesg_sys::bell::Bell {
        self.requests.bell()
    }

    /// Holder records per side of the request channel.
    pub fn max_holders(&self) -> u32 {
        self.requests.max_holders()
    }

    /// Whether its provider has gone.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Whether a provider serves it now.
    pub fn has_provider(&self) -> bool {
        self.provider
    }

    /// A handle is RECV (the provider; there is one) or SEND (a caller).
    pub fn check_rights(&self, rights: Rights) -> Result<(), KernelError> {
        if rights != Rights::RECV && rights != Rights::SEND {
            return Err(KernelError::InvalidArgument("a service handle is RECV (serve) or SEND (call)".into()));
        }
        if self.dead {
            return Err(KernelError::InvalidArgument("the service's provider has gone".into()));
        }
        if rights == Rights::RECV && self.provider {
            return Err(KernelError::InvalidArgument("the service already has a provider".into()));
        }
        Ok(())
    }

    /// Attaches a provider or a caller (or, with no rights, a reference
    /// that only keeps the service alive: a handle in flight).
    pub fn attach(&mut self, rights: Rights) -> Result<Attachment, KernelError> {
        if rights.is_empty() {
            return Ok(Attachment::default());
        }
        self.check_rights(rights)?;
        let mut att = self.requests.attach(rights)?;
        if rights == Rights::RECV {
            self.provider = true;
            return Ok(att);
        }
        let layout = CallLayout { slots: self.spec.call_slots, slot_size: self.spec.slot_size };
        let made = (|| {
            let fd = memfd::create_segment(&format!("comesg{}:caller", self.name), layout.segment_len() as u64)
                .map_err(internal)?;
            let map = Mapping::map(&fd, layout.segment_len(), Access::ReadWrite).map_err(internal)?;
            Ok::<_, KernelError>(Caller { seg: CallSegment::new(layout, map).map_err(internal)?, fd })
        })();
        let caller = match made {
            Ok(c) => c,
            Err(e) => {
                self.requests.detach(att);
                return Err(e);
            }
        };
        // Skip numbers still in use once the counter has wrapped.
        let mut id = self.next_caller;
        while self.callers.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_caller = id.wrapping_add(1);
        self.callers.insert(id, caller);
        att.caller = Some(id);
        Ok(att)
    }

    /// Bytes of the call segment each caller gets.
    pub fn call_segment_len(&self) -> u64 {
        CallLayout { slots: self.spec.call_slots, slot_size: self.spec.slot_size }.segment_len() as u64
    }

    /// The fds a handle receives: request channel segments, header, and a
    /// caller's call segment.
    pub fn fds_for(&self, rights: Rights, att: &Attachment) -> Result<Vec<OwnedFd>, KernelError> {
        let mut fds = self.requests.fds_for(rights)?;
        let header = if rights.contains(Rights::RECV) { &self.header_rw } else { &self.header_ro };
        fds.push(header.try_clone().map_err(internal)?);
        if let Some(c) = att.caller {
            fds.push(self.segment_fd(c)?);
        }
        Ok(fds)
    }

    /// A caller's call segment, for the provider.
    pub fn segment_fd(&self, caller: u32) -> Result<OwnedFd, KernelError> {
        let c = self
            .callers
            .get(&caller)
            .ok_or_else(|| KernelError::InvalidArgument(format!("no caller {caller} on this service")))?;
        c.fd.try_clone().map_err(internal)
    }

    /// Releases handles. Returns the request tickets lost and whether this
    /// made the service dead (its provider went).
    pub fn detach_all(&mut self, atts: &[Attachment]) -> (u64, bool) {
        let lost = self.requests.detach_all(atts);
        let mut died = false;
        for att in atts {
            if let Some(c) = att.caller.and_then(|id| self.callers.remove(&id)) {
                c.seg.mark_caller_gone();
                self.header.bump_departures();
            }
            if att.recv.is_some() && self.provider {
                self.provider = false;
                self.dead = true;
                died = true;
            }
        }
        if died {
            for c in self.callers.values() {
                c.seg.mark_dead();
            }
        }
        (lost, died)
    }

    /// Calls served per worker (provider-written counters).
    pub fn worker_calls(&self) -> Vec<u64> {
        self.header.calls()
    }
}
