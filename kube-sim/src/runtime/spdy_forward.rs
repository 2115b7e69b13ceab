//! `portforward` over SPDY/3.1, the way kubectl speaks it (reference
//! `exec-portforward-protocol.md` §7.2 and §8.2) and the kubelet answers: over the WebSocket
//! tunnel (`SPDY/3.1+portforward.k8s.io`, SPDY bytes in binary messages; kubectl 1.31+ tries
//! it first) or over `POST` + `Upgrade: SPDY/3.1` (its fallback).
//!
//! Per local connection kubectl opens two streams with the same `requestid`: `error` (which
//! it half-closes at once) and `data`. Every SYN_STREAM is answered with an empty SYN_REPLY at
//! once; when both streams of a request are there, a relay connects the data stream to the
//! pod's port and copies both ways, with half-close. When the pod side ends, the relay
//! half-closes both streams (DATA + FIN); a failure is written as text on the error stream
//! first, in the kubelet's words. PINGs are echoed, GOAWAY goes out on shutdown, SETTINGS,
//! WINDOW_UPDATE and HEADERS are read and ignored (spdystream does no flow control).
//!
//! Ownership: the session task owns the decoder, the encoder (whose zlib context must see
//! header blocks in wire order) and the stream table; each relay owns its pod connection; one
//! writer task owns the socket, fed by a bounded queue.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use axum::extract::{FromRequestParts, Request, WebSocketUpgrade};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Runtime;
use super::forwards::{Registration, Transport};
use super::options::pod_uid;
use super::portforward::{PortPlan, Target, resolve_port};
use crate::spdy::{self, DecodeError, Decoder, Encoder, Frame, Headers, goaway, rst};
use crate::status::ApiError;

/// The WebSocket subprotocol of the tunnel.
pub(crate) const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The SPDY subprotocol (`X-Stream-Protocol-Version`).
const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
const STREAM_PROTOCOL_HEADER: &str = "x-stream-protocol-version";

/// Frames queued for the writer before producers wait: a slow client slows the relays.
const WRITER_QUEUE: usize = 64;
/// Client DATA chunks queued per stream before the session waits for the pod side.
const POD_QUEUE: usize = 16;
/// Streams one connection may have open (pairing or forwarding); more are refused.
const MAX_STREAMS: usize = 1024;
/// Read buffer for the raw transport and for the pod side (kubectl copies in 32 KiB).
const READ_BUFFER: usize = 32 * 1024;
/// Bounds a WebSocket message, hence what one message can make the decoder buffer.
const MAX_MESSAGE: usize = spdy::MAX_DATA_LENGTH + 64 * 1024;
/// How long the goodbye (GOAWAY, close) may take with a client that stopped reading.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a `portforward` request asks for SPDY, and over what.
pub(crate) fn requested(headers: &HeaderMap) -> Option<Transport> {
    let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        return Some(Transport::Upgrade);
    }
    let tunnel = header_values(headers, header::SEC_WEBSOCKET_PROTOCOL.as_str()).any(|p| p == TUNNEL_PROTOCOL);
    (upgrade.eq_ignore_ascii_case("websocket") && tunnel).then_some(Transport::WebSocket)
}

/// Every comma-separated value of every `name` header, trimmed.
fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::trim)
}

/// The pod a connection forwards to, as it was when the connection was made: a pod replaced
/// since has other listeners, and its ports refuse.
struct PodTarget {
    /// Who asked (for `/_sim/stats`).
    user: String,
    namespace: String,
    name: String,
    pod: Arc<Value>,
}

