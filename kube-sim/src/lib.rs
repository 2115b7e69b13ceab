//! kube-sim: a simulated Kubernetes API server that real clients (kubectl, kube-rs, client-go,
//! browsers) accept. Real HTTP and WebSockets on loopback, real processes for `exec`, real TCP
//! listeners behind `portforward`, and test hooks under `/_sim/` to provoke what real clusters
//! do rarely: compaction (410), watch ends, stalls, faults and pod restarts.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let sim = kube_sim::Sim::start(kube_sim::SimConfig::default()).await?;
//! println!("{} {}", sim.url(), sim.kubeconfig());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::serve::ListenerExt as _;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub mod api;
pub mod auth;
mod churn;
pub mod controller;
mod defaults;
pub mod kubeconfig;
pub mod logs;
pub mod openapi;
pub mod resources;
pub mod runtime;
mod seed;
pub mod selectors;
pub mod spdy;
pub mod status;
pub mod store;
pub mod strategic;
pub mod tls;

pub use auth::User;

/// Which objects the simulator starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Seed {
    /// Namespaces `default`, `kube-system`, `demo` with pods, deployments, services,
    /// configmaps and a secret.
    #[default]
    Demo,
    /// Only the `default` namespace (plus the system namespaces every cluster has).
    Empty,
}

/// How to run a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Initial objects.
    pub seed: Seed,
    /// About this many changes per second to demo objects; 0 disables churn.
    pub churn_per_second: f64,
    /// Interval between bookmarks on watches that asked for them.
    pub bookmark_interval: Duration,
    /// How many change events are kept for watches to resume from.
    pub history: usize,
    /// Users and their tokens; empty means anonymous admin access.
    pub users: Vec<User>,
    /// Watch timeout when the client sends no `timeoutSeconds`.
    pub default_watch_timeout: Duration,
    /// Where per-container sandbox directories go; a fresh temporary directory when `None`.
    pub sandbox_root: Option<PathBuf>,
    /// HTTPS with a CA generated at start ([`Sim::ca_pem`]); plain HTTP when `None` (the
    /// default).
    pub tls: Option<tls::TlsConfig>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed: Seed::Demo,
            churn_per_second: 0.0,
            bookmark_interval: Duration::from_secs(60),
            history: 10_000,
            users: Vec::new(),
            default_watch_timeout: Duration::from_secs(1800),
            sandbox_root: None,
            tls: None,
        }
    }
}

/// What every request handler shares.
pub struct SimState {
    /// The configuration the simulator was started with.
    pub config: SimConfig,
    /// The address actually bound.
    pub addr: SocketAddr,
    /// All objects and their history.
    pub store: store::Store,
    /// Configured users (shared with identities).
    pub users: Vec<Arc<User>>,
    /// Processes, sandboxes and pod port listeners.
    pub runtime: Arc<runtime::Runtime>,
    /// Test-hook controls for open watches, injected faults and counters.
    pub hooks: api::hooks::HookState,
    /// Cancelled when the simulator shuts down.
    pub shutdown: CancellationToken,
    /// The deployment and replicaset controllers' lock.
    pub controllers: controller::Controllers,
    /// Every container's log.
    pub logs: logs::ContainerLogs,
    /// The generated CA and server certificate when serving HTTPS.
    pub tls: Option<tls::Authority>,
}

/// A running simulator. Dropping it shuts the simulator down; [`Sim::shutdown`] also waits.
pub struct Sim {
    state: Arc<SimState>,
    server: Option<tokio::task::JoinHandle<()>>,
    _sandbox: Option<tempfile::TempDir>,
}

impl Sim {
    /// Binds, seeds and starts serving.
    pub async fn start(config: SimConfig) -> anyhow::Result<Sim> {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let (sandbox, sandbox_root) = match &config.sandbox_root {
            Some(root) => (None, root.clone()),
            None => {
                let dir = tempfile::Builder::new().prefix("kube-sim-").tempdir()?;
                let path = dir.path().to_owned();
                (Some(dir), path)
            }
        };
        let shutdown = CancellationToken::new();
        // Revisions start at the current time in microseconds, so a restarted simulator never
        // hands out versions lower than its clients already hold (reference §7.4 E5).
        let first_rv = chrono::Utc::now().timestamp_micros().unsigned_abs();
        let authority = config.tls.as_ref().map(|tls| tls::Authority::generate(addr.ip(), tls)).transpose()?;
        let state = Arc::new(SimState {
            users: config.users.iter().cloned().map(Arc::new).collect(),
            store: store::Store::new(first_rv, config.history),
            runtime: Arc::new(runtime::Runtime::new(sandbox_root, shutdown.clone())),
            hooks: api::hooks::HookState::default(),
            shutdown: shutdown.clone(),
            controllers: controller::Controllers::default(),
            logs: logs::ContainerLogs::default(),
            tls: authority,
            addr,
            config,
        });
        tokio::spawn(runtime::Runtime::kubelet(state.runtime.clone(), state.clone()));
        seed::seed(&state.store, state.config.seed)?;
        state.hooks.set_churn_rate(state.config.churn_per_second);
        tokio::spawn(churn::run(state.clone()));
        tokio::spawn(controller::run(state.clone()));
        let app = api::router(state.clone());
        let token = shutdown.clone();
        let server = match &state.tls {
            None => tokio::spawn(async move {
                let serve = axum::serve(listener.tap_io(|tcp| {
                    // Frames are small and latency matters more than packet count.
                    let _ = tcp.set_nodelay(true);
                }), app).with_graceful_shutdown(async move { token.cancelled().await });
                if let Err(error) = serve.await {
                    tracing::error!(%error, "kube-sim server failed");
                }
            }),
            // The same router behind TLS: handshakes on tasks of their own (`tls::Authority::listen`).
            Some(authority) => {
                let listener = authority.listen(listener, shutdown.clone())?;
                tokio::spawn(async move {
                    let serve = axum::serve(listener, app).with_graceful_shutdown(async move { token.cancelled().await });
                    if let Err(error) = serve.await {
                        tracing::error!(%error, "kube-sim server failed");
                    }
                })
            }
        };
        openapi::load();
        tracing::info!(%addr, "kube-sim started");
        Ok(Sim { state, server: Some(server), _sandbox: sandbox })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.state.addr
    }

    /// `http://127.0.0.1:PORT`, or `https://…` when serving TLS.
    pub fn url(&self) -> String {
        let scheme = if self.state.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.state.addr)
    }

    /// The generated CA's certificate (PEM) when serving TLS: what clients trust.
    pub fn ca_pem(&self) -> Option<&str> {
        self.state.tls.as_ref().map(tls::Authority::ca_pem)
    }

    /// A kubeconfig (YAML) with full access to this simulator; with TLS, it trusts the
    /// generated CA (`certificate-authority-data`).
    pub fn kubeconfig(&self) -> String {
        kubeconfig::render(&self.url(), self.ca_pem(), &self.state.users)
    }

    /// Shared state, for embedding (e.g. the proxy's demo mode) and tests.
    pub fn state(&self) -> &Arc<SimState> {
        &self.state
    }

    /// Stops serving, ends every watch and kills every process the simulator started.
    /// Calling it again is a no-op.
    pub async fn shutdown(mut self) {
        self.stop().await;
    }

    async fn stop(&mut self) {
        self.state.shutdown.cancel();
        self.state.runtime.shutdown();
        if let Some(server) = self.server.take() {
            // Open streams (watches, exec sessions) end on cancellation; don't wait forever
            // for a client that never reads.
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
        self.state.runtime.shutdown();
    }
}
