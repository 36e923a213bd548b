//! Clients that lie: random bytes, truncated frames, wrong versions, huge
//! frames, requests before the handshake, stray fds. Each gets an error (or
//! a closed connection) and the kernel goes on serving everyone else.

mod util;

use comesg_proto::{
    decode_reply, encode_request, KernelError, Name, Reply, ReplyFrame, Request, RequestFrame, MAX_FRAME, VERSION,
};
use comesg_sys::{seqpacket, AsFd, OwnedFd};
use util::KernelProc;

fn raw(k: &KernelProc) -> OwnedFd {
    let fd = seqpacket::connect(&k.socket).unwrap();
    seqpacket::set_timeouts(fd.as_fd(), Some(std::time::Duration::from_secs(10))).unwrap();
    fd
}

fn exchange(fd: &OwnedFd, bytes: &[u8]) -> Option<ReplyFrame> {
    seqpacket::send(fd.as_fd(), bytes, &[]).ok()?;
    let mut buf = vec![0u8; MAX_FRAME];
    let rec = seqpacket::recv(fd.as_fd(), &mut buf).ok()??;
    Some(decode_reply(&buf[..rec.len]).expect("the kernel's replies always decode"))
}

fn hello(fd: &OwnedFd) {
    let r = exchange(
        fd,
        &encode_request(&RequestFrame { id: 1, request: Request::Hello { version: VERSION, client: "t".into() } }),
    );
    assert!(matches!(r.unwrap().reply, Reply::Welcome { .. }));
}

fn is_error(r: &Option<ReplyFrame>) -> bool {
    matches!(r, Some(ReplyFrame { reply: Reply::Error(_), .. }))
}

fn still_serves(k: &KernelProc) {
    let conn = k.connect();
    conn.ping().unwrap();
    let opts = comesg::ChannelOptions { slot_size: 16, slots: 4, ..Default::default() };
    let ch = conn.create_channel("/it/ok", opts).unwrap();
    ch.send(b"fine").unwrap();
    assert_eq!(ch.recv_vec().unwrap(), b"fine");
}

#[test]
fn garbage_gets_errors_and_others_are_served() {
    let k = KernelProc::start("malformed");
    let fd = raw(&k);
    hello(&fd);
    // Random bytes, many times, from a fixed seed.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for i in 0..300 {
        let len = (i % 97) + 1;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let r = exchange(&fd, &bytes);
        assert!(r.is_some(), "the kernel answers garbage rather than dropping the connection");
    }
    // Truncated frames of a valid request.
    let full = encode_request(&RequestFrame {
        id: 9,
        request: Request::Unlink { name: Name::try_from("/it/some/name").unwrap() },
    });
    for cut in 1..full.len() {
        let r = exchange(&fd, &full[..cut]);
        assert!(is_error(&r), "truncated at {cut}: {r:?}");
    }
    // A frame larger than the maximum.
    let r = exchange(&fd, &vec![7u8; MAX_FRAME + 4096]);
    assert!(matches!(r, Some(ReplyFrame { reply: Reply::Error(KernelError::TooLarge { .. }), .. })), "{r:?}");
    // Stray fds ride along with a ping: ignored (closed), ping answered.
    let (a, _b) = seqpacket::pair().unwrap();
    seqpacket::send(fd.as_fd(), &encode_request(&RequestFrame { id: 5, request: Request::Ping }), &[a.as_fd()])
        .unwrap();
    let mut buf = vec![0u8; MAX_FRAME];
    let rec = seqpacket::recv(fd.as_fd(), &mut buf).unwrap().unwrap();
    assert_eq!(decode_reply(&buf[..rec.len]).unwrap(), ReplyFrame { id: 5, reply: Reply::Pong });
    still_serves(&k);
}

#[test]
fn handshake_is_enforced() {
    let k = KernelProc::start("handshake");
    let fd = raw(&k);
    let r = exchange(&fd, &encode_request(&RequestFrame { id: 3, request: Request::Ping }));
    assert!(matches!(r, Some(ReplyFrame { reply: Reply::Error(KernelError::HelloFirst), .. })), "{r:?}");

    let old = raw(&k);
    let r = exchange(
        &old,
        &encode_request(&RequestFrame {
            id: 1,
            request: Request::Hello { version: VERSION + 7, client: "old".into() },
        }),
    );
    assert!(matches!(r, Some(ReplyFrame { reply: Reply::Error(KernelError::Version { .. }), .. })), "{r:?}");
    // ... and the kernel closes that connection.
    let mut buf = [0u8; 64];
    assert!(seqpacket::recv(old.as_fd(), &mut buf).unwrap().is_none());
    still_serves(&k);
}

#[test]
fn a_thousand_concurrent_clients() {
    let _ = comesg_sys::process::raise_nofile_limit();
    let k = KernelProc::start("thousand");
    let conns: Vec<_> = (0..1000).map(|_| k.connect()).collect();
    let opts = comesg::ChannelOptions { slot_size: 16, slots: 2, ..Default::default() };
    let owner = conns[0].create_channel("/it/many", opts).unwrap();
    let handles: Vec<_> =
        conns.iter().step_by(10).map(|c| c.open_channel("/it/many", comesg::Rights::SEND).unwrap()).collect();
    for c in &conns {
        c.ping().unwrap();
    }
    let e = conns[999].list("/it/many").unwrap().pop().unwrap();
    assert_eq!(e.refs as usize, 1 + handles.len());
    drop(handles);
    drop(owner);
    drop(conns);
    still_serves(&k);
}
