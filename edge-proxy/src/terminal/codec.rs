//! Translation between the channel protocol the client negotiated with the proxy and the one
//! the upstream negotiated with it (reference `exec-portforward-protocol.md` §10): the two may
//! differ in framing (base64 text or binary), in the status channel (JSON from v4, plain text
//! before) and in the v5 CLOSE signal. Pure functions over bytes; the session does the IO.

use kubemux_protocol::channel::{self, ChannelProtocol, Decoded, ExecOutcome, TerminalSize, WsPayload};

/// What the proxy does with one message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromClient {
    /// Send this upstream.
    Forward(WsPayload),
    /// The client half-closed stdin of a non-TTY session but the upstream speaks v4, which has
    /// no CLOSE signal: ending the upstream connection is the only EOF it can get (§10).
    EndUpstream,
    /// Nothing goes upstream; the reason is for debug logs.
    Drop(&'static str),
}

/// What one upstream message means for the client and for the session.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FromUpstream {
    /// What to send the client, if anything.
    pub to_client: Option<WsPayload>,
    /// The status, when this message was the channel-3 status (the process has ended).
    pub status: Option<ExecOutcome>,
}

/// The two protocols of one session and the streams it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codec {
    /// What the client speaks.
    pub client: ChannelProtocol,
    /// What the upstream speaks.
    pub upstream: ChannelProtocol,
    /// Whether the session has a terminal.
    pub tty: bool,
    /// Whether the session asked for stdin.
    pub stdin: bool,
}

impl Codec {
    /// Translates one client message (the bytes of a text or binary frame).
    pub fn from_client(&self, data: &[u8]) -> FromClient {
        match channel::decode(self.client, data) {
            Ok(Decoded::Empty) => FromClient::Drop("empty message"),
            // A TTY's stdin never reaches EOF by closing (§4.4), so there is nothing to pass on
            // or emulate; and passing it on would cost the teardown its keystrokes, since a
            // runtime drops stdin after a CLOSE (CRI-O; containerd detaches the output): the
            // shell of a client that half-closed stdin and then left would live on. The
            // teardown sends CLOSE itself, last, once typing is over.
            Ok(Decoded::Close { channel: channel::STDIN }) if self.stdin && self.tty => FromClient::Drop("stdin close on a TTY session"),
            Ok(Decoded::Close { channel: channel::STDIN }) if self.stdin => {
                if self.upstream.supports_close() {
                    FromClient::Forward(channel::encode_close(channel::STDIN))
                } else {
                    FromClient::EndUpstream
                }
            }
            Ok(Decoded::Close { .. }) => FromClient::Drop("close of a stream the client does not write"),
            Ok(Decoded::Data { channel: channel::STDIN, payload }) if self.stdin => FromClient::Forward(channel::encode(self.upstream, channel::STDIN, &payload)),
            // Only with a TTY: on a non-TTY v5 session a second resize blocks the server's
            // read loop, stdin included (§3.6). Re-encoded, so the upstream only ever sees
            // well-formed sizes.
            Ok(Decoded::Data { channel: channel::RESIZE, payload }) if self.tty => match TerminalSize::parse_last(&payload) {
                Some(size) => FromClient::Forward(channel::encode(self.upstream, channel::RESIZE, &size.to_payload())),
                None => FromClient::Drop("resize without a usable size"),
            },
            Ok(Decoded::Data { .. }) => FromClient::Drop("a channel the session does not write"),
            Err(_) => FromClient::Drop("undecodable frame"),
        }
    }

    /// Whether an upstream message goes to the client byte for byte: output (stdout or stderr)
    /// when neither side is base64, since every binary protocol frames data as the channel byte
    /// and the payload. The session then forwards the received frame itself, with no decoding,
    /// copy or allocation; everything else goes through [`Codec::from_upstream`].
    pub fn passes_through(&self, data: &[u8]) -> bool {
        !self.client.is_base64() && !self.upstream.is_base64() && matches!(data.first(), Some(&(channel::STDOUT | channel::STDERR)))
    }

