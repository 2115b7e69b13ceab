//! One forward's worker: the one task that owns its listener, its resolver, its pick of a pod
//! and its state; every accepted connection is a task of its own that asks the worker's pick
//! where to go and reports back how it went. A stream asked for by `/forwards/{name}/…` or the
//! probe ([`Open`]) is the same task over an in-memory duplex stream, one end handed back once
//! its tunnel is open; it never waits for a Ready pod.
//!
//! Make-before-break: the pick changes the moment the resolution does (a pod deleted, no
//! longer Ready or terminating, a new Ready pod), so new connections go to a Ready pod at once
//! while connections already carried to the old pod run until that pod ends them. A
//! connection accepted while no pod is Ready waits (up to `connectTimeout`) for one instead of
//! failing, and one whose pod turns out to be gone (the API server says 404 before the watch
//! does) tries the next pick.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use kubemux_protocol::client::{Backoff, BackoffConfig};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Env;
use super::access::Verdict;
use super::metrics::ForwardCounters;
use super::resolver::{self, Resolution};
use super::spec::{ForwardSpec, container_port};
use super::tunnel::{self, DialError, Ended, Tunnel};

/// A forward's state; the reason says why whenever it is not `Active`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Listening; the first resolution or the permission check is not in yet.
    Starting,
    /// Connections are carried to a Ready pod.
    Active,
    /// Listening and reaching pods, but the last connection failed in the pod (the app
    /// refused it).
    Degraded,
    /// Waiting for what connections need: a Ready pod, or the API server.
    Reconnecting,
    /// Cannot work until something outside changes (permissions, the local port); retried.
    Failed,
}

impl State {
    /// Its name in `/forwards` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "Starting",
            State::Active => "Active",
            State::Degraded => "Degraded",
            State::Reconnecting => "Reconnecting",
            State::Failed => "Failed",
        }
    }

    /// Every state, for metrics.
    pub const ALL: [State; 5] = [State::Starting, State::Active, State::Degraded, State::Reconnecting, State::Failed];
}

/// Why a forward is not `Active`. A silent tunnel (pings unanswered) leaves it `Degraded`:
/// the API server still answers new dials, but the network between may be dropping them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No pod of the target is Ready (or the target does not exist).
    NoReadyPod,
    /// The proxy's credentials may not port-forward there (the preflight, or a 403).
    Forbidden,
    /// The app in the pod refused the connection.
    TargetRefused,
    /// The API server could not be reached or failed.
    UpstreamUnreachable,
    /// The local address is taken.
    LocalPortInUse,
    /// A tunnel answered no ping (black-holed).
    TunnelSilent,
    /// The forward's optional probe (`probe:`) failed.
    ProbeFailed,
}

impl Reason {
    /// Its name in `/forwards` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoReadyPod => "no Ready pod",
            Reason::Forbidden => "forbidden",
            Reason::TargetRefused => "target refused",
            Reason::UpstreamUnreachable => "upstream unreachable",
            Reason::LocalPortInUse => "local port in use",
            Reason::TunnelSilent => "tunnel silent",
            Reason::ProbeFailed => "probe failed",
        }
    }

    /// Its metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::NoReadyPod => "no_ready_pod",
            Reason::Forbidden => "forbidden",
            Reason::TargetRefused => "target_refused",
            Reason::UpstreamUnreachable => "upstream_unreachable",
            Reason::LocalPortInUse => "local_port_in_use",
            Reason::TunnelSilent => "tunnel_silent",
            Reason::ProbeFailed => "probe_failed",
        }
    }
}

/// What `/forwards` shows of one forward.
#[derive(Debug, Clone)]
pub struct ForwardStatus {
    /// The state.
    pub state: State,
    /// Why, when not `Active`.
    pub reason: Option<Reason>,
    /// The details of the reason (an API server's message, the bind error).
    pub message: Option<String>,
    /// The pod new connections go to.
    pub pod: Option<String>,
    /// The bound local address.
    pub local: Option<SocketAddr>,
    /// Retried dials and resolutions.
    pub reconnects: u64,
    /// When the state last changed.
    pub since: DateTime<Utc>,
}

impl ForwardStatus {
    pub(super) fn starting() -> ForwardStatus {
        ForwardStatus { state: State::Starting, reason: None, message: None, pod: None, local: None, reconnects: 0, since: Utc::now() }
    }

