//! The forward manager: the port-forwards of the config file's `forwards:`, each a local
//! listener whose connections are carried to a Ready pod of its target, kept through pod
//! restarts and rollouts, reloaded with the rest of the configuration.
//!
//! - [`access`]: the access reviews a forward needs, asked by its worker and by reloads.
//! - [`spec`]: the configuration and the pure rules (targets, selectors, port mapping,
//!   readiness).
//! - [`resolver`]: the Ready pods of a target, from the registry's shared watches.
//! - [`worker`]: one task per forward owning its listener, pick and state; one task per
//!   connection.
//! - [`tunnel`]: a connection carried over the port-forward WebSocket.
//! - [`reverse`]: `/forwards/{name}/…`, HTTP and WebSockets to the target over a stream the
//!   worker opens as it would for a local connection; `probe`: the optional probe.
//!
//! Race-free by construction: the running set is changed only by [`Forwards::stage`] and
//! [`Forwards::apply`], which `Live` calls inside its one-at-a-time reload (and once at
//! start), so there is one live worker per name; a worker is stopped by cancelling its token,
//! which is idempotent; nothing a worker uses is shared and mutated (each reads the snapshot in
//! force and its own spec).
//!
//! A reload is a diff by name: an unchanged forward is kept (its listener and connections
//! untouched), a changed one is replaced (reusing its listener when the address stays), a
//! removed one is stopped (its connections end), a new one starts. A new local address that is
//! taken (by a forward that stays, or by another process) rejects the whole reload with every
//! reason; the forwards in force stay.

pub mod access;
pub mod feed;
pub mod metrics;
mod probe;
pub mod resolver;
pub mod reverse;
pub mod spec;
pub mod tunnel;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clusters::Clusters;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::registry::WatchRegistry;
use metrics::ForwardCounters;
use spec::ForwardSpec;
use worker::ForwardStatus;

/// What forward workers use: the configuration in force, the registry, the metrics.
#[derive(Clone)]
pub struct Env {
    /// The configuration in force.
    pub live: Arc<Live>,
    /// The shared watches.
    pub registry: Arc<WatchRegistry>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

struct Running {
    spec: Arc<ForwardSpec>,
    listener: Option<Arc<TcpListener>>,
    stop: CancellationToken,
    status: Arc<watch::Sender<ForwardStatus>>,
    heartbeat: Arc<worker::Heartbeat>,
    counters: Arc<ForwardCounters>,
    /// The worker task, aborted by the watchdog if it stops making progress (a stuck future
    /// cannot see its stop token).
    task: tokio::task::AbortHandle,
    /// Resolves once the worker let go of its listener.
    released: tokio::sync::oneshot::Receiver<()>,
    /// Requests for streams to the target, answered by the worker.
    opens: tokio::sync::mpsc::Sender<worker::Open>,
    /// The cluster answered its access reviews (see [`access`]).
    checked: Arc<std::sync::atomic::AtomicBool>,
}

/// One step of a staged change.
enum Step {
    Keep,
    Start { spec: Arc<ForwardSpec>, listener: Result<Arc<TcpListener>, String> },
}

/// A change validated and ready to apply: every new listener is bound already.
pub struct Staged {
    steps: Vec<(String, Step)>,
    stop: Vec<String>,
    /// Forwards whose access a reload confirmed (they start checked).
    reviewed: Vec<String>,
}

impl Staged {
    /// Marks forwards whose access reviews the cluster answered (allowed) before the apply.
    pub fn reviewed(&mut self, names: Vec<String>) {
        self.reviewed = names;
    }

