//! A native kubemux client: the sans-IO client core driven over tokio-tungstenite. The tests use
//! it the way the browser client uses the same core, so what they prove about the core holds for
//! both.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use kubemux_protocol::client::{ClientConfig, ClientCore, ConnectionState, Output, SubscriptionState, WatchOptions};
use kubemux_protocol::frames::{EventType, ProjectionMode, SUBPROTOCOL, Status, WatchQuery};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// An object's namespace and name.
pub type Key = (String, String);

/// One event a subscription received: its type and the object's namespace and name.
pub type Received = (EventType, Key);

/// What the client has seen so far.
#[derive(Debug, Default, Clone)]
pub struct View {
    /// Every connection state, in order.
    pub states: Vec<ConnectionState>,
    /// Every error: (id, fatal, status).
    pub errors: Vec<(Option<String>, bool, Status)>,
    /// Resets per subscription.
    pub resets: HashMap<String, usize>,
    /// Events per subscription.
    pub events: HashMap<String, usize>,
    /// Every event per subscription, in order.
    pub received: HashMap<String, Vec<Received>>,
    /// `synced` frames per subscription.
    pub synced: HashMap<String, usize>,
    /// Each subscription's visible objects, by namespace/name.
    pub caches: HashMap<String, BTreeMap<(String, String), Value>>,
    /// Each subscription's state.
    pub sub_states: HashMap<String, SubscriptionState>,
    /// When each open connection closed, and its close code (`None`: no close frame, an abrupt
    /// end).
    pub closes: Vec<(Instant, Option<u16>)>,
    /// When each `synced` of a subscription arrived, and its version.
    pub synced_at: HashMap<String, Vec<(Instant, String)>>,
    /// Resumes per subscription: `watch` frames sent with a resume point (after a reconnect).
    pub resumes: HashMap<String, usize>,
    /// Live events (after a `synced`, before the connection or a `reset` ended it) whose
    /// version is not after the one before: (subscription, event version, the version before).
    pub out_of_order: Vec<(String, String, u64)>,
    /// Live events the subscription had already received since its last `reset` (the same
    /// object at the same version): (subscription, namespace/name, version).
    pub duplicates: Vec<(String, (String, String), String)>,
    /// Per subscription, while it is live: the version of the last `synced` or event.
    live: HashMap<String, u64>,
    /// Per subscription: every (object, version) received since its last `reset`.
    seen: HashMap<String, HashSet<(Key, String)>>,
}

impl View {
    /// The errors of one subscription.
    pub fn errors_of(&self, id: &str) -> Vec<&Status> {
        self.errors.iter().filter(|(i, _, _)| i.as_deref() == Some(id)).map(|(_, _, s)| s).collect()
    }

    /// How many times the connection was (re)opened.
    pub fn opens(&self) -> usize {
        self.states.iter().filter(|s| **s == ConnectionState::Open).count()
    }

    /// When the connection last closed.
    pub fn last_close(&self) -> Option<Instant> {
        self.closes.last().map(|(at, _)| *at)
    }

    /// The first `synced` of `id` that arrived after `since`.
    pub fn synced_after(&self, id: &str, since: Instant) -> Option<Instant> {
        self.synced_at.get(id)?.iter().map(|(at, _)| *at).find(|at| *at > since)
    }

    /// Whether the connection is open and every subscription in `ids` got a `synced` since the
    /// connection last closed (all of them, when it never did).
    pub fn settled(&self, ids: &[&str]) -> bool {
        let since = self.last_close();
        self.states.last() == Some(&ConnectionState::Open) && ids.iter().all(|id| self.synced_at.get(*id).and_then(|s| s.last()).is_some_and(|(at, _)| since.is_none_or(|close| *at > close)))
    }

    /// A connection opened: until each subscription's next `synced`, what arrives is a resume
    /// sequence, in no order to check.
    fn opened(&mut self) {
        self.live.clear();
    }

    fn closed(&mut self, code: Option<u16>) {
        self.closes.push((Instant::now(), code));
        self.live.clear();
    }