    /// Translates one upstream message.
    pub fn from_upstream(&self, data: &[u8]) -> FromUpstream {
        match channel::decode(self.upstream, data) {
            Ok(Decoded::Data { channel: channel::ERROR, payload }) => {
                let status = ExecOutcome::parse(&payload).unwrap_or_else(|_| ExecOutcome::Failure { message: String::from_utf8_lossy(&payload).into_owned(), reason: None, code: None });
                let to_client = if self.client.has_status_json() {
                    Some(channel::encode(self.client, channel::ERROR, &payload))
                } else {
                    // Before v4, channel 3 carries a plain-text message on failure only.
                    legacy_error_text(&status, &payload).map(|text| channel::encode(self.client, channel::ERROR, text.as_bytes()))
                };
                FromUpstream { to_client, status: Some(status) }
            }
            Ok(Decoded::Data { channel, payload }) => FromUpstream { to_client: Some(channel::encode(self.client, channel, &payload)), status: None },
            // Servers send neither; nothing to tell the client.
            Ok(Decoded::Close { .. } | Decoded::Empty) | Err(_) => FromUpstream::default(),
        }
    }

    /// Bytes for the upstream's stdin, framed for the upstream (the teardown's keystrokes).
    pub fn upstream_stdin(&self, bytes: &[u8]) -> WsPayload {
        channel::encode(self.upstream, channel::STDIN, bytes)
    }

    /// A channel-3 message for the client carrying `status` (a `metav1.Status` JSON), framed for
    /// the client's protocol: for a dial failure, which has no upstream status frame.
    pub fn client_status(&self, status: &serde_json::Value) -> Option<WsPayload> {
        let json = serde_json::to_vec(status).unwrap_or_default();
        if self.client.has_status_json() {
            return Some(channel::encode(self.client, channel::ERROR, &json));
        }
        let outcome = ExecOutcome::parse(&json).unwrap_or_else(|_| ExecOutcome::Failure { message: String::new(), reason: None, code: None });
        legacy_error_text(&outcome, &json).map(|text| channel::encode(self.client, channel::ERROR, text.as_bytes()))
    }
}