/// Answers the upgrade (101 with the protocol, or the WebSocket handshake) and runs the
/// session on the upgraded connection.
pub(crate) async fn upgrade(runtime: Arc<Runtime>, request: Request, transport: Transport, pod: Arc<Value>, namespace: &str, name: &str, user: String) -> Result<Response, ApiError> {
    // The request may have beaten the kubelet to this pod's first event.
    runtime.ensure_pod(&pod);
    let target = PodTarget { user, namespace: namespace.to_owned(), name: name.to_owned(), pod };
    let (mut parts, _body) = request.into_parts();
    match transport {
        Transport::Channel => Err(ApiError::internal("the channel protocol is not SPDY")),
        Transport::WebSocket => {
            let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &()).await.map_err(|_| ApiError::bad_request("Upgrade request required"))?;
            let mut upgrade = upgrade.max_message_size(MAX_MESSAGE).max_frame_size(MAX_MESSAGE);
            upgrade.set_selected_protocol(HeaderValue::from_static(TUNNEL_PROTOCOL));
            Ok(upgrade.on_upgrade(move |socket| run(runtime, Connection::WebSocket(socket), target)))
        }
        Transport::Upgrade => {
            // httpstream.Handshake: no header at all is a legacy client and fine; offered
            // protocols without ours are refused.
            let offered: Vec<&str> = header_values(&parts.headers, STREAM_PROTOCOL_HEADER).filter(|p| !p.is_empty()).collect();
            if !offered.is_empty() && !offered.contains(&PORT_FORWARD_PROTOCOL) {
                return Err(ApiError::bad_request(format!("unable to upgrade: unable to negotiate protocol: client supports [{}], server supports [{PORT_FORWARD_PROTOCOL}]", offered.join(" "))));
            }
            let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
                return Err(ApiError::bad_request("Upgrade request required"));
            };
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => run(runtime, Connection::Upgraded(TokioIo::new(upgraded)), target).await,
                    Err(error) => tracing::debug!(%error, "the SPDY upgrade did not complete"),
                }
            });
            let response = Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "SPDY/3.1")
                .header(STREAM_PROTOCOL_HEADER, PORT_FORWARD_PROTOCOL)
                .body(Body::empty());
            response.map_err(|error| ApiError::internal(error.to_string()))
        }
    }
}

/// An upgraded connection. Built once per connection and split at once: boxing the large
/// variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Connection {
    WebSocket(WebSocket),
    Upgraded(TokioIo<Upgraded>),
}

impl Connection {
    fn transport(&self) -> Transport {
        match self {
            Connection::WebSocket(_) => Transport::WebSocket,
            Connection::Upgraded(_) => Transport::Upgrade,
        }
    }

    fn split(self) -> (Incoming, Sink) {
        match self {
            Connection::WebSocket(socket) => {
                let (sink, stream) = socket.split();
                (Incoming::WebSocket(stream), Sink::WebSocket(sink))
            }
            Connection::Upgraded(io) => {
                let (read, write) = tokio::io::split(io);
                (Incoming::Upgraded(read, vec![0; READ_BUFFER]), Sink::Upgraded(write))
            }
        }
    }
}

/// The read half: SPDY bytes, whatever carries them.
enum Incoming {
    WebSocket(SplitStream<WebSocket>),
    Upgraded(ReadHalf<TokioIo<Upgraded>>, Vec<u8>),
}

impl Incoming {
    /// The next bytes; `None` once the client is gone (EOF, error, close frame, or a text
    /// message, which the tunnel treats as an error).
    async fn next(&mut self) -> Option<Bytes> {
        match self {
            Incoming::WebSocket(stream) => loop {
                match stream.next().await {
                    Some(Ok(Message::Binary(bytes))) => return Some(bytes),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Text(_) | Message::Close(_)) | Err(_)) | None => return None,
                }
            },
            Incoming::Upgraded(read, buffer) => match read.read(buffer).await {
                Ok(0) | Err(_) => None,
                Ok(n) => buffer.get(..n).map(Bytes::copy_from_slice),
            },
        }
    }
}

/// The write half, owned by the writer task alone.
enum Sink {
    WebSocket(SplitSink<WebSocket, Message>),
    Upgraded(WriteHalf<TokioIo<Upgraded>>),
}

impl Sink {
    async fn send(&mut self, bytes: Bytes) -> bool {
        match self {
            Sink::WebSocket(sink) => sink.send(Message::Binary(bytes)).await.is_ok(),
            Sink::Upgraded(write) => write.write_all(&bytes).await.is_ok(),
        }
    }