    /// Checks a live event's order and whether it is a duplicate, and remembers it.
    fn check_event(&mut self, id: &str, key: &(String, String), version: Option<&str>) {
        let Some(version) = version else { return };
        let fresh = self.seen.entry(id.to_owned()).or_default().insert((key.clone(), version.to_owned()));
        let Some(last) = self.live.get(id).copied() else { return };
        if !fresh {
            self.duplicates.push((id.to_owned(), key.clone(), version.to_owned()));
        }
        match version.parse::<u64>() {
            Ok(number) if number > last => {
                self.live.insert(id.to_owned(), number);
            }
            _ => self.out_of_order.push((id.to_owned(), version.to_owned(), last)),
        }
    }
}

enum Command {
    Watch { id: String, cluster: String, path: String, query: Option<WatchQuery>, options: WatchOptions, reply: oneshot::Sender<Result<(), String>> },
    Unwatch(String),
    Auth(String, String),
    Send(String),
    Retarget(String),
    Stats(oneshot::Sender<Result<Value, String>>),
}

/// A client connected to one proxy URL, reconnecting on its own.
pub struct NativeClient {
    commands: mpsc::UnboundedSender<Command>,
    view: Arc<Mutex<View>>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Backoff and liveness suited to tests: quick reconnects.
pub fn fast_config(seed: u64) -> ClientConfig {
    let mut config = ClientConfig { seed, ..ClientConfig::default() };
    config.backoff.base_ms = 100;
    config.backoff.cap_ms = 1000;
    config
}

impl NativeClient {
    /// Starts a client for `ws://…/mux`.
    pub fn connect(url: &str, config: ClientConfig) -> NativeClient {
        let (commands, rx) = mpsc::unbounded_channel();
        let view = Arc::new(Mutex::new(View::default()));
        let changed = Arc::new(Notify::new());
        let task = tokio::spawn(drive(url.to_owned(), config, rx, view.clone(), changed.clone()));
        NativeClient { commands, view, changed, task }
    }

    /// Subscribes.
    pub async fn watch(&self, id: &str, cluster: &str, path: &str, query: Option<WatchQuery>) -> Result<(), String> {
        self.watch_projected(id, cluster, path, query, None).await
    }

    /// [`NativeClient::watch`] with a projection (`docs/PROTOCOL.md` §2).
    pub async fn watch_projected(&self, id: &str, cluster: &str, path: &str, query: Option<WatchQuery>, projection: Option<ProjectionMode>) -> Result<(), String> {
        self.watch_with(id, cluster, path, query, WatchOptions { projection, deltas: false }).await
    }

    /// [`NativeClient::watch`] with a projection and deltas (`docs/PROTOCOL.md` §2).
    pub async fn watch_with(&self, id: &str, cluster: &str, path: &str, query: Option<WatchQuery>, options: WatchOptions) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        let _ = self.commands.send(Command::Watch { id: id.into(), cluster: cluster.into(), path: path.into(), query, options, reply });
        rx.await.unwrap_or_else(|_| Err("client task ended".into()))
    }

    /// Unsubscribes.
    pub fn unwatch(&self, id: &str) {
        let _ = self.commands.send(Command::Unwatch(id.into()));
    }

    /// Asks the proxy what this connection and its subscriptions cost: the `stats` frame's
    /// `connection` and `subscriptions`.
    pub async fn stats(&self) -> Result<Value, String> {
        let (reply, rx) = oneshot::channel();
        let _ = self.commands.send(Command::Stats(reply));
        rx.await.unwrap_or_else(|_| Err("client task ended".into()))
    }

    /// Sets a cluster token.
    pub fn auth(&self, cluster: &str, token: &str) {
        let _ = self.commands.send(Command::Auth(cluster.into(), token.into()));
    }

    /// Connects to `url` from the next connection on (another proxy replica, as a load balancer
    /// would send it); the current connection, if any, carries on.
    pub fn retarget(&self, url: &str) {
        let _ = self.commands.send(Command::Retarget(url.into()));
    }

