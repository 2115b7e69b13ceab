//! One `/mux` connection: reads client messages, keeps the connection's subscriptions, and
//! hands every outbound frame to the outbox, which the socket's single writer task drains.
//!
//! Nothing a message does closes the connection except a policy breach (too big); every other
//! problem becomes an `error` frame for the one subscription it concerns (DESIGN.md
//! invariant 1). A panic in the session ends its own connection only: close 1011, its
//! subscriptions detached, `kubemux_task_panics_total{task="mux_session"}` counted.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{FutureExt as _, SinkExt, StreamExt};
use kubemux_protocol::client::WatchOptions;
use kubemux_protocol::frames::{ClientMessage, DecodeErrorKind, ResumeMode, ServerMessage, Status, Watch, WatchRequestError};

use super::MuxSettings;
use super::deflate::Deflater;
use super::outbox::{Outbox, Outgoing};
use crate::AppState;
use crate::forward::feed::{self, FeedSubscription, Subscriber};
use crate::identity::Identity;
use crate::logging::panic_message;
use crate::metrics::TaskKind;
use crate::registry::{ResumeFrom, Sink, Subscription, UpstreamStats, WatchKey};

/// One active subscription of this connection.
struct Active {
    cluster: String,
    identity: Identity,
    path: String,
    query: kubemux_protocol::frames::WatchQuery,
    options: WatchOptions,
    sink: Arc<Sink>,
    upstream: Upstream,
}

/// What serves a subscription: a shared upstream watch, or the forwards' feed (§10).
enum Upstream {
    Registry(Subscription),
    Forwards(FeedSubscription),
}

impl Upstream {
    fn resync(&self) {
        match self {
            Upstream::Registry(subscription) => subscription.resync(),
            Upstream::Forwards(subscription) => subscription.resync(),
        }
    }
}

struct Session {
    app: Arc<AppState>,
    /// The limits in force when the connection opened.
    settings: MuxSettings,
    outbox: Arc<Outbox>,
    subscriptions: HashMap<Arc<str>, Active>,
    /// Tokens set with `auth`, per cluster.
    tokens: HashMap<String, String>,
    /// The token the connection was opened with, used for every cluster without its own.
    connection_token: Option<String>,
    /// Text frames and their bytes read from the client (`stats`).
    received: (u64, u64),
    /// Message bytes the writer sent (`stats`' `wireBytesOut`).
    wire_bytes: Arc<AtomicU64>,
}

/// The answer to `stats` (`docs/PROTOCOL.md` §3), in the frame's field names.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionStats {
    frames_in: u64,
    bytes_in: u64,
    frames_out: u64,
    bytes_out: u64,
    /// What the writer put on the socket: `bytesOut` compressed, on a `kubemux.v1+deflate`
    /// connection, and otherwise the frames sent so far.
    wire_bytes_out: u64,
    queued_bytes: u64,
}

#[derive(serde::Serialize)]
struct SubscriptionStats {
    events: u64,
    bytes: u64,
    resets: u64,
    hidden: u64,
    /// The shared upstream watch's meter; `None` (`null`) for the forwards' feed.
    upstream: Option<UpstreamStats>,
}

