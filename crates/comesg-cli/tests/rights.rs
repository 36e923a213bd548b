//! The operating system, not politeness, enforces rights: a process holding
//! a RECV-only handle that writes message data, or a SEND-only handle that
//! writes receiver state, dies by SIGSEGV. With the right, the same write
//! succeeds.

mod util;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use comesg::{Rights, SendError};
use util::KernelProc;

fn poke(k: &KernelProc, rights: &str, segment: &str) -> std::process::ExitStatus {
    let mut p = k.peer(&["poke", "/it/rights", "--rights", rights, "--segment", segment]);
    p.wait(Duration::from_secs(30))
}

#[test]
fn writes_without_the_right_fault() {
    let k = KernelProc::start("rights");
    assert!(k.cli(&["create", "/it/rights", "--slot-size", "64", "--slots", "8"]).status.success());

    let st = poke(&k, "r", "sender");
    assert_eq!(st.signal(), Some(libc_sigsegv()), "RECV-only write to message data: {st:?}");
    let st = poke(&k, "s", "receiver");
    assert_eq!(st.signal(), Some(libc_sigsegv()), "SEND-only write to receiver state: {st:?}");

    // Control: with the right, the same store goes through.
    assert!(poke(&k, "s", "sender").success());
    assert!(poke(&k, "r", "receiver").success());
}

#[test]
fn the_library_refuses_before_touching_memory() {
    let k = KernelProc::start("rights-lib");
    let conn = k.connect();
    let opts = comesg::ChannelOptions { slot_size: 16, slots: 4, ..Default::default() };
    let _owner = conn.create_channel("/it/lib", opts).unwrap();
    let rx = conn.open_channel("/it/lib", Rights::RECV).unwrap();
    assert_eq!(rx.try_send(b"x"), Err(SendError::NoRight));
    assert!(rx.segments().0.try_make_writable().is_err(), "mprotect must be refused");
    let tx = conn.open_channel("/it/lib", Rights::SEND).unwrap();
    assert_eq!(tx.try_recv(&mut [0; 16]), Err(comesg::RecvError::NoRight));
    assert_eq!(tx.try_send(&[0; 17]), Err(SendError::TooLong { len: 17, slot_size: 16 }));
    // A blocking send refuses it too, and claims no slot doing so: four
    // messages still fit, and the receiver gets them in order.
    assert_eq!(tx.send(&[0; 17]), Err(SendError::TooLong { len: 17, slot_size: 16 }));
    for i in 0..4u8 {
        tx.try_send(&[i]).unwrap();
    }
    assert_eq!(tx.try_send(b"x"), Err(SendError::Full));
    for i in 0..4u8 {
        let mut buf = [0u8; 16];
        assert_eq!(rx.recv(&mut buf), Ok(1));
        assert_eq!(buf[0], i);
    }
}

fn libc_sigsegv() -> i32 {
    rustix::process::Signal::SEGV.as_raw()
}
