//! The configuration in force and its one owner.
//!
//! [`Live`] owns the settings and the cluster set and publishes them as immutable
//! [`Snapshot`]s on a `tokio::sync::watch` channel, each with a generation number. Everything
//! else (the registry and its upstream tasks, health checks, pass-through, terminals, `/mux`
//! sessions, `/clusters`) reads the snapshot in force when it needs it and keeps no copy of
//! cluster state, so a reader can never see half of a reload.
//!
//! A reload ([`Live::reload`]) validates the whole candidate first and changes nothing unless it
//! is valid; reloads never run beside one another. A valid one is applied as a diff:
//! - a cluster whose source is unchanged stays the very same `Arc<Cluster>`: nothing built on it
//!   notices (no reconnect, no relist, no `reset`, no dropped terminal);
//! - a changed cluster is built anew and the old one is retired ([`Cluster::retired`]): its
//!   upstream watches restart against the new one from the versions they hold;
//! - a removed cluster is retired and removed ([`Cluster::removed`]): its upstream watches end
//!   with one fatal 404 per subscription, its terminals run their teardown;
//! - settings apply to what starts after the reload (new connections, terminals and upstream
//!   watches); `listen` and `static` need a restart, which `/config/status` says.
//!
//! The order is what makes it race-free: the new snapshot is published first, then old
//! clusters are retired, so whoever wakes on a retirement finds the snapshot that replaced it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ProxySettings;
use crate::clusters::{ClusterSource, Clusters};
use crate::forward::{Forwards, Staged};
use crate::metrics::Metrics;

/// The configuration in force: settings and clusters, never changed once published.
#[derive(Debug)]
pub struct Snapshot {
    /// 1 for the configuration the proxy started with, one more for every applied reload.
    pub generation: u64,
    /// When this generation was applied.
    pub loaded_at: DateTime<Utc>,
    /// The settings (`listen` and `static` as bound at start, whatever the file says now).
    pub settings: Arc<ProxySettings>,
    /// The clusters.
    pub clusters: Clusters,
}

/// A configuration read from its source, not yet validated against the one in force.
pub struct Candidate {
    /// The settings it gives (flags applied over the file).
    pub settings: ProxySettings,
    /// Its clusters.
    pub sources: Vec<ClusterSource>,
}

/// Where configurations come from: the config file and flags, or kubeconfig discovery.
pub trait Loader: Send + Sync + 'static {
    /// Reads the source. `Err` is the message to report (file, line, column and key when the
    /// source is a file); it never holds a secret.
    fn load(&self) -> Result<Candidate, String>;
    /// The config file, if there is one (for `/config/status`).
    fn file(&self) -> Option<PathBuf>;
    /// Files to watch besides those the clusters name: the config file itself.
    fn files(&self) -> Vec<PathBuf>;
}

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new generation is in force.
    Applied {
        /// Its number.
        generation: u64,
        /// Clusters added.
        added: Vec<String>,
        /// Clusters removed.
        removed: Vec<String>,
        /// Clusters whose server, CA or credentials changed.
        changed: Vec<String>,
        /// Forwards added, removed and changed (a changed one is restarted; the others are
        /// not touched).
        forwards: ForwardDiff,
    },
    /// The source says what is in force already.
    Unchanged,
    /// The candidate was invalid; the configuration in force stays entirely.
    Rejected(String),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Rejected(_) => "rejected",
        }
    }
}

/// What a reload does to the forwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardDiff {
    /// New forwards.
    pub added: Vec<String>,
    /// Forwards stopped.
    pub removed: Vec<String>,
    /// Forwards restarted with a new spec.
    pub changed: Vec<String>,
}

/// A candidate validated against the configuration in force, with its forwards' listeners
/// bound: what a reload publishes, or what a dry run describes.
struct Prepared {
    settings: ProxySettings,
    clusters: Clusters,
    restart_needed: Vec<String>,
    added: Vec<String>,
    removed: Vec<String>,
    changed: Vec<String>,
    forwards: ForwardDiff,
    staged: Option<Staged>,
    /// New or changed forwards whose access reviews went unanswered.
    unchecked: Vec<String>,
}

