//! kubemux-proxy: the edge between browsers and Kubernetes API servers.
//!
//! - `/mux` ([`mux`]): one WebSocket per browser carrying any number of watches
//!   (`docs/PROTOCOL.md`), isolated from one another.
//! - [`registry`]: one upstream list+watch per (cluster, path, query, identity), shared by every
//!   subscriber, with a local store and a ring of recent events for resuming clients.
//! - [`clusters`]: the API servers, one per kubeconfig context, with health checks.
//! - [`live`]: the configuration in force as snapshots, and its one owner; [`reload`]: what
//!   sets off a reload (the files changing, SIGHUP).
//! - `/clusters`, `/healthz`, `/readyz`, `/metrics` ([`http`], [`metrics`]).
//! - `/clusters/{cluster}/…/pods/{pod}/exec|attach` ([`terminal`]): terminals that leave no
//!   shell behind; every other `/clusters/{cluster}/{api path}` ([`passthrough`]).

pub mod auth;
pub mod clusters;
pub mod config;
pub mod forward;
pub mod http;
pub mod identity;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod mux;
pub mod passthrough;
pub mod portforward;
pub mod registry;
pub mod reload;
pub mod terminal;
pub mod upstream_error;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt as _;
use std::time::Duration;

use axum::Router;
use axum::routing::{any, get};
use tokio_util::sync::CancellationToken;

use crate::clusters::Clusters;
use crate::live::{Live, Loader, Snapshot};
use crate::metrics::Metrics;
use crate::mux::MuxSettings;
use crate::registry::{RegistrySettings, WatchRegistry};
use crate::terminal::{TerminalSettings, Terminals};

/// Everything configurable about a proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Origins allowed to open `/mux` besides the proxy's own.
    pub allowed_origins: Vec<String>,
    /// `/mux` limits and timers.
    pub mux: MuxSettings,
    /// Upstream watch settings.
    pub registry: RegistrySettings,
    /// How often clusters are health-checked.
    pub health_interval: Duration,
    /// Exec/attach timers, including the shutdown grace for terminal teardowns.
    pub terminal: TerminalSettings,
    /// A built web app to serve at `/`.
    pub static_dir: Option<std::path::PathBuf>,
    /// Token or proxy mode, and whether proxy mode may listen off loopback.
    pub auth: auth::AuthSettings,
    /// How long a shutdown keeps serving after `/readyz` turns 503, so that load balancers stop
    /// sending new connections before the open ones are closed. The binary's `--drain-period`
    /// (`drainPeriod`) defaults to 5 s; an embedder's default is none.
    pub drain: Duration,
    /// Port-forwards the proxy keeps (`forwards:`).
    pub forwards: Vec<forward::spec::ForwardSpec>,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            allowed_origins: Vec::new(),
            mux: MuxSettings::default(),
            registry: RegistrySettings::default(),
            health_interval: Duration::from_secs(10),
            terminal: TerminalSettings::default(),
            static_dir: None,
            auth: auth::AuthSettings::default(),
            drain: Duration::ZERO,
            forwards: Vec::new(),
        }
    }
}

/// What every handler shares.
pub struct AppState {
    /// The configuration in force and its owner.
    pub live: Arc<Live>,
    /// Upstream watches.
    pub registry: Arc<WatchRegistry>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the proxy shuts down.
    pub shutdown: CancellationToken,
    /// Live terminal sessions, which shutdown waits for.
    pub terminals: Arc<Terminals>,
    /// Cancelled when a shutdown starts: `/readyz` answers 503 from then on, while everything
    /// else keeps working for the drain period.
    pub draining: CancellationToken,
    /// Open `/mux` sessions, which shutdown waits for so that each sends its close frame.
    pub sessions: tokio_util::task::TaskTracker,
    /// The port-forwards of the configuration in force.
    pub forwards: Arc<forward::Forwards>,
}

impl AppState {
    /// The configuration in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.live.snapshot()
    }

    /// The settings in force.
    pub fn settings(&self) -> Arc<ProxySettings> {
        self.live.snapshot().settings.clone()
    }
}

/// The proxy's routes.
pub fn router(app: Arc<AppState>) -> Router {
    let static_dir = app.settings().static_dir.clone();
    let routes = Router::new()
        .route("/mux", get(mux::handler))
        .route("/clusters", get(http::clusters))
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .route("/metrics", get(http::metrics))
        .route("/config/status", get(http::config_status))
        .route("/config/check", axum::routing::post(http::config_check))
        .route("/forwards", get(http::forwards))
        .route("/forwards/{name}", any(forward::reverse::handler))
        .route("/forwards/{name}/", any(forward::reverse::handler))
        .route("/forwards/{name}/{*rest}", any(forward::reverse::handler))
        .route("/clusters/{cluster}/api/v1/namespaces/{namespace}/pods/{pod}/exec", any(terminal::exec))
        .route("/clusters/{cluster}/api/v1/namespaces/{namespace}/pods/{pod}/attach", any(terminal::attach))
        .route("/clusters/{cluster}/api/v1/namespaces/{namespace}/pods/{pod}/portforward", any(portforward::handler))
        .route("/clusters/{cluster}/{*path}", any(passthrough::handler))
        .with_state(app);
    let routes = match static_dir {
        Some(dir) => routes.fallback_service(web::app(&dir)),
        None => routes,
    };
    routes.layer(tower_http::trace::TraceLayer::new_for_http())
}

