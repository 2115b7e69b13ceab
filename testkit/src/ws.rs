//! WebSockets over a TCP stream the test owns, so that a test can drop the connection as
//! abruptly as a crashed tab (`SO_LINGER` 0, no close frame).

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::wait::within;

/// A WebSocket over a TCP stream the test owns.
pub type Ws = WebSocketStream<TcpStream>;

/// A refused or failed handshake: the HTTP status and body.
#[derive(Debug)]
pub struct Refused {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
}

/// Opens a WebSocket to `addr` + `path`, offering `protocols` (a header value, possibly empty)
/// and sending `headers`. Returns the socket and the protocol the server chose.
pub async fn connect(addr: SocketAddr, path: &str, protocols: &str, headers: &[(&str, &str)]) -> Result<(Ws, Option<String>), Refused> {
    let mut request = format!("ws://{addr}{path}").into_client_request().expect("a WebSocket request");
    if !protocols.is_empty() {
        request.headers_mut().insert("sec-websocket-protocol", protocols.parse().expect("a header value"));
    }
    for (name, value) in headers {
        request.headers_mut().insert(http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"), value.parse().expect("a header value"));
    }
    let tcp = within("TCP connect", TcpStream::connect(addr)).await.expect("the server accepts connections");
    match within("the WebSocket handshake", tokio_tungstenite::client_async(request, tcp)).await {
        Ok((ws, response)) => {
            let chosen = response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).map(str::to_owned);
            Ok((ws, chosen))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(Refused { status: response.status().as_u16(), body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned() })
        }
        Err(other) => panic!("WebSocket handshake failed: {other}"),
    }
}

/// Whether `pid` is a live process on this host (kube-sim's processes are real): it exists and
/// is not a zombie waiting to be reaped.
pub fn process_running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself contain spaces.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// A `/mux` connection as a raw-socket client holds it: frames as JSON values.
pub type MuxSocket = WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Opens `mux_url` (`ws://…/mux`) offering `kubemux.v1`.
pub async fn mux_connect(mux_url: &str) -> MuxSocket {
    let mut request = mux_url.into_client_request().expect("a WebSocket request");
    request.headers_mut().insert("sec-websocket-protocol", kubemux_protocol::frames::SUBPROTOCOL.parse().expect("a header value"));
    within("the /mux handshake", tokio_tungstenite::connect_async(request)).await.expect("the proxy accepts /mux").0
}

/// Sends `frame` as a text frame.
pub async fn mux_send(ws: &mut MuxSocket, frame: serde_json::Value) {
    use futures::SinkExt as _;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(frame.to_string().into())).await.expect("the socket is open");
}

/// The next text frame, within 10 s.
pub async fn mux_next(ws: &mut MuxSocket) -> serde_json::Value {
    use futures::StreamExt as _;
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await.expect("a frame within 10 s").expect("the socket is open").expect("a frame");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).expect("frames are JSON");
        }
    }
}

/// Frames up to and including the first whose `op` is one of `ops`.
pub async fn mux_until(ws: &mut MuxSocket, ops: &[&str]) -> Vec<serde_json::Value> {
    let mut frames = Vec::new();
    loop {
        let frame = mux_next(ws).await;
        let done = ops.iter().any(|op| frame["op"] == *op);
        frames.push(frame);
        if done {
            return frames;
        }
    }
}
