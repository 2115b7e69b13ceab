//! The Kubernetes channel protocols spoken over WebSocket by `exec`, `attach` and
//! `portforward` (reference: `exec-portforward-protocol.md` §3 and §7.1).
//!
//! A message is one channel byte followed by the payload. The binary protocols put both in a
//! binary frame; the base64 ones send a text frame of `'0' + channel` followed by the standard
//! base64 of the payload. `v5.channel.k8s.io` adds the CLOSE signal `FF <channel>`, which
//! half-closes one stream (in practice: stdin).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Channel 0: the client's stdin.
pub const STDIN: u8 = 0;
/// Channel 1: the process's stdout.
pub const STDOUT: u8 = 1;
/// Channel 2: the process's stderr.
pub const STDERR: u8 = 2;
/// Channel 3: the status (v4/v5: a JSON `Status`) written once before the server closes.
pub const ERROR: u8 = 3;
/// Channel 4: terminal resize, JSON `{"Width":W,"Height":H}`.
pub const RESIZE: u8 = 4;
/// The v5 CLOSE signal's channel byte: `FF <channel>` half-closes that channel.
pub const CLOSE: u8 = 255;

/// One of the WebSocket subprotocols of the Kubernetes channel protocol family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelProtocol {
    /// `v5.channel.k8s.io`: binary, JSON status, CLOSE signal.
    V5,
    /// `v4.channel.k8s.io`: binary, JSON status.
    V4,
    /// `v4.base64.channel.k8s.io`: base64 text frames, JSON status.
    V4Base64,
    /// `base64.channel.k8s.io`: base64 text frames, plain-text error only on failure.
    Base64,
    /// `channel.k8s.io`: binary, plain-text error only on failure.
    V1,
}

impl ChannelProtocol {
    /// Every protocol, in the order a server prefers them.
    pub const ALL: [ChannelProtocol; 5] = [
        ChannelProtocol::V5,
        ChannelProtocol::V4,
        ChannelProtocol::V4Base64,
        ChannelProtocol::Base64,
        ChannelProtocol::V1,
    ];

    /// The protocols the legacy port-forward endpoint speaks.
    pub const PORT_FORWARD: [ChannelProtocol; 2] = [ChannelProtocol::V4, ChannelProtocol::V4Base64];

    /// The subprotocol name as it appears in `Sec-WebSocket-Protocol`.
    pub const fn name(self) -> &'static str {
        match self {
            ChannelProtocol::V5 => "v5.channel.k8s.io",
            ChannelProtocol::V4 => "v4.channel.k8s.io",
            ChannelProtocol::V4Base64 => "v4.base64.channel.k8s.io",
            ChannelProtocol::Base64 => "base64.channel.k8s.io",
            ChannelProtocol::V1 => "channel.k8s.io",
        }
    }

    /// Parses a subprotocol name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name.trim())
    }

    /// Whether frames are base64 text rather than binary.
    pub const fn is_base64(self) -> bool {
        matches!(self, ChannelProtocol::V4Base64 | ChannelProtocol::Base64)
    }

    /// Whether the protocol has the CLOSE signal (only v5).
    pub const fn supports_close(self) -> bool {
        matches!(self, ChannelProtocol::V5)
    }

    /// Whether channel 3 carries a JSON `Status` (v4 and v5) rather than plain text.
    pub const fn has_status_json(self) -> bool {
        matches!(self, ChannelProtocol::V5 | ChannelProtocol::V4 | ChannelProtocol::V4Base64)
    }

    /// Picks the protocol the way Kubernetes does: the first entry of the client's list
    /// (in the client's order) that the server supports. `offered` may contain
    /// comma-separated header values and unrelated names (e.g. a bearer-token protocol).
    pub fn negotiate<'a>(
        offered: impl IntoIterator<Item = &'a str>,
        supported: &[ChannelProtocol],
    ) -> Option<Self> {
        offered
            .into_iter()
            .flat_map(|v| v.split(','))
            .filter_map(Self::from_name)
            .find(|p| supported.contains(p))
    }
}

