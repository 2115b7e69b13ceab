//! Relaying an upgraded port-forward, both ways, until one side ends it.
//!
//! A relay owns both connections and copies in both directions inside one task: each socket's
//! sink is written by exactly one direction, so no socket has two writers, and nothing is
//! queued between them (a slow reader slows the other side's sender, never grows memory).

use std::time::Duration;

use axum::extract::ws::{self, WebSocket};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode};
use tokio_tungstenite::tungstenite::Message as UpstreamMessage;
use tokio_util::sync::CancellationToken;

use super::upstream::UpstreamIo;

/// Why a relay stops besides one of its sides ending.
pub(crate) struct Stops {
    /// The proxy is shutting down.
    pub shutdown: CancellationToken,
    /// A reload removed the cluster.
    pub removed: CancellationToken,
    /// How long closing each side may take.
    pub close_wait: Duration,
}

impl Stops {
    async fn stopped(&self) -> (u16, &'static str) {
        tokio::select! {
            _ = self.shutdown.cancelled() => (1001, "proxy shutting down"),
            _ = self.removed.cancelled() => (1001, "cluster removed from the proxy's configuration"),
        }
    }
}

type Upstream = WebSocketStream<UpstreamIo>;

/// Copies WebSocket messages between the client and the cluster as they are: binary stays
/// binary, text stays text (the base64 protocol's frames), a close frame is passed on with its
/// code. Used for the legacy channel protocol (the same subprotocol on both sides, so the
/// channel bytes, the port prefixes and the error channels go through untouched) and for
/// kubectl's SPDY tunnel (opaque SPDY bytes in binary messages).
pub(super) async fn websockets(client: WebSocket, upstream: UpstreamIo, max_message: usize, stops: Stops) {
    let config = WebSocketConfig::default().max_message_size(Some(max_message)).max_frame_size(Some(max_message));
    let upstream = WebSocketStream::from_raw_socket(upstream, Role::Client, Some(config)).await;
    let (mut client_sink, mut client_stream) = client.split();
    let (mut upstream_sink, mut upstream_stream) = upstream.split();
    let stopped = tokio::select! {
        _ = client_to_upstream(&mut client_stream, &mut upstream_sink) => None,
        _ = upstream_to_client(&mut upstream_stream, &mut client_sink) => None,
        why = stops.stopped() => Some(why),
    };
    let (code, reason) = stopped.unwrap_or((1000, ""));
    // The side that ended has had its close passed on; the other gets one now. Errors mean it
    // is closed already.
    let client_close = async {
        let _ = client_sink.send(ws::Message::Close(Some(ws::CloseFrame { code, reason: reason.into() }))).await;
        let _ = client_sink.close().await;
    };
    let upstream_close = async {
        let _ = upstream_sink.send(UpstreamMessage::Close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() }))).await;
        let _ = upstream_sink.close().await;
    };
    let _ = tokio::time::timeout(stops.close_wait, futures::future::join(client_close, upstream_close)).await;
}

/// Until the client closes or breaks; a close frame is passed on.
async fn client_to_upstream(from: &mut SplitStream<WebSocket>, to: &mut SplitSink<Upstream, UpstreamMessage>) {
    while let Some(Ok(message)) = from.next().await {
        let message = match message {
            ws::Message::Binary(bytes) => UpstreamMessage::Binary(bytes),
            ws::Message::Text(text) => UpstreamMessage::Text(text.as_str().into()),
            ws::Message::Close(frame) => {
                let frame = frame.map(|f| CloseFrame { code: CloseCode::from(f.code), reason: f.reason.as_str().into() });
                let _ = to.send(UpstreamMessage::Close(frame)).await;
                return;
            }
            // Each side's library answers its own pings.
            ws::Message::Ping(_) | ws::Message::Pong(_) => continue,
        };
        if to.send(message).await.is_err() {
            return;
        }
    }
}

/// Until the cluster closes (every port done) or breaks; a close frame is passed on.
async fn upstream_to_client(from: &mut SplitStream<Upstream>, to: &mut SplitSink<WebSocket, ws::Message>) {
    while let Some(Ok(message)) = from.next().await {
        let message = match message {
            UpstreamMessage::Binary(bytes) => ws::Message::Binary(bytes),
            UpstreamMessage::Text(text) => ws::Message::Text(text.as_str().into()),
            UpstreamMessage::Close(frame) => {
                let frame = frame.map(|f| ws::CloseFrame { code: u16::from(f.code), reason: f.reason.as_str().into() });
                let _ = to.send(ws::Message::Close(frame)).await;
                return;
            }
            UpstreamMessage::Ping(_) | UpstreamMessage::Pong(_) | UpstreamMessage::Frame(_) => continue,
        };
        if to.send(message).await.is_err() {
            return;
        }
    }
}

/// Copies bytes between the client's upgraded connection and the cluster's (`Upgrade:
/// SPDY/3.1`): opaque SPDY, with each side's end of input passed on as a half-close.
pub(crate) async fn bytes(client: hyper::upgrade::OnUpgrade, mut upstream: UpstreamIo, stops: Stops) {
    let mut client = match client.await {
        Ok(upgraded) => hyper_util::rt::TokioIo::new(upgraded),
        Err(error) => {
            tracing::debug!(%error, "the client's SPDY upgrade did not complete");
            return;
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
        _ = stops.stopped() => {}
    }
}
