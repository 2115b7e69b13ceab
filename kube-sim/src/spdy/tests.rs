//! Golden vectors, each checked by hand against draft 3's frame layouts, and kubectl's own
//! bytes: the first frames kubectl 1.32 sent over a SPDY port-forward connection (two local
//! connections to `svc/hello`, port 8000), captured from the wire.

use super::*;

/// kubectl's SYN_STREAM for the error stream of request 0: control bit and version 3
/// (`80 03`), type 1, flags 0, length 0x3e; stream 1, associated 0, priority 0, slot 0; then
/// the first header block of the connection: zlib header `78 f9` (FDICT, best compression),
/// DICTID `e3 c6 a7 c2` (the SPDY/3 dictionary), and a sync flush ending `00 00 ff ff`.
const KUBECTL_ERROR_STREAM_0: &str = "800300010000003e0000000100000000000078f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c60616060c0c0c0c0590489c64c50f2663400000000ffff";
/// The next SYN_STREAM (stream 3, request 1): 9 bytes of block that only decode with the
/// context the first block left behind.
const KUBECTL_ERROR_STREAM_1: &str = "800300010000001300000003000000000000a244b321000000ffff";
/// kubectl's keepalive PING, id 1 (odd: the client's).
const KUBECTL_PING: &str = "800300060000000400000001";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn error_stream(stream_id: u32, request: &str) -> Frame {
    Frame::SynStream {
        stream_id,
        associated_to: 0,
        priority: 0,
        slot: 0,
        fin: false,
        unidirectional: false,
        headers: Headers::from_pairs([("streamtype", "error"), ("port", "8000"), ("requestid", request)]),
    }
}

fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, DecodeError> {
    let mut decoder = Decoder::new();
    decoder.extend(bytes);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.next_frame()? {
        frames.push(frame);
    }
    assert_eq!(decoder.buffered(), 0, "nothing left over");
    Ok(frames)
}

fn encode(frame: &Frame) -> Vec<u8> {
    Encoder::new().encode_to_bytes(frame).unwrap().to_vec()
}

#[test]
fn kubectls_first_frames_decode() {
    let wire = [hex(KUBECTL_ERROR_STREAM_0), hex(KUBECTL_ERROR_STREAM_1), hex(KUBECTL_PING)].concat();
    let frames = decode_all(&wire).unwrap();
    assert_eq!(frames, [error_stream(1, "0"), error_stream(3, "1"), Frame::Ping { id: 1 }]);
    // Byte by byte: a frame comes out only once it is whole, and the same frames come out.
    let mut decoder = Decoder::new();
    let mut frames = Vec::new();
    for byte in &wire {
        decoder.extend(&[*byte]);
        while let Some(frame) = decoder.next_frame().unwrap() {
            frames.push(frame);
        }
    }
    assert_eq!(frames.len(), 3);
    // The second block is meaningless to a fresh context.
    assert!(decode_all(&hex(KUBECTL_ERROR_STREAM_1)).is_err());
}

#[test]
fn fixed_layout_control_frames() {
    let cases: [(Frame, &str); 6] = [
        // 80 03 | type 3 | flags 0, length 8 | stream 3 | status 5 (CANCEL)
        (Frame::RstStream { stream_id: 3, status: rst::CANCEL }, "80030003 00000008 00000003 00000005"),
        // PING: length 4, the id.
        (Frame::Ping { id: 2 }, "80030006 00000004 00000002"),
        // GOAWAY: last good stream 5, status OK.
        (Frame::GoAway { last_good_stream_id: 5, status: goaway::OK }, "80030007 00000008 00000005 00000000"),
        // WINDOW_UPDATE: stream 1, delta 65536.
        (Frame::WindowUpdate { stream_id: 1, delta: 65_536 }, "80030009 00000008 00000001 00010000"),
        // SETTINGS: one entry, flags 0, id 7 (INITIAL_WINDOW_SIZE), 65536.
        (
            Frame::Settings { clear: false, entries: vec![Setting { flags: 0, id: 7, value: 65_536 }] },
            "80030004 0000000c 00000001 00000007 00010000",
        ),
        // Data: stream 1, FIN, "hi".
        (Frame::Data { stream_id: 1, fin: true, data: Bytes::from_static(b"hi") }, "00000001 01000002 6869"),
    ];
    for (frame, expected) in cases {
        let bytes = hex(&expected.replace(' ', ""));
        assert_eq!(encode(&frame), bytes, "{frame:?}");
        assert_eq!(decode_all(&bytes).unwrap(), [frame]);
    }
}