    async fn close(&mut self) {
        match self {
            Sink::WebSocket(sink) => {
                let _ = sink.send(Message::Close(Some(CloseFrame { code: close_code::NORMAL, reason: "".into() }))).await;
            }
            Sink::Upgraded(write) => {
                let _ = write.shutdown().await;
            }
        }
    }
}

/// What the writer task takes.
enum Out {
    /// Encoded frames, written as they are (one WebSocket message each on the tunnel).
    Frame(Bytes),
    /// Say goodbye (a 1000 close frame, or a TCP half-close) and stop.
    Close,
}

/// The only code that writes to the socket.
async fn write_loop(mut sink: Sink, mut queue: mpsc::Receiver<Out>) {
    while let Some(out) = queue.recv().await {
        match out {
            Out::Frame(bytes) => {
                if !sink.send(bytes).await {
                    return;
                }
            }
            Out::Close => {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
                return;
            }
        }
    }
}

/// Why a session ended.
enum End {
    /// The client closed, or its connection broke.
    ClientGone,
    /// The simulator is shutting down: GOAWAY, then close.
    Shutdown,
    /// A cut hook: drop the connection without a word.
    Cut,
    /// Undecodable input: GOAWAY(PROTOCOL_ERROR), then close.
    Protocol(DecodeError),
}

/// The two streams kubectl opens per local connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamKind {
    Error,
    Data,
}

/// One `requestid`'s pair of streams.
enum PairState {
    /// One of the two has come.
    Pairing { error: Option<u32>, data: Option<(u32, u16)> },
    /// Both came; a relay carries the data stream. `to_pod` is dropped on the client's FIN.
    Forwarding { error: u32, data: u32, to_pod: Option<mpsc::Sender<Bytes>>, reset: CancellationToken },
}

struct Session {
    runtime: Arc<Runtime>,
    target: PodTarget,
    transport: Transport,
    encoder: Encoder,
    out: mpsc::Sender<Out>,
    stop: CancellationToken,
    last_stream_id: u32,
    going_away: bool,
    /// Open stream → its request id.
    streams: HashMap<u32, String>,
    pairs: HashMap<String, PairState>,
    relays: JoinSet<String>,
}

/// Runs one SPDY connection until the client goes, a cut, or shutdown.
async fn run(runtime: Arc<Runtime>, connection: Connection, target: PodTarget) {
    let transport = connection.transport();
    let registration = runtime.forwards.register_connection(&target.user, &target.namespace, &target.name, transport);
    let (mut incoming, sink) = connection.split();
    let (out, queue) = mpsc::channel(WRITER_QUEUE);
    let mut writer = tokio::spawn(write_loop(sink, queue));
    let stop = runtime.stop.clone();
    let mut session =
        Session { runtime, target, transport, encoder: Encoder::new(), out, stop, last_stream_id: 0, going_away: false, streams: HashMap::new(), pairs: HashMap::new(), relays: JoinSet::new() };
    let end = session.serve(&mut incoming, &registration).await;
    // Whatever the end, the pod connections go with the session.
    session.relays.abort_all();
    let goodbye = match end {
        End::Cut => {
            writer.abort();
            return;
        }
        End::ClientGone => None,
        End::Shutdown => Some(goaway::OK),
        End::Protocol(error) => {
            tracing::debug!(%error, "a SPDY port-forward client sent bad input");
            Some(goaway::PROTOCOL_ERROR)
        }
    };
    let out = session.out.clone();
    let last_good_stream_id = session.last_stream_id;
    drop(session);
    let farewell = async {
        if let Some(status) = goodbye
            && let Ok(bytes) = spdy::plain_to_bytes(&Frame::GoAway { last_good_stream_id, status })
        {
            let _ = out.send(Out::Frame(bytes)).await;
        }
        let _ = out.send(Out::Close).await;
        drop(out);
        let _ = (&mut writer).await;
    };
    if tokio::time::timeout(CLOSE_TIMEOUT, farewell).await.is_err() {
        // Stuck on a client that stopped reading: the socket goes without the goodbye.
        writer.abort();
    }
}