/// The plain-text channel-3 message of the pre-v4 protocols: nothing on success, otherwise the
/// status's message.
fn legacy_error_text(status: &ExecOutcome, json: &[u8]) -> Option<String> {
    match status {
        ExecOutcome::Success => None,
        ExecOutcome::ExitCode(code) => {
            let message = serde_json::from_slice::<serde_json::Value>(json).ok().and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned));
            Some(message.unwrap_or_else(|| format!("command terminated with non-zero exit code: exit code {code}")))
        }
        ExecOutcome::Failure { message, .. } => Some(message.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChannelProtocol::*;

    fn codec(client: ChannelProtocol, upstream: ChannelProtocol, tty: bool) -> Codec {
        Codec { client, upstream, tty, stdin: true }
    }

    fn bin(bytes: &[u8]) -> WsPayload {
        WsPayload::Binary(bytes.to_vec())
    }

    fn text(s: &str) -> WsPayload {
        WsPayload::Text(s.to_owned())
    }

    /// The vectors of reference §3.10, across a base64 client and a v5 upstream.
    #[test]
    fn base64_client_to_v5_upstream() {
        let c = codec(V4Base64, V5, true);
        assert_eq!(c.from_client(b"0ZXhpdA0="), FromClient::Forward(bin(b"\x00exit\r")));
        assert_eq!(c.from_client(b"0Aw=="), FromClient::Forward(bin(&[0, 3])));
        assert_eq!(c.from_client(b"4eyJXaWR0aCI6ODAsIkhlaWdodCI6MjR9"), FromClient::Forward(bin(b"\x04{\"Width\":80,\"Height\":24}\n")));
        assert_eq!(c.from_upstream(&[1]), FromUpstream { to_client: Some(text("1")), status: None });
        let status = br#"{"metadata":{},"status":"Success"}"#;
        let mut frame = vec![3];
        frame.extend_from_slice(status);
        let out = c.from_upstream(&frame);
        assert_eq!(out.status, Some(ExecOutcome::Success));
        assert_eq!(out.to_client, Some(text("3eyJtZXRhZGF0YSI6e30sInN0YXR1cyI6IlN1Y2Nlc3MifQ==")));
    }

    #[test]
    fn close_signal_translation() {
        // v5 on both sides, no TTY: passed through (the process's EOF).
        assert_eq!(codec(V5, V5, false).from_client(&[255, 0]), FromClient::Forward(bin(&[255, 0])));
        // A TTY's is never passed on, whatever the upstream: after it the teardown's keystrokes
        // would be dropped, and the shell would outlive its client.
        assert!(matches!(codec(V5, V5, true).from_client(&[255, 0]), FromClient::Drop(_)));
        assert!(matches!(codec(V5, V4, true).from_client(&[255, 0]), FromClient::Drop(_)));
        // v4 upstream, no TTY: the EOF can only be emulated by closing.
        assert_eq!(codec(V5, V4, false).from_client(&[255, 0]), FromClient::EndUpstream);
        // Malformed close signals and closes of other streams go nowhere.
        assert!(matches!(codec(V5, V5, false).from_client(&[255, 0, 1]), FromClient::Drop(_)));
        assert!(matches!(codec(V5, V5, false).from_client(&[255, 1]), FromClient::Drop(_)));
        // A v4 client has no close signal: FF is an unknown channel.
        assert!(matches!(codec(V4, V5, false).from_client(&[255, 0]), FromClient::Drop(_)));
    }

    #[test]
    fn client_frames_that_never_go_upstream() {
        let non_tty = codec(V5, V5, false);
        assert!(matches!(non_tty.from_client(b"\x04{\"Width\":80,\"Height\":24}"), FromClient::Drop(_)), "resize without a TTY");
        let tty = codec(V5, V5, true);
        assert!(matches!(tty.from_client(b"\x04{\"Width\":0,\"Height\":24}"), FromClient::Drop(_)));
        assert!(matches!(tty.from_client(b"\x04garbage"), FromClient::Drop(_)));
        assert!(matches!(tty.from_client(b"\x07hello"), FromClient::Drop(_)), "unknown channel");
        assert!(matches!(tty.from_client(b""), FromClient::Drop(_)));
        assert!(matches!(codec(V4Base64, V5, true).from_client(b"x!!"), FromClient::Drop(_)));
        let no_stdin = Codec { stdin: false, ..tty };
        assert!(matches!(no_stdin.from_client(b"\x00ls\r"), FromClient::Drop(_)));
    }

    #[test]
    fn status_for_pre_v4_clients_is_text_on_failure_only() {
        let c = codec(Base64, V5, false);
        let success = [&[3u8][..], br#"{"metadata":{},"status":"Success"}"#].concat();
        assert_eq!(c.from_upstream(&success), FromUpstream { to_client: None, status: Some(ExecOutcome::Success) });
        let exit3 = serde_json::to_vec(&ExecOutcome::ExitCode(3).to_status()).unwrap();
        let out = c.from_upstream(&[&[3u8][..], &exit3].concat());
        assert_eq!(out.status, Some(ExecOutcome::ExitCode(3)));
        let WsPayload::Text(t) = out.to_client.unwrap() else { panic!("base64 is text") };
        let decoded = channel::decode(Base64, t.as_bytes()).unwrap();
        let Decoded::Data { channel: 3, payload } = decoded else { panic!("{decoded:?}") };
        assert!(String::from_utf8(payload).unwrap().contains("exit code 3"));

        let v1 = codec(V1, V5, false);
        let status = serde_json::json!({"kind": "Status", "status": "Failure", "message": "pods \"x\" not found", "reason": "NotFound", "code": 404});
        assert_eq!(v1.client_status(&status), Some(bin(b"\x03pods \"x\" not found")));
        assert_eq!(codec(V5, V5, false).client_status(&status), Some(bin(&[&[3u8][..], &serde_json::to_vec(&status).unwrap()].concat())));
    }

    #[test]
    fn output_is_reframed_for_the_client() {
        let c = codec(V4Base64, V5, false);
        assert_eq!(c.from_upstream(b"\x01hi\n").to_client, Some(text("1aGkK")));
        assert_eq!(c.from_upstream(b"\x02oops").to_client, Some(text("2b29wcw==")));
        assert_eq!(codec(V5, V4, false).from_upstream(b"\x01hi").to_client, Some(bin(b"\x01hi")));
        assert_eq!(codec(V5, V5, true).upstream_stdin(b"exit\r"), bin(b"\x00exit\r"));
    }

    /// Output passed through as received is what re-framing it would have sent.
    #[test]
    fn output_passes_through_only_between_binary_framings() {
        for client in [V1, V4, V5] {
            for upstream in [V4, V5] {
                let c = codec(client, upstream, false);
                for frame in [&b"\x01hi\n"[..], b"\x02oops", b"\x01"] {
                    assert!(c.passes_through(frame), "{client:?} from {upstream:?}");
                    assert_eq!(c.from_upstream(frame).to_client, Some(bin(frame)));
                }
                // The status is read (the session ends on it), the CLOSE signal and other
                // channels are not output, and an empty message carries nothing.
                for frame in [&b"\x03{}"[..], &[255, 1], b"\x00in", b""] {
                    assert!(!c.passes_through(frame), "{frame:?}");
                }
            }
        }
        assert!(!codec(V4Base64, V5, false).passes_through(b"\x01hi"));
        assert!(!codec(Base64, V4, false).passes_through(b"\x01hi"));
    }
}