#[test]
fn syn_reply_as_the_kubelet_sends_it() {
    // spdystream replies with empty headers: stream id, then a compressed empty block.
    let mut encoder = Encoder::new();
    let reply = encoder.encode_to_bytes(&Frame::SynReply { stream_id: 1, fin: false, headers: Headers::default() }).unwrap();
    assert_eq!(&reply[..4], [0x80, 0x03, 0x00, 0x02]);
    assert_eq!(reply[4], 0, "no flags");
    assert_eq!(usize::from(reply[5]) << 16 | usize::from(reply[6]) << 8 | usize::from(reply[7]), reply.len() - 8);
    assert_eq!(&reply[8..12], [0, 0, 0, 1]);
    assert_eq!(&reply[12..18], [0x78, reply[13], 0xe3, 0xc6, 0xa7, 0xc2], "zlib header with the SPDY/3 DICTID");
    assert!(reply.ends_with(&[0x00, 0x00, 0xff, 0xff]), "a sync flush");
    // The same encoder's next block continues the stream: no zlib header again.
    let second = encoder.encode_to_bytes(&Frame::SynReply { stream_id: 3, fin: false, headers: Headers::default() }).unwrap();
    let mut decoder = Decoder::new();
    decoder.extend(&[reply.as_ref(), second.as_ref()].concat());
    assert_eq!(decoder.next_frame().unwrap(), Some(Frame::SynReply { stream_id: 1, fin: false, headers: Headers::default() }));
    assert_eq!(decoder.next_frame().unwrap(), Some(Frame::SynReply { stream_id: 3, fin: false, headers: Headers::default() }));
}

#[test]
fn frames_round_trip_through_one_pair_of_contexts() {
    let frames = [
        error_stream(1, "0"),
        Frame::SynStream {
            stream_id: 3,
            associated_to: 1,
            priority: 7,
            slot: 2,
            fin: true,
            unidirectional: true,
            headers: Headers::from_pairs([("streamtype", "data"), ("port", "8000"), ("requestid", "0"), ("multi", "a\0b")]),
        },
        Frame::SynReply { stream_id: 3, fin: true, headers: Headers::from_pairs([("status", "200 OK")]) },
        Frame::Headers { stream_id: 3, fin: false, headers: Headers::default() },
        Frame::Data { stream_id: 3, fin: false, data: Bytes::from(vec![7u8; 40_000]) },
        Frame::Settings { clear: true, entries: vec![] },
        Frame::Unknown { frame_type: 10, flags: 0xff, payload: Bytes::from_static(b"credential") },
    ];
    let mut encoder = Encoder::new();
    let mut wire = BytesMut::new();
    for frame in &frames {
        encoder.encode(frame, &mut wire).unwrap();
    }
    assert_eq!(decode_all(&wire).unwrap(), frames);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let cases: [(&str, DecodeError); 7] = [
        ("80020001 0000000a 00000001 00000000 0000", DecodeError::UnsupportedVersion(2)),
        ("80030003 00000004 00000001", DecodeError::InvalidLength { frame: "RST_STREAM", length: 4 }),
        ("80030006 00000005 0000000100", DecodeError::InvalidLength { frame: "PING", length: 5 }),
        ("80030001 00000009 000000010000000000", DecodeError::InvalidLength { frame: "SYN_STREAM", length: 9 }),
        // SETTINGS claiming two entries in the room of one.
        ("80030004 0000000c 00000002 00000007 00010000", DecodeError::InvalidLength { frame: "SETTINGS", length: 12 }),
        ("80030004 00ffffff", DecodeError::FrameTooLarge { length: 0xff_ffff, limit: MAX_CONTROL_LENGTH }),
        ("00000001 00ffffff", DecodeError::FrameTooLarge { length: 0xff_ffff, limit: MAX_DATA_LENGTH }),
    ];
    for (input, expected) in cases {
        assert_eq!(decode_all(&hex(&input.replace(' ', ""))), Err(expected), "{input}");
    }
    // A SYN_STREAM whose block is not zlib.
    assert_eq!(decode_all(&hex("80030001 0000000e 00000001 00000000 0000 01020304".replace(' ', "").as_str())), Err(DecodeError::Compression));
    // A truncated frame is simply not whole yet.
    let mut decoder = Decoder::new();
    decoder.extend(&hex(KUBECTL_ERROR_STREAM_0)[..20]);
    assert_eq!(decoder.next_frame(), Ok(None));
}

#[test]
fn oversized_frames_are_not_encoded() {
    let data = Frame::Data { stream_id: 1, fin: false, data: Bytes::from(vec![0; MAX_DATA_LENGTH + 1]) };
    assert_eq!(Encoder::new().encode_to_bytes(&data), Err(EncodeError::PayloadTooLarge));
    let unknown = Frame::Unknown { frame_type: 99, flags: 0, payload: Bytes::from(vec![0; MAX_CONTROL_LENGTH + 1]) };
    assert_eq!(Encoder::new().encode_to_bytes(&unknown), Err(EncodeError::PayloadTooLarge));
    let empty_name = Frame::SynReply { stream_id: 1, fin: false, headers: Headers::from_pairs([("", "x")]) };
    assert_eq!(Encoder::new().encode_to_bytes(&empty_name), Err(EncodeError::EmptyHeaderName));
}