/// What woke the session.
enum Event {
    Bytes(Option<Bytes>),
    RelayDone(Result<String, JoinError>),
    Shutdown,
    Cut,
}

impl Session {
    async fn serve(&mut self, incoming: &mut Incoming, registration: &Registration) -> End {
        let mut decoder = Decoder::new();
        loop {
            let event = tokio::select! {
                _ = self.stop.cancelled() => Event::Shutdown,
                _ = registration.cut.cancelled() => Event::Cut,
                Some(done) = self.relays.join_next() => Event::RelayDone(done),
                bytes = incoming.next() => Event::Bytes(bytes),
            };
            match event {
                Event::Shutdown => return End::Shutdown,
                Event::Cut => return End::Cut,
                Event::RelayDone(done) => {
                    if let Ok(request) = done {
                        self.forget(&request);
                    }
                }
                Event::Bytes(None) => return End::ClientGone,
                Event::Bytes(Some(bytes)) => {
                    decoder.extend(&bytes);
                    loop {
                        match decoder.next_frame() {
                            Ok(Some(frame)) => {
                                if !self.handle(frame).await {
                                    return End::ClientGone;
                                }
                            }
                            Ok(None) => break,
                            Err(error) => return End::Protocol(error),
                        }
                    }
                }
            }
        }
    }

    /// Queues encoded bytes for the writer; false when the writer is gone or we are stopping.
    async fn send(&self, bytes: Bytes) -> bool {
        tokio::select! {
            sent = self.out.send(Out::Frame(bytes)) => sent.is_ok(),
            _ = self.stop.cancelled() => false,
        }
    }

    async fn send_plain(&self, frame: &Frame) -> bool {
        match spdy::plain_to_bytes(frame) {
            Ok(bytes) => self.send(bytes).await,
            Err(_) => true,
        }
    }

    async fn reset(&self, stream_id: u32, status: u32) -> bool {
        self.send_plain(&Frame::RstStream { stream_id, status }).await
    }

    /// Handles one frame; false when the client is gone.
    async fn handle(&mut self, frame: Frame) -> bool {
        match frame {
            Frame::SynStream { stream_id, headers, .. } => self.open(stream_id, &headers).await,
            Frame::Data { stream_id, fin, data } => self.data(stream_id, fin, data).await,
            Frame::RstStream { stream_id, .. } => {
                self.client_reset(stream_id);
                true
            }
            // Only the peer's pings (odd ids from a client) are answered; we send none.
            Frame::Ping { id } if id % 2 == 1 => self.send_plain(&Frame::Ping { id }).await,
            Frame::GoAway { .. } => {
                self.going_away = true;
                true
            }
            Frame::Ping { .. } | Frame::SynReply { .. } | Frame::Settings { .. } | Frame::Headers { .. } | Frame::WindowUpdate { .. } | Frame::Unknown { .. } => true,
        }
    }