    /// Sends a raw text frame on the current socket (for bad-input tests).
    pub fn send_raw(&self, text: &str) {
        let _ = self.commands.send(Command::Send(text.into()));
    }

    /// A copy of what the client has seen.
    pub fn view(&self) -> View {
        self.view.lock().unwrap().clone()
    }

    /// Waits until `condition` holds, or fails after `timeout` saying what was awaited.
    pub async fn wait_for(&self, timeout: Duration, what: &str, condition: impl Fn(&View) -> bool) -> anyhow::Result<View> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            {
                let view = self.view.lock().unwrap();
                if condition(&view) {
                    return Ok(view.clone());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let view = self.view();
                anyhow::bail!("timed out after {timeout:?} waiting for {what}; states {:?}, errors {:?}", view.states, view.errors);
            }
        }
    }
}

/// Waits until `condition` holds over the views of all `clients` (woken by a change in any of
/// them), or fails after `timeout` saying what was awaited. The condition sees the views in
/// place, uncopied: cheap however much the clients have received.
pub async fn wait_for_all(clients: &[NativeClient], timeout: Duration, what: &str, condition: impl Fn(&[&View]) -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let notified: Vec<_> = clients.iter().map(|c| Box::pin(c.changed.notified())).collect();
        {
            let guards: Vec<_> = clients.iter().map(|c| c.view.lock().unwrap()).collect();
            let views: Vec<&View> = guards.iter().map(|g| &**g).collect();
            if condition(&views) {
                return Ok(());
            }
        }
        if notified.is_empty() || tokio::time::timeout_at(deadline, futures::future::select_all(notified)).await.is_err() {
            anyhow::bail!("timed out after {timeout:?} waiting for {what} over {} clients", clients.len());
        }
    }
}

impl NativeClient {
    /// Runs `f` on the view in place (no copy).
    pub fn inspect<T>(&self, f: impl FnOnce(&View) -> T) -> T {
        f(&self.view.lock().unwrap())
    }
}

impl Drop for NativeClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn open(url: &str) -> anyhow::Result<Socket> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert("sec-websocket-protocol", SUBPROTOCOL.parse()?);
    let (socket, _) = tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(request)).await??;
    Ok(socket)
}

