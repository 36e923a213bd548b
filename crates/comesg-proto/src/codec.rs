//! Encoding and decoding of frames.

use crate::{ReplyFrame, RequestFrame};

/// Protocol version spoken by this build. It covers the layout of the
/// shared segments as well as the frames: a client that maps a port lays
/// it out as its own build does, so a kernel of another layout must turn
/// it away (4: COCHANNEL slot headers moved next to their data).
pub const VERSION: u32 = 4;

/// Largest frame, in bytes, either way.
pub const MAX_FRAME: usize = 64 * 1024;

/// Most handles one `CarrierTake` reply grants (each carries up to six
/// fds, and one record carries at most 253); a reply this full means the
/// receiver should ask again for the rest.
pub const TAKE_BATCH: usize = 32;

/// Most events in one [`crate::Reply::Events`] frame (each names its
/// object: at most 255 bytes, so a full frame stays well under
/// [`MAX_FRAME`]).
pub const EVENTS_PER_FRAME: usize = 128;

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Longer than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds {MAX_FRAME}")]
    TooLarge(usize),
    /// Not a valid encoding (truncated, unknown variant, bad UTF-8, ...).
    #[error("invalid encoding: {0}")]
    Invalid(String),
    /// Bytes left over after a whole frame.
    #[error("{0} trailing bytes after the frame")]
    Trailing(usize),
}

fn decode<'a, T: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    if bytes.len() > MAX_FRAME {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let (v, rest) = postcard::take_from_bytes(bytes).map_err(|e| DecodeError::Invalid(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(v)
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Serializing our own types into a Vec cannot fail: no maps with
    // non-string keys, no sequences of unknown length.
    postcard::to_stdvec(v).unwrap_or_default()
}

/// Encodes a request.
pub fn encode_request(f: &RequestFrame) -> Vec<u8> {
    encode(f)
}

/// Decodes a request.
pub fn decode_request(bytes: &[u8]) -> Result<RequestFrame, DecodeError> {
    decode(bytes)
}

/// Encodes a reply.
pub fn encode_reply(f: &ReplyFrame) -> Vec<u8> {
    encode(f)
}

/// Decodes a reply.
pub fn decode_reply(bytes: &[u8]) -> Result<ReplyFrame, DecodeError> {
    decode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = Name> {
        "(/[a-z0-9._-]{1,8}){1,4}".prop_filter_map("valid", |s| Name::try_from(s).ok())
    }

    fn request() -> impl Strategy<Value = Request> {
        prop_oneof![
            (any::<u32>(), ".{0,20}").prop_map(|(version, client)| Request::Hello { version, client }),
            (name(), any::<u32>(), any::<u32>(), any::<u8>(), any::<u32>(), any::<bool>(), any::<bool>()).prop_map(
                |(name, slot_size, slots, r, mode, persistent, exclusive)| Request::Create {
                    name,
                    spec: PortSpec::Channel(ChannelSpec { slot_size, slots }),
                    rights: Rights::from_bits_truncate(r),
                    mode,
                    persistent,
                    exclusive,
                }
            ),
            (name(), any::<u32>(), any::<u32>(), any::<u64>(), any::<bool>()).prop_map(
                |(name, data_size, data_align, type_hash, persistent)| Request::Create {
                    name,
                    spec: PortSpec::Mutex(MutexSpec { data_size, data_align, type_hash }),
                    rights: Rights::ALL,
                    mode: 0o600,
                    persistent,
                    exclusive: false,
                }
            ),
            (name(), any::<[u32; 4]>()).prop_map(|(name, [workers, slot_size, call_slots, queue])| Request::Create {
                name,
                spec: PortSpec::Service(ServiceSpec { workers, slot_size, call_slots, queue }),
                rights: Rights::RECV,
                mode: 0o620,
                persistent: false,
                exclusive: true,
            }),
            (name(), any::<u32>(), any::<u32>(), any::<u8>()).prop_map(|(name, buffer, receivers, r)| {
                Request::Create {
                    name,
                    spec: PortSpec::Pipe(PipeSpec { buffer, receivers }),
                    rights: Rights::from_bits_truncate(r),
                    mode: 0o600,
                    persistent: false,
                    exclusive: true,
                }
            }),
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<Vec<(u64, u8)>>()).prop_map(|(h, addr, len, a)| {
                Request::CarrierSend {
                    attach: a.into_iter().map(|(h, r)| (HandleId(h), Rights::from_bits_truncate(r))).collect(),
                    handle: HandleId(h),
                    addr,
                    len,
                }
            }),
            (any::<u64>(), any::<u64>()).prop_map(|(h, len)| Request::CarrierSendSealed {
                handle: HandleId(h),
                len,
                attach: Vec::new()
            }),
            (any::<u64>(), any::<u64>()).prop_map(|(h, msg)| Request::CarrierFetch { handle: HandleId(h), msg }),
            (any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>()).prop_map(
                |(arena, max_message, receivers, queue)| {
                    Request::Create {
                        name: Name::root(),
                        spec: PortSpec::Carrier(CarrierSpec { arena, max_message, receivers, queue }),
                        rights: Rights::SEND,
                        mode: 0o600,
                        persistent: false,
                        exclusive: true,
                    }
                }
            ),
            (any::<u64>(), any::<u32>()).prop_map(|(h, caller)| Request::CallerSegment { handle: HandleId(h), caller }),
            (name(), any::<u8>()).prop_map(|(name, r)| Request::Open { name, rights: Rights::from_bits_truncate(r) }),
            any::<u64>().prop_map(|h| Request::Close { handle: HandleId(h) }),
            name().prop_map(|name| Request::Unlink { name }),
            (name(), any::<u32>()).prop_map(|(name, offset)| Request::List { name, offset }),
            Just(Request::Ping),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(id in any::<u32>(), request in request()) {
            let f = RequestFrame { id, request };
            prop_assert_eq!(decode_request(&encode_request(&f)), Ok(f));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_request(&bytes);
            let _ = decode_reply(&bytes);
        }

        #[test]
        fn truncated_frames_are_rejected(request in request(), cut in 1usize..8) {
            let bytes = encode_request(&RequestFrame { id: 7, request });
            let cut = cut.min(bytes.len());
            prop_assert!(decode_request(&bytes[..bytes.len() - cut]).is_err());
        }
    }

    #[test]
    fn invalid_names_are_rejected_on_decode() {
        // A hand-made frame whose name is not absolute.
        let mut bytes = encode_request(&RequestFrame { id: 1, request: Request::Unlink { name: Name::root() } });
        let last = bytes.len() - 1;
        bytes[last] = b'x';
        assert!(matches!(decode_request(&bytes), Err(DecodeError::Invalid(_))));
        assert_eq!(decode_request(&vec![0; MAX_FRAME + 1]), Err(DecodeError::TooLarge(MAX_FRAME + 1)));
    }
}
