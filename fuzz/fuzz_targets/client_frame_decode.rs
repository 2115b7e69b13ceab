//! `ClientMessage::decode`, the proxy's first look at every browser frame. Invariants: it never
//! panics; a decoded message encodes to a frame that decodes to the same message; a refused
//! frame that carried a string `id` is refused with that id (so the error reaches the one
//! subscription it concerns, DESIGN.md invariant 1).

#![no_main]

use kubemux_protocol::frames::ClientMessage;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|text: &str| {
    match ClientMessage::decode(text) {
        Ok(message) => {
            let again = ClientMessage::decode(&message.encode()).expect("an encoded message decodes");
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
