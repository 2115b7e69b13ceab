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
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(Refused {
            status: response.status().as_u16(),
            body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        }),
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
