//! The sans-IO client core: subscriptions, their resume points and caches, reconnect
//! scheduling, and liveness. It owns no socket, reads no clock and draws no randomness of its
//! own: the shell (the wasm client, a native client, a test) feeds it what happened and the
//! time in milliseconds, and performs the [`Output`]s it returns.
//!
//! ```text
//! shell                          ClientCore
//!   start(now) ───────────────▶  [Connect]
//!   socket opened: on_open(now) ▶ [Send(auth…), Send(watch…), State(Open)]
//!   text frame: on_message(…)  ▶ [Event/Synced/Reset/Error/Changed…]
//!   event frame, header read by the shell: on_event(…) ▶ [Event, Changed]
//!   patch frame, header read by the shell: on_patch(…) ▶ [Event, Changed] | [Send(resync)]
//!   socket closed: on_close(…) ▶ [State(Reconnecting{delay})]
//!   timer: on_tick(now)        ▶ [Connect] | [Send(ping)] | [CloseSocket, State(…)]
//!   next_deadline()            ▶ when to call on_tick next
//! ```
//!
//! The core is generic over the object it keeps (`ClientCore<O>`): natively a
//! `serde_json::Value` parsed from the frame's text ([`ClientCore::on_message`]); in the browser
//! the object the page's `JSON.parse` built, handed over with the few header fields the protocol
//! needs ([`ClientCore::on_event`], [`EventFrame`]). The protocol logic is the same code either
//! way, which is what the native tests and the property test check.

mod backoff;
mod cache;

use std::collections::BTreeMap;

use serde_json::Value;

pub use backoff::{Backoff, BackoffConfig, SplitMix64};
pub use cache::{ObjectCache, ViewChange, object_key};

use cache::key_of;

use crate::frames::{ClientMessage, EventType, ProjectionMode, ResumeMode, ServerMessage, Status, Watch, WatchQuery, WatchRequestError};

/// Client settings; the defaults are `docs/PROTOCOL.md` §5's.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Send an application-level `ping` this often while open.
    pub ping_interval_ms: u64,
    /// Treat the connection as dead after this long without any message.
    pub dead_after_ms: u64,
    /// Reconnect backoff.
    pub backoff: BackoffConfig,
    /// Seed of the jitter generator.
    pub seed: u64,
    /// Resume with `"resume":"inventory"` (`docs/PROTOCOL.md` §4), so that a proxy replica
    /// without the subscription's history answers from its store (the objects changed since
    /// the resume point, then the keys it holds) instead of a wait and a `reset`. On by default;
    /// off, the core behaves as a client that predates the `inventory` frame.
    pub inventory_resume: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig { ping_interval_ms: 30_000, dead_after_ms: 75_000, backoff: BackoffConfig::default(), seed: 0x006b_7562_656d_7578, inventory_resume: true }
    }
}

/// The connection as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// A socket is being opened.
    Connecting,
    /// The socket is open.
    Open,
    /// Waiting to reconnect.
    Reconnecting {
        /// How long until the next attempt.
        delay_ms: u64,
    },
    /// Closed by the application; nothing more happens.
    Closed,
}

/// Where a subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionState {
    /// Waiting for the snapshot or replay to complete.
    Syncing,
    /// Consistent with the server.
    Synced,
    /// Possibly behind: disconnected, or the server reported a non-fatal error.
    Stale,
    /// Ended by a fatal error.
    Failed,
}

