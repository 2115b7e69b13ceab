//! `ServerMessage::decode`, the field-by-field decoder every browser runs on every frame.
//! Invariants: it never panics; a decoded message encodes to a frame that decodes to the same
//! message; a refused frame that carried a string `id` is refused with that id.

#![no_main]

use kubemux_protocol::frames::ServerMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| kubemux_fuzz::check_decode(text, ServerMessage::decode, ServerMessage::encode));
