//! Starting and stopping the microkernel: client commands start one when
//! none answers, racing clients share one, an idle kernel exits by itself,
//! and a kernel embedded in a thread serves real client processes.

mod util;

use std::process::{Command, Stdio};
use std::time::Duration;

use util::{eventually, unique_dir, wait_output};

fn kernels_on(socket: &std::path::Path) -> usize {
    let needle = format!("--socket {}", socket.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(" kernel ") && c.contains(&needle))
        .count()
}

#[test]
fn racing_clients_start_one_kernel_which_exits_when_idle() {
    let dir = unique_dir("race");
    let socket = dir.join("k.sock");
    let clients: Vec<_> = (0..4)
        .map(|_| {
            Command::new(util::exe())
                .args(["ls", "/", "--socket"])
                .arg(&socket)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in clients {
        let out = wait_output(c, Duration::from_secs(30));
        assert!(out.status.success(), "{out:?}");
    }
    // However many were spawned, exactly one kernel serves the socket.
    eventually(Duration::from_secs(5), "losers of the race to exit", || kernels_on(&socket) == 1);
    let pid = comesg::Connection::connect(&socket).unwrap().kernel_pid();
    assert!(comesg_sys::process::is_alive(pid));
    // With no clients and no objects it exits (autostart idle limit: 10 s).
    eventually(Duration::from_secs(30), "the idle kernel to exit", || kernels_on(&socket) == 0);
    assert!(!socket.exists(), "an exiting kernel removes its socket");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn embedded_kernel_serves_other_processes() {
    let dir = unique_dir("embedded");
    let socket = dir.join("k.sock");
    let kernel = comesg::Kernel::spawn(comesg::KernelConfig::new(&socket)).unwrap();
    let conn = comesg::Connection::connect(kernel.socket()).unwrap();
    let opts = comesg::ChannelOptions { slot_size: 32, slots: 8, ..Default::default() };
    let ch = conn.create_channel("/emb/q", opts).unwrap();
    let out = Command::new(util::exe())
        .args(["send", "/emb/q", "from-another-process", "--socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(ch.recv_timeout(&mut [0; 32], Duration::from_secs(10)), Ok(20));
    // A second kernel on the same path refuses to start.
    assert!(matches!(
        comesg::Kernel::bind(comesg::KernelConfig::new(&socket)),
        Err(comesg::KernelStartError::AlreadyRunning(_))
    ));
    drop(ch);
    drop(conn);
    drop(kernel);
    assert!(!socket.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_killed_kernel_is_replaced_and_clients_get_a_clear_error() {
    let k = util::KernelProc::start("replace");
    let conn = k.connect();
    let mut k = k;
    let _ = k.child.kill();
    let _ = k.child.wait();
    match conn.ping() {
        Err(comesg::Error::KernelGone) | Err(comesg::Error::Io(_)) => {}
        other => panic!("expected a clear error from a dead kernel, got {other:?}"),
    }
    // A new kernel takes over the stale socket path.
    let socket = k.socket.clone();
    let mut child =
        Command::new(util::exe()).args(["kernel", "--log", "warn", "--socket"]).arg(&socket).spawn().unwrap();
    eventually(Duration::from_secs(10), "the new kernel to listen", || comesg::Connection::connect(&socket).is_ok());
    comesg::Connection::connect(&socket).unwrap().ping().unwrap();
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn ports_already_open_keep_working_after_the_kernel_dies() {
    let mut k = util::KernelProc::start("kernel-dies");
    let conn = k.connect();
    let ch = conn
        .create_channel("/kd/ch", comesg::ChannelOptions { slot_size: 16, slots: 256, ..Default::default() })
        .unwrap();
    let mut rx = k.peer(&["seq-recv", "/kd/ch", "--idle", "2"]);
    let out = rx.collect();
    // And the other way, through a ring so small that the sender sleeps
    // until this process has drained it: its wake-ups and this process's
    // copoll bell must work without the kernel.
    let back = conn
        .create_channel("/kd/back", comesg::ChannelOptions { slot_size: 16, slots: 4, ..Default::default() })
        .unwrap();
    let mut tx = k.peer(&["seq-send", "/kd/back", "--id", "9", "--count", "50"]);
    let _ = k.child.kill();
    let _ = k.child.wait();
    // Control calls fail at once, with a clear error...
    let t = std::time::Instant::now();
    assert!(matches!(conn.ping(), Err(comesg::Error::KernelGone) | Err(comesg::Error::Io(_))));
    assert!(conn.open_channel("/kd/ch", comesg::Rights::SEND).is_err());
    println!("control calls on a dead kernel failed in {:?}", t.elapsed());
    // ...while the data path between the two live processes goes on.
    for s in 0..100u64 {
        let mut m = [0u8; 16];
        m[..4].copy_from_slice(&7u32.to_le_bytes());
        m[4..12].copy_from_slice(&s.to_le_bytes());
        ch.send(&m).unwrap();
    }
    assert!(rx.wait(Duration::from_secs(60)).success());
    let lines = out.join().unwrap();
    assert_eq!(lines.last().map(String::as_str), Some("done 100"), "{lines:?}");

    let mut poll = comesg::Copoll::new().unwrap();
    poll.add(&back, 1, comesg::Interest::READABLE).unwrap();
    let mut events = Vec::new();
    let mut got = Vec::new();
    while got.len() < 50 {
        let n = poll.wait(&mut events, Some(Duration::from_secs(30))).unwrap();
        assert!(n > 0, "copoll woke for nothing, or timed out, after {} messages", got.len());
        while let Ok(m) = back.try_recv_vec() {
            got.push(u64::from_le_bytes(m[4..12].try_into().unwrap()));
        }
    }
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    assert!(tx.wait(Duration::from_secs(60)).success());
}

#[test]
fn the_process_connection_finds_a_restarted_kernel_and_old_handles_say_so() {
    let mut k = util::KernelProc::start("shared-restart");
    let conn = comesg::Connection::shared_at(&k.socket).unwrap();
    assert!(conn.same_as(&comesg::Connection::shared_at(&k.socket).unwrap()), "one cached connection per process");
    let opts = comesg::ChannelOptions { slot_size: 64, slots: 8, ..Default::default() };
    let old = conn.create_channel("/it/restart/q", opts).unwrap();
    let copts = comesg::CocarrierOptions { arena: 1 << 16, max_message: 64, ..Default::default() };
    let car = conn.create_cocarrier("/it/restart/car", copts).unwrap();
    let lock = conn.create_comutex("/it/restart/lock", Default::default()).unwrap();

    k.restart();

    // What needs the kernel fails clearly on the old handles, each naming
    // its object, and on the old connection...
    match old.stats() {
        Err(e @ comesg::Error::HandleLost { .. }) => {
            assert!(e.to_string().contains("/it/restart/q"), "{e}");
        }
        other => panic!("expected HandleLost, got {other:?}"),
    }
    assert!(!conn.is_live());
    let lost_car = comesg::Name::try_from("/it/restart/car").unwrap();
    assert_eq!(car.send(b"through the kernel"), Err(comesg::SendError::HandleLost(lost_car.clone())));
    assert!(matches!(car.close(), Err(comesg::Error::HandleLost { name }) if name == lost_car));
    let lost_lock = comesg::Name::try_from("/it/restart/lock").unwrap();
    assert!(matches!(lock.close(), Err(comesg::Error::HandleLost { name }) if name == lost_lock));
    assert!(matches!(conn.ping(), Err(comesg::Error::KernelGone)), "the connection itself has no object to name");
    // ...its data path still works...
    old.send(b"still here").unwrap();
    let mut buf = [0u8; 64];
    let n = old.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"still here");
    // ...and the next call through the process's connection reaches the
    // new kernel, which knows nothing of the old names.
    let again = comesg::Connection::shared_at(&k.socket).unwrap();
    assert!(!again.same_as(&conn) && again.is_live());
    again.ping().unwrap();
    let new = again.create_channel("/it/restart/q", opts).unwrap();
    new.send(b"new kernel").unwrap();
    let n = new.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"new kernel");
}

#[test]
fn a_forked_child_gets_its_own_connection() {
    let k = util::KernelProc::start("fork");
    let mut p = k.peer(&["fork-check"]);
    let lines = p.collect();
    assert!(p.wait(Duration::from_secs(30)).success());
    let lines = lines.join().unwrap();
    assert!(lines.iter().any(|l| l.starts_with("child, inherited connection: refused")), "{lines:?}");
    assert!(lines.contains(&"child, own connection: works".to_string()), "{lines:?}");
    assert!(lines.contains(&"child exit 0".to_string()), "{lines:?}");
    assert!(lines.contains(&"parent ok, same connection: true".to_string()), "{lines:?}");
}
