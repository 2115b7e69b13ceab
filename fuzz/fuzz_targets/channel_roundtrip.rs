//! The Kubernetes channel framing. Invariants, for every protocol, channel number and payload:
//! `decode(encode(channel, payload))` is that channel and payload (v5's CLOSE byte 255 is a
//! signal, not a data channel), `encode_close` decodes to `Close`, and `decode` of any bytes
//! never panics.

#![no_main]

use arbitrary::Arbitrary;
use kubemux_protocol::channel::{self, CLOSE, ChannelProtocol, Decoded, WsPayload};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    protocol: u8,
    channel: u8,
    payload: Vec<u8>,
}

fn bytes(payload: &WsPayload) -> &[u8] {
    match payload {
        WsPayload::Binary(bytes) => bytes,
        WsPayload::Text(text) => text.as_bytes(),
    }
}

fuzz_target!(|input: Input| {
    let protocol = ChannelProtocol::ALL[usize::from(input.protocol) % ChannelProtocol::ALL.len()];
    let _ = channel::decode(protocol, &input.payload);
    if protocol.supports_close() {
        let close = channel::encode_close(input.channel);
        assert_eq!(channel::decode(protocol, bytes(&close)), Ok(Decoded::Close { channel: input.channel }));
        if input.channel == CLOSE {
            return;
        }
    }
    let frame = channel::encode(protocol, input.channel, &input.payload);
    assert_eq!(
        channel::decode(protocol, bytes(&frame)),
        Ok(Decoded::Data { channel: input.channel, payload: input.payload.clone() }),
        "{} channel {}",
        protocol.name(),
        input.channel
    );
});
