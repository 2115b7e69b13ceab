//! One upstream list+watch and its subscribers.
//!
//! ```text
//!  ┌────────┐ ok   ┌──────────┐ stream ends / stalls: re-watch from the last version
//!  │  list  │─────▶│  watch   │◀───────────────────────────────┐
//!  └────────┘      └──────────┘────────────────────────────────┘
//!     ▲  │ error       │ 410 Expired: relist, then `reset` every subscriber
//!     │  ▼             ▼
//!  ┌──────────────────────┐ fatal (400/403/404): every subscriber gets a fatal error; retire
//!  │ backoff (non-fatal)  │
//!  └──────────────────────┘
//! ```
//! Commands (subscribe, unsubscribe, resync) are handled in every state, so a slow or failing
//! upstream never blocks a connection. So is a reload that retires the task's cluster: the task
//! follows it to the cluster that replaced it (the watch restarts from the version it holds, so
//! subscribers carry on without a `reset` when the new server's versions do) or, when the
//! cluster was removed, ends every subscription with one fatal 404.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::{AsyncBufRead, FutureExt, StreamExt};
use kubemux_protocol::frames::Status;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt as _};
use tokio_util::sync::CancellationToken;

use super::cache::{Answer, ObjectJson, ObjectKey, Stored, WatchCache};
use super::request::{Requests, parse_event_type, parse_line, resource_version_of};
use super::{Command, RegistrySettings, ResumeFrom, Sink, WatchKey, WatchRegistry, catch_up, internal_error};
use crate::clusters::Cluster;
use crate::logging::panic_message;
use crate::metrics::{Metrics, ResetCause, ResumeOutcome, TaskKind};
use crate::mux::encode::{self, EventBody};
use crate::upstream_error::{Classified, classify};

pub(super) struct Upstream {
    key: WatchKey,
    task: u64,
    cluster: Arc<Cluster>,
    requests: Requests,
    commands: mpsc::UnboundedReceiver<Command>,
    /// For catch-up tasks to report back; weak, so it does not keep the channel open.
    reports: mpsc::WeakUnboundedSender<Command>,
    registry: Weak<WatchRegistry>,
    settings: RegistrySettings,
    /// Whether the test hook makes this task panic on its first watch line (decided once).
    inject_panic: bool,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    cache: WatchCache,
    /// Subscribers that have their snapshot or replay.
    subscribers: HashMap<u64, Arc<Sink>>,
    /// Subscribers waiting for the first (or next) list.
    waiting: Vec<(u64, Arc<Sink>, Option<ResumeFrom>)>,
    /// Subscribers replaying what they missed from an upstream watch of their own, with the
    /// version at which they join the shared stream.
    catching_up: HashMap<u64, CatchingUp>,
    /// The error of the current failure streak, sent once to each subscriber.
    failing: Option<Status>,
    attempt: u32,
    idle_since: Option<Instant>,
    /// Whether the task is still counted in `upstream_watches` (and may be in the registry).
    counted: bool,
}

struct CatchingUp {
    sink: Arc<Sink>,
    join_at: String,
    task: tokio::task::AbortHandle,
}

/// What one watch line meant.
enum Line {
    /// An event or bookmark, applied and fanned out.
    Applied,
    /// The version is gone (or the stream is unusable): relist.
    Relist,
    /// The upstream reported an error: back off, then resume.
    Failed(Status),
}

/// What the state machine does next.
enum Next {
    Continue,
    Retire,
}

/// How waiting for some work while serving commands ended.
enum Served<T> {
    /// The work finished.
    Done(T),
    /// The task should retire (linger over, channel closed, shutdown).
    Retire,
    /// A reload retired the task's cluster: follow it ([`Upstream::follow`]).
    Moved,
}

#[derive(Deserialize)]
struct ListPage {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<Map<String, Value>>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default, rename = "apiVersion")]
    api_version: Option<String>,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: Option<String>,
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

