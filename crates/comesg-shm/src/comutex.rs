//! The comutex: a process-shared, robust mutex in a shared segment, followed
//! by the value it protects (a shared object; zero bytes for a bare comutex).
//!
//! The lock is a glibc `pthread_mutex_t` set up `PTHREAD_PROCESS_SHARED` and
//! `PTHREAD_MUTEX_ROBUST`. Uncontended lock and unlock are one atomic
//! instruction each on the lock word (plus list bookkeeping in plain memory);
//! a contended locker sleeps in the Linux kernel on the futex. The owner
//! links the mutex into its thread's *robust futex list*, which the Linux
//! kernel walks when the thread exits, however it exits (return, `SIGKILL`,
//! crash): it marks each mutex still held "owner died" and wakes a waiter,
//! whose lock then reports [`Locked::OwnerDied`].
//!
//! Segment layout:
//!
//! | offset | content |
//! |---|---|
//! | 0 | `pthread_mutex_t` (40 bytes on x86-64) |
//! | 48 | counters: locks taken (u64), owner deaths seen (u64) |
//! | 40 (64 where the mutex is larger) | pollers waiting for the lock to come free (u32) |
//! | [`Layout::data_offset`] | the protected value (`data_size` bytes) |
//!
//! A holder that can lock can also scribble over the lock itself; such a
//! peer can break the lock for everyone who shares it (including, through
//! glibc's list pointers, corrupting memory of the process that owns it).
//! Grant comutex rights only to processes trusted with the protected value.
#![allow(unsafe_code)]

use std::marker::PhantomData;
use std::sync::atomic::{
    AtomicU32, AtomicU64,
    Ordering::{Relaxed, SeqCst},
};
use std::time::Instant;

use comesg_sys::mapping::{Access, Mapping};

/// Offset of the counters: in the lock's own cache line (the mutex is 40
/// bytes), so counting a lock touches no second line.
const STATS_OFFSET: usize = 48;
/// In the lock's own cache line where it fits (x86-64: the mutex is 40
/// bytes), so that an unlock's check for pollers touches no second line.
const POLLERS_OFFSET: usize = if std::mem::size_of::<libc::pthread_mutex_t>() <= 40 { 40 } else { 64 };
const _: () = assert!(std::mem::size_of::<libc::pthread_mutex_t>() <= STATS_OFFSET);
/// First byte available to the protected value.
const DATA_MIN: usize = 128;
/// Largest protected value (16 MiB).
pub const MAX_DATA: u32 = 16 << 20;
/// Largest alignment of the protected value (a page).
pub const MAX_ALIGN: u32 = 4096;

/// Size and alignment of the value a comutex protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bytes of the value (0 for a bare comutex).
    pub data_size: u32,
    /// Its alignment (a power of two up to [`MAX_ALIGN`]).
    pub data_align: u32,
}

/// Why a layout is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Value larger than [`MAX_DATA`].
    #[error("value of {0} bytes exceeds {MAX_DATA}")]
    TooLarge(u32),
    /// Alignment not a power of two up to [`MAX_ALIGN`].
    #[error("alignment {0} is not a power of two up to {MAX_ALIGN}")]
    Align(u32),
}

impl Layout {
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), LayoutError> {
        if self.data_size > MAX_DATA {
            return Err(LayoutError::TooLarge(self.data_size));
        }
        if !self.data_align.is_power_of_two() || self.data_align > MAX_ALIGN {
            return Err(LayoutError::Align(self.data_align));
        }
        Ok(())
    }

    /// Offset of the value in the segment.
    pub fn data_offset(&self) -> usize {
        DATA_MIN.next_multiple_of(self.data_align.max(1) as usize)
    }

    /// Bytes of the segment.
    pub fn segment_len(&self) -> usize {
        (self.data_offset() + self.data_size as usize).next_multiple_of(64)
    }
}

/// How a lock was acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Locked {
    /// Normally.
    Clean,
    /// The previous owner died holding it: the value may be half-updated.
    /// The caller now owns the lock and must call
    /// `mark_consistent` before unlocking, or the comutex
    /// becomes unusable ([`MutexError::NotRecoverable`]) for everyone.
    OwnerDied,
}

/// Why a lock operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MutexError {
    /// Held by someone else (non-blocking forms).
    #[error("comutex is held")]
    WouldBlock,
    /// Still held at the deadline.
    #[error("timed out waiting for the comutex")]
    TimedOut,
    /// An owner died and the next owner unlocked without marking the value
    /// consistent: the comutex can no longer be locked.
    #[error("comutex is not recoverable: an owner died and its successor did not mark it consistent")]
    NotRecoverable,
    /// This thread already holds it.
    #[error("this thread already holds the comutex")]
    WouldDeadlock,
    /// This thread does not hold it.
    #[error("this thread does not hold the comutex")]
    NotOwner,
    /// The mapping is too short or lacks write access.
    #[error("comutex segment unusable: {0}")]
    BadSegment(&'static str),
    /// The lock's shared state holds a value glibc refuses.
    #[error("comutex state corrupt (errno {0})")]
    Corrupt(i32),
}

