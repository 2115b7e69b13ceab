//! The watch registry: one upstream list+watch per (cluster, path, query, identity), fanned out
//! to every subscriber of every connection.
//!
//! Each upstream watch is a task that owns its cache and its subscribers and is driven by
//! commands; nothing is shared under a lock but the key → task map, which is only touched to
//! find, start or retire a task. A task retires itself after a linger period without
//! subscribers, under the map's lock, so a subscribe racing with the retirement is never lost.
//!
//! A panic in an upstream or catch-up task stops at the task's boundary: the subscriptions it
//! served get a fatal 500, the task leaves the map and the gauge, and the panic is counted in
//! `kubemux_task_panics_total`.

mod cache;
mod catch_up;
mod machine;
mod meter;
mod project;
mod request;

pub(crate) use request::{MAX_URI_BYTES, joined_length};
mod upstream;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kubemux_protocol::client::WatchOptions;
use kubemux_protocol::frames::{EventType, ProjectionMode, ServerMessage, Status, WatchQuery, encode_inventory_raw};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clusters::Cluster;
use crate::identity::Identity;
use crate::live::Live;
use crate::metrics::{Metrics, TaskKind};
use crate::mux::encode::{self, EventBody};
use crate::mux::outbox::{Item, Outbox, Pushed};
use cache::ObjectJson;
use project::SharedEvent;

pub use cache::{Resume, WatchCache};
pub use meter::{UpstreamStats, WatchMeter};

/// Where a subscriber resumes from: the version its client holds, and whether that client
/// accepts an inventory (`"resume":"inventory"`, `docs/PROTOCOL.md` §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeFrom {
    version: String,
    inventory: bool,
    /// A catch-up's hand-over to the shared history (counted as the catch-up's outcome).
    hand_over: bool,
}

impl ResumeFrom {
    /// A client's resume point; `inventory` when it sent `"resume":"inventory"`.
    pub fn new(version: String, inventory: bool) -> ResumeFrom {
        ResumeFrom { version, inventory, hand_over: false }
    }

    /// Where a confirmed catch-up joins the shared history.
    fn hand_over(version: String) -> ResumeFrom {
        ResumeFrom { version, inventory: false, hand_over: true }
    }
}

/// What makes two subscriptions share an upstream watch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchKey {
    /// Cluster name.
    pub cluster: String,
    /// Collection path.
    pub path: String,
    /// Selectors.
    pub query: WatchQuery,
    /// Whose credentials.
    pub identity: Identity,
}

/// Settings of upstream watches.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrySettings {
    /// Ring entries kept per upstream watch for resuming subscribers.
    pub history: usize,
    /// How long an upstream watch without subscribers lives on.
    pub linger: Duration,
    /// An upstream watch that sends nothing (no event, no bookmark) for this long is restarted.
    pub idle_timeout: Duration,
    /// `timeoutSeconds` of upstream watch requests.
    pub watch_timeout: Duration,
    /// `limit` of upstream list pages.
    pub page_size: u32,
    /// `limit` of an upstream list's first page (at most `page_size`): small, so the first
    /// objects reach a cold subscriber as soon as the API server has a few, while the other
    /// pages are `page_size` long.
    pub first_page_size: u32,
    /// First retry delay after an upstream failure (doubles up to `backoff_cap`).
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
    /// How long a resuming subscriber's catch-up watch may take to reach the shared watch
    /// before it gets a `reset` instead.
    pub catch_up_timeout: Duration,
    /// The longest upstream watch line (one event: its object's JSON) buffered; a longer one is
    /// an error of that watch, retried with backoff, so a broken or hostile API server cannot
    /// make the proxy hold an unbounded line. Default [`DEFAULT_MAX_LINE_BYTES`].
    pub max_line_bytes: usize,
    /// A test hook that makes a task panic, to prove panics are contained; `None` but in tests.
    #[doc(hidden)]
    pub inject_panic: Option<InjectedPanic>,
}

