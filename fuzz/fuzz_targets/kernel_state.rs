//! The microkernel's request handler (`State`, no I/O) driven by arbitrary
//! request sequences from a few clients, with disconnects between them. It
//! must never panic, and once every client has gone, only persistent
//! objects may remain.
//!
//! Input: repeated `[client: u8][len: u8][len bytes of a request frame]`;
//! a frame that does not decode disconnects the client instead.
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run kernel_state` (from the repository root).
#![no_main]

use comesg_kernel::compartments::ipc::ClientId;
use comesg_kernel::compartments::Cred;
use comesg_kernel::{Limits, State};
use comesg_proto::{decode_request, PortSpec, Request, VERSION};
use libfuzzer_sys::fuzz_target;

/// Shapes small enough that a fuzzing run does not exhaust memory.
fn small(r: &Request) -> bool {
    match r {
        Request::Create { spec, .. } => match spec {
            PortSpec::Channel(c) => (c.slot_size as u64) * (c.slots as u64) <= 1 << 16,
            PortSpec::Mutex(m) => m.data_size <= 1 << 12,
            PortSpec::Service(s) => (s.slot_size as u64) * (s.call_slots as u64) <= 1 << 16 && s.queue <= 256,
            PortSpec::Pipe(p) => (p.buffer as u64) * (p.receivers as u64) <= 1 << 16,
            PortSpec::Carrier(c) => c.arena <= 1 << 16 && c.queue <= 64,
        },
        // Reads of the fuzzer's own memory at arbitrary addresses: harmless,
        // but keep them short.
        Request::CarrierSend { len, .. } => *len <= 1 << 12,
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    let limits =
        Limits { max_objects: 16, max_handles_per_client: 16, max_holders_per_channel: 8, ..Limits::default() };
    let mut s = State::new(0, 0, limits);
    let pid = std::process::id();
    let creds = [Cred { pid, uid: 0, gid: 0 }, Cred { pid, uid: 1000, gid: 1000 }, Cred { pid, uid: 1001, gid: 100 }];
    let mut live = [false; 3];
    let mut rest = data;
    while rest.len() >= 2 {
        let who = (rest[0] % 3) as usize;
        let len = rest[1] as usize;
        rest = &rest[2..];
        let frame = &rest[..len.min(rest.len())];
        rest = &rest[len.min(rest.len())..];
        let id = ClientId(who as u64);
        if !live[who] {
            if s.connect(id, creds[who]).is_ok() {
                let _ = s.handle(id, Request::Hello { version: VERSION, client: "fuzz".into() });
                live[who] = true;
            }
            continue;
        }
        match decode_request(frame) {
            Ok(f) if small(&f.request) => {
                let _ = s.handle(id, f.request);
                assert!(s.accounting_holds(), "per-user accounting drifted");
            }
            Ok(_) => {}
            Err(_) => {
                s.disconnect(id);
                live[who] = false;
            }
        }
    }
    for (who, l) in live.iter().enumerate() {
        if *l {
            s.disconnect(ClientId(who as u64));
        }
    }
    assert_eq!(s.clients(), 0);
    assert!(s.accounting_holds(), "per-user accounting drifted");
});
