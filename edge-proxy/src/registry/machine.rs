//! The upstream state machine, sans-IO: one list+watch and its subscribers as states, and one
//! step function from what happened ([`Input`]) to what to do ([`Action`]). It makes no
//! request, reads no clock (the driver passes `now`) and sleeps on nothing: its timers are
//! [`Action::Arm`]s the driver sleeps on and feeds back as [`Input::Fired`]. It only counts
//! into the in-memory [`Metrics`] and logs; `upstream.rs` is the driver that does the IO.
//!
//! ```text
//!  ┌──────────┐ last page  ┌──────────┐ stream ends / idle: re-watch from the held version
//!  │ Listing  │───────────▶│ Watching │◀───────────────────────────────┐
//!  └──────────┘            └──────────┘────────────────────────────────┘
//!     ▲  │ error               │ 410 Expired: relist, then `reset` every served subscriber
//!     │  ▼                     ▼
//!  ┌──────────────────────────────┐ fatal (400/403/404, cluster removed): every subscriber
//!  │ BackingOff (non-fatal error) │ gets one fatal error ──▶ Retired
//!  └──────────────────────────────┘
//! ```
//! Commands (subscribe, unsubscribe, resync, a catch-up's end) are handled in every state, so
//! a slow or failing upstream never blocks a connection.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kubemux_protocol::client::{Backoff, BackoffConfig};
use kubemux_protocol::frames::{EventType, Status};
use tokio::time::Instant;

use super::cache::{Answer, ObjectJson, ObjectKey, Stored, WatchCache};
use super::project::{Previous, SharedEvent};
use super::request::{ListPage, parse_event_type, parse_line, resource_version_of};
use super::{Command, RegistrySettings, ResumeFrom, Sink, WatchKey, WatchMeter, catch_up, internal_error};
use crate::metrics::{Metrics, ResetCause, ResumeOutcome, TaskKind};
use crate::mux::encode::{self, EventBody};
use crate::upstream_error::Classified;

/// A watch that ends this soon with nothing is treated like a failure (client-go's "very
/// short watch"), so a misbehaving upstream is not hammered.
const SHORT_WATCH: Duration = Duration::from_secs(1);

/// Where the upstream stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum State {
    /// A list page is asked for: the first, or the one after `continue_token`.
    Listing { continue_token: Option<String> },
    /// A watch from the held version (the cache's) is asked for (`since: None`) or open since
    /// `since`, with `lines` lines read.
    Watching { since: Option<Instant>, lines: u64 },
    /// Waiting out a failure until `until`; `attempt` is the failure's number in its streak.
    BackingOff { until: Instant, attempt: u32 },
    /// Done: nothing more happens.
    Retired,
}

/// A timer the machine arms; the driver keeps one deadline per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Timer {
    /// The backoff is over.
    Backoff,
    /// The linger period without subscribers is over.
    Linger,
    /// The open watch has sent nothing for `idle_timeout`.
    Idle,
}

/// What happened.
#[derive(Debug)]
pub(super) enum Input<'a> {
    /// The task starts.
    Start,
    /// A command from the registry, a subscription or a catch-up; `None`: the channel closed.
    Command(Option<Command>),
    /// The page asked for arrived.
    Page(ListPage),
    /// The page asked for failed (the request, or the client or request could not be built).
    PageFailed(Classified),
    /// The watch asked for is open.
    WatchOpened,
    /// The watch asked for failed.
    WatchFailed(Classified),
    /// One line of the open watch.
    Line(&'a str),
    /// The open watch sent a line longer than the limit.
    LineTooLong,
    /// The open watch's stream ended or broke.
    WatchEnded,
    /// A timer armed with [`Action::Arm`] is due.
    Fired(Timer),
    /// A [`Frame::SnapshotPart`] was dropped (the connection's queue overflowed).
    PartDropped { sub_id: u64 },
    /// An [`Action::Retire`] was refused: commands arrived meanwhile.
    RetireRefused,
    /// A reload replaced the cluster: the driver now talks to the new one.
    ClusterChanged,
    /// A reload removed the cluster.
    ClusterRemoved,
    /// The proxy shuts down.
    Shutdown,
}

/// What one subscriber is sent: a [`Sink`] method each.
#[derive(Debug, Clone)]
pub(super) enum Frame {
    /// [`Sink::snapshot`].
    Snapshot(Vec<ObjectJson>, String),
    /// [`Sink::snapshot_part`], after a `reset` when `reset` says why (counted if queued);
    /// a dropped part is fed back as [`Input::PartDropped`].
    SnapshotPart(Vec<ObjectJson>, Option<ResetCause>),
    /// [`Sink::snapshot_end`].
    SnapshotEnd(String),
    /// [`Sink::reset_with_snapshot`].
    ResetWithSnapshot(Vec<ObjectJson>, String),
    /// [`Sink::event`]: a replayed event.
    Event(EventType, ObjectJson, Option<String>),
    /// [`Sink::shared_event`]: a live event, its body written once for every subscriber (and
    /// its projection once for every projecting one).
    Shared(Arc<SharedEvent>),
    /// [`Sink::bookmark`].
    Bookmark(Arc<str>),
    /// [`Sink::synced`].
    Synced(String),
    /// [`Sink::inventory`].
    Inventory(Vec<ObjectJson>, Vec<(String, String)>, String),
    /// [`Sink::ahead`].
    Ahead(u64, String),
    /// [`Sink::error`].
    Error(bool, Status),
}

/// What to do.
#[derive(Debug)]
pub(super) enum Action {
    /// Ask for one list page (dropping whatever request or stream is in flight).
    List { limit: u32, continue_token: Option<String> },
    /// Open a watch from `from` (dropping whatever request or stream is in flight).
    Watch { from: String },
    /// Drop the request or stream in flight (the machine backs off).
    Abandon,
    /// Fire `timer` at `at` (replacing its earlier deadline).
    Arm(Timer, Instant),
    /// Send one subscriber a frame.
    Send { sub_id: u64, sink: Arc<Sink>, frame: Frame },
    /// Start a catch-up watch for a subscriber from its version `from`, handing over at `to`;
    /// it reports with a `CaughtUp` command (so does a catch-up that cannot start).
    CatchUp { sub_id: u64, sink: Arc<Sink>, from: u64, to: u64 },
    /// Stop a subscriber's catch-up.
    AbortCatchUp { sub_id: u64 },
    /// The linger period is over: retire if the registry lets the task (no command queued),
    /// else feed back [`Input::RetireRefused`].
    Retire,
    /// Leave the registry now and end the subscribes still queued with this fatal error (the
    /// machine's own subscribers get it in the sends that follow).
    End(Status),
}