/// The default [`RegistrySettings::max_line_bytes`]: 16 MiB, far past any object Kubernetes
/// stores (etcd refuses requests over 1.5 MiB by default, the API server bodies over 3 MiB).
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Test hook: the `task` serving a watch with `label_selector` panics (an upstream task on its
/// first watch line, a catch-up task as it starts).
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedPanic {
    /// Which task panics.
    pub task: TaskKind,
    /// The label selector that sets it off.
    pub label_selector: String,
}

impl RegistrySettings {
    /// Whether the test hook makes `task` panic for `key`.
    fn panics(&self, task: TaskKind, key: &WatchKey) -> bool {
        self.inject_panic.as_ref().is_some_and(|p| p.task == task && key.query.label_selector.as_deref() == Some(p.label_selector.as_str()))
    }
}

/// The fatal error of a subscription whose `task` panicked.
fn internal_error(task: TaskKind, key: &WatchKey) -> Status {
    let what = match task {
        TaskKind::Upstream => "upstream watch",
        TaskKind::CatchUp => "catch-up watch",
        // Not registry tasks: their panics end a connection, not a subscription.
        TaskKind::Terminal | TaskKind::MuxSession | TaskKind::Forward => "session",
    };
    Status::failure(500, "InternalError", format!("the proxy hit an internal error in the {what} of {} on cluster {}; this subscription has ended", key.path, key.cluster))
}

impl Default for RegistrySettings {
    fn default() -> Self {
        RegistrySettings {
            history: 1024,
            linger: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(150),
            watch_timeout: Duration::from_secs(290),
            page_size: 500,
            first_page_size: 50,
            backoff_base: Duration::from_millis(500),
            backoff_cap: Duration::from_secs(30),
            catch_up_timeout: Duration::from_secs(3),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            inject_panic: None,
        }
    }
}

/// Where one subscription's frames go: its connection's outbox, under its id.
///
/// It remembers the last version it sent, which is where the subscription resumes when `auth`
/// moves it to another identity; a sink made for a resuming client starts at the client's
/// version ([`Sink::resuming`]), so a move before anything was sent resumes from there.
#[derive(Debug)]
pub struct Sink {
    outbox: Arc<Outbox>,
    id: Arc<str>,
    /// `{"op":"event","id":<id>`, written once: every event frame of this subscription starts
    /// with it, followed by the event's shared body.
    event_head: Arc<str>,
    metrics: Arc<Metrics>,
    /// The last version sent to this subscription (its resume point as the client sees it),
    /// shared with the event that carried it.
    last_rv: Mutex<Option<Arc<str>>>,
    /// Set when the subscription moved on (unwatch, new token) or ended: frames still coming
    /// from the upstream task are dropped.
    detached: AtomicBool,
    /// Set when a fatal error ended the subscription.
    ended: AtomicBool,
    /// A client resumed ahead of the store ([`Sink::ahead`]): the version up to which the
    /// shared stream's events and bookmarks are withheld from it; 0 when none are.
    withheld_through: AtomicU64,
    /// Whether the subscription asked for the default projection (`"projection":"default"`).
    projection: bool,
    /// When the last `bookmark` for a change the projection hid was sent.
    hidden_bookmark: Mutex<Option<Instant>>,
    /// `{"op":"patch","id":<id>`, when the subscription asked for deltas (`"deltas":true`).
    patch_head: Option<Arc<str>>,
}

/// How often, at most, a projecting subscription is sent a `bookmark` for changes its
/// projection hid (`docs/PROTOCOL.md` §2).
const HIDDEN_BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

impl Sink {
    /// A sink for subscription `id` of a connection.
    pub fn new(outbox: Arc<Outbox>, id: Arc<str>, metrics: Arc<Metrics>) -> Arc<Sink> {
        Sink::resuming(outbox, id, metrics, None)
    }

    /// A sink for subscription `id` whose client holds `version`.
    pub fn resuming(outbox: Arc<Outbox>, id: Arc<str>, metrics: Arc<Metrics>, version: Option<String>) -> Arc<Sink> {
        Sink::projecting(outbox, id, metrics, version, None)
    }

    /// A sink for subscription `id` whose client holds `version` and asked for `projection`.
    pub fn projecting(outbox: Arc<Outbox>, id: Arc<str>, metrics: Arc<Metrics>, version: Option<String>, projection: Option<ProjectionMode>) -> Arc<Sink> {
        Sink::with_options(outbox, id, metrics, version, WatchOptions { projection, deltas: false })
    }

    /// A sink for subscription `id` whose client holds `version` and asked for `options`
    /// (`docs/PROTOCOL.md` §2: `projection`, `deltas`).
    pub fn with_options(outbox: Arc<Outbox>, id: Arc<str>, metrics: Arc<Metrics>, version: Option<String>, options: WatchOptions) -> Arc<Sink> {
        let event_head = encode::event_head(&id);
        let patch_head = options.deltas.then(|| encode::patch_head(&id));
        Arc::new(Sink {
            outbox,
            id,
            event_head,
            metrics,
            last_rv: Mutex::new(version.map(Arc::from)),
            detached: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            withheld_through: AtomicU64::new(0),
            projection: options.projection == Some(ProjectionMode::Default),
            hidden_bookmark: Mutex::new(None),
            patch_head,
        })
    }

    /// Whether what this subscription is sent of a `MODIFIED` depends on the object's previous
    /// state: it asked for the default projection or for deltas.
    pub fn needs_previous(&self) -> bool {
        self.projection || self.patch_head.is_some()
    }

    /// The objects of a snapshot as this subscription is sent them.
    fn view(&self, objects: Vec<Arc<str>>) -> Vec<Arc<str>> {
        if self.projection { objects.iter().map(project::project).collect() } else { objects }
    }

    /// Stops this sink: nothing more it is given is queued.
    pub fn detach(&self) {
        self.detached.store(true, Ordering::Release);
    }

    /// Whether a fatal error ended the subscription.
    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Whether the subscription moved on (unwatched, or to another identity).
    pub fn is_detached(&self) -> bool {
        self.detached.load(Ordering::Acquire)
    }

    /// Whether frames pushed now are queued (not dropped by an overflow).
    pub fn is_live(&self) -> bool {
        self.outbox.is_live(&self.id)
    }

    fn push(&self, frame: String) -> Pushed {
        if self.detached.load(Ordering::Acquire) {
            return Pushed::Dropped;
        }
        self.outbox.push(&self.id, frame)
    }

    fn rv_slot(&self) -> MutexGuard<'_, Option<Arc<str>>> {
        self.last_rv.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last version this subscription was sent.
    pub fn last_resource_version(&self) -> Option<String> {
        self.rv_slot().as_deref().map(str::to_owned)
    }

    /// The subscription id.
    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    fn synced_frame(&self, rv: &str) -> String {
        ServerMessage::Synced { id: self.id.to_string(), resource_version: rv.to_owned() }.encode()
    }

    fn reset_frame(&self) -> String {
        ServerMessage::Reset { id: self.id.to_string() }.encode()
    }

    /// Whether a frame at `rv` is one the client already holds (it resumed ahead of the store
    /// and the stream has not passed its version yet). The first version past it, or one that
    /// cannot be ordered, ends the withholding.
    fn withheld(&self, rv: &str) -> bool {
        let through = self.withheld_through.load(Ordering::Acquire);
        if through == 0 {
            return false;
        }
        if cache::integer_version(rv).is_some_and(|version| version <= through) {
            return true;
        }
        self.withheld_through.store(0, Ordering::Release);
        false
    }

    /// Sends one event; `rv` is the event's version (the client's next resume point).
    pub fn event(&self, event_type: EventType, object: &str, rv: Option<&str>) {
        if rv.is_some_and(|rv| self.withheld(rv)) {
            return;
        }
        let projected = if self.projection { project::project_text(object) } else { None };
        self.push_event(&encode::event_body(event_type, projected.as_deref().unwrap_or(object)), rv.map(Arc::from));
    }

    /// Sends one live event, whose frame body (and projection, and delta) was built once for
    /// every subscriber that gets it.
    pub fn shared_event(&self, event: &SharedEvent) {
        if self.withheld(&event.version) {
            return;
        }
        let body = if self.projection {
            match (event.projected(), &self.patch_head) {
                (Some(body), _) => body,
                // With deltas a hidden change still moves the client's copy to its version (a
                // patch of the version alone), so every later patch's base is the previous
                // version, whatever the client resumed from.
                (None, Some(head)) => {
                    self.outbox.count_hidden(&self.id);
                    return match event.touch() {
                        Some(touch) => self.push_item_event(head, &touch.body, Some(event.version.clone())),
                        None => self.push_event(&event.body_projected_whole(), Some(event.version.clone())),
                    };
                }
                (None, None) => return self.hidden(&event.version),
            }
        } else {
            &event.body
        };
        if let Some(head) = &self.patch_head
            && let Some(delta) = event.delta(self.projection)
        {
            return self.push_item_event(head, &delta.body, Some(event.version.clone()));
        }
        self.push_event(body, Some(event.version.clone()))
    }

    /// A change the projection hides: not sent; its version goes as a `bookmark` if none went
    /// for a hidden change in the last [`HIDDEN_BOOKMARK_INTERVAL`] (otherwise the next event
    /// or bookmark moves the resume point past it; a resume from before it replays it, which
    /// changes nothing the client holds).
    fn hidden(&self, rv: &str) {
        if self.detached.load(Ordering::Acquire) {
            return;
        }
        self.outbox.count_hidden(&self.id);
        let now = Instant::now();
        let mut last = self.hidden_bookmark.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|at| now.duration_since(at) >= HIDDEN_BOOKMARK_INTERVAL) {
            *last = Some(now);
            drop(last);
            self.bookmark(rv);
        }
    }

    fn push_event(&self, body: &EventBody, rv: Option<Arc<str>>) {
        self.push_item_event(&self.event_head, body, rv);
    }

    /// Queues a frame made of `head` (the subscription's `event` or `patch` head) and `body`.
    fn push_item_event(&self, head: &Arc<str>, body: &EventBody, rv: Option<Arc<str>>) {
        if self.detached.load(Ordering::Acquire) {
            return;
        }
        if self.outbox.push_item(&self.id, Item::Event { head: head.clone(), body: body.0.clone() }) == Pushed::Queued {
            self.metrics.events_out.inc();
            if let Some(rv) = rv {
                *self.rv_slot() = Some(rv);
            }
        }
    }

    /// Sends `bookmark`.
    pub fn bookmark(&self, rv: &str) {
        if self.withheld(rv) {
            return;
        }
        let frame = ServerMessage::Bookmark { id: self.id.to_string(), resource_version: rv.to_owned() }.encode();
        if self.push(frame) == Pushed::Queued {
            *self.rv_slot() = Some(Arc::from(rv));
        }
    }

    /// Sends `synced`; while the client is ahead of the stream, at the client's version (it is
    /// consistent there, not at the older one).
    pub fn synced(&self, rv: &str) {
        let rv = self.synced_version(rv);
        if self.push(self.synced_frame(&rv)) == Pushed::Queued {
            *self.rv_slot() = Some(Arc::from(rv.as_str()));
        }
    }

    /// The version a `synced` at `rv` carries: the client's own while it is ahead of `rv`.
    fn synced_version(&self, rv: &str) -> String {
        let through = self.withheld_through.load(Ordering::Acquire);
        if through > 0 && cache::integer_version(rv).is_some_and(|version| version <= through) { through.to_string() } else { rv.to_owned() }
    }

    /// Sends an error for this subscription.
    pub fn error(&self, fatal: bool, status: &Status) {
        self.metrics.error(metric_reason(&status.reason));
        let frame = ServerMessage::Error { id: Some(self.id.to_string()), fatal, status: status.clone() }.encode();
        if !fatal {
            self.push(frame);
        } else if !self.detached.load(Ordering::Acquire) && self.outbox.push_reset(&self.id, vec![Item::Frame(frame)]) == Pushed::Queued {
            // The subscription ends here, so whatever was queued for it matters less than the
            // error itself, which must get through even if the queue had overflowed.
            self.ended.store(true, Ordering::Release);
        }
    }

    /// Sends the snapshot (`ADDED` for every object) and `synced`, admitted whole: a snapshot
    /// larger than the connection's queue limit still reaches a client that reads, without a
    /// `reset` and a second copy.
    pub fn snapshot(&self, objects: Vec<Arc<str>>, rv: &str) {
        let count = objects.len() as u64;
        if self.detached.load(Ordering::Acquire) {
            return;
        }
        let synced = self.synced_version(rv);
        let items = vec![Item::Snapshot(self.view(objects).into_iter()), Item::Frame(self.synced_frame(&synced))];
        if self.outbox.push_whole(&self.id, items) == Pushed::Queued {
            self.metrics.events_out.inc_by(count);
            *self.rv_slot() = Some(Arc::from(synced.as_str()));
        }
    }

    /// Sends part of a snapshot as the list brings it (`ADDED` for each object), after a
    /// `reset` that replaces whatever is queued when `reset` (the subscription held a state, or
    /// part of a list that was restarted); admitted whole like [`Sink::snapshot`]. The
    /// snapshot ends with [`Sink::snapshot_end`]. Returns whether it was queued.
    pub fn snapshot_part(&self, objects: Vec<Arc<str>>, reset: bool) -> bool {
        if self.detached.load(Ordering::Acquire) {
            return false;
        }
        let count = objects.len() as u64;
        let objects = self.view(objects);
        let pushed = if reset {
            // A full state replaces the client's: nothing it held is assumed any more.
            self.withheld_through.store(0, Ordering::Release);
            self.outbox.push_reset(&self.id, vec![Item::Frame(self.reset_frame()), Item::Snapshot(objects.into_iter())])
        } else {
            self.outbox.push_whole(&self.id, vec![Item::Snapshot(objects.into_iter())])
        };
        if pushed == Pushed::Queued {
            self.metrics.events_out.inc_by(count);
            if reset {
                self.outbox.count_reset(&self.id);
            }
        }
        pushed == Pushed::Queued
    }

    /// Ends a snapshot sent in parts: `synced` at the list's version, admitted whole.
    pub fn snapshot_end(&self, rv: &str) {
        if self.detached.load(Ordering::Acquire) {
            return;
        }
        if self.outbox.push_whole(&self.id, vec![Item::Frame(self.synced_frame(rv))]) == Pushed::Queued {
            *self.rv_slot() = Some(Arc::from(rv));
        }
    }

    /// Sends an inventory resume: `MODIFIED` for each changed object (in key order, so none of
    /// them is a resume point: the last version sent stays the client's), the `inventory` of
    /// `keys`, and `synced` at `rv`.
    pub fn inventory<'a>(&self, changed: &[ObjectJson], keys: impl IntoIterator<Item = (&'a str, &'a str)>, rv: &str) {
        for object in changed {
            self.event(EventType::Modified, object, None);
        }
        self.push(encode_inventory_raw(&self.id, keys));
        self.synced(rv);
    }

    /// Answers a client whose version is ahead of the store (`version`, written `rv`): it holds
    /// everything up to there, so `synced` at once; then the shared stream's events and
    /// bookmarks at or before `version` are withheld from it (`docs/PROTOCOL.md` §4).
    pub fn ahead(&self, version: u64, rv: &str) {
        self.withheld_through.store(version, Ordering::Release);
        self.synced(rv);
    }

    /// Replaces whatever is queued with `reset`, the snapshot and `synced`.
    pub fn reset_with_snapshot(&self, objects: Vec<Arc<str>>, rv: &str) {
        if self.detached.load(Ordering::Acquire) {
            return;
        }
        // A full state replaces the client's: nothing it held is assumed any more.
        self.withheld_through.store(0, Ordering::Release);
        let count = objects.len() as u64;
        let items = vec![Item::Frame(self.reset_frame()), Item::Snapshot(self.view(objects).into_iter()), Item::Frame(self.synced_frame(rv))];
        if self.outbox.push_reset(&self.id, items) == Pushed::Queued {
            self.metrics.events_out.inc_by(count);
            self.outbox.count_reset(&self.id);
            *self.rv_slot() = Some(Arc::from(rv));
        }
    }
}

