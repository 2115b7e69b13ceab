//! What the decoder targets share: the round trip and the id a refusal must keep.

use std::fmt::Debug;

use kubemux_protocol::frames::DecodeError;
use serde_json::Value;

/// Checks a frame decoder on `text`: a decoded message encodes to a frame that decodes to the
/// same message; a refused frame that carried a string `id` is refused with that id (so the
/// error reaches the one subscription it concerns, DESIGN.md invariant 1).
pub fn check_decode<M: PartialEq + Debug>(text: &str, decode: fn(&str) -> Result<M, DecodeError>, encode: fn(&M) -> String) {
    match decode(text) {
        Ok(message) => {
            let again = decode(&encode(&message)).expect("an encoded message decodes");
            assert_eq!(again, message, "round trip of {text:?}");
        }
        Err(error) => {
            let id = match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => map.get("id").and_then(Value::as_str).map(str::to_owned),
                _ => None,
            };
            assert_eq!(error.id, id, "the refusal of {text:?} keeps its id");
        }
    }
}