/// Counters kept in the segment (approximate: any holder can write them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MutexStats {
    /// Locks taken.
    pub locks: u64,
    /// Locks that found the previous owner dead.
    pub owner_deaths: u64,
}

extern "C" {
    // glibc 2.30+; the `libc` crate does not declare it.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// One mapping of a comutex segment.
#[derive(Debug)]
pub struct RobustMutex {
    // Dropped by hand: see `Drop`.
    map: std::mem::ManuallyDrop<Mapping>,
    layout: Layout,
    /// The port's bell, rung on unlock while someone polls.
    bell: Option<comesg_sys::bell::Bell>,
}

impl Drop for RobustMutex {
    /// A lock still held by a thread of this process (its guard was
    /// forgotten) is on that thread's robust list, which glibc writes through
    /// on later locks and the Linux kernel at thread exit: unmapping it would
    /// turn those writes into faults or into corruption of whatever is mapped
    /// there next. Such a mapping is leaked instead.
    fn drop(&mut self) {
        let owner = self.map.words32()[0].load(Relaxed) & FUTEX_TID_MASK;
        let ours = owner != 0 && std::path::Path::new(&format!("/proc/self/task/{owner}")).exists();
        if !ours {
            // SAFETY: dropped once, here; nothing refers to the mapping after.
            unsafe { std::mem::ManuallyDrop::drop(&mut self.map) };
        }
    }
}

/// Bits of a robust futex word that hold the owner's thread id.
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;

impl RobustMutex {
    /// Wraps a read-write mapping of a segment of `layout`.
    pub fn new(layout: Layout, map: Mapping) -> Result<RobustMutex, MutexError> {
        layout.validate().map_err(|_| MutexError::BadSegment("invalid layout"))?;
        if map.len() < layout.segment_len() {
            return Err(MutexError::BadSegment("segment shorter than its layout"));
        }
        if map.access() != Access::ReadWrite {
            return Err(MutexError::BadSegment("mapping is read-only"));
        }
        Ok(RobustMutex { map: std::mem::ManuallyDrop::new(map), layout, bell: None })
    }

    /// Gives the comutex the port's bell, rung on every unlock while a
    /// poller is registered.
    pub fn set_bell(&mut self, bell: comesg_sys::bell::Bell) {
        self.bell = Some(bell);
    }

    /// The port's bell, if it has one.
    pub fn bell(&self) -> Option<&comesg_sys::bell::Bell> {
        self.bell.as_ref()
    }

    #[inline]
    fn pollers(&self) -> &AtomicU32 {
        &self.map.words32()[POLLERS_OFFSET / 4]
    }

    /// Whether the lock is free now (a lock would not wait; it may still
    /// report that the last owner died).
    pub fn is_free(&self) -> bool {
        self.map.words32()[0].load(SeqCst) & FUTEX_TID_MASK == 0
    }

    /// Registers a poller: unlocks ring the bell until [`RobustMutex::disarm`].
    pub fn arm(&self) {
        self.pollers().fetch_add(1, SeqCst);
    }

    /// Undoes one [`RobustMutex::arm`].
    pub fn disarm(&self) {
        let _ = self.pollers().fetch_update(SeqCst, SeqCst, |v| v.checked_sub(1));
    }

    /// The value's layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    #[inline]
    fn raw(&self) -> *mut libc::pthread_mutex_t {
        // The mapping is page-aligned and at least `segment_len` > 40 bytes.
        self.map.as_ptr().cast()
    }

    #[inline]
    fn counter(&self, i: usize) -> &AtomicU64 {
        &self.map.words()[STATS_OFFSET / 8 + i]
    }

    /// Sets up the lock in a fresh (zeroed) segment. Only the microkernel
    /// calls this, before any holder maps the segment.
    pub fn initialize(&self) -> Result<(), MutexError> {
        // SAFETY: the attribute object is private and initialized before
        // use; the mutex lies in our read-write mapping, which nobody else
        // maps yet, so initializing it races with nothing.
        unsafe {
            let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
            check(libc::pthread_mutexattr_init(attr.as_mut_ptr()))?;
            let attr = attr.as_mut_ptr();
            let r = (|| {
                check(libc::pthread_mutexattr_setpshared(attr, libc::PTHREAD_PROCESS_SHARED))?;
                check(libc::pthread_mutexattr_setrobust(attr, libc::PTHREAD_MUTEX_ROBUST))?;
                check(libc::pthread_mutexattr_settype(attr, libc::PTHREAD_MUTEX_ERRORCHECK))?;
                check(libc::pthread_mutex_init(self.raw(), attr))
            })();
            libc::pthread_mutexattr_destroy(attr);
            r
        }
    }

    #[inline]
    fn acquired(&self, rc: libc::c_int) -> Result<(MutexGuard<'_>, Locked), MutexError> {
        let r = match rc {
            0 => Locked::Clean,
            libc::EOWNERDEAD => {
                bump(self.counter(1));
                Locked::OwnerDied
            }
            libc::EBUSY => return Err(MutexError::WouldBlock),
            libc::ETIMEDOUT => return Err(MutexError::TimedOut),
            libc::ENOTRECOVERABLE => return Err(MutexError::NotRecoverable),
            libc::EDEADLK => return Err(MutexError::WouldDeadlock),
            e => return Err(MutexError::Corrupt(e)),
        };
        bump(self.counter(0));
        crate::fault::point("comutex.lock.acquired");
        Ok((MutexGuard { m: self, _owner_thread: PhantomData }, r))
    }

    /// Locks, sleeping while another thread holds it.
    #[inline]
    pub fn lock(&self) -> Result<(MutexGuard<'_>, Locked), MutexError> {
        // SAFETY: the mutex lies in a live read-write shared mapping and was
        // initialized by the kernel; glibc tolerates concurrent use from
        // other processes (process-shared).
        self.acquired(unsafe { libc::pthread_mutex_lock(self.raw()) })
    }

    /// Locks if free now ([`MutexError::WouldBlock`] otherwise).
    #[inline]
    pub fn try_lock(&self) -> Result<(MutexGuard<'_>, Locked), MutexError> {
        // SAFETY: as in `lock`.
        self.acquired(unsafe { libc::pthread_mutex_trylock(self.raw()) })
    }

    /// Locks, giving up at `deadline` ([`MutexError::TimedOut`]).
    pub fn lock_until(&self, deadline: Instant) -> Result<(MutexGuard<'_>, Locked), MutexError> {
        // `Instant` is CLOCK_MONOTONIC on Linux, but opaque: rebuild the
        // deadline as a monotonic timespec from the time left.
        let left = deadline.saturating_duration_since(Instant::now());
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let total_ns = now.tv_nsec as u128 + left.subsec_nanos() as u128;
        let abs = libc::timespec {
            tv_sec: (now.tv_sec as i64)
                .saturating_add(left.as_secs().min(i64::MAX as u64) as i64)
                .saturating_add((total_ns / 1_000_000_000) as i64),
            tv_nsec: (total_ns % 1_000_000_000) as _,
        };
        // SAFETY: as in `lock`; `abs` is a valid timespec on our stack.
        self.acquired(unsafe { pthread_mutex_clocklock(self.raw(), libc::CLOCK_MONOTONIC, &abs) })
    }

    fn mark_consistent(&self) -> Result<(), MutexError> {
        crate::fault::point("comutex.consistent.entered");
        // SAFETY: as in `lock`.
        match unsafe { libc::pthread_mutex_consistent(self.raw()) } {
            0 => Ok(()),
            libc::EINVAL => Err(MutexError::NotOwner),
            e => Err(MutexError::Corrupt(e)),
        }
    }

    #[inline]
    fn unlock(&self) -> Result<(), MutexError> {
        crate::fault::point("comutex.unlock.entered");
        // SAFETY: as in `lock`.
        match unsafe { libc::pthread_mutex_unlock(self.raw()) } {
            0 => {
                // glibc's unlock is an exchange, a full barrier on x86-64;
                // elsewhere order it before the poller check explicitly.
                #[cfg(not(target_arch = "x86_64"))]
                std::sync::atomic::fence(SeqCst);
                if self.pollers().load(SeqCst) != 0 {
                    if let Some(b) = &self.bell {
                        b.ring();
                    }
                }
                Ok(())
            }
            libc::EPERM => Err(MutexError::NotOwner),
            e => Err(MutexError::Corrupt(e)),
        }
    }

    fn data_ptr(&self) -> *mut u8 {
        // SAFETY: `data_offset + data_size <= segment_len <= map.len()`.
        unsafe { self.map.as_ptr().add(self.layout.data_offset()) }
    }

    /// The counters.
    pub fn stats(&self) -> MutexStats {
        MutexStats { locks: self.counter(0).load(Relaxed), owner_deaths: self.counter(1).load(Relaxed) }
    }
}

/// The lock, held by this thread; unlocks on drop. Not `Send`: a pthread
/// mutex must be unlocked by the thread that locked it.
#[derive(Debug)]
pub struct MutexGuard<'a> {
    m: &'a RobustMutex,
    _owner_thread: PhantomData<*const ()>,
}

