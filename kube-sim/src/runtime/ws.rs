//! The WebSocket side shared by every session: the one task that writes to a socket (single
//! writer invariant), subprotocol negotiation, and the orderly end of a connection.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use axum::http::HeaderValue;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use kubemux_protocol::channel::{ChannelProtocol, WsPayload};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Messages queued for the writer before senders wait: a slow client slows the producers.
pub(crate) const WRITER_QUEUE: usize = 64;
/// How long the writer may take to get a final close frame out to a client that stopped reading.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long to wait for the client to answer our close frame before dropping the connection.
const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// The prefix of the subprotocol that smuggles a bearer token; never negotiated, never echoed.
const TOKEN_PROTOCOL_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

/// What the writer task sends.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// One channel message.
    Frame(WsPayload),
    /// A close frame with code 1000; the writer stops after it.
    Close,
}

/// The outcome of negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Negotiated {
    /// The client offered this protocol first among those we speak; echo it.
    Protocol(ChannelProtocol),
    /// The client offered no protocol: Kubernetes' CRI server then speaks the unnamed
    /// binary protocol, which frames like this one, without echoing anything.
    Unnamed(ChannelProtocol),
}

impl Negotiated {
    /// The framing to use.
    pub fn protocol(self) -> ChannelProtocol {
        match self {
            Negotiated::Protocol(p) | Negotiated::Unnamed(p) => p,
        }
    }

    /// The `Sec-WebSocket-Protocol` to answer with.
    pub fn header(self) -> Option<HeaderValue> {
        match self {
            Negotiated::Protocol(p) => Some(HeaderValue::from_static(p.name())),
            Negotiated::Unnamed(_) => None,
        }
    }
}

/// Picks the subprotocol the way Kubernetes does: the client's order wins. `offered` is the
/// list axum parsed (one entry per comma-separated name). Errors carry the message for a 400.
pub(crate) fn negotiate<'a>(
    offered: impl IntoIterator<Item = &'a str>,
    supported: &[ChannelProtocol],
    unnamed: ChannelProtocol,
) -> Result<Negotiated, String> {
    let offered: Vec<&str> =
        offered.into_iter().map(str::trim).filter(|p| !p.is_empty() && !p.starts_with(TOKEN_PROTOCOL_PREFIX)).collect();
    if offered.is_empty() {
        return Ok(Negotiated::Unnamed(unnamed));
    }
    ChannelProtocol::negotiate(offered.iter().copied(), supported).map(Negotiated::Protocol).ok_or_else(|| {
        let ours: Vec<&str> = supported.iter().map(|p| p.name()).collect();
        format!(
            "unable to upgrade connection: requested protocol(s) are not supported: [{}]; supports [{}]",
            offered.join(" "),
            ours.join(" ")
        )
    })
}

fn to_message(payload: WsPayload) -> Message {
    match payload {
        WsPayload::Binary(bytes) => Message::binary(bytes),
        WsPayload::Text(text) => Message::text(text),
    }
}

/// A socket split into the writer task (fed through `out`) and the read half.
pub(crate) struct Connection {
    /// Queue to the writer task.
    pub out: mpsc::Sender<Outgoing>,
    /// The read half.
    pub incoming: SplitStream<WebSocket>,
    writer: JoinHandle<()>,
}

impl Connection {
    /// Splits `socket` and starts its writer task.
    pub fn start(socket: WebSocket, stop: CancellationToken) -> Connection {
        let (sink, incoming) = socket.split();
        let (out, queue) = mpsc::channel(WRITER_QUEUE);
        let writer = tokio::spawn(write_loop(sink, queue, stop));
        Connection { out, incoming, writer }
    }

    /// Queues one frame; false when the writer is gone (the client left).
    pub async fn send(&self, payload: WsPayload) -> bool {
        self.out.send(Outgoing::Frame(payload)).await.is_ok()
    }

    /// The server ends the conversation: queue a 1000 close after everything already queued,
    /// let the writer flush it, then give the client a moment to answer before dropping TCP.
    pub async fn close(mut self) {
        let _ = self.out.send(Outgoing::Close).await;
        drop(self.out);
        let _ = (&mut self.writer).await;
        drain(&mut self.incoming).await;
    }

    /// The client is gone or closing (or we are shutting down): stop writing, and keep reading
    /// until the connection ends, which is when the WebSocket library sends its answer to the
    /// client's close frame.
    pub async fn abandon(mut self) {
        drop(self.out);
        if tokio::time::timeout(CLOSE_TIMEOUT, &mut self.writer).await.is_err() {
            // Stuck on a client that stopped reading: the socket goes without it.
            self.writer.abort();
        }
        drain(&mut self.incoming).await;
    }
}

/// Reads until the connection ends (bounded in time), discarding what arrives.
async fn drain(incoming: &mut SplitStream<WebSocket>) {
    let _ = tokio::time::timeout(CLOSE_REPLY_TIMEOUT, async { while let Some(Ok(_)) = incoming.next().await {} }).await;
}

/// The only code that writes to the socket.
async fn write_loop(mut sink: SplitSink<WebSocket, Message>, mut queue: mpsc::Receiver<Outgoing>, stop: CancellationToken) {
    loop {
        let next = tokio::select! {
            biased;
            next = queue.recv() => next,
            _ = stop.cancelled() => {
                // The simulator is going away: say so, but never wait long for a stalled client.
                let frame = CloseFrame { code: close_code::AWAY, reason: "kube-sim shutting down".into() };
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
                return;
            }
        };
        let sent = match next {
            Some(Outgoing::Frame(payload)) => {
                tokio::select! {
                    r = sink.send(to_message(payload)) => r,
                    _ = stop.cancelled() => return,
                }
            }
            Some(Outgoing::Close) => {
                let frame = CloseFrame { code: close_code::NORMAL, reason: "".into() };
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(Some(frame)))).await;
                return;
            }
            None => return,
        };
        if sent.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChannelProtocol::*;

    #[test]
    fn client_order_wins_and_tokens_are_ignored() {
        let token = "base64url.bearer.authorization.k8s.io.c2VjcmV0";
        assert_eq!(
            negotiate([token, "v4.channel.k8s.io", "v5.channel.k8s.io"], &ChannelProtocol::ALL, V1),
            Ok(Negotiated::Protocol(V4))
        );
        assert_eq!(negotiate(["v5.channel.k8s.io"], &ChannelProtocol::ALL, V1).unwrap().header().unwrap(), "v5.channel.k8s.io");
        // kube offers v5 then v4 in one header: axum has already split it.
        assert_eq!(negotiate(["v5.channel.k8s.io", "v4.channel.k8s.io"], &ChannelProtocol::ALL, V1), Ok(Negotiated::Protocol(V5)));
        assert_eq!(negotiate([], &ChannelProtocol::ALL, V1), Ok(Negotiated::Unnamed(V1)));
        assert_eq!(negotiate([token], &ChannelProtocol::PORT_FORWARD, V4).unwrap().header(), None);
        let err = negotiate([token, "v5.channel.k8s.io", "SPDY/3.1+portforward.k8s.io"], &ChannelProtocol::PORT_FORWARD, V4)
            .unwrap_err();
        assert!(err.contains("[v5.channel.k8s.io SPDY/3.1+portforward.k8s.io]"), "{err}");
        assert!(!err.contains("c2VjcmV0"), "the token must never be echoed: {err}");
    }
}
