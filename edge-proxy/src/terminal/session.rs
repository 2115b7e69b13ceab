//! One exec or attach session: the client's socket, the upstream's, a writer task for each
//! (DESIGN.md invariant 4: nothing else writes to either), bounded channels between them, and
//! the supervisor that decides how the session ends: with the process (the upstream closes), or
//! with the client side going away, in which case it runs the teardown sequence.
//!
//! ```text
//! client socket ──reader (supervisor)──▶ [bounded] ──▶ upstream writer ──▶ upstream socket
//! client socket ◀── client writer ◀── [bounded] ◀── upstream reader ◀── upstream socket
//!                   (pings too)                       (publishes the status)
//! ```
//!
//! A panic stops at the session (DESIGN.md invariant 3 holds through one): a panic in a socket's
//! reader or writer, or in the supervisor, is counted in `kubemux_task_panics_total{task="terminal"}`
//! and makes the supervisor close the client with 1011 and run the teardown, which can still
//! type into the shell unless the upstream's writer is the task that died.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{self, WebSocket};
use bytes::Bytes;
use futures::{FutureExt as _, Sink, SinkExt as _, Stream, StreamExt as _};
use kubemux_protocol::channel::{ChannelProtocol, WsPayload};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tungstenite::Message as UpstreamMessage;

use super::codec::{Codec, FromClient};
use super::teardown::{self, Outcome, SessionKind, TeardownSequence, ToUpstream, UpstreamState};
use super::{InjectedPanic, TerminalSettings};
use crate::AppState;
use crate::identity::Identity;
use crate::logging::panic_message;
use crate::metrics::TaskKind;
use crate::passthrough::upstream_failure;

/// Everything a session needs, decided before the upgrade.
pub(super) struct SessionPlan {
    pub kind: SessionKind,
    pub cluster: String,
    pub namespace: String,
    pub pod: String,
    pub container: Option<String>,
    /// `/api/v1/namespaces/…/exec?…`, as the client sent it.
    pub upstream_path: String,
    pub identity: Identity,
    pub client_protocol: ChannelProtocol,
    pub tty: bool,
    pub stdin: bool,
}

/// Why the client side is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trigger {
    /// The client sent a close frame.
    CloseFrame,
    /// The connection broke or ended without a close frame.
    Disconnect,
    /// Nothing (not even a pong) arrived for `dead_after`.
    PingTimeout,
    /// The proxy is shutting down.
    Shutdown,
    /// A reload removed the session's cluster.
    ClusterRemoved,
    /// One of the session's own tasks panicked.
    InternalError,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::CloseFrame => "close_frame",
            Trigger::Disconnect => "disconnect",
            Trigger::PingTimeout => "ping_timeout",
            Trigger::Shutdown => "shutdown",
            Trigger::ClusterRemoved => "cluster_removed",
            Trigger::InternalError => "internal_error",
        }
    }
}

/// A message for the client socket's writer task.
enum ToClient {
    Frame(WsPayload),
    /// An upstream output frame, sent as it was received ([`Codec::passes_through`]).
    Received(Bytes),
    /// A close frame; the writer ends after it.
    Close(u16, &'static str),
}

/// Aborts the session's tasks when the session ends, whichever way it ends: nothing outlives it.
struct Tasks(Vec<tokio::task::AbortHandle>);

impl Tasks {
    fn add<T>(&mut self, handle: &JoinHandle<T>) {
        self.0.push(handle.abort_handle());
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Decrements the open-sessions gauge however the session ends.
struct OpenGauge(Arc<AppState>);

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.metrics.terminals.open.dec();
    }
}

/// Counts and logs a panic contained in a session's `part`.
fn panicked(app: &AppState, part: &str, panic: &(dyn Any + Send)) {
    app.metrics.task_panic(TaskKind::Terminal);
    tracing::error!(task = %TaskKind::Terminal, part, panic = panic_message(panic), "a proxy task panicked; its terminal session is torn down");
}

/// Runs one of the session's tasks; if it panics, counts it and cancels `broken`, on which the
/// supervisor tears the session down.
async fn contained(app: Arc<AppState>, part: &'static str, broken: CancellationToken, task: impl Future<Output = ()>) {
    if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
        panicked(&app, part, panic.as_ref());
        broken.cancel();
    }
}