/// A subscriber being sent the list in flight.
#[derive(Debug)]
struct Streamed {
    sink: Arc<Sink>,
    /// How many of the received objects it was sent.
    sent: usize,
    /// Why it must get a `reset` before the next objects (then all received so far): it held
    /// a state (a relist), got part of a list that was restarted, or lost what was queued.
    reset: Option<ResetCause>,
}

/// The upstream list+watch of one key and its subscribers.
pub(super) struct Machine {
    key: WatchKey,
    settings: RegistrySettings,
    metrics: Arc<Metrics>,
    /// The watch's cost meter: the machine counts objects and relists, the driver requests and
    /// bytes.
    meter: Arc<WatchMeter>,
    state: State,
    cache: WatchCache,
    /// Subscribers that have their snapshot or replay.
    subscribers: Subscribers,
    /// Subscribers waiting for the first (or next) list.
    waiting: Vec<(u64, Arc<Sink>, Option<ResumeFrom>)>,
    /// Subscribers being sent the list in flight as its pages arrive: fresh ones, and on a
    /// relist every served one (after a `reset`). They get its `synced` at its end.
    streamed: HashMap<u64, Streamed>,
    /// The objects of the list in flight so far, in the order the API server listed them.
    received: Vec<(ObjectKey, Stored)>,
    /// Subscribers replaying what they missed from a catch-up watch, with the version at which
    /// they join the shared stream.
    catching_up: HashMap<u64, (Arc<Sink>, String)>,
    /// The error of the current failure streak, sent once to each subscriber.
    failing: Option<Status>,
    /// The shared client backoff, its full jitter narrowed to the upper half of each ceiling
    /// (as the proxy always waited: at least half the ceiling, so a streak cannot retry at once).
    backoff: Backoff,
    /// Failures since the last recovery (or the last change of cluster).
    attempts: u32,
    /// Since when no subscriber is left.
    idle_since: Option<Instant>,
    out: Vec<Action>,
}

impl Machine {
    /// A machine for `key`; `seed` seeds the backoff's jitter.
    pub(super) fn new(key: WatchKey, settings: RegistrySettings, (metrics, meter): (Arc<Metrics>, Arc<WatchMeter>), seed: u64) -> Machine {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = BackoffConfig { base_ms: millis(settings.backoff_base), cap_ms: millis(settings.backoff_cap), reset_after_ms: u64::MAX };
        Machine {
            cache: WatchCache::new(settings.history),
            key,
            settings,
            metrics,
            meter,
            state: State::Listing { continue_token: None },
            subscribers: Subscribers::default(),
            waiting: Vec::new(),
            streamed: HashMap::new(),
            received: Vec::new(),
            catching_up: HashMap::new(),
            failing: None,
            backoff: Backoff::new(config, seed),
            attempts: 0,
            idle_since: None,
            out: Vec::new(),
        }
    }

    /// Where the machine stands.
    pub(super) fn state(&self) -> &State {
        &self.state
    }

    /// Steps the machine: appends to `actions` what to do after `input`, in order (a buffer
    /// the driver reuses, so that a watch line costs no allocation for its actions).
    pub(super) fn step(&mut self, input: Input<'_>, now: Instant, actions: &mut Vec<Action>) {
        std::mem::swap(&mut self.out, actions);
        if self.state != State::Retired {
            self.handle(input, now);
        }
        std::mem::swap(&mut self.out, actions);
    }

    /// Ends every subscription with a fatal `status` and retires: the driver's way out after
    /// a panic; what a step interrupted by one had decided is dropped.
    pub(super) fn end(&mut self, status: &Status, actions: &mut Vec<Action>) {
        self.out.clear();
        std::mem::swap(&mut self.out, actions);
        self.finish(status);
        std::mem::swap(&mut self.out, actions);
    }

    /// Ends every subscription with a fatal `status` and retires (a fatal upstream error, a
    /// removed cluster, a panic).
    fn finish(&mut self, status: &Status) {
        self.out.push(Action::End(status.clone()));
        let sinks: Vec<(u64, Arc<Sink>)> = self
            .subscribers
            .drain()
            .chain(self.waiting.drain(..).map(|(id, sink, _)| (id, sink)))
            .chain(self.streamed.drain().map(|(id, s)| (id, s.sink)))
            .chain(self.catching_up.iter().map(|(id, (sink, _))| (*id, sink.clone())))
            .collect();
        for (sub_id, sink) in sinks {
            self.send(sub_id, &sink, Frame::Error(true, status.clone()));
        }
        for (sub_id, _) in std::mem::take(&mut self.catching_up) {
            self.out.push(Action::AbortCatchUp { sub_id });
        }
        self.state = State::Retired;
    }

