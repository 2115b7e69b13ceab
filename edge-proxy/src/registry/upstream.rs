//! The driver of one upstream list+watch: the IO around the sans-IO [`Machine`]
//! (`machine.rs`, which holds the states, the subscribers and the cache).
//!
//! One task per watch key. It asks the kube client for the list pages and watches the machine
//! asks for, reads their lines, receives the commands of the subscriptions, sleeps until the
//! machine's timers, notices reloads and shutdown, and feeds each of these to the machine as
//! an [`Input`]; then it does the [`Action`]s the machine returns: requests, frames to the
//! subscribers' sinks, catch-up tasks, retiring. Nothing is decided here that the machine could
//! decide: a reload that retires the task's cluster is looked up in the registry and fed as
//! `ClusterChanged` (the driver now talks to the new cluster) or `ClusterRemoved`.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{AsyncBufRead, FutureExt, StreamExt};
use kubemux_protocol::frames::Status;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt as _};
use tokio_util::sync::CancellationToken;

use super::machine::{Action, Frame, Input, Machine, State, Timer};
use super::request::{ListPage, Requests, parse_list_page};
use super::{Command, RegistrySettings, Sink, WatchKey, WatchMeter, WatchRegistry, catch_up, internal_error};
use crate::clusters::Cluster;
use crate::logging::panic_message;
use crate::metrics::{Metrics, TaskKind};
use crate::upstream_error::{Classified, classify};

/// The lines of an open watch.
type Lines = BoxStream<'static, Result<String, LinesCodecError>>;

