//! The control-protocol decoder on arbitrary bytes: it must never panic, and
//! whatever it accepts must re-encode to bytes that decode to the same frame.
//!
//! `cargo fuzz run decode_request` (from the repository root).
#![no_main]

use comesg_proto::{decode_reply, decode_request, encode_reply, encode_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode_request(data) {
        let again = decode_request(&encode_request(&frame)).expect("re-encoded request decodes");
        assert_eq!(again, frame);
    }
    if let Ok(frame) = decode_reply(data) {
        let again = decode_reply(&encode_reply(&frame)).expect("re-encoded reply decodes");
        assert_eq!(again, frame);
    }
});