    /// The `/forwards` entry.
    pub fn to_json(&self, spec: &ForwardSpec, counters: &ForwardCounters) -> Value {
        json!({
            "name": spec.name,
            "cluster": spec.cluster,
            "namespace": spec.namespace,
            "target": spec.target.to_string(),
            "port": spec.port.to_string(),
            "pod": self.pod,
            "bind": spec.bind.to_string(),
            "localPort": self.local.map_or(spec.local_port, |a| a.port()),
            "state": self.state.as_str(),
            "reason": self.reason.map(Reason::as_str),
            "message": self.message,
            "connections": counters.open(),
            "bytesIn": counters.bytes_in(),
            "bytesOut": counters.bytes_out(),
            "reconnects": self.reconnects,
            "since": self.since.to_rfc3339_opts(SecondsFormat::Millis, true),
        })
    }
}

/// Where new connections go now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pick {
    /// Nothing to reach yet: wait.
    Wait,
    /// This pod and container port.
    Pod { name: String, port: u16 },
    /// Refuse at once (forbidden): no connection hangs on a forward that cannot work.
    Refuse,
}

/// What a connection reports to its worker.
#[derive(Debug)]
enum Report {
    /// Carried to this pod.
    Carried,
    /// The pod was gone when dialed.
    PodGone(String),
    Forbidden(String),
    Unreachable(String),
    Refused(String),
    /// The tunnel went silent (no answer to pings).
    Silent(String),
    /// The probe passed, or failed and why.
    Probed(Result<(), String>),
}

/// A request to a forward's worker for a stream to its target (`/forwards/{name}/…`): a pod
/// picked and a tunnel opened exactly as for a new local connection.
#[derive(Debug)]
pub struct Open {
    /// Answered once the tunnel is open, or with why there is none.
    pub reply: oneshot::Sender<Result<Stream, String>>,
}

/// A byte stream to the forward's target, carried by a tunnel like an accepted connection.
#[derive(Debug)]
pub struct Stream {
    /// The stream: what is written reaches the pod's port, what the pod sends is read here.
    pub io: DuplexStream,
    /// How the tunnel ended (the app refusing, say), once it has.
    pub ended: oneshot::Receiver<Ended>,
}

/// Why an exchange over a [`Stream`] failed: the app's refusal, when its tunnel ends with one
/// within a second, else `otherwise`.
pub(super) async fn refusal_or(ended: oneshot::Receiver<Ended>, otherwise: String) -> String {
    match tokio::time::timeout(Duration::from_secs(1), ended).await {
        Ok(Ok(Ended::Refused(why))) => why,
        _ => otherwise,
    }
}

/// Stream requests queued for a worker; more wait for room (each is one HTTP request).
pub(super) const OPEN_QUEUE: usize = 64;

/// The in-memory buffer of a requested stream, each way.
const STREAM_BUFFER: usize = 64 * 1024;

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A connection accepted on the listener: waits for a Ready pod up to `connectTimeout`.
    Local,
    /// A stream asked for over HTTP: answered at once when no pod is Ready.
    Request,
    /// The probe: like a request, but not one of the forward's connections.
    Probe,
}

/// The reconnect backoff of a forward, with equal jitter: each delay is between half of and
/// the whole of `reconnectInitial` × 2ⁿ, capped at `reconnectMax`.
pub(super) fn backoff(spec: &ForwardSpec, seed: u64) -> Backoff {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    Backoff::new(BackoffConfig { base_ms: millis(spec.reconnect_initial).max(1), cap_ms: millis(spec.reconnect_max).max(1), reset_after_ms: u64::MAX }, seed)
}

fn next_delay(backoff: &mut Backoff) -> Duration {
    let ceiling = backoff.ceiling_ms();
    let jitter = backoff.next_delay_ms();
    Duration::from_millis(ceiling / 2 + jitter / 2)
}

/// The worker's view, from which the state is derived.
struct View {
    bound: Option<Result<SocketAddr, String>>,
    /// The permission check: `None` until it answered.
    allowed: Option<Result<(), String>>,
    resolution: Resolution,
    /// Pods a dial found gone before the watch did.
    gone: HashSet<String>,
    /// The pod picked last, kept while it stays Ready (connections stick to one pod).
    current: Option<String>,
    /// The last connection failure since the last success.
    failure: Option<(Reason, String)>,
    /// Why the last probe failed, until one passes.
    probe_failure: Option<String>,
}

