//! The microkernel's global limits, set on its command line: each refuses
//! the request that would pass it with an error that names it, and the
//! kernel goes on serving within it.

mod util;

use comesg::{ChannelOptions, KernelError, Rights};
use util::KernelProc;

fn limit(e: comesg::Error) -> String {
    match e {
        comesg::Error::Kernel(KernelError::Limit(m)) => m,
        other => panic!("expected a limit error, got {other:?}"),
    }
}

#[test]
fn global_limits_from_the_command_line_are_enforced() {
    let k = KernelProc::start_with_args(
        "limits",
        &[
            "--max-objects",
            "2",
            "--max-handles-per-client",
            "4",
            "--max-holders-per-channel",
            "2",
            "--max-clients",
            "3",
        ],
    );
    let conn = k.connect();
    let opts = ChannelOptions { slot_size: 64, slots: 8, ..Default::default() };
    let a = conn.create_channel("/lim/a", opts).unwrap();
    let _b = conn.create_channel("/lim/b", opts).unwrap();
    let m = limit(conn.create_channel("/lim/c", opts).unwrap_err());
    assert!(m.contains("2 objects"), "{m}");

    // Holders per side: the creator sends and receives; one more sender fits.
    let _s2 = conn.open_channel("/lim/a", Rights::SEND).unwrap();
    let m = limit(conn.open_channel("/lim/a", Rights::SEND).unwrap_err());
    assert!(m.contains("2 holders per side"), "{m}");
    // Handles per connection: a, b and s2 are three; a fourth fits, not a fifth.
    let _r2 = conn.open_channel("/lim/b", Rights::RECV).unwrap();
    let m = limit(conn.open_channel("/lim/b", Rights::RECV).unwrap_err());
    assert!(m.contains("4 handles per connection"), "{m}");

    // Connections: this test's and two more.
    let c2 = k.connect();
    let _c3 = k.connect();
    match comesg::Connection::connect(&k.socket).and_then(|c| c.ping()) {
        Err(comesg::Error::Kernel(KernelError::Limit(m))) => assert!(m.contains("3 clients"), "{m}"),
        other => panic!("a fourth connection: expected a limit error, got {other:?}"),
    }
    // Within the limits the kernel serves on.
    drop(c2);
    util::eventually(std::time::Duration::from_secs(10), "a freed connection slot", || {
        comesg::Connection::connect(&k.socket).and_then(|c| c.ping()).is_ok()
    });
    a.send(b"still served").unwrap();
    assert_eq!(a.recv_vec().unwrap(), b"still served");
}

#[test]
fn a_limit_out_of_range_is_refused_at_start() {
    let out = std::process::Command::new(util::exe())
        .args(["kernel", "--socket", "/nonexistent/never.sock", "--max-holders-per-channel", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max-holders-per-channel"), "{err}");
}