/// A running proxy.
pub struct Proxy {
    addr: SocketAddr,
    app: Arc<AppState>,
    server: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Binds and serves a configuration that never reloads.
    pub async fn start(settings: ProxySettings, clusters: Clusters) -> std::io::Result<Proxy> {
        let metrics = Arc::new(Metrics::default());
        Proxy::serve(Live::fixed(settings, clusters, metrics.clone()), metrics).await
    }

    /// Loads the first configuration from `loader` (refusing an invalid one), binds and
    /// serves, and reloads whenever the files it came from change or SIGHUP arrives.
    pub async fn start_live(loader: Box<dyn Loader>) -> anyhow::Result<Proxy> {
        let metrics = Arc::new(Metrics::default());
        let live = Live::load(loader, metrics.clone()).await.map_err(anyhow::Error::msg)?;
        let proxy = Proxy::serve(live.clone(), metrics).await?;
        tokio::spawn(reload::run(live, proxy.app.shutdown.clone()));
        Ok(proxy)
    }

    async fn serve(live: Arc<Live>, metrics: Arc<Metrics>) -> std::io::Result<Proxy> {
        let listener = tokio::net::TcpListener::bind(live.snapshot().settings.listen).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let registry = WatchRegistry::new(live.clone(), metrics.clone(), shutdown.clone());
        tokio::spawn(live.clone().run_health_checks(shutdown.clone()));
        let forwards = forward::Forwards::new(forward::Env { live: live.clone(), registry: registry.clone(), metrics: metrics.clone() });
        live.attach_forwards(&forwards);
        {
            // The first forwards: a local address in use leaves that forward Failed, retrying,
            // instead of keeping the proxy from starting. (Unknown clusters were refused when
            // the configuration was loaded.)
            let snapshot = live.snapshot();
            match forwards.stage(&snapshot.settings.forwards, &snapshot.clusters, false) {
                Ok(staged) => forwards.apply(staged).await,
                Err(errors) => tracing::error!(?errors, "forwards not started"),
            }
        }
        let app = Arc::new(AppState {
            forwards,
            live,
            registry,
            metrics,
            shutdown: shutdown.clone(),
            terminals: Arc::default(),
            draining: CancellationToken::new(),
            sessions: tokio_util::task::TaskTracker::new(),
        });
        let routes = router(app.clone());
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener.tap_io(|tcp| {
                // Frames are small and latency matters more than packet count.
                let _ = tcp.set_nodelay(true);
            }), routes).with_graceful_shutdown(async move { shutdown.cancelled().await });
            if let Err(error) = serve.await {
                tracing::error!(%error, "proxy server failed");
            }
        });
        tracing::info!(%addr, "kubemux-proxy listening");
        Ok(Proxy { addr, app, server })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shared state, for tests and embedding.
    pub fn app(&self) -> &Arc<AppState> {
        &self.app
    }

    /// Drains and stops: `/readyz` turns 503 at once while everything keeps working for the
    /// drain period (load balancers take the replica out first), then every `/mux` connection
    /// closes with 1001 ("going away": clients reconnect at once, elsewhere) and is waited for
    /// until its close frame is out, terminal sessions run their teardown for up to
    /// `terminal.grace`, and the server stops.
    pub async fn shutdown(self) {
        let settings = self.app.settings();
        self.app.draining.cancel();
        if !settings.drain.is_zero() {
            tracing::info!(drain = ?settings.drain, "draining: /readyz answers 503; serving on until the drain period is over");
            tokio::time::sleep(settings.drain).await;
        }
        self.app.shutdown.cancel();
        self.app.forwards.stop_all().await;
        self.app.sessions.close();
        // A session's writer gives its close frame this long to go out (`mux::session`).
        if tokio::time::timeout(SESSION_CLOSE_WAIT, self.app.sessions.wait()).await.is_err() {
            tracing::warn!("some /mux connections did not close in time");
        }
        // A session's teardown is capped at the grace; the margin lets it finish its close.
        self.app.terminals.drain(settings.terminal.grace.saturating_add(Duration::from_secs(1))).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.server).await;
    }
}

/// How long shutdown waits for `/mux` sessions to send their close frames: a session's writer
/// waits up to 5 s for a dead peer.
const SESSION_CLOSE_WAIT: Duration = Duration::from_secs(6);

/// Waits for what ends a proxy process: Ctrl-C (SIGINT) or SIGTERM.
pub async fn shutdown_signal() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}
