//! Comutexes and shared objects across real processes: mutual exclusion,
//! owner death (SIGKILL), timeouts, and an uncontended path with no system
//! calls (counted with strace).

mod util;

use std::time::{Duration, Instant};

use comesg::{ComutexOptions, EntryKind, LockError, PortKind, Rights};
use util::{text, Counter, KernelProc};

#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct Other {
    a: u64,
    b: u64,
}

fn entry(k: &KernelProc, path: &str) -> comesg::Entry {
    k.connect().list(path).unwrap().pop().unwrap()
}

#[test]
fn two_processes_increment_a_shared_counter_a_million_times_each() {
    let k = KernelProc::start("cm-count");
    let conn = k.connect();
    let obj = conn.create_shared::<Counter>("/it/cm/counter", ComutexOptions::default()).unwrap();
    let n = 1_000_000u64;
    let mut a = k.peer(&["count", "/it/cm/counter", "--count", &n.to_string()]);
    let mut b = k.peer(&["count", "/it/cm/counter", "--count", &n.to_string()]);
    let (oa, ob) = (a.collect(), b.collect());
    assert!(a.wait(Duration::from_secs(300)).success());
    assert!(b.wait(Duration::from_secs(300)).success());
    assert_eq!(oa.join().unwrap(), vec!["done"]);
    assert_eq!(ob.join().unwrap(), vec!["done"]);
    assert_eq!(obj.lock().unwrap().n, 2 * n);
    let e = entry(&k, "/it/cm/counter");
    assert_eq!(e.kind, EntryKind::Port(PortKind::Mutex));
    assert_eq!(e.locks, 2 * n + 1, "ls counts every lock");
    let ls = text(&k.cli(&["ls", "/it/cm"]));
    assert!(ls.contains("shared") && ls.contains("16 B"), "{ls}");
}