impl View {
    fn pick(&mut self, spec: &ForwardSpec) -> (Pick, Option<String>) {
        if matches!(self.allowed, Some(Err(_))) || self.resolution.problem.as_ref().is_some_and(|p| p.code == 401 || p.code == 403) {
            return (Pick::Refuse, None);
        }
        let ready: Vec<&Arc<Value>> = self.resolution.ready.iter().filter(|p| !self.gone.contains(p["metadata"]["name"].as_str().unwrap_or_default())).collect();
        let name_of = |p: &Arc<Value>| p["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let chosen = ready.iter().find(|p| Some(name_of(p)) == self.current).or_else(|| ready.first()).copied();
        let Some(pod) = chosen else {
            self.current = None;
            return (Pick::Wait, None);
        };
        let name = name_of(pod);
        if self.current.as_deref() != Some(name.as_str()) {
            // A probe's verdict was about the pod it reached, not this one.
            self.probe_failure = None;
        }
        self.current = Some(name.clone());
        match container_port(&spec.target, self.resolution.owner.as_deref(), &spec.port, pod) {
            Ok(port) => (Pick::Pod { name, port }, None),
            Err(why) => (Pick::Wait, Some(why)),
        }
    }

    /// The state and its reason: the first of these that holds.
    fn state(&self, pick: &Pick, port_problem: Option<String>) -> (State, Option<Reason>, Option<String>) {
        match &self.bound {
            Some(Err(why)) => return (State::Failed, Some(Reason::LocalPortInUse), Some(why.clone())),
            None => return (State::Starting, None, None),
            Some(Ok(_)) => {}
        }
        if let Some(Err(why)) = &self.allowed {
            return (State::Failed, Some(Reason::Forbidden), Some(why.clone()));
        }
        if let Some(problem) = &self.resolution.problem {
            if problem.code == 401 || problem.code == 403 {
                return (State::Failed, Some(Reason::Forbidden), Some(problem.message.clone()));
            }
            if problem.code == 404 || problem.code == 422 {
                return (State::Reconnecting, Some(Reason::NoReadyPod), Some(problem.message.clone()));
            }
            return (State::Reconnecting, Some(Reason::UpstreamUnreachable), Some(problem.message.clone()));
        }
        if !self.resolution.synced || self.allowed.is_none() {
            return (State::Starting, None, None);
        }
        if *pick == Pick::Wait {
            return (State::Reconnecting, Some(Reason::NoReadyPod), port_problem.or_else(|| Some("no pod of the target is Ready".to_owned())));
        }
        if let Some(why) = &self.probe_failure {
            return (State::Degraded, Some(Reason::ProbeFailed), Some(why.clone()));
        }
        match &self.failure {
            Some((reason @ (Reason::TargetRefused | Reason::TunnelSilent), why)) => (State::Degraded, Some(*reason), Some(why.clone())),
            Some((reason, why)) => (State::Reconnecting, Some(*reason), Some(why.clone())),
            None => (State::Active, None, None),
        }
    }
}

/// Binds a forward's local address.
pub(super) fn bind(addr: SocketAddr) -> Result<Arc<TcpListener>, String> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    TcpListener::from_std(listener).map(Arc::new).map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// The access reviews ([`super::access`]) as the proxy, so a forbidden forward fails at once
/// instead of at its first connection. `None`: the cluster did not answer (in time, or has no
/// authorization API); the forward works on (a dial's own 403 still says so) and asks again.
async fn preflight(env: &Env, spec: &ForwardSpec) -> Option<Result<(), String>> {
    let Some(cluster) = env.live.snapshot().clusters.get(&spec.cluster) else { return Some(Err(format!("cluster {} not found", spec.cluster))) };
    let client = cluster.client(&crate::identity::Identity::Proxy).ok()?;
    match super::access::review_forward(&client, spec).await {
        Verdict::Allowed => Some(Ok(())),
        Verdict::Denied(why) => Some(Err(why)),
        Verdict::Unanswered(why) => {
            tracing::warn!(forward = %spec.name, %why, "the forward's access reviews went unanswered; it runs unchecked and asks again");
            None
        }
    }
}

/// How often a worker proves it is making progress, whatever else it is doing.
pub(super) const HEARTBEAT: Duration = Duration::from_millis(500);

/// A worker's sign of life, which the watchdog reads.
#[derive(Debug)]
pub(super) struct Heartbeat {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last beat.
    last: std::sync::atomic::AtomicU64,
    /// Test hook: the worker stops making progress, as a worker stuck on a bug would.
    stall: std::sync::atomic::AtomicBool,
    /// Test hook: the worker panics at its next beat.
    panic: std::sync::atomic::AtomicBool,
    /// The worker is gone (it panicked): as silent as can be, for the watchdog.
    dead: std::sync::atomic::AtomicBool,
}

impl Heartbeat {
    pub(super) fn new() -> Arc<Heartbeat> {
        Arc::new(Heartbeat { epoch: Instant::now(), last: Default::default(), stall: Default::default(), panic: Default::default(), dead: Default::default() })
    }