/// The request or stream in flight: at most one, the one the machine last asked for.
enum InFlight {
    None,
    /// A list page, read into the task's one page buffer (handed back with the page).
    Page(BoxFuture<'static, (Vec<u8>, Result<ListPage, kube::Error>)>),
    /// A watch being opened.
    Opening(BoxFuture<'static, Result<Lines, kube::Error>>),
    /// An open watch.
    Streaming(Lines),
}

/// What the request or stream in flight brought.
enum Arrived {
    Page(Vec<u8>, Result<ListPage, kube::Error>),
    Opened(Result<Lines, kube::Error>),
    Line(Option<Result<String, LinesCodecError>>),
}

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
    /// The watch's cost meter: this driver counts requests and bytes, the machine the rest.
    meter: Arc<WatchMeter>,
    shutdown: CancellationToken,
    machine: Machine,
    /// The buffer the machine's actions are written into, reused from step to step.
    actions: Vec<Action>,
    in_flight: InFlight,
    /// The machine's armed timers.
    timers: HashMap<Timer, Instant>,
    /// The running catch-up tasks, by subscriber.
    catch_ups: HashMap<u64, tokio::task::AbortHandle>,
    /// One buffer for every page's body: a page costs no fresh memory (nor its page faults).
    body: Vec<u8>,
    /// Whether the registry let the task retire.
    retired: bool,
    /// Whether the task is still counted in `upstream_watches` (and may be in the registry).
    counted: bool,
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
        let requests = Requests::new(&key, &cluster.url());
        let inject_panic = settings.panics(TaskKind::Upstream, &key);
        // A random seed, so that replicas (whose task numbers are alike) do not retry in step.
        let machine = Machine::new(key.clone(), settings.clone(), (metrics.clone(), meter.clone()), fastrand::u64(..));
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
            machine,
            actions: Vec::new(),
            in_flight: InFlight::None,
            timers: HashMap::new(),
            catch_ups: HashMap::new(),
            body: Vec::new(),
            retired: false,
            counted: true,
        }
    }

    /// Runs the task. A panic stops here: every subscription it served gets a fatal 500.
    pub(super) async fn run(mut self) {
        tracing::debug!(cluster = %self.key.cluster, path = %self.key.path, "upstream watch started");
        if let Err(panic) = AssertUnwindSafe(self.drive()).catch_unwind().await {
            self.metrics.task_panic(TaskKind::Upstream);
            tracing::error!(task = %TaskKind::Upstream, cluster = %self.key.cluster, path = %self.key.path, panic = panic_message(panic.as_ref()), "a proxy task panicked; its subscriptions end with an internal error");
            let mut actions = Vec::new();
            self.machine.end(&internal_error(TaskKind::Upstream, &self.key), &mut actions);
            self.perform(actions);
        }
        self.leave();
        tracing::debug!(cluster = %self.key.cluster, path = %self.key.path, "upstream watch stopped");
    }

    async fn drive(&mut self) {
        self.feed(Input::Start);
        while !self.retired && *self.machine.state() != State::Retired {
            let retired = self.cluster.retired().clone();
            let timer = self.timers.iter().min_by_key(|(_, at)| **at).map(|(timer, at)| (*timer, *at));
            tokio::select! {
                arrived = next(&mut self.in_flight) => self.arrived(arrived),
                command = self.commands.recv() => {
                    if let Some(Command::CaughtUp { sub_id, .. }) = &command {
                        self.catch_ups.remove(sub_id);
                    }
                    self.feed(Input::Command(command));
                }
                _ = sleep_until(timer.map(|(_, at)| at)) => {
                    if let Some((timer, _)) = timer {
                        self.timers.remove(&timer);
                        self.feed(Input::Fired(timer));
                    }
                }
                _ = retired.cancelled() => self.follow(),
                _ = self.shutdown.cancelled() => self.feed(Input::Shutdown),
            }
        }
    }

    /// Feeds the machine `input` and does what it says, then what the doing fed back.
    fn feed(&mut self, input: Input<'_>) {
        let mut actions = std::mem::take(&mut self.actions);
        self.machine.step(input, Instant::now(), &mut actions);
        self.perform(actions);
    }

    fn perform(&mut self, mut actions: Vec<Action>) {
        let mut feedback = Vec::new();
        for action in actions.drain(..) {
            self.act(action, &mut feedback);
        }
        // Kept, with its capacity, for the next step.
        self.actions = actions;
        for input in feedback {
            self.feed(input);
        }
    }

    fn arrived(&mut self, arrived: Arrived) {
        match arrived {
            Arrived::Page(body, page) => {
                self.in_flight = InFlight::None;
                if page.is_ok() {
                    self.meter.received_bytes(body.len() as u64);
                }
                self.body = body;
                match page {
                    Ok(page) => self.feed(Input::Page(page)),
                    Err(error) => self.feed(Input::PageFailed(classify(&self.key.cluster, &error))),
                }
            }
            Arrived::Opened(Ok(lines)) => {
                self.in_flight = InFlight::Streaming(lines);
                self.feed(Input::WatchOpened);
            }
            Arrived::Opened(Err(error)) => {
                self.in_flight = InFlight::None;
                self.feed(Input::WatchFailed(classify(&self.key.cluster, &error)));
            }
            Arrived::Line(Some(Ok(line))) => {
                // The line and its newline, as the API server sent them.
                self.meter.received_bytes(line.len() as u64 + 1);
                if self.inject_panic {
                    // Reachable only from a test: `RegistrySettings::inject_panic` is doc-hidden,
                    // `None` by default, and no flag or config key sets it.
                    panic!("injected panic in an upstream task (test hook)");
                }
                self.feed(Input::Line(&line));
            }
            Arrived::Line(Some(Err(LinesCodecError::MaxLineLengthExceeded))) => self.feed(Input::LineTooLong),
            Arrived::Line(other) => {
                if let Some(Err(LinesCodecError::Io(error))) = other {
                    tracing::debug!(cluster = %self.key.cluster, %error, "upstream watch stream broke; resuming");
                }
                self.in_flight = InFlight::None;
                self.feed(Input::WatchEnded);
            }
        }
    }

    /// Does one action; what it finds out goes to `feedback`.
    fn act(&mut self, action: Action, feedback: &mut Vec<Input<'static>>) {
        match action {
            Action::List { limit, continue_token } => {
                let client = match self.cluster.client(&self.key.identity) {
                    Ok(client) => client,
                    Err(error) => {
                        let status = Status::failure(500, "InternalError", format!("cannot build a client for cluster {}: {error}", self.key.cluster));
                        return feedback.push(Input::PageFailed(Classified::Fatal(status)));
                    }
                };
                let request = match self.requests.list_page(limit, continue_token.as_deref()) {
                    Ok(request) => request,
                    Err(error) => return feedback.push(Input::PageFailed(Classified::Fatal(error.status()))),
                };
                let body = std::mem::take(&mut self.body);
                self.meter.request();
                self.in_flight = InFlight::Page(Box::pin(read_page(client, request, body)));
            }
            Action::Watch { from } => {
                let client = match self.cluster.client(&self.key.identity) {
                    Ok(client) => client,
                    Err(error) => return feedback.push(Input::WatchFailed(Classified::Fatal(Status::failure(500, "InternalError", error.to_string())))),
                };
                let request = match self.requests.watch(&from, Some(self.settings.watch_timeout)) {
                    Ok(request) => request,
                    Err(error) => return feedback.push(Input::WatchFailed(Classified::Fatal(error.status()))),
                };
                let max = self.settings.max_line_bytes;
                self.meter.request();
                self.in_flight = InFlight::Opening(Box::pin(async move { client.request_stream(request).await.map(|stream| watch_lines(stream, max).boxed()) }));
            }
            Action::Abandon => self.in_flight = InFlight::None,
            Action::Arm(timer, at) => {
                self.timers.insert(timer, at);
            }
            Action::Send { sub_id, sink, frame } => {
                if !self.send(&sink, frame) {
                    feedback.push(Input::PartDropped { sub_id });
                }
            }
            Action::CatchUp { sub_id, sink, from, to } => self.catch_up(sub_id, sink, from, to, feedback),
            Action::AbortCatchUp { sub_id } => {
                if let Some(task) = self.catch_ups.remove(&sub_id) {
                    task.abort();
                }
            }
            Action::Retire => {
                // Under the registry's lock, so that a racing subscribe is never lost.
                let retired = self.registry.upgrade().is_none_or(|registry| registry.retire(&self.key, self.task, &self.commands, false));
                if retired {
                    self.retired = true;
                } else {
                    feedback.push(Input::RetireRefused);
                }
            }
            Action::End(status) => {
                // A failing task leaves before it tells its subscribers, so that whoever sees
                // the error sees the task gone.
                self.leave();
                self.commands.close();
                while let Ok(command) = self.commands.try_recv() {
                    if let Command::Subscribe { sink, .. } = command {
                        sink.error(true, &status);
                    }
                }
            }
        }
    }

    /// Sends one frame; false when a snapshot part was dropped (to be fed back).
    fn send(&self, sink: &Sink, frame: Frame) -> bool {
        match frame {
            Frame::Snapshot(objects, rv) => sink.snapshot(objects, &rv),
            Frame::SnapshotPart(objects, reset) => {
                if sink.snapshot_part(objects, reset.is_some()) {
                    if let Some(cause) = reset {
                        self.metrics.reset(cause);
                    }
                } else if !sink.is_detached() {
                    // Dropped: another subscription's frames overflowed the connection's queue.
                    return false;
                }
            }
            Frame::SnapshotEnd(rv) => sink.snapshot_end(&rv),
            Frame::ResetWithSnapshot(objects, rv) => sink.reset_with_snapshot(objects, &rv),
            Frame::Event(event_type, object, rv) => sink.event(event_type, &object, rv.as_deref()),
            Frame::Shared(event) => sink.shared_event(&event),
            Frame::Bookmark(rv) => sink.bookmark(&rv),
            Frame::Synced(rv) => sink.synced(&rv),
            Frame::Inventory(changed, keys, rv) => sink.inventory(&changed, keys.iter().map(|(namespace, name)| (namespace.as_str(), name.as_str())), &rv),
            Frame::Ahead(version, rv) => sink.ahead(version, &rv),
            Frame::Error(fatal, status) => sink.error(fatal, &status),
        }
        true
    }

    /// Starts a catch-up watch for a subscriber the ring does not reach; one that cannot start
    /// is reported unconfirmed at once (the subscriber is reset).
    fn catch_up(&mut self, sub_id: u64, sink: Arc<Sink>, from: u64, to: u64, feedback: &mut Vec<Input<'static>>) {
        let Ok(client) = self.cluster.client(&self.key.identity) else {
            return feedback.push(Input::Command(Some(Command::CaughtUp { sub_id, outcome: catch_up::Outcome::Unconfirmed })));
        };
        let catch_up = catch_up::CatchUp {
            client,
            key: self.key.clone(),
            requests: self.requests.clone(),
            from,
            to,
            sink,
            sub_id,
            report: self.reports.clone(),
            within: self.settings.catch_up_timeout,
            max_line_bytes: self.settings.max_line_bytes,
            metrics: self.metrics.clone(),
            inject_panic: self.settings.panics(TaskKind::CatchUp, &self.key),
        };
        self.meter.request();
        let task = tokio::spawn(catch_up.run());
        self.catch_ups.insert(sub_id, task.abort_handle());
    }

    /// A reload retired this task's cluster: carries on against the cluster that replaced it,
    /// or ends every subscription if it was removed.
    fn follow(&mut self) {
        let replacement = self.registry.upgrade().and_then(|registry| registry.cluster(&self.key.cluster));
        match replacement {
            Some(cluster) if !Arc::ptr_eq(&cluster, &self.cluster) => {
                tracing::info!(cluster = %self.key.cluster, path = %self.key.path, "cluster settings changed; the upstream watch restarts against them");
                self.requests = Requests::new(&self.key, &cluster.url());
                self.cluster = cluster;
                self.feed(Input::ClusterChanged);
            }
            // Retired with no other cluster of its name in force: it was removed (the same one
            // still in force cannot be, as a cluster is retired only once it has left the set).
            _ => self.feed(Input::ClusterRemoved),
        }
    }

    /// Leaves the registry and the `upstream_watches` gauge, once.
    fn leave(&mut self) {
        if !std::mem::take(&mut self.counted) {
            return;
        }
        self.metrics.upstream_watches.dec();
        if let Some(registry) = self.registry.upgrade() {
            registry.retire(&self.key, self.task, &self.commands, true);
        }
    }
}