/// Milliseconds since `epoch`, for the liveness check shared by reader and writer.
fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Runs the connection to its end.
pub(super) async fn run(socket: WebSocket, app: Arc<AppState>, connection_token: Option<String>, deflate: bool) {
    app.metrics.connections.inc();
    // The connection keeps the limits in force when it opened (a reload changes new ones).
    let settings = app.settings().mux.clone();
    let outbox = Outbox::new(settings.max_queued_bytes, app.metrics.clone());
    let (socket_tx, mut socket_rx) = socket.split();
    let epoch = Instant::now();
    let last_seen = Arc::new(AtomicU64::new(0));
    let wire_bytes = Arc::new(AtomicU64::new(0));
    let deflater = deflate.then(|| Deflater::new(app.metrics.deflate_streams.clone()));
    let writer = Writer { outbox: outbox.clone(), app: app.clone(), settings: settings.clone(), last_seen: last_seen.clone(), epoch, wire_bytes: wire_bytes.clone(), deflater };
    let mut writer = tokio::spawn(writer.run(socket_tx));
    let session = Session { app: app.clone(), settings, outbox: outbox.clone(), subscriptions: HashMap::new(), tokens: HashMap::new(), connection_token, received: (0, 0), wire_bytes };
    let read = read_loop(session, &mut socket_rx, &outbox, &app, &last_seen, epoch, &mut writer);
    if let Err(panic) = AssertUnwindSafe(read).catch_unwind().await {
        // The session was dropped while unwinding, detaching its subscriptions (`Drop`).
        app.metrics.task_panic(TaskKind::MuxSession);
        tracing::error!(task = %TaskKind::MuxSession, panic = panic_message(panic.as_ref()), "a proxy task panicked; its /mux connection is closed with 1011");
        outbox.close(1011, "internal error");
    }
    outbox.close(1000, "");
    // The writer ends after sending the close frame; don't wait forever on a dead peer.
    if !writer.is_finished() {
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut writer).await;
        writer.abort();
    }
    app.metrics.connections.dec();
}

/// Reads the client until the connection ends.
async fn read_loop(
    mut session: Session,
    socket_rx: &mut futures::stream::SplitStream<WebSocket>,
    outbox: &Outbox,
    app: &AppState,
    last_seen: &AtomicU64,
    epoch: Instant,
    writer: &mut tokio::task::JoinHandle<()>,
) {
    loop {
        tokio::select! {
            message = socket_rx.next() => {
                last_seen.store(millis_since(epoch), Ordering::Relaxed);
                match message {
                    Some(Ok(Message::Text(text))) => session.on_text(text.as_str()),
                    Some(Ok(Message::Binary(_))) => session.control_error(400, "BadRequest", "binary frames are not part of kubemux.v1; send JSON text frames".into()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(error)) => {
                        if is_too_big(&error) {
                            outbox.close(1009, "message too big");
                        } else {
                            tracing::debug!(%error, "mux connection read failed");
                            outbox.close(1011, "read error");
                        }
                        break;
                    }
                }
            }
            _ = outbox.wake_session.notified() => session.resync_overflowed(),
            _ = app.shutdown.cancelled() => {
                outbox.close(1001, "proxy shutting down");
                break;
            }
            _ = &mut *writer => break,
        }
    }
    drop(session);
}

/// Whether a read failed because the client's message or frame exceeded the limit. axum wraps
/// the error of its own tungstenite (0.29, through tokio-tungstenite), not the 0.30 that kube
/// speaks: downcasting to the other version's type would never match.
fn is_too_big(error: &axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    use tokio_tungstenite::tungstenite::error::CapacityError;
    std::error::Error::source(error).and_then(|source| source.downcast_ref::<Error>()).is_some_and(|error| matches!(error, Error::Capacity(CapacityError::MessageTooLong { .. })))
}

/// Most bytes the writer takes from the outbox per wakeup before it flushes them in one write:
/// a burst of events goes out in few syscalls, while what has left the outbox's accounting
/// stays small. tungstenite's write buffer keeps the capacity a batch grew it to, so this also
/// bounds what an idle connection holds after a burst (in `kubemux-bench-mux`'s memory figure,
/// 64 KiB cost about 21 KiB more per connection than a send per frame, 16 KiB about 13 KiB).
const BATCH_BYTES: usize = 8 * 1024;

/// The single writer of the socket and what it owns: frames from the outbox, pings on a timer,
/// and on a `kubemux.v1+deflate` connection the compressed stream.
struct Writer {
    outbox: Arc<Outbox>,
    app: Arc<AppState>,
    settings: MuxSettings,
    last_seen: Arc<AtomicU64>,
    epoch: Instant,
    wire_bytes: Arc<AtomicU64>,
    deflater: Option<Deflater>,
}