#[derive(Default)]
struct ReloadStatus {
    last_attempt: Option<(DateTime<Utc>, &'static str)>,
    last_error: Option<(DateTime<Utc>, String)>,
    restart_needed: Vec<String>,
}

/// The owner of the configuration in force.
pub struct Live {
    snapshots: watch::Sender<Arc<Snapshot>>,
    loader: Option<Box<dyn Loader>>,
    /// The first generation's settings: what `listen` and `static` are bound to.
    started: Arc<ProxySettings>,
    /// Held for the whole of a reload, so two never interleave.
    reloading: tokio::sync::Mutex<()>,
    status: Mutex<ReloadStatus>,
    metrics: Arc<Metrics>,
    /// Set once every cluster of the first generation has been health-checked (`/readyz`).
    checked: AtomicBool,
    /// The files of the last configuration read from the source (valid or not): what a change
    /// to reloads. Kept from the reload that read them, so nothing reads the source twice.
    files: Mutex<Vec<PathBuf>>,
    /// The forward manager, once the proxy serving this configuration has one.
    forwards: OnceLock<Weak<Forwards>>,
}

/// The files a candidate reads: the loader's own (the config file) and its clusters'.
fn files_of(loader: &dyn Loader, candidate: &Candidate) -> Vec<PathBuf> {
    let mut files = loader.files();
    files.extend(candidate.sources.iter().flat_map(ClusterSource::files));
    files.sort();
    files.dedup();
    files
}

impl Live {
    /// A configuration that never reloads (embedding and tests).
    pub fn fixed(settings: ProxySettings, clusters: Clusters, metrics: Arc<Metrics>) -> Arc<Live> {
        Live::with(settings, clusters, None, metrics)
    }

    /// The first configuration from `loader`; refuses to start on an invalid one.
    pub async fn load(loader: Box<dyn Loader>, metrics: Arc<Metrics>) -> Result<Arc<Live>, String> {
        let candidate = loader.load()?;
        let files = files_of(loader.as_ref(), &candidate);
        let clusters = Clusters::default().rebuild(candidate.sources).await.map_err(|e| e.to_string())?;
        candidate.settings.auth.check_listen(candidate.settings.listen)?;
        let unknown = crate::forward::check_clusters(&candidate.settings.forwards, &clusters);
        if !unknown.is_empty() {
            return Err(unknown.join("; "));
        }
        let live = Live::with(candidate.settings, clusters, Some(loader), metrics);
        *live.files.lock().unwrap_or_else(|p| p.into_inner()) = files;
        Ok(live)
    }

    fn with(settings: ProxySettings, clusters: Clusters, loader: Option<Box<dyn Loader>>, metrics: Arc<Metrics>) -> Arc<Live> {
        let settings = Arc::new(settings);
        let snapshot = Arc::new(Snapshot { generation: 1, loaded_at: Utc::now(), settings: settings.clone(), clusters });
        metrics.config_generation.set(1);
        Arc::new(Live {
            snapshots: watch::Sender::new(snapshot),
            loader,
            started: settings,
            reloading: tokio::sync::Mutex::new(()),
            status: Mutex::new(ReloadStatus::default()),
            metrics,
            checked: AtomicBool::new(false),
            files: Mutex::new(Vec::new()),
            forwards: OnceLock::new(),
        })
    }

    /// Hands the forward manager to the reloads (once, by the proxy that serves this).
    pub fn attach_forwards(&self, forwards: &Arc<Forwards>) {
        let _ = self.forwards.set(Arc::downgrade(forwards));
    }

    fn forward_manager(&self) -> Option<Arc<Forwards>> {
        self.forwards.get().and_then(Weak::upgrade)
    }

    /// The configuration in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    /// Every snapshot from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.subscribe()
    }

    /// Whether this configuration has a source to reload from.
    pub fn reloadable(&self) -> bool {
        self.loader.is_some()
    }