/// Why listing failed.
enum ListError {
    /// The request could not be built: the subscription's own query is at fault.
    Request(Status),
    /// The API server failed it.
    Api(kube::Error),
}

impl Upstream {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        key: WatchKey,
        task: u64,
        cluster: Arc<Cluster>,
        (commands, reports): (mpsc::UnboundedReceiver<Command>, mpsc::WeakUnboundedSender<Command>),
        registry: Weak<WatchRegistry>,
        settings: RegistrySettings,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Upstream {
        let cache = WatchCache::new(settings.history);
        let requests = Requests::new(&key, &cluster.url());
        let inject_panic = settings.panics(TaskKind::Upstream, &key);
        metrics.upstream_watches.inc();
        Upstream {
            key,
            task,
            cluster,
            requests,
            commands,
            reports,
            registry,
            inject_panic,
            settings,
            metrics,
            shutdown,
            cache,
            subscribers: HashMap::new(),
            waiting: Vec::new(),
            catching_up: HashMap::new(),
            failing: None,
            attempt: 0,
            idle_since: None,
            counted: true,
        }
    }

    /// Runs the task. A panic stops here: every subscription it served gets a fatal 500.
    pub(super) async fn run(mut self) {
        tracing::debug!(cluster = %self.key.cluster, path = %self.key.path, "upstream watch started");
        if let Err(panic) = AssertUnwindSafe(self.drive()).catch_unwind().await {
            self.metrics.task_panic(TaskKind::Upstream);
            tracing::error!(task = %TaskKind::Upstream, cluster = %self.key.cluster, path = %self.key.path, panic = panic_message(panic.as_ref()), "a proxy task panicked; its subscriptions end with an internal error");
            self.end(&internal_error(TaskKind::Upstream, &self.key));
        }
        self.leave();
        tracing::debug!(cluster = %self.key.cluster, path = %self.key.path, "upstream watch stopped");
    }

    async fn drive(&mut self) {
        loop {
            let next = if self.cache.resource_version().is_none() { self.list().await } else { self.watch().await };
            if let Next::Retire = next {
                return;
            }
        }
    }

    // ---- commands -------------------------------------------------------------------------

    /// Handles one command. Returns `Retire` when the task should end.
    fn command(&mut self, command: Option<Command>) -> Next {
        match command {
            None => Next::Retire,
            Some(Command::Subscribe { sub_id, sink, resume }) => {
                self.idle_since = None;
                if self.cache.resource_version().is_some() {
                    self.serve(sub_id, sink, resume);
                } else {
                    if let Some(status) = &self.failing {
                        sink.error(false, status);
                    }
                    self.waiting.push((sub_id, sink, resume));
                }
                Next::Continue
            }
            Some(Command::Unsubscribe { sub_id }) => {
                self.subscribers.remove(&sub_id);
                self.waiting.retain(|(id, _, _)| *id != sub_id);
                if let Some(catching_up) = self.catching_up.remove(&sub_id) {
                    catching_up.task.abort();
                }
                if self.subscribers.is_empty() && self.waiting.is_empty() && self.catching_up.is_empty() {
                    self.idle_since = Some(Instant::now());
                }
                Next::Continue
            }
            Some(Command::Resync { sub_id }) => {
                // Mid-relist, the relist resets every subscriber; a subscriber still waiting or
                // catching up is reset when it is served (`serve` sees its queue is not live).
                if let (Some(sink), Some(rv)) = (self.subscribers.get(&sub_id), self.cache.resource_version()) {
                    self.metrics.reset(ResetCause::Overflow);
                    sink.reset_with_snapshot(self.cache.snapshot().cloned().collect(), rv);
                }
                Next::Continue
            }
            Some(Command::CaughtUp { sub_id, outcome }) => {
                let Some(CatchingUp { sink, join_at, .. }) = self.catching_up.remove(&sub_id) else { return Next::Continue };
                if outcome == catch_up::Outcome::Panicked {
                    sink.error(true, &internal_error(TaskKind::CatchUp, &self.key));
                    if self.subscribers.is_empty() && self.waiting.is_empty() && self.catching_up.is_empty() {
                        self.idle_since = Some(Instant::now());
                    }
                } else if self.cache.resource_version().is_none() {
                    // Mid-relist: served (and if need be reset) after the list.
                    self.waiting.push((sub_id, sink, Some(ResumeFrom::hand_over(join_at))));
                } else if outcome == catch_up::Outcome::Confirmed {
                    self.metrics.resume(ResumeOutcome::CatchUp);
                    self.serve(sub_id, sink, Some(ResumeFrom::hand_over(join_at)));
                } else {
                    self.metrics.resume(ResumeOutcome::Reset);
                    self.reset(sub_id, sink);
                }
                Next::Continue
            }
        }
    }