/// What the request or stream in flight brings next; never, with none.
async fn next(in_flight: &mut InFlight) -> Arrived {
    match in_flight {
        InFlight::None => std::future::pending().await,
        InFlight::Page(page) => {
            let (body, page) = page.await;
            Arrived::Page(body, page)
        }
        InFlight::Opening(opening) => Arrived::Opened(opening.await),
        InFlight::Streaming(lines) => Arrived::Line(lines.next().await),
    }
}

/// Sleeps until `deadline`; `None` is never.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One list page, its body read into `body` (emptied first), which is handed back for the next.
async fn read_page(client: kube::Client, request: http::Request<Vec<u8>>, mut body: Vec<u8>) -> (Vec<u8>, Result<ListPage, kube::Error>) {
    body.clear();
    let read = async {
        let stream = client.request_stream(request).await?;
        let mut stream = std::pin::pin!(stream);
        futures::AsyncReadExt::read_to_end(&mut stream, &mut body).await.map_err(kube::Error::ReadEvents)?;
        Ok::<_, kube::Error>(())
    };
    if let Err(error) = read.await {
        return (body, Err(error));
    }
    match String::from_utf8(body) {
        Ok(text) => {
            let page = parse_list_page(&text).map_err(kube::Error::SerdeError);
            (text.into_bytes(), page)
        }
        Err(error) => (Vec::new(), Err(kube::Error::FromUtf8(error))),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    use std::time::Duration;

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
