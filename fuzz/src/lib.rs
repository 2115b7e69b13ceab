//! What the decoder targets share: the round trip and the id a refusal must keep.

use std::fmt::Debug;

use kubemux_protocol::frames::DecodeError;
use serde_json::Value;

fn as_json(text: &str) -> Value {
    serde_json::from_str(text).expect("an encoded message is JSON")
}

/// Equal JSON, floats within a relative 1e-15 (a few units in the last place).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-15 * x.abs().max(y.abs()),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w))),
        _ => a == b,
    }
}

/// Checks a frame decoder on `text`: a decoded message encodes to a frame that decodes to the
/// same message; a refused frame that carried a string `id` is refused with that id (so the
/// error reaches the one subscription it concerns, DESIGN.md invariant 1).
pub fn check_decode<M: PartialEq + Debug>(text: &str, decode: fn(&str) -> Result<M, DecodeError>, encode: fn(&M) -> String) {
    match decode(text) {
        Ok(message) => {
            let again = decode(&encode(&message)).expect("an encoded message decodes");
            if again != message {
                // Numbers the protocol does not read (a Status's other fields) may move in their
                // last bit: serde_json's default float parsing is not exact, and its exact one
                // (`float_roundtrip`) would cost the browser bundle. Everything else is equal.
                let (was, is) = (as_json(&encode(&message)), as_json(&encode(&again)));
                assert!(same(&was, &is), "round trip of {text:?}:\n  {message:?}\n  {again:?}");
            }
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
