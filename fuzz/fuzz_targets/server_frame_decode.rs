//! `ServerMessage::decode`, the field-by-field decoder every browser runs on every frame.
//! Invariants: it never panics; a decoded message encodes to a frame that decodes to the same
//! message; a refused frame that carried a string `id` is refused with that id.

#![no_main]

use kubemux_protocol::frames::ServerMessage;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|text: &str| {
    match ServerMessage::decode(text) {
        Ok(message) => {
            let again = ServerMessage::decode(&message.encode()).expect("an encoded message decodes");
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
});