    fn handle(&mut self, input: Input<'_>, now: Instant) {
        match input {
            Input::Start => self.begin_list(),
            Input::Command(None) | Input::Shutdown => self.state = State::Retired,
            Input::Command(Some(command)) => self.command(command, now),
            Input::Page(page) if matches!(self.state, State::Listing { .. }) => self.page(page),
            Input::PageFailed(failure) if matches!(self.state, State::Listing { .. }) => match failure {
                Classified::Fatal(status) => self.fail(&status),
                Classified::Expired(status) | Classified::Retry(status) => self.back_off(status, now),
            },
            Input::WatchOpened if matches!(self.state, State::Watching { since: None, .. }) => {
                self.state = State::Watching { since: Some(now), lines: 0 };
                self.arm_idle(now);
            }
            Input::WatchFailed(failure) if matches!(self.state, State::Watching { since: None, .. }) => match failure {
                Classified::Fatal(status) => self.fail(&status),
                Classified::Expired(_) => {
                    self.meter.reset();
                    self.cache.expire();
                    self.begin_list();
                }
                Classified::Retry(status) => self.back_off(status, now),
            },
            Input::Line(line) => {
                if let State::Watching { since: Some(_), lines } = &mut self.state {
                    *lines += 1;
                    self.line(line, now);
                }
            }
            Input::LineTooLong if matches!(self.state, State::Watching { since: Some(_), .. }) => {
                let message = format!("cluster {} sent a watch event longer than the proxy's limit of {} bytes", self.key.cluster, self.settings.max_line_bytes);
                self.back_off(Status::failure(502, "BadGateway", message), now);
            }
            Input::WatchEnded => self.watch_ended(now),
            Input::Fired(Timer::Idle) => {
                if matches!(self.state, State::Watching { since: Some(_), .. }) {
                    tracing::info!(cluster = %self.key.cluster, path = %self.key.path, "upstream watch sent nothing for {:?}; restarting it", self.settings.idle_timeout);
                    self.watch_ended(now);
                }
            }
            Input::Fired(Timer::Backoff) => {
                if matches!(self.state, State::BackingOff { until, .. } if until <= now) {
                    self.resume();
                }
            }
            Input::Fired(Timer::Linger) => {
                if self.idle_since.and_then(|since| since.checked_add(self.settings.linger)).is_some_and(|end| end <= now) && self.is_idle() {
                    self.out.push(Action::Retire);
                }
            }
            // The linger is over: retire as soon as the queued commands leave the task idle.
            Input::RetireRefused => self.out.push(Action::Arm(Timer::Linger, now)),
            Input::PartDropped { sub_id } => {
                if let Some(streamed) = self.streamed.get_mut(&sub_id)
                    && !streamed.sink.is_detached()
                {
                    streamed.reset = Some(ResetCause::Overflow);
                }
            }
            Input::ClusterChanged => {
                // A new server or new credentials deserve a prompt first try.
                self.backoff.reset();
                self.attempts = 0;
                self.resume();
            }
            Input::ClusterRemoved => self.fail(&Status::failure(404, "NotFound", format!("cluster {} was removed from the proxy's configuration; this subscription has ended", self.key.cluster))),
            // An answer to a request no longer asked for: nothing to do.
            Input::Page(_) | Input::PageFailed(_) | Input::WatchOpened | Input::WatchFailed(_) | Input::LineTooLong => {}
        }
    }

    fn send(&mut self, sub_id: u64, sink: &Arc<Sink>, frame: Frame) {
        self.out.push(Action::Send { sub_id, sink: sink.clone(), frame });
    }

    fn arm_idle(&mut self, now: Instant) {
        if let Some(at) = now.checked_add(self.settings.idle_timeout) {
            self.out.push(Action::Arm(Timer::Idle, at));
        }
    }

    /// No subscriber is left since `now`: the linger period starts.
    fn idle(&mut self, now: Instant) {
        if !self.is_idle() {
            return;
        }
        self.idle_since = Some(now);
        // Too long for a clock is a configured "never".
        if let Some(at) = now.checked_add(self.settings.linger) {
            self.out.push(Action::Arm(Timer::Linger, at));
        }
    }

    /// Whether no subscriber is left (served, waiting, being sent a list or catching up).
    fn is_idle(&self) -> bool {
        self.subscribers.is_empty() && self.waiting.is_empty() && self.streamed.is_empty() && self.catching_up.is_empty()
    }

    /// Carries on from where the cache is: a watch from its version, or a list.
    fn resume(&mut self) {
        match self.cache.resource_version() {
            Some(rv) => {
                let from = rv.to_owned();
                self.state = State::Watching { since: None, lines: 0 };
                self.out.push(Action::Watch { from });
            }
            None => self.begin_list(),
        }
    }

    fn fail(&mut self, status: &Status) {
        tracing::info!(cluster = %self.key.cluster, path = %self.key.path, code = status.code, reason = %status.reason, "upstream watch failed for good");
        self.finish(status);
    }

    /// Reports a non-fatal failure once per streak, then waits out the backoff.
    fn back_off(&mut self, status: Status, now: Instant) {
        if self.failing.as_ref().is_none_or(|s| s.code != status.code || s.message != status.message) {
            tracing::warn!(cluster = %self.key.cluster, path = %self.key.path, code = status.code, message = %status.message, "upstream watch failing; retrying");
            let sinks: Vec<(u64, Arc<Sink>)> = self
                .subscribers
                .map
                .iter()
                .map(|(id, sink)| (*id, sink.clone()))
                .chain(self.waiting.iter().map(|(id, sink, _)| (*id, sink.clone())))
                .chain(self.streamed.iter().map(|(id, s)| (*id, s.sink.clone())))
                .collect();
            for (sub_id, sink) in sinks {
                self.send(sub_id, &sink, Frame::Error(false, status.clone()));
            }
            self.failing = Some(status);
        }
        let ceiling = self.backoff.ceiling_ms();
        let jitter = self.backoff.next_delay_ms();
        let delay = Duration::from_millis(ceiling / 2 + jitter / 2);
        let until = now.checked_add(delay).unwrap_or(now);
        self.attempts = self.attempts.saturating_add(1);
        self.state = State::BackingOff { until, attempt: self.attempts };
        self.out.push(Action::Abandon);
        self.out.push(Action::Arm(Timer::Backoff, until));
    }

    fn recovered(&mut self) {
        self.backoff.reset();
        self.attempts = 0;
        if self.failing.take().is_some()
            && let Some(rv) = self.cache.resource_version().map(str::to_owned)
        {
            // The subscribers were told something was wrong (and show themselves stale): the
            // watch is back at the version they hold, so they are consistent again.
            for (sub_id, sink) in self.subscribers.map.clone() {
                self.send(sub_id, &sink, Frame::Synced(rv.clone()));
            }
        }
    }

    // ---- commands -------------------------------------------------------------------------