/// The test hook's bytes for `which` task, if the hook is set for it.
fn injected(settings: &TerminalSettings, which: fn(&InjectedPanic) -> Option<&Vec<u8>>) -> Option<Vec<u8>> {
    settings.inject_panic.as_ref().and_then(which).filter(|marker| !marker.is_empty()).cloned()
}

/// Panics if `data` contains `marker`: the test hook, never set outside tests.
fn test_hook(marker: &Option<Vec<u8>>, data: &[u8], task: &str) {
    if let Some(marker) = marker
        && data.windows(marker.len()).any(|window| window == marker.as_slice())
    {
        // Reachable only from a test: `TerminalSettings::inject_panic` is doc-hidden, `None`
        // by default, and no flag or config key sets it.
        panic!("injected panic in a terminal {task} (test hook)");
    }
}

/// Runs an upgraded session to its end. A panic in the supervisor or in one of the session's
/// tasks still runs the teardown; one anywhere else (the dial, the teardown itself) stops here,
/// counted, and drops both sockets with the session.
pub(super) async fn run(socket: WebSocket, plan: SessionPlan, app: Arc<AppState>) {
    if let Err(panic) = AssertUnwindSafe(serve(socket, plan, app.clone())).catch_unwind().await {
        panicked(&app, "session", panic.as_ref());
    }
}