#[test]
fn owner_killed_holding_the_lock_is_reported_and_recoverable() {
    let k = KernelProc::start("cm-death");
    let conn = k.connect();
    let obj = conn.create_shared::<Counter>("/it/cm/d", ComutexOptions::default()).unwrap();
    obj.lock().unwrap().n = 41;
    let mut owner = k.peer(&["hold-lock", "/it/cm/d", "--in-update"]);
    assert!(matches!(obj.try_lock(), Err(LockError::WouldBlock)));
    owner.kill9();
    let mut g = match obj.lock_timeout(Duration::from_secs(30)) {
        Err(LockError::OwnerDied(g)) => g,
        other => panic!("expected OwnerDied, got {other:?}"),
    };
    assert_eq!((g.n, g.dirty), (41, 1), "the dead owner's half-done update is visible");
    g.dirty = 0;
    g.n += 1;
    g.mark_consistent().unwrap();
    drop(g);
    let g = obj.lock().expect("clean after mark_consistent");
    assert_eq!((g.n, g.dirty), (42, 0));
    drop(g);
    assert_eq!(entry(&k, "/it/cm/d").owner_deaths, 1);

    // A successor that does not mark it consistent leaves it unusable.
    let mut owner = k.peer(&["hold-lock", "/it/cm/d", "--in-update"]);
    owner.kill9();
    match obj.lock_timeout(Duration::from_secs(30)) {
        Err(LockError::OwnerDied(g)) => drop(g),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(matches!(obj.lock(), Err(LockError::NotRecoverable)));
}

#[test]
fn try_lock_and_timeouts_against_a_holder_in_another_process() {
    let k = KernelProc::start("cm-timeout");
    let conn = k.connect();
    let m = conn.create_comutex("/it/cm/t", ComutexOptions::default()).unwrap();
    let mut holder = k.peer(&["hold-lock", "/it/cm/t"]);
    assert!(matches!(m.try_lock(), Err(LockError::WouldBlock)));
    let t = Instant::now();
    assert!(matches!(m.lock_timeout(Duration::from_millis(200)), Err(LockError::TimedOut)));
    assert!(t.elapsed() >= Duration::from_millis(200), "gave up early: {:?}", t.elapsed());
    assert!(matches!(m.lock_timeout(Duration::ZERO), Err(LockError::TimedOut)));
    holder.kill9();
    match m.lock_timeout(Duration::from_secs(30)) {
        Err(LockError::OwnerDied(g)) => g.mark_consistent().unwrap(),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    // Holding it twice from one thread is an error, not a deadlock.
    let g = m.lock().unwrap();
    assert!(matches!(m.lock(), Err(LockError::WouldDeadlock)));
    drop(g);
}

#[test]
fn kinds_types_and_rights_are_checked() {
    let k = KernelProc::start("cm-kinds");
    let conn = k.connect();
    let _obj = conn.create_shared::<Counter>("/it/cm/k", ComutexOptions::default()).unwrap();
    assert!(matches!(conn.open_shared::<Other>("/it/cm/k"), Err(comesg::Error::TypeMismatch { .. })));
    assert!(matches!(conn.open_shared::<[u64; 3]>("/it/cm/k"), Err(comesg::Error::TypeMismatch { .. })));
    assert!(matches!(conn.open_channel("/it/cm/k", Rights::RECV), Err(comesg::Error::Kernel(_))));
    assert!(matches!(conn.open_channel("/it/cm/k", Rights::ALL), Err(comesg::Error::WrongKind { .. })));
    let _ch = conn.create_channel("/it/cm/ch", Default::default()).unwrap();
    assert!(matches!(conn.open_comutex("/it/cm/ch"), Err(comesg::Error::WrongKind { .. })));
    // Every failed open gave its handle back.
    assert_eq!(entry(&k, "/it/cm/k").refs, 1);
    assert_eq!(entry(&k, "/it/cm/ch").refs, 1);
    // The CLI creates persistent comutexes.
    assert!(k.cli(&["create", "/it/cm/p", "--kind", "comutex"]).status.success());
    drop(conn);
    assert!(k.connect().open_comutex("/it/cm/p").is_ok());
}

#[test]
fn uncontended_lock_and_unlock_make_no_system_call() {
    if !util::have_strace() {
        return;
    }
    let k = KernelProc::start("cm-strace");
    let _m = k.connect().create_comutex("/it/cm/s", ComutexOptions::default()).unwrap();
    let few = k.syscalls_of_peer(&["lock-loop", "/it/cm/s", "--count", "10"]);
    let many = k.syscalls_of_peer(&["lock-loop", "/it/cm/s", "--count", "200010"]);
    // 200,000 more lock/unlock pairs; startup varies by a few calls.
    assert!(many < few + 50, "{few} calls for 10 pairs, {many} for 200,010");
}

/// Library state tied to a thread is released when the thread ends: a
/// thread that unwinds while holding a comutex unlocks it on the way out; a
/// thread that ends while the lock is still held (its guard leaked) is
/// reported dead to the next locker, as a dead process is.
#[test]
fn a_thread_that_ends_holding_the_lock_releases_or_reports_it() {
    let k = KernelProc::start("mutex-thread");
    let conn = k.connect();
    let m = conn.create_comutex("/it/mx/thread", ComutexOptions::default()).unwrap();

    let unwound = std::thread::spawn({
        let conn = conn.clone();
        move || {
            let m = conn.open_comutex("/it/mx/thread").unwrap();
            let _g = m.lock().unwrap();
            panic!("unwinding with the lock held");
        }
    })
    .join();
    assert!(unwound.is_err());
    drop(m.lock_timeout(Duration::from_secs(5)).expect("the unwinding thread unlocked"));

    std::thread::spawn({
        let conn = conn.clone();
        move || {
            let m = conn.open_comutex("/it/mx/thread").unwrap();
            std::mem::forget(m.lock().unwrap());
            // The handle goes too; the lock stays held by this thread.
            std::mem::forget(m);
        }
    })
    .join()
    .unwrap();
    match m.lock_timeout(Duration::from_secs(5)) {
        Err(LockError::OwnerDied(g)) => g.mark_consistent().unwrap(),
        Ok(_) => panic!("the lock of an ended thread was free without a report"),
        Err(e) => panic!("{}", e.map(|_| ())),
    }
    drop(m.lock_timeout(Duration::from_secs(5)).expect("usable again after mark_consistent"));
}