    fn command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Subscribe { sub_id, sink, resume } => {
                self.idle_since = None;
                if let Some(rv) = self.cache.resource_version().map(str::to_owned) {
                    self.serve(sub_id, sink, resume, rv);
                } else {
                    if let Some(status) = self.failing.clone() {
                        self.send(sub_id, &sink, Frame::Error(false, status));
                    }
                    let fresh = resume.is_none();
                    self.waiting.push((sub_id, sink, resume));
                    if fresh && !self.received.is_empty() {
                        // Mid-list: what came so far at once, the rest as it comes.
                        self.stream_received();
                    }
                }
            }
            Command::Unsubscribe { sub_id } => {
                self.subscribers.remove(&sub_id);
                self.waiting.retain(|(id, _, _)| *id != sub_id);
                self.streamed.remove(&sub_id);
                if self.catching_up.remove(&sub_id).is_some() {
                    self.out.push(Action::AbortCatchUp { sub_id });
                }
                self.idle(now);
            }
            Command::Resync { sub_id } => {
                // Mid-relist, the relist resets every subscriber; one being sent the list is
                // reset with what it has so far; a subscriber still waiting or catching up is
                // reset when it is served (`serve` sees its queue is not live).
                if let Some(streamed) = self.streamed.get_mut(&sub_id) {
                    streamed.reset = Some(ResetCause::Overflow);
                } else if let (Some(sink), Some(rv)) = (self.subscribers.map.get(&sub_id).cloned(), self.cache.resource_version().map(str::to_owned)) {
                    self.metrics.reset(ResetCause::Overflow);
                    let objects = self.cache.snapshot().cloned().collect();
                    self.send(sub_id, &sink, Frame::ResetWithSnapshot(objects, rv));
                }
            }
            Command::CaughtUp { sub_id, outcome } => {
                let Some((sink, join_at)) = self.catching_up.remove(&sub_id) else { return };
                match self.cache.resource_version().map(str::to_owned) {
                    _ if outcome == catch_up::Outcome::Panicked => {
                        self.send(sub_id, &sink, Frame::Error(true, internal_error(TaskKind::CatchUp, &self.key)));
                        self.idle(now);
                    }
                    // Mid-relist: served (and if need be reset) after the list.
                    None => self.waiting.push((sub_id, sink, Some(ResumeFrom::hand_over(join_at)))),
                    Some(rv) if outcome == catch_up::Outcome::Confirmed => {
                        self.metrics.resume(ResumeOutcome::CatchUp);
                        self.serve(sub_id, sink, Some(ResumeFrom::hand_over(join_at)), rv);
                    }
                    Some(rv) => {
                        self.metrics.resume(ResumeOutcome::Reset);
                        self.reset(sub_id, sink, rv);
                    }
                }
            }
        }
    }

    /// A subscriber the proxy cannot continue: `reset`, the snapshot at `rv`, then live events.
    fn reset(&mut self, sub_id: u64, sink: Arc<Sink>, rv: String) {
        self.metrics.reset(ResetCause::ResumeUnavailable);
        let objects = self.cache.snapshot().cloned().collect();
        self.send(sub_id, &sink, Frame::ResetWithSnapshot(objects, rv));
        self.joined(sub_id, sink);
    }

    /// A served subscriber: the streak's error if the upstream is failing, then live events.
    fn joined(&mut self, sub_id: u64, sink: Arc<Sink>) {
        if let Some(status) = self.failing.clone() {
            self.send(sub_id, &sink, Frame::Error(false, status));
        }
        self.subscribers.insert(sub_id, sink);
    }

    /// Gives a subscriber its snapshot, replay, inventory, catch-up or reset at the cache's
    /// version `rv`, then live events.
    fn serve(&mut self, sub_id: u64, sink: Arc<Sink>, resume: Option<ResumeFrom>, rv: String) {
        if sink.is_detached() {
            // Unwatched (or moved to another identity) before it was served: no work for it.
            return;
        }
        if !sink.is_live() {
            // Its queue overflowed while it waited or caught up: only a reset can continue it.
            return self.reset(sub_id, sink, rv);
        }
        let Some(from) = resume else {
            let objects = self.cache.snapshot().cloned().collect();
            self.send(sub_id, &sink, Frame::Snapshot(objects, rv));
            return self.joined(sub_id, sink);
        };
        match self.cache.answer(&from.version, from.inventory) {
            Answer::Replay(events) => {
                if !from.hand_over {
                    self.metrics.resume(ResumeOutcome::Replay);
                }
                for (event_type, object) in events {
                    let version = resource_version_of(&object);
                    self.send(sub_id, &sink, Frame::Event(event_type, object, version));
                }
                self.send(sub_id, &sink, Frame::Synced(rv));
            }
            // The store answers at once, with no upstream request, for a client that takes an
            // inventory: what changed after its version (an object at or before it is as the
            // client holds it), then the keys held now.
            Answer::Inventory(changed) => {
                self.metrics.resume(ResumeOutcome::Inventory);
                let keys = self.cache.keys().map(|(namespace, name)| (namespace.to_owned(), name.to_owned())).collect();
                self.send(sub_id, &sink, Frame::Inventory(changed, keys, rv));
            }
            // The client holds everything up to its version: nothing to send, and what the
            // shared stream brings up to that version is withheld from it.
            Answer::Ahead(version) => {
                self.metrics.resume(ResumeOutcome::Ahead);
                self.send(sub_id, &sink, Frame::Ahead(version, from.version));
            }
            Answer::CatchUp { from, to } => {
                self.catching_up.insert(sub_id, (sink.clone(), rv));
                return self.out.push(Action::CatchUp { sub_id, sink, from, to });
            }
            Answer::Reset => {
                self.metrics.resume(ResumeOutcome::Reset);
                return self.reset(sub_id, sink, rv);
            }
        }
        self.joined(sub_id, sink);
    }

    // ---- list -----------------------------------------------------------------------------

    /// Starts a list from its first page.
    fn begin_list(&mut self) {
        // A list starts over from its first page: whoever got part of an earlier attempt gets
        // a `reset` before this one's objects, so nothing reaches a client twice.
        self.received.clear();
        for streamed in self.streamed.values_mut() {
            if streamed.sent > 0 {
                streamed.reset.get_or_insert(ResetCause::Expired);
            }
            streamed.sent = 0;
        }
        self.state = State::Listing { continue_token: None };
        // A short first page, so a cold subscriber's first objects come soon.
        let limit = self.settings.first_page_size.clamp(1, self.settings.page_size.max(1));
        self.out.push(Action::List { limit, continue_token: None });
    }

    fn page(&mut self, page: ListPage) {
        self.meter.received_objects(page.objects.len() as u64);
        self.received.extend(page.objects);
        self.stream_received();
        if let Some(token) = page.continue_token {
            self.state = State::Listing { continue_token: Some(token.clone()) };
            self.out.push(Action::List { limit: self.settings.page_size, continue_token: Some(token) });
            return;
        }
        let rv = page.resource_version.unwrap_or_default();
        self.recovered();
        self.meter.export();
        let objects: BTreeMap<ObjectKey, Stored> = std::mem::take(&mut self.received).into_iter().collect();
        self.cache.replace(objects, rv.clone());
        for (sub_id, streamed) in std::mem::take(&mut self.streamed) {
            if let Some(cause) = streamed.reset {
                // It lost what was queued (or never had it): the whole list, after a `reset`.
                self.metrics.reset(cause);
                let objects = self.cache.snapshot().cloned().collect();
                self.send(sub_id, &streamed.sink, Frame::ResetWithSnapshot(objects, rv.clone()));
            } else {
                self.send(sub_id, &streamed.sink, Frame::SnapshotEnd(rv.clone()));
            }
            self.subscribers.insert(sub_id, streamed.sink);
        }
        for (sub_id, sink, resume) in std::mem::take(&mut self.waiting) {
            self.serve(sub_id, sink, resume, rv.clone());
        }
        self.state = State::Watching { since: None, lines: 0 };
        self.out.push(Action::Watch { from: rv });
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
        for (sub_id, streamed) in &mut self.streamed {
            if streamed.reset.is_none() && streamed.sent == received {
                continue;
            }
            let from = if streamed.reset.is_some() { 0 } else { streamed.sent };
            let objects: Vec<ObjectJson> = self.received.get(from..).unwrap_or_default().iter().map(|(_, stored)| stored.json().clone()).collect();
            // Sent unless fed back as dropped ([`Input::PartDropped`]), which resets it again.
            let frame = Frame::SnapshotPart(objects, streamed.reset.take());
            streamed.sent = received;
            self.out.push(Action::Send { sub_id: *sub_id, sink: streamed.sink.clone(), frame });
        }
    }

    // ---- watch ----------------------------------------------------------------------------

    /// The open watch ended (or went silent): a very short empty one is a failure, else the
    /// watch restarts from the held version.
    fn watch_ended(&mut self, now: Instant) {
        let State::Watching { since: Some(since), lines } = self.state else { return };
        if lines == 0 && now.saturating_duration_since(since) < SHORT_WATCH {
            let status = Status::failure(503, "ServiceUnavailable", format!("cluster {}: watch ended immediately", self.key.cluster));
            return self.back_off(status, now);
        }
        self.resume();
    }

    /// Handles one line of the open watch.
    fn line(&mut self, line: &str, now: Instant) {
        let Some(event) = parse_line(line) else {
            tracing::warn!(cluster = %self.key.cluster, "unreadable upstream watch line; restarting the watch");
            return self.back_off(Status::failure(502, "BadGateway", format!("cluster {} sent an unreadable watch event", self.key.cluster)), now);
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
                    return self.begin_list();
                };
                let json: ObjectJson = Arc::from(object);
                // The frame's body is written once, for every subscriber (only the head, their
                // id, differs): in the API server's layout it is the line itself, `{` become `,`.
                let body = if event.server_layout { EventBody::after_first_byte(line) } else { encode::event_body(event_type, &json) };
                let version: Arc<str> = Arc::from(&*rv);
                let namespace = meta.namespace.map(|namespace| namespace.0.into_owned()).unwrap_or_default();
                let key = (namespace, name.0.into_owned());
                // What a projecting or delta-taking subscriber is sent depends on the object's
                // previous state: kept for the event only when one of them may ask.
                let previous = if self.subscribers.wanting_previous > 0 { self.cache.get(&key).map(|object| Previous { object: object.clone(), key: key.clone() }) } else { None };
                let shared = SharedEvent::new(body, version, event_type, json.clone(), previous);
                self.cache.apply(event_type, key, json, rv.0.into_owned());
                for (sub_id, sink) in &self.subscribers.map {
                    self.out.push(Action::Send { sub_id: *sub_id, sink: sink.clone(), frame: Frame::Shared(shared.clone()) });
                }
            }
            (None, "BOOKMARK") => {
                if let Some(rv) = meta.resource_version {
                    let version: Arc<str> = Arc::from(&*rv);
                    for (sub_id, sink) in &self.subscribers.map {
                        self.out.push(Action::Send { sub_id: *sub_id, sink: sink.clone(), frame: Frame::Bookmark(version.clone()) });
                    }
                    self.cache.mark(rv.0.into_owned());
                }
            }
            _ => {
                let status: Status = serde_json::from_str(object).unwrap_or_else(|_| Status::failure(500, "InternalError", "unreadable ERROR event"));
                if status.code == 410 || crate::upstream_error::too_large_version(&status) {
                    tracing::info!(cluster = %self.key.cluster, path = %self.key.path, "upstream version expired; relisting");
                    self.meter.reset();
                    self.cache.expire();
                    return self.begin_list();
                }
                tracing::warn!(cluster = %self.key.cluster, code = status.code, "upstream watch error event; backing off");
                return self.back_off(status, now);
            }
        }
        self.arm_idle(now);
        // Healthy only once the stream delivers, so a watch that opens and fails at once keeps
        // backing off.
        self.recovered();
    }
}

