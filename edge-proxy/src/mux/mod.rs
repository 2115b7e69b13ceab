//! `GET /mux`: the multiplexer socket of `docs/PROTOCOL.md` §1. Everything that can refuse a
//! connection (origin and token through [`crate::auth::admit`], subprotocol) is checked before the upgrade, so a browser gets an HTTP
//! status instead of a socket that dies.

mod deflate;
pub use deflate::LEVEL as DEFLATE_LEVEL;
pub mod encode;
pub mod outbox;
mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use kubemux_protocol::frames::{SUBPROTOCOL, SUBPROTOCOL_DEFLATE};

use crate::AppState;
use crate::auth::{Admitted, Refusal};
use crate::identity::Identity;

/// The token subprotocol prefix browsers use (the API server's convention).
pub const TOKEN_PROTOCOL_PREFIX: &str = "base64url.bearer.authorization.k8s.io.";

/// The first read buffer of a `/mux` connection. tungstenite's default (128 KiB) is zero-filled
/// on the first read and so resident for every idle connection; clients send small frames
/// (watch, ping, auth), and the buffer grows on demand for a larger one, up to
/// `mux.maxMessageBytes`.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// tungstenite's `write_buffer_size` for `/mux` connections: frames fed to the socket gather in
/// its write buffer until this many bytes (then it writes) or the writer's flush. Larger than the
/// writer's batch, so one batch is one flush; the buffer is allocated as it fills, not up front.
pub(crate) const WRITE_BUFFER_BYTES: usize = 128 * 1024;

/// Limits and timers of `/mux` connections (`docs/PROTOCOL.md` §5–6).
#[derive(Debug, Clone, PartialEq)]
pub struct MuxSettings {
    /// Subscriptions per connection.
    pub max_subscriptions: usize,
    /// Largest client message; larger ones close the connection with 1009.
    pub max_message_bytes: usize,
    /// Queued outbound bytes per connection before the heaviest subscriptions are reset.
    pub max_queued_bytes: usize,
    /// WebSocket ping interval.
    pub ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is dropped.
    pub dead_after: Duration,
    /// Whether a client that offers `kubemux.v1+deflate` gets it (`deflate`, `--deflate`):
    /// compressed frames cost the proxy CPU and a compressor per connection.
    pub deflate: bool,
    /// A `kubemux.v1+deflate` connection that has sent nothing for this long ends its stream and
    /// drops its compressor (`deflateIdleRelease`): some 300 KiB an idle connection would hold.
    pub deflate_idle_release: Duration,
    /// A test hook: a `ping` message whose `data` is this panics the connection's session, to
    /// prove the panic is contained; `None` but in tests.
    #[doc(hidden)]
    pub inject_panic: Option<String>,
}

impl Default for MuxSettings {
    fn default() -> Self {
        MuxSettings {
            max_subscriptions: 512,
            max_message_bytes: 64 * 1024,
            max_queued_bytes: 16 * 1024 * 1024,
            ping_interval: Duration::from_secs(30),
            dead_after: Duration::from_secs(90),
            deflate: true,
            deflate_idle_release: Duration::from_secs(30),
            inject_panic: None,
        }
    }
}

/// The offered subprotocols, split (port-forward negotiates from the same list).
pub(crate) fn offered_protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

/// The `/mux` handler.
pub async fn handler(State(app): State<Arc<AppState>>, Admitted(identity): Admitted, headers: HeaderMap, upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>) -> Response {
    let settings = app.settings();
    let offers = |name: &str| offered_protocols(&headers).any(|p| p == name);
    let deflate = settings.mux.deflate && offers(SUBPROTOCOL_DEFLATE);
    if !deflate && !offers(SUBPROTOCOL) {
        return Refusal { code: 400, reason: "BadRequest", message: format!("the client must offer the WebSocket subprotocol {SUBPROTOCOL}") }.into_response();
    }
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let token = match identity {
        Identity::Token(token) => Some(token.to_string()),
        Identity::Proxy => None,
    };
    upgrade
        .protocols([if deflate { SUBPROTOCOL_DEFLATE } else { SUBPROTOCOL }])
        .max_message_size(settings.mux.max_message_bytes)
        .max_frame_size(settings.mux.max_message_bytes)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| {
            // Tracked, so that shutdown waits for the session's close frame to go out.
            let sessions = app.sessions.clone();
            sessions.track_future(session::run(socket, app, token, deflate))
        })
}
