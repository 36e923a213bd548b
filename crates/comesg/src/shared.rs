//! Shared objects: a named, fixed-layout value in shared memory, reachable
//! only through the comutex that guards it.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use bytemuck::Pod;
use comesg_proto::{MutexSpec, Name};

use crate::comutex::{Comutex, ComutexGuard, LockError, LockResult};
use crate::Error;

/// A value of type `T` in shared memory, guarded by a comutex. `T` is plain
/// old data ([`bytemuck::Pod`]: no pointers, no padding, every bit pattern
/// valid), checked at compile time, so a value written by one process is a
/// valid `T` in every other. A new object starts zeroed. Opening checks that
/// the object was created for a type of the same name (module path aside),
/// size and alignment ([`crate::Error::TypeMismatch`] otherwise).
///
/// ```no_run
/// use comesg::Connection;
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Counter { n: u64 }
///
/// let conn = Connection::connect_default()?;
/// let obj = conn.create_shared::<Counter>("/app/counter", Default::default())?;
/// obj.lock().map_err(|e| e.map(|_| ()))?.n += 1;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct SharedObject<T: Pod> {
    m: Comutex,
    _t: PhantomData<T>,
}

/// The locked value; unlocks when dropped.
#[derive(Debug)]
pub struct SharedGuard<'a, T: Pod> {
    g: ComutexGuard<'a>,
    _t: PhantomData<&'a mut T>,
}

/// The spec a shared object of type `T` has.
pub(crate) fn spec_of<T: Pod>() -> MutexSpec {
    MutexSpec {
        data_size: std::mem::size_of::<T>() as u32,
        data_align: std::mem::align_of::<T>() as u32,
        type_hash: type_hash::<T>(),
    }
}

/// FNV-1a of the type's name (without its module path, so that two
/// programs that each declare `struct Pose` agree), size and alignment.
fn type_hash<T>() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let full = std::any::type_name::<T>();
    let generics = full.find('<').unwrap_or(full.len());
    let start = full[..generics].rfind("::").map_or(0, |i| i + 2);
    let name = &full[start..];
    let size = std::mem::size_of::<T>().to_le_bytes();
    let align = std::mem::align_of::<T>().to_le_bytes();
    for b in name.bytes().chain(size).chain(align) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h | 1 // never 0, which means "unchecked"
}

impl<T: Pod + Sync> crate::copoll::sealed::Source for SharedObject<T> {
    fn bell(&self) -> Option<&comesg_sys::bell::Bell> {
        self.m.bell()
    }
    fn readiness(&self, interest: crate::Interest) -> crate::Readiness {
        self.m.readiness(interest)
    }
    fn arm(&self, interest: crate::Interest) {
        self.m.arm(interest);
    }
    fn disarm(&self, interest: crate::Interest) {
        self.m.disarm(interest);
    }
}

impl<T: Pod> SharedObject<T> {
    pub(crate) fn from_comutex(m: Comutex) -> Result<SharedObject<T>, Error> {
        let want = spec_of::<T>();
        let got = m.spec();
        if got.data_size != want.data_size || got.data_align != want.data_align || got.type_hash != want.type_hash {
            return Err(Error::TypeMismatch { name: m.name().clone(), expected: want, found: got });
        }
        Ok(SharedObject { m, _t: PhantomData })
    }

    /// Its name when it was opened.
    pub fn name(&self) -> &Name {
        self.m.name()
    }

    fn wrap(r: LockResult<ComutexGuard<'_>>) -> LockResult<SharedGuard<'_, T>> {
        let wrap = |g| SharedGuard { g, _t: PhantomData };
        r.map(wrap).map_err(|e| e.map(wrap))
    }

    /// Locks the value, sleeping while another thread holds it. See
    /// [`LockError::OwnerDied`] for what to do when its owner died.
    pub fn lock(&self) -> LockResult<SharedGuard<'_, T>> {
        Self::wrap(self.m.lock())
    }

    /// Locks the value if nobody holds it now.
    pub fn try_lock(&self) -> LockResult<SharedGuard<'_, T>> {
        Self::wrap(self.m.try_lock())
    }

    /// Locks the value, giving up after `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> LockResult<SharedGuard<'_, T>> {
        Self::wrap(self.m.lock_timeout(timeout))
    }

    /// The comutex that guards the value.
    pub fn comutex(&self) -> &Comutex {
        &self.m
    }

    /// Closes the handle (dropping closes too, silently).
    pub fn close(self) -> Result<(), Error> {
        self.m.close()
    }
}

impl<T: Pod> SharedGuard<'_, T> {
    /// After [`LockError::OwnerDied`]: declares the value consistent again.
    pub fn mark_consistent(&self) -> Result<(), LockError<()>> {
        self.g.mark_consistent()
    }

    /// Unlocks, reporting an error (dropping unlocks silently).
    pub fn unlock(self) -> Result<(), LockError<()>> {
        self.g.unlock()
    }
}

impl<T: Pod> Deref for SharedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // Size and alignment were checked against the kernel's spec when the
        // object was opened, and the segment places the value at an offset
        // aligned to it: this cast cannot fail.
        bytemuck::from_bytes(self.g.bytes())
    }
}

impl<T: Pod> DerefMut for SharedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        bytemuck::from_bytes_mut(self.g.bytes_mut())
    }
}