/// The reasons errors are counted by: Kubernetes' `StatusReason`s and the proxy's own. A reason
/// an upstream makes up is counted as `Other`, so an upstream cannot grow the metrics without
/// bound.
const METRIC_REASONS: &[&str] = &[
    "AlreadyExists",
    "BadGateway",
    "BadRequest",
    "Conflict",
    "Expired",
    "Forbidden",
    "Gone",
    "InternalError",
    "Invalid",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "RequestEntityTooLarge",
    "RequestURITooLong",
    "ServerTimeout",
    "ServiceUnavailable",
    "StoreReadError",
    "Timeout",
    "TooManyRequests",
    "Unauthorized",
    "Unknown",
    "UnsupportedMediaType",
];

fn metric_reason(reason: &str) -> &str {
    METRIC_REASONS.iter().copied().find(|known| *known == reason).unwrap_or("Other")
}

enum Command {
    Subscribe {
        sub_id: u64,
        sink: Arc<Sink>,
        resume: Option<ResumeFrom>,
    },
    Unsubscribe {
        sub_id: u64,
    },
    Resync {
        sub_id: u64,
    },
    /// A catch-up watch finished.
    CaughtUp {
        sub_id: u64,
        outcome: catch_up::Outcome,
    },
}

/// A live subscription to an upstream watch; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    sub_id: u64,
    commands: mpsc::UnboundedSender<Command>,
    meter: Arc<WatchMeter>,
}