    /// SYN_STREAM: validate as the kubelet does, reply at once, pair by `requestid`.
    async fn open(&mut self, stream_id: u32, headers: &Headers) -> bool {
        if stream_id == 0 || stream_id.is_multiple_of(2) || stream_id <= self.last_stream_id {
            return self.reset(stream_id, rst::PROTOCOL_ERROR).await;
        }
        self.last_stream_id = stream_id;
        if self.going_away || self.streams.len() >= MAX_STREAMS {
            return self.reset(stream_id, rst::REFUSED_STREAM).await;
        }
        if self.runtime.forwards.take_withheld() {
            // A hook: the stream is never answered, and what comes on it is ignored.
            return true;
        }
        let (kind, port) = match stream_kind(headers) {
            Ok(valid) => valid,
            Err(reason) => {
                // The kubelet rejects the stream (spdystream's Reset is a CANCEL).
                tracing::debug!(stream_id, reason, "port-forward stream rejected");
                return self.reset(stream_id, rst::CANCEL).await;
            }
        };
        let reply = Frame::SynReply { stream_id, fin: false, headers: Headers::default() };
        match self.encoder.encode_to_bytes(&reply) {
            Ok(bytes) => {
                if !self.send(bytes).await {
                    return false;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot encode a SYN_REPLY");
                return self.reset(stream_id, rst::INTERNAL_ERROR).await;
            }
        }
        // Old clients send no request id: the kubelet pairs error stream n with data stream n+2.
        let request = match headers.get("requestid").filter(|r| !r.is_empty()) {
            Some(id) => id.to_owned(),
            None if kind == StreamKind::Data => stream_id.saturating_sub(2).to_string(),
            None => stream_id.to_string(),
        };
        let pair = self.pairs.entry(request.clone());
        let both = match (pair, kind) {
            (Entry::Vacant(vacant), StreamKind::Error) => {
                vacant.insert(PairState::Pairing { error: Some(stream_id), data: None });
                None
            }
            (Entry::Vacant(vacant), StreamKind::Data) => {
                vacant.insert(PairState::Pairing { error: None, data: Some((stream_id, port)) });
                None
            }
            (Entry::Occupied(mut occupied), kind) => match (occupied.get_mut(), kind) {
                (PairState::Pairing { error: None, data: Some((data, port)) }, StreamKind::Error) => Some((stream_id, *data, *port)),
                (PairState::Pairing { error: Some(error), data: None }, StreamKind::Data) => Some((*error, stream_id, port)),
                // A second stream of a kind the request already has.
                _ => return self.reset(stream_id, rst::PROTOCOL_ERROR).await,
            },
        };
        self.streams.insert(stream_id, request.clone());
        if let Some((error, data, port)) = both {
            self.start_relay(request, error, data, port);
        }
        true
    }

    fn start_relay(&mut self, request: String, error: u32, data: u32, port: u16) {
        let (to_pod, from_client) = mpsc::channel(POD_QUEUE);
        let reset = CancellationToken::new();
        let target = &self.target;
        let plan = resolve_port(&self.runtime, &target.pod, &target.namespace, &target.name, port);
        let relay = Relay {
            plan,
            failure_prefix: format!("error forwarding port {port} to pod {}, uid {}", target.name, pod_uid(&target.pod)),
            error_stream: error,
            data_stream: data,
            out: self.out.clone(),
            from_client,
            reset: reset.clone(),
            registration: self.runtime.forwards.register_stream(&target.user, &target.namespace, &target.name, self.transport, port, data),
            idle_timeout: self.runtime.forwards.idle_timeout(),
        };
        self.pairs.insert(request.clone(), PairState::Forwarding { error, data, to_pod: Some(to_pod), reset });
        self.relays.spawn(async move {
            relay.run().await;
            request
        });
    }

    /// DATA from the client: to the pod on a forwarding data stream; the FIN half-closes the
    /// pod connection. Anything else (the error stream's FIN, a stream still pairing, a stream
    /// already gone) is dropped.
    async fn data(&mut self, stream_id: u32, fin: bool, data: Bytes) -> bool {
        let Some(request) = self.streams.get(&stream_id) else { return true };
        let Some(PairState::Forwarding { data: data_stream, to_pod, .. }) = self.pairs.get_mut(request) else { return true };
        if *data_stream != stream_id {
            return true;
        }
        if let Some(sink) = to_pod.as_ref()
            && !data.is_empty()
        {
            // Backpressure: a pod that does not read slows this whole connection, as a
            // kubelet's does. A relay that is done just drops what comes.
            tokio::select! {
                _ = sink.send(data) => {}
                _ = self.stop.cancelled() => return false,
            }
        }
        if fin {
            *to_pod = None;
        }
        true
    }

    /// RST_STREAM from the client: the pair ends, and its pod connection with it.
    fn client_reset(&mut self, stream_id: u32) {
        let Some(request) = self.streams.remove(&stream_id) else { return };
        match self.pairs.get_mut(&request) {
            Some(PairState::Forwarding { reset, .. }) => reset.cancel(),
            Some(PairState::Pairing { error, data }) => {
                if *error == Some(stream_id) {
                    *error = None;
                }
                if data.is_some_and(|(d, _)| d == stream_id) {
                    *data = None;
                }
                if error.is_none() && data.is_none() {
                    self.pairs.remove(&request);
                }
            }
            None => {}
        }
    }

    /// A relay finished: its streams are closed.
    fn forget(&mut self, request: &str) {
        if let Some(PairState::Forwarding { error, data, .. }) = self.pairs.remove(request) {
            self.streams.remove(&error);
            self.streams.remove(&data);
        }
    }
}

/// The kubelet's checks of a new stream's headers: a `port` of 1..=65535, and a `streamtype`
/// of `error` or `data`.
fn stream_kind(headers: &Headers) -> Result<(StreamKind, u16), String> {
    let port = headers.get("port").filter(|p| !p.is_empty()).ok_or("\"port\" header is required")?;
    let port: u16 = port.parse().map_err(|_| format!("unable to parse {port:?} as a port"))?;
    if port == 0 {
        return Err("port must be > 0".to_owned());
    }
    match headers.get("streamtype") {
        Some("error") => Ok((StreamKind::Error, port)),
        Some("data") => Ok((StreamKind::Data, port)),
        Some(other) => Err(format!("invalid stream type {other:?}")),
        None => Err("\"streamtype\" header is required".to_owned()),
    }
}

/// One forwarded local connection: the data stream to one pod connection.
struct Relay {
    plan: PortPlan,
    failure_prefix: String,
    error_stream: u32,
    data_stream: u32,
    out: mpsc::Sender<Out>,
    from_client: mpsc::Receiver<Bytes>,
    /// The client reset a stream of the pair.
    reset: CancellationToken,
    registration: Registration,
    idle_timeout: watch::Receiver<Option<Duration>>,
}

/// How a relay ended.
enum RelayEnd {
    /// The pod side ended: half-close both streams.
    Done,
    /// Nothing could be reached: the message on the error stream, then half-close both.
    Failed(String),
    /// A cut or the idle timeout: RST_STREAM both.
    Cut,
    /// The client reset the pair: nothing more to say.
    Reset,
}

impl Relay {
    async fn run(mut self) {
        let end = self.forward().await;
        let frames: Vec<Frame> = match end {
            RelayEnd::Reset => Vec::new(),
            RelayEnd::Cut => [self.data_stream, self.error_stream].into_iter().map(|stream_id| Frame::RstStream { stream_id, status: rst::CANCEL }).collect(),
            RelayEnd::Done | RelayEnd::Failed(_) => {
                let mut frames = Vec::new();
                if let RelayEnd::Failed(message) = end {
                    frames.push(Frame::Data { stream_id: self.error_stream, fin: false, data: Bytes::from(message) });
                }
                // The kubelet closes the error stream, then the data stream.
                frames.push(Frame::Data { stream_id: self.error_stream, fin: true, data: Bytes::new() });
                frames.push(Frame::Data { stream_id: self.data_stream, fin: true, data: Bytes::new() });
                frames
            }
        };
        for frame in frames {
            let Ok(bytes) = spdy::plain_to_bytes(&frame) else { continue };
            if self.out.send(Out::Frame(bytes)).await.is_err() {
                return;
            }
        }
    }