async fn drive(mut url: String, config: ClientConfig, mut commands: mpsc::UnboundedReceiver<Command>, view: Arc<Mutex<View>>, changed: Arc<Notify>) {
    let epoch = Instant::now();
    let now = move || u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut core = ClientCore::new(config);
    let mut socket: Option<Socket> = None;
    let mut stats: HashMap<u64, oneshot::Sender<Result<Value, String>>> = HashMap::new();
    let mut pending = core.start(now());
    loop {
        // Perform outputs until none are left (connecting produces more).
        while !pending.is_empty() {
            let outputs = std::mem::take(&mut pending);
            for output in outputs {
                match output {
                    Output::Connect => match open(&url).await {
                        Ok(s) => {
                            socket = Some(s);
                            view.lock().unwrap().opened();
                            pending.extend(core.on_open(now()));
                        }
                        Err(_) => pending.extend(core.on_close(now(), None)),
                    },
                    Output::Send(text) => {
                        if let Some(id) = resumed(&text) {
                            *view.lock().unwrap().resumes.entry(id).or_default() += 1;
                        }
                        if let Some(s) = socket.as_mut()
                            && s.send(Message::Text(text.into())).await.is_err()
                        {
                            socket = None;
                            view.lock().unwrap().closed(None);
                            pending.extend(core.on_close(now(), None));
                        }
                    }
                    Output::CloseSocket => {
                        if socket.take().is_some() {
                            view.lock().unwrap().closed(None);
                        }
                    }
                    Output::Stats { request, report } => {
                        if let Some(reply) = stats.remove(&request) {
                            let _ = reply.send(report.ok_or_else(|| "the connection closed before the stats came".to_owned()));
                        }
                    }
                    other => record(&mut view.lock().unwrap(), &core, other),
                }
            }
            changed.notify_waiters();
        }
        let deadline = core.next_deadline().map(|ms| epoch + Duration::from_millis(ms));
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::Watch { id, cluster, path, query, options, reply }) => match core.watch_with(&id, &cluster, &path, query, options) {
                    Ok(out) => {
                        pending.extend(out);
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                    }
                },
                Some(Command::Unwatch(id)) => pending.extend(core.unwatch(&id).unwrap_or_default()),
                Some(Command::Auth(cluster, token)) => pending.extend(core.auth(&cluster, &token).unwrap_or_default()),
                Some(Command::Send(text)) => pending.push(Output::Send(text)),
                Some(Command::Retarget(to)) => url = to,
                Some(Command::Stats(reply)) => match core.stats() {
                    Ok((request, out)) => {
                        stats.insert(request, reply);
                        pending.extend(out);
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error.to_string()));
                    }
                },
            },
            message = async { socket.as_mut().expect("guarded").next().await }, if socket.is_some() => match message {
                Some(Ok(Message::Text(text))) => pending.extend(core.on_message(now(), text.as_str())),
                Some(Ok(Message::Close(frame))) => {
                    socket = None;
                    let code = frame.map(|f| u16::from(f.code));
                    view.lock().unwrap().closed(code);
                    pending.extend(core.on_close(now(), code));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    socket = None;
                    view.lock().unwrap().closed(None);
                    pending.extend(core.on_close(now(), None));
                }
            },
            _ = async { tokio::time::sleep_until(deadline.expect("guarded")).await }, if deadline.is_some() => {
                pending.extend(core.on_tick(now()));
            }
        }
    }
}

/// The subscription a frame resumes, if it is a `watch` with a resume point.
fn resumed(text: &str) -> Option<String> {
    if !text.contains(r#""resourceVersion""#) {
        return None;
    }
    let frame: Value = serde_json::from_str(text).ok()?;
    (frame["op"] == "watch" && frame["resourceVersion"].is_string()).then(|| frame["id"].as_str().map(str::to_owned)).flatten()
}

fn record(view: &mut View, core: &ClientCore, output: Output) {
    match output {
        Output::State(state) => view.states.push(state),
        Output::Error { id, fatal, status } => view.errors.push((id, fatal, status)),
        Output::Reset { id } => {
            view.live.remove(&id);
            view.seen.remove(&id);
            *view.resets.entry(id).or_default() += 1;
        }
        Output::Event { id, event_type, object } => {
            let meta = &object["metadata"];
            let key = (meta["namespace"].as_str().unwrap_or_default().to_owned(), meta["name"].as_str().unwrap_or_default().to_owned());
            view.check_event(&id, &key, meta["resourceVersion"].as_str());
            view.received.entry(id.clone()).or_default().push((event_type, key));
            *view.events.entry(id).or_default() += 1;
        }
        Output::Synced { id, resource_version } => {
            if let Ok(version) = resource_version.parse::<u64>() {
                view.live.insert(id.clone(), version);
            }
            view.synced_at.entry(id.clone()).or_default().push((Instant::now(), resource_version));
            *view.synced.entry(id).or_default() += 1;
        }
        Output::SubscriptionState { id, state } => {
            view.sub_states.insert(id, state);
        }
        Output::Changed { id } => {
            let cache = core
                .items(&id)
                .map(|items| {
                    items
                        .map(|o| {
                            let meta = &o["metadata"];
                            ((meta["namespace"].as_str().unwrap_or_default().to_owned(), meta["name"].as_str().unwrap_or_default().to_owned()), o.clone())
                        })
                        .collect()
                })
                .unwrap_or_default();
            view.caches.insert(id, cache);
        }
        Output::Connect | Output::Send(_) | Output::CloseSocket | Output::Stats { .. } => unreachable!("performed by the driver"),
    }
}