/// What the shell must do, or tell the application.
#[derive(Debug, Clone, PartialEq)]
pub enum Output<O = Value> {
    /// Open a new socket (to the same URL, offering `kubemux.v1`).
    Connect,
    /// Send this text frame on the open socket.
    Send(String),
    /// Close the current socket (it is considered dead).
    CloseSocket,
    /// The connection state changed.
    State(ConnectionState),
    /// An event for a subscription (already applied to its cache, or to the cache being
    /// rebuilt after a reset).
    Event {
        /// Subscription id.
        id: String,
        /// What happened.
        event_type: EventType,
        /// The object.
        object: O,
    },
    /// A subscription is consistent at a version.
    Synced {
        /// Subscription id.
        id: String,
        /// The version.
        resource_version: String,
    },
    /// The server restarts a subscription from a snapshot.
    Reset {
        /// Subscription id.
        id: String,
    },
    /// An error for one subscription (`id: Some`) or for the connection (`id: None`).
    Error {
        /// Subscription id, if any.
        id: Option<String>,
        /// Whether the subscription ended.
        fatal: bool,
        /// What went wrong.
        status: Status,
    },
    /// A subscription's visible items changed.
    Changed {
        /// Subscription id.
        id: String,
    },
    /// A subscription's state changed.
    SubscriptionState {
        /// Subscription id.
        id: String,
        /// The new state.
        state: SubscriptionState,
    },
    /// The answer to [`ClientCore::stats`]'s request `request`: the `stats` frame's
    /// `connection` and `subscriptions` (`docs/PROTOCOL.md` §3), or `None` when the connection
    /// closed before it came.
    Stats {
        /// What [`ClientCore::stats`] returned.
        request: u64,
        /// The report, as the server sent it.
        report: Option<Value>,
    },
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The client was closed.
    #[error("the kubemux client is closed")]
    Closed,
    /// The id is in use by an active subscription.
    #[error("subscription id {0:?} is already active")]
    DuplicateId(String),
    /// The watch request is invalid.
    #[error(transparent)]
    InvalidWatch(#[from] WatchRequestError),
    /// The request needs an open connection and there is none now.
    #[error("the kubemux client is not connected")]
    NotConnected,
}

/// One subscription.
#[derive(Debug, Clone)]
struct Subscription<O> {
    cluster: String,
    path: String,
    query: Option<WatchQuery>,
    projection: Option<ProjectionMode>,
    /// Whether the watch asks for `patch` frames.
    deltas: bool,
    /// A `patch` did not apply (the object held is not its base): a `resync` was sent, and
    /// until its `reset` nothing moves the resume point and later patches are dropped.
    resyncing: bool,
    /// The version the visible cache is consistent with (or the replay has reached).
    resume: Option<String>,
    state: SubscriptionState,
    cache: ObjectCache<O>,
    /// The cache being rebuilt after a reset; swapped in at `synced`.
    rebuilding: Option<ObjectCache<O>>,
    /// What the frames up to the next `synced` are.
    awaiting: Awaiting,
}

/// What a subscription's frames up to its next `synced` are, which decides whether an event
/// or a bookmark moves the resume point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    /// Live events, a snapshot, or a replay in version order: each replayed or live event (and
    /// each bookmark) is a resume point; snapshot events never are (there is none yet).
    InOrder,
    /// The answer to a resume sent with `"resume":"inventory"`: it may be the changed objects
    /// in key order, not version order, so only the `synced` that ends it is a resume point; a
    /// connection lost before it resumes from the version sent, again.
    Inventory,
}

impl<O> Subscription<O> {
    fn watch_message(&self, id: &str) -> String {
        ClientMessage::Watch(Watch {
            id: id.to_owned(),
            cluster: self.cluster.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            resource_version: self.resume.clone(),
            resume: (self.awaiting == Awaiting::Inventory).then_some(ResumeMode::Inventory),
            projection: self.projection,
            deltas: self.deltas,
        })
        .encode()
    }

    /// The cache that events go to: the one being rebuilt, else the visible one.
    fn receiving(&mut self) -> &mut ObjectCache<O> {
        self.rebuilding.as_mut().unwrap_or(&mut self.cache)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    Idle,
    Connecting,
    Open { opened_at: u64, last_rx: u64, next_ping: u64 },
    Waiting { retry_at: u64 },
    Closed,
}

/// An `event` frame whose header the shell read itself (the browser shell, from the object
/// `JSON.parse` built), for [`ClientCore::on_event`]: what [`ServerMessage::decode`] would have
/// read from its text.
#[derive(Debug)]
pub struct EventFrame<'a, O> {
    /// The subscription id.
    pub id: &'a str,
    /// What happened.
    pub event_type: EventType,
    /// `(metadata.namespace or "", metadata.name)`; `None` when the object has no name.
    pub key: Option<(&'a str, &'a str)>,
    /// `metadata.resourceVersion`, if a string.
    pub resource_version: Option<&'a str>,
    /// The object.
    pub object: O,
}

/// A `patch` frame whose header the shell read itself, for [`ClientCore::on_patch`]: what
/// [`ServerMessage::decode`] would have read from its text.
#[derive(Debug)]
pub struct PatchFrame<'a, O> {
    /// The subscription id.
    pub id: &'a str,
    /// `(namespace or "", name)` of the object patched.
    pub key: (&'a str, &'a str),
    /// The version of the object the patch applies to.
    pub base: &'a str,
    /// The object's version once patched.
    pub resource_version: &'a str,
    /// The merge patch.
    pub patch: O,
}

