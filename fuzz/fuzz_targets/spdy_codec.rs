//! kube-sim's SPDY/3.1 codec (`kube_sim::spdy`), fed arbitrary bytes as a client's side of a
//! connection. Invariants: decoding never panics; the frames (or the error) do not depend on
//! how the bytes are split; every decoded frame re-encodes and decodes to itself, through a
//! fresh pair of compression contexts on its own and through one long-lived pair for the whole
//! sequence (the contexts carry state across header blocks). The one refusal allowed is a
//! header block that recompresses past the control frame limit.

#![no_main]

use kube_sim::spdy::{Decoder, EncodeError, Encoder, Frame};
use libfuzzer_sys::fuzz_target;

/// Frames decoded from `chunks` fed in order, stopping at the first error.
fn decode(chunks: &[&[u8]]) -> (Vec<Frame>, Option<kube_sim::spdy::DecodeError>) {
    let mut decoder = Decoder::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        decoder.extend(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => return (frames, Some(error)),
            }
        }
    }
    (frames, None)
}

fn has_headers(frame: &Frame) -> bool {
    matches!(frame, Frame::SynStream { .. } | Frame::SynReply { .. } | Frame::Headers { .. })
}

fuzz_target!(|data: &[u8]| {
    let whole = decode(&[data]);
    let (head, tail) = data.split_at(data.len() / 3);
    assert_eq!(decode(&[head, tail]), whole, "the split changed what decodes");

    let (frames, _) = whole;
    let mut long_lived = Encoder::new();
    let mut wire = Vec::new();
    let mut kept = Vec::new();
    for frame in &frames {
        match Encoder::new().encode_to_bytes(frame) {
            Ok(bytes) => {
                let (again, error) = decode(&[&bytes]);
                assert_eq!(error, None, "{frame:?} re-encoded to undecodable bytes");
                assert_eq!(again.as_slice(), std::slice::from_ref(frame), "a fresh round trip changed the frame");
            }
            Err(EncodeError::PayloadTooLarge) if has_headers(frame) => {}
            Err(error) => panic!("{frame:?} decoded but does not encode: {error}"),
        }
        match long_lived.encode_to_bytes(frame) {
            Ok(bytes) => {
                wire.extend_from_slice(&bytes);
                kept.push(frame.clone());
            }
            // Skipped by both sides: the long-lived contexts stay in step.
            Err(EncodeError::PayloadTooLarge) if has_headers(frame) => {}
            Err(error) => panic!("{frame:?} decoded but does not encode: {error}"),
        }
    }
    let (again, error) = decode(&[&wire]);
    assert_eq!(error, None, "the re-encoded sequence does not decode");
    assert_eq!(again, kept, "the long-lived round trip changed the frames");
});