/// The served subscribers, and how many of them need an event's previous object (they project or
/// take deltas), counted as they come and go rather than looked up per event.
#[derive(Default)]
struct Subscribers {
    map: HashMap<u64, Arc<Sink>>,
    wanting_previous: usize,
}

impl Subscribers {
    fn insert(&mut self, sub_id: u64, sink: Arc<Sink>) {
        let wants = sink.needs_previous();
        if let Some(old) = self.map.insert(sub_id, sink) {
            self.wanting_previous -= usize::from(old.needs_previous());
        }
        self.wanting_previous += usize::from(wants);
    }

    fn remove(&mut self, sub_id: &u64) {
        if let Some(old) = self.map.remove(sub_id) {
            self.wanting_previous -= usize::from(old.needs_previous());
        }
    }

    fn drain(&mut self) -> std::collections::hash_map::Drain<'_, u64, Arc<Sink>> {
        self.wanting_previous = 0;
        self.map.drain()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    //! The machine stepped natively: no request, no task, no clock (`now` is `t0` plus the
    //! milliseconds each step says), each step's actions written out as one line each.

    use kubemux_protocol::frames::WatchQuery;

    use super::*;
    use crate::identity::Identity;
    use crate::mux::outbox::Outbox;
    use crate::registry::request::parse_list_page;