    /// Forwards added, removed and changed, against the names running now.
    pub fn diff(&self, running: &[String]) -> crate::live::ForwardDiff {
        let mut added = Vec::new();
        let mut changed = Vec::new();
        for (name, step) in &self.steps {
            if let Step::Start { .. } = step {
                if running.contains(name) { changed.push(name.clone()) } else { added.push(name.clone()) }
            }
        }
        let removed = self.stop.iter().filter(|n| !self.steps.iter().any(|(s, _)| s == *n)).cloned().collect();
        crate::live::ForwardDiff { added, removed, changed }
    }
}

/// The running forwards.
pub struct Forwards {
    env: Env,
    running: Mutex<BTreeMap<String, Running>>,
    /// A worker silent this long is restarted by the watchdog (its listener and observers
    /// kept). Default [`WATCHDOG_TIMEOUT`].
    watchdog_timeout: Mutex<std::time::Duration>,
    /// Bumped whenever forwards start or stop, for [`feed`].
    roster: watch::Sender<u64>,
    /// The forwards as a `/mux` collection, started with its first subscriber.
    feed: std::sync::OnceLock<Arc<feed::Feed>>,
    /// Which workers own a listener now (one per name at most).
    owners: Arc<worker::Owners>,
    /// Set (under the `running` lock) by [`Forwards::stop_all`]: nothing starts any more.
    closed: std::sync::atomic::AtomicBool,
}

/// The default [`Forwards`] watchdog timeout: many heartbeats, far more than any step of a
/// healthy worker takes (a worker never awaits anything slow outside its `select!`).
pub const WATCHDOG_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Errors of forwards whose cluster is not configured.
pub fn check_clusters(forwards: &[ForwardSpec], clusters: &Clusters) -> Vec<String> {
    forwards
        .iter()
        .filter(|f| !clusters.contains(&f.cluster))
        .map(|f| {
            let known: Vec<&str> = clusters.names().collect();
            format!("{}.cluster: no cluster {:?} (configured: {known:?})", f.origin, f.cluster)
        })
        .collect()
}

impl Forwards {
    /// No forwards yet; the watchdog runs (whatever the number of forwards, zero too) until
    /// the manager is dropped.
    pub fn new(env: Env) -> Arc<Forwards> {
        let forwards = Arc::new(Forwards {
            env,
            running: Mutex::new(BTreeMap::new()),
            watchdog_timeout: Mutex::new(WATCHDOG_TIMEOUT),
            roster: watch::Sender::new(0),
            feed: std::sync::OnceLock::new(),
            owners: Arc::default(),
            closed: Default::default(),
        });
        tokio::spawn(watchdog(Arc::downgrade(&forwards)));
        forwards
    }

    /// Sets the watchdog timeout (tests).
    #[doc(hidden)]
    pub fn set_watchdog_timeout(&self, timeout: std::time::Duration) {
        *self.watchdog_timeout.lock().unwrap_or_else(|p| p.into_inner()) = timeout;
    }

    /// Test hook: the forward's worker stops making progress.
    #[doc(hidden)]
    pub fn inject_stall(&self, name: &str) {
        if let Some(running) = self.lock().get(name) {
            running.heartbeat.stall();
        }
    }

    /// Test hook: the forward's worker panics (contained, counted, restarted by the watchdog).
    #[doc(hidden)]
    pub fn inject_panic(&self, name: &str) {
        if let Some(running) = self.lock().get(name) {
            running.heartbeat.inject_panic();
        }
    }

    /// How many workers own each forward's listener now: 1 for each running forward once it
    /// is bound, never more (tests check it).
    pub fn owners(&self) -> BTreeMap<String, usize> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs a worker; a panic in it is contained and counted, and its heartbeat says it died,
    /// so the watchdog replaces it at its next tick (on the same listener).
    fn spawn_worker(&self, start: worker::Start) -> tokio::task::AbortHandle {
        use futures::FutureExt as _;
        let (metrics, heartbeat, name) = (self.env.metrics.clone(), start.heartbeat.clone(), start.spec.name.clone());
        tokio::spawn(async move {
            if let Err(panic) = std::panic::AssertUnwindSafe(worker::run(start)).catch_unwind().await {
                metrics.task_panic(crate::metrics::TaskKind::Forward);
                tracing::error!(task = %crate::metrics::TaskKind::Forward, forward = %name, panic = crate::logging::panic_message(panic.as_ref()), "a proxy task panicked; the watchdog restarts its forward");
                heartbeat.died();
            }
        })
        .abort_handle()
    }