impl Subscription {
    fn new(sub_id: u64, commands: mpsc::UnboundedSender<Command>, meter: Arc<WatchMeter>) -> Subscription {
        meter.subscribers_changed(1);
        Subscription { sub_id, commands, meter }
    }

    /// What the upstream watch it shares has cost so far.
    pub fn upstream_stats(&self) -> UpstreamStats {
        self.meter.report()
    }

    /// Asks for a reset and snapshot (after the connection's queue overflowed and drained).
    pub fn resync(&self) {
        // A send error means the upstream task has ended, and with it this subscription.
        let _ = self.commands.send(Command::Resync { sub_id: self.sub_id });
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.meter.subscribers_changed(-1);
        let _ = self.commands.send(Command::Unsubscribe { sub_id: self.sub_id });
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Subscribe { sub_id, .. } => write!(f, "Subscribe({sub_id})"),
            Command::Unsubscribe { sub_id } => write!(f, "Unsubscribe({sub_id})"),
            Command::Resync { sub_id } => write!(f, "Resync({sub_id})"),
            Command::CaughtUp { sub_id, outcome } => write!(f, "CaughtUp({sub_id}, {outcome:?})"),
        }
    }
}

/// A running upstream watch: its command channel, which task it is, and its meter.
struct Entry {
    task: u64,
    commands: mpsc::UnboundedSender<Command>,
    meter: Arc<WatchMeter>,
}

