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

/// Opens `mux_url` offering `kubemux.v1+deflate` before `kubemux.v1`, as the npm package does;
/// also the subprotocol the proxy selected.
pub async fn mux_connect_offering_deflate(mux_url: &str) -> (MuxSocket, String) {
    use kubemux_protocol::frames::{SUBPROTOCOL, SUBPROTOCOL_DEFLATE};
    let mut request = mux_url.into_client_request().expect("a WebSocket request");
    request.headers_mut().insert("sec-websocket-protocol", format!("{SUBPROTOCOL_DEFLATE}, {SUBPROTOCOL}").parse().expect("a header value"));
    let (ws, response) = within("the /mux handshake", tokio_tungstenite::connect_async(request)).await.expect("the proxy accepts /mux");
    let selected = response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (ws, selected)
}

/// A `kubemux.v1+deflate` connection's frames as a client reads them (`docs/PROTOCOL.md` §1.1):
/// each binary message's header byte, then its part of the raw DEFLATE stream, whose text is
/// the frames, each followed by U+001E.
#[derive(Default)]
pub struct Inflater {
    stream: Option<flate2::Decompress>,
    /// Whether the current stream has ended with its final block.
    ended: bool,
    text: Vec<u8>,
    /// Messages read.
    pub messages: usize,
    /// How many of them started a new stream.
    pub new_streams: usize,
    /// Message bytes read, as sent (compressed, without the WebSocket header).
    pub bytes: usize,
    /// The same with each message's WebSocket header (a server's, unmasked): the bytes on the wire.
    pub wire_bytes: usize,
}

impl Inflater {
    /// The frames one message completes, in order.
    pub fn message(&mut self, data: &[u8]) -> anyhow::Result<Vec<String>> {
        use flate2::{Decompress, FlushDecompress, Status};
        use kubemux_protocol::frames::{DEFLATE_CONTINUE, DEFLATE_NEW_STREAM, FRAME_SEPARATOR};
        self.messages += 1;
        self.bytes += data.len();
        self.wire_bytes += data.len()
            + match data.len() {
                0..=125 => 2,
                126..=65_535 => 4,
                _ => 10,
            };
        let Some((&header, mut input)) = data.split_first() else { anyhow::bail!("an empty kubemux.v1+deflate message") };
        match header {
            DEFLATE_NEW_STREAM => {
                self.stream = Some(Decompress::new(false));
                self.ended = false;
                self.new_streams += 1;
            }
            DEFLATE_CONTINUE if self.stream.is_some() && !self.ended => {}
            DEFLATE_CONTINUE => anyhow::bail!("a message continues no open stream"),
            other => anyhow::bail!("an unknown message header byte {other}"),
        }
        let stream = self.stream.as_mut().expect("set above");
        loop {
            self.text.reserve(64 * 1024);
            let before = stream.total_in();
            let status = stream.decompress_vec(input, &mut self.text, FlushDecompress::Sync)?;
            input = &input[usize::try_from(stream.total_in() - before)?..];
            if status == Status::StreamEnd {
                self.ended = true;
                anyhow::ensure!(input.is_empty(), "bytes after the stream's final block");
                break;
            }
            if input.is_empty() && self.text.len() < self.text.capacity() {
                break;
            }
        }
        let Some(last) = self.text.iter().rposition(|&b| b == FRAME_SEPARATOR) else { return Ok(Vec::new()) };
        let rest = self.text.split_off(last + 1);
        let whole = std::mem::replace(&mut self.text, rest);
        let frames = whole[..whole.len() - 1].split(|&b| b == FRAME_SEPARATOR).map(|frame| String::from_utf8(frame.to_vec())).collect::<Result<_, _>>()?;
        Ok(frames)
    }
}

/// A `kubemux.v1+deflate` connection read frame by frame.
pub struct DeflatedMux {
    /// The socket, to send on.
    pub ws: MuxSocket,
    /// What has been read, and its counts.
    pub inflater: Inflater,
    pending: std::collections::VecDeque<serde_json::Value>,
}

impl DeflatedMux {
    /// Reads `ws`, which selected `kubemux.v1+deflate`.
    pub fn new(ws: MuxSocket) -> DeflatedMux {
        DeflatedMux { ws, inflater: Inflater::default(), pending: Default::default() }
    }

    /// The next frame, within 10 s; a text message is a failure (the proxy sends none).
    pub async fn next(&mut self) -> serde_json::Value {
        use futures::StreamExt as _;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return frame;
            }
            let message = tokio::time::timeout(std::time::Duration::from_secs(10), self.ws.next()).await.expect("a message within 10 s").expect("the socket is open").expect("a message");
            match message {
                Message::Binary(data) => {
                    for frame in self.inflater.message(&data).expect("a well-formed kubemux.v1+deflate message") {
                        self.pending.push_back(serde_json::from_str(&frame).expect("frames are JSON"));
                    }
                }
                Message::Text(text) => panic!("a text message on a kubemux.v1+deflate connection: {text}"),
                _ => {}
            }
        }
    }

    /// Frames up to and including the first whose `op` is one of `ops`.
    pub async fn until(&mut self, ops: &[&str]) -> Vec<serde_json::Value> {
        let mut frames = Vec::new();
        loop {
            let frame = self.next().await;
            let done = ops.iter().any(|op| frame["op"] == *op);
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }
}