/// How the core patches the objects it holds (`patch` frames, `docs/PROTOCOL.md` §3): `held`
/// with the RFC 7386 merge patch `patch` applied, when `held` is at version `base` (its
/// `metadata.resourceVersion`); `None` when it is not. A function the shell hands the core, not
/// a trait, so the browser's can be written for `JsValue` outside this crate.
pub type PatchFn<O> = fn(held: &O, base: &str, patch: &O) -> Option<O>;

/// [`PatchFn`] for `serde_json::Value`s.
pub fn patch_value(held: &Value, base: &str, patch: &Value) -> Option<Value> {
    if resource_version_of(held) != Some(base) {
        return None;
    }
    let mut object = held.clone();
    crate::delta::apply_merge_patch(&mut object, patch);
    Some(object)
}

/// How a watch asks for its objects (`docs/PROTOCOL.md` §2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// The projection (`"projection"`); `None`: whole objects, every change.
    pub projection: Option<ProjectionMode>,
    /// Ask for `patch` frames (`"deltas":true`).
    pub deltas: bool,
}

/// The client state machine, holding objects of type `O`.
#[derive(Debug)]
pub struct ClientCore<O = Value> {
    config: ClientConfig,
    backoff: Backoff,
    conn: Conn,
    subs: BTreeMap<String, Subscription<O>>,
    tokens: BTreeMap<String, String>,
    ping_counter: u64,
    /// The last `stats` request's number, and those the open connection has not answered.
    stats_counter: u64,
    stats_pending: Vec<u64>,
    patch: PatchFn<O>,
}

fn resource_version_of(object: &Value) -> Option<&str> {
    object.get("metadata")?.get("resourceVersion")?.as_str()
}

impl ClientCore<Value> {
    /// A core that has not connected yet, keeping objects as `serde_json::Value`s.
    pub fn new(config: ClientConfig) -> Self {
        ClientCore::with_payload(config, patch_value)
    }

    /// A text frame arrived.
    pub fn on_message(&mut self, now: u64, text: &str) -> Vec<Output> {
        self.on_message_with(now, text, |object| object)
    }
}

impl<O: Clone> ClientCore<O> {
    /// A core that has not connected yet, keeping objects as `O`s, which `patch` patches.
    pub fn with_payload(config: ClientConfig, patch: PatchFn<O>) -> Self {
        let backoff = Backoff::new(config.backoff, config.seed);
        ClientCore { config, backoff, conn: Conn::Idle, subs: BTreeMap::new(), tokens: BTreeMap::new(), ping_counter: 0, stats_counter: 0, stats_pending: Vec::new(), patch }
    }

    /// Starts connecting.
    pub fn start(&mut self, _now: u64) -> Vec<Output<O>> {
        if self.conn != Conn::Idle {
            return Vec::new();
        }
        self.conn = Conn::Connecting;
        vec![Output::State(ConnectionState::Connecting), Output::Connect]
    }