    /// A subscriber the proxy cannot continue: `reset`, the snapshot, then live events.
    fn reset(&mut self, sub_id: u64, sink: Arc<Sink>) {
        let rv = self.cache.resource_version().expect("reset is called with a listed cache").to_owned();
        self.metrics.reset(ResetCause::ResumeUnavailable);
        sink.reset_with_snapshot(self.cache.snapshot().cloned().collect(), &rv);
        if let Some(status) = &self.failing {
            sink.error(false, status);
        }
        self.subscribers.insert(sub_id, sink);
    }

    /// Starts a catch-up watch from `from` for a subscriber the ring does not reach.
    fn catch_up(&mut self, sub_id: u64, sink: Arc<Sink>, from: u64, join_at: String, to: u64) {
        let client = match self.cluster.client(&self.key.identity) {
            Ok(client) => client,
            Err(_) => {
                self.metrics.resume(ResumeOutcome::Reset);
                return self.reset(sub_id, sink);
            }
        };
        let catch_up = catch_up::CatchUp {
            client,
            key: self.key.clone(),
            requests: self.requests.clone(),
            from,
            to,
            sink: sink.clone(),
            sub_id,
            report: self.reports.clone(),
            within: self.settings.catch_up_timeout,
            max_line_bytes: self.settings.max_line_bytes,
            metrics: self.metrics.clone(),
            inject_panic: self.settings.panics(TaskKind::CatchUp, &self.key),
        };
        let task = tokio::spawn(catch_up.run());
        self.catching_up.insert(sub_id, CatchingUp { sink, join_at, task: task.abort_handle() });
    }

    /// Gives a subscriber its snapshot, replay, inventory, catch-up or reset, then live events.
    fn serve(&mut self, sub_id: u64, sink: Arc<Sink>, resume: Option<ResumeFrom>) {
        if sink.is_detached() {
            // Unwatched (or moved to another identity) before it was served: no work for it.
            return;
        }
        if !sink.is_live() {
            // Its queue overflowed while it waited or caught up: only a reset can continue it.
            return self.reset(sub_id, sink);
        }
        let rv = self.cache.resource_version().expect("serve is called with a listed cache").to_owned();
        match resume {
            None => sink.snapshot(self.cache.snapshot().cloned().collect(), &rv),
            Some(from) => match self.cache.answer(&from.version, from.inventory) {
                Answer::Replay(events) => {
                    if !from.hand_over {
                        self.metrics.resume(ResumeOutcome::Replay);
                    }
                    for (event_type, object) in &events {
                        sink.event(*event_type, object, resource_version_of(object).as_deref());
                    }
                    sink.synced(&rv);
                }
                // The store answers at once, with no upstream request, for a client that takes
                // an inventory: what changed after its version (an object at or before it is as
                // the client holds it), then the keys held now.
                Answer::Inventory(changed) => {
                    self.metrics.resume(ResumeOutcome::Inventory);
                    sink.inventory(&changed, self.cache.keys(), &rv);
                }
                // The client holds everything up to its version: nothing to send, and what the
                // shared stream brings up to that version is withheld from it.
                Answer::Ahead(version) => {
                    self.metrics.resume(ResumeOutcome::Ahead);
                    sink.ahead(version, &from.version);
                }
                Answer::CatchUp { from, to } => return self.catch_up(sub_id, sink, from, rv, to),
                Answer::Reset => {
                    self.metrics.resume(ResumeOutcome::Reset);
                    return self.reset(sub_id, sink);
                }
            },
        }
        if let Some(status) = &self.failing {
            sink.error(false, status);
        }
        self.subscribers.insert(sub_id, sink);
    }

