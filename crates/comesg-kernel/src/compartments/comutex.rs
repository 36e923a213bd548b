//! The microkernel's side of a comutex: it creates the segment, sets the
//! robust lock up in it, and hands the segment to holders.
//!
//! The kernel never takes the lock itself: when an owner dies, the Linux
//! kernel's robust-futex handling marks the lock for the next owner, so there
//! is nothing for the microkernel to repair.

use comesg_proto::{KernelError, MutexSpec, Name, Rights};
use comesg_shm::comutex::{Layout, MutexStats, RobustMutex};
use comesg_sys::bell::Bell;
use comesg_sys::mapping::{Access, Mapping};
use comesg_sys::{memfd, OwnedFd};

/// A comutex as the kernel holds it.
#[derive(Debug)]
pub struct MutexObject {
    spec: MutexSpec,
    fd: OwnedFd,
    mutex: RobustMutex,
    bell: Bell,
}

fn internal(e: impl std::fmt::Display) -> KernelError {
    KernelError::Internal(e.to_string())
}

impl MutexObject {
    /// Creates and initializes the segment of a comutex for `name`.
    pub fn create(name: &Name, spec: MutexSpec) -> Result<MutexObject, KernelError> {
        let layout = Layout { data_size: spec.data_size, data_align: spec.data_align };
        layout.validate().map_err(|e| KernelError::InvalidArgument(e.to_string()))?;
        let len = layout.segment_len();
        let fd = memfd::create_segment(&format!("comesg{name}:mutex"), len as u64).map_err(internal)?;
        let mutex =
            RobustMutex::new(layout, Mapping::map(&fd, len, Access::ReadWrite).map_err(internal)?).map_err(internal)?;
        mutex.initialize().map_err(internal)?;
        Ok(MutexObject { spec, fd, mutex, bell: Bell::new().map_err(internal)? })
    }

    /// The comutex's shape.
    pub fn spec(&self) -> MutexSpec {
        self.spec
    }

    /// Bytes of shared memory it holds (its segments' sizes; pages are
    /// allocated on first touch, so this is what it may come to use).
    pub fn memory(&self) -> u64 {
        memfd::size(&self.fd).unwrap_or(0)
    }

    /// Checks that a handle asks for what a comutex handle is: the right to
    /// lock, which is the right to read and write the guarded value.
    pub fn check_rights(rights: Rights) -> Result<(), KernelError> {
        if rights != Rights::ALL {
            return Err(KernelError::InvalidArgument("a comutex handle needs SEND|RECV (lock)".into()));
        }
        Ok(())
    }

    /// The fd a holder maps (read-write: locking writes the lock word).
    pub fn fds(&self) -> Result<Vec<OwnedFd>, KernelError> {
        Ok(vec![self.fd.try_clone().map_err(internal)?])
    }

    /// The comutex's bell (rung on unlock while someone polls it).
    pub fn bell(&self) -> &Bell {
        &self.bell
    }

    /// Counters read from the segment.
    pub fn stats(&self) -> MutexStats {
        self.mutex.stats()
    }
}