/// A WebSocket message payload, independent of any WebSocket library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsPayload {
    /// A binary frame.
    Binary(Vec<u8>),
    /// A text frame.
    Text(String),
}

/// What one received message means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// Data for a channel.
    Data {
        /// The channel byte.
        channel: u8,
        /// The payload, decoded from base64 where the protocol says so.
        payload: Vec<u8>,
    },
    /// The v5 CLOSE signal for a channel.
    Close {
        /// The channel being half-closed.
        channel: u8,
    },
    /// A zero-length message, which servers skip.
    Empty,
}

/// Why a received message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A base64 frame whose payload is not valid standard base64.
    #[error("invalid base64 payload on channel {0}")]
    BadBase64(u8),
    /// A v5 CLOSE signal that is not exactly two bytes.
    #[error("a single channel byte must follow the stream close signal")]
    BadClose,
}

/// Encodes one message for `channel` in `protocol`. Inlined, so that a caller with a constant
/// binary protocol (the browser terminal) carries no base64 code.
#[inline]
pub fn encode(protocol: ChannelProtocol, channel: u8, payload: &[u8]) -> WsPayload {
    if protocol.is_base64() {
        return encode_base64(channel, payload);
    }
    let mut frame = Vec::with_capacity(1 + payload.len());
    frame.push(channel);
    frame.extend_from_slice(payload);
    WsPayload::Binary(frame)
}

/// The base64 protocols carry the channel as the byte `'0' + channel`, wrapping as Go's byte
/// arithmetic does (so channel 208 is byte 0, and port-forward's channels for many ports go past
/// `'9'`). While that byte is ASCII the frame is text, as client-go and the API server send it;
/// past ASCII the byte cannot start a UTF-8 text frame, so it goes as a binary frame with the
/// same bytes, which every server reading the base64 protocols accepts.
fn encode_base64(channel: u8, payload: &[u8]) -> WsPayload {
    let first = b'0'.wrapping_add(channel);
    if first.is_ascii() {
        let mut text = String::with_capacity(1 + payload.len().div_ceil(3) * 4);
        text.push(char::from(first));
        STANDARD.encode_string(payload, &mut text);
        return WsPayload::Text(text);
    }
    let mut frame = Vec::with_capacity(1 + payload.len().div_ceil(3) * 4);
    frame.push(first);
    frame.extend_from_slice(STANDARD.encode(payload).as_bytes());
    WsPayload::Binary(frame)
}

/// Encodes the v5 CLOSE signal for `channel`.
pub fn encode_close(channel: u8) -> WsPayload {
    WsPayload::Binary(vec![CLOSE, channel])
}

/// Decodes one received message (text or binary; servers accept either for base64 protocols).
/// Inlined for the same reason as [`encode`].
#[inline]
pub fn decode(protocol: ChannelProtocol, data: &[u8]) -> Result<Decoded, FrameError> {
    let Some((&first, rest)) = data.split_first() else {
        return Ok(Decoded::Empty);
    };
    if protocol.supports_close() && first == CLOSE {
        return match rest {
            [channel] => Ok(Decoded::Close { channel: *channel }),
            _ => Err(FrameError::BadClose),
        };
    }
    if protocol.is_base64() {
        return decode_base64(first, rest);
    }
    Ok(Decoded::Data { channel: first, payload: rest.to_vec() })
}

/// The inverse of [`encode_base64`]: every first byte names a channel (`byte - '0'`, wrapping),
/// as in the API server; whether the channel exists is the caller's question.
fn decode_base64(first: u8, rest: &[u8]) -> Result<Decoded, FrameError> {
    let channel = first.wrapping_sub(b'0');
    let payload = STANDARD.decode(rest).map_err(|_| FrameError::BadBase64(channel))?;
    Ok(Decoded::Data { channel, payload })
}

/// A terminal size as sent on the resize channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    /// Columns.
    #[serde(rename = "Width", alias = "width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height", alias = "height")]
    pub height: u16,
}