impl MutexGuard<'_> {
    /// The guarded value's bytes (aligned to the layout's alignment).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the range lies in the mapping (see `data_ptr`); holding
        // the lock means no honest peer writes it while this borrow lives.
        unsafe { std::slice::from_raw_parts(self.m.data_ptr(), self.m.layout.data_size as usize) }
    }

    /// The guarded value's bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` makes the borrow unique in this
        // process, and the mapping is read-write (checked in `new`).
        unsafe { std::slice::from_raw_parts_mut(self.m.data_ptr(), self.m.layout.data_size as usize) }
    }

    /// Declares the value consistent again after [`Locked::OwnerDied`].
    pub fn mark_consistent(&self) -> Result<(), MutexError> {
        self.m.mark_consistent()
    }

    /// Unlocks, reporting an error (dropping unlocks silently).
    pub fn unlock(self) -> Result<(), MutexError> {
        let m = self.m;
        std::mem::forget(self);
        m.unlock()
    }
}

impl Drop for MutexGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        let _ = self.m.unlock();
    }
}

/// Adds one to a counter. The caller holds the lock, so a plain load and
/// store suffice; a locked add would cost as much as the lock itself.
#[inline]
fn bump(c: &AtomicU64) {
    c.store(c.load(Relaxed).wrapping_add(1), Relaxed);
}