    /// Whether the linger period without subscribers is over; retires under the registry's
    /// lock so that a racing subscribe is never lost.
    fn may_retire(&mut self) -> bool {
        let Some(since) = self.idle_since else { return false };
        if since.elapsed() < self.settings.linger || !self.subscribers.is_empty() || !self.waiting.is_empty() || !self.catching_up.is_empty() {
            return false;
        }
        match self.registry.upgrade() {
            Some(registry) => registry.retire(&self.key, self.task, &self.commands, false),
            None => true,
        }
    }

    /// When the linger period ends; `None` without one, or when it is too long for a clock (a
    /// configured "never").
    fn linger_deadline(&self) -> Option<Instant> {
        self.idle_since.and_then(|since| since.checked_add(self.settings.linger))
    }

    /// Leaves the registry and the `upstream_watches` gauge, once. A failing task leaves before
    /// it tells its subscribers, so that whoever sees the error sees the task gone.
    fn leave(&mut self) {
        if !std::mem::take(&mut self.counted) {
            return;
        }
        self.metrics.upstream_watches.dec();
        if let Some(registry) = self.registry.upgrade() {
            registry.retire(&self.key, self.task, &self.commands, true);
        }
    }

    /// Ends every subscription with a fatal error and retires.
    fn fail(&mut self, status: Status) -> Next {
        tracing::info!(cluster = %self.key.cluster, path = %self.key.path, code = status.code, reason = %status.reason, "upstream watch failed for good");
        self.end(&status);
        Next::Retire
    }