/// The registry of upstream watches.
pub struct WatchRegistry {
    // Commands are unbounded so that a subscribe or unsubscribe (including from `Drop`) never
    // waits or fails; their number is bounded by the per-connection subscription limit.
    watches: Mutex<HashMap<WatchKey, Entry>>,
    /// Where clusters and settings come from: an upstream task follows its cluster through
    /// reloads by looking it up here when it is retired.
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    next_sub: AtomicU64,
    shutdown: CancellationToken,
}

impl WatchRegistry {
    /// A registry over the clusters `live` has in force.
    pub fn new(live: Arc<Live>, metrics: Arc<Metrics>, shutdown: CancellationToken) -> Arc<WatchRegistry> {
        Arc::new(WatchRegistry { watches: Mutex::new(HashMap::new()), live, metrics, next_sub: AtomicU64::new(1), shutdown })
    }

    fn map(&self) -> MutexGuard<'_, HashMap<WatchKey, Entry>> {
        self.watches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cluster in force under `name` now, if any.
    fn cluster(&self, name: &str) -> Option<Arc<Cluster>> {
        self.live.snapshot().clusters.get(name)
    }

    /// Upstream watches running now.
    pub fn upstream_count(&self) -> usize {
        self.map().len()
    }

    /// Subscribes `sink` to the upstream watch of `key`, starting one if needed. The caller has
    /// looked `cluster` up in the snapshot in force; if a reload retires it meanwhile, the task
    /// notices at once (its token is cancelled) and follows the reload.
    pub fn subscribe(self: &Arc<Self>, key: WatchKey, cluster: Arc<Cluster>, sink: Arc<Sink>, resume: Option<ResumeFrom>) -> Subscription {
        let sub_id = self.next_sub.fetch_add(1, Ordering::Relaxed);
        let mut map = self.map();
        let mut command = Command::Subscribe { sub_id, sink, resume };
        if let Some(entry) = map.get(&key) {
            match entry.commands.send(command) {
                Ok(()) => return Subscription::new(sub_id, entry.commands.clone(), entry.meter.clone()),
                Err(mpsc::error::SendError(returned)) => command = returned,
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(command).expect("the receiver is alive");
        let task_id = self.next_sub.fetch_add(1, Ordering::Relaxed);
        let meter = WatchMeter::new(self.metrics.clone(), &key.cluster, meter::resource_of(&key.path));
        map.insert(key.clone(), Entry { task: task_id, commands: tx.clone(), meter: meter.clone() });
        drop(map);
        // Settings as they are now: a reload changes those of upstream watches started after it.
        let settings = self.live.snapshot().settings.registry.clone();
        let task = upstream::Upstream::new(key, task_id, cluster, (rx, tx.downgrade()), Arc::downgrade(self), settings, (self.metrics.clone(), meter.clone()), self.shutdown.clone());
        tokio::spawn(task.run());
        Subscription::new(sub_id, tx, meter)
    }

    /// Removes `key` if its task may retire: called by the task itself under the map's lock.
    /// Returns false when new commands arrived meanwhile (the task must go on).
    /// With `force` (a fatal error) the task retires whatever is queued; its caller then
    /// answers the queued subscribes itself.
    fn retire(&self, key: &WatchKey, task: u64, rx: &mpsc::UnboundedReceiver<Command>, force: bool) -> bool {
        let mut map = self.map();
        if !force && !rx.is_empty() {
            return false;
        }
        if map.get(key).is_some_and(|entry| entry.task == task) {
            map.remove(key);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mux::outbox::Outgoing;

    #[tokio::test]
    async fn a_fatal_error_gets_through_an_overflowed_queue() {
        let metrics = Arc::new(Metrics::default());
        let outbox = Outbox::new(100, metrics.clone());
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        outbox.add_subscription(&a);
        outbox.add_subscription(&b);
        let sink = Sink::new(outbox.clone(), a.clone(), metrics);
        for _ in 0..8 {
            outbox.push(&a, "x".repeat(10));
        }
        // b's frame does not fit: a, the heaviest, overflows and its events are dropped.
        outbox.push(&b, "y".repeat(30));
        assert!(!sink.is_live());
        sink.error(true, &Status::failure(403, "Forbidden", "no longer allowed"));
        assert!(sink.is_ended(), "the fatal error was queued");
        let mut frames = Vec::new();
        while outbox.queued_bytes() > 0 {
            let Some(Outgoing::Text(frame)) = outbox.next().await else { panic!() };
            frames.push(frame);
        }
        assert!(frames.iter().any(|f| f.contains(r#""fatal":true"#) && f.contains("no longer allowed")), "{frames:?}");
    }

    /// An inventory resume is the changed objects, the inventory and `synced`, and its events
    /// (in key order) never become the subscription's resume point: until `synced`, a move to
    /// another identity resumes from the client's own version.
    #[tokio::test]
    async fn an_inventory_resume_is_a_resume_point_only_at_its_synced() {
        let metrics = Arc::new(Metrics::default());
        let outbox = Outbox::new(1 << 20, metrics.clone());
        let id: Arc<str> = Arc::from("cm");
        outbox.add_subscription(&id);
        let sink = Sink::resuming(outbox.clone(), id, metrics, Some("5".into()));
        sink.event(EventType::Modified, r#"{"metadata":{"name":"b","resourceVersion":"8"}}"#, None);
        assert_eq!(sink.last_resource_version().as_deref(), Some("5"));
        let changed: Vec<ObjectJson> = vec![Arc::from(r#"{"metadata":{"name":"a","resourceVersion":"9"}}"#)];
        sink.inventory(&changed, [("", "a"), ("", "b")], "9");
        assert_eq!(sink.last_resource_version().as_deref(), Some("9"));
        let frames = drain(&outbox).await;
        assert!(
            matches!(&frames[..], [ServerMessage::Event { .. }, ServerMessage::Event { event_type: EventType::Modified, .. }, ServerMessage::Inventory { keys, .. }, ServerMessage::Synced { resource_version, .. }] if keys[""] == ["a", "b"] && resource_version == "9"),
            "{frames:?}"
        );
    }

    /// Every frame queued in `outbox`, decoded.
    async fn drain(outbox: &Outbox) -> Vec<ServerMessage> {
        let mut frames = Vec::new();
        while outbox.queued_bytes() > 0 {
            let Some(Outgoing::Text(frame)) = outbox.next().await else { panic!() };
            frames.push(ServerMessage::decode(&frame).unwrap());
        }
        frames
    }

    /// A client ahead of the store gets `synced` at its own version at once; the shared
    /// stream's events, bookmarks and `synced` up to that version never reach it (it holds
    /// them), the first event past it does, and so does everything after; a `reset` ends the
    /// withholding as well.
    #[tokio::test]
    async fn a_client_ahead_of_the_store_gets_nothing_it_holds() {
        let metrics = Arc::new(Metrics::default());
        let outbox = Outbox::new(1 << 20, metrics.clone());
        let id: Arc<str> = Arc::from("cm");
        outbox.add_subscription(&id);
        let sink = Sink::resuming(outbox.clone(), id, metrics, Some("20".into()));
        let object = |name: &str, rv: u64| format!(r#"{{"metadata":{{"name":"{name}","resourceVersion":"{rv}"}}}}"#);
        sink.ahead(20, "20");
        sink.event(EventType::Modified, &object("a", 15), Some("15"));
        sink.bookmark("18");
        sink.synced("18");
        sink.event(EventType::Deleted, &object("b", 20), Some("20"));
        assert_eq!(sink.last_resource_version().as_deref(), Some("20"));
        sink.event(EventType::Added, &object("c", 21), Some("21"));
        sink.bookmark("19");
        assert_eq!(sink.last_resource_version().as_deref(), Some("19"), "past the client's version, the stream is passed on as it comes");
        let frames = drain(&outbox).await;
        assert!(
            matches!(&frames[..], [ServerMessage::Synced { resource_version: a, .. }, ServerMessage::Synced { resource_version: b, .. }, ServerMessage::Event { event_type: EventType::Added, .. }, ServerMessage::Bookmark { resource_version: c, .. }] if a == "20" && b == "20" && c == "19"),
            "{frames:?}"
        );
        sink.ahead(30, "30");
        sink.reset_with_snapshot(vec![Arc::from(object("a", 25).as_str())], "25");
        sink.event(EventType::Modified, &object("a", 26), Some("26"));
        let frames = drain(&outbox).await;
        assert!(
            matches!(&frames[..], [ServerMessage::Reset { .. }, ServerMessage::Event { .. }, ServerMessage::Synced { resource_version, .. }, ServerMessage::Event { .. }] if resource_version == "25"),
            "{frames:?}"
        );
    }

    /// A snapshot larger than the connection's queue limit reaches a client that reads, whole
    /// and once: its `synced` does not overflow the queue it is in (which made the client get
    /// the first objects, a `reset` and every object again: 11,445 events for 10,000 pods).
    #[tokio::test]
    async fn a_snapshot_larger_than_the_queue_arrives_once_without_a_reset() {
        let metrics = Arc::new(Metrics::default());
        let outbox = Outbox::new(1000, metrics.clone());
        let id: Arc<str> = Arc::from("pods");
        outbox.add_subscription(&id);
        let sink = Sink::new(outbox.clone(), id, metrics);
        let object = |i: usize| Arc::from(format!(r#"{{"metadata":{{"name":"p{i}","resourceVersion":"{i}","padding":"{}"}}}}"#, "x".repeat(100)).as_str());
        sink.snapshot((0..20).map(object).collect(), "20");
        assert!(sink.is_live());
        assert!(sink.snapshot_part((20..30).map(object).collect(), false), "a part of a streamed snapshot is admitted whole too");
        sink.snapshot_end("30");
        let frames = drain(&outbox).await;
        assert_eq!(frames.iter().filter(|f| matches!(f, ServerMessage::Event { event_type: EventType::Added, .. })).count(), 30);
        assert!(!frames.iter().any(|f| matches!(f, ServerMessage::Reset { .. })), "{frames:?}");
        assert!(matches!(&frames[20], ServerMessage::Synced { resource_version, .. } if resource_version == "20"));
        assert!(matches!(frames.last(), Some(ServerMessage::Synced { resource_version, .. }) if resource_version == "30"));
        assert_eq!(sink.last_resource_version().as_deref(), Some("30"));
    }

    #[test]
    fn reasons_an_upstream_makes_up_are_counted_as_other() {
        let metrics = Arc::new(Metrics::default());
        let outbox = Outbox::new(1 << 20, metrics.clone());
        let id: Arc<str> = Arc::from("a");
        outbox.add_subscription(&id);
        let sink = Sink::new(outbox, id, metrics.clone());
        for i in 0..3 {
            sink.error(false, &Status::failure(500, &format!("Invented{i}"), "an upstream's own reason"));
        }
        sink.error(false, &Status::failure(503, "ServiceUnavailable", "a Kubernetes reason"));
        let text = metrics.render();
        assert!(text.contains(r#"kubemux_errors_total{reason="Other"} 3"#), "{text}");
        assert!(text.contains(r#"kubemux_errors_total{reason="ServiceUnavailable"} 1"#), "{text}");
        assert!(!text.contains("Invented"), "{text}");
    }
}
