//! The microkernel's side of a COPIPE: it creates the control and data
//! segments, gives each receiver handle a slot and each sender a number,
//! keeps the live counts the ends read for end-of-file and broken pipe, and
//! finishes a departed holder's half-done rendezvous.

use comesg_proto::{KernelError, Name, PipeSpec, Rights};
use comesg_shm::pipe::{Pipe, PipeLayout};
use comesg_sys::bell::Bell;
use comesg_sys::mapping::{Access, Mapping};
use comesg_sys::{memfd, OwnedFd};

use super::channel::{Attachment, Records};

fn internal(e: impl std::fmt::Display) -> KernelError {
    KernelError::Internal(e.to_string())
}

/// Sender numbers fit the 16 bits a slot state records.
const MAX_SENDERS: u32 = 1 << 16;

/// A COPIPE as the kernel holds it.
#[derive(Debug)]
pub struct PipeObject {
    spec: PipeSpec,
    control: OwnedFd,
    data_rw: OwnedFd,
    data_ro: OwnedFd,
    pipe: Pipe,
    bell: Bell,
    senders: Records,
    receivers: Records,
    live_senders: u32,
    live_receivers: u32,
    /// Slots whose receiver died while a sender held its offer: reusable
    /// once that sender lets go (or dies).
    quarantine: Vec<u32>,
}

impl PipeObject {
    /// Creates the segments of a pipe for `name`.
    pub fn create(name: &Name, spec: PipeSpec) -> Result<PipeObject, KernelError> {
        let layout = PipeLayout { buffer: spec.buffer, receivers: spec.receivers };
        layout.validate().map_err(|e| KernelError::InvalidArgument(e.to_string()))?;
        let control =
            memfd::create_segment(&format!("comesg{name}:pipe"), layout.control_len() as u64).map_err(internal)?;
        let data_rw =
            memfd::create_segment(&format!("comesg{name}:pipedata"), layout.data_len() as u64).map_err(internal)?;
        let data_ro = memfd::reopen_read_only(&data_rw).map_err(internal)?;
        let mut pipe = Pipe::new(
            layout,
            Mapping::map(&control, layout.control_len(), Access::ReadWrite).map_err(internal)?,
            Mapping::map(&data_rw, layout.data_len(), Access::ReadWrite).map_err(internal)?,
        )
        .map_err(internal)?;
        let bell = Bell::new().map_err(internal)?;
        pipe.set_bell(bell.try_clone().map_err(internal)?);
        Ok(PipeObject {
            spec,
            control,
            data_rw,
            data_ro,
            pipe,
            bell,
            senders: Records::default(),
            receivers: Records::default(),
            live_senders: 0,
            live_receivers: 0,
            quarantine: Vec::new(),
        })
    }

    /// The pipe's shape.
    pub fn spec(&self) -> PipeSpec {
        self.spec
    }

    /// Bytes of shared memory it holds (its segments' sizes; pages are
    /// allocated on first touch, so this is what it may come to use).
    pub fn memory(&self) -> u64 {
        memfd::size(&self.control).unwrap_or(0) + memfd::size(&self.data_rw).unwrap_or(0)
    }

    /// The pipe's bell.
    pub fn bell(&self) -> &Bell {
        &self.bell
    }

    /// Gives a new handle a sender number and/or a receiver slot.
    pub fn attach(&mut self, rights: Rights) -> Result<Attachment, KernelError> {
        let mut att = Attachment::default();
        if rights.contains(Rights::SEND) {
            let h = self.senders.take(MAX_SENDERS).ok_or_else(|| KernelError::Limit("senders of one pipe".into()))?;
            att.send = Some(h);
        }
        if rights.contains(Rights::RECV) {
            let pipe = &self.pipe;
            let (free, held): (Vec<u32>, Vec<u32>) = self.quarantine.drain(..).partition(|&r| pipe.slot_free(r));
            self.quarantine = held;
            for r in free {
                self.receivers.give_back(r);
            }
            match self.receivers.take(self.spec.receivers) {
                Some(r) => {
                    self.pipe.reset_slot(r).map_err(internal)?;
                    att.recv = Some(r);
                }
                None => {
                    if let Some(h) = att.send {
                        self.senders.give_back(h);
                    }
                    return Err(KernelError::Limit(format!("{} receivers of this pipe", self.spec.receivers)));
                }
            }
        }
        if att.send.is_some() {
            self.live_senders += 1;
            self.pipe.set_senders(self.live_senders, true);
        }
        if att.recv.is_some() {
            self.live_receivers += 1;
            self.pipe.set_receivers(self.live_receivers, true);
        }
        Ok(att)
    }

    /// The fds a handle receives: control (read-write), data (read-write
    /// only with SEND).
    pub fn fds_for(&self, rights: Rights) -> Result<Vec<OwnedFd>, KernelError> {
        let data = if rights.contains(Rights::SEND) { &self.data_rw } else { &self.data_ro };
        Ok(vec![self.control.try_clone().map_err(internal)?, data.try_clone().map_err(internal)?])
    }

    /// Releases handles: a sender's claimed-but-unfilled offers open again,
    /// a receiver's slot goes dead (a sender waiting on it gets an error),
    /// and the live counts drop (to zero: end of file or broken pipe).
    pub fn detach_all(&mut self, atts: &[Attachment]) {
        for att in atts {
            if let Some(h) = att.send {
                self.pipe.sender_gone(h);
                self.senders.give_back(h);
                self.live_senders = self.live_senders.saturating_sub(1);
                self.pipe.set_senders(self.live_senders, false);
            }
            if let Some(r) = att.recv {
                match self.pipe.receiver_gone(r) {
                    Ok(true) => self.quarantine.push(r),
                    _ => self.receivers.give_back(r),
                }
                self.live_receivers = self.live_receivers.saturating_sub(1);
                self.pipe.set_receivers(self.live_receivers, false);
            }
        }
    }

    /// Live senders and receivers.
    pub fn ends(&self) -> (u32, u32) {
        (self.live_senders, self.live_receivers)
    }
}