    struct Test {
        machine: Machine,
        t0: Instant,
        metrics: Arc<Metrics>,
    }

    impl Test {
        fn new() -> Test {
            let key = WatchKey { cluster: "c".into(), path: "/api/v1/namespaces/ns/configmaps".into(), query: WatchQuery::default(), identity: Identity::Proxy };
            let settings = RegistrySettings {
                page_size: 2,
                first_page_size: 1,
                backoff_base: Duration::from_millis(100),
                backoff_cap: Duration::from_millis(800),
                linger: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(150),
                history: 16,
                ..RegistrySettings::default()
            };
            let metrics = Arc::new(Metrics::default());
            let meter = WatchMeter::new(metrics.clone(), "c", "configmaps".into());
            Test { machine: Machine::new(key, settings, (metrics.clone(), meter), 7), t0: Instant::now(), metrics }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        /// Steps the machine at `ms` and writes out what it did.
        fn step(&mut self, ms: u64, input: Input<'_>) -> Vec<String> {
            let now = self.at(ms);
            let mut actions = Vec::new();
            self.machine.step(input, now, &mut actions);
            actions.iter().map(|action| self.show(action)).collect()
        }

        fn show(&self, action: &Action) -> String {
            let ms = |at: &Instant| at.saturating_duration_since(self.t0).as_millis();
            match action {
                Action::List { limit, continue_token } => format!("list {limit} {}", continue_token.as_deref().unwrap_or("-")),
                Action::Watch { from } => format!("watch {from}"),
                Action::Abandon => "abandon".into(),
                Action::Arm(timer, at) => format!("arm {timer:?} {}", ms(at)),
                Action::Send { sub_id, frame, .. } => format!("{sub_id}: {}", show_frame(frame)),
                Action::CatchUp { sub_id, from, to, .. } => format!("catch up {sub_id} {from}..{to}"),
                Action::AbortCatchUp { sub_id } => format!("abort catch-up {sub_id}"),
                Action::Retire => "retire".into(),
                Action::End(status) => format!("end {}", status.code),
            }
        }

        /// Subscribes a fresh (`resume: None`) or resuming subscriber on a connection of its own.
        fn subscribe(&mut self, ms: u64, sub_id: u64, resume: Option<ResumeFrom>) -> Vec<String> {
            let outbox = Outbox::new(1 << 20, self.metrics.clone());
            let id: Arc<str> = Arc::from(format!("s{sub_id}").as_str());
            outbox.add_subscription(&id);
            let sink = Sink::new(outbox, id, self.metrics.clone());
            self.step(ms, Input::Command(Some(Command::Subscribe { sub_id, sink, resume })))
        }

        /// Lists `a`, `b`, `c` at version 10 in two pages, subscriber 1 waiting, then opens
        /// the watch.
        fn listed(&mut self) {
            assert_eq!(self.step(0, Input::Start), ["list 1 -"]);
            assert_eq!(self.subscribe(0, 1, None), Vec::<String>::new());
            assert_eq!(self.step(0, Input::Page(page(&[("a", 3)], Some("t1"), "10"))), ["1: part 1", "list 2 t1"]);
            assert_eq!(self.step(0, Input::Page(page(&[("b", 4), ("c", 5)], None, "10"))), ["1: part 2", "1: end 10", "watch 10"]);
            assert_eq!(self.step(0, Input::WatchOpened), ["arm Idle 150000"]);
        }

        /// A list in flight whose only subscriber left at 1 s: lingering until 11 s.
        fn lingering() -> Test {
            let mut t = Test::new();
            assert_eq!(t.step(0, Input::Start), ["list 1 -"]);
            assert_eq!(t.subscribe(0, 1, None), NOTHING);
            assert_eq!(t.step(1000, Input::Command(Some(Command::Unsubscribe { sub_id: 1 }))), ["arm Linger 11000"]);
            t
        }

        /// The backoff armed by `actions`, in milliseconds from `ms`.
        fn backoff(&self, actions: &[String], ms: u64) -> u64 {
            let armed = actions.iter().find_map(|a| a.strip_prefix("arm Backoff ")).unwrap_or_else(|| panic!("no backoff in {actions:?}"));
            armed.parse::<u64>().unwrap() - ms
        }
    }

    fn show_frame(frame: &Frame) -> String {
        match frame {
            Frame::Snapshot(objects, rv) => format!("snapshot {} {rv}", objects.len()),
            Frame::SnapshotPart(objects, None) => format!("part {}", objects.len()),
            Frame::SnapshotPart(objects, Some(cause)) => format!("reset, part {} ({cause:?})", objects.len()),
            Frame::SnapshotEnd(rv) => format!("end {rv}"),
            Frame::ResetWithSnapshot(objects, rv) => format!("reset, snapshot {} {rv}", objects.len()),
            Frame::Event(event_type, _, rv) => format!("replay {event_type:?} {}", rv.as_deref().unwrap_or("-")),
            Frame::Shared(event) => format!("event {}", event.version),
            Frame::Bookmark(rv) => format!("bookmark {rv}"),
            Frame::Synced(rv) => format!("synced {rv}"),
            Frame::Inventory(changed, keys, rv) => format!("inventory {} {} {rv}", changed.len(), keys.len()),
            Frame::Ahead(version, rv) => format!("ahead {version} {rv}"),
            Frame::Error(true, status) => format!("fatal {}", status.code),
            Frame::Error(false, status) => format!("error {}", status.code),
        }
    }