    /// Replaces the workers that stopped beating: the old one is stopped (its connections
    /// end), a new one starts on the same listener with the same status channel.
    fn restart_silent(&self) {
        let timeout = *self.watchdog_timeout.lock().unwrap_or_else(|p| p.into_inner());
        let mut running = self.lock();
        for (name, forward) in running.iter_mut() {
            if forward.heartbeat.silence() < timeout {
                continue;
            }
            tracing::error!(forward = %name, silence = ?forward.heartbeat.silence(), "forward worker made no progress; restarting it");
            self.env.metrics.forwards.restarted(name);
            forward.stop.cancel();
            forward.task.abort();
            forward.stop = CancellationToken::new();
            forward.heartbeat = worker::Heartbeat::new();
            let (released_tx, released) = tokio::sync::oneshot::channel();
            let after = std::mem::replace(&mut forward.released, released);
            let (opens_tx, opens) = tokio::sync::mpsc::channel(worker::OPEN_QUEUE);
            forward.opens = opens_tx;
            let listener = forward.listener.clone().ok_or_else(|| "the listener is being bound again".to_owned());
            let listener = listener.or_else(|_| worker::bind(forward.spec.local_addr()));
            let start = worker::Start {
                env: self.env.clone(),
                spec: forward.spec.clone(),
                listener,
                status: forward.status.clone(),
                heartbeat: forward.heartbeat.clone(),
                released: released_tx,
                counters: forward.counters.clone(),
                stop: forward.stop.clone(),
                opens,
                checked: forward.checked.clone(),
                after: Some(after),
                owners: self.owners.clone(),
            };
            forward.task = self.spawn_worker(start);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Names of the running forwards.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The forwards of `forwards` that a reload would start: new, or changed (what a reload
    /// reviews the access of; kept ones were reviewed when they started).
    pub fn starting<'a>(&self, forwards: &'a [ForwardSpec]) -> Vec<&'a ForwardSpec> {
        let running = self.lock();
        forwards.iter().filter(|f| running.get(&f.name).is_none_or(|r| *r.spec != **f)).collect()
    }

    /// Running forwards whose access reviews the cluster has not answered yet.
    pub fn unchecked(&self) -> Vec<String> {
        self.lock().iter().filter(|(_, r)| !r.checked.load(std::sync::atomic::Ordering::Acquire)).map(|(name, _)| name.clone()).collect()
    }

    /// Validates `forwards` against those running and binds what is new. `strict` (a reload):
    /// an address that cannot be bound is an error; otherwise (the start) that forward starts
    /// `Failed` and keeps trying.
    pub fn stage(&self, forwards: &[ForwardSpec], clusters: &Clusters, strict: bool) -> Result<Staged, Vec<String>> {
        let mut errors = check_clusters(forwards, clusters);
        let running = self.lock();
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(vec!["forwards: the proxy is shutting down; no forward starts".to_owned()]);
        }
        let mut steps = Vec::new();
        let kept: Vec<&str> = forwards.iter().filter(|f| running.get(&f.name).is_some_and(|r| *r.spec == **f)).map(|f| f.name.as_str()).collect();
        for forward in forwards {
            if kept.contains(&forward.name.as_str()) {
                steps.push((forward.name.clone(), Step::Keep));
                continue;
            }
            let address = forward.local_addr();
            // A fixed address held by a forward that stays is a conflict; one held by a
            // forward that goes (or is replaced) is handed over.
            let holder = (forward.local_port != 0).then(|| running.iter().find(|(_, r)| r.spec.local_port != 0 && r.spec.local_addr() == address)).flatten();
            let listener = match holder {
                Some((name, _)) if kept.contains(&name.as_str()) => {
                    errors.push(format!("{}.localPort: {address} is in use by forward {name:?}, which stays", forward.origin));
                    continue;
                }
                Some((_, Running { listener: Some(listener), .. })) => Ok(listener.clone()),
                _ => worker::bind(address),
            };
            if let Err(why) = &listener
                && strict
            {
                errors.push(format!("{}.localPort: {why} (in use by another process?)", forward.origin));
                continue;
            }
            steps.push((forward.name.clone(), Step::Start { spec: Arc::new(forward.clone()), listener }));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let stop = running.keys().filter(|name| !kept.contains(&name.as_str())).cloned().collect();
        Ok(Staged { steps, stop, reviewed: Vec::new() })
    }

    /// Applies a staged change: stops what goes, starts what is new, and returns once every
    /// stopped forward's port is closed (unless handed to its replacement).
    pub async fn apply(&self, staged: Staged) {
        let mut released = Vec::new();
        self.apply_locked(staged, &mut released);
        for port in released {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), port).await;
        }
    }

