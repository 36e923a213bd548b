//! The bridges' wire decoder on arbitrary bytes, as a hostile peer on the
//! network would send them: it must never panic, and whatever it accepts
//! must re-encode to bytes that decode to the same frame. Key expressions
//! (the other thing a peer controls) are parsed too.
//!
//! The wire module is compiled in from the bridge's source, so that this
//! target needs serde and postcard, not Zenoh.
//!
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run bridge_frame fuzz/seeds/bridge_frame`
//! (from the repository root).
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/comesg-bridge/src/wire.rs"]
mod wire;

use libfuzzer_sys::fuzz_target;
use wire::{ExportMeta, Frame};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        let bytes = frame.encode();
        let again = Frame::decode(&bytes).expect("a re-encoded frame decodes");
        assert_eq!(again, frame);
    }
    if let Ok(meta) = ExportMeta::decode(data) {
        let again = ExportMeta::decode(&meta.encode()).expect("re-encoded metadata decodes");
        assert_eq!(again, meta);
        let _ = meta.kind.max_message();
    }
    if let Ok(key) = std::str::from_utf8(data) {
        let _ = wire::parse_key(key, "export");
        let _ = wire::valid_host(key);
    }
});