    fn beat(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long since the last beat.
    pub(super) fn silence(&self) -> Duration {
        if self.dead.load(std::sync::atomic::Ordering::Relaxed) {
            return Duration::MAX;
        }
        self.epoch.elapsed().saturating_sub(Duration::from_millis(self.last.load(std::sync::atomic::Ordering::Relaxed)))
    }

    pub(super) fn stall(&self) {
        self.stall.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn inject_panic(&self) {
        self.panic.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The worker panicked: the watchdog replaces it at its next tick.
    pub(super) fn died(&self) {
        self.dead.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Beats, unless the test hook stalled it: then never returns.
    async fn alive(&self) {
        if self.panic.swap(false, std::sync::atomic::Ordering::Relaxed) {
            // Unreachable from input, upstream data or config: only `inject_panic` (called by tests through `Forwards`'s hidden test hook) sets the flag.
            panic!("test hook: a forward worker panics");
        }
        if self.stall.load(std::sync::atomic::Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        self.beat();
    }
}

/// Everything a worker is started with.
pub(super) struct Start {
    pub env: Env,
    pub spec: Arc<ForwardSpec>,
    pub listener: Result<Arc<TcpListener>, String>,
    /// Shared with the manager, so a worker the watchdog replaces keeps its observers.
    pub status: Arc<watch::Sender<ForwardStatus>>,
    pub heartbeat: Arc<Heartbeat>,
    /// Dropped once the worker has let go of its listener.
    pub released: tokio::sync::oneshot::Sender<()>,
    pub counters: Arc<ForwardCounters>,
    pub stop: CancellationToken,
    /// Requests for streams (`/forwards/{name}/…`).
    pub opens: mpsc::Receiver<Open>,
    /// Set once the cluster has answered the forward's access reviews (by a reload or this
    /// worker's preflight); `/config/status` lists the others under `forwardsUnchecked`.
    pub checked: Arc<std::sync::atomic::AtomicBool>,
    /// Resolves once the worker this one replaces let go of the listener: until then this one
    /// does not touch it, so one worker per name owns a forward's port at a time.
    pub after: Option<oneshot::Receiver<()>>,
    /// Which workers own their forward's listener now, by name (see [`Owner`]).
    pub owners: Arc<Owners>,
}

/// How many workers own each forward's listener: one at most, by construction.
pub type Owners = std::sync::Mutex<std::collections::BTreeMap<String, usize>>;

/// A worker's ownership of its listener, listed in [`Owners`] while it lives (a panic
/// unwinding the worker ends it too).
struct Owner {
    owners: Arc<Owners>,
    name: String,
}

impl Owner {
    fn new(owners: Arc<Owners>, name: &str) -> Owner {
        *owners.lock().unwrap_or_else(|p| p.into_inner()).entry(name.to_owned()).or_default() += 1;
        Owner { owners, name: name.to_owned() }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = owners.get_mut(&self.name) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                owners.remove(&self.name);
            }
        }
    }
}

/// Runs a forward until `stop`; its connections end with it.
pub(super) async fn run(start: Start) {
    let Start { env, spec, listener, status, heartbeat, released, counters, stop, mut opens, checked, after, owners } = start;
    heartbeat.beat();
    if let Some(previous) = after {
        tokio::select! {
            _ = tokio::time::timeout(Duration::from_secs(5), previous) => {}
            () = stop.cancelled() => return,
        }
        heartbeat.beat();
    }
    // Declared after `released`, so dropped before it: whoever waits for `released` finds
    // this worker no longer an owner.
    let owner = Owner::new(owners, &spec.name);
    let mut beats = tokio::time::interval(HEARTBEAT);
    let connections = TaskTracker::new();
    let children = stop.child_token();
    let mut backoff = backoff(&spec, seed(&spec.name));
    let mut view = View { bound: None, allowed: None, resolution: Resolution::default(), gone: HashSet::new(), current: None, failure: None, probe_failure: None };
    let publish = |view: &mut View, picks: &watch::Sender<Pick>, reconnects: u64| {
        let (pick, port_problem) = view.pick(&spec);
        let (state, reason, message) = view.state(&pick, port_problem);
        picks.send_if_modified(|current| {
            let changed = *current != pick;
            *current = pick;
            changed
        });
        let pod = view.current.clone();
        let local = view.bound.as_ref().and_then(|b| b.as_ref().ok().copied());
        status.send_if_modified(|current| {
            let state_changed = current.state != state;
            if state_changed {
                counters.entered(current.state, state);
            }
            let changed = state_changed || current.reason != reason || current.message != message || current.pod != pod || current.local != local || current.reconnects != reconnects;
            if changed {
                *current = ForwardStatus { since: if state_changed { Utc::now() } else { current.since }, state, reason, message: message.clone(), pod: pod.clone(), local, reconnects };
            }
            changed
        });
    };
    status.send_replace(ForwardStatus::starting());
    counters.entered(State::Starting, State::Starting);
    let (picks, _) = watch::channel(Pick::Wait);
    let mut reconnects = 0u64;

    // The listener: a forward whose port is taken keeps trying (the port may be freed).
    let listener = match listener {
        Ok(listener) => listener,
        Err(why) => {
            view.bound = Some(Err(why));
            publish(&mut view, &picks, reconnects);
            loop {
                let retry = tokio::time::sleep(next_delay(&mut backoff));
                tokio::pin!(retry);
                loop {
                    tokio::select! {
                        () = &mut retry => break,
                        _ = beats.tick() => heartbeat.alive().await,
                        () = stop.cancelled() => return,
                    }
                }
                match bind(spec.local_addr()) {
                    Ok(listener) => break listener,
                    Err(why) => view.bound = Some(Err(why)),
                }
            }
        }
    };
    view.bound = Some(listener.local_addr().map_err(|e| e.to_string()));
    publish(&mut view, &picks, reconnects);

    let (resolution_tx, mut resolutions) = watch::channel(Resolution::default());
    tokio::spawn(resolver::run(env.clone(), spec.clone(), resolution_tx, children.clone()));
    let (reports_tx, mut reports) = mpsc::channel::<Report>(256);
    let check = preflight(&env, &spec);
    tokio::pin!(check);
    let mut checking = true;
    let mut recheck: Option<Instant> = None;
    // The probe (off by default): one at a time, only while a pod is picked.
    let mut probes = tokio::time::interval(spec.probe_interval.max(Duration::from_millis(1)));
    probes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probing = false;
    let connection =
        |purpose: Purpose| Connection { env: env.clone(), spec: spec.clone(), picks: picks.subscribe(), reports: reports_tx.clone(), counters: counters.clone(), stop: children.clone(), purpose };
    loop {
        heartbeat.alive().await;
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            _ = beats.tick() => continue,
            allowed = &mut check, if checking => {
                checking = false;
                match allowed {
                    Some(allowed) => {
                        checked.store(true, std::sync::atomic::Ordering::Release);
                        if allowed.is_err() {
                            recheck = Some(Instant::now() + spec.reconnect_max);
                        }
                        view.allowed = Some(allowed);
                    }
                    None => {
                        // Unanswered: not a denial. Work on and ask again.
                        recheck = Some(Instant::now() + spec.reconnect_max);
                        view.allowed = Some(view.allowed.take().unwrap_or(Ok(())));
                    }
                }
            }
            () = async { if let Some(at) = recheck { tokio::time::sleep_until(at).await } }, if recheck.is_some() && !checking => {
                recheck = None;
                check.set(preflight(&env, &spec));
                checking = true;
                continue;
            }
            changed = resolutions.changed() => {
                if changed.is_err() {
                    break;
                }
                view.resolution = resolutions.borrow_and_update().clone();
                // Forget pods the watch no longer lists (or lists again as Ready anew).
                let listed: HashSet<&str> = view.resolution.ready.iter().filter_map(|p| p["metadata"]["name"].as_str()).collect();
                view.gone.retain(|name| listed.contains(name.as_str()));
            }
            Some(report) = reports.recv() => match report {
                Report::Carried => view.failure = None,
                Report::PodGone(pod) => {
                    reconnects += 1;
                    counters.reconnect(Reason::NoReadyPod);
                    view.gone.insert(pod);
                }
                Report::Forbidden(why) => {
                    view.allowed = Some(Err(why));
                    recheck = Some(Instant::now() + spec.reconnect_max);
                }
                Report::Unreachable(why) => {
                    reconnects += 1;
                    counters.reconnect(Reason::UpstreamUnreachable);
                    view.failure = Some((Reason::UpstreamUnreachable, why));
                }
                Report::Refused(why) => view.failure = Some((Reason::TargetRefused, why)),
                Report::Silent(why) => {
                    counters.reconnect(Reason::UpstreamUnreachable);
                    view.failure = Some((Reason::TunnelSilent, why));
                }
                Report::Probed(outcome) => {
                    probing = false;
                    view.probe_failure = outcome.err();
                }
            },
            accepted = listener.accept() => {
                if let Ok((local, _)) = accepted {
                    let _ = local.set_nodelay(true);
                    connections.spawn(connection(Purpose::Local).run(local, None));
                }
                continue;
            }
            Some(Open { reply }) = opens.recv() => {
                let (ours, theirs) = tokio::io::duplex(STREAM_BUFFER);
                connections.spawn(connection(Purpose::Request).run(ours, Some(Requested { reply, theirs })));
                continue;
            }
            _ = probes.tick(), if spec.probe.is_some() && !probing => {
                let Some(probe) = spec.probe.clone() else { continue };
                if !matches!(*picks.borrow(), Pick::Pod { .. }) {
                    continue;
                }
                probing = true;
                let (reply, opened) = oneshot::channel();
                let (ours, theirs) = tokio::io::duplex(STREAM_BUFFER);
                connections.spawn(connection(Purpose::Probe).run(ours, Some(Requested { reply, theirs })));
                let (reports, timeout, host) = (reports_tx.clone(), spec.probe_timeout, spec.host());
                connections.spawn(async move {
                    let outcome = match tokio::time::timeout(timeout, opened).await {
                        Ok(Ok(Ok(stream))) => super::probe::check(&probe, stream, timeout, &host).await,
                        Ok(Ok(Err(why))) => Err(why),
                        Ok(Err(_)) => Err("the forward stopped".to_owned()),
                        Err(_) => Err(format!("no tunnel within {:.1} s", timeout.as_secs_f64())),
                    };
                    let _ = reports.send(Report::Probed(outcome)).await;
                });
                continue;
            }
        }
        publish(&mut view, &picks, reconnects);
    }
    children.cancel();
    // The port closes now, not after the connections have wound down: whoever stopped this
    // forward (a reload) waits for `released`.
    drop(listener);
    drop(owner);
    drop(released);
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), connections.wait()).await;
}

/// A seed for a forward's jitter: its name and the time, so forwards do not retry in step.
fn seed(name: &str) -> u64 {
    let nanos = u64::try_from(Utc::now().timestamp_nanos_opt().unwrap_or_default()).unwrap_or_default();
    name.bytes().fold(nanos, |h, b| h.rotate_left(5) ^ u64::from(b))
}

/// One connection: accepted on the listener, or a requested stream (its other end handed to
/// the requester once the tunnel is open).
struct Connection {
    env: Env,
    spec: Arc<ForwardSpec>,
    picks: watch::Receiver<Pick>,
    reports: mpsc::Sender<Report>,
    counters: Arc<ForwardCounters>,
    stop: CancellationToken,
    purpose: Purpose,
}

/// A requested stream's reply, and the end of the stream the requester gets.
struct Requested {
    reply: oneshot::Sender<Result<Stream, String>>,
    theirs: DuplexStream,
}

impl Connection {
    async fn run<S>(mut self, local: S, requested: Option<Requested>)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let _open = (self.purpose != Purpose::Probe).then(|| self.counters.open_guard());
        let (tunnel, pod) = match self.dial().await {
            Ok(dialed) => dialed,
            Err(why) => {
                if let Some(Requested { reply, .. }) = requested {
                    let _ = reply.send(Err(why));
                }
                return;
            }
        };
        let _ = self.reports.try_send(Report::Carried);
        let mut ended_tx = None;
        if let Some(Requested { reply, theirs }) = requested {
            let (tx, ended) = oneshot::channel();
            if reply.send(Ok(Stream { io: theirs, ended })).is_err() {
                return;
            }
            ended_tx = Some(tx);
        }
        let ended = tunnel.carry(local, self.counters.traffic(), &self.stop, self.spec.keepalive).await;
        // How a probe's tunnel ended is the probe's verdict to give (`Report::Probed`).
        let reported = if self.purpose == Purpose::Probe { &Ended::Closed } else { &ended };
        match reported {
            Ended::Refused(why) => {
                let _ = self.reports.try_send(Report::Refused(why.clone()));
            }
            Ended::Silent(quiet) => {
                let why = format!("the tunnel to pod {pod} answered no ping for {:.1} s; its connection was closed", quiet.as_secs_f64());
                let _ = self.reports.try_send(Report::Silent(why));
            }
            Ended::Closed | Ended::Stopped => {}
        }
        if let Some(tx) = ended_tx {
            let _ = tx.send(ended);
        }
    }