    /// Whether [`ClientCore::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.conn == Conn::Closed
    }

    fn is_open(&self) -> bool {
        matches!(self.conn, Conn::Open { .. })
    }

    /// Adds a subscription. Sent at once when open, otherwise on the next connection.
    pub fn watch(&mut self, id: &str, cluster: &str, path: &str, query: Option<WatchQuery>) -> Result<Vec<Output<O>>, ClientError> {
        self.watch_projected(id, cluster, path, query, None)
    }

    /// [`ClientCore::watch`] with a projection (`docs/PROTOCOL.md` §2): with
    /// [`ProjectionMode::Default`] the objects come without what dashboards never show, and
    /// changes to nothing else do not come at all.
    pub fn watch_projected(&mut self, id: &str, cluster: &str, path: &str, query: Option<WatchQuery>, projection: Option<ProjectionMode>) -> Result<Vec<Output<O>>, ClientError> {
        self.watch_with(id, cluster, path, query, WatchOptions { projection, deltas: false })
    }

    /// [`ClientCore::watch`] with a projection and, with `deltas`, `patch` frames
    /// (`docs/PROTOCOL.md` §2, §3): changes to an object the client holds may come as merge
    /// patches against it, applied with the core's [`PatchFn`].
    pub fn watch_with(&mut self, id: &str, cluster: &str, path: &str, query: Option<WatchQuery>, options: WatchOptions) -> Result<Vec<Output<O>>, ClientError> {
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        let WatchOptions { projection, deltas } = options;
        let query = query.filter(|q| !q.is_empty());
        Watch { id: id.to_owned(), cluster: cluster.to_owned(), path: path.to_owned(), query: query.clone(), resource_version: None, resume: None, projection, deltas }.validate()?;
        if self.subs.contains_key(id) {
            return Err(ClientError::DuplicateId(id.to_owned()));
        }
        let sub = Subscription {
            cluster: cluster.to_owned(),
            path: path.to_owned(),
            query,
            projection,
            deltas,
            resyncing: false,
            resume: None,
            state: SubscriptionState::Syncing,
            cache: ObjectCache::default(),
            rebuilding: None,
            awaiting: Awaiting::InOrder,
        };
        let mut out = vec![Output::SubscriptionState { id: id.to_owned(), state: SubscriptionState::Syncing }];
        if self.is_open() {
            out.push(Output::Send(sub.watch_message(id)));
        }
        self.subs.insert(id.to_owned(), sub);
        Ok(out)
    }

    /// Removes a subscription; nothing more is delivered for it.
    pub fn unwatch(&mut self, id: &str) -> Result<Vec<Output<O>>, ClientError> {
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        if self.subs.remove(id).is_some() && self.is_open() {
            return Ok(vec![Output::Send(ClientMessage::Unwatch { id: id.to_owned() }.encode())]);
        }
        Ok(Vec::new())
    }

    /// Sets the token for a cluster (re-sent on every reconnect).
    pub fn auth(&mut self, cluster: &str, token: &str) -> Result<Vec<Output<O>>, ClientError> {
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        self.tokens.insert(cluster.to_owned(), token.to_owned());
        if self.is_open() {
            return Ok(vec![Output::Send(ClientMessage::Auth { cluster: cluster.to_owned(), token: token.to_owned() }.encode())]);
        }
        Ok(Vec::new())
    }

    /// Asks the server what this connection and its subscriptions cost (`stats`,
    /// `docs/PROTOCOL.md` §2). The number returned comes back in [`Output::Stats`], with the
    /// report, or without one if the connection closes first.
    pub fn stats(&mut self) -> Result<(u64, Vec<Output<O>>), ClientError> {
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        if !self.is_open() {
            return Err(ClientError::NotConnected);
        }
        self.stats_counter += 1;
        self.stats_pending.push(self.stats_counter);
        Ok((self.stats_counter, vec![Output::Send(ClientMessage::Stats { data: Value::from(self.stats_counter) }.encode())]))
    }

    /// The `stats` requests the connection that just ended will never answer.
    fn stats_lost(&mut self) -> impl Iterator<Item = Output<O>> + use<O> {
        std::mem::take(&mut self.stats_pending).into_iter().map(|request| Output::Stats { request, report: None })
    }

    /// Closes for good.
    pub fn close(&mut self) -> Vec<Output<O>> {
        if self.is_closed() {
            return Vec::new();
        }
        let had_socket = matches!(self.conn, Conn::Open { .. } | Conn::Connecting);
        self.conn = Conn::Closed;
        let mut out = Vec::new();
        if had_socket {
            out.push(Output::CloseSocket);
        }
        out.extend(self.stats_lost());
        out.push(Output::State(ConnectionState::Closed));
        out
    }

    /// The socket opened: send tokens, then every subscription with its resume point.
    pub fn on_open(&mut self, now: u64) -> Vec<Output<O>> {
        if self.conn != Conn::Connecting {
            return Vec::new();
        }
        self.conn = Conn::Open { opened_at: now, last_rx: now, next_ping: now + self.config.ping_interval_ms };
        let mut out = vec![Output::State(ConnectionState::Open)];
        for (cluster, token) in &self.tokens {
            out.push(Output::Send(ClientMessage::Auth { cluster: cluster.clone(), token: token.clone() }.encode()));
        }
        for (id, sub) in &mut self.subs {
            // A resync the last connection did not answer: this watch starts over instead.
            sub.resyncing = false;
            if sub.resume.is_none() {
                // A fresh snapshot is coming. If anything is visible (or half rebuilt), build
                // the new state aside so nothing of the old one survives it.
                sub.rebuilding = (!sub.cache.is_empty() || sub.rebuilding.is_some()).then(ObjectCache::default);
            }
            sub.awaiting = if sub.resume.is_some() && self.config.inventory_resume { Awaiting::Inventory } else { Awaiting::InOrder };
            out.push(Output::Send(sub.watch_message(id)));
        }
        out
    }

    /// The socket closed (or failed to open). `code` is the WebSocket close code, if any.
    pub fn on_close(&mut self, now: u64, code: Option<u16>) -> Vec<Output<O>> {
        let up_ms = match self.conn {
            Conn::Open { opened_at, .. } => now.saturating_sub(opened_at),
            Conn::Connecting => 0,
            _ => return Vec::new(),
        };
        self.backoff.connection_ended(up_ms);
        let delay_ms = if code == Some(1001) { self.backoff.small_jitter_ms() } else { self.backoff.next_delay_ms() };
        self.conn = Conn::Waiting { retry_at: now + delay_ms };
        let mut out: Vec<Output<O>> = self.stats_lost().collect();
        out.push(Output::State(ConnectionState::Reconnecting { delay_ms }));
        for (id, sub) in &mut self.subs {
            if sub.state == SubscriptionState::Synced {
                sub.state = SubscriptionState::Stale;
                out.push(Output::SubscriptionState { id: id.clone(), state: SubscriptionState::Stale });
            }
        }
        out
    }

    /// When [`ClientCore::on_tick`] should next be called, if ever.
    pub fn next_deadline(&self) -> Option<u64> {
        match self.conn {
            Conn::Open { last_rx, next_ping, .. } => Some(next_ping.min(last_rx + self.config.dead_after_ms)),
            Conn::Waiting { retry_at } => Some(retry_at),
            _ => None,
        }
    }

    /// Timers: reconnect when the wait is over, ping, and detect a dead connection.
    pub fn on_tick(&mut self, now: u64) -> Vec<Output<O>> {
        match self.conn {
            Conn::Waiting { retry_at } if now >= retry_at => {
                self.conn = Conn::Connecting;
                vec![Output::State(ConnectionState::Connecting), Output::Connect]
            }
            Conn::Open { last_rx, .. } if now >= last_rx + self.config.dead_after_ms => {
                let mut out = vec![Output::CloseSocket];
                out.extend(self.on_close(now, None));
                out
            }
            Conn::Open { opened_at, last_rx, next_ping } if now >= next_ping => {
                self.conn = Conn::Open { opened_at, last_rx, next_ping: now + self.config.ping_interval_ms };
                self.ping_counter += 1;
                vec![Output::Send(ClientMessage::Ping { data: Value::from(self.ping_counter.to_string()) }.encode())]
            }
            _ => Vec::new(),
        }
    }

    /// Notes that something arrived; false when no socket is open (nothing is to be read).
    fn received(&mut self, now: u64) -> bool {
        if let Conn::Open { last_rx, .. } = &mut self.conn {
            *last_rx = now;
            true
        } else {
            false
        }
    }

    /// An `event` frame arrived whose header the shell read itself (see [`EventFrame`]); what
    /// [`ClientCore::on_message_with`] does with an `event` frame's text.
    pub fn on_event(&mut self, now: u64, frame: EventFrame<'_, O>) -> Vec<Output<O>> {
        if !self.received(now) {
            return Vec::new();
        }
        self.event(frame)
    }

    /// A `patch` frame arrived whose header the shell read itself (see [`PatchFrame`]); what
    /// [`ClientCore::on_message_with`] does with a `patch` frame's text. Applied to the object
    /// held when that is at the patch's base, and delivered as a `MODIFIED` of the patched
    /// object; otherwise (nothing held, another version held) the cache cannot follow: a
    /// `resync` is sent, once, and the resume point stays unset until its `reset`.
    pub fn on_patch(&mut self, now: u64, frame: PatchFrame<'_, O>) -> Vec<Output<O>> {
        if !self.received(now) {
            return Vec::new();
        }
        self.patch(frame)
    }

    fn patch(&mut self, frame: PatchFrame<'_, O>) -> Vec<Output<O>> {
        let PatchFrame { id, key, base, resource_version, patch } = frame;
        let apply = self.patch;
        let Some(sub) = self.subs.get_mut(id) else { return Vec::new() };
        if sub.resyncing {
            return Vec::new();
        }
        match sub.receiving().get(key.0, key.1).and_then(|held| apply(held, base, &patch)) {
            Some(object) => self.event(EventFrame { id, event_type: EventType::Modified, key: Some(key), resource_version: Some(resource_version), object }),
            None => {
                sub.resyncing = true;
                sub.resume = None;
                vec![Output::Send(ClientMessage::Resync { id: id.to_owned() }.encode())]
            }
        }
    }

    fn event(&mut self, frame: EventFrame<'_, O>) -> Vec<Output<O>> {
        let EventFrame { id, mut event_type, key, resource_version, object } = frame;
        let Some(sub) = self.subs.get_mut(id) else { return Vec::new() };
        // Snapshot events come in key order, not version order: only a replay or live
        // event (the client already has a resume point) moves the resume point, and
        // not while an inventory may be coming (its changed objects are in key order).
        if let (Some(resume), Awaiting::InOrder, Some(rv)) = (&mut sub.resume, sub.awaiting, resource_version) {
            // In place: a live event costs no allocation for it.
            resume.clear();
            resume.push_str(rv);
        }
        if sub.awaiting == Awaiting::Inventory && event_type == EventType::Modified && !key.is_some_and(|key| sub.receiving().holds_key(key)) {
            // The server sends what changed since the resume point without knowing
            // what the client holds: to the application, an object it never had is new.
            event_type = EventType::Added;
        }
        let id = id.to_owned();
        let mut out = Vec::with_capacity(2);
        // Objects without a name are delivered but not kept.
        let kept = key.map(|key| (key, object.clone()));
        out.push(Output::Event { id: id.clone(), event_type, object });
        match (&mut sub.rebuilding, kept) {
            (Some(aside), Some((key, object))) => aside.apply_keyed(event_type, key, object),
            (Some(_), None) => {}
            (None, kept) => {
                if let Some((key, object)) = kept {
                    sub.cache.apply_keyed(event_type, key, object);
                }
                out.push(Output::Changed { id });
            }
        }
        out
    }

    /// A text frame arrived; an `event` frame's object becomes an `O` through `convert`.
    pub fn on_message_with(&mut self, now: u64, text: &str, convert: impl FnOnce(Value) -> O) -> Vec<Output<O>> {
        if !self.received(now) {
            return Vec::new();
        }
        let message = match ServerMessage::decode(text) {
            Ok(message) => message,
            Err(error) => {
                let status = Status::failure(400, "BadRequest", format!("malformed frame from the server: {error}"));
                return vec![Output::Error { id: None, fatal: false, status }];
            }
        };
        let mut out = Vec::new();
        match message {
            ServerMessage::Pong { .. } => {}
            ServerMessage::Stats { data, connection, subscriptions } => {
                // An answer to a request of this connection; anything else is not ours.
                if let Some(at) = data.as_u64().and_then(|request| self.stats_pending.iter().position(|pending| *pending == request)) {
                    let request = self.stats_pending.remove(at);
                    // Inserted one by one: `from_iter` would sort, and bring a sort into the
                    // WebAssembly package for two keys.
                    let mut report = serde_json::Map::new();
                    report.insert("connection".to_owned(), connection);
                    report.insert("subscriptions".to_owned(), subscriptions);
                    let report = Value::Object(report);
                    out.push(Output::Stats { request, report: Some(report) });
                }
            }
            ServerMessage::Error { id: None, fatal, status } => out.push(Output::Error { id: None, fatal, status }),
            ServerMessage::Error { id: Some(id), fatal, status } => {
                let Some(sub) = self.subs.get_mut(&id) else {
                    // Not (or no longer) ours, e.g. a refused watch: still the application's to see.
                    out.push(Output::Error { id: Some(id), fatal, status });
                    return out;
                };
                let state = if fatal { SubscriptionState::Failed } else { SubscriptionState::Stale };
                if sub.state != state {
                    sub.state = state;
                    out.push(Output::SubscriptionState { id: id.clone(), state });
                }
                if fatal {
                    self.subs.remove(&id);
                }
                out.push(Output::Error { id: Some(id), fatal, status });
            }
            ServerMessage::Event { id, event_type, object } => {
                let key = key_of(&object).map(|(namespace, name)| (namespace.to_owned(), name.to_owned()));
                let resource_version = resource_version_of(&object).map(str::to_owned);
                let frame = EventFrame {
                    id: &id,
                    event_type,
                    key: key.as_ref().map(|(namespace, name)| (namespace.as_str(), name.as_str())),
                    resource_version: resource_version.as_deref(),
                    object: convert(object),
                };
                return self.event(frame);
            }
            ServerMessage::Patch { id, base, namespace, name, resource_version, patch } => {
                let key = (namespace.as_deref().unwrap_or_default(), name.as_str());
                return self.patch(PatchFrame { id: &id, key, base: &base, resource_version: &resource_version, patch: convert(patch) });
            }
            ServerMessage::Inventory { id, keys } => {
                let Some(sub) = self.subs.get_mut(&id) else { return out };
                let visible = sub.rebuilding.is_none();
                let dropped = sub.receiving().drop_unlisted(&keys);
                if visible && !dropped.is_empty() {
                    out.push(Output::Changed { id: id.clone() });
                }
                // Each object the server no longer holds reaches the application as deleted,
                // in its last known state, before the view changes.
                let deleted = dropped.into_iter().map(|object| Output::Event { id: id.clone(), event_type: EventType::Deleted, object });
                out.splice(0..0, deleted);
            }
            ServerMessage::Synced { id, resource_version } => {
                let Some(sub) = self.subs.get_mut(&id) else { return out };
                if !sub.resyncing {
                    sub.resume = Some(resource_version.clone());
                }
                sub.awaiting = Awaiting::InOrder;
                let swapped = sub.rebuilding.take().map(|aside| sub.cache = aside).is_some();
                let state_changed = sub.state != SubscriptionState::Synced;
                sub.state = SubscriptionState::Synced;
                out.push(Output::Synced { id: id.clone(), resource_version });
                if state_changed {
                    out.push(Output::SubscriptionState { id: id.clone(), state: SubscriptionState::Synced });
                }
                if swapped {
                    out.push(Output::Changed { id });
                }
                // Every subscription is consistent again on this connection (a closed
                // connection makes synced ones stale, so this counts this connection only):
                // it succeeded, and the next failure must not wait as if many had failed. A
                // client moved between proxy replicas by restarts reconnects at once each time.
                if self.subs.values().all(|s| matches!(s.state, SubscriptionState::Synced | SubscriptionState::Failed)) {
                    self.backoff.reset();
                }
            }
            ServerMessage::Reset { id } => {
                let Some(sub) = self.subs.get_mut(&id) else { return out };
                sub.resume = None;
                sub.resyncing = false;
                sub.awaiting = Awaiting::InOrder;
                sub.rebuilding = Some(ObjectCache::default());
                let state_changed = sub.state != SubscriptionState::Syncing;
                sub.state = SubscriptionState::Syncing;
                out.push(Output::Reset { id: id.clone() });
                if state_changed {
                    out.push(Output::SubscriptionState { id, state: SubscriptionState::Syncing });
                }
            }
            ServerMessage::Bookmark { id, resource_version } => {
                if let Some(sub) = self.subs.get_mut(&id)
                    && sub.awaiting == Awaiting::InOrder
                    && !sub.resyncing
                {
                    sub.resume = Some(resource_version);
                }
            }
        }
        out
    }

    /// The visible objects of a subscription.
    pub fn items(&self, id: &str) -> Option<impl ExactSizeIterator<Item = &O>> {
        self.subs.get(id).map(|s| s.cache.items())
    }

    /// The visible cache of a subscription.
    pub fn cache(&self, id: &str) -> Option<&ObjectCache<O>> {
        self.subs.get(id).map(|s| &s.cache)
    }

    /// What changed in a subscription's visible objects since the previous call (the first
    /// call, and the first after a `reset`'s rebuilt cache is swapped in, rebuild): see
    /// [`ObjectCache::take_view_change`]. `None` for an unknown (or fatally failed) id.
    pub fn take_view_change(&mut self, id: &str) -> Option<ViewChange<'_, O>> {
        self.subs.get_mut(id).map(|s| s.cache.take_view_change())
    }

    /// A subscription's state; `None` for an unknown (or fatally failed) id.
    pub fn subscription_state(&self, id: &str) -> Option<SubscriptionState> {
        self.subs.get(id).map(|s| s.state)
    }

    /// A subscription's resume point.
    pub fn resume_point(&self, id: &str) -> Option<&str> {
        self.subs.get(id).and_then(|s| s.resume.as_deref())
    }
}

#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod model;
#[cfg(test)]
mod tests;