async fn serve(socket: WebSocket, plan: SessionPlan, app: Arc<AppState>) {
    let settings = app.settings().terminal.clone();
    app.metrics.terminals.open.inc();
    let _open = OpenGauge(app.clone());
    let mut tasks = Tasks(Vec::new());

    let (client_sink, mut client_stream) = socket.split();
    let (to_client, client_rx) = mpsc::channel(settings.queue);
    let broken = CancellationToken::new();
    let client_writer = tokio::spawn(contained(app.clone(), "client writer", broken.clone(), client_writer(client_sink, client_rx, settings.ping_interval)));
    tasks.add(&client_writer);

    // The client was accepted first, so a failure reaches it as a Status it can show (§2.2).
    let (connection, removed) = match dial(&app, &plan, &settings).await {
        Ok(dialled) => dialled,
        Err(status) => {
            app.metrics.terminals.dial_failure(status.code);
            tracing::info!(cluster = %plan.cluster, namespace = %plan.namespace, pod = %plan.pod, code = status.code, reason = %status.reason, "terminal upstream refused");
            let codec = Codec { client: plan.client_protocol, upstream: ChannelProtocol::V5, tty: plan.tty, stdin: plan.stdin };
            let status = serde_json::to_value(&status).unwrap_or_default();
            if let Some(frame) = codec.client_status(&status) {
                let _ = to_client.send(ToClient::Frame(frame)).await;
            }
            let _ = to_client.send(ToClient::Close(1000, "")).await;
            let _ = tokio::time::timeout(settings.close_wait, client_writer).await;
            return;
        }
    };
    let upstream = if connection.supports_stream_close() { ChannelProtocol::V5 } else { ChannelProtocol::V4 };
    let codec = Codec { client: plan.client_protocol, upstream, tty: plan.tty, stdin: plan.stdin };
    app.metrics.terminals.session(plan.kind.as_str(), plan.client_protocol.name(), plan.tty);
    tracing::debug!(cluster = %plan.cluster, namespace = %plan.namespace, pod = %plan.pod, kind = plan.kind.as_str(), client = plan.client_protocol.name(), upstream = upstream.name(), tty = plan.tty, "terminal session open");

    let (upstream_sink, upstream_stream) = connection.into_stream().split();
    let (to_upstream, upstream_rx) = mpsc::channel(settings.queue);
    let upstream_writer = tokio::spawn(contained(app.clone(), "upstream writer", broken.clone(), upstream_writer(upstream_sink, upstream_rx)));
    tasks.add(&upstream_writer);
    let (state_tx, state) = watch::channel(UpstreamState::default());
    let detached = CancellationToken::new();
    let panic_on_output = injected(&settings, |p| if let InjectedPanic::UpstreamReader(m) = p { Some(m) } else { None });
    let reader = upstream_reader(upstream_stream, codec, to_client.clone(), state_tx, detached.clone(), panic_on_output);
    let upstream_reader = tokio::spawn(contained(app.clone(), "upstream reader", broken.clone(), reader));
    tasks.add(&upstream_reader);

    let panic_on_input = injected(&settings, |p| if let InjectedPanic::Supervisor(m) = p { Some(m) } else { None });
    let supervised = AssertUnwindSafe(async {
        let mut ended = state.clone();
        tokio::select! {
            trigger = client_reader(&mut client_stream, &codec, &to_upstream, settings.dead_after, &panic_on_input) => Some(trigger),
            // An error is the reader gone without saying the upstream ended: it panicked, and
            // `broken` says so. It must never pass for the process's end, which skips the teardown.
            Ok(_) = ended.wait_for(|s| s.ended) => None,
            _ = app.shutdown.cancelled() => Some(Trigger::Shutdown),
            _ = removed.cancelled() => Some(Trigger::ClusterRemoved),
            _ = broken.cancelled() => Some(Trigger::InternalError),
        }
    })
    .catch_unwind()
    .await;
    let trigger = supervised.unwrap_or_else(|panic| {
        panicked(&app, "supervisor", panic.as_ref());
        Some(Trigger::InternalError)
    });

    let Some(trigger) = trigger else {
        // The process ended and the upstream reader has forwarded everything, status included.
        app.metrics.terminals.ended(plan.kind.as_str());
        let _ = tokio::time::timeout(settings.close_wait, to_client.send(ToClient::Close(1000, ""))).await;
        drop(to_client);
        let _ = tokio::time::timeout(settings.close_wait, client_writer).await;
        return;
    };

    // The client side is gone (or about to be, on shutdown): from here on nothing waits for it.
    let (code, reason) = match trigger {
        Trigger::Shutdown => (1001, "proxy shutting down"),
        Trigger::ClusterRemoved => (1001, "cluster removed from the proxy's configuration"),
        Trigger::InternalError => (1011, "internal error"),
        Trigger::CloseFrame | Trigger::Disconnect | Trigger::PingTimeout => (1000, ""),
    };
    let _ = to_client.try_send(ToClient::Close(code, reason));
    detached.cancel();
    drop(to_client);

    let sequence = TeardownSequence::plan(plan.kind, &codec, &settings);
    let cap = if trigger == Trigger::Shutdown { settings.grace } else { settings.teardown_cap };
    let mut teardown_state = state.clone();
    let outcome = tokio::time::timeout(cap, teardown::run(plan.kind, &sequence, &codec, &to_upstream, &mut teardown_state, settings.close_wait))
        .await
        .unwrap_or_else(|_| teardown::outcome(plan.kind, &state.borrow()));
    app.metrics.terminals.teardown(plan.kind.as_str(), trigger.as_str(), outcome.as_str());
    let identity = match plan.identity {
        Identity::Proxy => "proxy",
        Identity::Token(_) => "token",
    };
    if outcome == Outcome::SuspectedOrphan {
        // Names the session, never the credentials behind it.
        tracing::warn!(
            cluster = %plan.cluster, namespace = %plan.namespace, pod = %plan.pod, container = ?plan.container,
            tty = plan.tty, identity, trigger = trigger.as_str(),
            "terminal teardown got no exit status: the process may still be running in the container"
        );
    } else {
        tracing::debug!(cluster = %plan.cluster, namespace = %plan.namespace, pod = %plan.pod, kind = plan.kind.as_str(), trigger = trigger.as_str(), outcome = outcome.as_str(), "terminal torn down");
    }
}