    fn page(items: &[(&str, u32)], continue_token: Option<&str>, rv: &str) -> ListPage {
        let items: Vec<serde_json::Value> = items.iter().map(|(name, rv)| serde_json::json!({"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv.to_string()}})).collect();
        let text = serde_json::json!({"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {"resourceVersion": rv, "continue": continue_token}, "items": items});
        parse_list_page(&text.to_string()).unwrap()
    }

    fn event(kind: &str, name: &str, rv: u32) -> String {
        serde_json::json!({"type": kind, "object": {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv.to_string()}}}).to_string()
    }

    fn error_event(code: u16) -> String {
        serde_json::json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "m", "reason": "R", "code": code}}).to_string()
    }

    fn retry(code: u16, message: &str) -> Classified {
        Classified::Retry(Status::failure(code, "ServiceUnavailable", message))
    }

    const NOTHING: [&str; 0] = [];

    /// The last subscriber leaves while the list is in flight: the task retires when the
    /// linger is over, without waiting for the list; a refused retirement (commands queued)
    /// is tried again once they are handled.
    #[test]
    fn the_last_subscriber_leaving_mid_list_retires_the_task_after_the_linger() {
        let mut t = Test::lingering();
        assert_eq!(t.step(10_999, Input::Fired(Timer::Linger)), NOTHING, "early");
        assert_eq!(t.step(11_000, Input::Fired(Timer::Linger)), ["retire"]);
        assert_eq!(t.step(11_000, Input::RetireRefused), ["arm Linger 11000"]);
        assert_eq!(t.step(11_000, Input::Fired(Timer::Linger)), ["retire"]);
    }

    /// A subscriber that joins during the linger keeps the task: the linger's end does
    /// nothing, and the list goes on to it.
    #[test]
    fn a_subscriber_joining_during_the_linger_keeps_the_task() {
        let mut t = Test::lingering();
        assert_eq!(t.subscribe(5000, 2, None), NOTHING);
        assert_eq!(t.step(11_000, Input::Fired(Timer::Linger)), NOTHING);
        assert_eq!(t.step(11_000, Input::Page(page(&[("a", 3)], None, "10"))), ["2: part 1", "2: end 10", "watch 10"]);
    }

    /// A failure streak is reported once; its backoff grows to the cap (each delay in the
    /// upper half of its ceiling); the recovered list ends the streak, so the next failure is
    /// reported again and backs off from the base.
    #[test]
    fn a_failure_streak_is_reported_once_and_backs_off_to_the_cap() {
        let mut t = Test::new();
        assert_eq!(t.step(0, Input::Start), ["list 1 -"]);
        assert_eq!(t.subscribe(0, 1, None), NOTHING);
        let mut ms = 0;
        let mut delays = Vec::new();
        for attempt in 1..=6u32 {
            let actions = t.step(ms, Input::PageFailed(retry(503, "down")));
            let delay = t.backoff(&actions, ms);
            let expected: Vec<String> = if attempt == 1 { vec!["1: error 503".into()] } else { vec![] };
            assert_eq!(actions[..actions.len() - 2], expected[..], "reported once per streak: {actions:?}");
            assert_eq!(actions[actions.len() - 2..][0], "abandon");
            assert!(matches!(t.machine.state(), State::BackingOff { attempt: a, .. } if *a == attempt));
            delays.push(delay);
            assert_eq!(t.step(ms + delay, Input::Fired(Timer::Backoff)), ["list 1 -"]);
            ms += delay;
        }
        for (delay, ceiling) in delays.iter().zip([100, 200, 400, 800, 800, 800]) {
            assert!(ceiling / 2 <= *delay && *delay <= ceiling, "{delays:?}");
        }
        // A different error is a new streak, reported again.
        let actions = t.step(ms, Input::PageFailed(retry(500, "other")));
        assert_eq!(actions[0], "1: error 500");
        let delay = t.backoff(&actions, ms);
        ms += delay;
        assert_eq!(t.step(ms, Input::Fired(Timer::Backoff)), ["list 1 -"]);
        assert_eq!(t.step(ms, Input::Page(page(&[("a", 3)], None, "10"))), ["1: part 1", "1: end 10", "watch 10"]);
        assert_eq!(t.step(ms, Input::WatchOpened), [format!("arm Idle {}", ms + 150_000)]);
        // Recovered: the next failure is reported, and backs off from the base.
        let line = error_event(500);
        let actions = t.step(ms, Input::Line(&line));
        assert_eq!(actions[0], "1: error 500");
        assert!(t.backoff(&actions, ms) <= 100, "{actions:?}");
        // The watch is back and delivers: the subscriber, told of the failure, is synced.
        let next = ms + 100;
        assert_eq!(t.step(next, Input::Fired(Timer::Backoff)), ["watch 10"]);
        t.step(next, Input::WatchOpened);
        let line = event("MODIFIED", "a", 11);
        assert_eq!(t.step(next, Input::Line(&line)), ["1: event 11".to_string(), format!("arm Idle {}", next + 150_000), "1: synced 11".to_string()]);
    }

    /// A subscriber resuming from a version the ring does not reach catches up from it; once
    /// confirmed it joins the shared stream (replayed from the hand-over), unconfirmed it is
    /// reset, and one that leaves meanwhile has its catch-up stopped.
    #[test]
    fn a_resuming_subscriber_catches_up_then_joins_the_shared_stream() {
        let mut t = Test::new();
        t.listed();
        assert_eq!(t.subscribe(0, 2, Some(ResumeFrom::new("7".into(), false))), ["catch up 2 7..10"]);
        let line = event("ADDED", "d", 11);
        assert_eq!(t.step(0, Input::Line(&line)), ["1: event 11", "arm Idle 150000"], "not to the one catching up");
        assert_eq!(t.step(0, Input::Command(Some(Command::CaughtUp { sub_id: 2, outcome: catch_up::Outcome::Confirmed }))), ["2: replay Added 11", "2: synced 11"]);
        let line = event("DELETED", "d", 12);
        let mut actions = t.step(0, Input::Line(&line));
        actions.sort();
        assert_eq!(actions, ["1: event 12", "2: event 12", "arm Idle 150000"]);
        // Unconfirmed: a reset and the snapshot.
        assert_eq!(t.subscribe(0, 3, Some(ResumeFrom::new("6".into(), false))), ["catch up 3 6..12"]);
        assert_eq!(t.step(0, Input::Command(Some(Command::CaughtUp { sub_id: 3, outcome: catch_up::Outcome::Unconfirmed }))), ["3: reset, snapshot 3 12"]);
        // Gone meanwhile: the catch-up stops, and a late report changes nothing.
        assert_eq!(t.subscribe(0, 4, Some(ResumeFrom::new("5".into(), false))), ["catch up 4 5..12"]);
        assert_eq!(t.step(0, Input::Command(Some(Command::Unsubscribe { sub_id: 4 }))), ["abort catch-up 4"]);
        assert_eq!(t.step(0, Input::Command(Some(Command::CaughtUp { sub_id: 4, outcome: catch_up::Outcome::Confirmed }))), NOTHING);
    }

    /// A 410 on the watch relists: the served subscriber gets a `reset` with the first page,
    /// then the rest page by page, then `synced`; the watch resumes at the new list's version.
    #[test]
    fn an_expired_watch_relists_and_resets_served_subscribers() {
        let mut t = Test::new();
        t.listed();
        let line = error_event(410);
        assert_eq!(t.step(0, Input::Line(&line)), ["list 1 -"]);
        assert_eq!(t.step(0, Input::Page(page(&[("a", 20)], Some("t2"), "30"))), ["1: reset, part 1 (Expired)", "list 2 t2"]);
        assert_eq!(t.step(0, Input::Page(page(&[("c", 25)], None, "30"))), ["1: part 1", "1: end 30", "watch 30"]);
        // A 410 answering the watch request itself relists too.
        assert_eq!(t.step(0, Input::WatchFailed(Classified::Expired(Status::failure(410, "Expired", "gone")))), ["list 1 -"]);
    }

    /// An open watch that sends nothing for `idle_timeout` is restarted from the held
    /// version; every line pushes that deadline on; a watch that ends at once with nothing is
    /// a failure, backed off.
    #[test]
    fn a_silent_watch_is_restarted_from_the_held_version() {
        let mut t = Test::new();
        t.listed();
        let line = event("MODIFIED", "a", 11);
        assert_eq!(t.step(60_000, Input::Line(&line)), ["1: event 11", "arm Idle 210000"]);
        assert_eq!(t.step(210_000, Input::Fired(Timer::Idle)), ["watch 11"]);
        assert_eq!(t.step(210_000, Input::Fired(Timer::Idle)), NOTHING, "not open yet: a stale timer");
        assert_eq!(t.step(210_000, Input::WatchOpened), ["arm Idle 360000"]);
        let actions = t.step(210_500, Input::WatchEnded);
        assert_eq!(actions[..2], ["1: error 503", "abandon"]);
    }

    /// A cluster removed by a reload ends every subscription, served, waiting or catching up,
    /// with one fatal 404; after that the machine does nothing.
    #[test]
    fn a_removed_cluster_ends_every_subscription_once() {
        let mut t = Test::new();
        t.listed();
        assert_eq!(t.subscribe(0, 2, Some(ResumeFrom::new("7".into(), false))), ["catch up 2 7..10"]);
        let mut actions = t.step(0, Input::ClusterRemoved);
        assert_eq!(actions.remove(0), "end 404");
        actions.sort();
        assert_eq!(actions, ["1: fatal 404", "2: fatal 404", "abort catch-up 2"]);
        assert_eq!(t.machine.state(), &State::Retired);
        assert_eq!(t.subscribe(0, 3, None), NOTHING);
        assert_eq!(t.step(0, Input::ClusterRemoved), NOTHING);
    }

    /// A cluster changed by a reload is followed: the watch restarts from the version held
    /// (no `reset`), even while backing off, whose next delay starts from the base again.
    #[test]
    fn a_changed_cluster_is_followed_from_the_held_version() {
        let mut t = Test::new();
        t.listed();
        let line = event("MODIFIED", "a", 12);
        t.step(0, Input::Line(&line));
        assert_eq!(t.step(0, Input::ClusterChanged), ["watch 12"]);
        let mut ms = 0;
        for _ in 0..4 {
            let actions = t.step(ms, Input::WatchFailed(retry(503, "down")));
            ms += t.backoff(&actions, ms);
            assert_eq!(t.step(ms, Input::Fired(Timer::Backoff)), ["watch 12"]);
        }
        let actions = t.step(ms, Input::WatchFailed(retry(503, "down")));
        assert!(t.backoff(&actions, ms) >= 400, "{actions:?}");
        assert_eq!(t.step(ms, Input::ClusterChanged), ["watch 12"]);
        assert_eq!(t.step(ms + 1, Input::Fired(Timer::Backoff)), NOTHING, "the old backoff is over");
        let actions = t.step(ms, Input::WatchFailed(retry(503, "down")));
        assert!(t.backoff(&actions, ms) <= 100, "{actions:?}");
        assert!(!actions.iter().any(|a| a.contains("error")), "the same streak: {actions:?}");
    }

    /// A subscriber joining mid-list gets what came so far at once; a part dropped by an
    /// overflowing queue is sent again, whole, after a `reset`; a resync of a served
    /// subscriber is a `reset` and the snapshot.
    #[test]
    fn a_cold_list_reaches_joiners_and_overflowed_subscribers_whole() {
        let mut t = Test::new();
        assert_eq!(t.step(0, Input::Start), ["list 1 -"]);
        assert_eq!(t.subscribe(0, 1, None), NOTHING);
        assert_eq!(t.step(0, Input::Page(page(&[("a", 3)], Some("t1"), "10"))), ["1: part 1", "list 2 t1"]);
        assert_eq!(t.subscribe(0, 2, None), ["2: part 1"]);
        assert_eq!(t.step(0, Input::PartDropped { sub_id: 1 }), NOTHING);
        let mut actions = t.step(0, Input::Page(page(&[("b", 4), ("c", 5)], None, "10")));
        actions.sort();
        assert_eq!(actions, ["1: end 10", "1: reset, part 3 (Overflow)", "2: end 10", "2: part 2", "watch 10"]);
        assert_eq!(t.step(0, Input::Command(Some(Command::Resync { sub_id: 2 }))), ["2: reset, snapshot 3 10"]);
    }
}
