//! `ClientMessage::decode`, the proxy's first look at every browser frame. Invariants: it never
//! panics; a decoded message encodes to a frame that decodes to the same message; a refused
//! frame that carried a string `id` is refused with that id.

#![no_main]

use kubemux_protocol::frames::ClientMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| kubemux_fuzz::check_decode(text, ClientMessage::decode, ClientMessage::encode));