/// Dials the upstream exec/attach endpoint, and says when its cluster is removed; on failure,
/// the Status to show the client.
async fn dial(app: &AppState, plan: &SessionPlan, settings: &TerminalSettings) -> Result<(kube::client::Connection, CancellationToken), kubemux_protocol::frames::Status> {
    use kubemux_protocol::frames::Status;
    let cluster = app.snapshot().clusters.get(&plan.cluster).ok_or_else(|| Status::failure(404, "NotFound", format!("cluster \"{}\" not found", plan.cluster)))?;
    let client = cluster.client(&plan.identity).map_err(|e| upstream_failure(&plan.cluster, &e))?;
    let request = http::Request::get(plan.upstream_path.as_str()).body(Vec::new()).map_err(|e| Status::failure(400, "BadRequest", format!("invalid request: {e}")))?;
    match tokio::time::timeout(settings.dial_timeout, client.connect(request)).await {
        Ok(Ok(connection)) => Ok((connection, cluster.removed().clone())),
        Ok(Err(error)) => Err(upstream_failure(&plan.cluster, &error)),
        Err(_) => Err(Status::failure(504, "Timeout", format!("cluster {} did not answer the {} request in time", plan.cluster, plan.kind.as_str()))),
    }
}

/// Reads the client until it goes away, forwarding what it sends upstream (in order, through
/// the one upstream writer). A slow upstream slows this reader: the channel is bounded.
async fn client_reader<S>(stream: &mut S, codec: &Codec, to_upstream: &mpsc::Sender<ToUpstream>, dead_after: Duration, panic_on: &Option<Vec<u8>>) -> Trigger
where
    S: Stream<Item = Result<ws::Message, axum::Error>> + Unpin,
{
    loop {
        // `timeout`, not `timeout_at(now + dead_after)`: the sum panics for a setting too long
        // for the clock, which `timeout` reads as "never".
        let message = match tokio::time::timeout(dead_after, stream.next()).await {
            Err(_) => return Trigger::PingTimeout,
            Ok(None | Some(Err(_))) => return Trigger::Disconnect,
            Ok(Some(Ok(message))) => message,
        };
        let data: Bytes = match message {
            ws::Message::Binary(data) => data,
            // Base64 protocols are text; Kubernetes takes text or binary either way.
            ws::Message::Text(text) => Bytes::from(text),
            ws::Message::Close(_) => return Trigger::CloseFrame,
            ws::Message::Ping(_) | ws::Message::Pong(_) => continue,
        };
        test_hook(panic_on, &data, "supervisor");
        match codec.from_client(&data) {
            FromClient::Forward(payload) => {
                if to_upstream.send(ToUpstream::Frame(payload)).await.is_err() {
                    // The upstream writer is gone because the upstream is: the supervisor is
                    // about to see the upstream end. Stop reading, keep the client open.
                    std::future::pending::<()>().await;
                }
            }
            FromClient::EndUpstream => {
                let _ = to_upstream.send(ToUpstream::Close).await;
            }
            FromClient::Drop(why) => tracing::trace!(why, "client frame not forwarded"),
        }
    }
}

/// Reads the upstream to its end: forwards output and the status to the client (unless it is
/// gone) and publishes the status and the end for the supervisor and the teardown.
async fn upstream_reader<S>(mut stream: S, codec: Codec, to_client: mpsc::Sender<ToClient>, state: watch::Sender<UpstreamState>, detached: CancellationToken, panic_on: Option<Vec<u8>>)
where
    S: Stream<Item = Result<UpstreamMessage, tungstenite::Error>> + Unpin,
{
    while let Some(Ok(message)) = stream.next().await {
        let data: Bytes = match message {
            UpstreamMessage::Binary(data) => data,
            UpstreamMessage::Text(text) => Bytes::from(text),
            UpstreamMessage::Close(_) => break,
            UpstreamMessage::Ping(_) | UpstreamMessage::Pong(_) | UpstreamMessage::Frame(_) => continue,
        };
        test_hook(&panic_on, &data, "upstream reader");
        let frame = if codec.passes_through(&data) {
            // One copy, no decoding: the received frame is a view into tungstenite's read
            // buffer, and queueing it would pin that buffer, which the next read would then
            // reallocate and copy instead of reuse (measured: more instructions than the two
            // copies of re-framing).
            ToClient::Received(Bytes::copy_from_slice(&data))
        } else {
            let out = codec.from_upstream(&data);
            if let Some(status) = out.status {
                // Published before forwarding: a teardown must see it even if the client is stuck.
                state.send_modify(|s| s.status = Some(status));
            }
            let Some(frame) = out.to_client else { continue };
            ToClient::Frame(frame)
        };
        tokio::select! {
            _ = to_client.send(frame) => {}
            _ = detached.cancelled() => {}
        }
    }
    state.send_modify(|s| s.ended = true);
}