    /// Leaves, then gives every subscription (served, waiting, catching up or still queued) a
    /// fatal error.
    fn end(&mut self, status: &Status) {
        self.leave();
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            if let Command::Subscribe { sink, .. } = command {
                sink.error(true, status);
            }
        }
        for sink in self.subscribers.values().chain(self.waiting.iter().map(|(_, s, _)| s)).chain(self.catching_up.values().map(|c| &c.sink)) {
            sink.error(true, status);
        }
        for catching_up in self.catching_up.values() {
            catching_up.task.abort();
        }
    }

    /// Reports a non-fatal failure once per streak, then waits out the backoff while serving
    /// commands.
    async fn back_off(&mut self, status: Status) -> Next {
        if self.failing.as_ref().is_none_or(|s| s.code != status.code || s.message != status.message) {
            tracing::warn!(cluster = %self.key.cluster, path = %self.key.path, code = status.code, message = %status.message, "upstream watch failing; retrying");
            for sink in self.subscribers.values().chain(self.waiting.iter().map(|(_, s, _)| s)) {
                sink.error(false, &status);
            }
            self.failing = Some(status);
        }
        let ceiling = self.settings.backoff_base.saturating_mul(1 << self.attempt.min(16)).min(self.settings.backoff_cap);
        self.attempt = self.attempt.saturating_add(1);
        let delay = Duration::try_from_secs_f64(ceiling.as_secs_f64() * (0.5 + fastrand::f64() * 0.5)).unwrap_or(ceiling);
        match self.serving(tokio::time::sleep(delay)).await {
            Served::Done(()) if !self.may_retire() => Next::Continue,
            Served::Moved => self.follow(),
            Served::Done(()) | Served::Retire => Next::Retire,
        }
    }

    /// Waits for `work` while serving commands, the linger timer, reloads and shutdown, so that
    /// a slow or failing upstream never keeps a subscriber waiting for an answer.
    async fn serving<T>(&mut self, work: impl std::future::Future<Output = T>) -> Served<T> {
        tokio::pin!(work);
        let retired = self.cluster.retired().clone();
        loop {
            let linger = self.linger_deadline();
            tokio::select! {
                result = &mut work => return Served::Done(result),
                command = self.commands.recv() => if let Next::Retire = self.command(command) { return Served::Retire },
                _ = sleep_until(linger) => {
                    if self.may_retire() {
                        return Served::Retire;
                    }
                }
                _ = retired.cancelled() => return Served::Moved,
                _ = self.shutdown.cancelled() => return Served::Retire,
            }
        }
    }

    /// A reload retired this task's cluster: carries on against the cluster that replaced it,
    /// from the version the cache holds, or ends every subscription if it was removed.
    fn follow(&mut self) -> Next {
        let replacement = self.registry.upgrade().and_then(|registry| registry.cluster(&self.key.cluster));
        match replacement {
            Some(cluster) if !Arc::ptr_eq(&cluster, &self.cluster) => {
                tracing::info!(cluster = %self.key.cluster, path = %self.key.path, "cluster settings changed; the upstream watch restarts against them");
                self.requests = Requests::new(&self.key, &cluster.url());
                self.cluster = cluster;
                // A new server or new credentials deserve a prompt first try.
                self.attempt = 0;
                Next::Continue
            }
            // Retired with no other cluster of its name in force: it was removed (the same one
            // still in force cannot be, as a cluster is retired only once it has left the set).
            _ => self.fail(Status::failure(404, "NotFound", format!("cluster {} was removed from the proxy's configuration; this subscription has ended", self.key.cluster))),
        }
    }

    fn recovered(&mut self) {
        self.attempt = 0;
        if self.failing.take().is_some()
            && let Some(rv) = self.cache.resource_version()
        {
            // The subscribers were told something was wrong (and show themselves stale): the
            // watch is back at the version they hold, so they are consistent again.
            for sink in self.subscribers.values() {
                sink.synced(rv);
            }
        }
    }

    // ---- list ---------------------------------------------------------------------------

    async fn list(&mut self) -> Next {
        let client = match self.cluster.client(&self.key.identity) {
            Ok(client) => client,
            Err(error) => return self.fail(Status::failure(500, "InternalError", format!("cannot build a client for cluster {}: {error}", self.key.cluster))),
        };
        let result = match self.serving(list_all(client, self.requests.clone(), self.settings.page_size)).await {
            Served::Done(result) => result,
            Served::Moved => return self.follow(),
            Served::Retire => return Next::Retire,
        };
        match result {
            Ok((objects, rv)) => {
                self.recovered();
                let relisted = !self.subscribers.is_empty();
                self.cache.replace(objects, rv.clone());
                if relisted {
                    let objects: Vec<ObjectJson> = self.cache.snapshot().cloned().collect();
                    for sink in self.subscribers.values() {
                        self.metrics.reset(ResetCause::Expired);
                        sink.reset_with_snapshot(objects.clone(), &rv);
                    }
                }
                for (sub_id, sink, resume) in std::mem::take(&mut self.waiting) {
                    self.serve(sub_id, sink, resume);
                }
                Next::Continue
            }
            Err(ListError::Request(status)) => self.fail(status),
            Err(ListError::Api(error)) => match classify(&self.key.cluster, &error) {
                Classified::Fatal(status) => self.fail(status),
                Classified::Expired(status) | Classified::Retry(status) => self.back_off(status).await,
            },
        }
    }

    // ---- watch --------------------------------------------------------------------------

    async fn watch(&mut self) -> Next {
        let rv = self.cache.resource_version().expect("watch follows a list").to_owned();
        let client = match self.cluster.client(&self.key.identity) {
            Ok(client) => client,
            Err(error) => return self.fail(Status::failure(500, "InternalError", error.to_string())),
        };
        let request = match self.requests.watch(&rv, Some(self.settings.watch_timeout)) {
            Ok(request) => request,
            Err(error) => return self.fail(error.status()),
        };
        let stream = match self.serving(client.request_stream(request)).await {
            Served::Done(stream) => stream,
            Served::Moved => return self.follow(),
            Served::Retire => return Next::Retire,
        };
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                return match classify(&self.key.cluster, &error) {
                    Classified::Fatal(status) => self.fail(status),
                    Classified::Expired(_) => {
                        self.cache.expire();
                        Next::Continue
                    }
                    Classified::Retry(status) => self.back_off(status).await,
                };
            }
        };
        let started = Instant::now();
        let mut received = 0u64;
        let mut lines = watch_lines(stream, self.settings.max_line_bytes);
        let retired = self.cluster.retired().clone();
        loop {
            let idle_deadline = Instant::now().checked_add(self.settings.idle_timeout);
            let linger = self.linger_deadline();
            tokio::select! {
                line = lines.next() => match line {
                    Some(Ok(line)) => {
                        received += 1;
                        match self.on_line(&line) {
                            Line::Applied => {
                                // Healthy only once the stream delivers, so a watch that opens
                                // and fails at once keeps backing off.
                                if self.attempt > 0 || self.failing.is_some() {
                                    self.recovered();
                                }
                            }
                            Line::Relist => return Next::Continue,
                            Line::Failed(status) => return self.back_off(status).await,
                        }
                    }
                    Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                        let max = self.settings.max_line_bytes;
                        let message = format!("cluster {} sent a watch event longer than the proxy's limit of {max} bytes", self.key.cluster);
                        return self.back_off(Status::failure(502, "BadGateway", message)).await;
                    }
                    Some(Err(LinesCodecError::Io(error))) => {
                        tracing::debug!(cluster = %self.key.cluster, %error, "upstream watch stream broke; resuming");
                        break;
                    }
                    None => break,
                },
                _ = sleep_until(idle_deadline) => {
                    tracing::info!(cluster = %self.key.cluster, path = %self.key.path, "upstream watch sent nothing for {:?}; restarting it", self.settings.idle_timeout);
                    break;
                }
                command = self.commands.recv() => if let Next::Retire = self.command(command) { return Next::Retire },
                _ = sleep_until(linger) => {
                    if self.may_retire() {
                        return Next::Retire;
                    }
                }
                _ = retired.cancelled() => return self.follow(),
                _ = self.shutdown.cancelled() => return Next::Retire,
            }
        }
        // A watch that ends at once with nothing is treated like a failure (client-go's "very
        // short watch"), so a misbehaving upstream is not hammered.
        if received == 0 && started.elapsed() < Duration::from_secs(1) {
            return self.back_off(Status::failure(503, "ServiceUnavailable", format!("cluster {}: watch ended immediately", self.key.cluster))).await;
        }
        Next::Continue
    }

    /// Handles one line of the watch stream.
    fn on_line(&mut self, line: &str) -> Line {
        if self.inject_panic {
            // Reachable only from a test: `RegistrySettings::inject_panic` is doc-hidden, `None`
            // by default, and no flag or config key sets it.
            panic!("injected panic in an upstream task (test hook)");
        }
        let Some(event) = parse_line(line) else {
            tracing::warn!(cluster = %self.key.cluster, "unreadable upstream watch line; restarting the watch");
            return Line::Failed(Status::failure(502, "BadGateway", format!("cluster {} sent an unreadable watch event", self.key.cluster)));
        };
        let object = event.object;
        let meta = event.meta;
        match (parse_event_type(event.kind), event.kind) {
            (Some(event_type), _) => {
                self.metrics.events_in.inc();
                let (Some(name), Some(rv)) = (meta.name, meta.resource_version) else {
                    tracing::warn!(cluster = %self.key.cluster, "upstream event without name or resourceVersion; relisting");
                    self.cache.expire();
                    return Line::Relist;
                };
                let json: ObjectJson = Arc::from(object);
                // The frame's body is written once, for every subscriber (only the head, their
                // id, differs): in the API server's layout it is the line itself, `{` become `,`.
                let body = if event.server_layout { EventBody::after_first_byte(line) } else { encode::event_body(event_type, &json) };
                let version: Arc<str> = Arc::from(&*rv);
                let namespace = meta.namespace.map(|namespace| namespace.0.into_owned()).unwrap_or_default();
                self.cache.apply(event_type, (namespace, name.0.into_owned()), json, rv.0.into_owned());
                for sink in self.subscribers.values() {
                    sink.shared_event(&body, &version);
                }
                Line::Applied
            }
            (None, "BOOKMARK") => {
                if let Some(rv) = meta.resource_version {
                    for sink in self.subscribers.values() {
                        sink.bookmark(&rv);
                    }
                    self.cache.mark(rv.0.into_owned());
                }
                Line::Applied
            }
            _ => {
                let status: Status = serde_json::from_str(object).unwrap_or_else(|_| Status::failure(500, "InternalError", "unreadable ERROR event"));
                if status.code == 410 || crate::upstream_error::too_large_version(&status) {
                    tracing::info!(cluster = %self.key.cluster, path = %self.key.path, "upstream version expired; relisting");
                    self.cache.expire();
                    return Line::Relist;
                }
                tracing::warn!(cluster = %self.key.cluster, code = status.code, "upstream watch error event; backing off");
                Line::Failed(status)
            }
        }
    }
}