    /// The files whose change is a reload: the config file and every file its clusters name,
    /// as the last read of the source found them. A file named by an entry that was rejected is
    /// among them, so that fixing it is seen; when the file itself could not be read, the files
    /// of the read before stay watched.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.files.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the source again and applies what changed. Never runs beside another reload.
    pub async fn reload(&self) -> Outcome {
        let _one_at_a_time = self.reloading.lock().await;
        let outcome = self.try_reload().await;
        self.metrics.config_reload(outcome.label());
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let at = Utc::now();
        status.last_attempt = Some((at, outcome.label()));
        match &outcome {
            Outcome::Rejected(message) => {
                tracing::error!(error = %message, "config reload rejected; the configuration in force stays");
                status.last_error = Some((at, message.clone()));
            }
            Outcome::Applied { generation, added, removed, changed, forwards } => {
                tracing::info!(generation, ?added, ?removed, ?changed, forwards_added = ?forwards.added, forwards_removed = ?forwards.removed, forwards_changed = ?forwards.changed, "config reloaded");
                status.last_error = None;
            }
            Outcome::Unchanged => status.last_error = None,
        }
        outcome
    }

    async fn try_reload(&self) -> Outcome {
        let current = self.snapshot();
        let prepared = match self.prepare(&current).await {
            Ok(Some(prepared)) => prepared,
            Ok(None) => return Outcome::Unchanged,
            Err(message) => return Outcome::Rejected(message),
        };
        let Prepared { settings, clusters, restart_needed, added, removed, changed, forwards, staged, .. } = prepared;
        self.status.lock().unwrap_or_else(|p| p.into_inner()).restart_needed = restart_needed;
        let generation = current.generation + 1;
        let next = Arc::new(Snapshot { generation, loaded_at: Utc::now(), settings: Arc::new(settings), clusters });
        // Publish first, retire second: see the module's comment.
        self.snapshots.send_replace(next.clone());
        self.metrics.config_generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
        for cluster in current.clusters.iter() {
            if !next.clusters.same(&current.clusters, &cluster.name) {
                cluster.retired().cancel();
                if !next.clusters.contains(&cluster.name) {
                    cluster.removed().cancel();
                }
            }
        }
        if let (Some(manager), Some(staged)) = (self.forward_manager(), staged) {
            manager.apply(staged).await;
        }
        Outcome::Applied { generation, added, removed, changed, forwards }
    }

    /// Reads the source and validates what it says against `current`: `None` when it says
    /// what is in force. The forwards' new listeners are bound here, so an address in use
    /// rejects the candidate before anything changes.
    async fn prepare(&self, current: &Snapshot) -> Result<Option<Prepared>, String> {
        let Some(loader) = &self.loader else { return Err("this proxy was started without a config source to reload".to_owned()) };
        let candidate = loader.load()?;
        *self.files.lock().unwrap_or_else(|p| p.into_inner()) = files_of(loader.as_ref(), &candidate);
        let mut settings = candidate.settings;
        // What is bound at start stays bound; the status says a restart would change it.
        let mut restart_needed = Vec::new();
        if settings.listen != self.started.listen {
            restart_needed.push(format!("listen: {} is in force; {} needs a restart", self.started.listen, settings.listen));
            settings.listen = self.started.listen;
        }
        if settings.static_dir != self.started.static_dir {
            let shown = |dir: &Option<PathBuf>| dir.as_ref().map_or_else(|| "none".to_owned(), |d| d.display().to_string());
            restart_needed.push(format!("static: {} is in force; {} needs a restart", shown(&self.started.static_dir), shown(&settings.static_dir)));
            settings.static_dir = self.started.static_dir.clone();
        }
        settings.auth.check_listen(self.started.listen)?;
        let clusters = current.clusters.rebuild(candidate.sources).await.map_err(|e| e.to_string())?;
        let mut unchecked = Vec::new();
        let (staged, forwards) = match self.forward_manager() {
            Some(manager) => {
                // The access of what would start, asked before anything is bound: a forbidden
                // forward refuses the reload with every other reason (ports in use).
                let reviews = crate::forward::access::review_all(&manager.starting(&settings.forwards), &clusters).await;
                let staged = manager.stage(&settings.forwards, &clusters, true);
                let mut staged = match staged {
                    Ok(staged) if reviews.denied.is_empty() => staged,
                    Ok(_) => return Err(reviews.denied.join("; ")),
                    Err(mut errors) => {
                        errors.extend(reviews.denied);
                        return Err(errors.join("; "));
                    }
                };
                staged.reviewed(reviews.allowed);
                unchecked = reviews.unanswered;
                let diff = staged.diff(&manager.names());
                (Some(staged), diff)
            }
            None => {
                let unknown = crate::forward::check_clusters(&settings.forwards, &clusters);
                if !unknown.is_empty() {
                    return Err(unknown.join("; "));
                }
                (None, ForwardDiff::default())
            }
        };
        let added: Vec<String> = clusters.names().filter(|n| !current.clusters.contains(n)).map(str::to_owned).collect();
        let removed: Vec<String> = current.clusters.names().filter(|n| !clusters.contains(n)).map(str::to_owned).collect();
        let changed: Vec<String> = clusters.names().filter(|n| current.clusters.contains(n) && !current.clusters.same(&clusters, n)).map(str::to_owned).collect();
        if added.is_empty() && removed.is_empty() && changed.is_empty() && *current.settings == settings {
            return Ok(None);
        }
        Ok(Some(Prepared { settings, clusters, restart_needed, added, removed, changed, forwards, staged, unchecked }))
    }