/// Why a batch could not be sent: the socket failed, or (never expected) the compressor did.
enum SendError {
    Socket,
    Deflate(flate2::CompressError),
}

impl From<axum::Error> for SendError {
    fn from(_: axum::Error) -> SendError {
        SendError::Socket
    }
}

impl From<flate2::CompressError> for SendError {
    fn from(error: flate2::CompressError) -> SendError {
        SendError::Deflate(error)
    }
}

type SocketTx = futures::stream::SplitSink<WebSocket, Message>;

impl Writer {
    /// Each wakeup takes what is queued (up to [`BATCH_BYTES`], with [`Outbox::drain`]), feeds it
    /// into tungstenite's write buffer and sends it with one `flush`, so a burst costs one socket
    /// write, not one per frame. `feed` writes to the socket only once the buffer passes its
    /// `write_buffer_size` ([`super::WRITE_BUFFER_BYTES`], larger than a batch), so it does not
    /// flush per frame. On a `kubemux.v1+deflate` connection the batch is one binary message.
    async fn run(mut self, mut socket: SocketTx) {
        // A sleep re-armed after each ping, not an `Interval`, which panics on a zero period.
        let ping = tokio::time::sleep(self.settings.ping_interval);
        tokio::pin!(ping);
        // When a compressed stream that has sent nothing since is released.
        let idle = tokio::time::sleep(self.settings.deflate_idle_release);
        tokio::pin!(idle);
        // One wakeup's frames, taken from the outbox under one lock; kept for its capacity.
        let mut batch = Vec::new();
        loop {
            let holds_stream = self.deflater.as_ref().is_some_and(Deflater::holds);
            tokio::select! {
                next = self.outbox.next() => {
                    let Some(first) = next else { break };
                    // The producers (upstream watches, the session) are likely still pushing the
                    // rest of what they read: one yield lets them, so this wakeup sends a batch
                    // rather than the one frame that woke it. (A wakeup and a send per event was
                    // most of the proxy's CPU in `kubemux-bench-mux`'s fan-out.)
                    tokio::task::yield_now().await;
                    batch.push(first);
                    if !matches!(batch[0], Outgoing::Close(..)) {
                        self.outbox.drain(BATCH_BYTES, &mut batch);
                    }
                    let mut closing = false;
                    // A peer that stops reading blocks the flush; past the liveness limit it is as
                    // dead as one that stops answering pings.
                    let sent = tokio::time::timeout(self.settings.dead_after, self.send(&mut socket, &mut batch, &mut closing)).await;
                    batch.clear();
                    match sent {
                        Ok(Ok(())) if !closing => {}
                        Ok(Ok(()) | Err(SendError::Socket)) => break,
                        Ok(Err(SendError::Deflate(error))) => {
                            tracing::error!(%error, "compressing a mux connection's frames failed; closing it");
                            let _ = socket.send(Message::Close(Some(CloseFrame { code: 1011, reason: "internal error".into() }))).await;
                            break;
                        }
                        Err(_) => {
                            tracing::info!("dropping a mux connection that stopped reading");
                            break;
                        }
                    }
                    idle.as_mut().reset(tokio::time::Instant::now() + self.settings.deflate_idle_release);
                }
                _ = &mut idle, if holds_stream => {
                    let ended = self.deflater.as_mut().map(Deflater::release).transpose();
                    match ended {
                        Ok(Some(Some(message))) => {
                            if self.send_binary(&mut socket, message).await.is_err() {
                                break;
                            }
                            if socket.flush().await.is_err() {
                                break;
                            }
                        }
                        Ok(_) => {}
                        Err(error) => {
                            tracing::error!(%error, "ending a mux connection's compressed stream failed; closing it");
                            break;
                        }
                    }
                }
                _ = &mut ping => {
                    ping.set(tokio::time::sleep(self.settings.ping_interval));
                    let silent = millis_since(self.epoch).saturating_sub(self.last_seen.load(Ordering::Relaxed));
                    if silent > u64::try_from(self.settings.dead_after.as_millis()).unwrap_or(u64::MAX) {
                        tracing::info!("dropping a mux connection that stopped answering");
                        break;
                    }
                    if socket.send(Message::Ping(Default::default())).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = socket.close().await;
    }

    /// Feeds one batch to the socket and flushes it; `closing` tells whether it ended with the
    /// close frame.
    async fn send(&mut self, socket: &mut SocketTx, batch: &mut Vec<Outgoing>, closing: &mut bool) -> Result<(), SendError> {
        let mut frames = 0u64;
        for outgoing in batch.drain(..) {
            match outgoing {
                Outgoing::Text(text) => {
                    frames += text.len() as u64;
                    match self.deflater.as_mut() {
                        Some(deflater) => deflater.push(&text)?,
                        None => {
                            self.wire_bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
                            socket.feed(Message::Text(text.into())).await?;
                        }
                    }
                }
                Outgoing::Close(code, reason) => {
                    *closing = true;
                    self.send_batch_message(socket).await?;
                    socket.feed(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await?;
                    break;
                }
            }
        }
        self.send_batch_message(socket).await?;
        self.app.metrics.bytes_out.inc_by(frames);
        Ok(socket.flush().await?)
    }

    /// Feeds the compressed batch's message, if one is being built.
    async fn send_batch_message(&mut self, socket: &mut SocketTx) -> Result<(), SendError> {
        if let Some(message) = self.deflater.as_mut().map(Deflater::take).transpose()?.flatten() {
            self.send_binary(socket, message).await?;
        }
        Ok(())
    }

    async fn send_binary(&self, socket: &mut SocketTx, message: Vec<u8>) -> Result<(), SendError> {
        self.wire_bytes.fetch_add(message.len() as u64, Ordering::Relaxed);
        self.app.metrics.deflated_bytes_out.inc_by(message.len() as u64);
        Ok(socket.feed(Message::Binary(message.into())).await?)
    }
}

fn error_frame(id: Option<&str>, fatal: bool, status: Status) -> String {
    ServerMessage::Error { id: id.map(str::to_owned), fatal, status }.encode()
}

impl Session {
    fn identity(&self, cluster: &str) -> Identity {
        match self.tokens.get(cluster).or(self.connection_token.as_ref()) {
            Some(token) => Identity::token(token),
            None => Identity::Proxy,
        }
    }

    /// An error that concerns no subscription, or one that is not (or no longer) active.
    fn control_error(&self, code: u16, reason: &str, message: String) {
        self.app.metrics.error(reason);
        self.outbox.push_control(error_frame(None, false, Status::failure(code, reason, message)));
    }

    fn subscription_error(&self, id: &str, fatal: bool, status: Status) {
        self.app.metrics.error(&status.reason);
        match self.subscriptions.get_key_value(id) {
            // Keep the order with the subscription's own frames.
            Some((key, _)) => {
                self.outbox.push(key, error_frame(Some(id), fatal, status));
            }
            None => {
                self.outbox.push_control(error_frame(Some(id), fatal, status));
            }
        }
    }

    fn on_text(&mut self, text: &str) {
        self.received.0 += 1;
        self.received.1 += text.len() as u64;
        match ClientMessage::decode(text) {
            Ok(ClientMessage::Watch(watch)) => self.watch(watch),
            Ok(ClientMessage::Unwatch { id }) => self.unwatch(&id),
            Ok(ClientMessage::Auth { cluster, token }) => self.auth(cluster, token),
            Ok(ClientMessage::Ping { data }) => {
                if let Some(marker) = &self.settings.inject_panic
                    && data.as_str() == Some(marker.as_str())
                {
                    // Reachable only from a test: `MuxSettings::inject_panic` is doc-hidden,
                    // `None` by default, and no flag or config key sets it.
                    panic!("injected panic in a mux session (test hook)");
                }
                self.outbox.push_control(ServerMessage::Pong { data }.encode());
            }
            Ok(ClientMessage::Stats { data }) => self.stats(data),
            Ok(ClientMessage::Resync { id }) => self.resync(&id),
            Err(error) => {
                let message = format!("{error}");
                match (error.id, error.kind) {
                    (Some(id), DecodeErrorKind::InvalidFields { .. }) => {
                        // A broken message about a subscription: an error for that id, which
                        // ends nothing that is running.
                        self.purge_ended();
                        let active = self.subscriptions.contains_key(id.as_str());
                        self.subscription_error(&id, !active, Status::failure(400, "BadRequest", message));
                    }
                    _ => self.control_error(400, "BadRequest", message),
                }
            }
        }
    }

    /// Forgets subscriptions that a fatal error ended.
    fn purge_ended(&mut self) {
        let ended: Vec<Arc<str>> = self.subscriptions.iter().filter(|(_, a)| a.sink.is_ended()).map(|(id, _)| id.clone()).collect();
        for id in ended {
            if let Some(active) = self.subscriptions.remove(&id) {
                active.sink.detach();
                self.outbox.remove_if_drained(&id);
                self.app.metrics.subscriptions.dec();
            }
        }
    }

    fn watch(&mut self, watch: Watch) {
        self.purge_ended();
        let id = watch.id.clone();
        if self.subscriptions.contains_key(id.as_str()) {
            return self.subscription_error(&id, false, Status::failure(409, "AlreadyExists", format!("subscription {id:?} is already active")));
        }
        if let Err(error) = watch.validate() {
            let id = if matches!(error, WatchRequestError::BadId) { None } else { Some(id.as_str()) };
            self.app.metrics.error("BadRequest");
            self.outbox.push_control(error_frame(id, id.is_some(), Status::failure(400, "BadRequest", error.to_string())));
            return;
        }
        if self.subscriptions.len() >= self.settings.max_subscriptions {
            let limit = self.settings.max_subscriptions;
            return self.subscription_error(&id, true, Status::failure(429, "TooManyRequests", format!("this connection already has {limit} subscriptions")));
        }
        let Some(cluster) = self.app.snapshot().clusters.get(&watch.cluster) else {
            return self.subscription_error(&id, true, Status::failure(404, "NotFound", format!("cluster {:?} not found", watch.cluster)));
        };
        let query = watch.query.unwrap_or_default();
        let forwards = match feed::scope(&watch.path, &query) {
            Some(Err(status)) => return self.subscription_error(&id, true, status),
            Some(Ok(scope)) => Some(scope),
            None => None,
        };
        let id: Arc<str> = Arc::from(id);
        self.outbox.add_subscription(&id);
        let options = WatchOptions { projection: watch.projection, deltas: watch.deltas };
        let sink = Sink::with_options(self.outbox.clone(), id.clone(), self.app.metrics.clone(), watch.resource_version.clone(), options);
        let identity = self.identity(&watch.cluster);
        let upstream = match forwards {
            Some(scope) => {
                let subscriber = Subscriber { cluster, identity: identity.clone(), scope, resume: watch.resource_version };
                Upstream::Forwards(self.app.forwards.feed().subscribe(subscriber, sink.clone()))
            }
            None => {
                let key = WatchKey { cluster: watch.cluster.clone(), path: watch.path.clone(), query: query.clone(), identity: identity.clone() };
                let resume = watch.resource_version.map(|version| ResumeFrom::new(version, watch.resume == Some(ResumeMode::Inventory)));
                Upstream::Registry(self.app.registry.subscribe(key, cluster, sink.clone(), resume))
            }
        };
        self.app.metrics.subscriptions.inc();
        self.subscriptions.insert(id, Active { cluster: watch.cluster, identity, path: watch.path, query, options, sink, upstream });
    }

    fn unwatch(&mut self, id: &str) {
        if let Some(active) = self.subscriptions.remove(id) {
            active.sink.detach();
            self.outbox.remove_subscription(id);
            self.app.metrics.subscriptions.dec();
        }
    }

    /// A new token for a cluster: every subscription of that cluster moves to the new identity,
    /// resuming from what it was last sent.
    fn auth(&mut self, cluster: String, token: String) {
        self.tokens.insert(cluster.clone(), token);
        let Some(target) = self.app.snapshot().clusters.get(&cluster) else { return };
        let identity = self.identity(&cluster);
        let moving = self.subscriptions.iter_mut().filter(|(_, a)| a.cluster == cluster && a.identity != identity && !a.sink.is_ended());
        for (id, active) in moving {
            active.sink.detach();
            let resume = active.sink.last_resource_version();
            let sink = Sink::with_options(self.outbox.clone(), id.clone(), self.app.metrics.clone(), resume.clone(), active.options);
            let key = WatchKey { cluster: cluster.clone(), path: active.path.clone(), query: active.query.clone(), identity: identity.clone() };
            // The client sent no `watch` for this: it expects events in version order, so the
            // move resumes without an inventory.
            active.upstream = match feed::scope(&active.path, &active.query) {
                Some(Ok(scope)) => Upstream::Forwards(self.app.forwards.feed().subscribe(Subscriber { cluster: target.clone(), identity: identity.clone(), scope, resume }, sink.clone())),
                _ => Upstream::Registry(self.app.registry.subscribe(key, target.clone(), sink.clone(), resume.map(|version| ResumeFrom::new(version, false)))),
            };
            active.sink = sink;
            active.identity = identity.clone();
        }
    }

    /// Answers `stats`: what this connection and each of its subscriptions cost so far.
    fn stats(&mut self, data: serde_json::Value) {
        self.purge_ended();
        let (sent, queued, per_sub) = self.outbox.sent(self.subscriptions.keys());
        let connection = ConnectionStats {
            frames_in: self.received.0,
            bytes_in: self.received.1,
            frames_out: sent.frames,
            bytes_out: sent.bytes,
            wire_bytes_out: self.wire_bytes.load(Ordering::Relaxed),
            queued_bytes: queued as u64,
        };
        let subscriptions: serde_json::Map<String, serde_json::Value> = self
            .subscriptions
            .iter()
            .zip(per_sub)
            .map(|((id, active), sent)| {
                let upstream = match &active.upstream {
                    Upstream::Registry(subscription) => Some(subscription.upstream_stats()),
                    Upstream::Forwards(_) => None,
                };
                let stats = SubscriptionStats { events: sent.events, bytes: sent.bytes, resets: sent.resets, hidden: sent.hidden, upstream };
                (id.to_string(), serde_json::to_value(stats).unwrap_or_default())
            })
            .collect();
        let connection = serde_json::to_value(connection).unwrap_or_default();
        self.outbox.push_control(ServerMessage::Stats { data, connection, subscriptions: subscriptions.into() }.encode());
    }

    /// The client could not apply a `patch` (§2 `resync`): `reset`, a snapshot and `synced`
    /// follow. An id that is not active is ignored, like `unwatch`'s.
    fn resync(&self, id: &str) {
        if let Some(active) = self.subscriptions.get(id) {
            active.upstream.resync();
        }
    }

    /// Overflowed subscriptions whose client has drained: ask for their reset.
    fn resync_overflowed(&self) {
        for id in self.outbox.take_due_resets() {
            if let Some(active) = self.subscriptions.get(&id) {
                active.upstream.resync();
            }
        }
    }
}

/// However the session ends, a panic included, its subscriptions leave their upstreams and the
/// gauge.
impl Drop for Session {
    fn drop(&mut self) {
        for (_, active) in self.subscriptions.drain() {
            active.sink.detach();
            self.app.metrics.subscriptions.dec();
        }
    }
}