fn check(rc: libc::c_int) -> Result<(), MutexError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(MutexError::Corrupt(rc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use comesg_sys::memfd;

    fn mutex(layout: Layout) -> RobustMutex {
        let fd = memfd::create_segment("t", layout.segment_len() as u64).unwrap();
        let m = RobustMutex::new(layout, Mapping::map(&fd, layout.segment_len(), Access::ReadWrite).unwrap()).unwrap();
        m.initialize().unwrap();
        m
    }

    #[test]
    fn layout_bounds() {
        assert_eq!(Layout { data_size: 8, data_align: 8 }.data_offset(), 128);
        assert_eq!(Layout { data_size: 8, data_align: 4096 }.data_offset(), 4096);
        assert!(Layout { data_size: 8, data_align: 3 }.validate().is_err());
        assert!(Layout { data_size: MAX_DATA + 1, data_align: 8 }.validate().is_err());
    }

    #[test]
    fn lock_unlock_errors_and_owner_death_of_a_thread() {
        let m = std::sync::Arc::new(mutex(Layout { data_size: 8, data_align: 8 }));
        let (mut g, how) = m.lock().unwrap();
        assert_eq!(how, Locked::Clean);
        g.bytes_mut().copy_from_slice(&7u64.to_ne_bytes());
        assert_eq!(m.lock().map(|_| ()), Err(MutexError::WouldDeadlock));
        let m2 = m.clone();
        assert_eq!(std::thread::spawn(move || m2.try_lock().map(|_| ())).join().unwrap(), Err(MutexError::WouldBlock));
        let m2 = m.clone();
        let t = std::thread::spawn(move || {
            m2.lock_until(Instant::now() + std::time::Duration::from_millis(20)).map(|_| ())
        });
        assert_eq!(t.join().unwrap(), Err(MutexError::TimedOut));
        g.unlock().unwrap();
        assert_eq!(m.unlock(), Err(MutexError::NotOwner));
        // A thread that exits holding the lock: the next locker is told.
        let m2 = m.clone();
        std::thread::spawn(move || std::mem::forget(m2.lock().unwrap())).join().unwrap();
        let (g, how) = m.lock().unwrap();
        assert_eq!(how, Locked::OwnerDied);
        assert_eq!(g.bytes(), &7u64.to_ne_bytes());
        g.mark_consistent().unwrap();
        drop(g);
        assert_eq!(m.lock().unwrap().1, Locked::Clean);
        assert_eq!(m.stats(), MutexStats { locks: 4, owner_deaths: 1 });
        // A forgotten guard keeps the mapping alive past the handle (it is on
        // this thread's robust list); a later lock elsewhere still works.
        {
            let fd = memfd::create_segment("t", 256).unwrap();
            let layout = Layout { data_size: 8, data_align: 8 };
            let forgot = RobustMutex::new(layout, Mapping::map(&fd, 256, Access::ReadWrite).unwrap()).unwrap();
            forgot.initialize().unwrap();
            std::mem::forget(forgot.lock().unwrap());
            drop(forgot);
        }
        drop(m.lock().unwrap());
        // Unlocking without marking consistent poisons it for good.
        let m2 = m.clone();
        std::thread::spawn(move || std::mem::forget(m2.lock().unwrap())).join().unwrap();
        let (g, how) = m.lock().unwrap();
        assert_eq!(how, Locked::OwnerDied);
        drop(g);
        assert_eq!(m.lock().map(|_| ()), Err(MutexError::NotRecoverable));
    }
}