    /// `POST /config/check`: what a reload would do now, changing nothing (a dry run). The
    /// same validation as a reload, the forwards' new ports and access reviews included.
    pub async fn check(&self) -> Value {
        let _one_at_a_time = self.reloading.lock().await;
        let current = self.snapshot();
        match self.prepare(&current).await {
            Ok(None) => json!({"valid": true, "changes": false}),
            Ok(Some(prepared)) => json!({
                "valid": true,
                "changes": true,
                "clusters": {"added": prepared.added, "removed": prepared.removed, "changed": prepared.changed},
                "forwards": {"added": prepared.forwards.added, "removed": prepared.forwards.removed, "changed": prepared.forwards.changed},
                "restartNeeded": prepared.restart_needed,
                "forwardsUnchecked": prepared.unchecked,
            }),
            Err(message) => json!({"valid": false, "error": message}),
        }
    }

    /// `GET /config/status`: the generation in force, when it was loaded, the last reload and
    /// its error. Never a secret: errors name files, lines and keys, not values.
    pub fn status(&self) -> Value {
        let snapshot = self.snapshot();
        let status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        json!({
            "generation": snapshot.generation,
            "loadedAt": time(&snapshot.loaded_at),
            "source": self.loader.as_ref().and_then(|l| l.file()).map(|f| f.display().to_string()),
            "reloadable": self.reloadable(),
            "clusters": snapshot.clusters.names().collect::<Vec<_>>(),
            "lastReload": status.last_attempt.as_ref().map(|(at, result)| json!({"at": time(at), "result": result})),
            "lastError": status.last_error.as_ref().map(|(at, message)| json!({"at": time(at), "message": message})),
            "restartNeeded": status.restart_needed,
            "forwardsUnchecked": self.forward_manager().map(|m| m.unchecked()).unwrap_or_default(),
        })
    }

    /// Whether every cluster of the first generation has had its first health check.
    pub fn checked(&self) -> bool {
        self.checked.load(Ordering::Acquire)
    }

    /// Health-checks the clusters in force now, then every `health_interval` and at once
    /// whenever a reload changes the set, until cancelled. It reads each snapshot afresh, so a
    /// reload to no clusters and back leaves it checking the new ones.
    pub async fn run_health_checks(self: Arc<Self>, shutdown: CancellationToken) {
        let mut snapshots = self.subscribe();
        loop {
            let snapshot = snapshots.borrow_and_update().clone();
            tokio::select! {
                _ = snapshot.clusters.check_health() => {}
                _ = shutdown.cancelled() => return,
            }
            self.checked.store(true, Ordering::Release);
            let interval = snapshot.settings.health_interval.max(Duration::from_millis(100));
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                changed = snapshots.changed() => if changed.is_err() { return },
                _ = shutdown.cancelled() => return,
            }
        }
    }
}