impl TerminalSize {
    /// The JSON payload for channel 4, in the canonical capitalised form with client-go's
    /// trailing newline.
    pub fn to_payload(self) -> Vec<u8> {
        let mut out = serde_json::to_vec(&self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Parses every complete size object in a resize payload (objects may share a frame)
    /// and returns the last one that is usable (both dimensions at least 1).
    pub fn parse_last(payload: &[u8]) -> Option<TerminalSize> {
        serde_json::Deserializer::from_slice(payload)
            .into_iter::<TerminalSize>()
            .map_while(Result::ok)
            .filter(|s| s.width >= 1 && s.height >= 1)
            .last()
    }
}

/// How an exec session ended, as carried on channel 3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutcome {
    /// `status: Success`: exit code 0.
    Success,
    /// `reason: NonZeroExitCode` with an `ExitCode` cause.
    ExitCode(i32),
    /// Any other failure: the message, and the reason and code when present.
    Failure {
        /// Human-readable message.
        message: String,
        /// Machine-readable reason, e.g. `InternalError`.
        reason: Option<String>,
        /// HTTP-style code, e.g. 500.
        code: Option<u16>,
    },
}

impl ExecOutcome {
    /// The channel-3 `Status` JSON for this outcome (the v4/v5 shape).
    pub fn to_status(&self) -> Value {
        match self {
            ExecOutcome::Success => json!({"metadata": {}, "status": "Success"}),
            ExecOutcome::ExitCode(code) => json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: command terminated with exit code {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}
            }),
            ExecOutcome::Failure { message, reason, code } => {
                let mut status = json!({"metadata": {}, "status": "Failure", "message": message});
                if let Some(reason) = reason {
                    status["reason"] = json!(reason);
                    status["details"] = json!({"causes": [{"message": message}]});
                }
                if let Some(code) = code {
                    status["code"] = json!(code);
                }
                status
            }
        }
    }

    /// The failure a runtime reports when the command cannot be started (e.g. a missing
    /// binary): `InternalError`, code 500, which shells-with-fallback key on.
    pub fn internal_error(detail: &str) -> ExecOutcome {
        ExecOutcome::Failure {
            message: format!("Internal error occurred: {detail}"),
            reason: Some("InternalError".into()),
            code: Some(500),
        }
    }

    /// Parses a channel-3 payload the way client-go's `errorDecoderV4` does. `metadata`,
    /// `kind` and `apiVersion` are not required.
    pub fn parse(payload: &[u8]) -> Result<ExecOutcome, StatusParseError> {
        // `from_str` rather than `from_slice`, and the `Value` accessors rather than
        // `pointer`: the browser package already carries those, so parsing a status adds
        // nothing to its size.
        let text = std::str::from_utf8(payload).map_err(|_| StatusParseError::NotJson)?;
        let value: Value = serde_json::from_str(text).map_err(|_| StatusParseError::NotJson)?;
        let field = |name: &str| value.get(name).and_then(Value::as_str);
        match field("status") {
            Some("Success") => Ok(ExecOutcome::Success),
            Some("Failure") => {
                let reason = field("reason").map(str::to_owned);
                if reason.as_deref() == Some("NonZeroExitCode") {
                    let code = value
                        .get("details")
                        .and_then(|d| d.get("causes"))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .find(|c| c.get("reason").and_then(Value::as_str) == Some("ExitCode"))
                        .and_then(|c| c.get("message").and_then(Value::as_str))
                        .and_then(|m| m.parse::<i32>().ok())
                        .ok_or(StatusParseError::MissingExitCode)?;
                    return Ok(ExecOutcome::ExitCode(code));
                }
                Ok(ExecOutcome::Failure {
                    message: field("message").unwrap_or_default().to_owned(),
                    reason,
                    code: value.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok()),
                })
            }
            _ => Err(StatusParseError::UnknownStatus),
        }
    }
}

/// Why a channel-3 payload could not be read as a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusParseError {
    /// Not a JSON document.
    #[error("status payload is not JSON")]
    NotJson,
    /// `status` is neither `Success` nor `Failure`.
    #[error("status payload has no Success/Failure status")]
    UnknownStatus,
    /// `NonZeroExitCode` without a numeric `ExitCode` cause.
    #[error("NonZeroExitCode status without an ExitCode cause")]
    MissingExitCode,
}