    /// Picks a pod and opens a tunnel to it: waits for a Ready pod (a local connection, up to
    /// `connectTimeout`), tries the next pick when a dial finds its pod gone, retries an
    /// unreachable API server with backoff. Returns the tunnel and its pod, or why not.
    async fn dial(&mut self) -> Result<(Tunnel, String), String> {
        let deadline = Instant::now() + self.spec.connect_timeout;
        let mut backoff = backoff(&self.spec, seed(&self.spec.name));
        loop {
            let pick = self.picks.borrow_and_update().clone();
            let (pod, port) = match pick {
                Pick::Refuse => return Err("the proxy's credentials may not port-forward there".to_owned()),
                Pick::Wait => {
                    if self.purpose != Purpose::Local {
                        return Err("no pod of the target is Ready".to_owned());
                    }
                    if !self.wait_for_pick(deadline).await {
                        return Err(format!("no pod of the target was Ready within {:.1} s", self.spec.connect_timeout.as_secs_f64()));
                    }
                    continue;
                }
                Pick::Pod { name, port } => (name, port),
            };
            let Some(cluster) = self.env.live.snapshot().clusters.get(&self.spec.cluster) else { return Err(format!("cluster {} is not configured", self.spec.cluster)) };
            let timeout = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
            match tunnel::open(&cluster, &self.spec.namespace, &pod, port, timeout).await {
                Ok(tunnel) => return Ok((tunnel, pod)),
                Err(DialError::PodGone(why)) => {
                    let _ = self.reports.try_send(Report::PodGone(pod));
                    // Gone from under a request: its next pick, if there is one already.
                    let patient = self.purpose == Purpose::Local;
                    if !self.wait_for_pick(if patient { deadline } else { Instant::now() + Duration::from_secs(1) }).await {
                        return Err(why);
                    }
                }
                Err(DialError::Forbidden(why)) => {
                    let _ = self.reports.try_send(Report::Forbidden(why.clone()));
                    return Err(why);
                }
                Err(DialError::Unreachable(why)) => {
                    let _ = self.reports.try_send(Report::Unreachable(why.clone()));
                    let delay = next_delay(&mut backoff);
                    if self.purpose != Purpose::Local || Instant::now() + delay >= deadline {
                        return Err(why);
                    }
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.stop.cancelled() => return Err("the forward stopped".to_owned()),
                    }
                }
            }
        }
    }

    /// Waits for the worker's pick to change; `false` when the deadline or a stop came first.
    async fn wait_for_pick(&mut self, deadline: Instant) -> bool {
        tokio::select! {
            changed = self.picks.changed() => changed.is_ok(),
            () = tokio::time::sleep_until(deadline) => false,
            () = self.stop.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use kubemux_protocol::frames::Status;
    use serde_json::json;

    use super::*;
    use crate::forward::spec::{PortRef, Target};

    fn pod(name: &str, ready: bool) -> Arc<Value> {
        let status = if ready { "True" } else { "False" };
        Arc::new(
            json!({"metadata": {"name": name}, "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]}, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": status}]}}),
        )
    }

    fn view(ready: Vec<Arc<Value>>) -> View {
        View {
            bound: Some(Ok("127.0.0.1:1".parse().unwrap())),
            allowed: Some(Ok(())),
            resolution: Resolution { synced: true, owner: None, ready, problem: None },
            gone: HashSet::new(),
            current: None,
            failure: None,
            probe_failure: None,
        }
    }

    fn spec() -> ForwardSpec {
        ForwardSpec::new("web", "demo", "demo", Target::Deployment("web".into()), PortRef::Name("http".into()), 0)
    }

    #[test]
    fn the_pick_sticks_to_its_pod_while_it_is_ready() {
        let spec = spec();
        let mut view = view(vec![pod("web-a", true), pod("web-b", true)]);
        assert_eq!(view.pick(&spec).0, Pick::Pod { name: "web-a".into(), port: 8080 });
        view.current = Some("web-b".into());
        assert_eq!(view.pick(&spec).0, Pick::Pod { name: "web-b".into(), port: 8080 });
        // web-b goes (deleted, or found gone by a dial): the next Ready pod at once.
        view.gone.insert("web-b".into());
        assert_eq!(view.pick(&spec).0, Pick::Pod { name: "web-a".into(), port: 8080 });
        view.resolution.ready.clear();
        let (pick, problem) = view.pick(&spec);
        assert_eq!(pick, Pick::Wait);
        assert_eq!(view.state(&pick, problem).0, State::Reconnecting);
    }

    #[test]
    fn states_say_why() {
        let spec = spec();
        let mut view = view(vec![pod("web-a", true)]);
        let (pick, problem) = view.pick(&spec);
        assert_eq!(view.state(&pick, problem), (State::Active, None, None));
        view.failure = Some((Reason::TargetRefused, "connection refused".into()));
        assert_eq!(view.state(&pick, None).0, State::Degraded);
        // A failing probe says so over the refusal it saw; no Ready pod says more than both.
        view.probe_failure = Some("GET /healthz answered 500".into());
        assert_eq!(view.state(&pick, None), (State::Degraded, Some(Reason::ProbeFailed), Some("GET /healthz answered 500".into())));
        assert_eq!(view.state(&Pick::Wait, None).1, Some(Reason::NoReadyPod));
        view.pick(&spec);
        assert!(view.probe_failure.is_some(), "the same pod keeps its probe's verdict");
        view.current = Some("web-z".into());
        view.pick(&spec);
        assert_eq!(view.probe_failure, None, "a new pod is not judged by the old one's probe");
        view.failure = None;
        view.allowed = Some(Err("may not".into()));
        let (pick, _) = view.pick(&spec);
        assert_eq!(pick, Pick::Refuse, "a forbidden forward refuses at once rather than hang");
        assert_eq!(view.state(&pick, None), (State::Failed, Some(Reason::Forbidden), Some("may not".into())));
        view.allowed = Some(Ok(()));
        view.resolution.problem = Some(Status::failure(503, "ServiceUnavailable", "down"));
        assert_eq!(view.state(&pick, None).1, Some(Reason::UpstreamUnreachable));
        view.bound = Some(Err("in use".into()));
        assert_eq!(view.state(&pick, None).1, Some(Reason::LocalPortInUse));
    }

    #[test]
    fn delays_double_to_the_cap_with_jitter() {
        let mut spec = spec();
        spec.reconnect_initial = Duration::from_secs(1);
        spec.reconnect_max = Duration::from_secs(10);
        let mut backoff = backoff(&spec, 3);
        let delays: Vec<Duration> = (0..8).map(|_| next_delay(&mut backoff)).collect();
        for (n, delay) in delays.iter().enumerate() {
            let ceiling = Duration::from_secs(1 << n.min(4)).min(Duration::from_secs(10));
            assert!(*delay >= ceiling / 2 && *delay <= ceiling, "{n}: {delay:?}");
        }
    }
}