/// Sleeps until `deadline`; `None` is never.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Lists every page; items get the `kind` and `apiVersion` that built-in lists leave out, so
/// snapshot objects look like watch objects.
async fn list_all(client: kube::Client, requests: Requests, page_size: u32) -> Result<(BTreeMap<ObjectKey, Stored>, String), ListError> {
    let mut objects = BTreeMap::new();
    let mut continue_token: Option<String> = None;
    loop {
        let request = requests.list_page(page_size, continue_token.as_deref()).map_err(|error| ListError::Request(error.status()))?;
        let page: ListPage = client.request(request).await.map_err(ListError::Api)?;
        let item_kind = page.kind.as_deref().and_then(|k| k.strip_suffix("List")).map(str::to_owned);
        for mut item in page.items {
            if let Some(kind) = &item_kind {
                item.entry("kind").or_insert_with(|| Value::from(kind.clone()));
            }
            if let Some(api_version) = &page.api_version {
                item.entry("apiVersion").or_insert_with(|| Value::from(api_version.clone()));
            }
            let meta = item.get("metadata");
            let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or_default().to_owned();
            let namespace = meta.and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or_default().to_owned();
            let version = meta.and_then(|m| m.get("resourceVersion")).and_then(Value::as_str).map(str::to_owned);
            objects.insert((namespace, name), Stored::new(Arc::from(Value::Object(item).to_string()), version.as_deref()));
        }
        match page.metadata.continue_token.filter(|c| !c.is_empty()) {
            Some(token) => continue_token = Some(token),
            None => {
                let rv = page.metadata.resource_version.unwrap_or_default();
                return Ok((objects, rv));
            }
        }
    }
}

impl Drop for Upstream {
    /// However the task ends (retired, shut down, aborted), it leaves the registry and the gauge.
    fn drop(&mut self) {
        self.leave();
    }
}

/// The lines of a watch response, none longer than `max` bytes: past it, the reader yields
/// `MaxLineLengthExceeded` instead of buffering on (which `AsyncBufReadExt::lines` would do
/// without end).
pub(super) fn watch_lines<S: AsyncBufRead + Send>(stream: S, max: usize) -> FramedRead<Compat<std::pin::Pin<Box<S>>>, LinesCodec> {
    FramedRead::new(Box::pin(stream).compat(), LinesCodec::new_with_max_length(max))
}