/// The only writer of the upstream socket. Each message is one frame: the servers read one
/// frame as one message and would misread a continuation (§3.2), and tungstenite never
/// fragments what it sends.
async fn upstream_writer<S>(mut sink: S, mut rx: mpsc::Receiver<ToUpstream>)
where
    S: Sink<UpstreamMessage> + Unpin,
{
    while let Some(message) = rx.recv().await {
        let more = write_batch(&mut sink, message, &mut rx, |message| match message {
            ToUpstream::Frame(payload) => (upstream_message(payload), false),
            ToUpstream::Close => {
                let frame = tungstenite::protocol::CloseFrame { code: tungstenite::protocol::frame::coding::CloseCode::Normal, reason: "".into() };
                (UpstreamMessage::Close(Some(frame)), true)
            }
        })
        .await;
        if !more {
            return;
        }
    }
}

/// At most this many queued frames are written before a flush.
const BATCH_FRAMES: usize = 64;

/// Writes `first` and what is already queued behind it (up to [`BATCH_FRAMES`]), then flushes
/// once: a burst of output is one socket write instead of one per frame, and a lone keystroke's
/// echo, with nothing behind it, is flushed at once. `encode` says whether a message is the
/// last one (a close). False when the writer is done: the sink failed or a close was written.
async fn write_batch<S, T, M>(sink: &mut S, first: T, rx: &mut mpsc::Receiver<T>, encode: impl Fn(T) -> (M, bool)) -> bool
where
    S: Sink<M> + Unpin,
{
    let mut next = Some(first);
    let mut written = 0;
    while let Some(item) = next {
        let (message, last) = encode(item);
        if sink.feed(message).await.is_err() {
            return false;
        }
        if last {
            let _ = sink.flush().await;
            return false;
        }
        written += 1;
        next = if written < BATCH_FRAMES { rx.try_recv().ok() } else { None };
    }
    sink.flush().await.is_ok()
}

/// The only writer of the client socket; it also pings, so a client that stops answering is
/// noticed by the reader's deadline.
async fn client_writer<S>(mut sink: S, mut rx: mpsc::Receiver<ToClient>, ping_interval: Duration)
where
    S: Sink<ws::Message> + Unpin,
{
    // A sleep re-armed after each ping, not an `Interval`: that panics on a zero period and on
    // a first tick too far for the clock, and `sleep` takes both (a zero one pings on every
    // turn of the loop, which is what was asked for).
    let ping = tokio::time::sleep(ping_interval);
    tokio::pin!(ping);
    loop {
        tokio::select! {
            message = rx.recv() => {
                let Some(message) = message else { return };
                let more = write_batch(&mut sink, message, &mut rx, |message| match message {
                    ToClient::Frame(payload) => (client_message(payload), false),
                    ToClient::Received(data) => (ws::Message::Binary(data), false),
                    ToClient::Close(code, reason) => (ws::Message::Close(Some(ws::CloseFrame { code, reason: reason.into() })), true),
                })
                .await;
                if !more {
                    return;
                }
            }
            _ = &mut ping => {
                if sink.send(ws::Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
                ping.set(tokio::time::sleep(ping_interval));
            }
        }
    }
}

fn upstream_message(payload: WsPayload) -> UpstreamMessage {
    match payload {
        WsPayload::Binary(bytes) => UpstreamMessage::Binary(bytes.into()),
        WsPayload::Text(text) => UpstreamMessage::Text(text.into()),
    }
}

fn client_message(payload: WsPayload) -> ws::Message {
    match payload {
        WsPayload::Binary(bytes) => ws::Message::Binary(bytes.into()),
        WsPayload::Text(text) => ws::Message::Text(text.into()),
    }
}