    async fn forward(&mut self) -> RelayEnd {
        let (address, lifetime) = match &self.plan.target {
            Target::Nothing => return RelayEnd::Failed(self.plan.refused.clone()),
            Target::Connect { address, lifetime } => (address.clone(), lifetime.clone()),
        };
        let connected = tokio::select! {
            connected = TcpStream::connect(&address) => connected,
            _ = self.registration.cut.cancelled() => return RelayEnd::Cut,
            _ = self.reset.cancelled() => return RelayEnd::Reset,
        };
        let stream = match connected {
            Ok(stream) => stream,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => return RelayEnd::Failed(self.plan.refused.clone()),
            Err(error) => return RelayEnd::Failed(format!("{}: failed to connect to {address}: {error}", self.failure_prefix)),
        };
        let (mut pod_read, mut pod_write) = stream.into_split();
        let start = Instant::now();
        // Milliseconds since `start` of the last byte either way, for the idle timeout.
        let last_activity = AtomicU64::new(0);
        let touch = || last_activity.store(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
        let data_stream = self.data_stream;
        let out = &self.out;
        let to_client = async {
            let mut buffer = vec![0u8; READ_BUFFER];
            loop {
                let n = match pod_read.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                touch();
                let Some(chunk) = buffer.get(..n) else { return };
                let Ok(frame) = spdy::data_frame(data_stream, false, chunk) else { return };
                if out.send(Out::Frame(frame)).await.is_err() {
                    return;
                }
            }
        };
        let from_client = &mut self.from_client;
        let to_pod = async {
            while let Some(bytes) = from_client.recv().await {
                touch();
                if pod_write.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            // The client's FIN: half-close, and let the pod side finish.
            let _ = pod_write.shutdown().await;
            std::future::pending::<()>().await
        };
        let container_gone = async {
            match lifetime {
                Some(token) => token.cancelled_owned().await,
                None => std::future::pending().await,
            }
        };
        let idle = idle_cut(self.idle_timeout.clone(), start, &last_activity);
        tokio::select! {
            _ = to_client => RelayEnd::Done,
            _ = to_pod => RelayEnd::Done,
            _ = container_gone => RelayEnd::Done,
            _ = idle => RelayEnd::Cut,
            _ = self.registration.cut.cancelled() => RelayEnd::Cut,
            _ = self.reset.cancelled() => RelayEnd::Reset,
        }
    }
}

/// Returns once no byte has moved for the idle timeout in force (re-read when it changes).
async fn idle_cut(mut timeout: watch::Receiver<Option<Duration>>, start: Instant, last_activity: &AtomicU64) {
    loop {
        let limit = *timeout.borrow_and_update();
        let deadline = limit.map(|limit| start + Duration::from_millis(last_activity.load(Ordering::Relaxed)) + limit);
        match deadline {
            Some(deadline) if Instant::now() >= deadline => return,
            Some(deadline) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => {}
                    changed = timeout.changed() => if changed.is_err() { std::future::pending::<()>().await },
                }
            }
            None => {
                if timeout.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn streams_are_checked_like_the_kubelet_does() {
        assert_eq!(stream_kind(&headers(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")])), Ok((StreamKind::Error, 80)));
        assert_eq!(stream_kind(&headers(&[("StreamType", "data"), ("Port", "8000")])), Ok((StreamKind::Data, 8000)));
        assert!(stream_kind(&headers(&[("streamtype", "data")])).unwrap_err().contains("\"port\" header is required"));
        assert!(stream_kind(&headers(&[("streamtype", "data"), ("port", "0")])).is_err());
        assert!(stream_kind(&headers(&[("streamtype", "data"), ("port", "70000")])).is_err());
        assert!(stream_kind(&headers(&[("streamtype", "stdin"), ("port", "80")])).unwrap_err().contains("invalid stream type"));
        assert!(stream_kind(&headers(&[("port", "80")])).is_err());
    }

    #[test]
    fn requests_for_spdy_are_recognized() {
        let mut h = HeaderMap::new();
        assert_eq!(requested(&h), None);
        h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
        assert_eq!(requested(&h), Some(Transport::Upgrade));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("v4.channel.k8s.io"));
        assert_eq!(requested(&h), None, "the v4 channel protocol stays with the channel session");
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("v4.channel.k8s.io, SPDY/3.1+portforward.k8s.io"));
        assert_eq!(requested(&h), Some(Transport::WebSocket));
    }

    #[tokio::test]
    async fn idle_cut_follows_activity_and_the_setting() {
        let (setting, timeout) = watch::channel(None);
        let start = Instant::now();
        // The last byte moved 300 ms after the start; the limit is 50 ms, set after the wait began.
        let last = AtomicU64::new(300);
        let idle = idle_cut(timeout, start, &last);
        setting.send_replace(Some(Duration::from_millis(50)));
        tokio::time::timeout(Duration::from_secs(10), idle).await.expect("cut once idle");
        assert!(start.elapsed() >= Duration::from_millis(350), "not before the last activity plus the limit");
    }
}
