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
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt as _};
use tokio_util::sync::CancellationToken;

use super::cache::{Answer, ObjectJson, ObjectKey, Stored, WatchCache};
use super::request::{Requests, parse_event_type, parse_line, parse_list_page, resource_version_of};
use super::{Command, RegistrySettings, ResumeFrom, Sink, WatchKey, WatchMeter, WatchRegistry, catch_up, internal_error};
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
    /// What this watch costs (`stats`, `/metrics`); this task is its counters' only writer.
    meter: Arc<WatchMeter>,
    shutdown: CancellationToken,
    cache: WatchCache,
    /// Subscribers that have their snapshot or replay.
    subscribers: HashMap<u64, Arc<Sink>>,
    /// Subscribers waiting for the first (or next) list.
    waiting: Vec<(u64, Arc<Sink>, Option<ResumeFrom>)>,
    /// Subscribers being sent the list in flight as its pages arrive: fresh ones, and on a
    /// relist every served one (after a `reset`). They get its `synced` at its end.
    streamed: HashMap<u64, Streamed>,
    /// The objects of the list in flight so far, in the order the API server listed them
    /// (their text shared with what is queued for the streamed subscribers).
    received: Vec<(ObjectKey, Stored)>,
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

/// A subscriber being sent the list in flight.
struct Streamed {
    sink: Arc<Sink>,
    /// How many of the received objects it was sent.
    sent: usize,
    /// Why it must get a `reset` before the next objects (then all received so far): it held
    /// a state (a relist), got part of a list that was restarted, or lost what was queued.
    reset: Option<ResetCause>,
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

impl Upstream {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        key: WatchKey,
        task: u64,
        cluster: Arc<Cluster>,
        (commands, reports): (mpsc::UnboundedReceiver<Command>, mpsc::WeakUnboundedSender<Command>),
        registry: Weak<WatchRegistry>,
        settings: RegistrySettings,
        (metrics, meter): (Arc<Metrics>, Arc<WatchMeter>),
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
            meter,
            shutdown,
            cache,
            subscribers: HashMap::new(),
            waiting: Vec::new(),
            streamed: HashMap::new(),
            received: Vec::new(),
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
                    let fresh = resume.is_none();
                    self.waiting.push((sub_id, sink, resume));
                    if fresh && !self.received.is_empty() {
                        // Mid-list: what came so far at once, the rest as it comes.
                        self.stream_received();
                    }
                }
                Next::Continue
            }
            Some(Command::Unsubscribe { sub_id }) => {
                self.subscribers.remove(&sub_id);
                self.waiting.retain(|(id, _, _)| *id != sub_id);
                self.streamed.remove(&sub_id);
                if let Some(catching_up) = self.catching_up.remove(&sub_id) {
                    catching_up.task.abort();
                }
                if self.is_idle() {
                    self.idle_since = Some(Instant::now());
                }
                Next::Continue
            }
            Some(Command::Resync { sub_id }) => {
                // Mid-relist, the relist resets every subscriber; one being sent the list is
                // reset with what it has so far; a subscriber still waiting or catching up is
                // reset when it is served (`serve` sees its queue is not live).
                if let Some(streamed) = self.streamed.get_mut(&sub_id) {
                    streamed.reset = Some(ResetCause::Overflow);
                } else if let (Some(sink), Some(rv)) = (self.subscribers.get(&sub_id), self.cache.resource_version()) {
                    self.metrics.reset(ResetCause::Overflow);
                    sink.reset_with_snapshot(self.cache.snapshot().cloned().collect(), rv);
                }
                Next::Continue
            }
            Some(Command::CaughtUp { sub_id, outcome }) => {
                let Some(CatchingUp { sink, join_at, .. }) = self.catching_up.remove(&sub_id) else { return Next::Continue };
                if outcome == catch_up::Outcome::Panicked {
                    sink.error(true, &internal_error(TaskKind::CatchUp, &self.key));
                    if self.is_idle() {
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
        self.meter.request();
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
        if since.elapsed() < self.settings.linger || !self.is_idle() {
            return false;
        }
        match self.registry.upgrade() {
            Some(registry) => registry.retire(&self.key, self.task, &self.commands, false),
            None => true,
        }
    }

    /// Whether no subscriber is left (served, waiting, being sent a list or catching up).
    fn is_idle(&self) -> bool {
        self.subscribers.is_empty() && self.waiting.is_empty() && self.streamed.is_empty() && self.catching_up.is_empty()
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
        for sink in self.subscribers.values().chain(self.waiting.iter().map(|(_, s, _)| s)).chain(self.streamed.values().map(|s| &s.sink)).chain(self.catching_up.values().map(|c| &c.sink)) {
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
            for sink in self.subscribers.values().chain(self.waiting.iter().map(|(_, s, _)| s)).chain(self.streamed.values().map(|s| &s.sink)) {
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

    /// Lists page by page, each page sent on to the streamed subscribers as it arrives.
    async fn list(&mut self) -> Next {
        let client = match self.cluster.client(&self.key.identity) {
            Ok(client) => client,
            Err(error) => return self.fail(Status::failure(500, "InternalError", format!("cannot build a client for cluster {}: {error}", self.key.cluster))),
        };
        // A list starts over from its first page: whoever got part of an earlier attempt gets
        // a `reset` before this one's objects, so nothing reaches a client twice.
        self.received.clear();
        for streamed in self.streamed.values_mut() {
            if streamed.sent > 0 {
                streamed.reset.get_or_insert(ResetCause::Expired);
            }
            streamed.sent = 0;
        }
        let mut continue_token: Option<String> = None;
        // One buffer for every page's body: a page costs no fresh memory (nor its page faults).
        let mut body = Vec::new();
        let rv = loop {
            let limit = if continue_token.is_none() { self.settings.first_page_size.clamp(1, self.settings.page_size.max(1)) } else { self.settings.page_size };
            let request = match self.requests.list_page(limit, continue_token.as_deref()) {
                Ok(request) => request,
                Err(error) => return self.fail(error.status()),
            };
            self.meter.request();
            let read = match self.serving(read_page(&client, request, &mut body)).await {
                Served::Done(read) => read,
                Served::Moved => return self.follow(),
                Served::Retire => return Next::Retire,
            };
            if read.is_ok() {
                self.meter.received_bytes(body.len() as u64);
            }
            let parsed = read.and_then(|()| String::from_utf8(std::mem::take(&mut body)).map_err(kube::Error::FromUtf8)).map(|text| {
                let page = parse_list_page(&text).map_err(kube::Error::SerdeError);
                body = text.into_bytes();
                page
            });
            let page = match parsed.and_then(|page| page) {
                Ok(page) => page,
                Err(error) => {
                    return match classify(&self.key.cluster, &error) {
                        Classified::Fatal(status) => self.fail(status),
                        Classified::Expired(status) | Classified::Retry(status) => self.back_off(status).await,
                    };
                }
            };
            self.meter.received_objects(page.objects.len() as u64);
            self.received.extend(page.objects);
            self.stream_received();
            match page.continue_token {
                Some(token) => continue_token = Some(token),
                None => break page.resource_version.unwrap_or_default(),
            }
        };
        self.recovered();
        self.meter.export();
        let objects: BTreeMap<ObjectKey, Stored> = std::mem::take(&mut self.received).into_iter().collect();
        self.cache.replace(objects, rv.clone());
        for (sub_id, streamed) in std::mem::take(&mut self.streamed) {
            if let Some(cause) = streamed.reset {
                // It lost what was queued (or never had it): the whole list, after a `reset`.
                self.metrics.reset(cause);
                streamed.sink.reset_with_snapshot(self.cache.snapshot().cloned().collect(), &rv);
            } else {
                streamed.sink.snapshot_end(&rv);
            }
            self.subscribers.insert(sub_id, streamed.sink);
        }
        for (sub_id, sink, resume) in std::mem::take(&mut self.waiting) {
            self.serve(sub_id, sink, resume);
        }
        Next::Continue
    }

    /// Sends each streamed subscriber the received objects it does not have yet. Served
    /// subscribers (a relist) join with a `reset`, fresh waiting ones with everything
    /// received so far; subscribers resuming from a version wait for the list's end.
    fn stream_received(&mut self) {
        for (sub_id, sink) in self.subscribers.drain() {
            self.streamed.insert(sub_id, Streamed { sink, sent: 0, reset: Some(ResetCause::Expired) });
        }
        for (sub_id, sink, resume) in std::mem::take(&mut self.waiting) {
            if resume.is_some() {
                self.waiting.push((sub_id, sink, resume));
            } else if !sink.is_detached() {
                // Its queue overflowed while it waited: only a reset can continue it.
                let reset = (!sink.is_live()).then_some(ResetCause::ResumeUnavailable);
                self.streamed.insert(sub_id, Streamed { sink, sent: 0, reset });
            }
        }
        let received = self.received.len();
        for streamed in self.streamed.values_mut() {
            if streamed.reset.is_none() && streamed.sent == received {
                continue;
            }
            let from = if streamed.reset.is_some() { 0 } else { streamed.sent };
            let objects: Vec<ObjectJson> = self.received[from..].iter().map(|(_, stored)| stored.json().clone()).collect();
            if streamed.sink.snapshot_part(objects, streamed.reset.is_some()) {
                if let Some(cause) = streamed.reset.take() {
                    self.metrics.reset(cause);
                }
                streamed.sent = received;
            } else if !streamed.sink.is_detached() {
                // Dropped: another subscription's frames overflowed the connection's queue.
                streamed.reset = Some(ResetCause::Overflow);
            }
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
        self.meter.request();
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
                        self.meter.reset();
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
                        // The line and its newline, as the API server sent them.
                        self.meter.received_bytes(line.len() as u64 + 1);
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
                self.meter.received_objects(1);
                let (Some(name), Some(rv)) = (meta.name, meta.resource_version) else {
                    tracing::warn!(cluster = %self.key.cluster, "upstream event without name or resourceVersion; relisting");
                    self.meter.reset();
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
                    self.meter.reset();
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

/// One list page's body, read into `body` (emptied first).
async fn read_page(client: &kube::Client, request: http::Request<Vec<u8>>, body: &mut Vec<u8>) -> Result<(), kube::Error> {
    let stream = client.request_stream(request).await?;
    let mut stream = std::pin::pin!(stream);
    body.clear();
    futures::AsyncReadExt::read_to_end(&mut stream, body).await.map_err(kube::Error::ReadEvents)?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use axum::extract::{Query, State};
    use axum::response::{IntoResponse, Response};
    use kubemux_protocol::frames::{EventType, ServerMessage, WatchQuery};
    use tokio::sync::Notify;

    use super::*;
    use crate::identity::Identity;
    use crate::mux::outbox::{Outbox, Outgoing};

    /// A fake API server of three ConfigMaps, listed two to a page; from its `gate_from`th
    /// list on, its second page waits for `release`, and the first `expire_second` times it is
    /// asked it answers 410 (the continue token expired). Its first `expire_watch` watches
    /// send a 410 `ERROR` event once released; watches stay open and send nothing else.
    struct Fake {
        release: Notify,
        expire_second: Mutex<u32>,
        expire_watch: Mutex<u32>,
        gate_from: u32,
        lists: Mutex<u32>,
        /// The `limit` of every list request, in order.
        limits: Mutex<Vec<String>>,
    }

    fn item(name: &str, rv: u32) -> serde_json::Value {
        serde_json::json!({"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv.to_string()}, "data": {"k": name}})
    }

    async fn api(State(fake): State<Arc<Fake>>, Query(query): Query<HashMap<String, String>>) -> Response {
        if query.contains_key("watch") {
            let expire = take_one(&fake.expire_watch);
            let line = async move {
                fake.release.notified().await;
                let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410});
                Ok::<_, std::io::Error>(bytes::Bytes::from(format!("{}\n", serde_json::json!({"type": "ERROR", "object": status}))))
            };
            let lines = futures::stream::once(line).filter(move |_| std::future::ready(expire));
            return axum::body::Body::from_stream(lines.chain(futures::stream::pending())).into_response();
        }
        fake.limits.lock().unwrap().push(query.get("limit").cloned().unwrap_or_default());
        let page = match query.get("continue") {
            None => {
                *fake.lists.lock().unwrap() += 1;
                serde_json::json!({"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {"resourceVersion": "10", "continue": "t1"}, "items": [item("a", 3), item("b", 4)]})
            }
            Some(_) => {
                if *fake.lists.lock().unwrap() >= fake.gate_from {
                    fake.release.notified().await;
                }
                if take_one(&fake.expire_second) {
                    let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "the continue token expired", "reason": "Expired", "code": 410});
                    return (http::StatusCode::GONE, axum::Json(status)).into_response();
                }
                serde_json::json!({"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {"resourceVersion": "10"}, "items": [item("c", 5)]})
            }
        };
        axum::Json(page).into_response()
    }

    /// Takes one from `left`, if any is left.
    fn take_one(left: &Mutex<u32>) -> bool {
        let mut left = left.lock().unwrap();
        let took = *left > 0;
        *left = left.saturating_sub(1);
        took
    }

    struct Harness {
        fake: Arc<Fake>,
        outbox: Arc<Outbox>,
        commands: mpsc::UnboundedSender<Command>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    }

    impl Harness {
        /// Another fresh subscriber, on a connection of its own.
        fn subscribe(&self, sub_id: u64) -> Arc<Outbox> {
            let outbox = Outbox::new(1 << 20, self.metrics.clone());
            let id: Arc<str> = Arc::from("cm");
            outbox.add_subscription(&id);
            let sink = Sink::new(outbox.clone(), id, self.metrics.clone());
            self.commands.send(Command::Subscribe { sub_id, sink, resume: None }).unwrap();
            outbox
        }
    }

    impl Drop for Harness {
        fn drop(&mut self) {
            self.shutdown.cancel();
        }
    }

    /// An upstream task over the fake API server with one fresh subscriber.
    async fn start(expire_second: u32, expire_watch: u32, gate_from: u32) -> Harness {
        let fake =
            Arc::new(Fake { release: Notify::new(), expire_second: Mutex::new(expire_second), expire_watch: Mutex::new(expire_watch), gate_from, lists: Mutex::new(0), limits: Mutex::default() });
        let app = axum::Router::new().fallback(api).with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let cluster = Arc::new(Cluster::new("c".into(), kube::Config::new(url.parse().unwrap())).unwrap());
        let key = WatchKey { cluster: "c".into(), path: "/api/v1/namespaces/ns/configmaps".into(), query: WatchQuery::default(), identity: Identity::Proxy };
        let settings = RegistrySettings { page_size: 2, first_page_size: 1, backoff_base: Duration::from_millis(1), backoff_cap: Duration::from_millis(1), ..RegistrySettings::default() };
        let metrics = Arc::new(Metrics::default());
        let outbox = Outbox::new(1 << 20, metrics.clone());
        let id: Arc<str> = Arc::from("cm");
        outbox.add_subscription(&id);
        let sink = Sink::new(outbox.clone(), id, metrics.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(Command::Subscribe { sub_id: 1, sink, resume: None }).unwrap();
        let shutdown = CancellationToken::new();
        let meter = WatchMeter::new(metrics.clone(), "c", "configmaps".into());
        let upstream = Upstream::new(key, 2, cluster, (rx, tx.downgrade()), Weak::new(), settings, (metrics.clone(), meter), shutdown.clone());
        tokio::spawn(upstream.run());
        Harness { fake, outbox, commands: tx, metrics, shutdown }
    }

    /// The next `n` frames of the subscription, each within a deadline.
    async fn frames(outbox: &Outbox, n: usize) -> Vec<ServerMessage> {
        let mut frames = Vec::new();
        while frames.len() < n {
            match tokio::time::timeout(Duration::from_secs(10), outbox.next()).await {
                Ok(Some(Outgoing::Text(text))) => frames.push(ServerMessage::decode(&text).unwrap()),
                other => panic!("no frame {} of {n} came: {other:?} after {frames:?}", frames.len() + 1),
            }
        }
        frames
    }

    fn added(frame: &ServerMessage) -> Option<String> {
        let ServerMessage::Event { event_type: EventType::Added, object, .. } = frame else { return None };
        assert_eq!((object["kind"].as_str(), object["apiVersion"].as_str()), (Some("ConfigMap"), Some("v1")), "list items look like watch objects: {object}");
        object["metadata"]["name"].as_str().map(str::to_owned)
    }

    /// A cold subscriber gets the first page's objects while the API server is still working
    /// on the second, then the rest and `synced`; one that joins meanwhile gets what came so
    /// far at once, then the same.
    #[tokio::test]
    async fn a_cold_list_is_sent_page_by_page() {
        let harness = start(0, 0, 1).await;
        let first = frames(&harness.outbox, 2).await;
        assert_eq!(first.iter().filter_map(added).collect::<Vec<_>>(), ["a", "b"], "the first page, before the second was answered");
        let joiner = harness.subscribe(3);
        let joined = frames(&joiner, 2).await;
        assert_eq!(joined.iter().filter_map(added).collect::<Vec<_>>(), ["a", "b"], "what came so far, before the second page was answered");
        harness.fake.release.notify_one();
        for outbox in [&harness.outbox, &joiner] {
            let rest = frames(outbox, 2).await;
            assert_eq!(added(&rest[0]).as_deref(), Some("c"));
            assert!(matches!(&rest[1], ServerMessage::Synced { resource_version, .. } if resource_version == "10"), "{rest:?}");
        }
        assert_eq!(*harness.fake.limits.lock().unwrap(), ["1", "2"], "a short first page, then full ones");
    }

    /// A list whose continue token expires after the first page was sent starts over; the
    /// subscriber gets a `reset` before the objects again, so none is counted twice, and
    /// ends with exactly the listed objects.
    #[tokio::test]
    async fn a_restarted_list_resets_before_it_sends_anything_again() {
        let harness = start(1, 0, 1).await;
        let mut seen = frames(&harness.outbox, 2).await;
        harness.fake.release.notify_one();
        // The retry's second page is answered at once.
        harness.fake.release.notify_one();
        while !matches!(seen.last(), Some(ServerMessage::Synced { .. })) {
            seen.extend(frames(&harness.outbox, 1).await);
            if *harness.fake.lists.lock().unwrap() > 1 {
                harness.fake.release.notify_one();
            }
        }
        let segments: Vec<&[ServerMessage]> = seen.split(|frame| matches!(frame, ServerMessage::Reset { .. })).collect();
        assert_eq!(segments.len(), 2, "one reset, for the restart: {seen:?}");
        for segment in &segments {
            let names: Vec<String> = segment.iter().filter_map(added).collect();
            assert_eq!(names.len(), names.iter().collect::<BTreeSet<_>>().len(), "no object twice without a reset between: {seen:?}");
        }
        assert_eq!(segments[1].iter().filter_map(added).collect::<Vec<_>>(), ["a", "b", "c"], "{seen:?}");
        assert_eq!(*harness.fake.lists.lock().unwrap(), 2);
    }

    /// A watch whose version expired relists, and its served subscriber gets `reset` and the
    /// new list page by page as it comes (built aside by the client), then `synced`.
    #[tokio::test]
    async fn a_relist_resets_served_subscribers_and_streams_to_them() {
        let harness = start(0, 1, 2).await;
        let listed = frames(&harness.outbox, 4).await;
        assert_eq!(listed.iter().filter_map(added).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(matches!(&listed[3], ServerMessage::Synced { .. }), "{listed:?}");
        // The watch says 410: the relist's first page comes after a reset, before its second.
        harness.fake.release.notify_one();
        let relisted = frames(&harness.outbox, 3).await;
        assert!(matches!(&relisted[0], ServerMessage::Reset { .. }), "{relisted:?}");
        assert_eq!(relisted[1..].iter().filter_map(added).collect::<Vec<_>>(), ["a", "b"]);
        harness.fake.release.notify_one();
        let rest = frames(&harness.outbox, 2).await;
        assert_eq!(added(&rest[0]).as_deref(), Some("c"));
        assert!(matches!(&rest[1], ServerMessage::Synced { resource_version, .. } if resource_version == "10"), "{rest:?}");
        assert_eq!(*harness.fake.lists.lock().unwrap(), 2);
    }
}