    fn apply_locked(&self, staged: Staged, released: &mut Vec<tokio::sync::oneshot::Receiver<()>>) {
        let mut running = self.lock();
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            // Staged before a shutdown, applied after: nothing starts (its new listeners close
            // with `staged`).
            return;
        }
        // A replaced forward's new worker waits for the old one to let go of the listener.
        let mut handed: BTreeMap<String, tokio::sync::oneshot::Receiver<()>> = BTreeMap::new();
        for name in &staged.stop {
            if let Some(old) = running.remove(name) {
                old.stop.cancel();
                if staged.steps.iter().any(|(n, _)| n == name) {
                    handed.insert(name.clone(), old.released);
                } else {
                    released.push(old.released);
                    old.counters.remove();
                }
            }
        }
        for (name, step) in staged.steps {
            let Step::Start { spec, listener } = step else { continue };
            let counters = self.env.metrics.forwards.counters(&name);
            let status = Arc::new(watch::Sender::new(ForwardStatus::starting()));
            let heartbeat = worker::Heartbeat::new();
            let stop = CancellationToken::new();
            let kept_listener = listener.as_ref().ok().cloned();
            let (released_tx, released) = tokio::sync::oneshot::channel();
            let (opens_tx, opens) = tokio::sync::mpsc::channel(worker::OPEN_QUEUE);
            let checked = Arc::new(std::sync::atomic::AtomicBool::new(staged.reviewed.contains(&name)));
            let start = worker::Start {
                env: self.env.clone(),
                spec: spec.clone(),
                listener,
                status: status.clone(),
                heartbeat: heartbeat.clone(),
                released: released_tx,
                counters: counters.clone(),
                stop: stop.clone(),
                opens,
                checked: checked.clone(),
                after: handed.remove(&name),
                owners: self.owners.clone(),
            };
            let task = self.spawn_worker(start);
            running.insert(name, Running { spec, listener: kept_listener, stop, status, heartbeat, counters, task, released, opens: opens_tx, checked });
        }
        self.roster.send_modify(|n| *n += 1);
    }

    /// Stops every forward (shutdown), and returns once their ports are closed. Idempotent;
    /// after it nothing starts again (a reload's forwards are refused).
    pub async fn stop_all(&self) {
        let stopped = {
            let mut running = self.lock();
            self.closed.store(true, std::sync::atomic::Ordering::Release);
            std::mem::take(&mut *running)
        };
        self.roster.send_modify(|n| *n += 1);
        let mut released = Vec::new();
        for (_, running) in stopped {
            running.stop.cancel();
            released.push(running.released);
        }
        for port in released {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), port).await;
        }
    }

    /// `GET /forwards`.
    pub fn to_json(&self) -> Value {
        let running = self.lock();
        Value::Array(running.values().map(|r| r.status.borrow().to_json(&r.spec, &r.counters)).collect())
    }

    /// The status of one forward, and a receiver of its changes.
    pub fn status(&self, name: &str) -> Option<watch::Receiver<ForwardStatus>> {
        self.lock().get(name).map(|r| r.status.subscribe())
    }
}

/// Restarts workers that stopped making progress, until the manager goes.
async fn watchdog(forwards: std::sync::Weak<Forwards>) {
    let mut ticks = tokio::time::interval(worker::HEARTBEAT);
    loop {
        ticks.tick().await;
        let Some(forwards) = forwards.upgrade() else { return };
        forwards.restart_silent();
    }
}