/// Port-forward channel numbering (legacy WebSocket protocol, reference §7.1).
pub mod portforward {
    /// The data channel of the port at `index` in the request's `ports` list.
    pub const fn data_channel(index: usize) -> u8 {
        (index * 2) as u8
    }

    /// The error channel of the port at `index`.
    pub const fn error_channel(index: usize) -> u8 {
        (index * 2 + 1) as u8
    }

    /// The most ports one request can name (channels are one byte).
    pub const MAX_PORTS: usize = 127;

    /// The 2-byte little-endian port prefix the server sends first on each channel.
    pub const fn port_prefix(port: u16) -> [u8; 2] {
        port.to_le_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(p: &WsPayload) -> String {
        match p {
            WsPayload::Binary(b) => b.iter().map(|x| format!("{x:02X}")).collect::<Vec<_>>().join(" "),
            WsPayload::Text(t) => t.clone(),
        }
    }

    /// The test vectors of `exec-portforward-protocol.md` §3.10 and §7.1.
    #[test]
    fn reference_vectors() {
        use ChannelProtocol::*;
        let cases: &[(ChannelProtocol, u8, &[u8], &str)] = &[
            (V4, STDOUT, b"", "01"),
            (V4Base64, STDOUT, b"", "1"),
            (V5, STDIN, b"exit\r", "00 65 78 69 74 0D"),
            (V4Base64, STDIN, b"exit\r", "0ZXhpdA0="),
            (V4, STDIN, &[3], "00 03"),
            (V4Base64, STDIN, &[3], "0Aw=="),
            (V4Base64, STDIN, &[4], "0BA=="),
            (V4Base64, STDIN, b"ls\r", "0bHMN"),
            (V4Base64, RESIZE, br#"{"Width":80,"Height":24}"#, "4eyJXaWR0aCI6ODAsIkhlaWdodCI6MjR9"),
            (V4, portforward::data_channel(0), &portforward::port_prefix(8080), "00 90 1F"),
            (V4, portforward::error_channel(0), &portforward::port_prefix(8080), "01 90 1F"),
            (V4Base64, portforward::data_channel(0), &portforward::port_prefix(8080), "0kB8="),
            (V4Base64, portforward::error_channel(0), &portforward::port_prefix(8080), "1kB8="),
        ];
        for (proto, channel, payload, want) in cases {
            let encoded = encode(*proto, *channel, payload);
            assert_eq!(hex(&encoded), *want, "{proto:?} ch{channel} {payload:?}");
            let bytes = match &encoded {
                WsPayload::Binary(b) => b.clone(),
                WsPayload::Text(t) => t.as_bytes().to_vec(),
            };
            assert_eq!(decode(*proto, &bytes), Ok(Decoded::Data { channel: *channel, payload: payload.to_vec() }));
        }
        assert_eq!(hex(&encode_close(STDIN)), "FF 00");
    }

    #[test]
    fn close_signal_only_in_v5() {
        assert_eq!(decode(ChannelProtocol::V5, &[255, 0]), Ok(Decoded::Close { channel: 0 }));
        assert_eq!(decode(ChannelProtocol::V5, &[255]), Err(FrameError::BadClose));
        assert_eq!(decode(ChannelProtocol::V5, &[255, 0, 1]), Err(FrameError::BadClose));
        // In v4, FF is just an out-of-range channel.
        assert_eq!(decode(ChannelProtocol::V4, &[255, 0]), Ok(Decoded::Data { channel: 255, payload: vec![0] }));
        assert_eq!(decode(ChannelProtocol::V4, &[]), Ok(Decoded::Empty));
    }

    #[test]
    fn bad_base64_frames_are_errors() {
        assert_eq!(decode(ChannelProtocol::Base64, b"0!!!"), Err(FrameError::BadBase64(0)));
        // Any first byte names a channel, as in the API server; `x` is channel 72.
        assert_eq!(decode(ChannelProtocol::V4Base64, b"x"), Ok(Decoded::Data { channel: 72, payload: vec![] }));
    }

    #[test]
    fn base64_channels_past_nine_wrap_as_in_go() {
        // Port-forward's error channel of the 105th port: '0' + 209 wraps to byte 1.
        assert_eq!(bytes_of(&encode(ChannelProtocol::V4Base64, 209, b"")), [1]);
        assert_eq!(bytes_of(&encode(ChannelProtocol::V4Base64, 10, b"\x01")), b":AQ==");
        assert_eq!(bytes_of(&encode(ChannelProtocol::V4Base64, 100, b"\x01")), b"\x94AQ==");
        assert!(matches!(encode(ChannelProtocol::V4Base64, 10, b""), WsPayload::Text(_)), "':' is ASCII: a text frame");
        assert!(matches!(encode(ChannelProtocol::V4Base64, 100, b""), WsPayload::Binary(_)), "byte 148 cannot start text");
    }

    fn bytes_of(payload: &WsPayload) -> Vec<u8> {
        match payload {
            WsPayload::Binary(b) => b.clone(),
            WsPayload::Text(t) => t.as_bytes().to_vec(),
        }
    }

    proptest::proptest! {
        /// Every channel number round-trips through every protocol, whatever the payload.
        #[test]
        fn every_channel_round_trips(channel in proptest::prelude::any::<u8>(), payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            for protocol in ChannelProtocol::ALL {
                // v5's CLOSE signal owns first byte 255, so channel 255 is no data channel in
                // v5 (Kubernetes never assigns it).
                if protocol.supports_close() && channel == CLOSE {
                    continue;
                }
                let decoded = decode(protocol, &bytes_of(&encode(protocol, channel, &payload)));
                proptest::prop_assert_eq!(decoded, Ok(Decoded::Data { channel, payload: payload.clone() }), "{:?} channel {}", protocol, channel);
            }
        }
    }

    #[test]
    fn negotiation_follows_client_order() {
        let offered = ["base64url.bearer.authorization.k8s.io.dG9r", "v4.channel.k8s.io, v5.channel.k8s.io"];
        assert_eq!(ChannelProtocol::negotiate(offered, &ChannelProtocol::ALL), Some(ChannelProtocol::V4));
        assert_eq!(
            ChannelProtocol::negotiate(["v5.channel.k8s.io"], &ChannelProtocol::PORT_FORWARD),
            None
        );
    }

    #[test]
    fn resize_parsing() {
        assert_eq!(
            TerminalSize::parse_last(b"{\"Width\":80,\"Height\":24}\n{\"width\":120,\"height\":40}\n"),
            Some(TerminalSize { width: 120, height: 40 })
        );
        assert_eq!(TerminalSize::parse_last(b"{\"Width\":0,\"Height\":24}"), None);
        assert_eq!(TerminalSize { width: 80, height: 24 }.to_payload(), b"{\"Width\":80,\"Height\":24}\n");
    }

    #[test]
    fn status_round_trips_and_golden_shapes() {
        assert_eq!(
            ExecOutcome::Success.to_status().to_string(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        assert_eq!(
            ExecOutcome::ExitCode(3).to_status().to_string(),
            r#"{"details":{"causes":[{"message":"3","reason":"ExitCode"}]},"message":"command terminated with non-zero exit code: command terminated with exit code 3","metadata":{},"reason":"NonZeroExitCode","status":"Failure"}"#
        );
        for outcome in [
            ExecOutcome::Success,
            ExecOutcome::ExitCode(137),
            ExecOutcome::internal_error("exec: \"bash\": executable file not found in $PATH"),
        ] {
            let bytes = serde_json::to_vec(&outcome.to_status()).unwrap();
            assert_eq!(ExecOutcome::parse(&bytes), Ok(outcome));
        }
        // A v4 pass-through from a new runtime omits metadata.
        assert_eq!(ExecOutcome::parse(br#"{"status":"Success"}"#), Ok(ExecOutcome::Success));
        assert_eq!(ExecOutcome::parse(b"oops"), Err(StatusParseError::NotJson));
    }
}
